from headreport.analysis.artifacts import load_artifacts


def test_tiny_artifacts_load_and_validate(tiny_artifacts):
    arts = load_artifacts(tiny_artifacts)
    assert [h["results"]["head"]["label"] for h in arts["heads"]] == ["1.3", "0.1"]
    assert len(arts["heads"][0]["results"]["spectra"]["w_qk"]) == 16
