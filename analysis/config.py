"""Read and validate the run configuration (``report.toml``) into frozen dataclasses.

Each section is a frozen dataclass; each field's type says what it accepts (``Literal[...]`` for a
choice, ``int`` with bounds in the field's metadata, ``bool``, ``str``), and one validator reads
those types: the allowed values are never written twice. Every error is a :class:`ConfigError`
whose message names the offending key (``analysis.top_k``) and what is allowed there. Checks that
need the model (is head 10.7 inside it? is ``n_directions`` ≤ d_head?) run once it is loaded,
before any heavy work: :func:`check_against_model`.

This module imports neither torch nor the analysis: a config error takes well under a second.
"""

from __future__ import annotations

import dataclasses
import json
import re
import tomllib
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from .errors import ConfigError
from .inputs.text import builtin_file, check_path_text, decode_utf8, read_limited, shown

Device = Literal["auto", "cpu", "cuda"]
DType = Literal["float32", "float64"]
EmbeddingVariant = Literal["mlp_after_attention", "mlp_only", "residual"]
RankMode = Literal["exact", "sampled"]
WordForm = Literal["bare", "space_prefixed"]
QKNormalization = Literal["none", "sqrt_d_model"]

EMBEDDING_VARIANTS: tuple[str, ...] = get_args(EmbeddingVariant)
#: built-in word lists (files in analysis/data): ``builtin:NAME``
BUILTIN_WORD_LISTS = {
    "ioi_names": "ioi_names.txt",
    "census_names": "census_names.txt",
    "common_words": "common_words.txt",
}
#: built-in prompt sets (files in analysis/data): ``builtin:NAME``
BUILTIN_PROMPTS = {"ioi": "ioi_prompts.txt"}
#: heads are ASCII digits only: "１.３" (full-width) or "1.3\n" are not heads
HEAD_RE = re.compile(r"\A([0-9]+)\.([0-9]+)\Z")
MAX_HEAD_INDEX = 100_000


def bounded(default: Any, minimum: int | None = None, maximum: int | None = None) -> Any:
    """A dataclass field with bounds that :func:`config_from_dict` enforces (errors state them)."""
    return field(default=default, metadata={"min": minimum, "max": maximum})


@dataclass(frozen=True, order=True)
class HeadRef:
    """An attention head, written ``"L.H"`` (layer L, head H, both 0-indexed)."""

    layer: int
    head: int

    @property
    def label(self) -> str:
        return f"{self.layer}.{self.head}"

    @classmethod
    def parse(cls, text: Any, key: str = "heads") -> HeadRef:
        m = HEAD_RE.match(text) if isinstance(text, str) else None
        if m is None or max(int(m.group(1)), int(m.group(2))) > MAX_HEAD_INDEX:
            raise ConfigError(
                f"{key}: {shown(text)} is not a head; write heads as \"L.H\" with 0-indexed layer L "
                f"and head H in ASCII digits, e.g. \"10.7\""
            )
        return cls(int(m.group(1)), int(m.group(2)))


@dataclass(frozen=True)
class ModelConfig:
    """Which model to load and where to run it."""

    name: str = "gpt2-small"
    revision: str | None = None
    device: Device = "auto"
    dtype: DType = "float32"


@dataclass(frozen=True)
class ProcessingConfig:
    """TransformerLens weight processing, as the original notebook sets it. ``"auto"`` refactors
    W_Q/W_K and W_V/W_O where TransformerLens allows it and skips it (with a stated note) for
    rotary models; ``true`` on a rotary model is an error."""

    fold_ln: bool = True
    center_writing_weights: bool = True
    center_unembed: bool = True
    refactor_factored_attn_matrices: bool | Literal["auto"] = "auto"


@dataclass(frozen=True)
class EffectiveEmbeddingConfig:
    """W_EE. ``attention_bias = false`` (the notebook's and the paper's code) drops layer 0's b_V
    and b_O from the attention output; ``true`` keeps them (what the model computes)."""

    variant: EmbeddingVariant = "mlp_after_attention"
    attention_bias: bool = False
    batch_size: int = bounded(1024, 1, 1 << 20)


