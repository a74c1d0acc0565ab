"""Prepared check for a machine with a CUDA device: the GPU code paths give the CPU's answers, and how
long the exact modes take there. Not a test (CI has no GPU); run by hand:

    python bench/gpu_check.py --out DIR [--shape gpt2-small|llama-1b] [--skip-cpu]

It builds a GPT-2-small-shaped random checkpoint (real GPT-2 tokenizer), loads it on the CPU and on
CUDA, and compares: W_EE, head 10.7's spectra, exact OV self-suppression and QK self-attention ranks and the
token explorer's lists collected in the same passes,
then times an exact-mode survey of every head on the GPU and a full ``run_analysis`` on the GPU.
The rank comparison is made twice: each device from its own W_EE (what a user gets), and both from
the CPU's W_EE (the rank pass alone; differences are then float32 near-ties only). Results are
saved after each stage, so a run cut short still leaves what it measured.
``--shape llama-1b`` builds a random Llama-3.2-1B-shaped checkpoint (vocabulary 128,256, d_model
2048, 16 layers × 32 heads, 8 key/value heads), ``--shape gemma3-270m`` a random Gemma-3-270M-shaped one
(vocabulary 262,144, 18 layers × 4 heads on 1 key/value head, d_head 256, QK-norm); with ``--skip-cpu``
only the device runs.
Writes ``DIR/gpu_check.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from checkpoints import (
    gpt2_tokenizer_files,
    make_gemma3_270m_shaped_checkpoint,
    make_gpt2_checkpoint,
    randomize_norms_and_biases,
)

from headreport.analysis import circuits, diagonal, explorer, gpurank, spectra
from headreport.analysis.config import Config, HeadRef, ModelConfig, ProcessingConfig, SurveyConfig
from headreport.analysis.embeddings import effective_embedding
from headreport.analysis.model.loader import load_model


def timed(fn):
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out, time.perf_counter() - t0


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().cpu(), b.double().cpu()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="build/gpu_check")
    parser.add_argument("--device", default="cuda", help="the device compared with the CPU (cpu: a dry run here)")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="gpt2-small",
                        help="gpt2-small (12 × 12 heads, vocabulary 50,257); llama-1b (Llama-3.2-1B-shaped: 16 × 32 "
                             "heads, 8 key/value heads, vocabulary 128,256); gemma3-270m (Gemma-3-270M-shaped: "
                             "18 × 4 heads, 1 key/value head, d_head 256, QK-norm, vocabulary 262,144); tiny / "
                             "llama-tiny / gemma3-tiny (dry runs)")
    parser.add_argument("--skip-cpu", action="store_true", help="no CPU comparison (the 1B shape: CPU is slow)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dev = args.device
    report: dict = {"torch": torch.__version__, "cuda": torch.cuda.is_available(), "shape": args.shape}
    if dev == "cuda" and not torch.cuda.is_available():
        print("no CUDA device", file=sys.stderr)
        return 2
    report["device_name"] = torch.cuda.get_device_name(0) if dev == "cuda" else dev
    save(report, out)
    tmp = Path(tempfile.mkdtemp())
    ck, t = timed(lambda: SHAPES[args.shape](tmp / args.shape))
    report["checkpoint_seconds"] = t
    proc = ProcessingConfig()
    gpu, t = timed(lambda: load_model(ModelConfig(name=str(ck), device=dev), proc))
    report["load_model_device_s"] = t
    if args.skip_cpu:
        head = HeadRef(1, 3)
        W_gpu = effective_embedding(gpu, progress=False).W_EE
        fused_kernel_check(report, circuits.RankCircuits(gpu, head.layer, W_gpu, "none"), head, out)
        del W_gpu
        return survey_and_analysis(report, gpu, ck, dev, out, head)
    cpu = load_model(ModelConfig(name=str(ck), device="cpu"), proc)

    L_cpu, t_cpu = timed(lambda: effective_embedding(cpu, progress=False))
    effective_embedding(gpu, progress=False)  # warm-up
    L_gpu, t_gpu = timed(lambda: effective_embedding(gpu, progress=False))
    W_cpu, W_gpu = L_cpu.W_EE, L_gpu.W_EE
    report["w_ee"] = {"cpu_s": t_cpu, "gpu_s": t_gpu, "max_rel_err": rel_err(W_gpu, W_cpu)}

    head = HeadRef(10, 7) if args.shape == "gpt2-small" else HeadRef(1, 3)
    wc, wg = circuits.head_weights(cpu, head), circuits.head_weights(gpu, head)
    spec = {}
    for name, fc, fg in (
        ("w_qk", circuits.qk_circuit(wc), circuits.qk_circuit(wg)),
        ("full_qk", circuits.full_qk_circuit(wc, L_cpu.W_E), circuits.full_qk_circuit(wg, L_gpu.W_E)),
        ("effective_qk", circuits.effective_qk_circuit(wc, cpu.weight("W_U"), W_cpu),
         circuits.effective_qk_circuit(wg, gpu.weight("W_U"), W_gpu)),
    ):
        spec[name] = rel_err(torch.tensor(spectra.singular_spectrum(fg)), torch.tensor(spectra.singular_spectrum(fc)))
    report["spectra_max_rel_err"] = spec

    # the exact rank passes with the explorer's lists riding along, on both devices
    rc_cpu = circuits.RankCircuits(cpu, head.layer, W_cpu, "none")
    rc_gpu = circuits.RankCircuits(gpu, head.layer, W_gpu, "none")
    rc_same = circuits.RankCircuits(gpu, head.layer, W_cpu.to(dev), "none")  # the rank pass alone
    ranks, lists = {}, {}
    for name, desc in (("ov_self_suppression", False), ("qk_self_attention", True)):
        pick = (lambda rc: rc.ov(head.head)) if name.startswith("ov") else (lambda rc: rc.qk(head.head))
        cc, cg = pick(rc_cpu), pick(rc_gpu)
        vis_c = explorer.collectors(cc, cc)
        vis_g = explorer.collectors(cg, cg)
        keys = ("ov_low", "ov_high") if name.startswith("ov") else ("qk_keys", "qk_queries")
        (sc, rk_c), tc = timed(lambda: diagonal.rank_pass(cc, "exact", descending=desc,
                                                          visitors=[vis_c[k] for k in keys]))
        diagonal.rank_pass(cg, "sampled", descending=desc, sample_size=4096)  # warm-up
        (sg, rk_g), tg = timed(lambda: diagonal.rank_pass(cg, "exact", descending=desc,
                                                          visitors=[vis_g[k] for k in keys]))
        # no visitor: the survey's pass
        (sf, rk_f), tf = timed(lambda: diagonal.rank_pass(cg, "exact", descending=desc))
        (_, rk_s), _ = timed(lambda: diagonal.rank_pass(pick(rc_same), "exact", descending=desc))
        diff, diff_s = abs(rk_c - rk_g), abs(rk_c - rk_s)
        ranks[name] = {
            "cpu_exact_s": tc, "gpu_with_explorer_s": tg, "gpu_s": tf,
            "fraction_rank1_cpu": sc["fraction_rank1"], "fraction_rank1_gpu": sg["fraction_rank1"],
            "fraction_rank1_gpu_no_explorer": sf["fraction_rank1"],
            "rows_with_equal_rank": float((diff == 0).mean()), "max_rank_difference": int(diff.max()),
            "rows_with_equal_rank_same_w_ee": float((diff_s == 0).mean()),
            "max_rank_difference_same_w_ee": int(diff_s.max()),
            "median_rank_cpu": sc["median_rank"], "median_rank_gpu": sg["median_rank"],
        }
        for k in keys:
            a, b = vis_c[k].result(), vis_g[k].result()
            lists[k] = {"rows_identical": float((a == b).all(axis=1).mean()),
                        "first_identical": float((a[:, 0] == b[:, 0]).mean())}
    report[f"exact_ranks_head_{head.label}"] = ranks
    report[f"explorer_lists_head_{head.label}"] = lists
    save(report, out)
    del cpu, W_cpu, rc_same
    fused_kernel_check(report, rc_gpu, head, out)

    return survey_and_analysis(report, gpu, ck, dev, out, head)


#: launch shapes the fused kernel is timed with (the first is gpurank's default)
TILINGS = (gpurank.Tiling(64, 32, 4, 3), gpurank.Tiling(128, 32, 8, 3), gpurank.Tiling(128, 16, 8, 4),
           gpurank.Tiling(64, 64, 4, 2), gpurank.Tiling(32, 32, 2, 3))


def fused_kernel_check(report: dict, rc: circuits.RankCircuits, head: HeadRef, out: Path) -> None:
    """The fused Triton kernel (analysis/gpurank.py) against the block pass, on one head's exact OV and
    QK circuits: ranks and ties, rows whose own entry no tile reproduced (must be 0), and seconds for
    each precision and launch shape."""
    if not gpurank.available(rc.W_EE.device):
        report["fused_kernel"] = {"available": False}
        save(report, out)
        return
    result: dict = {"available": True}
    for name, desc in (("ov_self_suppression", False), ("qk_self_attention", True)):
        circuit = circuits.TokenCircuit.of(rc.ov(head.head) if name.startswith("ov") else rc.qk(head.head))
        rows = torch.arange(circuit.n_rows, device=circuit.B.device)
        A = circuit.rows_of(rows)
        block, t_block = timed(lambda: diagonal.block_pass(lambda s: A[s], circuit.B, rows, desc))
        entry: dict = {"block_s": t_block}
        for precision in gpurank.PRECISIONS:
            for tiling in TILINGS:
                try:
                    # compile first
                    gpurank.counts(A[:4096], circuit.B, rows[:4096], desc, precision=precision, tiling=tiling)
                    c, t = timed(lambda: gpurank.counts(A, circuit.B, rows, desc, precision=precision, tiling=tiling))
                except Exception as e:  # a shape this Triton or chip refuses: recorded, not fatal
                    entry[f"{precision}_{tiling.block}x{tiling.k}w{tiling.warps}s{tiling.stages}"] = repr(e)[:200]
                    continue
                ranks = torch.where(c.own.isnan(), circuit.n_rows, c.le)
                diff = (ranks - block).abs()
                entry[f"{precision}_{tiling.block}x{tiling.k}w{tiling.warps}s{tiling.stages}"] = {
                    "seconds": t, "tflops": 2 * A.shape[0] * circuit.n_rows * A.shape[1] / t / 1e12,
                    "unmatched_rows": int(c.unmatched.sum()),
                    "rows_with_equal_rank_vs_block": float((diff == 0).float().mean()),
                    "max_rank_difference_vs_block": int(diff.max()),
                }
        result[name] = entry
    report[f"fused_kernel_head_{head.label}"] = result
    save(report, out)


def survey_and_analysis(report: dict, gpu, ck: Path, dev: str, out: Path, head: HeadRef) -> int:
    """The exact survey of every head on the device, then the full analysis of ``head``."""
    from headreport.analysis.pipeline import run_analysis
    from headreport.analysis.survey import run_survey

    del gpu  # the runs load their own copy
    base = Config(model=ModelConfig(name=str(ck), device=dev), heads=(head,), output_dir=str(out / "build"))
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    written, t = timed(lambda: run_survey(
        base.replace(survey=SurveyConfig(mode="exact", sample_size=2000, analyze_top=0)),
        out / "build" / "artifacts", progress=False, log=lambda m: None))
    survey = json.loads((out / "build" / "artifacts" / "survey.json").read_text())
    steps = json.loads((out / "build" / "artifacts" / "timings.json").read_text())["seconds"]
    report["survey_exact"] = {
        "seconds": t, "n_heads": len(survey["results"]["heads"]), "steps": steps,
        "rank_kernel": survey.get("provenance", {}).get("rank_kernel"),
        "top5": survey["results"]["ranking"]["order"][:5],
        "peak_gpu_gb": torch.cuda.max_memory_allocated() / 1e9 if torch.cuda.is_available() else None,
    }
    save(report, out)
    written, t = timed(lambda: run_analysis(base, out / "build" / "artifacts", progress=False, log=lambda m: None))
    timings = json.loads((out / "build" / "artifacts" / "timings.json").read_text())
    report[f"analyze_{head.label}_exact"] = {"seconds": t, "steps": timings["seconds"],
                                             "files": [p.name for p in written]}
    save(report, out)
    print(json.dumps(report, indent=1, sort_keys=True))
    return 0


def save(report: dict, out: Path) -> None:
    """What is measured so far (a run cut short still leaves its first results)."""
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1, sort_keys=True))


def llama_checkpoint(folder: Path, vocab: int, d_model: int, n_layers: int, n_heads: int, n_kv: int,
                     d_mlp: int) -> Path:
    """A random Llama checkpoint of the given shape with GPT-2's real tokenizer, padded with added
    tokens to the vocabulary size (so every id decodes)."""
    import transformers

    gpt2_tokenizer_files(folder)
    tok = transformers.GPT2TokenizerFast.from_pretrained(str(folder))
    if vocab > len(tok):
        tok.add_tokens([f"<|pad{i}|>" for i in range(vocab - len(tok))])
    config = transformers.LlamaConfig(vocab_size=len(tok), hidden_size=d_model, intermediate_size=d_mlp,
                                      num_hidden_layers=n_layers, num_attention_heads=n_heads,
                                      num_key_value_heads=n_kv, head_dim=d_model // n_heads,
                                      max_position_embeddings=2048, tie_word_embeddings=True)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config)
    randomize_norms_and_biases(model, 0)
    model.save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return folder


SHAPES = {
    "gpt2-small": lambda f: make_gpt2_checkpoint(f, n_layer=12, n_head=12, n_embd=768, n_positions=1024),
    "tiny": lambda f: make_gpt2_checkpoint(f, n_layer=2, n_head=4, n_embd=64, n_positions=64),
    "llama-1b": lambda f: llama_checkpoint(f, 128_256, 2048, 16, 32, 8, 8192),
    "llama-tiny": lambda f: llama_checkpoint(f, 60_000, 64, 2, 4, 2, 128),
    "gemma3-270m": make_gemma3_270m_shaped_checkpoint,
    "gemma3-tiny": lambda f: make_gemma3_270m_shaped_checkpoint(f, vocab_size=60_000, num_hidden_layers=2,
                                                                 hidden_size=64, intermediate_size=128, head_dim=32),
}

if __name__ == "__main__":
    sys.exit(main())
