"""Wall-clock seconds per named step of a run (``timings.json``; kept out of the deterministic artifacts)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


class Timer:
    """Collects wall-clock seconds per named step: ``with timer("L.H/spectra"): ...`` adds the
    block's seconds to ``timer.seconds["L.H/spectra"]``."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0
