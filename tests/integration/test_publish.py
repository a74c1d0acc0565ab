"""``make publish``: the built site becomes a commit on gh-pages of a (local bare) remote."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest


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
    from report.publish import PublishError, publish

    with pytest.raises(PublishError, match="no index.html"):
        publish(tmp_path / "nothing", str(bare_remote))
