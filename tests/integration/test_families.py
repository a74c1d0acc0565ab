"""Right numbers on every model family: one tiny random checkpoint per family (norm gains and biases
randomised, untied embeddings; :mod:`tests.families`), each checked against the Hugging Face model:

* W_E, W_EE and the residual variant equal the model's own block 0 on one-token inputs at position 0
  (absolute position embeddings zeroed), with ``attention_bias = true``;
* W_QK and W_OV equal dense products built from the Hugging Face weights (the ln1 gain folded in;
  for LayerNorm models the all-ones direction projected out, as folding does, and W_OV's output
  centred); the token-level QK circuits of QK-norm families apply the model's own q/k norms;
* ``headreport analyze --model DIR --head 1.1`` with no config exits 0;
* families that cannot be analysed are refused before any heavy work, naming the family.

The checkpoints use the first 4,096 tokens of GPT-2's BPE, so every vocabulary-sized step is cheap.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers

from headreport.analysis import circuits, prompts
from headreport.analysis.config import HeadRef, ModelConfig, ProcessingConfig
from headreport.analysis.embeddings import effective_embedding
from headreport.analysis.inputs.prompt_files import PromptSet
from headreport.analysis.model.loader import LoadedModel, load_model
from headreport.cli import main
from tests.families import FAMILIES, make_family_checkpoint

VOCAB = 4096
TOKENS = torch.tensor([0, 1, 13, 198, 220, 262, 464, 1169, 2063, 3000, VOCAB - 2, VOCAB - 1])
#: the module whose output is layer 0's MLP contribution to the residual stream
MLP_CONTRIBUTION = {"gemma2": "post_feedforward_layernorm", "gemma3": "post_feedforward_layernorm",
                    "olmo2": "post_feedforward_layernorm", "bloom": "mlp.dense_4h_to_h", "opt": "fc2"}
#: LayerNorm families whose residual stream receives the (centred) embedding row itself; Bloom's
#: receives its embedding LayerNorm's output, which centring the writing weights does not touch
CENTRED_EMBEDDING = {"gpt2", "gptj", "neox", "opt"}


@pytest.fixture(scope="session")
def family_folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("families")
    return {f: make_family_checkpoint(f, root / f, vocab_size=VOCAB) for f in FAMILIES}


_MODELS: dict[str, LoadedModel] = {}


def loaded(family: str, folders: dict[str, Path]) -> LoadedModel:
    if family not in _MODELS:
        _MODELS[family] = load_model(ModelConfig(name=str(folders[family]), device="cpu"), ProcessingConfig())
    return _MODELS[family]


def hf_model(folder: Path):
    return transformers.AutoModelForCausalLM.from_pretrained(str(folder), attn_implementation="eager").eval()


def hf_layers(hf):
    for path in ("transformer.h", "gpt_neox.layers", "model.decoder.layers", "model.layers"):
        obj = hf
        try:
            for part in path.split("."):
                obj = getattr(obj, part)
            return obj
        except AttributeError:
            continue
    raise AssertionError("no decoder layers found")


def submodule(module, dotted: str):
    for part in dotted.split("."):
        module = getattr(module, part)
    return module


@torch.no_grad()
def hf_block0(family: str, folder: Path) -> dict[str, torch.Tensor]:
    """The HF model's own block 0 on one-token inputs at position 0: its input (what the residual
    stream receives), its MLP's contribution and its output."""
    hf = hf_model(folder)
    for name, p in hf.named_parameters():
        if name.endswith(("wpe.weight", "embed_positions.weight")):
            p.zero_()  # absolute positions excluded, as the analysis does
    L0 = hf_layers(hf)[0]
    store: dict[str, torch.Tensor] = {}

    def keep(name):
        def hook(mod, args, out):
            store[name] = (out[0] if isinstance(out, tuple) else out).reshape(len(TOKENS), -1).clone()
        return hook

    def keep_input(mod, args, kwargs):
        store["in"] = (args[0] if args else kwargs["hidden_states"]).reshape(len(TOKENS), -1).clone()

    handles = [L0.register_forward_pre_hook(keep_input, with_kwargs=True), L0.register_forward_hook(keep("out")),
               submodule(L0, MLP_CONTRIBUTION.get(family, "mlp")).register_forward_hook(keep("mlp"))]
    hf(input_ids=TOKENS[:, None], attention_mask=torch.ones(len(TOKENS), 1, dtype=torch.long))
    for h in handles:
        h.remove()
    return store


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def centred(t: torch.Tensor) -> torch.Tensor:
    return t - t.mean(-1, keepdim=True)


