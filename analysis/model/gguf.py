"""A ``.gguf`` file as a model: its header read without torch, its weights loaded (dequantised)
through transformers' GGUF support.

transformers loads a GGUF (``from_pretrained(folder, gguf_file=name)``) by dequantising every tensor
to floating point; the analysis then runs on those weights. What the file held (the quantisation
types, by tensor count) goes into the provenance, and the page says the weights were dequantised.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
from collections import Counter
from pathlib import Path
from typing import Any

from ..errors import ConfigError, ModelUnavailableError
from .checkpoint import gguf_check

GGUF_HINT = "install the `gguf` package (pip install gguf, or `make setup`, which installs it)"


def is_gguf_name(name: str) -> bool:
    """Whether ``model.name`` names a GGUF file (by its suffix; the file is checked later)."""
    return name.lower().endswith(".gguf")


def gguf_file(name: str, revision: str | None) -> Path:
    """The GGUF file ``model.name`` names: it must exist, and takes no ``model.revision``."""
    path = Path(name).expanduser()
    if not path.is_file():
        raise ModelUnavailableError(f"model.name: GGUF file {name!r} does not exist")
    if revision is not None:
        raise ConfigError(f"model.revision: not used for a GGUF file ({name!r}); remove it")
    return path


def require_gguf(what: str, hint: str = GGUF_HINT) -> None:
    if importlib.util.find_spec("gguf") is None:
        raise ModelUnavailableError(f"model.name: {what} needs the `gguf` package to read its weights; {hint}")


def gguf_summary(path: Path) -> dict[str, Any]:
    """The file's header, checked (magic, version, every tensor inside the file) and summarised:
    ``{"architecture", "quantization_types": {type: tensor count}}`` — no torch."""
    require_gguf(repr(str(path)))
    reader = gguf_check(path)
    field = reader.fields.get("general.architecture")
    architecture = bytes(field.parts[field.data[0]]).decode("utf-8", "replace") if field is not None else None
    types = Counter(t.tensor_type.name for t in reader.tensors)
    return {"architecture": architecture, "quantization_types": dict(sorted(types.items()))}


def gguf_provenance(path: Path) -> dict[str, Any]:
    """What a GGUF file's header says, for the provenance: its architecture and quantisation types."""
    summary = gguf_summary(path)
    types = summary["quantization_types"]
    return {"source": "gguf_file", "path": str(path.resolve()), "gguf_architecture": summary["architecture"],
            "weights_file": path.name, "quantization": "GGUF " + ", ".join(types), "quantization_types": types,
            "quantization_note": dequantization_note(types)}


def dequantization_note(types: dict[str, int]) -> str:
    listed = ", ".join(f"{name} ({count} tensor{'s' if count != 1 else ''})" for name, count in types.items())
    return (f"The weights come from a GGUF file ({listed}) and were dequantised to floating point on load "
            "(transformers' GGUF support): every number describes the dequantised model, not the full-precision "
            "original.")


@contextlib.contextmanager
def parse_once():
    """While loading: one ``GGUFReader`` per file and a memoised ``get_tensor_name_map``.

    transformers parses the GGUF three times (config, weights, tokenizer; ~6 s each for a
    49152-token vocabulary, mostly the vocabulary metadata) and rebuilds gguf's tensor-name map once
    per module (~400 times). Both are pure functions of their arguments; sharing them cuts the load
    by more than half. The ``gguf`` module attributes are restored afterwards.
    """
    import gguf  # noqa: PLC0415 (optional dependency)

    original_reader, original_map = gguf.GGUFReader, gguf.get_tensor_name_map
    readers: dict[tuple[str, str], Any] = {}

    def reader(path, mode="r"):
        key = (str(path), mode)
        if key not in readers:
            readers[key] = original_reader(path, mode)
        return readers[key]

    gguf.GGUFReader = reader
    gguf.get_tensor_name_map = functools.lru_cache(maxsize=None)(original_map)
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = original_reader, original_map


def load_gguf(path: Path) -> tuple[Any, Any]:
    """``(hf_model, tokenizer)`` of a GGUF file, dequantised by transformers."""
    import transformers  # noqa: PLC0415 (torch: only once the inputs are checked)

    with parse_once():
        try:
            hf_model = transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name)
            tokenizer = transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ModelUnavailableError(
                f"model.name: transformers cannot load the GGUF file {str(path)!r}: {first}") from None
    return hf_model, tokenizer
