"""``make publish``: the built site becomes a commit on gh-pages of a (local bare) remote."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from headreport.report.publish import PublishError, has_trailer, publish


def _git(*args, cwd=None):
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture()
def bare_remote(tmp_path) -> Path:
    remote = tmp_path / "remote.git"
    _git("init", "-q", "--bare", str(remote))
    return remote


def test_make_publish_pushes_the_site_to_gh_pages(tmp_path, bare_remote):
    site = tmp_path / "out" / "site"
    site.mkdir(parents=True)
    (site / "index.html").write_text("<!DOCTYPE html><title>v1</title>", encoding="utf-8")
    (site / "figures").mkdir()
    (site / "figures" / "a.svg").write_text("<svg/>", encoding="utf-8")
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    cmd = ["make", "-s", "publish", f"OUT={tmp_path / 'out'}", f"PUBLISH_REMOTE={bare_remote}"]
    proc = subprocess.run(cmd, check=False, cwd=root, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    files = _git("ls-tree", "-r", "--name-only", "gh-pages", cwd=bare_remote).splitlines()
    assert sorted(files) == [".nojekyll", "figures/a.svg", "index.html"]
    # a second publish adds a commit on top (history kept), with the new content
    (site / "index.html").write_text("<!DOCTYPE html><title>v2</title>", encoding="utf-8")
    proc = subprocess.run(cmd, check=False, cwd=root, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert _git("rev-list", "--count", "gh-pages", cwd=bare_remote) == "2"
    assert "v2" in _git("show", "gh-pages:index.html", cwd=bare_remote)


def test_publish_refuses_a_missing_site(tmp_path, bare_remote):
    with pytest.raises(PublishError, match="no index.html"):
        publish(tmp_path / "nothing", str(bare_remote))


def make_site(tmp_path: Path) -> Path:
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("<!DOCTYPE html><title>report</title>", encoding="utf-8")
    return site


@pytest.fixture()
def identity(monkeypatch):
    for k, v in {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                 "GIT_COMMITTER_EMAIL": "t@t"}.items():
        monkeypatch.setenv(k, v)


def pushed_branch(tmp_path: Path, remote: Path, branch: str, message: str) -> str:
    """A commit that headreport did not make, pushed to ``branch`` of ``remote``; its sha."""
    work = tmp_path / "work"
    _git("init", "-q", "-b", branch, str(work))
    (work / "README").write_text("project", encoding="utf-8")
    _git("add", "README", cwd=work)
    _git("commit", "-q", "-m", message, cwd=work)
    _git("push", "-q", str(remote), branch, cwd=work)
    return _git("rev-parse", branch, cwd=remote)


def test_publish_refuses_a_branch_it_did_not_make(tmp_path, bare_remote, identity):
    """`--branch main` on a repository whose main holds the project: refused, main untouched."""
    tip = pushed_branch(tmp_path, bare_remote, "main", "project")
    site = make_site(tmp_path)
    with pytest.raises(PublishError, match="was not made by `make publish`"):
        publish(site, str(bare_remote), "main")
    assert _git("rev-parse", "main", cwd=bare_remote) == tip
    publish(site, str(bare_remote), "gh-pages")  # a pages branch is fine, and so is republishing it
    publish(site, str(bare_remote), "gh-pages")
    assert _git("rev-list", "--count", "gh-pages", cwd=bare_remote) == "2"
    assert "Published-by: headreport" in _git("log", "-1", "--format=%B", "gh-pages", cwd=bare_remote)
    publish(site, str(bare_remote), "main", force=True)  # --force overrides
    assert _git("rev-parse", "main~1", cwd=bare_remote) == tip


@pytest.mark.parametrize("remote, branch", [("--upload-pack=touch PWNED;", "gh-pages"), ("REMOTE", "-x"),
                                            ("REMOTE", "a..b"), ("", "gh-pages")])
def test_publish_never_lets_a_name_become_an_option(remote, branch, tmp_path, bare_remote, identity, monkeypatch):
    monkeypatch.chdir(tmp_path)
    site = make_site(tmp_path)
    with pytest.raises(PublishError):
        publish(site, str(bare_remote) if remote == "REMOTE" else remote, branch)
    assert not (tmp_path / "PWNED").exists() and not (site / "PWNED").exists()
    assert _git("branch", "--list", cwd=bare_remote) == ""


def test_a_tip_that_only_mentions_the_trailer_is_not_ours(tmp_path, bare_remote, identity):
    """The guard compares the trailer line exactly: a commit that merely quotes it is refused."""
    tip = pushed_branch(tmp_path, bare_remote, "gh-pages",
                        "Docs: why we drop 'Published-by: headreport' commits\n\nhand-made")
    with pytest.raises(PublishError, match="was not made by `make publish`"):
        publish(make_site(tmp_path), str(bare_remote), "gh-pages")
    assert _git("rev-parse", "gh-pages", cwd=bare_remote) == tip
    assert has_trailer("Publish\n\nPublished-by: headreport\n") and not has_trailer("Published-by: headreport!")
    assert not has_trailer("x Published-by: headreport") and not has_trailer("Published-by: headreport\nmore")


def test_make_publish_quotes_paths_and_names(tmp_path, identity):
    """An output path with a space and a remote path with a quote stay values, never shell syntax."""
    root = Path(__file__).resolve().parents[2]
    odd = tmp_path / "it's a remote.git"
    _git("init", "-q", "--bare", str(odd))
    site = tmp_path / "my out" / "site"
    site.mkdir(parents=True)
    (site / "index.html").write_text("<!DOCTYPE html><title>v1</title>", encoding="utf-8")
    pwned = tmp_path / "PWNED"
    cmd = ["make", "-s", "publish", f"OUT={tmp_path / 'my out'}", f"PUBLISH_REMOTE={odd}"]
    proc = subprocess.run(cmd, check=False, cwd=root, capture_output=True, text=True, env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr
    assert _git("ls-tree", "-r", "--name-only", "gh-pages", cwd=odd).splitlines() == [".nojekyll", "index.html"]
    injected = f"x'; touch {pwned}; echo '"
    proc = subprocess.run(["make", "-s", "publish", f"OUT={tmp_path / 'my out'}", f"PUBLISH_REMOTE={injected}"],
                          check=False, cwd=root, capture_output=True, text=True, env=dict(os.environ))
    assert proc.returncode != 0 and not pwned.exists()
