"""Two runs of the pipeline on the same config give byte-identical result JSON (timings apart)."""

from __future__ import annotations

import json

from tests.helpers import analysed


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
