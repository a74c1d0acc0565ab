"""Give back the memory a load no longer needs: the checkpoint's file mapping, the processing's
intermediate copies and the allocator's free pages.

transformers memory-maps a ``.safetensors`` file and leaves unprocessed weights as views of the
mapping; TransformerLens' processing writes new tensors for the weights it folds, but keeps the
original model's modules, some of whose weights (GPT-2's fused ``c_attn``, for one) stay views of
the file. A single such view keeps the whole mapping alive, and every page of it was read, so the
file counts in the process's resident memory as a second copy of the model (486 MB of 1.7 GB for
the GPT-2-small shape). :func:`detach_from_files` copies those few weights into ordinary memory,
after which the mapping is closed. :func:`trim` asks glibc to return the free pages at the top of
its heaps (the processing's intermediate state dict: 0.44 GB for the same shape).

TransformerLens' weight processing chains steps that each begin by deep-copying the whole state dict
they are given (``{k: v.clone() for k, v in state_dict.items()}``) and return the copy, so while a
step runs its argument and its copy are both alive: two models' worth on top of the model itself.
Inside :func:`handing_over`, such a step is given its argument's entries in a :class:`_HandOver`
dict, which hands each entry over as the copy reads it, so an entry's original is freed as soon as
it is copied: the peak holds one copy. The values are the library's own, bit for bit
(``tests/unit/test_release.py`` compares the processed weights of several families with and without
it); a step that reads its argument again after copying it, or whose result lacks a key of it, is
refused with an error rather than let through. Once a step's copy is made, the checkpoint pages
the model's own weights were read from are given back (:func:`drop_file_pages`): the processing
reads only its copies (only mappings of the checkpoint's own files, none of whose pages was written).

Linux only (``/proc/self/smaps``, ``madvise``, glibc's ``malloc_trim``); elsewhere
these do nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import gc
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

#: file mappings that hold checkpoint weights (not shared libraries)
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


def detach_from_files(module: Any) -> int:
    """Copy every parameter and buffer of ``module`` that is a view of a mapped weight file into
    ordinary memory (same values, dtype and device), so that the mapping can close; the bytes
    copied. ``module``: a ``torch.nn.Module`` (no torch import here: the front end stays light).
    Tensors are replaced in place (``.data``): references to the modules stay valid."""
    ranges = [(start, stop) for start, stop, _ in _weight_mappings()]
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


def _weight_mappings(under: Path | None = None) -> list[tuple[int, int, bool]]:
    """This process's mappings of weight files (with ``under``: of :func:`_weight_files` of it, else
    any file named like one): (start, stop, written), ``written`` when the mapping holds a page of its
    own, resident or swapped out (``/proc/self/smaps``: ``Anonymous`` or ``Swap`` not 0 kB, or not
    said), rather than only pages that read back from the file."""
    try:
        text = Path("/proc/self/smaps").read_text()
    except OSError:
        return []
    targets = _weight_files(under) if under is not None else None
    found: list[tuple[int, int, bool]] = []
    current: tuple[int, int] | None = None
    fields: dict[str, int] = {}

    def close() -> None:
        if current is not None:
            found.append((*current, fields.get("Anonymous") != 0 or fields.get("Swap") != 0))

    for line in text.splitlines():
        head = line.split(maxsplit=5)
        if head and "-" in head[0] and not head[0].endswith(":"):  # a mapping's first line
            close()
            current, fields = None, {}
            path = head[5].strip() if len(head) == 6 else ""
            if path in targets if targets is not None else path.endswith(WEIGHT_SUFFIXES):
                start, stop = head[0].split("-")
                current = (int(start, 16), int(stop, 16))
        elif current is not None and head and head[0] in ("Anonymous:", "Swap:"):
            fields[head[0][:-1]] = int(head[1])
    close()
    return found


def _weight_files(under: Path) -> set[str]:
    """The real paths of the weight file ``under`` or of the weight files in the folder ``under`` (a
    hub snapshot's files are links to blobs whose names have no suffix: the mappings name the blobs)."""
    under = Path(under)
    try:
        files = [under] if under.is_file() else [f for f in under.iterdir() if f.name.endswith(WEIGHT_SUFFIXES)]
    except OSError:
        return set()
    return {os.path.realpath(f) for f in files}


def drop_file_pages(under: Path | None = None) -> int:
    """Give back the resident pages of the weight-file mappings that were only read (of ``under``,
    when given; none ``written``, see :func:`_weight_mappings`), with ``madvise(MADV_DONTNEED)``: the
    mapping stays valid, and a page touched again is read back from the file. The bytes of mappings
    dropped (0 off Linux)."""
    libc = _libc()
    if libc is None or not hasattr(libc, "madvise"):
        return 0
    dropped = 0
    for start, stop, written in _weight_mappings(under):
        if not written and libc.madvise(start, stop - start, MADV_DONTNEED) == 0:
            dropped += stop - start
    return dropped


#: Linux's madvise advice: free the pages now, read them again on the next touch
MADV_DONTNEED = 4


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    if libc is not None and hasattr(libc, "madvise"):
        libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return libc


def trim() -> None:
    """Return the allocator's free memory to the system (glibc ``malloc_trim``; else nothing)."""
    gc.collect()
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


class _HandOver(dict):
    """A dict whose ``items()`` hands each entry over as it is read: the entry leaves the dict, so a
    copy made by iterating it never holds the original and the copy of every entry at once. Once
    read through, it refuses every further read (a step that reads its argument again would find it
    empty), and ``then()`` runs."""

    def __init__(self, entries: dict, then: Callable[[], Any]):
        super().__init__(entries)
        self._then, self._consumed = then, False

    def items(self):  # type: ignore[override]  # a generator, read once
        self._check()
        for key in list(dict.keys(self)):
            yield key, self.pop(key)
        self._consumed = True
        self._then()

    def _check(self, *args: Any) -> None:
        if self._consumed:
            raise RuntimeError("a TransformerLens processing step read its state dict again after copying "
                               "it: it cannot run with its copies handed over (analysis/model/release.py)")

    def __getitem__(self, key: Any) -> Any:
        self._check()
        return super().__getitem__(key)

    def __contains__(self, key: Any) -> bool:
        self._check()
        return super().__contains__(key)

    def __iter__(self):
        self._check()
        return super().__iter__()

    def __len__(self) -> int:
        self._check()
        return super().__len__()

    def get(self, key: Any, default: Any = None) -> Any:
        self._check()
        return super().get(key, default)

    def keys(self):  # type: ignore[override]
        self._check()
        return super().keys()

    def values(self):  # type: ignore[override]
        self._check()
        return super().values()


#: one hand-over at a time in this process: the methods are patched on the class, for every thread
_PATCHING = threading.RLock()


@contextlib.contextmanager
def handing_over(owner: Any, steps: Sequence[str], after_copy: Callable[[], Any] = lambda: None,
                 ) -> Iterator[dict[str, int]]:
    """Within the block, each static method ``owner.<step>`` (a step that deep-copies its first
    argument, a dict, and returns the copy) is given that argument's entries in a :class:`_HandOver`
    and the caller's dict is emptied (the caller rebinds its name to the step's result);
    ``after_copy()`` runs once each step's copy is made. A step that reads its argument again, or
    whose result lacks one of the argument's keys, raises a RuntimeError naming it. Yields the calls
    made of each step; the methods are restored on exit, and other threads wait for it."""
    calls = dict.fromkeys(steps, 0)

    def wrap(name: str, step: Callable) -> staticmethod:
        def run(state_dict: dict, *args: Any, **kwargs: Any) -> dict:
            calls[name] += 1
            keys = set(state_dict)
            given = _HandOver(state_dict, after_copy)
            state_dict.clear()
            result = step(given, *args, **kwargs)
            if not keys <= set(result):
                raise RuntimeError(f"{getattr(owner, '__name__', owner)}.{name} dropped state-dict keys "
                                   f"{sorted(keys - set(result))[:5]}: it cannot run with its copies handed over")
            return result
        return staticmethod(run)

    with _PATCHING:
        saved = {name: owner.__dict__[name] for name in steps
                 if isinstance(owner.__dict__.get(name), staticmethod)}
        try:
            for name, method in saved.items():
                setattr(owner, name, wrap(name, method.__func__))
            yield calls
        finally:
            for name, method in saved.items():
                setattr(owner, name, method)
