"""Run every analysis of a config and turn the results into artifact documents.

``run_analysis`` = load the model → check the config against it → W_E and W_EE once
(:mod:`analysis.embeddings`) → for each head, one function per analysis (spectra, singular
directions, cos² rankings, subspace alignment, OV self-suppression, QK self-attention; the survey
reuses them) → validate → write all artifacts atomically (nothing is written if any step fails).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import alignment, circuits, diagonal, explorer, explorer_codec, spectra
from .artifacts import (
    SCHEMA_VERSION,
    explorer_filename,
    head_filename,
    merged_timings,
    write_artifacts,
)
from .config import AnalysisConfig, Config, HeadRef, check_against_model
from .embeddings import Layer0, effective_embedding
from .inputs.prompt_files import load_prompts
from .inputs.words import SkippedWord, WordToken, load_word_list, tokenize_words
from .model.loader import LoadedModel, load_model
from .prompts import analyze_prompts, tokenize
from .staleness import analysis_code_digest, input_key
from .tokens import token_records


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


def load_words(config: Config) -> dict[str, list[str]]:
    """The ``names`` and ``generic`` word lists of ``config`` (read before any model is loaded)."""
    return {"names": load_word_list(config.words.names, "words.names"),
            "generic": load_word_list(config.words.generic, "words.generic")}


WordLists = dict[str, tuple[list[WordToken], list[SkippedWord]]]


def tokenize_word_lists(config: Config, words: dict[str, list[str]], tokenizer) -> WordLists:
    return {key: tokenize_words(ws, tokenizer, config.words.form) for key, ws in words.items()}


def artifact_provenance(model: LoadedModel, seed: int) -> dict[str, Any]:
    """The provenance block of every artifact: the model's, plus the seed and the analysis code."""
    return {
        **model.provenance,
        "seed": seed,
        "analysis_code_sha256": analysis_code_digest(),
        "timings_file": "timings.json",
    }


def model_summary(model: LoadedModel) -> dict[str, Any]:
    """The model's dimensions and every note on what its numbers approximate."""
    notes = list(model.family.get("notes", []))
    notes += circuits.gain_notes(model)
    notes += model.provenance.get("processing_notes", [])
    if model.normalization == "RMS":
        notes.append("RMSNorm: no centring; W_EE comes from the model's own forward pass.")
    if model.provenance.get("quantization_note"):
        notes.append(model.provenance["quantization_note"])
    return {
        # a model from memory is named by its config's name_or_path (the provenance says it came from memory)
        "name": (model.provenance.get("repo_id") or model.provenance.get("name_or_path")
                 or model.provenance.get("requested_name")),
        "architecture": model.provenance.get("architecture"),
        "n_layers": model.n_layers,
        "n_heads": model.n_heads,
        "n_kv_heads": model.n_kv_heads,
        "d_model": model.d_model,
        "d_head": model.d_head,
        "d_vocab": model.d_vocab,
        "normalization": model.normalization,
        "positional": model.positional,
        "qk_norm": bool(model.family.get("qk_norm", False)),
        "notes": notes,
    }


# --- one function per analysis (the survey reuses them) ------------------------------------------

def head_spectra(w: circuits.HeadWeights, layer0: Layer0, W_U: torch.Tensor) -> dict[str, Any]:
    """All singular values of W_QK, the full and the effective QK circuits and W_OV, and each
    spectrum's shape statistics (:func:`analysis.spectra.spectrum_statistics`)."""
    values = {
        "w_qk": spectra.singular_spectrum(circuits.qk_circuit(w)),
        "full_qk": spectra.singular_spectrum(circuits.full_qk_circuit(w, layer0.W_E)),
        "effective_qk": spectra.singular_spectrum(circuits.effective_qk_circuit(w, W_U, layer0.W_EE)),
        "w_ov": spectra.singular_spectrum(circuits.ov_circuit(w)),
    }
    return {**values, "statistics": {k: spectra.spectrum_statistics(v) for k, v in values.items()}}


def head_singular_directions(w: circuits.HeadWeights, layer0: Layer0, W_U: torch.Tensor,
                             a: AnalysisConfig, tokenizer) -> dict[str, Any]:
    return {
        "full_qk": spectra.singular_directions(circuits.full_qk_circuit(w, layer0.W_E), a.n_directions,
                                               a.top_k, tokenizer),
        "effective_qk": spectra.singular_directions(circuits.effective_qk_circuit(w, W_U, layer0.W_EE),
                                                    a.n_directions, a.top_k, tokenizer),
    }


