"""Config: round trip, defaults equal report.toml and docs/configuration.md, every documented key
accepted, every error names the key and what is allowed."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from headreport.analysis.config import (
    AnalysisConfig,
    Config,
    HeadRef,
    apply_overrides,
    check_against_model,
    config_from_dict,
    config_to_toml,
    load_config,
)
from headreport.analysis.errors import ConfigError
from headreport.analysis.inputs.prompt_files import load_prompts
from headreport.analysis.model.families import FAMILY_TABLE, family_notes
from tests.oracles import check_heads_against_model

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_equal_report_toml():
    assert load_config(ROOT / "report.toml") == Config()
    assert Config().heads == (HeadRef(10, 7),)
    assert Config().model.name == "gpt2-small"
    p = Config().processing
    assert p.fold_ln and p.center_writing_weights and p.center_unembed
    assert p.refactor_factored_attn_matrices == "auto"
    assert Config().words.names == "builtin:ioi_names" and Config().words.form == "bare"
    assert Config().effective_embedding.attention_bias is False


def test_round_trip_defaults_and_non_defaults(tmp_path):
    words = tmp_path / "w.txt"
    words.write_text("Mary\n")
    configs = [
        Config(),
        config_from_dict({
            "heads": ["1.3", "0.0", "11.11"],
            "output_dir": "out",
            "model": {"name": "some/folder", "revision": "main", "device": "cpu", "dtype": "float64"},
            "processing": {"fold_ln": False, "center_writing_weights": False, "center_unembed": False,
                           "refactor_factored_attn_matrices": False},
            "effective_embedding": {"variant": "residual", "batch_size": 7, "attention_bias": True},
            "words": {"names": str(words), "generic": "builtin:census_names", "form": "space_prefixed"},
            "analysis": {"top_k": 5, "n_directions": 1, "subspace_rank": 4, "bootstrap_resamples": 100,
                         "seed": 9, "ov_mode": "sampled", "ov_sample_size": 10, "qk_normalization": "none"},
        }),
    ]
    for c in configs:
        d = c.to_dict()
        assert config_from_dict(d) == c
        assert config_from_dict(tomllib.loads(_to_toml(d))) == c  # survives TOML too
    assert configs[1].to_dict()["analysis"]["subspace_rank"] == 4
    assert Config().to_dict()["analysis"]["subspace_rank"] == "all"
    assert "revision" not in Config().to_dict()["model"]


def _to_toml(d: dict) -> str:
    def val(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, list):
            return "[" + ", ".join(val(x) for x in v) + "]"
        return str(v)

    lines = [f"{k} = {val(v)}" for k, v in d.items() if not isinstance(v, dict)]
    for k, v in d.items():
        if isinstance(v, dict):
            lines.append(f"[{k}]")
            lines += [f"{kk} = {val(vv)}" for kk, vv in v.items()]
    return "\n".join(lines) + "\n"


def documented_keys() -> dict[str, str]:
    """``key -> default`` from the key table of docs/configuration.md (its "## Keys" section)."""
    text = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    match = re.search(r"^## Keys$.*?(?=^## )", text, flags=re.MULTILINE | re.DOTALL)
    assert match, "docs/configuration.md has no '## Keys' section"
    text = match.group(0)
    rows = re.findall(r"^\| `([a-z_]+(?:\.[a-z_]+)?)` \| (.+?) \|", text, flags=re.MULTILINE)
    return dict(rows)


def test_every_documented_key_is_accepted_with_its_documented_default():
    keys = documented_keys()
    assert len(keys) >= 20, "the key table of docs/configuration.md was not found"
    defaults = Config().to_dict()
    for key, default in keys.items():
        if default.startswith("("):  # "(none)"
            value = "main"
        else:
            value = tomllib.loads(f"v = {default.strip('`')}")["v"]
        raw: dict = {}
        if "." in key:
            section, name = key.split(".")
            raw[section] = {name: value}
            expected_default = defaults[section].get(name)
        else:
            raw[key] = value
            expected_default = defaults[key]
        config = config_from_dict(raw)  # accepted
        if not default.startswith("("):
            assert value == expected_default, f"docs/configuration.md's default of {key} differs from the code"
            assert config == Config(), key
    # and every key of the code is documented
    code_keys = {k for k, v in defaults.items() if not isinstance(v, dict)}
    code_keys |= {f"{s}.{k}" for s, v in defaults.items() if isinstance(v, dict) for k in v}
    code_keys.add("model.revision")
    assert code_keys == set(keys)


@pytest.mark.parametrize("raw, key, allowed", [
    ({"bogus": 1}, "bogus", "allowed top-level keys"),
    ({"analysis": {"topk": 3}}, "analysis.topk", "top_k"),
    ({"model": {"nam": "x"}}, "model.nam", "name"),
    ({"analysis": {"top_k": "20"}}, "analysis.top_k", "integer"),
    ({"analysis": {"top_k": True}}, "analysis.top_k", "integer"),
    ({"analysis": {"top_k": 0}}, "analysis.top_k", "between 1 and 1,000"),
    ({"analysis": {"top_k": 100000000}}, "analysis.top_k", "between 1 and 1,000"),
    ({"analysis": {"seed": -1}}, "analysis.seed", "between 0 and"),
    ({"analysis": {"bootstrap_resamples": 10}}, "analysis.bootstrap_resamples", "between 100 and 1,000,000"),
    ({"analysis": {"bootstrap_resamples": 10**9}}, "analysis.bootstrap_resamples", "between 100 and 1,000,000"),
    ({"analysis": {"n_directions": 5000}}, "analysis.n_directions", "between 1 and 1,024"),
    ({"analysis": {"qk_normalization": "ln"}}, "analysis.qk_normalization", '"none", "sqrt_d_model"'),
    ({"analysis": {"rank_embedding": "resid"}}, "analysis.rank_embedding", '"residual"'),
    ({"analysis": {"subspace_rank": "some"}}, "analysis.subspace_rank", '"all"'),
    ({"analysis": {"ov_mode": "fast"}}, "analysis.ov_mode", '"exact", "sampled"'),
    ({"processing": {"fold_ln": "yes"}}, "processing.fold_ln", "true or false"),
    ({"processing": {"fold_ln": 1}}, "processing.fold_ln", "true or false"),
    ({"processing": {"refactor_factored_attn_matrices": "maybe"}}, "processing.refactor_factored_attn_matrices",
     '"auto"'),
    ({"effective_embedding": {"attention_bias": "no"}}, "effective_embedding.attention_bias", "true or false"),
    ({"words": {"form": "spaced"}}, "words.form", '"bare", "space_prefixed"'),
    ({"effective_embedding": {"variant": "mlp"}}, "effective_embedding.variant", "mlp_after_attention"),
    ({"effective_embedding": {"batch_size": 0}}, "effective_embedding.batch_size", "between 1 and"),
    ({"model": {"device": "tpu"}}, "model.device", '"auto", "cpu", "cuda"'),
    ({"model": {"dtype": "float16"}}, "model.dtype", '"float32", "float64"'),
    ({"model": {"name": "  "}}, "model.name", "checkpoint folder"),
    ({"model": "gpt2"}, "model", "[model]"),
    ({"heads": "10.7"}, "heads", "list"),
    ({"heads": []}, "heads", "list"),
    ({"heads": ["10-7"]}, "heads", '"L.H"'),
    ({"heads": [10.7]}, "heads", '"L.H"'),
    ({"heads": ["\uff11.\uff13"]}, "heads", "ASCII digits"),
    ({"heads": ["1.3\n"]}, "heads", '"L.H"'),
    ({"heads": [" 1.3"]}, "heads", '"L.H"'),
    ({"heads": ["1.2", "1.2"]}, "heads", "duplicate"),
    ({"output_dir": 3}, "output_dir", "string"),
    ({"words": {"names": "builtin:nope"}}, "words.names", "builtin:census_names"),
    ({"prompts": "builtin:nope"}, "prompts", '"builtin:ioi"'),
    ({"prompts": "/no/such/prompts.txt"}, "prompts", "one prompt per line"),
    ({"prompts": False}, "prompts", "string"),
    ({"compare": ["10.7", "11.10"]}, "compare", "pair of heads"),
    ({"compare": [["10.7"]]}, "compare", "pair of heads"),
    ({"compare": [["10.7", "10.7"]]}, "compare", "with itself"),
    ({"compare": [["10.7", "11.1"], ["11.1", "10.7"]]}, "compare", "listed twice"),
    ({"compare": [["10.7", "x"]]}, "compare", '"L.H"'),
    ({"compare": "10.7"}, "compare", "list of at most 20 pairs"),
    ({"words": {"generic": "/no/such/file.txt"}}, "words.generic", "does not exist"),
])
def test_errors_name_the_key_and_what_is_allowed(raw, key, allowed):
    with pytest.raises(ConfigError) as exc:
        config_from_dict(raw)
    msg = str(exc.value)
    assert msg.startswith(f"{key}:") or f"{key}:" in msg.split("\n")[0], msg
    assert allowed in msg, msg


def test_relative_word_paths_resolve_against_the_config_folder(tmp_path):
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "names.txt").write_text("Mary\nJohn\n")
    (tmp_path / "c.toml").write_text('[words]\nnames = "lists/names.txt"\n')
    c = load_config(tmp_path / "c.toml")
    assert Path(c.words.names) == (tmp_path / "lists" / "names.txt").resolve()


def test_load_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml")
    (tmp_path / "bad.toml").write_text("heads = [\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(tmp_path / "bad.toml")
    assert load_config(None) == Config()


def test_subspace_rank_all_means_none():
    assert config_from_dict({"analysis": {"subspace_rank": "all"}}).analysis == AnalysisConfig()


def test_heads_checked_against_model():
    check_heads_against_model((HeadRef(1, 3), HeadRef(0, 0)), n_layers=2, n_heads=4)
    with pytest.raises(ConfigError, match=r"heads: head 2\.0 .*layers 0\.\.1 and heads 0\.\.3"):
        check_heads_against_model((HeadRef(2, 0),), n_layers=2, n_heads=4)
    with pytest.raises(ConfigError, match="head 0.4"):
        check_heads_against_model((HeadRef(0, 4),), n_layers=2, n_heads=4)


def test_config_to_toml_round_trips_hostile_strings():
    """The reproducibility page and the benchmark write configs back as TOML: quotes, backslashes,
    control characters and non-ASCII in a value must survive."""
    name = 'we"ird\\model\tname\nwith ünïcode'
    c = Config().replace(model=Config().model.__class__(name=name))
    text = config_to_toml(c.to_dict())
    assert tomllib.loads(text)["model"]["name"] == name
    assert config_from_dict(tomllib.loads(text)) == c


def test_config_checked_against_the_model():
    c = Config(heads=(HeadRef(1, 1),))
    check_against_model(c, n_layers=2, n_heads=4, d_head=16)
    too_many = c.replace(analysis=AnalysisConfig(n_directions=17))
    with pytest.raises(ConfigError, match=r"analysis.n_directions: 17 is more than d_head = 16"):
        check_against_model(too_many, n_layers=2, n_heads=4, d_head=16)
    with pytest.raises(ConfigError, match=r"analysis.subspace_rank"):
        check_against_model(c.replace(analysis=AnalysisConfig(subspace_rank=32)), 2, 4, 16)


def test_apply_overrides_validates_like_the_file():
    c = apply_overrides(Config(), {"model.name": "x", "survey.mode": "exact", "output_dir": None})
    assert c.model.name == "x" and c.survey.mode == "exact" and c.output_dir == "build"
    with pytest.raises(ConfigError, match=r"^survey.sample_size: must be an integer between 1"):
        apply_overrides(Config(), {"survey.sample_size": 0})


def test_a_config_folder_or_non_utf8_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="is a folder"):
        load_config(tmp_path)
    (tmp_path / "latin1.toml").write_bytes(b'output_dir = "caf\xe9"\n')
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(tmp_path / "latin1.toml")


def test_reading_a_config_imports_no_torch():
    """A config error must take well under a second: nothing heavy is imported to read one."""
    code = ("import sys, headreport.analysis.config as c, headreport.cli\n"
            "c.load_config(None)\n"
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_compare_heads_are_analysed_and_checked_against_the_model():
    c = config_from_dict({"heads": ["1.0"], "compare": [["2.1", "1.0"]]})
    assert c.analysed_heads == (HeadRef(1, 0), HeadRef(2, 1))
    assert config_from_dict({"heads": ["3.0", "1.0"], "compare": [["1.0", "0.2"]]}).analysed_heads == (
        HeadRef(3, 0), HeadRef(1, 0), HeadRef(0, 2))
    assert config_from_dict(c.to_dict()) == c
    with pytest.raises(ConfigError, match="compare: head 2.1 is outside the model"):
        check_against_model(c, n_layers=2, n_heads=4, d_head=8)


def test_prompt_files_resolve_and_bad_ones_fail_with_the_key(tmp_path):
    good = tmp_path / "p.txt"
    good.write_text("# comment\nOne prompt\n\nAnother prompt  \n", encoding="utf-8")
    c = config_from_dict({"prompts": "p.txt"}, base_dir=tmp_path)
    assert c.prompts == str(good.resolve())
    assert load_prompts(c.prompts).texts == ("One prompt", "Another prompt")
    assert len(load_prompts("builtin:ioi").texts) == 25
    for name, content, message in [("ctl.txt", b"a\x00b\n", "control character"),
                                   ("empty.txt", b"# only a comment\n", "holds no prompt"),
                                   ("latin1.txt", "caf\u00e9\n".encode("latin-1"), "UTF-8")]:
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ConfigError, match=message) as exc:
            load_prompts(str(tmp_path / name))
        assert str(exc.value).startswith("prompts")
    assert config_from_dict({"prompts": "off"}).prompts == "off"


def test_models_doc_family_table_is_the_analysis_table():
    """The "Supported model families" rows of docs/models.md are analysis.model.families.FAMILY_TABLE,
    which also writes the report's model notes: one table for both."""
    models_doc = (ROOT / "docs" / "models.md").read_text(encoding="utf-8")
    for row in FAMILY_TABLE:
        assert row.markdown() in models_doc, row.name
    notes = family_notes("gemma3_text")
    assert any("√d_model" in n and "query scaling" in n and "post-attention norm" in n for n in notes)
