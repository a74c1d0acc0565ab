#!/usr/bin/env python
"""``make bench``: speed and memory of headreport against the notebook's code and the machine's bound.

One run, on a GPT-2-small-shaped random checkpoint (12 layers × 12 heads, d_model 768, the real
50257-token tokenizer) built under ``OUT/bench/`` (reused when present). It measures, prints a
table and writes ``OUT/bench.json``:

* the bound: float32 GEMM (sgemm) GFLOP/s on a 4096² product, best of several, measured at the start
  and again at the end (a large gap between the two means the machine was busy: rerun);
* W_EE: the notebook's batched loop (``tests/notebook.py``) against
  ``analysis.embeddings.effective_embedding`` — seconds, ratio, GFLOP/s; both must agree (allclose);
* head 10.7's full and effective QK spectra (factored products + ``FactoredMatrix`` SVD) and the
  W_QK spectra of all 144 heads;
* OV self-suppression of head 10.7, exact and sampled: seconds, GFLOP/s of the
  d_vocab × d_head × d_vocab product, the GEMM alone against the whole pass, and the counting pass's
  achieved GB/s (it reads each float32 score once);
* ``headreport analyze --head 10.7`` (OV exact) in a subprocess: wall time, its step breakdown
  (``timings.json``) and its peak RSS (``wait4`` rusage of the child);
* the all-heads survey and the HTML + PDF render, when those modules exist.

FLOPs are counted analytically (a multiply-add is 2 FLOPs): see ``tests/notebook.py`` for W_EE; a
product of an m×k and a k×n matrix is 2·m·k·n. "Achieved" = FLOPs / wall seconds of the whole call.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # tests/checkpoints.py builds the random checkpoint
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the headreport CLI does (headreport/cli.py)

import torch

HEAD = "10.7"
GOAL_PRODUCT_FACTOR = 1.3  # every vocabulary-sized product: achieved >= bound / 1.3
GOAL_RSS_GB = 3.0
GOAL_RENDER_S = 20.0
GOAL_ANALYZE_S = 120.0  # issue 2: `headreport analyze --head 10.7` (OV exact) under 2 minutes
CHECKPOINT_SHAPE = dict(n_layer=12, n_head=12, n_embd=768, n_positions=1024)


# --- small helpers ---------------------------------------------------------------------------------

def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def timed(fn: Callable[[], Any], reps: int = 1) -> tuple[float, list[float], Any]:
    """(best seconds, all seconds, last result) of ``reps`` calls."""
    times, result = [], None
    for _ in range(reps):
        result = None  # free the previous result before the next call
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return min(times), times, result


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def gflops(flops: float, seconds: float) -> float:
    return flops / seconds / 1e9 if seconds > 0 else float("nan")


def run_child(cmd: list[str], log_path: Path) -> dict[str, Any]:
    """Run ``cmd``; wall seconds, exit code and the child's own peak RSS (``wait4``)."""
    t0 = time.perf_counter()
    with log_path.open("w") as fh:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, env=os.environ.copy())
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {
        "command": " ".join(cmd), "exit_code": proc.returncode, "wall_s": wall,
        "peak_rss_gb": usage.ru_maxrss * 1024 / 1e9,  # Linux: ru_maxrss in KiB
        "user_s": usage.ru_utime, "sys_s": usage.ru_stime, "log": str(log_path),
    }


def optional_module(name: str, attr: str) -> tuple[Any, str]:
    """(the callable ``name.attr``, "") if importable, else (None, why not)."""
    try:
        module = importlib.import_module(name)
    except Exception as exc:  # missing, half-written, or failing at import
        return None, f"not available yet ({type(exc).__name__}: {exc})"
    fn = getattr(module, attr, None)
    if not callable(fn):
        return None, f"not available yet ({name}.{attr} missing)"
    return fn, ""


# --- the measurements ------------------------------------------------------------------------------

