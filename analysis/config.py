"""Read and validate the run configuration (``report.toml``) into frozen dataclasses.

Every error is a :class:`ConfigError` whose message names the offending key (as a dotted path,
e.g. ``analysis.top_k``) and what is allowed there. Checks that need the model (is head 10.7 inside
the model?) happen once the model is loaded: see :func:`check_heads_against_model`.
"""

from __future__ import annotations

import dataclasses
import json
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError

EMBEDDING_VARIANTS = ("mlp_after_attention", "mlp_only", "residual")
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("float32", "float64")
OV_MODES = ("exact", "sampled")
HEAD_RE = re.compile(r"^(\d+)\.(\d+)$")


@dataclass(frozen=True, order=True)
class HeadRef:
    """An attention head, written ``"L.H"`` (layer L, head H, both 0-indexed)."""

    layer: int
    head: int

    @property
    def label(self) -> str:
        return f"{self.layer}.{self.head}"

    @classmethod
    def parse(cls, text: str, key: str = "heads") -> HeadRef:
        if not isinstance(text, str) or not HEAD_RE.match(text.strip()):
            raise ConfigError(
                f"{key}: {text!r} is not a head; write heads as \"L.H\" with 0-indexed layer L "
                f"and head H, e.g. \"10.7\""
            )
        layer, head = text.strip().split(".")
        return cls(int(layer), int(head))


@dataclass(frozen=True)
class ModelConfig:
    """Which model to load and where to run it."""

    name: str = "gpt2-small"
    revision: str | None = None
    device: str = "auto"
    dtype: str = "float32"


@dataclass(frozen=True)
class ProcessingConfig:
    """TransformerLens weight processing, as the original notebook sets it."""

    fold_ln: bool = True
    center_writing_weights: bool = True
    center_unembed: bool = True
    refactor_factored_attn_matrices: bool = True


@dataclass(frozen=True)
class EffectiveEmbeddingConfig:
    variant: str = "mlp_after_attention"
    batch_size: int = 1024


@dataclass(frozen=True)
class WordsConfig:
    """Word lists for the subspace-alignment comparison: ``builtin:NAME`` or a file path."""

    names: str = "builtin:names"
    generic: str = "builtin:common_words"


@dataclass(frozen=True)
class AnalysisConfig:
    top_k: int = 20
    n_directions: int = 3
    subspace_rank: int | None = None  # None: all d_head left singular vectors of W_QK
    bootstrap_resamples: int = 10000
    seed: int = 0
    ov_mode: str = "exact"
    ov_sample_size: int = 2000


