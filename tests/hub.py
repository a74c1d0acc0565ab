"""A local Hugging Face hub for the tests, on 127.0.0.1: the part of the hub's HTTP protocol that
the pinned ``huggingface_hub`` client (2.4) speaks to download a model snapshot
(``snapshot_download`` → ``HfApi.repo_info`` → ``HfApi.list_repo_tree`` → ``hf_hub_download`` per file).

Requests, in the order the client makes them:

* ``GET /api/models/{repo}/revision/{rev}`` (or ``/api/models/{repo}``: the default branch) — the
  repo info, ``{"id", "sha", "siblings", ...}``; 404 with ``X-Error-Code: RepoNotFound`` or
  ``RevisionNotFound``;
* ``GET /api/models/{repo}/tree/{rev}?recursive=...`` — the file listing: ``path``, ``size``, ``oid``
  (the git blob sha1) and, for weights, ``lfs`` (sha256, size, pointer size), as the hub lists LFS files;
* ``HEAD /{repo}/resolve/{rev}/{file}`` — ``X-Repo-Commit``, ``ETag`` (the blob sha1) and
  ``Content-Length``; for weights ``X-Linked-Etag`` (the sha256) and ``X-Linked-Size``, the headers
  the hub puts on an LFS file's redirect (served here directly, without the redirect);
* ``GET /{repo}/resolve/{rev}/{file}`` — the bytes; ``Range: bytes=a-`` / ``bytes=a-b`` → 206 with
  ``Content-Range``.

No Xet: no ``X-Xet-*`` header and no ``xetHash``, so the client downloads over plain HTTP.

Besides, ``GET /api/agent-harnesses``: the registry the client fetches once per process (and caches
in HF_HOME for a day) to name the agent in its user agent; served empty, never faulted and not
recorded, so that what a test sees does not depend on which test ran first.

Faults, switched by :attr:`LocalHub.fault`:

* ``"500"``: every request answers 500 Internal Server Error;
* ``"404"``: every request answers 404 ``RepoNotFound`` (the repo is gone, or was never there);
* ``"truncate"``: a file's body is cut to half its size (with a matching ``Content-Length``, as a
  proxy that cuts large files does), while HEAD announces the full size;
* ``"slow"``: every answer waits :attr:`LocalHub.slow_seconds` before its first byte;
* ``"drop"``: a weights file's GET without ``Range`` announces its full size, sends half and closes
  the connection (a dropped connection); a ``Range`` request is served whole, so the client's
  resume completes the file.

Every request is recorded in :attr:`LocalHub.requests` as ``(method, path, status)``.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

#: file names served as LFS files (X-Linked-Etag / X-Linked-Size, an ``lfs`` entry in the tree)
LFS_SUFFIXES = (".safetensors", ".bin", ".gguf")
FAULTS = (None, "500", "404", "truncate", "slow", "drop")


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a file with these bytes (what the hub lists as ``oid``)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Commit:
    sha: str
    files: dict[str, bytes]


@dataclass
class Repo:
    repo_id: str
    commits: dict[str, Commit] = field(default_factory=dict)  # sha → commit
    refs: dict[str, str] = field(default_factory=dict)  # branch → sha

    def resolve(self, revision: str) -> Commit | None:
        sha = self.refs.get(revision, revision)
        return self.commits.get(sha)


class LocalHub:
    """A hub on ``127.0.0.1:<free port>``; :meth:`start` / :meth:`stop`, or use it as a context manager."""

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.fault: str | None = None
        self.slow_seconds = 5.0
        self.requests: list[tuple[str, str, int]] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- content --------------------------------------------------------------------------------

    def add_commit(self, repo_id: str, branch: str, folder: Path) -> str:
        """Serve every file of ``folder`` as a new commit of ``repo_id`` at the head of ``branch``;
        returns the commit sha (40 hex digits, a function of the files and the branch)."""
        files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
        h = hashlib.sha1(branch.encode())
        for name, data in files.items():
            h.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
        sha = h.hexdigest()
        repo = self.repos.setdefault(repo_id, Repo(repo_id))
        repo.commits[sha] = Commit(sha, files)
        repo.refs[branch] = sha
        return sha

    def alias(self, repo_id: str, same_as: str) -> None:
        """Serve ``repo_id`` with the commits and branches of ``same_as``."""
        self.repos[repo_id] = self.repos[same_as]

    # -- life cycle -----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._server is not None, "the hub is not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> LocalHub:
        hub = self

        class Handler(_HubHandler):
            pass

        Handler.hub = hub
        self._stopping.clear()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="local-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # slow answers stop waiting
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> LocalHub:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- the record -----------------------------------------------------------------------------

    def record(self, method: str, path: str, status: int) -> None:
        with self._lock:
            self.requests.append((method, path, status))

    def take_requests(self) -> list[tuple[str, str, int]]:
        """The requests since the last call, oldest first (and forget them)."""
        with self._lock:
            out, self.requests = self.requests, []
        return out

    def wait(self) -> bool:
        """Sleep :attr:`slow_seconds` (less if the hub stops); True if the hub is still serving."""
        return not self._stopping.wait(self.slow_seconds)


_API = re.compile(r"^/api/models/(?P<repo>.+?)(?:/(?P<kind>revision|tree)/(?P<rev>[^/]+)(?P<sub>/.*)?)?$")
_RESOLVE = re.compile(r"^/(?P<repo>.+?)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")
_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


class _HubHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "LocalHub/1.0"
    hub: LocalHub

    def log_message(self, format: str, *args) -> None:  # quiet: the hub records requests itself
        pass

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    # -- answers --------------------------------------------------------------------------------

    def _send(self, status: int, headers: dict[str, str], payload: bytes = b"", body: bool = True,
              record: bool = True) -> None:
        if record:
            self.hub.record(self.command, self.path, status)
        try:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            if "Content-Length" not in headers:
                self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if body and payload:
                self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (a time-out)
            self.close_connection = True

    def _json(self, status: int, data, extra: dict[str, str] | None = None, body: bool = True,
              record: bool = True) -> None:
        self._send(status, {"Content-Type": "application/json", **(extra or {})},
                   json.dumps(data).encode("utf-8"), body, record)

    def _error(self, status: int, code: str | None, message: str, body: bool = True,
               extra: dict[str, str] | None = None) -> None:
        headers = {**({"X-Error-Code": code} if code else {}), "X-Error-Message": message, **(extra or {})}
        self._json(status, {"error": message}, headers, body)

    def _serve(self, body: bool) -> None:
        hub = self.hub
        if urlsplit(self.path).path == "/api/agent-harnesses":
            return self._json(200, {"standardEnvVars": [], "harnesses": {}}, body=body, record=False)
        if hub.fault == "slow" and not hub.wait():
            self.close_connection = True
            return
        if hub.fault == "500":
            return self._error(500, None, "Internal Error - We're working hard to fix this as soon as possible!", body)
        path = urlsplit(self.path).path
        if hub.fault == "404":
            return self._error(404, "RepoNotFound", "Repository not found", body)
        if path.startswith("/api/"):
            return self._api(path, body)
        m = _RESOLVE.match(path)
        if m is None:
            return self._error(404, None, f"no such route: {path}", body)
        return self._resolve(unquote(m["repo"]), unquote(m["rev"]), unquote(m["file"]), body)

    def _find(self, repo_id: str, revision: str, body: bool) -> tuple[Repo, Commit] | None:
        repo = self.hub.repos.get(repo_id)
        if repo is None:
            self._error(404, "RepoNotFound", "Repository not found", body)
            return None
        commit = repo.resolve(revision)
        if commit is None:
            self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}", body)
            return None
        return repo, commit

    def _api(self, path: str, body: bool) -> None:
        m = _API.match(path)
        if m is None:
            return self._error(404, None, f"no such route: {path}", body)
        repo_id, kind = unquote(m["repo"]), m["kind"]
        found = self._find(repo_id, unquote(m["rev"]) if m["rev"] else "main", body)
        if found is None:
            return None
        repo, commit = found
        if kind in (None, "revision"):
            return self._json(200, {
                "_id": hashlib.md5(repo_id.encode()).hexdigest()[:24], "id": repo_id, "modelId": repo_id,
                "author": repo_id.split("/")[0] if "/" in repo_id else None, "sha": commit.sha,
                "private": False, "gated": False, "disabled": False, "downloads": 0, "likes": 0,
                "tags": ["transformers", "safetensors", "gpt2"], "library_name": "transformers",
                "siblings": [{"rfilename": name} for name in commit.files],
            }, body=body)
        entries = []
        for name, data in commit.files.items():
            entry = {"type": "file", "path": name, "size": len(data), "oid": git_blob_sha1(data)}
            if name.endswith(LFS_SUFFIXES):
                entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
            entries.append(entry)
        return self._json(200, entries, body=body)

    def _resolve(self, repo_id: str, revision: str, name: str, body: bool) -> None:
        found = self._find(repo_id, revision, body)
        if found is None:
            return None
        _, commit = found
        data = commit.files.get(name)
        if data is None:
            return self._error(404, "EntryNotFound", f"{name} does not exist on {revision!r}", body,
                               {"X-Repo-Commit": commit.sha})
        headers = {"X-Repo-Commit": commit.sha, "ETag": f'"{git_blob_sha1(data)}"', "Accept-Ranges": "bytes",
                   "Content-Type": "application/octet-stream"}
        if name.endswith(LFS_SUFFIXES):
            headers["X-Linked-Etag"] = f'"{hashlib.sha256(data).hexdigest()}"'
            headers["X-Linked-Size"] = str(len(data))
        if not body:  # HEAD: what a GET would send
            return self._send(200, {**headers, "Content-Length": str(len(data))}, b"", body=False)
        status, start, end = 200, 0, len(data)
        m = _RANGE.match(self.headers.get("Range", ""))
        if m is not None:
            start = int(m[1])
            end = min(int(m[2]) + 1, len(data)) if m[2] else len(data)
            if start >= len(data) or start >= end:
                return self._send(416, {"Content-Range": f"bytes */{len(data)}"})
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{len(data)}"
        payload = data[start:end]
        if self.hub.fault == "truncate":
            payload = payload[: len(payload) // 2]
        if self.hub.fault == "drop" and m is None and name.endswith(LFS_SUFFIXES):
            self._send(status, {**headers, "Content-Length": str(len(payload))}, payload[: len(payload) // 2])
            self.wfile.flush()
            self.close_connection = True
            return None
        return self._send(status, headers, payload)