def checkpoint(folder: Path) -> dict[str, Any]:
    needed = ("config.json", "model.safetensors", "vocab.json", "merges.txt")
    if all((folder / n).is_file() for n in needed):
        return {"path": str(folder), "built": False, "seconds": 0.0}
    from checkpoints import make_gpt2_checkpoint

    log(f"building the GPT-2-small-shaped random checkpoint in {folder}")
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    t0 = time.perf_counter()
    make_gpt2_checkpoint(tmp, **CHECKPOINT_SHAPE)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return {"path": str(folder), "built": True, "seconds": time.perf_counter() - t0}


def sgemm_bound(n: int = 4096, reps: int = 5) -> dict[str, Any]:
    a, b = torch.randn(n, n), torch.randn(n, n)
    c = torch.empty(n, n)
    torch.mm(a, b, out=c)  # warm-up
    best, times, _ = timed(lambda: torch.mm(a, b, out=c), reps)
    flops = 2 * n**3
    return {"n": n, "reps": reps, "best_s": best, "gflops": gflops(flops, best),
            "gflops_all": [gflops(flops, t) for t in times]}


def memory_bandwidth(n_bytes: int = 1 << 30, reps: int = 3) -> dict[str, Any]:
    """Copy bandwidth (read + write) of a 1 GiB float32 buffer: the bound of a memory-bound pass."""
    src = torch.ones(n_bytes // 4)
    dst = torch.empty_like(src)
    dst.copy_(src)
    best, _, _ = timed(lambda: dst.copy_(src), reps)
    return {"bytes": n_bytes, "copy_gbs": 2 * n_bytes / best / 1e9}


def bench_w_ee(model, bound: float, reps: int) -> dict[str, Any]:
    from analysis.embeddings import effective_embedding
    from tests.notebook import notebook_effective_embedding, notebook_flops, project_flops

    cfg = model.bridge.cfg
    dims = dict(d_vocab=model.d_vocab, d_model=model.d_model, n_heads=model.n_heads, d_head=model.d_head, d_mlp=cfg.d_mlp)
    from analysis.config import EffectiveEmbeddingConfig

    batch = EffectiveEmbeddingConfig().batch_size
    t_nb, t_pr = [], []
    nb = pr = None
    for _ in range(reps):  # interleaved, so that a noisy moment hurts both
        nb = None
        t0 = time.perf_counter()
        nb = notebook_effective_embedding(model, batch_size=1000)
        t_nb.append(time.perf_counter() - t0)
        pr = None
        t0 = time.perf_counter()
        pr = effective_embedding(model, "mlp_after_attention", batch_size=batch, progress=False).W_EE
        t_pr.append(time.perf_counter() - t0)
    gemm_s = w_ee_gemms_alone(model, batch, reps)
    diff = (nb - pr).abs().max().item()
    scale = pr.abs().max().item()
    same = bool(torch.allclose(nb, pr, rtol=1e-4, atol=1e-5 * max(scale, 1.0)))
    f_nb, f_pr = notebook_flops(**dims), project_flops(**dims)
    out = {
        "dims": dims, "config_batch_size": batch, "reps": reps,
        "notebook": {"batch_size": 1000, "best_s": min(t_nb), "all_s": t_nb, "flops": f_nb,
                     "gflops": gflops(f_nb, min(t_nb))},
        "project": {"batch_size": batch, "best_s": min(t_pr), "all_s": t_pr, "flops": f_pr,
                    "gflops": gflops(f_pr, min(t_pr))},
        "speedup": min(t_nb) / min(t_pr),
        "allclose": same, "max_abs_diff": diff, "max_abs_value": scale,
        "flop_formulas": {
            "notebook": "V·(4·d·H·d_head + 4·d·d_mlp)  (einsum contracted pairwise, then the MLP)",
            "project": "2·H·d·d_head·d + V·(2·d² + 4·d·d_mlp)  (Σ_h W_V W_O once, then per token)",
        },
    }
    out["project"]["fraction_of_bound"] = out["project"]["gflops"] / bound
    if gemm_s is not None:
        out["project"].update({"gemms_alone_s": gemm_s, "gemms_alone_gflops": gflops(f_pr, gemm_s),
                               "elementwise_s": max(min(t_pr) - gemm_s, 0.0)})
    return out, pr


def w_ee_gemms_alone(model, batch: int, reps: int) -> float | None:
    """Seconds of only the GEMMs of ``effective_embedding`` (same shapes and batch: x·ΣW_OV, the MLP's
    two projections), on random inputs; the rest of its time is LayerNorm, GELU and copies."""
    W_in, W_out = model.weight("W_in"), model.weight("W_out")
    if W_in is None or W_out is None or W_in.dim() != 3:
        return None
    from analysis.embeddings import layer0_attention_ov

    W_OV, _ = layer0_attention_ov(model)
    W_in, W_out = W_in[0], W_out[0]
    V, d, m = model.d_vocab, model.d_model, W_in.shape[1]
    x = torch.randn(batch, d)
    h, y, o = torch.empty(batch, d), torch.empty(batch, m), torch.empty(batch, d)

    def run() -> None:
        for start in range(0, V, batch):
            n = min(batch, V - start)
            torch.mm(x[:n], W_OV, out=h[:n])
            torch.mm(h[:n], W_in, out=y[:n])
            torch.mm(y[:n], W_out, out=o[:n])

    best, _, _ = timed(run, reps)
    return best


def bench_spectra(model, W_EE, reps: int) -> dict[str, Any]:
    from analysis import circuits, spectra
    from analysis.config import HeadRef

    head = HeadRef.parse(HEAD)
    w = circuits.head_weights(model, head)
    W_E, W_U = model.weight("W_E"), model.weight("W_U")
    V, d, dh = model.d_vocab, model.d_model, model.d_head
    product_flops = 2 * (2 * V * d * dh)  # two d_vocab × d_model × d_head factor products
    out: dict[str, Any] = {"head": HEAD}
    for name, make in (("full_qk", lambda: circuits.full_qk_circuit(w, W_E)),
                       ("effective_qk", lambda: circuits.effective_qk_circuit(w, W_U, W_EE))):
        t_prod, _, _ = timed(make, reps)
        t_svd, _, _ = timed(lambda: spectra.singular_spectrum(make()), reps)  # products + SVD
        out[name] = {"products_s": t_prod, "products_flops": product_flops,
                     "products_gflops": gflops(product_flops, t_prod),
                     "total_s": t_svd, "svd_s": max(t_svd - t_prod, 0.0)}
    heads = [HeadRef(layer, h) for layer in range(model.n_layers) for h in range(model.n_heads)]

    def all_w_qk():
        return [spectra.singular_spectrum(circuits.qk_circuit(circuits.head_weights(model, hr))) for hr in heads]

    t_all, _, res = timed(all_w_qk, reps)
    out["all_heads_w_qk"] = {"n_heads": len(res), "seconds": t_all}
    return out


def bench_ov(model, W_EE, reps: int, mem_gbs: float) -> dict[str, Any]:
    from analysis import circuits, diagonal
    from analysis.config import AnalysisConfig, HeadRef

    w = circuits.head_weights(model, HeadRef.parse(HEAD))
    fm = circuits.effective_ov_circuit(w, W_EE, model.weight("W_U"))
    V, dh = model.d_vocab, model.d_head
    a = AnalysisConfig()
    out: dict[str, Any] = {"head": HEAD, "sample_size": a.ov_sample_size, "seed": a.seed}
    gemm_alone = getattr(diagonal, "_diagonal_ranks_cpu", None)
    for mode in ("exact", "sampled"):
        rows = V if mode == "exact" else min(a.ov_sample_size, V)
        flops = 2 * rows * dh * V
        best, times, summary = timed(
            lambda: diagonal.ov_self_suppression(fm, mode, a.ov_sample_size, a.seed, progress=False),
            reps if mode == "exact" else 3)
        entry = {"rows": rows, "best_s": best, "all_s": times, "flops": flops, "gflops": gflops(flops, best),
                 "fraction_rank1": summary["fraction_rank1"], "median_rank": summary["median_rank"]}
        if gemm_alone is not None and fm.A.device.type == "cpu":
            idx = (torch.arange(V) if mode == "exact"
                   else torch.from_numpy(diagonal.sample_rows(V, a.ov_sample_size, a.seed)))
            bs = getattr(diagonal, "CPU_BATCH_ROWS", 1024)
            g, _, _ = timed(lambda: gemm_alone(fm.A, fm.B, idx, False, bs, count=False), reps if mode == "exact" else 3)
            count_s = max(best - g, 1e-9)
            entry.update({"gemm_alone_s": g, "gemm_alone_gflops": gflops(flops, g), "counting_s": best - g,
                          "counting_bytes": rows * V * 4,
                          "counting_gbs": rows * V * 4 / count_s / 1e9,
                          "counting_fraction_of_copy_bw": rows * V * 4 / count_s / 1e9 / mem_gbs})
        out[mode] = entry
    return out


def bench_analyze(ckpt: Path, config_path: Path, out_dir: Path) -> dict[str, Any]:
    shutil.rmtree(out_dir, ignore_errors=True)
    cmd = [sys.executable, "-m", "analysis", "analyze", "--config", str(config_path), "--model", str(ckpt),
           "--head", HEAD, "--out", str(out_dir), "--no-progress"]
    res = run_child(cmd, out_dir.parent / (out_dir.name + ".log"))
    timings = out_dir / "artifacts" / "timings.json"
    if res["exit_code"] == 0 and timings.is_file():
        res["steps"] = json.loads(timings.read_text())["seconds"]
    return res


def bench_survey(config_path: Path, out_dir: Path) -> dict[str, Any]:
    fn, why = optional_module("analysis.survey", "run_survey")
    if fn is None:
        return {"available": False, "why": why}
    # run it in its own process (own RSS, own wall time), through the same function the CLI calls
    code = ("import sys; from pathlib import Path; from analysis.config import load_config; "
            "from analysis.survey import run_survey; "
            "run_survey(load_config(sys.argv[1]), Path(sys.argv[2]), progress=False, log=lambda m: print(m))")
    res = run_child([sys.executable, "-c", code, str(config_path), str(out_dir / "artifacts")],
                    out_dir.parent / "survey.log")
    res["available"] = True
    timings = out_dir / "artifacts" / "timings.json"
    if res["exit_code"] == 0 and timings.is_file():
        res["steps"] = {k: v for k, v in json.loads(timings.read_text())["seconds"].items() if k.startswith("survey/")}
    return res


def bench_render(artifacts: Path, out_dir: Path) -> dict[str, Any]:
    fn, why = optional_module("report.render", "render")
    if fn is None:
        return {"available": False, "why": why}
    t0 = time.perf_counter()
    try:
        manifest = fn(artifacts, out_dir, engine="auto")
    except Exception as exc:
        return {"available": True, "ok": False, "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(), "seconds": time.perf_counter() - t0}
    wall = time.perf_counter() - t0
    manifest = manifest if isinstance(manifest, dict) else {}
    return {"available": True, "ok": True, "seconds": wall, "engine": manifest.get("engine"),
            "steps": manifest.get("seconds"), "pdf": manifest.get("pdf"), "site": manifest.get("site")}


# --- the table ----------------------------------------------------------------------------------

def fmt(x: Any, unit: str = "", nd: int = 2) -> str:
    if x is None:
        return "—"
    if isinstance(x, float):
        return f"{x:.{nd}f}{unit}"
    return f"{x}{unit}"


def table(r: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    rows: list[tuple[str, str, str]] = []
    bound = r["bound_gflops"]
    add = lambda a, b, c="": rows.append((a, b, c))
    m = r["machine"]
    add("machine", f"{m['cpu']}, {m['torch_threads']} torch threads", f"torch {m['torch']}; load avg {m['load_start']} → {m['load_end']}")
    s0, s1 = r["sgemm_start"], r["sgemm_end"]
    add("sgemm 4096² (bound)", f"{bound:.0f} GFLOP/s", f"start {s0['gflops']:.0f}, end {s1['gflops']:.0f} (best of {s0['reps']})")
    add("memory copy bandwidth", f"{r['memory']['copy_gbs']:.1f} GB/s", "read+write of 1 GiB")
    add("checkpoint", "built" if r["checkpoint"]["built"] else "cached", f"{r['checkpoint']['seconds']:.1f} s")
    add("model load (in-process)", f"{r['load_model_s']:.2f} s", "boot + weight processing")
    w = r.get("w_ee")
    if w:
        add("W_EE notebook loop (batch 1000)", f"{w['notebook']['best_s']:.2f} s",
            f"{w['notebook']['gflops']:.0f} GFLOP/s = {w['notebook']['gflops'] / bound:.0%} of bound")
        add(f"W_EE effective_embedding (batch {w['project']['batch_size']})", f"{w['project']['best_s']:.2f} s",
            f"{w['project']['gflops']:.0f} GFLOP/s = {w['project']['fraction_of_bound']:.0%} of bound; "
            f"{w['speedup']:.2f}× the notebook; allclose={w['allclose']} (max |Δ| {w['max_abs_diff']:.1e})")
        if "gemms_alone_s" in w["project"]:
            add("  of which its GEMMs alone", f"{w['project']['gemms_alone_s']:.2f} s",
                f"{w['project']['gemms_alone_gflops']:.0f} GFLOP/s; the other "
                f"{w['project']['elementwise_s']:.2f} s: LayerNorm, GELU (the model's module: 8 elementwise passes), copies")
    sp = r.get("spectra")
    if sp:
        for k in ("full_qk", "effective_qk"):
            e = sp[k]
            add(f"{k} spectrum, head {sp['head']}", f"{e['total_s']:.3f} s",
                f"factor products {e['products_s']:.3f} s ({e['products_gflops']:.0f} GFLOP/s), SVD {e['svd_s']:.3f} s")
        add(f"W_QK spectra, all {sp['all_heads_w_qk']['n_heads']} heads", f"{sp['all_heads_w_qk']['seconds']:.2f} s", "")
    ov = r.get("ov")
    if ov:
        for mode in ("exact", "sampled"):
            e = ov[mode]
            detail = f"{e['rows']} rows; {e['gflops']:.0f} GFLOP/s overall"
            if "gemm_alone_s" in e:
                detail += (f"; GEMM alone {e['gemm_alone_s']:.2f} s ({e['gemm_alone_gflops']:.0f} GFLOP/s), "
                           f"counting {e['counting_s']:.2f} s ({e['counting_gbs']:.1f} GB/s)")
            add(f"OV self-suppression {mode}, head {ov['head']}", f"{e['best_s']:.2f} s", detail)
    an = r.get("analyze")
    if an:
        steps = an.get("steps") or {}
        detail = ", ".join(f"{k} {v:.1f}" for k, v in sorted(steps.items(), key=lambda kv: -kv[1]))
        add(f"headreport analyze --head {HEAD} (OV exact)", f"{an['wall_s']:.1f} s",
            f"exit {an['exit_code']}; steps (s): {detail}")
        add("peak RSS of the analysis process", f"{an['peak_rss_gb']:.2f} GB", "wait4() rusage of the child")
    sv = r.get("survey")
    if sv is not None:
        if not sv.get("available"):
            add("survey (all heads)", "not available yet", sv.get("why", ""))
        else:
            steps = sv.get("steps") or {}
            add("survey (all heads)", f"{sv['wall_s']:.1f} s",
                f"exit {sv['exit_code']}; peak RSS {sv['peak_rss_gb']:.2f} GB; "
                + ", ".join(f"{k.split('/', 1)[-1]} {v:.1f}" for k, v in steps.items()))
    rd = r.get("render")
    if rd is not None:
        if not rd.get("available"):
            add("render HTML + PDF", "not available yet", rd.get("why", ""))
        elif not rd.get("ok"):
            add("render HTML + PDF", "FAILED", rd.get("error", ""))
        else:
            steps = rd.get("steps") or {}
            add("render HTML + PDF", f"{rd['seconds']:.1f} s",
                f"engine {rd.get('engine')}; " + ", ".join(f"{k} {v:.1f}" for k, v in steps.items() if isinstance(v, (int, float))))

    # goals
    goals: list[dict[str, Any]] = []

    def goal(name: str, measured: str, target: str, ok: bool | None, ratio: float | None) -> None:
        goals.append({"goal": name, "measured": measured, "target": target,
                      "pass": ok, "ratio": ratio})

    if w:
        goal("W_EE at least as fast as the notebook loop", f"{w['speedup']:.2f}× faster", "≥ 1.00×",
             w["speedup"] >= 1.0 and w["allclose"], w["speedup"])
    need = bound / GOAL_PRODUCT_FACTOR
    products = []  # (name, GFLOP/s, counts toward the goal)
    if w:
        products.append(("W_EE, whole call (incl. LN/GELU passes)", w["project"]["gflops"], True))
        if "gemms_alone_gflops" in w["project"]:
            products.append(("W_EE, its GEMMs alone", w["project"]["gemms_alone_gflops"], True))
    if sp:
        products += [(f"{k} factor products (V×d×d_head)", sp[k]["products_gflops"], True)
                     for k in ("full_qk", "effective_qk")]
    if ov:
        if "gemm_alone_gflops" in ov["exact"]:
            products.append(("OV exact: V×d_head×V GEMM", ov["exact"]["gemm_alone_gflops"], True))
            products.append(("OV exact: GEMM + counting pass (info)", ov["exact"]["gflops"], False))
        else:
            products.append(("OV exact: V×d_head×V GEMM + counting", ov["exact"]["gflops"], True))
    for name, g, counts in products:
        goal(f"{name} within {GOAL_PRODUCT_FACTOR}× of sgemm", f"{g:.0f} GFLOP/s (bound/{bound / g:.2f})",
             f"≥ {need:.0f} GFLOP/s", (g >= need) if counts else None, bound / g)
    if an:
        goal("peak RSS of the analysis (GPT-2 small)", f"{an['peak_rss_gb']:.2f} GB", f"< {GOAL_RSS_GB} GB",
             an["peak_rss_gb"] < GOAL_RSS_GB, an["peak_rss_gb"] / GOAL_RSS_GB)
        goal("headreport analyze --head 10.7, OV exact (issue 2)", f"{an['wall_s']:.1f} s", f"< {GOAL_ANALYZE_S:.0f} s",
             an["exit_code"] == 0 and an["wall_s"] < GOAL_ANALYZE_S, an["wall_s"] / GOAL_ANALYZE_S)
    if rd is not None and rd.get("available"):
        sec = rd.get("seconds")
        goal("render HTML + PDF", f"{sec:.1f} s" if rd.get("ok") else "failed", f"< {GOAL_RENDER_S:.0f} s",
             bool(rd.get("ok")) and sec < GOAL_RENDER_S, sec / GOAL_RENDER_S if rd.get("ok") else None)
    else:
        goal("render HTML + PDF", "not available yet", f"< {GOAL_RENDER_S:.0f} s", None, None)

    w1 = max(len(a) for a, _, _ in rows)
    w2 = max(len(b) for _, b, _ in rows)
    lines = [f"{'measurement':<{w1}}  {'value':>{w2}}  detail", "-" * (w1 + w2 + 60)]
    lines += [f"{a:<{w1}}  {b:>{w2}}  {c}" for a, b, c in rows]
    g1 = max(len(g["goal"]) for g in goals)
    g2 = max(len(g["measured"]) for g in goals)
    lines += ["", f"{'goal':<{g1}}  {'measured':<{g2}}  {'target':<16}  result", "-" * (g1 + g2 + 34)]
    for g in goals:
        res = ("info" if g["ratio"] is not None else "n/a") if g["pass"] is None else ("PASS" if g["pass"] else "FAIL")
        lines.append(f"{g['goal']:<{g1}}  {g['measured']:<{g2}}  {g['target']:<16}  {res}")
    return "\n".join(lines), goals


# --- main ---------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="build", help="output folder (default: build): OUT/bench.json, OUT/bench/…")
    p.add_argument("--reps", type=int, default=2, help="repeats of the in-process timings (best-of; default 2)")
    args = p.parse_args(argv)
    out = (ROOT / args.out) if not Path(args.out).is_absolute() else Path(args.out)
    work = out / "bench"
    work.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()

    from analysis.config import Config, HeadRef, config_to_toml

    r: dict[str, Any] = {"machine": {
        "cpu": cpu_model(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__, "python": platform.python_version(), "load_start": load_average(),
    }}
    log("checkpoint")
    ckpt = work / "gpt2-small-random"
    r["checkpoint"] = checkpoint(ckpt)

    # the run's config: the defaults (the notebook's run) on the random checkpoint, OV exact, CPU
    base = Config()
    changes: dict[str, Any] = dict(
        heads=(HeadRef.parse(HEAD),), output_dir=str(work / "analyze"),
        model=dataclasses.replace(base.model, name=str(ckpt), device="cpu"),
        analysis=dataclasses.replace(base.analysis, ov_mode="exact"),
    )
    if hasattr(base, "survey") and hasattr(base.survey, "analyze_top"):
        changes["survey"] = dataclasses.replace(base.survey, analyze_top=0)
    config = base.replace(**changes)
    config_path = work / "bench.toml"
    config_path.write_text(config_to_toml(config.to_dict()), encoding="utf-8")

    log("sgemm bound")
    r["sgemm_start"] = sgemm_bound()
    r["memory"] = memory_bandwidth()

    log(f"headreport analyze --head {HEAD} (subprocess)")
    r["analyze"] = bench_analyze(ckpt, config_path, work / "analyze")
    if r["analyze"]["exit_code"] != 0:
        log(f"analyze failed: see {r['analyze']['log']}")

    log("survey (subprocess)")
    r["survey"] = bench_survey(config_path, work / "analyze")

    log("render")
    if r["analyze"]["exit_code"] == 0:
        r["render"] = bench_render(work / "analyze" / "artifacts", work / "report")
    else:
        r["render"] = {"available": True, "ok": False, "error": "no artifacts (analyze failed)"}

    log("in-process: model load, W_EE, spectra, OV")
    from analysis.models import load_model

    t0 = time.perf_counter()
    model = load_model(config.model, config.processing)
    r["load_model_s"] = time.perf_counter() - t0
    bound_now = r["sgemm_start"]["gflops"]
    r["w_ee"], W_EE = bench_w_ee(model, bound_now, args.reps)
    log("spectra")
    r["spectra"] = bench_spectra(model, W_EE, max(args.reps, 3))
    log("OV self-suppression")
    r["ov"] = bench_ov(model, W_EE, args.reps, r["memory"]["copy_gbs"])
    del W_EE, model

    r["sgemm_end"] = sgemm_bound()
    r["bound_gflops"] = max(r["sgemm_start"]["gflops"], r["sgemm_end"]["gflops"])
    if r.get("w_ee"):
        r["w_ee"]["project"]["fraction_of_bound"] = r["w_ee"]["project"]["gflops"] / r["bound_gflops"]
    r["machine"]["load_end"] = load_average()
    r["total_s"] = time.perf_counter() - t_start
    r["peak_rss_bench_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9

    text, goals = table(r)
    r["goals"] = goals
    r["table"] = text
    gap = abs(r["sgemm_start"]["gflops"] - r["sgemm_end"]["gflops"]) / r["bound_gflops"]
    if gap > 0.15:
        r["warning"] = (f"sgemm moved by {gap:.0%} between start and end: the machine was busy, "
                        "timings are noisy (rerun when it is quiet)")
    (out / "bench.json").write_text(json.dumps(r, indent=1, sort_keys=True, default=str) + "\n", encoding="utf-8")
    print(text)
    if "warning" in r:
        print(f"\nWARNING: {r['warning']}")
    print(f"\nbench total {r['total_s']:.0f} s; results in {out / 'bench.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