@pytest.mark.parametrize("family", FAMILIES)
def test_w_e_and_w_ee_are_the_models_own_block0(family, family_folders):
    m = loaded(family, family_folders)
    ref = hf_block0(family, family_folders[family])
    centring = m.provenance["processing"]["center_writing_weights"]
    expect_e = centred(ref["in"]) if family in CENTRED_EMBEDDING and centring else ref["in"]
    expect_mlp = centred(ref["mlp"]) if centring else ref["mlp"]
    expect_post = expect_e + (centred(ref["out"] - ref["in"]) if centring else ref["out"] - ref["in"])
    layer0 = effective_embedding(m, "mlp_after_attention", progress=False, attention_bias=True)
    assert rel(layer0.W_E[TOKENS], expect_e) < 1e-5, "W_E"
    assert rel(layer0.W_EE[TOKENS], expect_mlp) < 1e-5, "W_EE"
    assert expect_mlp.norm() > 1e-3 * expect_e.norm()
    resid = effective_embedding(m, "residual", progress=False, attention_bias=True)
    assert rel(resid.W_EE[TOKENS], expect_post) < 1e-5, "residual"


def hf_head(hf, family: str, m: LoadedModel, layer: int, head: int):
    """The HF weights of one head as ``x @ W`` matrices: (W_Q, W_K, W_V, W_O, the ln1 gain)."""
    L = hf_layers(hf)[layer]
    n, dh = m.n_heads, m.d_head
    kv = m.kv_head(head)
    lin = lambda mod: mod.weight.detach().T  # nn.Linear stores [out, in]
    cols = lambda W, i: W[:, i * dh:(i + 1) * dh]
    if family == "gpt2":  # Conv1D: x @ W, [q | k | v]
        W = L.attn.c_attn.weight.detach()
        Wq, Wk, Wv, Wo, ln = W[:, :n * dh], W[:, n * dh:2 * n * dh], W[:, 2 * n * dh:], L.attn.c_proj.weight, L.ln_1
    elif family in ("neox", "bloom"):  # fused, interleaved per head: [heads, (q, k, v), d_head, d_model]
        attn = L.attention if family == "neox" else L.self_attention
        W = attn.query_key_value.weight.detach().view(n, 3, dh, -1)
        Wo = lin(attn.dense)[head * dh:(head + 1) * dh]
        return W[head, 0].T, W[kv, 1].T, W[kv, 2].T, Wo, L.input_layernorm.weight
    elif family == "phi3":  # fused [q (n·dh) | k (kv·dh) | v (kv·dh)]
        W = lin(L.self_attn.qkv_proj)
        n_kv = m.n_kv_heads
        Wq, Wk, Wv = W[:, :n * dh], W[:, n * dh:(n + n_kv) * dh], W[:, (n + n_kv) * dh:]
        Wo, ln = lin(L.self_attn.o_proj), L.input_layernorm
    else:
        attn = getattr(L, "self_attn", None) or L.attn
        Wq, Wk, Wv = lin(attn.q_proj), lin(attn.k_proj), lin(attn.v_proj)
        Wo = lin(getattr(attn, "o_proj", None) or attn.out_proj)
        ln = getattr(L, "input_layernorm", None) or getattr(L, "ln_1", None) or getattr(L, "self_attn_layer_norm", None)
    gain = ln.weight.detach() if ln is not None else torch.ones(Wq.shape[0])
    if getattr(m.bridge.cfg, "rmsnorm_uses_offset", False):
        gain = 1 + gain  # Gemma's RMSNorm multiplies by (1 + weight)
    return cols(Wq, head), cols(Wk, kv), cols(Wv, kv), Wo.detach()[head * dh:(head + 1) * dh], gain