@dataclass(frozen=True)
class WordsConfig:
    """Word lists for the subspace-alignment comparison: ``builtin:NAME`` or a file path. ``form``:
    score each word as the token of the bare word (the notebook) or of ``" " + word``."""

    names: str = "builtin:ioi_names"
    generic: str = "builtin:common_words"
    form: WordForm = "bare"


@dataclass(frozen=True)
class AnalysisConfig:
    """The per-head analyses. The spectra, singular directions, cos² rankings and names-vs-generic
    subspace read the notebook's W_EE (``effective_embedding.variant``); the rank metrics read
    ``rank_embedding`` (the paper's block-0 residual) with ``qk_normalization`` ("none": the paper's
    code)."""

    top_k: int = bounded(20, 1, 1000)
    n_directions: int = bounded(3, 1, 1024)
    subspace_rank: int | None = bounded(None, 1, 1 << 16)  # None ("all"): all d_head left singular vectors
    bootstrap_resamples: int = bounded(10000, 100, 1_000_000)
    seed: int = bounded(0, 0, 2**32 - 1)
    ov_mode: RankMode = "exact"
    ov_sample_size: int = bounded(2000, 1, 10_000_000)
    #: the W_EE of the rank metrics (OV self-suppression, QK self-attention, survey, explorer): the
    #: copy-suppression paper's block-0 residual by default (docs/methods.md)
    rank_embedding: EmbeddingVariant = "residual"
    #: QK self-attention ranks: raw queries and keys (the paper's code) or each row scaled to norm √d_model
    qk_normalization: QKNormalization = "none"
    explorer: bool = True


@dataclass(frozen=True)
class SurveyConfig:
    """``headreport survey``: cheap per-head statistics for every head (see analysis/survey.py).

    ``mode``: "sampled" ranks a seeded sample of ``sample_size`` tokens (seed: ``analysis.seed``) for
    the QK self-attention and OV self-suppression scores; "exact" ranks every token (meant for GPU).
    ``analyze_top``: after the survey, run the full per-head analysis on this many top-ranked heads
    that beat chance, in the same process (0: none).
    """

    mode: RankMode = "sampled"
    sample_size: int = bounded(2000, 1, 10_000_000)
    analyze_top: int = bounded(0, 0, 1000)


