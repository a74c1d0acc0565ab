"""Model families: which can be analysed, and what their weights-only quantities approximate.

:func:`refuse_unsupported` reads a checkpoint's ``config.json`` before anything heavy is loaded and
stops, with one message naming the family and the reason, for the kinds of model whose heads this
analysis cannot describe: encoder-only and encoder-decoder models (no causal next-token head over a
shared vocabulary), state-space and recurrent models (no attention heads), multimodal wrappers.

:func:`family_facts` reads the loaded model's TransformerLens config and says, as plain sentences for
the artifacts and the report, where a number is exact and where it is an approximation: rotary and
ALiBi positions (the weights-based QK circuit is the circuit at relative offset 0, where both are
the identity), QK-norm (applied to the token-level factor rows, so those circuits stay exact, but
not to the weights-only W_QK), attention-logit soft-capping and query scaling (monotone: ranks do
not depend on them), final-logit soft-capping (monotone per row), parallel blocks, sandwich norms,
embedding scaling and MoE (W_EE is the model's own forward pass, so it honours them exactly).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ModelUnavailableError
from ..inputs.text import decode_utf8, read_limited

#: model_type values of state-space / recurrent models (no attention heads to analyse)
STATE_SPACE = {"mamba", "mamba2", "falcon_mamba", "rwkv", "rwkv5", "rwkv6", "recurrent_gemma", "xlstm",
               "hyena", "hyenadna"}
#: model_type values of encoder-only models
ENCODER_ONLY = {"bert", "roberta", "distilbert", "albert", "electra", "deberta", "deberta-v2", "xlm-roberta",
                "camembert", "modernbert", "mpnet", "ernie", "megatron-bert", "nomic_bert", "hubert", "wav2vec2",
                "vit", "deit", "clip_vision_model", "convbert", "funnel", "squeezebert", "layoutlm", "roformer"}
#: families TransformerLens loads but whose forward pass it cannot run (W_EE needs the forward pass)
BROKEN_FORWARD = {
    "codegen": "TransformerLens 4.3's CodeGen forward pass fails (its attention bridge expects an "
               "embed_positions module that CodeGenAttention does not have), so W_EE cannot be computed "
               "through the model's own forward pass",
}
#: architecture name endings of a causal language model
CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel")


@dataclass(frozen=True)
class FamilyRow:
    """What the analysis honours and approximates for one group of families: one row of docs/models.md's
    "Supported model families" table and, for a loaded model of one of ``model_types``, a model note
    on its report pages (:func:`family_notes`)."""

    name: str
    model_types: tuple[str, ...]
    quirks: str
    exact: str
    approximated: str

    def markdown(self) -> str:
        return f"| {self.name} | {self.quirks} | {self.exact} | {self.approximated} |"

    def note(self) -> str:
        return f"{self.name}: {self.quirks}. Exact: {self.exact}. Approximated: {self.approximated}."


#: the single table of family facts: docs/models.md's table rows and the report's model notes
FAMILY_TABLE: tuple[FamilyRow, ...] = (
    FamilyRow("GPT-2", ("gpt2",), "learned absolute positions (excluded, as in the notebook)", "everything", "—"),
    FamilyRow("GPT-J, GPT-NeoX / Pythia, Phi", ("gptj", "gpt_neox", "phi"), "parallel attention + MLP; partial rotary",
              "W_EE (the MLP reads the embedding, not embedding + attention), circuits",
              "QK circuits at relative offset 0 (rotary left out)"),
    FamilyRow("OPT", ("opt",), "learned positions with an offset; MLP not callable alone (forward pass used)",
              "everything", "—"),
    FamilyRow("Bloom", ("bloom",), "embedding LayerNorm (W_E is its output); ALiBi", "W_E, W_EE, circuits",
              "QK circuits at offset 0 (the ALiBi bias is 0 there)"),
    FamilyRow("Llama, Mistral, Qwen2, Phi-3", ("llama", "mistral", "qwen2", "phi3"),
              "RMSNorm (no centring), GQA, rotary, Qwen2's q/k/v biases; norm gains TransformerLens leaves "
              "unfolded (it warns for Phi-3) are applied by the circuits", "W_EE, circuits", "QK at offset 0"),
    FamilyRow("Mixtral", ("mixtral",), "experts: each token routed by the model's own router", "W_EE, circuits",
              "QK at offset 0"),
    FamilyRow("Qwen3, Gemma 3, OLMo 2", ("qwen3", "gemma3", "gemma3_text", "olmo2"),
              "QK-norm (per head; OLMo 2's over all heads), applied to the token-level circuit rows",
              "token-level QK circuits, W_EE", "W_QK alone leaves the norms out; QK at offset 0"),
    FamilyRow("Gemma, Gemma 2, Gemma 3", ("gemma", "gemma2", "gemma3", "gemma3_text"),
              "W_E scaled by √d_model; (1 + w) RMSNorm; Gemma 2/3 sandwich norms (W_EE is the MLP's contribution "
              "after its post-norm; the post-attention norm's gain is applied to W_O's output in the OV "
              "circuits); soft-capping; query scaling",
              "W_EE, circuits, the post-attention norm's gain",
              "soft-capping and query scaling are monotone: ranks do not depend on them; spectra are before "
              "them; the post-attention norm's scale (one positive number per position) is left out, which "
              "changes no rank"),
    FamilyRow("OLMo 2", ("olmo2",),
              "norms after attention and MLP only; TransformerLens does not fold its norms, so the circuits "
              "apply the final norm's gain to W_U and the post-attention norm's gain to W_O's output",
              "W_EE, circuits", "as Qwen3; the post-attention norm's scale is left out, which changes no rank"),
)


def family_notes(model_type: str) -> list[str]:
    """The notes of every :data:`FAMILY_TABLE` row that covers ``model_type``."""
    return [row.note() for row in FAMILY_TABLE if model_type in row.model_types]


class UnsupportedFamilyError(ModelUnavailableError):
    """The checkpoint is of a family whose heads cannot be analysed here."""


def read_checkpoint_config(folder: Path) -> dict[str, Any]:
    """``config.json`` of a checkpoint folder, as a dict; a clear error when it is unreadable."""
    path = folder / "config.json"
    raw = read_limited(path, 16 << 20, ModelUnavailableError, "model.name", "model config")
    try:
        doc = json.loads(decode_utf8(raw, ModelUnavailableError, "model.name", path))
    except (ValueError, RecursionError) as exc:
        raise ModelUnavailableError(f"model.name: {str(path)!r} is not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise ModelUnavailableError(f"model.name: {str(path)!r} is not a JSON object")
    return doc


def describe_family(config: dict[str, Any]) -> str:
    archs = config.get("architectures") or []
    name = config.get("model_type") or "unknown"
    return f"{name} ({', '.join(map(str, archs))})" if archs else str(name)


def refuse_unsupported(config: dict[str, Any], where: str) -> None:
    """Raise :class:`UnsupportedFamilyError` (exit 2) for a family this analysis cannot describe."""
    model_type = str(config.get("model_type") or "").lower()
    archs = [str(a) for a in (config.get("architectures") or [])]
    family = describe_family(config)

    def refuse(reason: str) -> None:
        raise UnsupportedFamilyError(
            f"model.name: {where} is a {family} model: {reason}. headreport analyses attention heads of "
            "decoder-only causal language models (GPT-2, GPT-J, GPT-NeoX/Pythia, OPT, Bloom, Llama, Mistral, "
            "Mixtral, Qwen, Phi, Gemma, OLMo...); see docs/models.md, \"Supported model families\""
        )

    if model_type in STATE_SPACE or any("Mamba" in a or "Rwkv" in a for a in archs):
        refuse("a state-space / recurrent model has no attention heads")
    if config.get("is_encoder_decoder"):
        refuse("an encoder-decoder model's heads read an encoder's states, not a causal context over one "
               "vocabulary, so its QK/OV token circuits are not defined")
    if model_type in ENCODER_ONLY or any(a.endswith("ForMaskedLM") for a in archs):
        refuse("an encoder-only model has no next-token unembedding for the OV circuit to write to")
    if "vision_config" in config or "audio_config" in config or any("ForConditionalGeneration" in a for a in archs):
        refuse("a multimodal wrapper: point model.name at its text-only causal language model instead")
    if model_type in BROKEN_FORWARD:
        refuse(BROKEN_FORWARD[model_type])
    if archs and not any(a.endswith(CAUSAL_SUFFIXES) for a in archs):
        refuse(f"its architecture {', '.join(archs)} is not a causal language model")


@dataclass(frozen=True)
class FamilyFacts:
    """What the analysis needs to know of a loaded model's family: ``qk_norm``, whether its attention
    normalises queries and keys per head (the token-level QK circuits then apply those norms, and the
    survey takes per-head SVDs), and ``notes``, the sentences for the report on what its
    weights-only numbers approximate."""

    qk_norm: bool = False
    notes: tuple[str, ...] = ()


def family_facts(bridge: Any, n_heads: int, n_kv_heads: int) -> FamilyFacts:
    """What the analysis needs to know of the loaded model's family, and the notes it reports."""
    cfg = bridge.cfg
    positional = str(cfg.positional_embedding_type)
    model_type = str(getattr(getattr(getattr(bridge, "original_model", None), "config", None), "model_type", ""))
    notes: list[str] = family_notes(model_type)
    if positional == "rotary":
        notes.append(
            "Rotary position embeddings: the weights-based QK circuits leave the rotation out, i.e. they "
            "are the circuits for a query and a key at the same position (relative offset 0, where the "
            "rotation is the identity).")
    if positional == "alibi":
        notes.append(
            "ALiBi positions: the weights-based QK circuits leave the linear distance bias out, i.e. they "
            "are the circuits at relative offset 0, where the bias is 0.")
    if n_kv_heads != n_heads:
        notes.append(
            f"Grouped-query attention: {n_heads} query heads share {n_kv_heads} key/value heads; query head "
            f"H reads key/value head H // {n_heads // n_kv_heads}.")
    qk_norm = bool(getattr(cfg, "use_qk_norm", False)) or _has_qk_norm(bridge)
    if qk_norm:
        notes.append(
            "QK-norm: the per-head query and key norms are applied to the rows of the token-level QK "
            "circuits (full, effective, and the self-attention ranks), which stay exact; the weights-only "
            "W_QK = W_Q·W_Kᵀ leaves the norms out.")
    from transformer_lens.utilities import softcap_enabled  # noqa: PLC0415 - torch-free front end

    if softcap_enabled(getattr(cfg, "attn_scores_soft_cap", None)):
        notes.append("Attention-logit soft-capping (tanh) is monotone: the QK ranks do not depend on it; the "
                     "QK spectra describe the scores before it.")
    if softcap_enabled(getattr(cfg, "output_logits_soft_cap", None)):
        notes.append("Final-logit soft-capping (tanh) is monotone: the OV ranks do not depend on it; "
                     "TransformerLens does not centre W_U for such a model.")
    if getattr(cfg, "parallel_attn_mlp", False):
        notes.append("Parallel attention and MLP: W_EE is block 0's own MLP output, which reads the "
                     "embedding, not the embedding plus the attention output.")
    if getattr(cfg, "num_experts", None):
        notes.append(f"Mixture of experts ({cfg.num_experts} experts): W_EE routes every token through the "
                     "experts the model's own router picks for it.")
    return FamilyFacts(qk_norm=qk_norm, notes=tuple(notes))


def _has_qk_norm(bridge: Any) -> bool:
    attn = getattr(bridge.blocks[0], "attn", None)
    return attn is not None and any(hasattr(attn, n) for n in ("q_norm", "k_norm"))
