"""The fused rank kernel (``rankscan.c``): compiled for this machine on first use, loaded with ctypes.

BLAS plus numpy runs the K = d_head products of the rank passes at about half the machine's sgemm
bound: the library packs and writes every block, and numpy re-reads it three times to compare and
count. ``rankscan.c`` is a register-tiled float32 GEMM (14 × 32 tiles on AVX-512, 6 × 16 on
AVX2 + FMA, a portable C tile elsewhere) that compares each tile with its rows' own entries while
the tile is in L1, so the vocab × vocab block is never written. Every entry is the same chain of
fused multiply-adds over k = 0 … K-1 in every path, the own entry included (:meth:`Kernel.own`), so
the own column compares equal to itself bit for bit and no re-check pass is needed; the result does
not depend on the instruction set, the tile shape or the thread count.

The library is built with the system C compiler (``$CC``, else ``cc``; ``-O3 -march=native``, never
``-ffast-math``) into ``$HEADREPORT_CACHE`` (default ``$XDG_CACHE_HOME/headreport``, else
``~/.cache/headreport``) under a name that hashes the source, the compiler's version, the flags and
this CPU's model and feature flags, written to a temporary name and renamed, so concurrent first uses
and a cache shared between different machines are safe. With no compiler, or with
``HEADREPORT_RANK_KERNEL=numpy``, :func:`load` returns None and the passes use BLAS plus numpy.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger("headreport")

SOURCE = Path(__file__).with_name("rankscan.c")
FLAGS = ("-O3", "-fPIC", "-shared", "-fno-fast-math")
_P, _I = ctypes.c_void_p, ctypes.c_int64


def cache_dir() -> Path:
    if os.environ.get("HEADREPORT_CACHE"):
        return Path(os.environ["HEADREPORT_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "headreport"


def _cpu_identity() -> str:
    """The CPU's model and feature flags (what ``-march=native`` compiles for)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return "\n".join(sorted({ln for ln in lines if ln.startswith(("model name", "flags"))}))
    except OSError:
        return platform.machine() + platform.processor()


def compiler() -> str | None:
    cc = os.environ.get("CC") or "cc"
    return shutil.which(cc)


def build(cc: str, march: str = "native") -> Path:
    """The library for ``-march=MARCH`` (built unless cached); raises OSError or CalledProcessError."""
    flags = (*FLAGS, f"-march={march}")
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, check=True).stdout
    digest = hashlib.sha256("\0".join([SOURCE.read_text(), version, *flags, _cpu_identity()]).encode()).hexdigest()
    target = cache_dir() / "kernels" / f"rankscan-{digest[:24]}.so"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".rankscan-", suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        subprocess.run([cc, *flags, "-o", tmp, str(SOURCE), "-lm"], capture_output=True, text=True, check=True)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


