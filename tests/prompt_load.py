"""A prompts artifact at the documented maximum (``analysis.prompt_files``: 200 prompts of 256
tokens), synthesised from a real artifact set: ``scale_prompts(artifacts_dir)`` rewrites its
``prompts.json`` in place, for every head the set analyses, and reseals the manifest.

No model runs: each prompt's tokens are drawn from the tokens of the real prompts, with every
:data:`tests.report_fixtures.HOSTILE_TOKENS` string mixed in; each head's attention rows are random
softmaxes (a few strong sources, a long tail) stored through the analysis' own encoding
(:func:`analysis.prompts.encoded_pattern`), the final position's effects random. The document is
schema-valid and passes ``load_artifacts``' checks, like one the analysis writes.

:func:`measured_render` renders an artifact set in a child process and measures it: wall time,
the peak of the whole process tree's summed RSS (the render runs figure exports in worker processes
beside itself) and the largest single process's high-water mark, sampled from /proc.

``python -m tests.prompt_load ARTIFACTS [N_PROMPTS] [N_TOKENS]`` scales a set from a shell."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch

from headreport.analysis.artifacts import dumps
from headreport.analysis.inputs.prompt_files import MAX_PROMPT_TOKENS, MAX_PROMPTS
from headreport.analysis.prompts import encoded_pattern, largest_source, rounded, summary, weight
from tests.report_fixtures import HOSTILE_TOKENS, reseal


def synthetic_pattern(n: int, gen: torch.Generator) -> torch.Tensor:
    """A causal attention pattern [n, n]: row q a softmax over positions 0..q of random scores, a few
    of them large (as a head that attends to a handful of tokens)."""
    scores = torch.randn(n, n, generator=gen, dtype=torch.float64) * 2.0
    strong = torch.rand(n, n, generator=gen, dtype=torch.float64) < 0.03
    scores = scores + strong * 8.0
    mask = torch.ones(n, n, dtype=torch.bool).tril()
    return torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)


def scale_prompts(artifacts: Path, n_prompts: int = MAX_PROMPTS, n_tokens: int = MAX_PROMPT_TOKENS,
                  seed: int = 0) -> dict[str, Any]:
    """Rewrite ``artifacts/prompts.json`` as ``n_prompts`` prompts of ``n_tokens`` tokens each (every
    head it holds), reseal the manifest, and return the new document."""
    path = artifacts / "prompts.json"
    doc = json.loads(path.read_text(encoding="utf-8"))
    r = doc["results"]
    pool = [t for p in r["prompts"] for t in p["tokens"][1:]]
    first = r["prompts"][0]["tokens"][0]
    bos = r["prompts"][0]["bos"]
    hostile = [{"id": 10_000 + i, "token": text} for i, text in enumerate(HOSTILE_TOKENS)]
    gen = torch.Generator().manual_seed(seed)
    prompts = []
    for i in range(n_prompts):
        picks = torch.randint(len(pool), (n_tokens - 1,), generator=gen).tolist()
        tokens = [first] + [pool[k] for k in picks]
        for j, tok in enumerate(hostile):  # every hostile string in every prompt, at a varying place
            tokens[1 + (7 * j + i) % (n_tokens - 1)] = tok
        text = "".join(t["token"] for t in tokens[1 if bos else 0:])
        prompts.append({"text": f"Prompt {i + 1}: {text}"[:100_000], "bos": bos, "tokens": tokens})
    heads = {}
    for label in sorted(r["heads"]):
        records = []
        for p in prompts:
            pattern = synthetic_pattern(n_tokens, gen)
            q = n_tokens - 1
            effects = torch.randn(n_tokens, generator=gen, dtype=torch.float64) * 5
            sources = [{"pos": s, "weight": weight(pattern[q, s]), "effect": rounded(float(effects[s])),
                        "via_source": rounded(float(pattern[q, s] * effects[s]))} for s in range(n_tokens)]
            top = dict(p["tokens"][int(torch.randint(n_tokens, (1,), generator=gen))])
            top["effect"] = rounded(float(torch.randn(1, generator=gen)) * 10)
            rec = {"pattern": encoded_pattern(pattern), "sources": sources, "top_prediction": top}
            rec["largest"] = largest_source(sources, p["bos"])
            records.append(rec)
        heads[label] = {"records": records, "summary": summary(records, [p["bos"] for p in prompts])}
    r.update(prompts=prompts, heads=heads)
    path.write_text(dumps(doc), encoding="utf-8")
    reseal(artifacts)
    return doc


ROOT = Path(__file__).resolve().parents[1]
RENDER = "import sys; from headreport.report.render import render; render(sys.argv[1], sys.argv[2], engine='pandoc')"


def _tree_memory(root: int) -> tuple[int, int]:
    """(the summed RSS of process ``root`` and all its descendants, the largest ``VmHWM`` among
    them), in bytes, from /proc (a process that ends between two reads counts as 0)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(entry))
    total, largest, todo = 0, 0, [root]
    while todo:
        pid = todo.pop()
        try:
            status = Path(f"/proc/{pid}/status").read_text().splitlines()
        except OSError:
            status = []
        for line in status:
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
            elif line.startswith("VmHWM:"):
                largest = max(largest, int(line.split()[1]) * 1024)
        todo += children.get(pid, [])
    return total, largest


def measured_render(artifacts: Path, out: Path, timeout: float = 600) -> dict[str, Any]:
    """``render(artifacts, out, engine="pandoc")`` in a child process: ``exit_code``, ``wall_s``,
    ``tree_peak_gb`` (the RSS of the child and all its descendants together, at its largest),
    ``peak_rss_gb`` (the largest high-water mark of any one of them) and the last lines of its
    output (``log``). Sampled from /proc every 0.05 s: ``ru_maxrss`` of a child (``wait4``,
    ``RUSAGE_CHILDREN``) would count the parent's memory that the child held between fork and exec,
    which in a test session is gigabytes."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": path}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", RENDER, str(artifacts), str(out)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    peak = {"tree": 0, "largest": 0}
    done = threading.Event()

    def sample() -> None:
        while True:
            tree, largest = _tree_memory(proc.pid)
            peak["tree"], peak["largest"] = max(peak["tree"], tree), max(peak["largest"], largest)
            if done.wait(0.05):
                return

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        log, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        log, _ = proc.communicate()
    wall = time.perf_counter() - t0
    done.set()
    sampler.join()
    return {"exit_code": proc.returncode, "wall_s": wall, "tree_peak_gb": peak["tree"] / 1e9,
            "peak_rss_gb": peak["largest"] / 1e9, "log": log.decode("utf-8", "replace")[-4000:]}


if __name__ == "__main__":
    args = sys.argv[1:]
    scale_prompts(Path(args[0]), *(int(a) for a in args[1:3]))
