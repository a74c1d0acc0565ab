"""The fused GPU rank kernel: a Triton GEMM that counts, tile by tile, the entries of each row at least
as extreme as the row's own entry, so the vocab × vocab block is never written.

For rows ``r`` of the factored circuit ``A @ B`` (``A_rows``: [m, K], ``B``: [K, n], float32) and
their own columns ``c_r``, one launch gives per row

* ``le[r] = #{j : x_rj ≤ x_r,c_r}`` (``≥`` when descending), the 1-based rank with ties against the
  token, the own column included;
* ``eq[r] = #{j : x_rj = x_r,c_r}``, so ``eq > 1`` says the own entry ties another entry exactly.

**The own entry comes from the same tile instruction.** A first launch (``OWN=True``) computes each
row block's own entries as the diagonal of a ``BM × BM`` tile whose columns are the rows' own columns,
with the same K loop, tile shape and ``tl.dot`` precision as the counting launch. An entry of a
``tl.dot`` tile is its row and column vectors reduced in the same order wherever it sits in the tile,
so the own column compares equal to itself bit for bit and no re-check pass is needed. The claim is
checked on every run at no cost: the counting launch also counts, per row, the entries in the own
column that equal the own entry, which must be exactly one for a finite own entry; :func:`counts`
returns the rows where it is not (``unmatched``), and the caller recomputes them.

**Precision.** ``tf32x3`` (the default) splits each float32 operand into two TF32 halves and sums
three tensor-core products: float32-level accuracy at tensor-core speed. ``ieee`` is full float32
FMA. Either way the ranks of float32 near-ties may differ from the CPU's, whose reduction order differs.

On the CPU the same kernel source runs in Triton's interpreter: that is how the tests check its
indexing, masking, splitting and counting against the dense reference, ties and NaNs included, on a
machine with no GPU. The interpreter's ``tl.dot`` is numpy's float32 product whatever the precision,
so the tensor-core arithmetic (3×TF32, the own entry reproduced by the MMA tiles) is checked only
where a GPU runs ``bench/gpu_check.py``, and on every run by the check above. Triton is optional:
:func:`available` says whether it can run here.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import math
import os
from dataclasses import dataclass

import torch
from torch import Tensor

PRECISIONS = ("tf32x3", "ieee")
#: ``triton.language``, bound by :func:`_kernel` (the kernel's body names it; importing this module
#: never needs Triton)
tl = None


@dataclass(frozen=True)
class Tiling:
    """A launch shape: ``block`` rows and columns per tile (one square tile: the own-entry launch
    uses the same shape), ``k`` the K step (``tl.dot`` takes powers of two ≥ 16), and Triton's
    ``warps`` and ``stages``."""
    block: int = 64
    k: int = 32
    warps: int = 4
    stages: int = 3

    def __post_init__(self) -> None:
        for name in ("block", "k"):
            v = getattr(self, name)
            if v < 16 or v & (v - 1):
                raise ValueError(f"Tiling.{name} must be a power of two ≥ 16, got {v}")


DEFAULT_TILING = Tiling()


def available(device: torch.device | str) -> bool:
    """Whether the fused kernel can run for tensors on ``device``: Triton is installed, the device is
    an NVIDIA GPU of compute capability ≥ 8.0 (3×TF32 needs TF32 tensor cores; ROCm's Triton has no
    TF32) or the CPU in Triton's interpreter (``TRITON_INTERPRET=1``), and it is not switched off
    (``HEADREPORT_RANK_KERNEL=numpy``)."""
    if os.environ.get("HEADREPORT_RANK_KERNEL", "").strip().lower() == "numpy":
        return False
    if importlib.util.find_spec("triton") is None:
        return False
    device = torch.device(device)
    if device.type == "cpu":
        return os.environ.get("TRITON_INTERPRET") == "1"
    return (device.type == "cuda" and torch.version.hip is None and torch.cuda.is_available()
            and torch.cuda.get_device_capability(device)[0] >= 8)


def name(precision: str = "tf32x3") -> str:
    """What provenance calls this kernel."""
    return f"triton-{precision}"


def _scan(A, B, own_cols, own, counts, M, N, K, col_span,
          OWN: tl.constexpr, DESC: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
          PRECISION: tl.constexpr):
    """One program: rows ``pid_m·BM …`` against the columns ``pid_n·col_span …`` (``OWN``: the
    rows' own columns, one tile). The annotations are strings (``from __future__``)."""
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    rm = pid_m * BM + tl.arange(0, BM)
    row_ok = rm < M
    rm64 = rm.to(tl.int64)
    x = tl.load(own + rm, mask=row_ok, other=float("nan"))
    mine = tl.load(own_cols + rm, mask=row_ok, other=-1)
    le = tl.zeros((BM,), dtype=tl.int32)
    eq = tl.zeros((BM,), dtype=tl.int32)
    me = tl.zeros((BM,), dtype=tl.int32)  # the own column's entry equal to the own entry: must be 1
    lo = pid_n * col_span
    hi = tl.minimum(lo + col_span, N)
    for c0 in range(lo, hi, BN):
        if OWN:  # the tile's columns are its rows' own columns (BN == BM)
            cols = tl.where(row_ok, mine, 0)
        else:
            cols = c0 + tl.arange(0, BN)
        col_ok = cols < N
        cols64 = cols.to(tl.int64)
        acc = tl.zeros((BM, BN), dtype=tl.float32)
        for k0 in range(0, K, BK):  # the one K loop both launches share
            rk = k0 + tl.arange(0, BK)
            k_ok = rk < K
            a = tl.load(A + rm64[:, None] * K + rk[None, :], mask=row_ok[:, None] & k_ok[None, :], other=0.0)
            b = tl.load(B + rk[:, None].to(tl.int64) * N + cols64[None, :], mask=k_ok[:, None] & col_ok[None, :],
                        other=0.0)
            acc = tl.dot(a, b, acc, input_precision=PRECISION)
        if OWN:
            diagonal = tl.arange(0, BM)[:, None] == tl.arange(0, BN)[None, :]
            tl.store(own + rm, tl.sum(tl.where(diagonal, acc, 0.0), axis=1), mask=row_ok)
        else:
            if DESC:
                hit = acc >= x[:, None]
            else:
                hit = acc <= x[:, None]
            same = (acc == x[:, None]) & col_ok[None, :]
            le += tl.sum((hit & col_ok[None, :]).to(tl.int32), axis=1)
            eq += tl.sum(same.to(tl.int32), axis=1)
            me += tl.sum((same & (cols[None, :] == mine[:, None])).to(tl.int32), axis=1)
    if not OWN:
        tl.atomic_add(counts + rm64 * 3, le, mask=row_ok)
        tl.atomic_add(counts + rm64 * 3 + 1, eq, mask=row_ok)
        tl.atomic_add(counts + rm64 * 3 + 2, me, mask=row_ok)


class KernelUnavailable(RuntimeError):
    """Triton could not compile or launch the kernel for this device (the caller uses torch blocks)."""


@functools.cache
def _kernel(interpret: bool):
    """The jitted kernel (Triton's interpreter for CPU tensors)."""
    global tl
    import triton  # noqa: PLC0415 - optional: only where the kernel runs
    import triton.language  # noqa: PLC0415 - as above

    tl = triton.language
    knobs = getattr(triton, "knobs", None)  # Triton ≥ 3.4; before it, the variable alone
    interpreting = knobs.runtime.interpret if knobs else os.environ.get("TRITON_INTERPRET") == "1"
    if interpret and not interpreting:
        raise RuntimeError("the fused rank kernel runs on CPU tensors only in Triton's interpreter: set "
                           "TRITON_INTERPRET=1 before Triton is first imported")
    if interpret:
        from triton.runtime.interpreter import InterpretedFunction  # noqa: PLC0415 - as above
        return InterpretedFunction(_scan)
    return triton.jit(_scan)


@dataclass
class Counts:
    """What one fused pass gives: ``le`` (the 1-based ranks, ties against the token; 0 for a NaN own
    entry), ``eq`` (how many entries equal the own one, itself included), ``own`` (the own entries)
    and ``unmatched`` (rows whose finite own entry the counting tile did not reproduce in the own
    column, bit for bit: the caller recomputes them)."""
    le: Tensor
    eq: Tensor
    own: Tensor
    unmatched: Tensor


def _splits(n_row_blocks: int, n_col_tiles: int, device: torch.device) -> int:
    """Column splits per row block: enough programs to fill the device four times over."""
    if device.type != "cuda":
        return 1
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    return max(1, min(n_col_tiles, math.ceil(4 * sms / n_row_blocks)))


@torch.no_grad()
def counts(A_rows: Tensor, B: Tensor, own_cols: Tensor, descending: bool, *, precision: str = "tf32x3",
           tiling: Tiling = DEFAULT_TILING, splits: int | None = None) -> Counts:
    """The fused pass over rows ``A_rows @ B`` whose own columns are ``own_cols`` (see the module).
    ``splits``: how many programs share a row block's columns, adding their counts atomically
    (default: enough programs to fill the device)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if A_rows.dtype != torch.float32 or B.dtype != torch.float32:
        raise ValueError("the fused GPU rank kernel takes float32 factors")
    m, K = A_rows.shape
    if B.shape[0] != K or own_cols.shape != (m,):
        raise ValueError(f"gpurank: {tuple(A_rows.shape)} rows factor, {tuple(B.shape)} columns factor and "
                         f"{tuple(own_cols.shape)} own columns do not fit")
    n = B.shape[1]
    if n >= 2**31 or m >= 2**31:
        raise ValueError("gpurank: more than 2³¹ rows or columns")
    device = A_rows.device
    if B.device != device:
        raise ValueError(f"gpurank: the rows factor is on {device}, the columns factor on {B.device}")
    if m and (int(own_cols.min()) < 0 or int(own_cols.max()) >= n):
        raise ValueError(f"gpurank: a row's own column is outside the circuit's {n} columns")
    A = A_rows.contiguous()
    Bc = B.contiguous()
    cols = own_cols.to(device=device, dtype=torch.int32).contiguous()
    own = torch.empty(m, dtype=torch.float32, device=device)
    out = torch.zeros((m, 3), dtype=torch.int32, device=device)
    if m == 0:
        empty = torch.zeros(0, dtype=torch.int64)
        return Counts(empty, empty, own.cpu(), torch.zeros(0, dtype=torch.bool))
    kernel = _kernel(device.type == "cpu")
    t = tiling
    row_blocks = math.ceil(m / t.block)
    n_tiles = math.ceil(n / t.block)
    common = dict(OWN=True, DESC=descending, BM=t.block, BN=t.block, BK=t.k, PRECISION=precision)
    launch = {} if device.type == "cpu" else {"num_warps": t.warps, "num_stages": t.stages}
    # Triton launches on the current CUDA device, which need not be the tensors' (cuda:1)
    on_device = torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()
    with on_device:
        try:
            kernel[(row_blocks, 1)](A, Bc, cols, own, out, m, n, K, t.block, **common, **launch)
        except Exception as e:  # the first launch compiles: a chip or Triton it cannot be built for
            if device.type == "cpu":
                raise
            last = str(e).strip().splitlines()[-1][:200] if str(e).strip() else ""
            raise KernelUnavailable(f"{type(e).__name__}: {last}") from e
        splits = _splits(row_blocks, n_tiles, device) if splits is None else max(1, min(splits, n_tiles))
        span = math.ceil(n_tiles / splits) * t.block
        common["OWN"] = False
        kernel[(row_blocks, math.ceil(n / span))](A, Bc, cols, own, out, m, n, K, span, **common, **launch)
    res = out.to(torch.int64).cpu()
    own_cpu = own.cpu()
    unmatched = (res[:, 2] != 1) & ~own_cpu.isnan()
    return Counts(res[:, 0], res[:, 1], own_cpu, unmatched)
