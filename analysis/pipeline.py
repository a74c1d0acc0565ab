"""Run every analysis of a config and turn the results into artifact documents.

``run_analysis`` = load the model → check the config against it → W_E and W_EE once
(:mod:`analysis.embeddings`) → for each head, its analysis (:func:`analysis.head.analyze_head`:
spectra, singular directions, cos² rankings, subspace alignment, OV self-suppression, QK
self-attention; the survey reuses them) → validate → write all artifacts atomically (nothing is
written if any step fails).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from . import circuits
from .artifacts import (
    SCHEMA_VERSION,
    explorer_filename,
    head_filename,
    merged_timings,
    write_artifacts,
)
from .config import Config, check_against_model
from .embeddings import Layer0, effective_embedding
from .head import LayerCache, analyze_head
from .inputs.prompt_files import load_prompts
from .inputs.words import WordLists, load_word_list, tokenize_words
from .model.loader import LoadedModel, load_model
from .prompts import analyze_prompts, tokenize
from .staleness import analysis_code_digest, input_key
from .timings import Timer
from .tokens import token_bytes


def load_words(config: Config) -> dict[str, list[str]]:
    """The ``names`` and ``generic`` word lists of ``config`` (read before any model is loaded)."""
    return {"names": load_word_list(config.words.names, "words.names"),
            "generic": load_word_list(config.words.generic, "words.generic")}


def tokenize_word_lists(config: Config, words: dict[str, list[str]], tokenizer) -> WordLists:
    """Each word list's single-token words in ``words.form``, and the words it skips."""
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
    notes = list(model.family.notes)
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
        "qk_norm": model.family.qk_norm,
        "notes": notes,
    }


def vocabulary_document(model: LoadedModel) -> dict[str, Any]:
    """Every token of the vocabulary as the tokenizer decodes it (the explorer's search and lists),
    with the raw bytes of those that decode to U+FFFD (half a UTF-8 character)."""
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
