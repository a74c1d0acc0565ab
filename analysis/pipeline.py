"""Run every analysis of a config and turn the results into artifact documents.

``run_analysis`` = load the model → check the heads → W_EE once → for each head: circuits, spectra,
singular directions, cos² rankings, subspace alignment, OV self-suppression → validate → write all
artifacts atomically (nothing is written if any step fails).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import alignment, circuits, diagonal, spectra
from .artifacts import SCHEMA_VERSION, head_filename, merged_timings, write_artifacts
from .config import Config, HeadRef, check_heads_against_model
from .embeddings import effective_embedding
from .models import LoadedModel, load_model
from .words import load_word_list, tokenize_words


class Timer:
    """Collects wall-clock seconds per named step (kept out of the deterministic artifacts)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0


def analysis_code_digest() -> str:
    """sha256 over the analysis package's source and data: part of the incremental-build key."""
    h = hashlib.sha256()
    root = resources.files("analysis")
    for path in sorted(Path(str(root)).rglob("*")):
        if path.is_file() and path.suffix in (".py", ".txt", ".json") and "__pycache__" not in path.parts:
            h.update(path.relative_to(Path(str(root))).as_posix().encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def load_words(config: Config) -> dict[str, list[str]]:
    """The ``names`` and ``generic`` word lists of ``config`` (read before any model is loaded)."""
    return {"names": load_word_list(config.words.names), "generic": load_word_list(config.words.generic)}


def artifact_provenance(model: LoadedModel, seed: int) -> dict[str, Any]:
    """The provenance block of every artifact: the model's, plus the seed and the analysis code."""
    return {
        **model.provenance,
        "seed": seed,
        "analysis_code_sha256": analysis_code_digest(),
        "timings_file": "timings.json",
    }


def model_summary(model: LoadedModel) -> dict[str, Any]:
    notes = []
    if model.positional == "rotary":
        notes.append(
            "Rotary position embeddings: the weights-based QK circuit W_Q·W_Kᵀ ignores the rotation, "
            "i.e. it is the QK circuit for a query and key at the same position (relative offset 0)."
        )
    if model.normalization == "RMS":
        notes.append("RMSNorm: no centering; the effective embedding uses the model's own RMSNorm modules.")
    if model.n_kv_heads != model.n_heads:
        notes.append(
            f"Grouped-query attention: {model.n_heads} query heads share {model.n_kv_heads} key/value heads; "
            f"query head H reads key/value head H // {model.n_heads // model.n_kv_heads}."
        )
    if model.provenance.get("quantization_note"):
        notes.append(model.provenance["quantization_note"])
    return {
        "name": model.provenance.get("repo_id") or model.provenance.get("requested_name"),
        "architecture": model.provenance.get("architecture"),
        "n_layers": model.n_layers,
        "n_heads": model.n_heads,
        "n_kv_heads": model.n_kv_heads,
        "d_model": model.d_model,
        "d_head": model.d_head,
        "d_vocab": model.d_vocab,
        "normalization": model.normalization,
        "positional": model.positional,
        "notes": notes,
    }


def word_group(words, skipped, scores: np.ndarray) -> dict[str, Any]:
    return {
        "words": [
            {"word": w.word, "id": w.token_id, "token": w.token, "score": float(s)}
            for w, s in zip(words, scores)
        ],
        "skipped": [{"word": s.word, "reason": s.reason} for s in skipped],
        "summary": alignment.summarize(scores),
    }


def analyze_head(
    model: LoadedModel,
    head: HeadRef,
    W_EE: torch.Tensor,
    config: Config,
    word_lists: dict[str, tuple[list, list]],
    timer: Timer,
    progress: bool = True,
) -> dict[str, Any]:
    """All per-head results as plain data (the ``results`` block of a head artifact)."""
    a = config.analysis
    tok = model.tokenizer
    W_E, W_U = model.weight("W_E"), model.weight("W_U")
    w = circuits.head_weights(model, head)
    tag = head.label
    with torch.no_grad():
        with timer(f"{tag}/spectra"):
            qk = circuits.qk_circuit(w)
            full = circuits.full_qk_circuit(w, W_E)
            eff = circuits.effective_qk_circuit(w, W_U, W_EE)
            spectra_out = {
                "w_qk": spectra.singular_spectrum(qk),
                "full_qk": spectra.singular_spectrum(full),
                "effective_qk": spectra.singular_spectrum(eff),
                "w_ov": spectra.singular_spectrum(circuits.ov_circuit(w)),
            }
        with timer(f"{tag}/singular_directions"):
            directions = {
                "full_qk": spectra.singular_directions(full, a.n_directions, a.top_k, tok),
                "effective_qk": spectra.singular_directions(eff, a.n_directions, a.top_k, tok),
            }
        with timer(f"{tag}/squared_cosine"):
            U, S, V = spectra.canonical_svd(qk)
            cosine = {
                "w_u": alignment.squared_cosine_topk(U[:, 0], W_U.T, a.top_k, tok),
                "w_ee": alignment.squared_cosine_topk(V[:, 0], W_EE, a.top_k, tok),
                "w_e": alignment.squared_cosine_topk(V[:, 0], W_E, a.top_k, tok),
                "sigma": float(S[0]),
            }
        with timer(f"{tag}/subspace_alignment"):
            rank = min(a.subspace_rank or model.d_head, U.shape[1])
            basis = U[:, :rank]
            groups, scores = {}, {}
            for key, (kept, skipped) in word_lists.items():
                ids = torch.tensor([x.token_id for x in kept], dtype=torch.long, device=W_U.device)
                s = alignment.subspace_scores(basis, W_U.T[ids]).double().cpu().numpy() if kept else np.zeros(0)
                scores[key] = s
                groups[key] = word_group(kept, skipped, s)
            subspace = {
                "rank": rank,
                "scale": model.d_model / rank,
                "random_baseline": 1.0,
                "groups": groups,
                "comparison": alignment.compare_groups(
                    scores["names"], scores["generic"], a.bootstrap_resamples, a.seed
                ),
            }
        with timer(f"{tag}/ov_self_suppression"):
            ov = diagonal.ov_self_suppression(
                circuits.effective_ov_circuit(w, W_EE, W_U), a.ov_mode, a.ov_sample_size, a.seed, progress
            )
    return {
        "head": {"label": head.label, "layer": head.layer, "head": head.head, "kv_head": w.kv_head},
        "spectra": spectra_out,
        "singular_directions": directions,
        "squared_cosine": cosine,
        "subspace_alignment": subspace,
        "ov_self_suppression": ov,
    }


def run_analysis(
    config: Config, out_dir: Path, progress: bool = True, log=print, *,
    model: LoadedModel | None = None, W_EE: torch.Tensor | None = None, timer: Timer | None = None,
) -> list[Path]:
    """Analyse every head of ``config``; write the artifacts into ``out_dir`` (the artifacts folder).

    ``model``/``W_EE``/``timer``: reuse an already loaded model (with ``config``'s model and
    processing), its effective embedding (``config``'s variant) and step timings — the survey passes
    them when it analyses its top-ranked heads in the same process."""
    timer = timer if timer is not None else Timer()
    torch.manual_seed(config.analysis.seed)
    # read the word lists before the (slow) model load: a bad list fails fast
    words = load_words(config)
    if model is None:
        with timer("load_model"):
            model = load_model(config.model, config.processing)
    check_heads_against_model(config.heads, model.n_layers, model.n_heads)
    word_lists = {key: tokenize_words(ws, model.tokenizer) for key, ws in words.items()}
    for key, (_, skipped) in word_lists.items():
        if skipped:
            log(f"words.{key}: skipped {len(skipped)} word(s) "
                f"that are not a single token: {', '.join(s.word for s in skipped[:8])}"
                + (" ..." if len(skipped) > 8 else ""))
    ee = config.effective_embedding
    if W_EE is None:
        with timer("effective_embedding"):
            W_EE = effective_embedding(model, ee.variant, ee.batch_size, progress=progress)

    provenance = artifact_provenance(model, config.analysis.seed)

    docs: dict[str, dict[str, Any]] = {}
    summary = model_summary(model)
    for head in config.heads:
        log(f"analysing head {head.label}")
        results = analyze_head(model, head, W_EE, config, word_lists, timer, progress)
        results["model"] = summary
        results["effective_embedding"] = {"variant": ee.variant}
        docs[head_filename(head.label)] = {
            "schema_version": SCHEMA_VERSION, "kind": "head",
            "config": config.to_dict(), "provenance": provenance, "results": results,
        }
    docs = {"model.json": {
        "schema_version": SCHEMA_VERSION, "kind": "model",
        "config": config.to_dict(), "provenance": provenance,
        "results": {
            "model": summary,
            "heads": [h.label for h in config.heads],
            "effective_embedding": {"variant": ee.variant, "batch_size": ee.batch_size},
        },
    }, **docs}
    docs["timings.json"] = merged_timings(out_dir, timer.seconds, model.provenance.get("device"))
    return write_artifacts(out_dir, docs)