@dataclass(frozen=True)
class SurveyConfig:
    """``headreport survey``: cheap per-head statistics for every head (see analysis/survey.py).

    ``mode``: "sampled" ranks a seeded sample of ``sample_size`` tokens (seed: ``analysis.seed``) for
    the QK self-attention and OV self-suppression scores; "exact" ranks every token (meant for GPU).
    ``analyze_top``: after the survey, run the full per-head analysis on this many top-ranked
    (most copy-suppression-like) heads, in the same process (0: none).
    """

    mode: str = "sampled"
    sample_size: int = 2000
    analyze_top: int = 0


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

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict that round-trips through :func:`config_from_dict`."""
        d = dataclasses.asdict(self)
        d["heads"] = [h.label for h in self.heads]
        if d["model"]["revision"] is None:
            del d["model"]["revision"]
        if d["analysis"]["subspace_rank"] is None:
            d["analysis"]["subspace_rank"] = "all"
        return d

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes)


# --- validation -------------------------------------------------------------------------------

_SECTIONS = {
    "model": ModelConfig,
    "processing": ProcessingConfig,
    "effective_embedding": EffectiveEmbeddingConfig,
    "words": WordsConfig,
    "analysis": AnalysisConfig,
    "survey": SurveyConfig,
}
_TOP_LEVEL = ("heads", "output_dir", *_SECTIONS)


def _type_name(t: Any) -> str:
    return {bool: "a boolean", int: "an integer", str: "a string"}.get(t, str(t))


def _check_type(key: str, value: Any, expected: type) -> Any:
    # bool is a subclass of int in Python: never accept true/false where a number is meant.
    ok = isinstance(value, expected) and not (expected is int and isinstance(value, bool))
    if not ok:
        raise ConfigError(f"{key}: expected {_type_name(expected)}, got {value!r}")
    return value


def _check_choice(key: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ConfigError(f"{key}: {value!r} is not allowed; choose one of {', '.join(allowed)}")
    return value


def _check_positive(key: str, value: int, minimum: int = 1) -> int:
    if value < minimum:
        raise ConfigError(f"{key}: must be an integer >= {minimum}, got {value}")
    return value


def _section(name: str, raw: Any) -> dict[str, Any]:
    cls = _SECTIONS[name]
    if not isinstance(raw, dict):
        raise ConfigError(f"{name}: expected a table [{name}], got {raw!r}")
    allowed = [f.name for f in dataclasses.fields(cls)]
    for key in raw:
        if key not in allowed:
            raise ConfigError(
                f"{name}.{key}: unknown key; allowed keys in [{name}] are {', '.join(allowed)}"
            )
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in raw:
            continue
        key, value = f"{name}.{f.name}", raw[f.name]
        if name == "analysis" and f.name == "subspace_rank":
            if value == "all":
                out[f.name] = None
                continue
            if isinstance(value, str) or isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{key}: expected \"all\" or an integer >= 1, got {value!r}")
            out[f.name] = _check_positive(key, value)
            continue
        if name == "model" and f.name == "revision":
            out[f.name] = _check_type(key, value, str)
            continue
        out[f.name] = _check_type(key, value, type(f.default))
    return out


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
        heads = raw["heads"]
        if not isinstance(heads, list) or not heads:
            raise ConfigError(f"heads: expected a non-empty list of \"L.H\" strings, got {heads!r}")
        parsed = tuple(HeadRef.parse(h, key="heads") for h in heads)
        if len(set(parsed)) != len(parsed):
            raise ConfigError(f"heads: duplicate head in {heads!r}")
        kwargs["heads"] = parsed
    if "output_dir" in raw:
        kwargs["output_dir"] = _check_type("output_dir", raw["output_dir"], str)

    sections = {name: _section(name, raw.get(name, {})) for name in _SECTIONS}

    m = sections["model"]
    if "device" in m:
        _check_choice("model.device", m["device"], DEVICES)
    if "dtype" in m:
        _check_choice("model.dtype", m["dtype"], DTYPES)
    if "name" in m and not m["name"].strip():
        raise ConfigError("model.name: must not be empty; give a TransformerLens/HF model name or a checkpoint folder")

    e = sections["effective_embedding"]
    if "variant" in e:
        _check_choice("effective_embedding.variant", e["variant"], EMBEDDING_VARIANTS)
    if "batch_size" in e:
        _check_positive("effective_embedding.batch_size", e["batch_size"])

    w = sections["words"]
    for key, value in w.items():
        w[key] = _resolve_word_source(f"words.{key}", value, base_dir)

    a = sections["analysis"]
    for key in ("top_k", "n_directions", "ov_sample_size"):
        if key in a:
            _check_positive(f"analysis.{key}", a[key])
    if "bootstrap_resamples" in a:
        _check_positive("analysis.bootstrap_resamples", a["bootstrap_resamples"], minimum=100)
    if "seed" in a:
        _check_positive("analysis.seed", a["seed"], minimum=0)
    if "ov_mode" in a:
        _check_choice("analysis.ov_mode", a["ov_mode"], OV_MODES)

    sv = sections["survey"]
    if "mode" in sv:
        _check_choice("survey.mode", sv["mode"], OV_MODES)
    if "sample_size" in sv:
        _check_positive("survey.sample_size", sv["sample_size"])
    if "analyze_top" in sv:
        _check_positive("survey.analyze_top", sv["analyze_top"], minimum=0)

    for name, cls in _SECTIONS.items():
        kwargs[name] = cls(**sections[name])
    return Config(**kwargs)


def _resolve_word_source(key: str, value: str, base_dir: Path | None) -> str:
    from .words import BUILTIN_LISTS

    if value.startswith("builtin:"):
        name = value.removeprefix("builtin:")
        if name not in BUILTIN_LISTS:
            raise ConfigError(
                f"{key}: unknown built-in list {name!r}; built-in lists are "
                + ", ".join(f"builtin:{n}" for n in sorted(BUILTIN_LISTS))
                + ", or give a path to a text file with one word per line"
            )
        return value
    path = Path(value)
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    if not path.is_file():
        raise ConfigError(
            f"{key}: word list file {str(path)!r} does not exist; give a path to a text file with "
            f"one word per line, or a built-in list ({', '.join('builtin:' + n for n in sorted(BUILTIN_LISTS))})"
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
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--config: file {str(path)!r} does not exist")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    return config_from_dict(raw, base_dir=path.parent)


def check_heads_against_model(heads: tuple[HeadRef, ...], n_layers: int, n_heads: int) -> None:
    """Raise a :class:`ConfigError` naming ``heads`` if a head lies outside the model."""
    for h in heads:
        if not (0 <= h.layer < n_layers and 0 <= h.head < n_heads):
            raise ConfigError(
                f"heads: head {h.label} is outside the model, which has layers 0..{n_layers - 1} "
                f"and heads 0..{n_heads - 1} per layer"
            )