class Lists(ctypes.Structure):
    """``hr_lists`` of rankscan.c: the thresholds of up to three candidate lists (row ≥, row ≤,
    column ≥) and the buffers their entries are appended to."""

    _fields_ = [("row_hi", _P), ("row_lo", _P), ("col_hi", _P), ("cap", _I), ("n", _I * 3),
                ("row", _P * 3), ("col", _P * 3), ("val", _P * 3), ("overflow", _I)]

    KINDS = ("row_hi", "row_lo", "col_hi")

    def __init__(self, capacity: int):
        super().__init__()
        self.buffers = [(np.empty(capacity, np.int32), np.empty(capacity, np.int32), np.empty(capacity, np.float32))
                        for _ in range(3)]
        self.cap = capacity
        for i, (r, c, v) in enumerate(self.buffers):
            self.row[i], self.col[i], self.val[i] = r.ctypes.data, c.ctypes.data, v.ctypes.data
        self.keep: list[np.ndarray] = []

    def set_thresholds(self, kind: str, values: np.ndarray) -> None:
        values = np.ascontiguousarray(values, dtype=np.float32)
        self.keep.append(values)  # alive while the kernel reads it
        setattr(self, kind, values.ctypes.data)

    def reset(self) -> None:
        self.n[0] = self.n[1] = self.n[2] = 0
        self.overflow = 0

    def entries(self, kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rows of the call, columns, values) appended to list ``kind``: copies."""
        i = self.KINDS.index(kind)
        n = self.n[i]
        r, c, v = self.buffers[i]
        return r[:n].copy(), c[:n].copy(), v[:n].copy()


@dataclass(frozen=True)
class Kernel:
    """The loaded library: its tile (``mr`` rows × ``nr`` columns) and instruction set."""

    lib: ctypes.CDLL
    mr: int
    nr: int
    isa: str
    path: Path

    def pack_a(self, A: np.ndarray) -> np.ndarray:
        """A (m × K, float32, any strides) in ``mr``-row panels (K × mr each, zero-padded)."""
        return self._pack(A, A.strides[0], A.strides[1], A.shape[0], A.shape[1], self.mr)

    def pack_b(self, B: np.ndarray) -> np.ndarray:
        """B (K × n, float32, any strides) in ``nr``-column panels (K × nr each, zero-padded)."""
        return self._pack(B, B.strides[1], B.strides[0], B.shape[1], B.shape[0], self.nr)

    def _pack(self, X: np.ndarray, outer: int, inner: int, n: int, K: int, panel: int) -> np.ndarray:
        if X.dtype != np.float32:
            raise TypeError(f"the fused kernel packs float32 factors, not {X.dtype}")
        out = np.empty(-(-n // panel) * panel * K, dtype=np.float32)
        self.lib.hr_pack(X.ctypes.data, outer // 4, inner // 4, n, K, panel, out.ctypes.data)
        return out

    def own(self, Ap: np.ndarray, Bp: np.ndarray, K: int, cols: np.ndarray) -> np.ndarray:
        """Entry (i, cols[i]) of the packed product for every row i, by the tile's own arithmetic."""
        cols = np.ascontiguousarray(cols, dtype=np.int64)
        own = np.empty(cols.shape[0], dtype=np.float32)
        self.lib.hr_own(Ap.ctypes.data, Bp.ctypes.data, K, cols.shape[0], cols.ctypes.data, own.ctypes.data)
        return own

    def scan(self, Ap: np.ndarray, row0: int, m: int, Bp: np.ndarray, K: int, c0: int, c1: int, *,
             own: np.ndarray | None = None, descending: bool = False, le: np.ndarray | None = None,
             eq: np.ndarray | None = None, out: np.ndarray | None = None, lists: Lists | None = None) -> None:
        """Rows ``row0 … row0+m-1`` (``row0`` a multiple of ``mr``) against columns ``[c0, c1)`` (``c0``
        a multiple of ``nr``): ``le[row0:]`` / ``eq[row0:]`` (int64) gain the counts of entries ≤ (≥
        when descending) and == the rows' ``own`` entries; ``out`` (m × (c1 - c0), C order) gets the
        entries; ``lists`` gets the entries beyond its thresholds (rows counted from ``row0``).
        Releases the GIL (ctypes), so worker threads run side by side."""
        assert row0 % self.mr == 0 and c0 % self.nr == 0 and 0 <= c0 < c1
        a = Ap.ctypes.data + row0 * K * 4
        counting = le is not None
        self.lib.hr_scan(a, Bp.ctypes.data, K, m, c0, c1,
                         own.ctypes.data + row0 * 4 if counting else None, int(descending),
                         le.ctypes.data + row0 * 8 if counting else None,
                         eq.ctypes.data + row0 * 8 if counting else None,
                         out.ctypes.data if out is not None else None, out.shape[1] if out is not None else 0,
                         ctypes.byref(lists) if lists is not None else None)


def bind(path: Path) -> Kernel:
    lib = ctypes.CDLL(str(path))
    lib.hr_pack.argtypes = [_P, _I, _I, _I, _I, _I, _P]
    lib.hr_own.argtypes = [_P, _P, _I, _I, _P, _P]
    lib.hr_scan.argtypes = [_P, _P, _I, _I, _I, _I, _P, ctypes.c_int, _P, _P, _P, _I, _P]
    for name in ("hr_pack", "hr_own", "hr_scan"):
        getattr(lib, name).restype = None
    lib.hr_isa.restype = ctypes.c_char_p
    return Kernel(lib, lib.hr_mr(), lib.hr_nr(), lib.hr_isa().decode(), path)


@functools.lru_cache(maxsize=1)
def _load() -> Kernel | None:
    cc = compiler()
    if cc is None:
        log.warning("no C compiler (cc or $CC): the rank passes use BLAS plus numpy, about half as fast")
        return None
    try:
        return bind(build(cc))
    except (OSError, subprocess.CalledProcessError) as e:
        detail = getattr(e, "stderr", "") or str(e)
        log.warning("the fused rank kernel did not build (%s): the rank passes use BLAS plus numpy",
                    detail.strip().splitlines()[-1] if detail.strip() else e)
        return None


def load() -> Kernel | None:
    """The kernel for this machine, built on first use; None when it cannot be built, or when
    ``HEADREPORT_RANK_KERNEL=numpy`` asks for the BLAS-plus-numpy passes."""
    if os.environ.get("HEADREPORT_RANK_KERNEL", "").lower() == "numpy":
        return None
    return _load()


def name() -> str:
    """What the CPU rank passes run on: ``fused-avx512``, ``fused-avx2``, ``fused-portable`` or ``numpy``."""
    k = load()
    return f"fused-{k.isa}" if k else "numpy"
