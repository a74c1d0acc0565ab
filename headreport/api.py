"""The Python API, for notebooks: analyse a head or survey a model already in memory, see the
result inline, save it as the command line would.

    import headreport
    rep = headreport.analyze(model, heads=["10.7"])   # a transformers model, a TransformerBridge,
    rep                                               # a hub name, a folder or a .gguf file
    rep.results["head_10.7.json"]["results"]          # the artifact documents (the JSON contract)
    rep.save("out")                                   # artifacts + site + PDF, as the CLI writes them
    headreport.survey(model).top(5)                   # every head scored; shown inline too

Nothing is written unless asked: the results live in memory, and the inline display renders into a
temporary folder that is removed at once. An in-memory model is processed on a copy (the caller's
object is never modified) and recorded by a sha256 of its weights (:mod:`analysis.model.memory`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .analysis.artifacts import (
    TIMINGS,
    check_artifacts_owned,
    dumps,
    load_artifacts,
    merged_timings,
    read_manifest,
    validate,
    write_artifacts,
)
from .analysis.config import (
    Config,
    HeadRef,
    apply_overrides,
    config_from_dict,
    load_config,
    parse_heads,
)
from .analysis.errors import ConfigError, UserError
from .analysis.inputs.preflight import check_inputs, preflight
from .analysis.inputs.text import check_output_target
from .analysis.model.sources import MEMORY_PREFIX
from .cli import output_lock
from .notebook import frame, inline_report

ModelLike = Any  # str | os.PathLike | transformers.PreTrainedModel | TransformerBridge


@dataclass
class Report:
    """What :func:`analyze` or :func:`survey` computed: the artifact documents, in memory.

    ``results``: file name → document, exactly what the command line writes into ``artifacts/``
    (``model.json``, ``head_L.H.json``, ``survey.json``, …; not the timings). ``timings``: seconds
    per step. In Jupyter the object displays as the report's pages, offline."""

    results: dict[str, dict[str, Any]]
    config: Config
    timings: dict[str, float] = field(default_factory=dict)
    device: str | None = None
    inputs: dict[str, Any] = field(default_factory=dict, repr=False)  # the staleness key recorded on save

    @property
    def heads(self) -> list[str]:
        """The analysed heads, as ``"L.H"`` labels, in the order ``model.json`` lists them."""
        model = self.results.get("model.json")
        return list(model["results"]["heads"]) if model else []

    def head(self, label: str) -> dict[str, Any]:
        """The ``results`` block of one analysed head (``"10.7"``)."""
        for doc in self.results.values():
            if doc.get("kind") == "head" and doc["results"]["head"]["label"] == label:
                return doc["results"]
        raise KeyError(f"head {label!r} was not analysed; analysed: {', '.join(self.heads) or 'none'}")

    def save(self, out: str | os.PathLike, *, engine: str = "auto", force: bool = False,
             render: bool = True) -> dict[str, Any]:
        """Write ``out/artifacts`` and (``render``) the site and PDF into ``out`` — the files
        ``headreport analyze`` + ``headreport render`` write, under the same rules: one headreport at
        a time in ``out`` (its lock), and a folder holding files this tool did not write is refused
        before anything is written (``force``: render over such a report folder anyway, as
        ``--force``). Returns the render manifest (or the artifact paths, without ``render``)."""
        from .report import outputs  # noqa: PLC0415 (rendering stack: on demand)
        from .report.render import render as render_report  # noqa: PLC0415 (as above)

        out = Path(out)
        artifacts = out / "artifacts"
        check_output_target(out, UserError, "out")
        with output_lock(out, "out"):
            check_artifacts_owned(artifacts)
            if render:
                outputs.foreign_files(out, force)  # refused here, before the artifacts are written
            docs = {**self.results, TIMINGS: merged_timings(artifacts, self.timings, self.device)}
            written = write_artifacts(artifacts, docs, inputs=self.inputs)
            if not render:
                return {"artifacts": [str(p) for p in written]}
            return render_report(artifacts, out, engine=engine, force=force)

    @property
    def html(self) -> str:
        """The report as one self-contained HTML page (every page, charts, tables, data inline),
        rendered from :attr:`results` as they are now."""
        return inline_report(self.results, self.timings, self.device, self.inputs)

    def _repr_html_(self) -> str:
        return frame(self.html, title=self._title())

    def _title(self) -> str:
        model = next((d for d in self.results.values() if d.get("kind") in ("model", "survey")), None)
        name = model["results"]["model"]["name"] if model else "?"
        heads = ", ".join(self.heads)
        return f"headreport: {name}" + (f", heads {heads}" if heads else "")


