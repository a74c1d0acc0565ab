"""The online path, through the command line, against a local hub on 127.0.0.1 (:mod:`tests.hub`):
a mirror in HF_ENDPOINT, the cache, offline runs, pinned branches and commits, repo ids with an
owner, and hub faults (500, 404, a truncated body, a slow hub), each followed by a run that recovers.

Nothing here reaches the real hub: every host name but 127.0.0.1/localhost fails to resolve (so
huggingface.co is unreachable), and HF_ENDPOINT points at the local hub. Each test gets its own
empty Hugging Face cache; HF_HUB_OFFLINE (set for the whole suite by conftest.py) is lifted inside
these tests only, in the environment and in ``huggingface_hub.constants``, which read it at import.
"""

from __future__ import annotations

import hashlib
import json
import socket
import time
from pathlib import Path

import huggingface_hub.constants as constants
import pytest

import headreport.report.render
from headreport.analysis.model import sources
from headreport.cli import main
from tests.families import make_family_checkpoint
from tests.helpers import FAST_ANALYSIS
from tests.hub import LocalHub

REPO = "tiny-org/tiny-gpt2"
OWNED = "openai-community/gpt2"  # also served as "gpt2", the repo the alias gpt2-small names

CONFIG = """
prompts = "off"
[model]
device = "cpu"
{revision}
""" + FAST_ANALYSIS


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """Two GPT-2-architecture checkpoints with the real tokenizer's first 4096 tokens, different weights."""
    root = tmp_path_factory.mktemp("hub_checkpoints")
    return {branch: make_family_checkpoint("gpt2", root / branch, seed=seed, vocab_size=4096)
            for branch, seed in (("main", 0), ("dev", 1))}


@pytest.fixture(scope="module")
def hub(checkpoints):
    """The local hub: REPO on branches main and dev; OWNED (alias gpt2) on main."""
    with LocalHub() as local:
        local.add_commit(REPO, "main", checkpoints["main"])
        local.add_commit(REPO, "dev", checkpoints["dev"])
        local.add_commit(OWNED, "main", checkpoints["main"])
        local.alias("gpt2", OWNED)
        yield local


@pytest.fixture
def no_internet(monkeypatch):
    """Only 127.0.0.1 / localhost resolve; returns the host names something tried to look up."""
    looked_up: list[str] = []
    real = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        name = host.decode() if isinstance(host, bytes) else str(host)
        looked_up.append(name)
        if name not in ("127.0.0.1", "localhost", "::1"):
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return looked_up


class Env:
    """One test's Hugging Face setup: an empty cache, HF_ENDPOINT at the local hub, online."""

    def __init__(self, tmp_path: Path, monkeypatch, hub: LocalHub, looked_up: list[str]) -> None:
        self.tmp, self.mp, self.hub, self.looked_up, self.constants = tmp_path, monkeypatch, hub, looked_up, constants
        self.cache = tmp_path / "hf_home" / "hub"
        for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN", "HF_HUB_DOWNLOAD_TIMEOUT",
                    "HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
            monkeypatch.delenv(var, raising=False)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
        monkeypatch.setenv("HF_HUB_CACHE", str(self.cache))
        monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
        monkeypatch.setattr(constants, "HF_HOME", str(tmp_path / "hf_home"))
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(self.cache))
        monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf_home" / "token"))
        monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "hf_home" / "stored_tokens"))
        monkeypatch.setattr(constants, "AGENT_HARNESSES_PATH", str(tmp_path / "hf_home" / ".agent_harnesses.json"))
        self.endpoint(hub.url)
        self.online()
        self.timeout(10)
        hub.fault = None
        hub.take_requests()

    def endpoint(self, url: str) -> None:
        """HF_ENDPOINT=url, as the client reads it at import (ENDPOINT and the resolve-URL template)."""
        self.mp.setenv("HF_ENDPOINT", url)
        self.mp.setattr(self.constants, "ENDPOINT", url)
        self.mp.setattr(self.constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}")

    def online(self) -> None:
        self.mp.delenv("HF_HUB_OFFLINE", raising=False)
        self.mp.setattr(self.constants, "HF_HUB_OFFLINE", False)

    def offline(self) -> None:
        self.mp.setenv("HF_HUB_OFFLINE", "1")
        self.mp.setattr(self.constants, "HF_HUB_OFFLINE", True)

    def timeout(self, seconds: int) -> None:
        self.mp.setenv("HF_HUB_DOWNLOAD_TIMEOUT", str(seconds))
        self.mp.setattr(self.constants, "HF_HUB_DOWNLOAD_TIMEOUT", seconds)
        self.mp.setattr(self.constants, "HF_HUB_ETAG_TIMEOUT", seconds)

    def config(self, revision: str | None = None) -> Path:
        path = self.tmp / "c.toml"
        path.write_text(CONFIG.format(revision=f'revision = "{revision}"' if revision else ""), encoding="utf-8")
        return path

    def repo_cache(self, repo: str) -> dict:
        """What the cache holds for ``repo``: refs (name → sha), snapshots (sha → files), leftovers."""
        root = self.cache / ("models--" + repo.replace("/", "--"))
        refs = {p.relative_to(root / "refs").as_posix(): p.read_text() for p in (root / "refs").rglob("*")
                if p.is_file()} if (root / "refs").is_dir() else {}
        snapshots = {p.name: sorted(f.name for f in p.iterdir()) for p in (root / "snapshots").iterdir()} \
            if (root / "snapshots").is_dir() else {}
        leftovers = sorted(p.name for p in root.rglob("*.incomplete")) if root.is_dir() else []
        return {"refs": refs, "snapshots": snapshots, "incomplete": leftovers}


