"""Prepared check for a machine with a CUDA device: the GPU code paths give the CPU's answers, and how
long the exact modes take there. Not a test (CI has no GPU); run by hand:

    python bench/gpu_check.py --out DIR

It builds a GPT-2-small-shaped random checkpoint (real GPT-2 tokenizer), loads it on the CPU and on
CUDA, and compares: W_EE, head 10.7's spectra, exact OV self-suppression and QK self-attention ranks and the
token explorer's lists collected in the same passes,
then times an exact-mode survey of all 144 heads on the GPU and a full ``run_analysis`` on the GPU.
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

from checkpoints import make_gpt2_checkpoint

from analysis import circuits, diagonal, explorer, spectra
from analysis.config import Config, HeadRef, ModelConfig, ProcessingConfig, SurveyConfig
from analysis.embeddings import effective_embedding
from analysis.models import load_model


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
    parser.add_argument("--small", action="store_true", help="a 2-layer, d_model 64 checkpoint (dry run)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dev = args.device
    report: dict = {"torch": torch.__version__, "cuda": torch.cuda.is_available()}
    if dev == "cuda" and not torch.cuda.is_available():
        print("no CUDA device", file=sys.stderr)
        return 2
    report["device_name"] = torch.cuda.get_device_name(0) if dev == "cuda" else dev
    tmp = Path(tempfile.mkdtemp())
    dims = dict(n_layer=2, n_head=4, n_embd=64, n_positions=64) if args.small else dict(
        n_layer=12, n_head=12, n_embd=768, n_positions=1024)
    ck, t = timed(lambda: make_gpt2_checkpoint(tmp / "gpt2s", **dims))
    report["checkpoint_seconds"] = t
    proc = ProcessingConfig()
    cpu = load_model(ModelConfig(name=str(ck), device="cpu"), proc)
    gpu = load_model(ModelConfig(name=str(ck), device=dev), proc)

    L_cpu, t_cpu = timed(lambda: effective_embedding(cpu, progress=False))
    effective_embedding(gpu, progress=False)  # warm-up
    L_gpu, t_gpu = timed(lambda: effective_embedding(gpu, progress=False))
    W_cpu, W_gpu = L_cpu.W_EE, L_gpu.W_EE
    report["w_ee"] = {"cpu_s": t_cpu, "gpu_s": t_gpu, "max_rel_err": rel_err(W_gpu, W_cpu)}

    head = HeadRef(1, 3) if args.small else HeadRef(10, 7)
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
    rc_cpu = circuits.RankCircuits(cpu, head.layer, W_cpu, "layer_norm")
    rc_gpu = circuits.RankCircuits(gpu, head.layer, W_gpu, "layer_norm")
    ranks, lists = {}, {}
    for name, desc in (("ov_self_suppression", False), ("qk_self_attention", True)):
        pick = (lambda rc: rc.ov(head.head)) if name.startswith("ov") else (lambda rc: rc.qk(head.head))
        cc, cg = pick(rc_cpu), pick(rc_gpu)
        vis_c = explorer.collectors(cc, cc)
        vis_g = explorer.collectors(cg, cg)
        keys = ("ov_low", "ov_high") if name.startswith("ov") else ("qk_keys", "qk_queries")
        (sc, rk_c), tc = timed(lambda: diagonal.rank_pass(cc, "exact", desc, visitors=[vis_c[k] for k in keys]))
        diagonal.rank_pass(cg, "sampled", desc, sample_size=4096)  # warm-up
        (sg, rk_g), tg = timed(lambda: diagonal.rank_pass(cg, "exact", desc, visitors=[vis_g[k] for k in keys]))
        diff = abs(rk_c - rk_g)
        ranks[name] = {
            "cpu_exact_s": tc, "gpu_exact_s": tg,
            "fraction_rank1_cpu": sc["fraction_rank1"], "fraction_rank1_gpu": sg["fraction_rank1"],
            "rows_with_equal_rank": float((diff == 0).mean()), "max_rank_difference": int(diff.max()),
            "median_rank_cpu": sc["median_rank"], "median_rank_gpu": sg["median_rank"],
        }
        for k in keys:
            a, b = vis_c[k].result(), vis_g[k].result()
            lists[k] = {"rows_identical": float((a == b).all(axis=1).mean()),
                        "first_identical": float((a[:, 0] == b[:, 0]).mean())}
    report[f"exact_ranks_head_{head.label}"] = ranks
    report[f"explorer_lists_head_{head.label}"] = lists
    del cpu, W_cpu

    from analysis.pipeline import run_analysis
    from analysis.survey import run_survey

    base = Config(model=ModelConfig(name=str(ck), device=dev), heads=(head,), output_dir=str(out / "build"))
    written, t = timed(lambda: run_survey(
        base.replace(survey=SurveyConfig(mode="exact", sample_size=2000, analyze_top=0)),
        out / "build" / "artifacts", progress=False, log=lambda m: None))
    survey = json.loads((out / "build" / "artifacts" / "survey.json").read_text())
    report["survey_exact"] = {
        "seconds": t, "n_heads": len(survey["results"]["heads"]),
        "top5": survey["results"]["ranking"]["order"][:5],
    }
    written, t = timed(lambda: run_analysis(base, out / "build" / "artifacts", progress=False, log=lambda m: None))
    timings = json.loads((out / "build" / "artifacts" / "timings.json").read_text())
    report[f"analyze_{head.label}_exact"] = {"seconds": t, "steps": timings["seconds"], "files": [p.name for p in written]}
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1, sort_keys=True))
    print(json.dumps(report, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
