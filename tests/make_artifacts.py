"""``python -m tests.make_artifacts DIR``: artifacts of the tiny GPT-2 checkpoint in ``DIR`` (fast
settings), for checks that need a real artifact set without running the test suite (the wheel
check renders them with an installed wheel, from outside the checkout)."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from headreport.analysis.config import config_from_dict
from tests.checkpoints import make_gpt2_checkpoint
from tests.helpers import artifacts_of


def main(out: str) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        folder = make_gpt2_checkpoint(Path(tmp) / "tiny")
        config = config_from_dict({
            "heads": ["1.3"], "model": {"name": str(folder), "device": "cpu"},
            "analysis": {"top_k": 5, "bootstrap_resamples": 200, "ov_mode": "sampled", "ov_sample_size": 200},
        })
        artifacts_of(config, Path(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