@pytest.fixture
def env(tmp_path, monkeypatch, hub, no_internet) -> Env:
    return Env(tmp_path, monkeypatch, hub, no_internet)


@pytest.fixture
def no_render(monkeypatch):
    """``headreport build`` without the render engines: the staleness decision is what is tested."""
    def render(artifacts_dir, out, **kwargs):
        return {"site": str(Path(out) / "site"), "pdf": str(Path(out) / "pdf"), "up_to_date": True, "engine": "stub"}

    monkeypatch.setattr(headreport.report.render, "render", render)


def cli(capsys, command: str, config: Path, model: str, out: Path) -> tuple[int, str]:
    rc = main([command, "--config", str(config), "--model", model, "--head", "1.1", "--out", str(out),
               "--no-progress"])
    _, err = capsys.readouterr()
    return rc, err


def dead_endpoint() -> str:
    """A URL on 127.0.0.1 where nothing listens: connections are refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def provenance(out: Path) -> dict:
    return json.loads((out / "artifacts" / "model.json").read_text(encoding="utf-8"))["provenance"]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


FILES = ["config.json", "generation_config.json", "merges.txt", "model.safetensors", "tokenizer.json",
         "tokenizer_config.json", "vocab.json"]


def test_download_through_a_mirror_then_up_to_date_online_and_offline(env, hub, capsys, no_render, checkpoints):
    """HF_ENDPOINT names a reachable mirror, huggingface.co does not resolve: the mirror is asked,
    the snapshot cached; then `build` is up to date online (no request) and offline."""
    config, out = env.config(), env.tmp / "out"
    main_sha = hub.repos[REPO].refs["main"]
    rc, err = cli(capsys, "analyze", config, REPO, out)
    assert rc == 0, err
    requests = hub.take_requests()
    assert requests[0] == ("GET", f"/api/models/{REPO}/revision/main", 200)
    assert ("GET", f"/{REPO}/resolve/{main_sha}/model.safetensors", 200) in requests
    assert "huggingface.co" not in env.looked_up
    assert env.repo_cache(REPO) == {"refs": {"main": main_sha}, "snapshots": {main_sha: FILES}, "incomplete": []}
    p = provenance(out)
    assert (p["source"], p["repo_id"], p["revision"]) == ("hub", REPO, main_sha)
    assert p["weights_sha256"] == {"model.safetensors": sha256(checkpoints["main"] / "model.safetensors")}

    rc, err = cli(capsys, "build", config, REPO, out)
    assert rc == 0, err
    assert "artifacts are up to date" in err
    assert hub.take_requests() == []

    env.offline()
    rc, err = cli(capsys, "build", config, REPO, out)
    assert rc == 0, err
    assert "artifacts are up to date" in err
    rc, err = cli(capsys, "analyze", config, REPO, env.tmp / "out_offline")  # loads from the cache
    assert rc == 0, err
    assert provenance(env.tmp / "out_offline")["revision"] == main_sha
    assert hub.take_requests() == []


@pytest.mark.parametrize("pin", ["dev", "sha"])
def test_pinned_revision_online_then_up_to_date_online_and_offline(env, hub, capsys, no_render, checkpoints, pin):
    """model.revision (a branch, or a commit sha): only that revision is downloaded and analysed;
    the next build is up to date, with no request online and no failure offline."""
    dev_sha = hub.repos[REPO].refs["dev"]
    revision = dev_sha if pin == "sha" else "dev"
    config, out = env.config(revision), env.tmp / "out"
    rc, err = cli(capsys, "analyze", config, REPO, out)
    assert rc == 0, err
    requests = hub.take_requests()
    assert requests[0] == ("GET", f"/api/models/{REPO}/revision/{revision}", 200)
    assert all("/main" not in path and hub.repos[REPO].refs["main"] not in path for _, path, _ in requests)
    assert env.repo_cache(REPO) == {"refs": {"dev": dev_sha} if pin == "dev" else {},
                                    "snapshots": {dev_sha: FILES}, "incomplete": []}
    p = provenance(out)
    assert p["revision"] == dev_sha
    assert p["weights_sha256"] == {"model.safetensors": sha256(checkpoints["dev"] / "model.safetensors")}

    rc, err = cli(capsys, "build", config, REPO, out)  # online: the cached revision, nothing asked
    assert rc == 0, err
    assert "artifacts are up to date" in err
    assert hub.take_requests() == []
    env.endpoint(dead_endpoint())  # the network is down (HF_HUB_OFFLINE not set)
    rc, err = cli(capsys, "build", config, REPO, out)
    assert rc == 0, err
    assert "artifacts are up to date" in err
    env.offline()
    rc, err = cli(capsys, "build", config, REPO, out)
    assert rc == 0, err
    assert "artifacts are up to date" in err
    assert list(env.repo_cache(REPO)["snapshots"]) == [dev_sha]  # main never downloaded
    assert hub.take_requests() == []


@pytest.mark.parametrize("model, repo", [(OWNED, OWNED), ("gpt2-small", "gpt2")])
def test_repo_ids_with_an_owner_and_aliases(env, hub, capsys, model, repo):
    """`--model openai-community/gpt2` is a repo id; `gpt2-small` (report.toml's) is the alias of `gpt2`."""
    out = env.tmp / "out"
    rc, err = cli(capsys, "analyze", env.config(), model, out)
    assert rc == 0, err
    assert hub.take_requests()[0] == ("GET", f"/api/models/{repo}/revision/main", 200)
    sha = hub.repos[repo].refs["main"]
    assert env.repo_cache(repo)["snapshots"] == {sha: FILES}
    p = provenance(out)
    assert (p["requested_name"], p["repo_id"], p["revision"]) == (model, repo, sha)


@pytest.mark.parametrize("fault, key, needles", [
    ("500", "model.name", ["the hub answered 500", "retry later"]),
    ("404", "model.name", [f"has no model {REPO!r}", "404", "check the name"]),
    ("truncate", "model.name", ["cut short", "arrived with", "run again"]),
    ("slow", "model.name", ["did not answer within 1 s", "HF_HUB_DOWNLOAD_TIMEOUT=1", "HF_HUB_DOWNLOAD_TIMEOUT=60"]),
])
def test_hub_fault_has_its_own_message_and_the_next_run_recovers(env, hub, capsys, fault, key, needles):
    """Each fault: exit 2 fast, the cause in the first line and its own fix (no "connect to the
    internet": the hub was reached), nothing half-written in the cache; then a healthy run works."""
    config, out = env.config(), env.tmp / "out"
    env.timeout(1)
    hub.slow_seconds = 4
    hub.fault = fault
    t0 = time.monotonic()
    rc, err = cli(capsys, "analyze", config, REPO, out)
    elapsed = time.monotonic() - t0
    assert rc == 2, err
    assert "Traceback" not in err and err.count("headreport: error:") == 1
    assert err.startswith(f"headreport: error: {key}: could not download model {REPO!r} from {hub.url}"), err
    for needle in needles:
        assert needle in err, (needle, err)
    assert "connect to the internet" not in err
    assert elapsed < 5, elapsed  # no retry loop (a 500 or a time-out retried with back-off takes 20 s+)
    assert not (out / "artifacts" / "model.json").exists()
    cached = env.repo_cache(REPO)
    assert cached["incomplete"] == [] and cached["refs"] == {}
    assert all("model.safetensors" not in files for files in cached["snapshots"].values()), cached

    hub.fault = None
    env.timeout(10)
    hub.take_requests()
    rc, err = cli(capsys, "analyze", config, REPO, out)
    assert rc == 0, err
    main_sha = hub.repos[REPO].refs["main"]
    assert env.repo_cache(REPO) == {"refs": {"main": main_sha}, "snapshots": {main_sha: FILES}, "incomplete": []}
    assert provenance(out)["revision"] == main_sha


def test_a_dropped_connection_resumes_with_a_range_request(env, hub, capsys):
    """The weights' transfer breaks off halfway: the client asks for the rest (Range → 206) and the
    run succeeds, with the complete file in the cache. (The client resumes from what it has written,
    in chunks of DOWNLOAD_CHUNK_SIZE, 10 MiB: smaller chunks here, for a 2 MB file.)"""
    env.mp.setattr(env.constants, "DOWNLOAD_CHUNK_SIZE", 64 * 1024)
    hub.fault = "drop"
    out = env.tmp / "out"
    rc, err = cli(capsys, "analyze", env.config(), REPO, out)
    assert rc == 0, err
    main_sha = hub.repos[REPO].refs["main"]
    weights = [status for method, path, status in hub.take_requests()
               if method == "GET" and path.endswith("/model.safetensors")]
    assert weights == [200, 206]
    assert env.repo_cache(REPO) == {"refs": {"main": main_sha}, "snapshots": {main_sha: FILES}, "incomplete": []}
    blob = env.cache / f"models--{REPO.replace('/', '--')}" / "snapshots" / main_sha / "model.safetensors"
    assert provenance(out)["weights_sha256"] == {"model.safetensors": sha256(blob)}
    assert sha256(blob) == hashlib.sha256(hub.repos[REPO].commits[main_sha].files["model.safetensors"]).hexdigest()


def test_revision_that_does_not_exist_names_model_revision(env, hub, capsys):
    config, out = env.config("no-such-branch"), env.tmp / "out"
    rc, err = cli(capsys, "analyze", config, REPO, out)
    assert rc == 2, err
    assert err.startswith("headreport: error: model.revision: "), err
    assert f"{REPO!r} has no revision 'no-such-branch'" in err and "remove model.revision" in err
    assert "connect to the internet" not in err
    assert env.repo_cache(REPO)["refs"] == {}


def test_unreachable_hub_fails_fast_with_the_offline_advice(env, hub, capsys):
    """HF_ENDPOINT names a host that refuses connections: the offline message, under 2 s, and the
    probe went to that endpoint (not huggingface.co)."""
    dead = dead_endpoint()
    env.endpoint(dead)
    t0 = time.monotonic()
    rc, err = cli(capsys, "analyze", env.config(), REPO, env.tmp / "out")
    elapsed = time.monotonic() - t0
    assert rc == 2, err
    assert f"the hub at {dead} cannot be reached" in err and "connect to the internet" in err
    assert "HF_ENDPOINT" in err
    assert elapsed < 2, elapsed
    assert "huggingface.co" not in env.looked_up
    assert hub.take_requests() == []


def test_offline_without_the_revision_cached(env, hub, capsys):
    """HF_HUB_OFFLINE and a revision that is not cached: the offline message, no request."""
    env.offline()
    rc, err = cli(capsys, "analyze", env.config("dev"), REPO, env.tmp / "out")
    assert rc == 2, err
    assert "not in the local Hugging Face cache and HF_HUB_OFFLINE is set" in err and "revision 'dev'" in err
    assert "connect to the internet" in err
    assert hub.take_requests() == []


def test_a_proxy_means_no_direct_probe(monkeypatch):
    """Behind a proxy the direct probe says nothing: it is skipped, and the client is left to try."""
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: pytest.fail("probed despite a proxy"))
    assert sources.proxy_for("https://hub.example") == "http://proxy.invalid:3128"
    assert sources.unreachable_reason("https://hub.example") is None
    monkeypatch.setenv("NO_PROXY", "hub.example")
    assert sources.proxy_for("https://hub.example") is None
