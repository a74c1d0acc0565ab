"""A checkpoint folder checked before anything heavy is loaded: every weight file opens and its
header parses, the tensors fit the file, their shapes agree with ``config.json``, and every value
is finite. A failure is one :class:`CheckpointError` naming the file and the problem (exit 2), in
seconds, instead of a library traceback minutes later.

Safetensors files are checked from their own header (8-byte little-endian length, then JSON:
dtype, shape and byte range of every tensor) and then streamed tensor by tensor through
``safetensors.safe_open`` for non-finite values (memory-mapped, one tensor at a time). PyTorch
``.bin``/``.pt`` files must be readable zip archives. A sharded checkpoint's index must name files
that are there. GGUF files (the bundled model) are checked by magic, version and tensor extents.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import ModelUnavailableError

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth")
#: a safetensors JSON header larger than this is not a real one
MAX_HEADER_BYTES = 100 << 20
#: files of a checkpoint folder that feed the numbers (weights, config, tokenizer); anything else
#: (README.md, .gitattributes) is not hashed into the staleness key
INPUT_SUFFIXES = (*WEIGHT_SUFFIXES, ".json", ".txt", ".model", ".tiktoken", ".py")
DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
               "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "U32": 4, "U64": 8}
FLOAT_DTYPES = {"F64", "F32", "F16", "BF16"}


class CheckpointError(ModelUnavailableError):
    """A checkpoint file is damaged or does not match its config (the message names the file)."""


def checkpoint_files(folder: Path) -> list[Path]:
    """The regular files directly in ``folder`` that feed the analysis, sorted; a link that loops or
    points nowhere is an error naming it."""
    out = []
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as exc:
        raise CheckpointError(f"model.name: cannot list {str(folder)!r} ({exc.strerror or exc})") from None
    for entry in entries:
        if not entry.name.endswith(INPUT_SUFFIXES):
            continue
        try:
            regular = entry.is_file(follow_symlinks=True)
            if regular:
                os.stat(entry.path)  # resolves the link (ELOOP / ENOENT raise here)
        except OSError as exc:
            raise CheckpointError(f"model.name: {entry.path!r} cannot be read ({exc.strerror or exc}: a link "
                                  "that loops or points nowhere?)") from None
        if not regular:
            if entry.is_symlink():
                raise CheckpointError(f"model.name: {entry.path!r} is a link that points nowhere")
            continue
        out.append(Path(entry.path))
    return out


def weight_files(folder: Path) -> list[Path]:
    return [p for p in checkpoint_files(folder) if p.name.endswith(WEIGHT_SUFFIXES)]


def safetensors_header(path: Path) -> dict[str, Any]:
    """The parsed header of a safetensors file, checked: every tensor's byte range lies inside the
    file, matches its dtype and shape, and the ranges tile the data without overlap."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path}: truncated ({size} bytes): not a safetensors file")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER_BYTES or 8 + n > size:
            raise CheckpointError(f"{path}: its header claims {n:,} bytes in a file of {size:,}: the file is "
                                  "truncated or not a safetensors file")
        raw = fh.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise CheckpointError(f"{path}: its header is not valid JSON: the file is damaged") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: its header is not a JSON object: the file is damaged")
    data_bytes = size - 8 - n
    extents = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]
            count = math.prod(int(d) for d in shape)
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{path}: tensor {name!r} has a malformed header entry") from None
        if dtype not in DTYPE_BYTES or not (0 <= begin <= end <= data_bytes):
            raise CheckpointError(f"{path}: tensor {name!r} lies outside the file's {data_bytes:,} data bytes "
                                  f"(bytes {begin}–{end}): the file is truncated")
        if end - begin != count * DTYPE_BYTES[dtype]:
            raise CheckpointError(f"{path}: tensor {name!r} ({dtype}, shape {shape}) should take "
                                  f"{count * DTYPE_BYTES[dtype]:,} bytes, its header gives {end - begin:,}")
        extents.append((begin, end, name))
    extents.sort()
    for (_, e0, a), (b1, _, b) in zip(extents, extents[1:]):
        if b1 < e0:
            raise CheckpointError(f"{path}: tensors {a!r} and {b!r} overlap: the file is damaged")
    return header


def _zip_check(path: Path) -> None:
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({exc}): the file is truncated or "
                              "damaged") from None
    if bad is not None:
        raise CheckpointError(f"{path}: member {bad!r} is damaged (CRC mismatch)")