@pytest.mark.parametrize("family", FAMILIES)
def test_circuits_equal_dense_products_of_the_hf_weights(family, family_folders):
    m = loaded(family, family_folders)
    hf = hf_model(family_folders[family])
    applied = m.provenance["processing"]
    for layer, head in ((0, 3), (1, 1)):
        w = circuits.head_weights(m, HeadRef(layer, head))
        q, k, v, o, g = hf_head(hf, family, m, layer, head)
        q, k, v = (g[:, None] * t for t in (q, k, v))
        if m.normalization == "LN" and applied["fold_ln"]:  # folding projects out the all-ones direction
            q, k, v = (t - t.mean(0, keepdim=True) for t in (q, k, v))
        ov = v @ o
        if applied["center_writing_weights"]:
            ov = centred(ov)
        assert rel(circuits.qk_circuit(w).AB, q @ k.T) < 1e-5, (layer, head, "W_QK")
        assert rel(circuits.ov_circuit(w).AB, ov) < 1e-5, (layer, head, "W_OV")
        assert w.kv_head == head // (m.n_heads // m.n_kv_heads)


#: families whose attention output passes through a norm before the residual stream (sandwich norms):
#: a single head's direct effect is not defined by its output, so the prompts evidence is not computed
POST_ATTENTION_NORM = {"gemma2", "gemma3", "olmo2"}


@pytest.mark.parametrize("family", FAMILIES)
def test_prompt_evidence_decomposes_exactly_or_is_not_computed(family, family_folders):
    """On a real prompt, through the model's own forward pass: the heads' outputs add up to the
    layer's attention output and the frozen-norm logits equal the model's; families where a head's
    output is not separable get no numbers and a note that says why."""
    m = loaded(family, family_folders)
    texts = ("When Mary and John went to the store, John gave a drink to",)
    r = prompts.analyze_prompts(m, [HeadRef(1, 1), HeadRef(0, 0)], PromptSet("test", texts, "0" * 64))
    if family in POST_ATTENTION_NORM:
        assert r["heads"] == {} and "Not computed" in r["note"]
        assert r["checks"]["attn_out_max_relative_error"] > 0.1
        return
    assert r["checks"]["attn_out_max_relative_error"] < 1e-5
    assert r["checks"]["logits_max_relative_error"] < 1e-5 and r["checks"]["direct_effects_exact"]
    rec = r["heads"]["1.1"]["records"][0]
    n = len(r["prompts"][0]["tokens"])
    assert len(rec["sources"]) == n and abs(sum(s["weight"] for s in rec["sources"]) - 1) < 1e-3


@pytest.mark.parametrize("family", ["qwen3", "gemma3", "olmo2"])
def test_qk_norm_families_apply_their_own_norms_to_the_circuit_rows(family, family_folders):
    """The full QK circuit's factors are the model's own normed queries and keys of W_E's rows."""
    m = loaded(family, family_folders)
    assert m.family.qk_norm
    hf = hf_model(family_folders[family])
    attn = hf_layers(hf)[1].self_attn
    w = circuits.head_weights(m, HeadRef(1, 1))
    layer0 = effective_embedding(m, progress=False)
    E = layer0.W_E[TOKENS]
    f = circuits.full_qk_circuit(w, E)
    n, dh = m.n_heads, m.d_head
    with torch.no_grad():
        Wq, Wk = w.W_Q, w.W_K
        if attn.q_norm.weight.numel() == dh:  # per-head norms (Qwen3, Gemma 3)
            ref_q, ref_k = attn.q_norm(E @ Wq), attn.k_norm(E @ Wk)
        else:  # OLMo 2: one norm over all heads' projections
            W_Q_all = m.weight("W_Q")[1].permute(1, 0, 2).reshape(m.d_model, -1)
            W_K_all = m.weight("W_K")[1].permute(1, 0, 2).reshape(m.d_model, -1)
            ref_q = attn.q_norm(E @ W_Q_all).view(len(TOKENS), n, dh)[:, 1]
            ref_k = attn.k_norm(E @ W_K_all).view(len(TOKENS), m.n_kv_heads, dh)[:, w.kv_head]
    assert rel(f.AB, ref_q @ ref_k.T) < 1e-5
    plain = (E @ Wq) @ (E @ Wk).T  # without the norms it would differ
    assert rel(plain, ref_q @ ref_k.T) > 1e-2
    assert any("QK-norm" in note for note in m.family.notes)