def head_squared_cosine(qk_svd, W_U: torch.Tensor, layer0: Layer0, top_k: int, tokenizer) -> dict[str, Any]:
    """Tokens ranked by cos² with W_QK's first left (W_U) and right (W_EE, W_E) singular vectors."""
    U, S, V = qk_svd
    return {
        "w_u": alignment.squared_cosine_topk(U[:, 0], W_U.T, top_k, tokenizer),
        "w_ee": alignment.squared_cosine_topk(V[:, 0], layer0.W_EE, top_k, tokenizer),
        "w_e": alignment.squared_cosine_topk(V[:, 0], layer0.W_E, top_k, tokenizer),
        "sigma": float(S[0]),
    }


def word_group(words: list[WordToken], skipped: list[SkippedWord], scores: np.ndarray) -> dict[str, Any]:
    return {
        "words": [{"word": w.word, "id": w.token_id, "token": w.token, "score": float(s)}
                  for w, s in zip(words, scores)],
        "skipped": [{"word": s.word, "reason": s.reason} for s in skipped],
        "summary": alignment.summarize(scores),
    }


def subspace_scores_of_words(basis: torch.Tensor, W_U: torch.Tensor, word_lists: WordLists) -> dict[str, np.ndarray]:
    out = {}
    for key, (kept, _) in word_lists.items():
        ids = torch.tensor([x.token_id for x in kept], dtype=torch.long, device=W_U.device)
        out[key] = (alignment.subspace_scores(basis, W_U.T[ids]).double().cpu().numpy() if kept else np.zeros(0))
    return out


def head_subspace_alignment(U: torch.Tensor, W_U: torch.Tensor, d_model: int, word_lists: WordLists,
                            rank: int, n_resamples: int, seed: int, form: str) -> dict[str, Any]:
    """Names vs generic words inside the span of W_QK's top-``rank`` left singular vectors."""
    scores = subspace_scores_of_words(U[:, :rank], W_U, word_lists)
    return {
        "rank": rank,
        "scale": d_model / rank,
        "random_baseline": 1.0,
        "word_form": form,
        "groups": {key: word_group(kept, skipped, scores[key]) for key, (kept, skipped) in word_lists.items()},
        "comparison": alignment.compare_groups(scores["names"], scores["generic"], n_resamples, seed),
    }


def head_rank_metrics(circuits_of_layer: circuits.RankCircuits, head: int, *, mode: str, sample_size: int,
                      seed: int, qk_normalization: str, timer: Timer, tag: str,
                      progress: bool = False, explore: bool = False) -> dict[str, Any]:
    """OV self-suppression and QK self-attention ranks, with the paper's fractions and evidence;
    with ``explore`` (exact mode), the token explorer's lists collected in the same two passes
    (``"explorer"``: the :func:`analysis.explorer_codec.encode` payload, None when a circuit is degenerate)."""
    ov_circuit, qk_circuit = circuits_of_layer.ov(head), circuits_of_layer.qk(head)
    lists = explorer.collectors(ov_circuit, qk_circuit) if explore and mode == "exact" else None
    with timer(f"{tag}/ov_self_suppression"):
        ov, ov_ranks = diagonal.rank_pass(ov_circuit, mode, False, sample_size, seed, progress,
                                          visitors=[lists["ov_low"], lists["ov_high"]] if lists else ())
    with timer(f"{tag}/qk_self_attention"):
        qk, qk_ranks = diagonal.rank_pass(qk_circuit, mode, True, sample_size, seed, progress,
                                          visitors=[lists["qk_keys"], lists["qk_queries"]] if lists else ())
    qk["normalization"] = qk_normalization
    out: dict[str, Any] = {"ov_self_suppression": ov, "qk_self_attention": qk}
    if lists is not None:
        with timer(f"{tag}/explorer"):
            ok = ov_ranks is not None and qk_ranks is not None
            out["explorer"] = (explorer_codec.encode(explorer.arrays_of(lists, ov_ranks, qk_ranks), ov_circuit.n_rows)
                               if ok else None)
    return out


class LayerCache:
    """The :class:`analysis.circuits.RankCircuits` of the layers in use, built once per layer."""

    def __init__(self, model: LoadedModel, layer0: Layer0, qk_normalization: str, timer: Timer, tag: str):
        self.model, self.layer0, self.qk_normalization, self.timer, self.tag = model, layer0, qk_normalization, timer, tag
        self.layers: dict[int, circuits.RankCircuits] = {}

    def __getitem__(self, layer: int) -> circuits.RankCircuits:
        if layer not in self.layers:
            self.layers.clear()  # one layer at a time: its factors are vocabulary-sized
            with self.timer(f"{self.tag}/layer_factors"):
                self.layers[layer] = circuits.RankCircuits(self.model, layer, self.layer0.W_EE_rank,
                                                          self.qk_normalization)
        return self.layers[layer]


