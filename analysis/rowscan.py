"""One pass over the rows of a factored vocab × vocab circuit ``A @ B`` without ever forming it.

Where this machine's C compiler builds it, the pass runs on the fused kernel
(:mod:`analysis.rankkernel`, ``rankscan.c``): a register-tiled GEMM that compares each tile with its
rows' own entries while the tile is in L1, writing a block only for visitors that read one. Its rows
are split evenly over ``workers`` threads (ctypes releases the GIL). Otherwise (no compiler,
``HEADREPORT_RANK_KERNEL=numpy``, or float64 factors) the pass is BLAS plus numpy, as follows.

The BLAS path tiles the product into blocks of ``rows × cols`` (:class:`Blocking`) small enough to
stay in the core's cache between the GEMM that writes a block and the visitors that read it. The
K = d_head GEMM is skinny (64 multiply-adds per output), so a full-width block (64 rows × 50,257
columns, 13 MB) spills to memory and halves the GEMM rate; a column-chunked one (256 × 1,024, 1 MB)
runs at the single-core bound. Block shapes are chosen at run time (:func:`tune_blocking`) by timing
a few candidates on the circuit itself, so the pass is fast on an AVX2-only EPYC and on an AVX-512
Xeon alike. ``workers`` threads (torch's thread count) each run single-threaded GEMMs on their own
row batches and never wait on each other.

A *visitor* reads each block: ``visit(block, row_slice, col0)`` with ``block`` a float32 numpy view
of rows ``row_slice`` (positions in the row list) and columns ``col0 : col0 + block.shape[1]``. Rank
counting (:class:`RankCounter`) and the explorer's top-k collectors are visitors, so every statistic
of a row comes from the same single pass.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from headreport.analysis import rankkernel

Visitor = Callable[[np.ndarray, slice, int], None]


@dataclass(frozen=True)
class Blocking:
    rows: int
    cols: int


#: shapes tried by :func:`tune_blocking` (rows × columns per block: 0.5–2 MB of float32)
CANDIDATES = (Blocking(256, 1024), Blocking(512, 1024), Blocking(256, 2048), Blocking(1024, 512),
              Blocking(128, 4096))


@functools.lru_cache(maxsize=16)
def _tuned(k: int, dtype: torch.dtype) -> Blocking:
    """The fastest :data:`CANDIDATES` shape for K = ``k`` on this machine, one thread, GEMM plus a
    compare-and-count pass (the work a rank pass does per block)."""
    g = torch.Generator().manual_seed(0)
    best, best_rate = CANDIDATES[0], 0.0
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for b in CANDIDATES:
            A = torch.randn(b.rows, k, generator=g).to(dtype)
            B = torch.randn(k, b.cols, generator=g).to(dtype)
            out = torch.empty(b.rows, b.cols, dtype=dtype)
            mask = np.empty((b.rows, b.cols), dtype=np.bool_)
            own = np.zeros((b.rows, 1), dtype=out.numpy().dtype)
            reps = max(2, int(4e7 // (b.rows * b.cols * k)))
            times = []
            for _ in range(3):
                t0 = time.perf_counter()
                for _ in range(reps):
                    block = torch.mm(A, B, out=out).numpy()
                    np.less_equal(block, own, out=mask)
                    mask.view(np.uint8).sum(axis=1, dtype=np.uint16)
                times.append(time.perf_counter() - t0)
            rate = reps * b.rows * b.cols / min(times)
            if rate > best_rate:
                best, best_rate = b, rate
    finally:
        torch.set_num_threads(threads)
    return best


def tune_blocking(k: int, dtype: torch.dtype = torch.float32) -> Blocking:
    """The block shape this machine runs fastest for inner dimension ``k`` (timed once per process)."""
    return _tuned(int(k), dtype)


def scan_rows(
    A_rows: Tensor, B: Tensor, visitors: Sequence[Visitor], *, blocking: Blocking | None = None,
    workers: int | None = None, progress: bool = False, desc: str = "row scan", fused: bool | None = None,
) -> None:
    """Compute ``A_rows @ B`` block by block (CPU) and hand every block to every visitor.

    Blocks of one row batch are visited by one thread, column chunk by column chunk, so a visitor
    may keep per-row state for its rows without locking. ``fused``: the fused kernel (True: required;
    None: where it is available; False: BLAS plus numpy)."""
    kernel = _kernel(A_rows, fused)
    if kernel is not None:
        packed = Packed.of(kernel, A_rows, B)
        packed.scan(visitors, None, blocking=blocking, workers=workers, progress=progress, desc=desc)
        return
    n_cols = B.shape[1]
    A = A_rows = A_rows.contiguous()
    blocking = blocking or tune_blocking(A.shape[1], A.dtype)
    workers = max(1, workers or torch.get_num_threads())
    n = A_rows.shape[0]
    starts = list(range(0, n, blocking.rows))
    # column chunks are views: BLAS reads a strided operand in place (its leading dimension)
    chunks = [B[:, c0 : c0 + blocking.cols] for c0 in range(0, n_cols, blocking.cols)]
    local = threading.local()

    def run(start: int) -> int:
        stop = min(start + blocking.rows, n)
        if not hasattr(local, "out"):
            local.out = torch.empty(blocking.rows, blocking.cols, dtype=A.dtype)
        a = A_rows[start:stop]
        for i, chunk in enumerate(chunks):
            width = chunk.shape[1]
            block = torch.mm(a, chunk, out=local.out[: stop - start, :width]).numpy()
            for visit in visitors:
                visit(block, slice(start, stop), i * blocking.cols)
        return stop - start

    _run_batches(run, starts, n, workers, progress, desc)


@functools.lru_cache(maxsize=4)
def _pool(workers: int) -> ThreadPoolExecutor:
    """A persistent pool per worker count (a survey makes hundreds of passes)."""
    return ThreadPoolExecutor(workers, thread_name_prefix="rowscan")


class RankCounter:
    """Visitor: for each row r of the scan, the number of *other* entries at least as extreme as
    the row's own entry ``own[r]`` (≤ for ascending ranks, ≥ for descending). The own column is
    left out of the count, so ``rank = 1 + count`` whatever rounding the block's copy of it got;
    ties with other entries count against the token. ``tied[r]``: whether another entry of row r
    equals its own entry exactly (the report shows how many rows the tie rule touched)."""

    def __init__(self, rows: np.ndarray, own: np.ndarray, descending: bool, n_cols: int):
        self.rows = rows
        self.own = own.reshape(-1, 1)
        self.compare = np.greater_equal if descending else np.less_equal
        self.counts = np.zeros(rows.shape[0], dtype=np.int64)
        self.tied = np.zeros(rows.shape[0], dtype=np.bool_)
        self.count_dtype = np.uint16 if n_cols < 2**16 else np.uint32
        self.local = threading.local()

    def _masks(self, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        local = self.local
        if not hasattr(local, "mask") or local.mask.shape[0] < shape[0] or local.mask.shape[1] < shape[1]:
            local.mask = np.empty(shape, dtype=np.bool_)
            local.equal = np.empty(shape, dtype=np.bool_)
        return local.mask[: shape[0], : shape[1]], local.equal[: shape[0], : shape[1]]

    def __call__(self, block: np.ndarray, row_slice: slice, col0: int) -> None:
        mask, equal = self._masks(block.shape)
        own = self.own[row_slice]
        self.compare(block, own, out=mask)
        np.equal(block, own, out=equal)
        rows = self.rows[row_slice]
        inside = (rows >= col0) & (rows < col0 + block.shape[1])
        if inside.any():  # the own column: not counted (it is the token itself)
            idx = np.nonzero(inside)[0]
            mask[idx, rows[idx] - col0] = False
            equal[idx, rows[idx] - col0] = False
        self.counts[row_slice] += mask.view(np.uint8).sum(axis=1, dtype=self.count_dtype)
        self.tied[row_slice] |= equal.any(axis=1)


def own_entries(A_rows: Tensor, B: Tensor, rows: Tensor) -> np.ndarray:
    """The diagonal entries (r, r) of the circuit for ``rows``, from the rows' factor ``A_rows``
    (float32, one dot product each)."""
    return (A_rows * B[:, rows].T).sum(dim=1).numpy()


def ranks_cpu(A_rows: Tensor, B: Tensor, rows: Tensor, descending: bool, *, progress: bool = False,
              blocking: Blocking | None = None, workers: int | None = None,
              visitors: Sequence[Visitor] = (), tied: np.ndarray | None = None,
              fused: bool | None = None) -> np.ndarray:
    """1-based ranks of the own entries of ``rows`` (``A_rows``: their row factor; ties against the
    token, NaN own entry last) in one :func:`scan_rows` pass, with any further ``visitors``.
    ``tied``: a boolean array filled with whether each row's own entry ties another entry exactly.
    ``fused`` as in :func:`scan_rows`."""
    n_cols = B.shape[1]
    rows_np = rows.numpy()
    if A_rows.shape[0] != rows_np.shape[0] or A_rows.shape[1] != B.shape[0]:
        raise ValueError(f"ranks_cpu: {tuple(A_rows.shape)} rows factor, {tuple(B.shape)} columns factor and "
                         f"{rows_np.shape[0]} rows do not fit")
    if rows_np.size and (rows_np.min() < 0 or rows_np.max() >= n_cols):
        raise ValueError(f"ranks_cpu: a row's own column is outside the circuit's {n_cols} columns")
    kernel = _kernel(A_rows, fused)
    if kernel is not None:
        packed = Packed.of(kernel, A_rows, B)
        own = kernel.own(packed.Ap, packed.Bp, packed.K, rows_np)
        le, eq = np.zeros(len(rows_np), dtype=np.int64), np.zeros(len(rows_np), dtype=np.int64)
        packed.scan(visitors, {"own": own, "descending": descending, "le": le, "eq": eq}, blocking=blocking,
                    workers=workers, progress=progress, desc="diagonal ranks")
        ties, counts = eq > 1, le  # the own column is counted (equal to itself, bit for bit)
    else:
        own = own_entries(A_rows, B, rows)
        counter = RankCounter(rows_np, own, descending, n_cols)
        scan_rows(A_rows, B, [counter, *visitors], blocking=blocking, workers=workers, progress=progress,
                  desc="diagonal ranks", fused=False)
        ties, counts = counter.tied, counter.counts + 1
    if tied is not None:
        tied[:] = ties & ~np.isnan(own)
    return np.where(np.isnan(own), n_cols, counts)


def _kernel(A_rows: Tensor, fused: bool | None) -> rankkernel.Kernel | None:
    if fused is False:
        return None
    kernel = rankkernel.load() if A_rows.dtype == torch.float32 else None
    if fused and kernel is None:
        raise RuntimeError("the fused rank kernel is not available (float64 factors, no C compiler, or "
                           "HEADREPORT_RANK_KERNEL=numpy)")
    return kernel


#: the fused pass's largest row batch: its packed rows (rows × K float32) stay within 1 MB of L2
FUSED_BATCH_FLOATS = 2**18
#: the largest row batch when the kernel collects lists (each batch seeds its row thresholds from a
#: rows × explorer.SEED sample: 16 MB a thread)
LIST_BATCH_ROWS = 512


def list_capacity(rows: int, n_cols: int, specs: Sequence[ListSpec]) -> int:
    """Entries each list's buffer holds at first: twice what a batch is expected to give."""
    return int(2 * rows * n_cols * max(sp.share for sp in specs)) + 4096