@dataclass(frozen=True)
class Config:
    heads: tuple[HeadRef, ...] = (HeadRef(10, 7),)
    output_dir: str = "build"
    model: ModelConfig = field(default_factory=ModelConfig)
    processing: ProcessingConfig = field(default_factory=ProcessingConfig)
    effective_embedding: EffectiveEmbeddingConfig = field(default_factory=EffectiveEmbeddingConfig)
    words: WordsConfig = field(default_factory=WordsConfig)
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)
    survey: SurveyConfig = field(default_factory=SurveyConfig)
    #: the prompts the heads are run on: "builtin:ioi", a UTF-8 file (one prompt per line), or "off"
    prompts: str = "builtin:ioi"
    #: pairs of heads shown side by side on a comparison page (both are analysed)
    compare: tuple[tuple[HeadRef, HeadRef], ...] = ()

    @property
    def analysed_heads(self) -> tuple[HeadRef, ...]:
        """``heads``, then the heads of ``compare`` not among them, each once, in the order given."""
        return tuple(dict.fromkeys([*self.heads, *(h for pair in self.compare for h in pair)]))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict that round-trips through :func:`config_from_dict`."""
        d = dataclasses.asdict(self)
        d["heads"] = [h.label for h in self.heads]
        d["compare"] = [[a.label, b.label] for a, b in self.compare]
        if d["model"]["revision"] is None:
            del d["model"]["revision"]
        if d["analysis"]["subspace_rank"] is None:
            d["analysis"]["subspace_rank"] = "all"
        return d

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes)


# --- validation -------------------------------------------------------------------------------

SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "processing": ProcessingConfig,
    "effective_embedding": EffectiveEmbeddingConfig,
    "words": WordsConfig,
    "analysis": AnalysisConfig,
    "survey": SurveyConfig,
}
_TOP_LEVEL = ("heads", "output_dir", "prompts", "compare", *SECTIONS)
#: keys whose value "all" means None
_ALL_MEANS_NONE = {"analysis.subspace_rank"}


def _alternatives(hint: Any) -> list[Any]:
    if get_origin(hint) in (Union, types.UnionType):
        return [a for arg in get_args(hint) for a in _alternatives(arg)]
    return [hint]


def _describe(alternatives: list[Any], key: str) -> str:
    words = []
    for alt in alternatives:
        if get_origin(alt) is Literal:
            words.append("one of " + ", ".join(json.dumps(v) for v in get_args(alt)))
        elif alt is bool:
            words.append("true or false")
        elif alt is int:
            words.append("an integer")
        elif alt is str:
            words.append("a string")
    if key in _ALL_MEANS_NONE:
        words.append('"all"')
    return " or ".join(w for w in words if w)


def check_value(key: str, value: Any, hint: Any, metadata: Mapping[str, Any]) -> Any:
    """``value`` checked against a field's type ``hint`` and bounds; raises a :class:`ConfigError`
    naming ``key`` and what is allowed."""
    alternatives = _alternatives(hint)
    if key in _ALL_MEANS_NONE and value == "all":
        return None
    for alt in alternatives:
        if get_origin(alt) is Literal and not isinstance(value, bool) and value in get_args(alt):
            return value
        if alt is bool and isinstance(value, bool):
            return value
        if alt is str and isinstance(value, str):
            return value
        if alt is int and isinstance(value, int) and not isinstance(value, bool):
            lo, hi = metadata.get("min"), metadata.get("max")
            if lo is not None and value < lo or hi is not None and value > hi:
                bounds = f">= {lo}" if hi is None else f"between {lo} and {hi:,}" if lo is not None else f"<= {hi}"
                raise ConfigError(f"{key}: must be an integer {bounds}, got {value}")
            return value
    literals = [a for a in alternatives if get_origin(a) is Literal]
    if literals and isinstance(value, str) and not isinstance(value, bool):
        raise ConfigError(f"{key}: {shown(value)} is not allowed; choose {_describe(alternatives, key)}")
    raise ConfigError(f"{key}: expected {_describe(alternatives, key)}, got {shown(value)}")


def _section(name: str, raw: Any) -> dict[str, Any]:
    cls = SECTIONS[name]
    if not isinstance(raw, dict):
        raise ConfigError(f"{name}: expected a table [{name}], got {shown(raw)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in fields:
            raise ConfigError(
                f"{name}.{key}: unknown key; allowed keys in [{name}] are {', '.join(fields)}"
            )
    hints = get_type_hints(cls)
    return {key: check_value(f"{name}.{key}", value, hints[key], fields[key].metadata)
            for key, value in raw.items()}


def parse_heads(values: Any, key: str = "heads") -> tuple[HeadRef, ...]:
    if not isinstance(values, list) or not values:
        raise ConfigError(f"{key}: expected a non-empty list of \"L.H\" strings, got {shown(values)}")
    parsed = tuple(HeadRef.parse(h, key=key) for h in values)
    if len(set(parsed)) != len(parsed):
        raise ConfigError(f"{key}: duplicate head in {shown(values)}")
    return parsed


def config_from_dict(raw: dict[str, Any], base_dir: Path | None = None) -> Config:
    """Validate a parsed TOML document and build a :class:`Config`.

    ``base_dir`` resolves relative word-list paths (the folder of the TOML file).
    """
    if not isinstance(raw, dict):
        raise ConfigError("config: expected a TOML table at the top level")
    for key in raw:
        if key not in _TOP_LEVEL:
            raise ConfigError(f"{key}: unknown key; allowed top-level keys are {', '.join(_TOP_LEVEL)}")
    kwargs: dict[str, Any] = {}
    if "heads" in raw:
        kwargs["heads"] = parse_heads(raw["heads"])
    if "output_dir" in raw:
        kwargs["output_dir"] = check_value("output_dir", raw["output_dir"], str, {})
        if not kwargs["output_dir"].strip():
            raise ConfigError("output_dir: must not be empty")
        check_path_text(kwargs["output_dir"], "output_dir", ConfigError)
    if "prompts" in raw:
        prompts = check_value("prompts", raw["prompts"], str, {})
        check_path_text(prompts, "prompts", ConfigError)
        kwargs["prompts"] = resolve_prompt_source(prompts, base_dir)
    if "compare" in raw:
        kwargs["compare"] = parse_compare(raw["compare"])
    sections = {name: _section(name, raw.get(name, {})) for name in SECTIONS}
    if not sections["model"].get("name", "x").strip():
        raise ConfigError("model.name: must not be empty; give a TransformerLens/HF model name or a checkpoint folder")
    if "name" in sections["model"]:
        check_path_text(sections["model"]["name"], "model.name", ConfigError)
    for key in ("names", "generic"):
        if key in sections["words"]:
            check_path_text(sections["words"][key], f"words.{key}", ConfigError)
            sections["words"][key] = resolve_word_source(f"words.{key}", sections["words"][key], base_dir)
    for name, cls in SECTIONS.items():
        kwargs[name] = cls(**sections[name])
    return Config(**kwargs)


def parse_compare(values: Any) -> tuple[tuple[HeadRef, HeadRef], ...]:
    """``compare = [["10.7", "11.10"], ...]``: pairs of two different heads, each pair once."""
    if not isinstance(values, list) or len(values) > 20:
        raise ConfigError(f"compare: expected a list of at most 20 pairs of heads, e.g. [[\"10.7\", \"11.10\"]], "
                          f"got {shown(values)}")
    pairs = []
    for pair in values:
        if not isinstance(pair, list) or len(pair) != 2:
            raise ConfigError(f"compare: each entry is a pair of heads, e.g. [\"10.7\", \"11.10\"]; got {shown(pair)}")
        a, b = (HeadRef.parse(h, key="compare") for h in pair)
        if a == b:
            raise ConfigError(f"compare: {shown(pair)} compares head {a.label} with itself")
        pairs.append((a, b))
    if len({frozenset(p) for p in pairs}) != len(pairs):
        raise ConfigError(f"compare: a pair of heads is listed twice in {shown(values)}")
    return tuple(pairs)


def builtin_word_list(value: str, key: str) -> str | None:
    """The data file of a ``builtin:NAME`` word list (None for a path); an unknown NAME is an error naming ``key``."""
    return builtin_file(value, BUILTIN_WORD_LISTS, key, "word list", "or a path to a text file with one word per line")


def builtin_prompt_set(value: str, key: str = "prompts") -> str | None:
    """The data file of a ``builtin:NAME`` prompt set (None for a path); an unknown NAME is an error naming ``key``."""
    return builtin_file(value, BUILTIN_PROMPTS, key, "prompt set",
                        "a path to a UTF-8 file with one prompt per line, or \"off\"")


def resolve_prompt_source(value: str, base_dir: Path | None) -> str:
    """``prompts``: "off", ``builtin:NAME`` or a prompt file (made absolute; it must exist)."""
    if value == "off" or builtin_prompt_set(value) is not None:
        return value
    path = Path(value)
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    if not path.is_file():
        raise ConfigError(f"prompts: {shown(str(path))} is not a file; give a UTF-8 file with one prompt per line, "
                          "\"builtin:ioi\" or \"off\"")
    return str(path.resolve())


def apply_overrides(config: Config, overrides: Mapping[str, Any], base_dir: Path | None = None) -> Config:
    """``config`` with dotted-key overrides (``{"model.name": ..., "survey.mode": ...}``) applied,
    each validated exactly like the same key in a config file; ``None`` values are ignored."""
    raw = config.to_dict()
    for key, value in overrides.items():
        if value is None:
            continue
        if "." in key:
            section, name = key.split(".", 1)
            raw[section][name] = value
        else:
            raw[key] = value
    return config_from_dict(raw, base_dir)


def resolve_word_source(key: str, value: str, base_dir: Path | None) -> str:
    """``words.names`` / ``words.generic``: ``builtin:NAME`` or a word-list file (made absolute; it must exist)."""
    if builtin_word_list(value, key) is not None:
        return value
    path = Path(value)
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    if path.is_dir():
        raise ConfigError(f"{key}: {shown(str(path))} is a folder; give a path to a text file with one word per line")
    if not path.is_file():
        raise ConfigError(
            f"{key}: word list file {shown(str(path))} does not exist; give a path to a text file with "
            f"one word per line, or a built-in list ({', '.join('builtin:' + n for n in BUILTIN_WORD_LISTS)})"
        )
    return str(path.resolve())


def toml_literal(value: Any) -> str:
    """A TOML literal for a config value (boolean, number, string or list of them). Strings use
    JSON's escapes, every one of which is also a TOML basic-string escape."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_literal(x) for x in value) + "]"
    raise TypeError(f"no TOML literal for {type(value).__name__}")


