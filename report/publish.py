"""Publish the built site to a ``gh-pages`` branch of any git remote (``make publish``).

The site folder becomes the whole tree of one new commit on top of the branch's current tip (or
the first commit of a new branch), pushed without force, like ``ghp-import``: the branch history
keeps every published version. A ``.nojekyll`` file makes GitHub Pages serve the files as they
are. The work happens in a temporary clone-free repository, so the project's own checkout (its
index, branches and working tree) is never touched.

Only a pages branch is written: every commit ``publish`` makes carries the trailer
``Published-by: headreport``, and a branch that exists but whose tip lacks it (``main``, say) is
refused unless ``force``. Remote and branch names that start with ``-`` are refused, branch names
must be valid refs, and ``--`` ends the options of every git call, so no name can become a git
option (``--upload-pack=...``).

    python -m headreport.report.publish --site build/site --remote origin --branch gh-pages
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from headreport.analysis.errors import UserError


class PublishError(UserError):
    """The site could not be published (no site, git failed, remote rejected the push)."""


def _git(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise PublishError(f"git {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout.strip()


TRAILER = "Published-by: headreport"


def has_trailer(message: str) -> bool:
    """Whether the commit message ends with the trailer line exactly (the last non-empty line is
    ``Published-by: headreport``): a message that merely mentions it is not a headreport commit."""
    lines = [line for line in message.splitlines() if line.strip()]
    return bool(lines) and lines[-1] == TRAILER


def check_names(remote: str, branch: str) -> None:
    """Refuse a remote or branch that git could read as an option, and a branch that is no ref."""
    for what, value in (("--remote", remote), ("--branch", branch)):
        if not value or value.startswith("-"):
            raise PublishError(f"{what}: {value!r} is not allowed: a name must not be empty or start with '-'")
    proc = subprocess.run(["git", "check-ref-format", "--branch", branch], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise PublishError(f"--branch: {branch!r} is not a valid branch name")


def resolve_remote(remote: str, project: Path) -> str:
    """A remote name of the project's checkout (``origin``) → its URL; a URL or path is kept."""
    if "/" in remote or ":" in remote or Path(remote).exists():
        return str(Path(remote).resolve()) if Path(remote).exists() else remote
    return _git(["remote", "get-url", "--", remote], cwd=project)


def publish(site: str | Path, remote: str, branch: str = "gh-pages", message: str | None = None,
            project: str | Path = ".", force: bool = False) -> str:
    """Commit ``site`` as the tree of ``branch`` and push it to ``remote``; return the commit id.
    ``force``: write onto an existing branch that ``publish`` did not make."""
    site = Path(site)
    check_names(remote, branch)
    if not (site / "index.html").is_file():
        raise PublishError(f"{site}: no index.html here; build the report first (`make report`)")
    url = resolve_remote(remote, Path(project))
    with tempfile.TemporaryDirectory(prefix="headreport-publish-") as tmp:
        work = Path(tmp)
        _git(["init", "-q"], cwd=work)
        env = {**os.environ, "GIT_DIR": str(work / ".git"), "GIT_WORK_TREE": str(site.resolve()),
               "GIT_INDEX_FILE": str(work / "index")}
        parent = None
        ls = subprocess.run(["git", "ls-remote", "--heads", "--", url, f"refs/heads/{branch}"], cwd=work,
                            capture_output=True, text=True, check=False)
        if ls.returncode != 0:
            raise PublishError(f"cannot reach remote {url!r}: {ls.stderr.strip()}")
        if ls.stdout.strip():
            _git(["fetch", "-q", "--", url, f"refs/heads/{branch}"], cwd=work)
            parent = _git(["rev-parse", "--verify", "FETCH_HEAD^{commit}"], cwd=work)
            tip_message = _git(["log", "-1", "--format=%B", parent], cwd=work)
            if not has_trailer(tip_message) and not force:
                raise PublishError(
                    f"--branch: {branch!r} exists on {url!r} and was not made by `make publish` (its tip "
                    f"{parent[:12]} has no '{TRAILER}' trailer): publishing would replace its files with the "
                    "site. Choose a pages branch (the default gh-pages), or pass --force")
        (site / ".nojekyll").touch()
        _git(["add", "-A", "--force", "."], cwd=site, env=env)
        tree = _git(["write-tree"], cwd=site, env=env)
        ident = {"GIT_AUTHOR_NAME": os.environ.get("GIT_AUTHOR_NAME", "headreport"),
                 "GIT_AUTHOR_EMAIL": os.environ.get("GIT_AUTHOR_EMAIL", "headreport@localhost"),
                 "GIT_COMMITTER_NAME": os.environ.get("GIT_COMMITTER_NAME", "headreport"),
                 "GIT_COMMITTER_EMAIL": os.environ.get("GIT_COMMITTER_EMAIL", "headreport@localhost")}
        args = ["commit-tree", tree, "-m", f"{message or 'Publish the headreport site'}\n\n{TRAILER}"]
        if parent:
            args += ["-p", parent]
        commit = _git(args, cwd=work, env={**env, **ident})
        _git(["push", "-q", "--", url, f"{commit}:refs/heads/{branch}"], cwd=work)
    return commit


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m headreport.report.publish", description=__doc__.split("\n\n")[0])
    parser.add_argument("--site", default="build/site", help="the built site folder (default: build/site)")
    parser.add_argument("--remote", default="origin", help="git remote name, URL or path (default: origin)")
    parser.add_argument("--branch", default="gh-pages", help="branch to publish to (default: gh-pages)")
    parser.add_argument("--message", help="commit message")
    parser.add_argument("--force", action="store_true",
                        help="publish onto an existing branch that `make publish` did not make")
    args = parser.parse_args(argv)
    try:
        commit = publish(args.site, args.remote, args.branch, args.message, force=args.force)
    except UserError as exc:
        print(f"publish: error: {exc}", file=sys.stderr)
        return 2
    print(f"published {args.site} to {args.remote} {args.branch} as {commit}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