@pytest.mark.parametrize("family", FAMILIES)
def test_cli_analyze_with_no_config_exits_0(family, family_folders, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no ./report.toml: the built-in defaults
    out = tmp_path / "out"
    code = main(["analyze", "--model", str(family_folders[family]), "--head", "1.1", "--out", str(out),
                 "--no-progress"])
    assert code == 0, capsys.readouterr().err
    head = json.loads((out / "artifacts" / "head_1.1.json").read_text())["results"]
    assert head["effective_embedding"]["attention_bias"] is False
    for key in ("ov_self_suppression", "qk_self_attention"):
        assert head[key]["defined"] and head[key]["mode"] == "exact"


def write_config(folder: Path, config) -> Path:
    folder.mkdir(parents=True)
    config.to_json_file(str(folder / "config.json"))
    return folder


@pytest.mark.parametrize("make, words", [
    (lambda t: t.BertConfig(), ["bert", "encoder-only"]),
    (lambda t: t.T5Config(), ["t5", "encoder-decoder"]),
    (lambda t: t.MambaConfig(), ["mamba", "state-space"]),
    (lambda t: t.LlavaConfig(), ["llava", "multimodal"]),
    (lambda t: t.CodeGenConfig(), ["codegen", "forward pass"]),
])
def test_unsupported_families_are_refused_before_loading(make, words, tmp_path, capsys):
    """Only config.json is there: the refusal comes from it, before any weights are looked for."""
    folder = write_config(tmp_path / "ckpt", make(transformers))
    code = main(["analyze", "--model", str(folder), "--head", "0.0", "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert all(w in err for w in words), err
    assert "Traceback" not in err and not (tmp_path / "out").exists()


def _first(obj, paths: tuple[str, ...]):
    for path in paths:
        try:
            return submodule(obj, path)
        except AttributeError:
            continue
    return None


def input_norm(family: str, layer):
    """The HF module that normalises the attention's input (None: OLMo 2 reads the raw residual)."""
    return _first(layer, ("input_layernorm", "ln_1", "self_attn_layer_norm"))


def final_norm(hf):
    return _first(hf, ("transformer.ln_f", "gpt_neox.final_layer_norm", "model.decoder.final_layer_norm", "model.norm"))


def norm_scale(module, x: torch.Tensor) -> torch.Tensor:
    """The per-row scale the norm divides by (its own epsilon), so that the bias-free, scale-free
    input-norm map is (module(x) − module(0)) · scale(x): the gain (and LayerNorm's centring) alone."""
    eps = next(getattr(module, a) for a in ("eps", "variance_epsilon", "layer_norm_eps") if hasattr(module, a))
    if isinstance(module, torch.nn.LayerNorm):
        return (x.var(-1, unbiased=False, keepdim=True) + eps).sqrt()
    return (x.pow(2).mean(-1, keepdim=True) + eps).sqrt()


def without_bias(module, x: torch.Tensor) -> torch.Tensor:
    return module(x[:, None])[:, 0] - module(torch.zeros_like(x[:1, None]))[:, 0]


def canon(rows: torch.Tensor) -> torch.Tensor:
    """Rows up to what no within-row rank sees: a shift and a positive scale."""
    c = rows - rows.mean(-1, keepdim=True)
    return c / c.norm(dim=-1, keepdim=True)


@torch.no_grad()
def dense_rank_rows(family: str, hf, m: LoadedModel, layer: int, head: int, W_EE: torch.Tensor, rows: torch.Tensor):
    """The rank metrics' OV and QK rows of ``rows`` through the HF model's own modules, biases dropped:
    OV: ln1(W_EE[s]) → W_V → W_O → the post-attention norm (Gemma 2/3, OLMo 2) → the final norm → W_U;
    QK: query the final-norm-gained, vocabulary-centred unembedding (what fold_ln and center_unembed
    make of W_U), key W_EE, each through ln1 without its scale (raw queries and keys, the paper's code)
    → W_Q, W_K → the model's own q/k norms."""
    L = hf_layers(hf)[layer]
    q, k, v, o, _ = hf_head(hf, family, m, layer, head)
    ln1, ln_f = input_norm(family, L), final_norm(hf)
    W_lm = hf.get_output_embeddings().weight.detach().T  # [d_model, d_vocab]
    x = W_EE[rows].float()
    h = without_bias(ln1, x) if ln1 is not None else x
    out = (h @ v) @ o
    if family in POST_ATTENTION_NORM:
        out = L.post_attention_layernorm(out[:, None])[:, 0]
    ov = without_bias(ln_f, out) @ W_lm

    gain_f = ln_f.weight.detach() + (1 if getattr(m.bridge.cfg, "rmsnorm_uses_offset", False) else 0)
    U = (gain_f[:, None] * W_lm).T  # [d_vocab, d_model]: query inputs
    if m.provenance["processing"]["center_unembed"]:  # (not under final-logit soft-capping: Gemma 2)
        U = U - U.mean(0, keepdim=True)
    raw = ((lambda X: without_bias(ln1, X) * norm_scale(ln1, X)) if ln1 is not None else (lambda X: X))
    Q_in, K_in = raw(U[rows]), raw(W_EE.float())
    attn = getattr(L, "self_attn", None)
    qn, kn = getattr(attn, "q_norm", None), getattr(attn, "k_norm", None)
    if qn is not None and qn.weight.numel() != m.d_head:  # OLMo 2: one norm over all heads' projections
        Wq_all, Wk_all = attn.q_proj.weight.detach().T, attn.k_proj.weight.detach().T
        dh, kv = m.d_head, m.kv_head(head)
        queries = qn(Q_in @ Wq_all)[:, head * dh:(head + 1) * dh]
        keys = kn(K_in @ Wk_all)[:, kv * dh:(kv + 1) * dh]
    else:
        queries, keys = Q_in @ q, K_in @ k
        if qn is not None:
            queries, keys = qn(queries), kn(keys)
    return ov, queries @ keys.T


_UNFOLDED: dict[str, LoadedModel] = {}


@pytest.mark.parametrize("family, fold", [(f, True) for f in FAMILIES] + [("gpt2", False), ("llama", False)])
def test_rank_circuits_equal_the_models_own_modules(family, fold, family_folders):
    """With randomised norm gains (folded by TransformerLens or not: OLMo 2's adapter does not fold,
    Gemma 2/3's and OLMo 2's post-attention norms cannot be folded, and ``fold_ln = false`` folds
    nothing, LayerNorm's centring included), the OV and QK rows the rank metrics read equal a dense
    computation through the HF model's own modules, up to a per-row shift and positive scale (which
    no rank within a row sees)."""
    if fold:
        m = loaded(family, family_folders)
    else:
        if family not in _UNFOLDED:
            _UNFOLDED[family] = load_model(ModelConfig(name=str(family_folders[family]), device="cpu"),
                                           ProcessingConfig(fold_ln=False))
        m = _UNFOLDED[family]
        assert not m.provenance["processing"]["fold_ln"]
    hf = hf_model(family_folders[family])
    W_EE = effective_embedding(m, progress=False, rank_variant="residual").W_EE_rank
    rows = TOKENS[2:10]
    for layer, head in ((1, 1), (0, 3)):
        rc = circuits.RankCircuits(m, layer, W_EE, "none")
        ov, qk = rc.ov(head), rc.qk(head)
        got_ov = ov.rows_of(rows) @ ov.B
        got_qk = qk.rows_of(rows) @ qk.B
        ref_ov, ref_qk = dense_rank_rows(family, hf, m, layer, head, W_EE, rows)
        assert (canon(got_ov) - canon(ref_ov)).abs().max() < 1e-4, (family, layer, head, "OV")
        assert (canon(got_qk) - canon(ref_qk)).abs().max() < 1e-4, (family, layer, head, "QK")
    if family in POST_ATTENTION_NORM:
        assert any("Post-attention norm" in n for n in circuits.gain_notes(m))
        # without the post-attention norm's gain, the OV rows would differ
        w = circuits.head_weights(m, HeadRef(1, 1))
        plain = W_EE[rows] @ w.W_V @ w.W_O @ circuits.unembedding(m)
        assert (canon(plain) - canon(ref_ov)).abs().max() > 1e-3