def config_to_toml(config: Mapping[str, Any]) -> str:
    """A config dict (``Config.to_dict()``, or an artifact's ``config``) as a TOML file that
    :func:`load_config` reads back to the same config."""
    lines = [f"{k} = {toml_literal(v)}" for k, v in config.items() if not isinstance(v, Mapping) and v is not None]
    for key, table in config.items():
        if isinstance(table, Mapping):
            lines.append(f"\n[{key}]")
            lines.extend(f"{k} = {toml_literal(v)}" for k, v in table.items() if v is not None)
    return "\n".join(lines) + "\n"


def load_config(path: str | Path | None) -> Config:
    """Load ``path`` (a TOML file); ``None`` gives the defaults (the notebook's run)."""
    if path is None:
        return Config()
    check_path_text(str(path), "--config", ConfigError)
    path = Path(path)
    text = decode_utf8(read_limited(path, 1 << 20, ConfigError, "--config", "TOML file"), ConfigError, "--config", path)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"--config: {shown(str(path))} is not valid TOML ({exc})") from None
    except RecursionError:
        raise ConfigError(
            f"--config: {shown(str(path))} nests arrays or tables too deeply to be a configuration") from None
    return config_from_dict(raw, base_dir=path.parent)


def check_against_model(config: Config, n_layers: int, n_heads: int, d_head: int, d_vocab: int | None = None,
                        survey: bool = False) -> None:
    """Raise a :class:`ConfigError` naming the key when a setting lies outside the loaded model
    (nothing is capped silently; ``survey``: the survey's settings too)."""
    for key, heads in (("heads", config.heads), ("compare", [h for pair in config.compare for h in pair])):
        for h in heads:
            if not (0 <= h.layer < n_layers and 0 <= h.head < n_heads):
                raise ConfigError(
                    f"{key}: head {h.label} is outside the model, which has layers 0..{n_layers - 1} "
                    f"and heads 0..{n_heads - 1} per layer"
                )
    a = config.analysis
    if a.n_directions > d_head:
        raise ConfigError(f"analysis.n_directions: {a.n_directions} is more than d_head = {d_head}, the "
                          f"rank of every per-head circuit; use at most {d_head}")
    if a.subspace_rank is not None and a.subspace_rank > d_head:
        raise ConfigError(f"analysis.subspace_rank: {a.subspace_rank} is more than d_head = {d_head}; "
                          f"use at most {d_head}, or \"all\"")
    if d_vocab is not None:
        sizes = [("analysis.ov_sample_size", a.ov_mode, a.ov_sample_size)]
        if survey:
            sizes.append(("survey.sample_size", config.survey.mode, config.survey.sample_size))
        for key, mode, size in sizes:
            if mode == "sampled" and size > d_vocab:
                raise ConfigError(f"{key}: {size:,} is more than the model's {d_vocab:,} tokens; sample at most "
                                  f"{d_vocab:,}, or rank every token (mode \"exact\")")