def analyze_head(model: LoadedModel, head: HeadRef, layer0: Layer0, config: Config, word_lists: WordLists,
                 timer: Timer, progress: bool = True, layers: LayerCache | None = None) -> dict[str, Any]:
    """All per-head results as plain data (the ``results`` block of a head artifact)."""
    a = config.analysis
    tok = model.tokenizer
    W_U = circuits.unembedding(model)
    w = circuits.head_weights(model, head)
    tag = head.label
    with torch.no_grad():
        with timer(f"{tag}/spectra"):
            spectra_out = head_spectra(w, layer0, W_U)
        with timer(f"{tag}/singular_directions"):
            directions = head_singular_directions(w, layer0, W_U, a, tok)
        with timer(f"{tag}/squared_cosine"):
            qk_svd = spectra.canonical_svd(circuits.qk_circuit(w))
            cosine = head_squared_cosine(qk_svd, W_U, layer0, a.top_k, tok)
        with timer(f"{tag}/subspace_alignment"):
            subspace = head_subspace_alignment(qk_svd[0], W_U, model.d_model, word_lists,
                                               a.subspace_rank or model.d_head, a.bootstrap_resamples,
                                               a.seed, config.words.form)
        layers = layers or LayerCache(model, layer0, a.qk_normalization, timer, tag)
        ranks = head_rank_metrics(layers[head.layer], head.head, mode=a.ov_mode, sample_size=a.ov_sample_size,
                                  seed=a.seed, qk_normalization=a.qk_normalization, timer=timer, tag=tag,
                                  progress=progress, explore=a.explorer)
        with timer(f"{tag}/top_suppressed"):
            suppressed = top_suppressed(layers[head.layer].ov(head.head), tok, ranks["ov_self_suppression"])
    return {
        "head": {"label": head.label, "layer": head.layer, "head": head.head, "kv_head": w.kv_head},
        "spectra": spectra_out,
        "singular_directions": directions,
        "squared_cosine": cosine,
        "subspace_alignment": subspace,
        **ranks,
        "top_suppressed": suppressed,
    }


#: how many tokens a head's most-suppressed list holds (the comparison page's overlap)
TOP_SUPPRESSED = 50


def top_suppressed(ov_circuit, tok, ov_summary: dict[str, Any]) -> dict[str, Any] | None:
    """The tokens whose own logit the head lowers most, relative to the rest of the row, when it
    attends to them (z-score of the OV circuit's diagonal entry in its row); None when the OV
    circuit is degenerate."""
    if not ov_summary.get("defined", True):
        return None
    z = diagonal.own_entry_zscores(ov_circuit)
    ids = diagonal.most_suppressed(z, TOP_SUPPRESSED)
    return {"k": TOP_SUPPRESSED, "measure": "z-score of the token's own entry in its row of the OV circuit",
            "tokens": token_records(tok, ids, value=[round(float(z[i]), 4) for i in ids])}


def vocabulary_document(model: LoadedModel) -> dict[str, Any]:
    """Every token of the vocabulary as the tokenizer decodes it (the explorer's search and lists),
    with the raw bytes of those that decode to U+FFFD (half a UTF-8 character)."""
    from .tokens import token_bytes

    tok = model.tokenizer
    texts = tok.batch_decode([[i] for i in range(model.d_vocab)], skip_special_tokens=False,
                             clean_up_tokenization_spaces=False)
    raw = {}
    for i, text in enumerate(texts):
        if "\ufffd" in text:
            b = token_bytes(tok, i)
            if b is not None:
                raw[str(i)] = b.hex()
    return {"schema_version": SCHEMA_VERSION, "kind": "vocabulary", "d_vocab": model.d_vocab, "tokens": texts,
            "bytes_hex": raw}


