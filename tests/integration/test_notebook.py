"""The default run reproduces the original notebook on a GPT-2-shaped checkpoint with non-zero
layer-0 biases: W_EE and every spectrum equal a direct transcription of the notebook's code
(``tests/notebook.py``), and the names-vs-generic words are the notebook's (IOI names, bare words)."""

from __future__ import annotations

import pytest
import torch

from headreport.analysis.artifacts import load_artifacts
from headreport.analysis.config import Config
from headreport.analysis.inputs.words import load_word_list
from tests.notebook import notebook_circuits, notebook_effective_embedding


def test_the_checkpoint_has_layer0_biases(tiny_model):
    """Otherwise the bias-free default and the biased variant could not be told apart."""
    assert tiny_model.weight("b_O")[0].abs().max() > 1e-3


def test_default_w_ee_is_the_notebooks(tiny_model, tiny_W_EE):
    nb = notebook_effective_embedding(tiny_model, batch_size=1000)
    torch.testing.assert_close(tiny_W_EE, nb, atol=2e-6, rtol=1e-5)


def test_default_spectra_are_the_notebooks(tiny_model, tiny_W_EE, tiny_artifacts):
    arts = load_artifacts(tiny_artifacts)
    assert arts["model"]["results"]["effective_embedding"]["attention_bias"] is False
    nb_W_EE = notebook_effective_embedding(tiny_model, batch_size=1000)
    for doc in arts["heads"]:
        r = doc["results"]
        nb = notebook_circuits(tiny_model, r["head"]["layer"], r["head"]["head"], nb_W_EE)
        for key, circuit in nb.items():
            expected = [float(s) for s in circuit.S.double()]
            assert r["spectra"][key] == pytest.approx(expected, rel=2e-5, abs=1e-6), key


def test_default_words_are_the_notebooks():
    c = Config()
    assert c.words.names == "builtin:ioi_names" and c.words.form == "bare"
    names = load_word_list("builtin:ioi_names")
    assert len(names) == 109 and names[:3] == ["Aaron", "Adam", "Alan"] and "William" in names