@dataclass
class Survey(Report):
    """A survey of every head (``survey.json``), plus the full analysis of any heads it analysed."""

    @property
    def ranking(self) -> list[dict[str, Any]]:
        """Every head's survey record, the most copy-suppression-like first (the survey's order)."""
        doc = self.results["survey.json"]["results"]
        by_label = {r["label"]: r for r in doc["heads"]}
        return [by_label[label] for label in doc["ranking"]["order"]]

    def top(self, n: int = 10) -> list[dict[str, Any]]:
        """The ``n`` top-ranked heads' records (label, scores, whether they beat chance, …)."""
        return self.ranking[:n]


def analyze(model: ModelLike, heads: Sequence[str | HeadRef] | str | None = None, *,
            config: Config | Mapping[str, Any] | str | os.PathLike | None = None,
            settings: Mapping[str, Any] | None = None, tokenizer: Any = None, progress: bool = True,
            log=None) -> Report:
    """Analyse ``heads`` of ``model``: every result of ``headreport analyze``, in memory.

    ``model``: a transformers ``PreTrainedModel`` or a ``TransformerBridge`` not yet processed (used
    as it is, on a copy), or what ``model.name`` takes (a hub name, a checkpoint folder, a ``.gguf``
    file, a bundled id). ``heads``: ``["10.7", "11.10"]`` (default: the config's). ``config``: a
    :class:`Config`, a TOML path or a TOML-shaped dict (default: the built-in defaults).
    ``settings``: dotted config keys applied on top, validated like the file's
    (``{"analysis.explorer": False}``). ``tokenizer``: for an in-memory model that has none."""
    from .analysis.pipeline import Timer, analysis_documents  # noqa: PLC0415 (torch: on demand)
    from .analysis.staleness import input_key  # noqa: PLC0415 (with the pipeline)

    cfg = _config(config, settings, heads)
    timer = Timer()
    with timer("load_model"):
        cfg, loaded = _model(model, cfg, tokenizer)
    docs, loaded = analysis_documents(cfg, progress, log or _quiet, model=loaded, timer=timer)
    return Report(results=as_written(docs), config=cfg, timings=dict(timer.seconds),
                  device=loaded.provenance.get("device"), inputs=input_key(cfg, loaded.checkpoint_hashes))


def survey(model: ModelLike, *, config: Config | Mapping[str, Any] | str | os.PathLike | None = None,
           settings: Mapping[str, Any] | None = None, tokenizer: Any = None, progress: bool = True,
           log=None) -> Survey:
    """Survey every head of ``model`` (``headreport survey``), in memory; with
    ``survey.analyze_top = N`` (``settings={"survey.analyze_top": 2}``) the N top-ranked heads that beat
    chance are analysed too, as the command line does."""
    import torch  # noqa: PLC0415 (torch: on demand)

    from .analysis.pipeline import Timer, analysis_documents, prepare  # noqa: PLC0415 (torch: on demand)
    from .analysis.staleness import input_key  # noqa: PLC0415 (with the pipeline)
    from .analysis.survey import survey_documents  # noqa: PLC0415 (torch: on demand)

    cfg = _config(config, settings, None)
    timer, log = Timer(), log or _quiet
    with timer("survey/load_model"):
        cfg, loaded = _model(model, cfg, tokenizer)
    torch.manual_seed(cfg.analysis.seed)  # as the command line's survey does
    loaded, layer0, word_lists = prepare(cfg, timer, progress, log, loaded, survey=True)
    with timer("survey/total_heads"):
        doc = survey_documents(cfg, loaded, layer0, word_lists, timer, progress)
    docs = {"survey.json": doc}
    ranking = doc["results"]["ranking"]
    top = tuple(HeadRef.parse(label) for label in ranking["beats_chance"][:cfg.survey.analyze_top])
    if top or cfg.compare:
        analysed, _ = analysis_documents(cfg.replace(heads=top), progress, log, model=loaded, layer0=layer0,
                                         timer=timer)
        docs.update(analysed)
    return Survey(results=as_written(docs), config=cfg, timings=dict(timer.seconds),
                  device=loaded.provenance.get("device"), inputs=input_key(cfg, loaded.checkpoint_hashes))