def prepare(config: Config, timer: Timer, progress: bool, log, model: LoadedModel | None = None,
            layer0: Layer0 | None = None, *, survey: bool = False) -> tuple[LoadedModel, Layer0, WordLists]:
    """The shared work of an analysis or a survey: word lists (read first: a bad list fails fast),
    the model, the config checked against it (``heads`` too, unless for a survey, which scores
    every head), and W_E / W_EE. Timings are prefixed ``survey/`` for a survey."""
    words = load_words(config)
    prefix = "survey/" if survey else ""
    if model is None:
        with timer(f"{prefix}load_model"):
            model = load_model(config.model, config.processing)
    check_against_model(config.replace(heads=()) if survey else config, model.n_layers, model.n_heads, model.d_head,
                        model.d_vocab, survey=survey)
    if config.prompts != "off":  # every prompt within the token limit, before any heavy work (tokenizer only)
        for text in load_prompts(config.prompts).texts:
            tokenize(model, text)
    word_lists = tokenize_word_lists(config, words, model.tokenizer)
    for key, (_, skipped) in word_lists.items():
        if skipped:
            log(f"words.{key}: skipped {len(skipped)} word(s) "
                f"that are not a single token: {', '.join(s.word for s in skipped[:8])}"
                + (" ..." if len(skipped) > 8 else ""))
    if layer0 is None:
        ee = config.effective_embedding
        with timer(f"{prefix}effective_embedding"):
            layer0 = effective_embedding(model, ee.variant, ee.batch_size, progress=progress,
                                         attention_bias=ee.attention_bias,
                                         rank_variant=config.analysis.rank_embedding)
    return model, layer0, word_lists


def run_analysis(
    config: Config, out_dir: Path, progress: bool = True, log=print, *,
    model: LoadedModel | None = None, layer0: Layer0 | None = None, timer: Timer | None = None,
    key_config: Config | None = None,
) -> list[Path]:
    """Analyse every head of ``config``; write the artifacts into ``out_dir`` (the artifacts folder).

    ``model``/``layer0``/``timer``: reuse an already loaded model (with ``config``'s model and
    processing), its embeddings (``config``'s variant) and step timings — the survey passes them
    when it analyses its top-ranked heads in the same process, with ``key_config``, the config
    whose staleness key the artifact set records (the survey's: its survey.json stays in the set)."""
    timer = timer if timer is not None else Timer()
    docs, model = analysis_documents(config, progress, log, model=model, layer0=layer0, timer=timer)
    docs["timings.json"] = merged_timings(out_dir, timer.seconds, model.provenance.get("device"))
    return write_artifacts(out_dir, docs, inputs=input_key(key_config or config, model.checkpoint_hashes))


def analysis_documents(
    config: Config, progress: bool = True, log=print, *,
    model: LoadedModel | None = None, layer0: Layer0 | None = None, timer: Timer | None = None,
) -> tuple[dict[str, dict[str, Any]], LoadedModel]:
    """Every artifact document of the analysis of ``config`` by file name (validated when written,
    :func:`analysis.artifacts.write_artifacts`; the timings not among them), and the model used."""
    timer = timer if timer is not None else Timer()
    torch.manual_seed(config.analysis.seed)
    prompt_set = load_prompts(config.prompts) if config.prompts != "off" else None  # a bad file fails fast
    model, layer0, word_lists = prepare(config, timer, progress, log, model, layer0)
    provenance = artifact_provenance(model, config.analysis.seed)
    summary = model_summary(model)
    embedding = {**layer0.describe(), "batch_size": config.effective_embedding.batch_size}
    docs: dict[str, dict[str, Any]] = {"model.json": {
        "schema_version": SCHEMA_VERSION, "kind": "model",
        "config": config.to_dict(), "provenance": provenance,
        "results": {"model": summary, "heads": [h.label for h in config.analysed_heads],
                    "effective_embedding": embedding},
    }}
    layers = LayerCache(model, layer0, config.analysis.qk_normalization, timer, "analysis")
    for head in sorted(config.analysed_heads):  # layer by layer: each layer's factors are built once
        log(f"analysing head {head.label}")
        results = analyze_head(model, head, layer0, config, word_lists, timer, progress, layers)
        payload = results.pop("explorer", None)
        results["model"] = summary
        results["effective_embedding"] = embedding
        docs[head_filename(head.label)] = {
            "schema_version": SCHEMA_VERSION, "kind": "head",
            "config": config.to_dict(), "provenance": provenance, "results": results,
        }
        if payload is not None:
            docs[explorer_filename(head.label)] = {"schema_version": SCHEMA_VERSION, "kind": "explorer",
                                                   "head": head.label, **payload}
    if prompt_set is not None:
        log(f"running the heads on {len(prompt_set.texts)} prompts ({config.prompts})")
        with timer("prompts"):
            docs["prompts.json"] = {"schema_version": SCHEMA_VERSION, "kind": "prompts", "config": config.to_dict(),
                                    "provenance": provenance,
                                    "results": analyze_prompts(model, config.analysed_heads, prompt_set)}
    if any(name.startswith("explorer_") for name in docs):
        with timer("vocabulary"):
            docs["vocabulary.json"] = vocabulary_document(model)
    return docs, model
