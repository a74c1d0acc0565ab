"""Give back the memory a load no longer needs: the checkpoint's file mapping and the allocator's
free pages.

transformers memory-maps a ``.safetensors`` file and leaves unprocessed weights as views of the
mapping; TransformerLens' processing writes new tensors for the weights it folds, but keeps the
original model's modules, some of whose weights (GPT-2's fused ``c_attn``, for one) stay views of
the file. A single such view keeps the whole mapping alive, and every page of it was read, so the
file counts in the process's resident memory as a second copy of the model (486 MB of 1.7 GB for
the GPT-2-small shape). :func:`detach_from_files` copies those few weights into ordinary memory,
after which the mapping is closed. :func:`trim` asks glibc to return the free pages at the top of
its heaps (the processing's intermediate state dict: 0.44 GB for the same shape).

Linux only (``/proc/self/maps``, glibc's ``malloc_trim``); elsewhere both do nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
from pathlib import Path
from typing import Any

#: file mappings that hold checkpoint weights (not shared libraries)
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


def _file_mappings() -> list[tuple[int, int]]:
    """Address ranges of this process's mappings of weight files."""
    try:
        lines = Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return []
    ranges = []
    for line in lines:
        parts = line.split(maxsplit=5)
        if len(parts) == 6 and parts[5].strip().endswith(WEIGHT_SUFFIXES):
            start, stop = parts[0].split("-")
            ranges.append((int(start, 16), int(stop, 16)))
    return ranges


def detach_from_files(module: Any) -> int:
    """Copy every parameter and buffer of ``module`` that is a view of a mapped weight file into
    ordinary memory (same values, dtype and device), so that the mapping can close; the bytes
    copied. ``module``: a ``torch.nn.Module`` (no torch import here: the front end stays light).
    Tensors are replaced in place (``.data``): references to the modules stay valid."""
    ranges = _file_mappings()
    if not ranges:
        return 0
    copied = 0
    for tensor in [*module.parameters(), *module.buffers()]:
        if tensor.device.type != "cpu" or tensor.numel() == 0:
            continue
        ptr = tensor.untyped_storage().data_ptr()
        if any(start <= ptr < stop for start, stop in ranges):
            tensor.data = tensor.data.clone()  # .data: no autograd record
            copied += tensor.numel() * tensor.element_size()
    gc.collect()
    return copied


def trim() -> None:
    """Return the allocator's free memory to the system (glibc ``malloc_trim``; else nothing)."""
    gc.collect()
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        if libc is not None and hasattr(libc, "malloc_trim"):
            libc.malloc_trim(0)
    except OSError:
        pass