def load(artifacts: str | os.PathLike) -> Report:
    """A saved artifact set (``out/artifacts``) as a :class:`Report` (a :class:`Survey` when it holds
    one), to display inline or save elsewhere: every file its manifest lists, each checked against
    the sha256 and the schema there (:func:`analysis.artifacts.load_artifacts`)."""
    folder = Path(artifacts)
    load_artifacts(folder)  # the manifest, the hashes and the schema: its own clear error
    manifest = read_manifest(folder)
    docs = {name: json.loads((folder / name).read_text(encoding="utf-8")) for name in sorted(manifest["files"])}
    timings_file = folder / TIMINGS  # not in the manifest: merged across runs, never hashed
    timings = json.loads(timings_file.read_text(encoding="utf-8")) if timings_file.is_file() else {}
    config_doc = next(d["config"] for d in docs.values() if "config" in d)
    device = next((d["provenance"].get("device") for d in docs.values() if "provenance" in d), None)
    kind = Survey if "survey.json" in docs else Report
    return kind(results=docs, config=config_from_dict(config_doc), timings=dict(timings.get("seconds", {})),
                device=device, inputs=manifest.get("inputs", {}))


def as_written(docs: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each document validated against the artifact schema and exactly as its file would hold it
    (floats rounded, keys sorted): what :meth:`Report.save` writes and :func:`load` reads back."""
    for name, doc in docs.items():
        validate(doc, where=name)
    return {name: json.loads(dumps(doc)) for name, doc in sorted(docs.items())}


def _quiet(message: str) -> None:
    """The API's default log: nothing (progress bars still show unless ``progress=False``)."""


def _config(config, settings, heads) -> Config:
    if config is None:
        cfg = Config()
    elif isinstance(config, Config):
        cfg = config
    elif isinstance(config, Mapping):
        cfg = config_from_dict(dict(config))
    elif isinstance(config, (str, os.PathLike)):
        cfg = load_config(config)
    else:
        raise ConfigError(f"config: expected a Config, a TOML path or a dict, not a {type(config).__name__}")
    if heads is not None:
        given = [heads] if isinstance(heads, (str, HeadRef)) else list(heads)
        cfg = cfg.replace(heads=parse_heads([h.label if isinstance(h, HeadRef) else h for h in given], key="heads"))
    return apply_overrides(cfg, dict(settings or {}))


def _model(model: ModelLike, cfg: Config, tokenizer: Any):
    """``(config with model.name set, LoadedModel)``: a name or path goes through the same checks
    and loader as the command line (preflight first); an object is processed on a copy."""
    from .analysis.model.loader import load_model  # noqa: PLC0415 (torch: after the checks)
    from .analysis.model.memory import load_model_object, memory_name  # noqa: PLC0415 (as above)

    if isinstance(model, (str, os.PathLike)):
        name = os.fspath(model)
        if name.startswith(MEMORY_PREFIX):
            raise ConfigError(f"model: {name!r} names a model that was in memory; pass the model object itself")
        cfg = apply_overrides(cfg, {"model.name": name})
        preflight(cfg)
        return cfg, load_model(cfg.model, cfg.processing)
    cfg = apply_overrides(cfg, {"model.name": memory_name(model)})
    check_inputs(cfg)  # an in-memory model has no files to check; its word lists and prompts are checked first
    return cfg, load_model_object(model, cfg.model, cfg.processing, tokenizer)
