"""The token explorer's data: for every token, its neighbours in the head's circuits, collected in
the same pass over each circuit that computes the exact ranks (no extra vocab × vocab pass).

For a head, with the OV circuit W_EE·W_OV·W_U (row s: source token s attended to, column: logit) and
the self-attention QK circuit (row t: a query predicting t, column: key; the normalisation of the
report's QK ranks):

* ``ov_low`` / ``ov_high``: the ``k`` tokens whose logits row s lowers most / raises most;
* ``qk_keys``: the ``k`` keys query t attends to most (row t's largest entries);
* ``qk_queries``: the ``k`` queries that attend most to key t (column t's largest entries);
* ``ov_rank`` / ``qk_rank``: each token's own rank in its row (the ranks of the report).

Row lists are visitors of :func:`analysis.rowscan.scan_rows`: each keeps, per row, its best ``k`` so
far and the threshold they set, so after the first column chunk only entries beyond the threshold
are looked at (a compare pass, like the rank count, instead of a sort). The column list keeps, per
worker thread, the best ``k`` rows of every column, merged at the end.

:func:`analysis.explorer_codec.encode` packs the arrays compactly — ``uint16`` ids when the vocabulary allows, else
``uint32`` — lays them out in byte planes, deflates them and base64-encodes the result: the payload the report's
explorer loads from a ``.js`` file (``fetch`` is blocked on ``file://``).

Definitions and sources: docs/methods.md#token-explorer.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from . import rowscan

K = 10


#: rows / columns sampled to seed the thresholds (about k · n / SEED candidates per row remain)
SEED = 8192


def _lexsort_groups(groups: np.ndarray, vals: np.ndarray, ids: np.ndarray, n_groups: int, k: int,
                    largest: bool) -> tuple[np.ndarray, np.ndarray]:
    """Each group's first ``k`` candidates by (key, id), one sort of them all (``[n_groups, k]``
    values and ids)."""
    order = np.lexsort((ids, -vals if largest else vals, groups))
    groups, vals, ids = groups[order], vals[order], ids[order]
    first = np.searchsorted(groups, np.arange(n_groups))
    take = (first[:, None] + np.arange(k)[None, :]).ravel()
    return vals[take].reshape(n_groups, k), ids[take].reshape(n_groups, k)


def _group_order(groups: np.ndarray) -> np.ndarray:
    """A stable order of the candidates by group, in O(n): torch's stable sort of integers (a radix
    sort; numpy's stable sort of ``int32`` is a merge sort)."""
    return torch.sort(torch.from_numpy(groups), stable=True).indices.numpy()


#: entries of a padded block of groups (:func:`_kth_key`): 32 MB of float32
PAD_BLOCK = 1 << 23