def gguf_check(path: Path) -> Any:
    """Magic, version and every tensor's extent inside the file; returns the ``gguf`` reader."""
    with path.open("rb") as fh:
        magic = fh.read(4)
    if magic != b"GGUF":
        raise CheckpointError(f"{path}: not a GGUF file (magic {magic!r})")
    try:
        import gguf  # noqa: PLC0415 - the front end never imports a heavy library at module level

        reader = gguf.GGUFReader(str(path))
        size = path.stat().st_size
        for t in reader.tensors:
            if t.data_offset + t.n_bytes > size:
                raise CheckpointError(f"{path}: tensor {t.name!r} runs past the end of the file: truncated")
        return reader
    except CheckpointError:
        raise
    except Exception as exc:  # the reader's own parse errors
        raise CheckpointError(f"{path}: the GGUF file cannot be parsed ({exc}): it is truncated or damaged") from None


def _config_shapes(config: dict[str, Any]) -> tuple[int | None, int | None]:
    vocab = config.get("vocab_size")
    hidden = next((config[k] for k in ("hidden_size", "n_embd", "d_model", "word_embed_proj_dim")
                   if isinstance(config.get(k), int)), None)
    if isinstance(config.get("text_config"), dict):  # nested text configs
        return _config_shapes(config["text_config"])
    return (vocab if isinstance(vocab, int) else None), hidden


def check_shapes(headers: dict[Path, dict[str, Any]], config: dict[str, Any], folder: Path) -> None:
    """The token embedding and unembedding (the 2-D tensors with ``vocab_size`` rows or columns)
    have ``config.json``'s hidden size: a checkpoint whose config does not describe its weights is
    refused here, naming the tensor, instead of failing deep inside the loader."""
    vocab, hidden = _config_shapes(config)
    if vocab is None or hidden is None:
        return
    matrices = [(path, name, info["shape"]) for path, header in headers.items() for name, info in header.items()
                if name != "__metadata__" and len(info["shape"]) == 2]
    if not matrices:
        return
    vocab_sized = [m for m in matrices if vocab in m[2]]
    if not vocab_sized:
        path, name, shape = max(matrices, key=lambda m: max(m[2]))
        raise CheckpointError(f"{path}: no tensor has config.json's vocab_size = {vocab} rows (the largest, "
                              f"{name!r}, has shape {shape}): the weights do not match config.json")
    for path, name, shape in vocab_sized:
        if hidden not in shape:
            raise CheckpointError(f"{path}: tensor {name!r} has shape {shape}, but config.json says the hidden "
                                  f"size is {hidden}: the weights do not match config.json")


def nonfinite_tensors(path: Path, header: dict[str, Any]) -> Iterator[str]:
    """Names of the floating-point tensors of a safetensors file holding NaN or ±inf (streamed)."""
    import torch  # noqa: PLC0415 - torch-free front end: torch only when a file's values are read
    from safetensors import safe_open  # noqa: PLC0415 - with torch (framework "pt")

    names = [n for n, info in header.items() if n != "__metadata__" and info["dtype"] in FLOAT_DTYPES]
    with safe_open(str(path), framework="pt") as fh:
        for name in names:
            t = fh.get_tensor(name)
            if not bool(torch.isfinite(t).all()):
                yield name


def check_checkpoint(folder: Path, config: dict[str, Any], finite: bool = True) -> None:
    """Every check of the module docstring on a local checkpoint folder; raises
    :class:`CheckpointError` naming the first file that fails."""
    files = weight_files(folder)
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            raise CheckpointError(f"{index}: not a valid safetensors index") from None
        missing = sorted(s for s in shards if not (folder / s).is_file())
        if missing:
            raise CheckpointError(f"{index}: names shard {missing[0]!r}, which is not in the folder")
    if not files:
        raise CheckpointError(f"model.name: {str(folder)!r} holds no weight file "
                              f"({', '.join(WEIGHT_SUFFIXES)})")
    headers = {}
    for path in files:
        if path.suffix == ".safetensors":
            headers[path] = safetensors_header(path)
        elif path.suffix == ".gguf":
            gguf_check(path)
        else:
            _zip_check(path)
    check_shapes(headers, config, folder)
    if finite:
        for path, header in headers.items():
            for name in nonfinite_tensors(path, header):
                raise CheckpointError(f"{path}: tensor {name!r} holds NaN or infinite values: no analysis of "
                                      "these weights would mean anything")
