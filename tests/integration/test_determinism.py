"""Two runs of the pipeline on the same config give byte-identical result JSON (timings apart)."""

from __future__ import annotations

import json

from tests.helpers import analysed, tiny_config


def test_two_runs_give_identical_bytes(tiny_artifacts, tiny_gpt2, tmp_path):
    # the config that made ``tiny_artifacts`` (see conftest), run again into another folder
    again = analysed(tmp_path, tiny_gpt2, output_dir=str(tiny_artifacts.parent))
    names = sorted(p.name for p in tiny_artifacts.glob("*.json"))
    assert names == sorted(p.name for p in again.glob("*.json"))
    assert {"model.json", "head_1.3.json", "head_0.1.json", "timings.json"} <= set(names)
    for name in names:
        if name == "timings.json":
            continue
        assert (tiny_artifacts / name).read_bytes() == (again / name).read_bytes(), name
    # no temp files left beside them
    assert not [p for p in again.iterdir() if p.name.startswith(".") or p.suffix == ".tmp"]


def test_result_files_hold_no_timings_and_sorted_keys(tiny_artifacts):
    for path in tiny_artifacts.glob("*.json"):
        text = path.read_text(encoding="utf-8")
        doc = json.loads(text)
        # canonical form: sorted keys, the same serialisation
        assert text == json.dumps(doc, sort_keys=True, ensure_ascii=False, indent=1) + "\n", path.name
        if path.name != "timings.json":
            assert "seconds" not in text, path.name
    timings = json.loads((tiny_artifacts / "timings.json").read_text())
    assert timings["kind"] == "timings" and timings["seconds"]


def test_the_memory_release_changes_no_byte(tiny_gpt2, tmp_path, monkeypatch):
    """Closing the checkpoint's mapping and trimming the heaps (analysis/model/release.py) copy and
    free memory only: an exact analysis with the explorer, and a survey, give the same bytes with
    them and without them."""
    from headreport.analysis.model import release  # noqa: PLC0415 (the module patched below)
    from headreport.analysis.survey import run_survey  # noqa: PLC0415 (as above)

    def run(out):
        overrides = dict(analysis={"ov_mode": "exact", "explorer": True}, heads=["1.3"], output_dir=str(out / "a"))
        analysed(out / "a", tiny_gpt2, **overrides)
        run_survey(tiny_config(tiny_gpt2, output_dir=str(out / "s")), out / "s" / "artifacts", progress=False,
                   log=lambda m: None)
        return out

    with_release = run(tmp_path / "with")
    copied = []
    monkeypatch.setattr(release, "detach_from_files", lambda module: copied.append(module) or 0)
    monkeypatch.setattr(release, "trim", lambda: None)
    without = run(tmp_path / "without")
    assert copied  # the patched loader ran
    names = sorted(str(p.relative_to(with_release)) for p in with_release.glob("*/artifacts/*.json")
                   if p.name != "timings.json")
    assert {"s/artifacts/survey.json", "a/artifacts/explorer_1.3.json", "a/artifacts/head_1.3.json"} <= set(names)
    for name in names:
        a, b = json.loads((with_release / name).read_text()), json.loads((without / name).read_text())
        assert a.get("results") == b.get("results"), name