def _kth_key(keys: np.ndarray, counts: np.ndarray, k: int) -> np.ndarray:
    """Each group's ``k``-th smallest key (+inf where a group has fewer than ``k``). ``keys``: the
    candidates' keys ordered by group, ``counts`` candidates per group.

    Groups of similar size (within 2×, in increasing size) are laid out one per row of a padded
    block of at most :data:`PAD_BLOCK` entries and partitioned row-wise: O(n) work and bounded
    memory however the candidates spread over the groups (a flat row of ties is one long row)."""
    n_groups = counts.size
    starts = np.cumsum(counts) - counts
    by_size = np.argsort(counts, kind="stable")
    sizes = counts[by_size]
    out = np.full(n_groups, np.inf, dtype=keys.dtype)
    i = 0
    while i < n_groups:
        width = max(int(sizes[i]), k)
        j = min(int(np.searchsorted(sizes, 2 * width, side="right")), i + max(1, PAD_BLOCK // (2 * width)))
        g = by_size[i:j]
        width = max(int(sizes[j - 1]), k)
        c = counts[g]
        row = np.repeat(np.arange(g.size), c)
        col = np.arange(row.size) - np.repeat(np.cumsum(c) - c, c)
        pad = np.full((g.size, width), np.inf, dtype=keys.dtype)
        pad[row, col] = keys[np.repeat(starts[g], c) + col]
        out[g] = np.partition(pad, k - 1, axis=1)[:, k - 1]
        i = j
    return out


def _merge_groups(groups: np.ndarray, vals: np.ndarray, ids: np.ndarray, n_groups: int, k: int,
                  largest: bool) -> tuple[np.ndarray, np.ndarray]:
    """For each of ``n_groups`` groups, the best ``k`` (value, id) pairs of its candidates, best
    first, ties by smaller id. Every group must have at least ``k`` candidates.

    Linear in the candidates: with key = −value (largest) or value, each group's ``k``-th smallest
    key t_g (:func:`_kth_key`, on the candidates ordered by group: :func:`_group_order`) bounds its
    best ``k``; only the candidates with key ≤ t_g — ``k`` a group, more only with ties at t_g — are
    then sorted by (group, key, id)."""
    keys = -vals if largest else vals
    counts = np.bincount(groups, minlength=n_groups)
    kth = _kth_key(keys[_group_order(groups)], counts, k)
    keep = (keys <= kth[groups]) | np.isnan(kth)[groups]
    return _lexsort_groups(groups[keep], vals[keep], ids[keep], n_groups, k, largest)


class _Candidates:
    """Per-thread lists of (group, id, value) candidates, concatenated at the end."""

    def __init__(self) -> None:
        self.local = threading.local()
        self.all: list[list[np.ndarray]] = []
        self.lock = threading.Lock()

    def add(self, groups: np.ndarray, ids: np.ndarray, vals: np.ndarray) -> None:
        if not hasattr(self.local, "parts"):
            self.local.parts = []
            with self.lock:
                self.all.append(self.local.parts)
        self.local.parts.append((groups.astype(np.int32), ids.astype(np.int32), vals))

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        parts = [p for thread in self.all for p in thread]
        return tuple(np.concatenate([p[i] for p in parts]) for i in range(3))  # type: ignore[return-value]


class _Masks:
    """One boolean buffer per worker thread, reused for every block: a visitor that allocated a
    block-sized temporary per block would interleave those with its small candidate arrays in the
    thread's heap, which then cannot shrink (1.9 GB resident for 150 MB live, GPT-2-small shape)."""

    def __init__(self) -> None:
        self.local = threading.local()

    def __call__(self, shape: tuple[int, int]) -> np.ndarray:
        buf = getattr(self.local, "buf", None)
        if buf is None or buf.size < shape[0] * shape[1]:
            buf = self.local.buf = np.empty(shape[0] * shape[1], dtype=np.bool_)
        return buf[: shape[0] * shape[1]].reshape(shape)


class Seeds:
    """The seeds of one circuit's row lists: for a row batch, lower bounds of each row's ``k``-th
    largest and ``k``-th smallest entry, from one small GEMM of the rows' factor ``rows_of(rows)``
    and :data:`SEED` sampled columns ``seed_B`` (into a buffer each worker thread reuses); the
    lowest and the highest list of a circuit share them.

    A bound is the ``k``-th best of :data:`GROUP`-column group extremes: the ``k`` best group maxima
    are ``k`` distinct sampled entries at least as large as the ``k``-th of them, so it is at most
    the sample's ``k``-th largest, itself at most the row's (and likewise for the minima). It is
    nearly as tight (two of a row's top ``k`` rarely share a group) and costs a vectorised max
    instead of a selection over every sampled entry (10 ns an entry: 4.4 of 4.8 s at GPT-2 size)."""

    def __init__(self, rows_of, seed_B: torch.Tensor, k: int = K):
        self.rows_of, self.seed_B, self.k = rows_of, seed_B, k
        self.local = threading.local()

    def kth(self, rows: slice, largest: bool) -> np.ndarray:
        cached = getattr(self.local, "cached", None)
        if cached is None or cached[0] != (rows.start, rows.stop):
            n = rows.stop - rows.start
            buf = getattr(self.local, "buf", None)
            if buf is None or buf.shape[0] < n:
                buf = self.local.buf = torch.empty(n, self.seed_B.shape[1], dtype=self.seed_B.dtype)
            sample = torch.mm(self.rows_of(rows), self.seed_B, out=buf[:n])
            cached = self.local.cached = ((rows.start, rows.stop), kth_bound(sample, self.k, largest=False),
                                          kth_bound(sample, self.k, largest=True))
        return (cached[2] if largest else cached[1]).numpy()


#: sampled entries per group of :func:`kth_bound` (a strided group: entry j of every slab)
GROUP = 16


def kth_bound(sample: torch.Tensor, k: int, largest: bool = True) -> torch.Tensor:
    """Per row of ``sample``, a lower bound of its ``k``-th largest entry (upper bound of the
    ``k``-th smallest when not ``largest``): the ``k``-th best of the extremes of :data:`GROUP`-entry
    groups (exact, the ``k``-th best itself, when a row has fewer than ``4·GROUP·k`` entries)."""
    width, k = sample.shape[1], min(k, sample.shape[1])
    group = GROUP if width >= 4 * GROUP * k else 1
    grouped = sample[:, : width // group * group].unflatten(1, (group, width // group))
    extreme = grouped.amax(dim=1) if largest else grouped.amin(dim=1)
    return extreme.topk(k, dim=1, largest=largest).values[:, -1]


class RowTopK:
    """Visitor: each row's ``k`` largest (or smallest) entries and their column ids.

    Each row batch's thresholds are seeded, at its first block, by :class:`Seeds`. Every block is
    then one compare and a flat scan for the entries beyond the thresholds; :meth:`result` keeps
    each row's best ``k`` of those (about ``k``·n/SEED candidates a row)."""

    def __init__(self, n_rows: int, seeds: Seeds, k: int = K, largest: bool = True):
        self.k, self.largest, self.seeds = k, largest, seeds
        self.n_rows = n_rows
        self.thresholds = np.zeros(n_rows, dtype=np.float32)  # in value space: ≥ (largest) or ≤ it
        self.seeded = np.zeros(n_rows, dtype=bool)
        self.candidates = _Candidates()
        self.masks = _Masks()

    def _seed(self, rows: slice) -> None:
        self.thresholds[rows] = self.seeds.kth(rows, self.largest)
        self.seeded[rows] = True

    def list_spec(self):
        """This visitor run inside the fused kernel (:class:`analysis.rowscan.ListSpec`)."""
        def thresholds(rows: slice) -> np.ndarray:
            self._seed(rows)
            return self.thresholds[rows]

        return rowscan.ListSpec("row_hi" if self.largest else "row_lo", thresholds, self.candidates.add,
                                share=self.k / self.seeds.seed_B.shape[1])

    def __call__(self, block: np.ndarray, rows: slice, col0: int) -> None:
        if not self.seeded[rows.start]:
            self._seed(rows)
        beyond = np.greater_equal if self.largest else np.less_equal
        flat = np.flatnonzero(beyond(block, self.thresholds[rows, None], out=self.masks(block.shape)))
        if flat.size:
            ii, jj = np.divmod(flat, block.shape[1])
            self.candidates.add(ii + rows.start, jj + col0, block[ii, jj])

    def result(self) -> np.ndarray:
        """``[n_rows, k]`` column ids, best first (ties: smaller id first)."""
        groups, ids, vals = self.candidates.arrays()
        return _merge_groups(groups, vals, ids, self.n_rows, self.k, self.largest)[1].astype(np.int64)


class ColTopK:
    """Visitor: each column's ``k`` largest entries and their row ids (over the rows scanned). The
    column thresholds are seeded before the scan by the ``k``-th largest entry of each column among
    :data:`SEED` sampled rows (``thresholds``); :meth:`result` keeps each column's best ``k``."""

    def __init__(self, n_cols: int, rows: np.ndarray, thresholds: np.ndarray, k: int = K):
        self.n_cols, self.rows, self.k = n_cols, rows, k
        self.thresholds = thresholds.astype(np.float32)
        self.candidates = _Candidates()
        self.masks = _Masks()

    def list_spec(self):
        """This visitor run inside the fused kernel (:class:`analysis.rowscan.ListSpec`)."""
        return rowscan.ListSpec("col_hi", self.thresholds,
                                lambda rows, cols, vals: self.candidates.add(cols, self.rows[rows], vals),
                                share=self.k / min(SEED, len(self.rows)))

    def __call__(self, block: np.ndarray, rows: slice, col0: int) -> None:
        mask = self.masks(block.shape)
        flat = np.flatnonzero(np.greater_equal(block, self.thresholds[None, col0 : col0 + block.shape[1]], out=mask))
        if flat.size:
            ii, jj = np.divmod(flat, block.shape[1])
            self.candidates.add(jj + col0, self.rows[rows][ii], block[ii, jj])

    def result(self) -> np.ndarray:
        """``[n_cols, k]`` row ids, best first (ties: smaller id first)."""
        groups, ids, vals = self.candidates.arrays()
        return _merge_groups(groups, vals, ids, self.n_cols, self.k, largest=True)[1].astype(np.int64)


def sampled(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=min(SEED, n), replace=False))


def column_thresholds(rows_of, B, n_rows: int, k: int = K, chunk: int = 512) -> np.ndarray:
    """Each column's :func:`kth_bound` among :data:`SEED` sampled rows (a lower bound of its true
    ``k``-th largest), computed column chunk by column chunk into one reused buffer."""
    A = rows_of(torch.from_numpy(sampled(n_rows, seed=1)))
    out = np.empty(B.shape[1], dtype=np.float32)
    buf = torch.empty(chunk, A.shape[0], dtype=A.dtype)
    for c0 in range(0, B.shape[1], chunk):
        width = min(chunk, B.shape[1] - c0)
        block = torch.mm(B[:, c0 : c0 + width].T, A.T, out=buf[:width])  # columns as rows
        out[c0 : c0 + width] = kth_bound(block, k).numpy()
    return out


class TorchRowTopK:
    """:class:`RowTopK` on device tensors (the GPU pass): a ``torch.topk`` of each block merged into
    the rows' best ``k``."""

    def __init__(self, n_rows: int, device: Any, k: int = K, largest: bool = True):
        self.k, self.largest = k, largest
        fill = float("-inf") if largest else float("inf")
        self.values = torch.full((n_rows, k), fill, device=device)
        self.tensor_ids = torch.full((n_rows, k), -1, dtype=torch.int64, device=device)

    def __call__(self, block: torch.Tensor, rows: slice, col0: int) -> None:
        top = torch.topk(block, min(self.k, block.shape[1]), dim=1, largest=self.largest)
        values = torch.cat([self.values[rows], top.values], dim=1)
        ids = torch.cat([self.tensor_ids[rows], top.indices + col0], dim=1)
        best = torch.topk(values, self.k, dim=1, largest=self.largest)
        self.values[rows], self.tensor_ids[rows] = best.values, ids.gather(1, best.indices)

    def result(self) -> np.ndarray:
        return self.tensor_ids.cpu().numpy()


class TorchColTopK:
    """:class:`ColTopK` on device tensors (the GPU pass)."""

    def __init__(self, n_cols: int, rows: torch.Tensor, device: Any, k: int = K):
        self.k, self.rows = k, rows.to(device)
        self.values = torch.full((k, n_cols), float("-inf"), device=device)
        self.tensor_ids = torch.full((k, n_cols), -1, dtype=torch.int64, device=device)

    def __call__(self, block: torch.Tensor, rows: slice, col0: int) -> None:
        cols = slice(col0, col0 + block.shape[1])
        top = torch.topk(block, min(self.k, block.shape[0]), dim=0)
        values = torch.cat([self.values[:, cols], top.values], dim=0)
        ids = torch.cat([self.tensor_ids[:, cols], self.rows[rows][top.indices]], dim=0)
        best = torch.topk(values, self.k, dim=0)
        self.values[:, cols], self.tensor_ids[:, cols] = best.values, ids.gather(0, best.indices)

    def result(self) -> np.ndarray:
        return self.tensor_ids.T.cpu().numpy()


def collectors(ov, qk) -> dict[str, Any]:
    """The visitors of one head's two exact passes over its :class:`analysis.circuits.TokenCircuit`
    ``ov`` (lowest, highest) and ``qk`` (row highest, column highest), for CPU (numpy, seeded
    thresholds) or a device (torch)."""
    n, device = ov.n_rows, ov.B.device
    if device.type == "cpu":
        cols = torch.from_numpy(sampled(n, seed=2))
        ov_B, qk_B = ov.B[:, cols].contiguous(), qk.B[:, cols].contiguous()
        ov_seeds = Seeds(lambda rows: ov.rows_of(torch.arange(rows.start, rows.stop)), ov_B)
        qk_seeds = Seeds(lambda rows: qk.rows_of(torch.arange(rows.start, rows.stop)), qk_B)
        return {"ov_low": RowTopK(n, ov_seeds, largest=False), "ov_high": RowTopK(n, ov_seeds, largest=True),
                "qk_keys": RowTopK(n, qk_seeds, largest=True),
                "qk_queries": ColTopK(n, np.arange(n), column_thresholds(qk.rows_of, qk.B, n))}
    rows = torch.arange(n)
    return {"ov_low": TorchRowTopK(n, device, largest=False), "ov_high": TorchRowTopK(n, device, largest=True),
            "qk_keys": TorchRowTopK(n, device, largest=True), "qk_queries": TorchColTopK(n, rows, device)}


def arrays_of(lists: dict[str, Any], ov_rank: np.ndarray, qk_rank: np.ndarray,
              progress: bool = False) -> dict[str, np.ndarray]:
    """The explorer's arrays (:data:`FIELDS`) from the collectors and the two passes' ranks (a
    progress bar over the four list merges: each is seconds at a 262k vocabulary)."""
    names = tqdm(("ov_low", "ov_high", "qk_keys", "qk_queries"), desc="explorer lists", unit="list",
                 disable=not progress, leave=False)
    return {"ov_rank": ov_rank, "qk_rank": qk_rank, **{name: lists[name].result() for name in names}}