@dataclass(frozen=True)
class ListSpec:
    """A visitor the fused kernel can run without handing it blocks: it collects the entries of
    each row beyond a per-row threshold (``kind`` "row_hi": ≥, "row_lo": ≤; ``thresholds(rows)``
    gives a row batch's, ``rows`` a slice of scan positions) or of each column beyond a per-column
    threshold ("col_hi": ≥; ``thresholds`` the array), and ``add(rows, cols, values)`` takes them
    (``rows``: scan positions)."""

    kind: str
    thresholds: Callable[[slice], np.ndarray] | np.ndarray
    add: Callable[[np.ndarray, np.ndarray, np.ndarray], None]
    share: float = 0.005  #: about what fraction of the entries it collects (sizes the buffers)


@dataclass(frozen=True)
class Packed:
    """Both factors packed for the fused kernel, and the pass over them."""

    kernel: rankkernel.Kernel
    Ap: np.ndarray
    Bp: np.ndarray
    n: int
    K: int
    n_cols: int

    @classmethod
    def of(cls, kernel: rankkernel.Kernel, A_rows: Tensor, B: Tensor) -> Packed:
        A, Bn = A_rows.detach().numpy(), B.detach().numpy()
        return cls(kernel, kernel.pack_a(A), kernel.pack_b(Bn), A.shape[0], A.shape[1], Bn.shape[1])

    def _batch_rows(self, workers: int, blocking: Blocking | None, visiting: bool) -> int:
        mr = self.kernel.mr
        if visiting:  # blocks a visitor reads: the BLAS path's shapes, in whole tiles
            return -(-(blocking or CANDIDATES[0]).rows // mr) * mr
        largest = max(mr, FUSED_BATCH_FLOATS // self.K // mr * mr)
        return min(largest, -(-self.n // (workers * mr)) * mr)  # rows split evenly over the workers

    def scan(self, visitors: Sequence[Visitor], counting: dict[str, Any] | None, *, blocking: Blocking | None,
             workers: int | None, progress: bool, desc: str) -> None:
        """Every row batch against every column; ``counting``: the ``own``, ``descending``, ``le`` and
        ``eq`` arguments of :meth:`rankkernel.Kernel.scan`; each visitor reads blocks of ``blocking``
        (rounded to whole tiles)."""
        k, workers = self.kernel, max(1, workers or torch.get_num_threads())
        specs = [v.list_spec() for v in visitors if hasattr(v, "list_spec")]
        if visitors and len(specs) == len(visitors) and len({sp.kind for sp in specs}) == len(specs):
            self._scan_lists(specs, counting, workers, progress, desc)  # every visitor in the kernel
            return
        rows = self._batch_rows(workers, blocking, bool(visitors))
        cols = -(-(blocking or CANDIDATES[0]).cols // k.nr) * k.nr if visitors else self.n_cols
        count = counting or {}
        local = threading.local()

        def run(start: int) -> int:
            m = min(rows, self.n - start)
            if not visitors:
                k.scan(self.Ap, start, m, self.Bp, self.K, 0, self.n_cols, **count)
                return m
            if not hasattr(local, "out"):
                local.out = np.empty((rows, cols), dtype=np.float32)
            for c0 in range(0, self.n_cols, cols):
                c1 = min(c0 + cols, self.n_cols)
                k.scan(self.Ap, start, m, self.Bp, self.K, c0, c1, out=local.out, **count)
                for visit in visitors:
                    visit(local.out[:m, : c1 - c0], slice(start, start + m), c0)
            return m

        _run_batches(run, range(0, self.n, rows), self.n, workers, progress, desc)

    def _scan_lists(self, specs: list[ListSpec], counting: dict[str, Any] | None, workers: int, progress: bool,
                    desc: str) -> None:
        """The pass with every visitor's list collected by the kernel (:class:`ListSpec`): no block is
        written; a batch whose lists outgrow their buffers is run again with buffers four times as
        large (its counts reset first)."""
        k = self.kernel
        rows = min(self._batch_rows(workers, None, False), -(-LIST_BATCH_ROWS // k.mr) * k.mr)
        capacity = list_capacity(rows, self.n_cols, specs)
        count = counting or {}
        local = threading.local()

        def run(start: int) -> int:
            m = min(rows, self.n - start)
            batch = slice(start, start + m)
            thresholds = {sp.kind: sp.thresholds(batch) if callable(sp.thresholds) else sp.thresholds for sp in specs}
            while True:
                lists = getattr(local, "lists", None) or rankkernel.Lists(capacity)
                lists.keep.clear()
                for kind, values in thresholds.items():
                    lists.set_thresholds(kind, values)
                lists.reset()
                if counting:
                    count["le"][batch], count["eq"][batch] = 0, 0
                k.scan(self.Ap, start, m, self.Bp, self.K, 0, self.n_cols, lists=lists, **count)
                if not lists.overflow:
                    local.lists = lists
                    break
                local.lists = rankkernel.Lists(4 * lists.cap)
            for sp in specs:
                r, c, v = lists.entries(sp.kind)
                sp.add(r.astype(np.int64) + start, c, v)
            return m

        _run_batches(run, range(0, self.n, rows), self.n, workers, progress, desc)


def _run_batches(run: Callable[[int], int], starts: range, n: int, workers: int, progress: bool, desc: str) -> None:
    """``run(start)`` for every batch on the worker pool, with a progress bar over the rows; torch on
    one thread in the caller and in each worker meanwhile, so that the workers' GEMMs (the BLAS
    path's blocks, the explorer's seeds) run side by side instead of each spawning a team."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with tqdm(total=n, desc=desc, unit="row", disable=not progress, leave=False) as bar:
            for done in _pool(workers).map(lambda start: _one_thread(run, start), starts):
                bar.update(done)
    finally:
        torch.set_num_threads(threads)


_worker = threading.local()


def _one_thread(run: Callable[[int], int], start: int) -> int:
    """``run(start)`` with this worker's own OpenMP team at one thread (OpenMP's thread count is
    per calling thread: the caller's setting does not reach the workers)."""
    if not getattr(_worker, "single", False):
        torch.set_num_threads(1)
        _worker.single = True
    return run(start)
