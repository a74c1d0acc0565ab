"""The published figures stand beside the statistic they are, and only where the definitions match."""

from __future__ import annotations

import numpy as np

from headreport.analysis.config import Config
from headreport.analysis.diagonal import rank_summary
from headreport.report import references
from headreport.report.pages.head import rank_table
from headreport.report.pages.reproducibility import total_seconds

GPT2 = {"name": "gpt2-small", "n_layers": 12, "n_heads": 12, "d_model": 768, "d_vocab": 50257}
PROVENANCE = {"requested_name": "gpt2-small"}


def results():
    ranks = np.arange(1, 50258) % 3000 + 1
    summary = rank_summary(ranks, 50257, "exact", None, None, tied_rows=0)
    return {"head": {"label": "10.7"}, "ov_self_suppression": dict(summary),
            "qk_self_attention": {**summary, "normalization": "none"}}


def cells(table):
    return {row[0].text: [c.text for c in row[1:]] for row in table.rows}


def test_each_published_value_is_beside_its_own_statistic():
    paper = references.paper_values(GPT2, PROVENANCE, "10.7", Config().to_dict())
    r = results()
    qk = rank_table(r, "qk_self_attention", paper)
    assert qk.columns[3:] == [references.SOURCES["paper"], references.SOURCES["notebook"]]
    rows = cells(qk)
    assert rows["own entry in the top 10"][2] == "95.72%"  # a top-10 share (paper)
    assert "95.72%" not in rows["own entry ranked 1"]
    assert rows["own entry ranked 1"][3] == "71.24%"  # the authors' notebook
    assert rows["mean rank"][3] == "32.35" and rows["median rank"][3] == "1"
    ov = cells(rank_table(r, "ov_self_suppression", paper))
    assert ov["own entry in the top 10"][2] == "84.70%" and ov["own entry in the top 5% (rank ≤ 2,513)"][2] == "98.86%"
    assert ov["own entry ranked 1"][3] == "57.26%" and ov["mean rank"][3] == "117.82"
    assert ov["rows where the own entry ties another exactly"][0] == "0"


def test_no_published_values_under_other_definitions_or_heads():
    for change in ({"qk_normalization": "sqrt_d_model"}, {"rank_embedding": "mlp_after_attention"}):
        config = Config().to_dict()
        config["analysis"].update(change)
        assert references.paper_values(GPT2, PROVENANCE, "10.7", config) == {}
        assert list(change)[0] in references.definition_mismatch(config)
    assert references.paper_values(GPT2, PROVENANCE, "10.6", Config().to_dict()) == {}
    assert references.paper_values({**GPT2, "d_model": 64}, PROVENANCE, "10.7", Config().to_dict()) == {}
    assert len(rank_table(results(), "qk_self_attention", {}).columns) == 3


def test_the_timings_total_counts_every_step_once():
    t = {"survey/load_model": 10.0, "survey/effective_embedding": 5.0, "survey/total_heads": 100.0,
         "survey/spectra": 60.0, "survey/ov_self_suppression": 30.0, "survey/qr": 1.0, "10.7/spectra": 2.0}
    assert total_seconds(t) == 117.0
    assert total_seconds({"a": 1.0, "b/c": 2.0}) == 3.0
