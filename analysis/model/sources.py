"""Where a model's files are: a local Hugging Face checkpoint folder, a hub snapshot (the local
cache first; a download only when that is possible), or a bundled model. No heavy import: a missing
model fails in a second, and the staleness key can find the files without loading anything.

The hub is the one ``huggingface_hub`` uses: ``huggingface_hub.constants.ENDPOINT``, which honours
``HF_ENDPOINT`` (a mirror), with ``model.revision`` (a branch, tag or commit sha) and the client's
time-out ``HF_HUB_DOWNLOAD_TIMEOUT``. Loading and the staleness key find the files through one
function, :func:`checkpoint_folder`, so both see the same revision. A download that fails says why,
and how to fix that cause: :func:`download_error`.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import socket
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ..errors import ModelUnavailableError
from .bundled import BUNDLED_FILES
from .checkpoint import WEIGHT_SUFFIXES

#: how ``model.name`` records a model that was analysed in memory (:mod:`analysis.model.memory`)
MEMORY_PREFIX = "memory:"

if TYPE_CHECKING:
    from ..config import ModelConfig

#: the files of a snapshot that the analysis reads (weights, config.json, tokenizer files)
PATTERNS = ["*.json", "*.txt", "*.model", "*.safetensors", "merges.txt", "vocab.*"]
#: how long the direct probe of the hub's host waits for a TCP connection, in seconds
PROBE_TIMEOUT = 1.5


def _true(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def offline_switch() -> str | None:
    """The setting that forbids downloads (``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE``), or None."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if _true(os.environ.get(var)):
            return var
    from huggingface_hub import constants  # noqa: PLC0415 - the hub client only when the hub is asked

    return "HF_HUB_OFFLINE" if constants.HF_HUB_OFFLINE else None


def hub_endpoint() -> str:
    """The hub ``huggingface_hub`` talks to: ``HF_ENDPOINT`` when set, else https://huggingface.co."""
    from huggingface_hub import constants  # noqa: PLC0415 - the hub client only when the hub is asked

    return constants.ENDPOINT.rstrip("/")


def download_timeout() -> float:
    """The client's time-out for one request, in seconds (``HF_HUB_DOWNLOAD_TIMEOUT``, default 10)."""
    from huggingface_hub import constants  # noqa: PLC0415 - the hub client only when the hub is asked

    return float(constants.HF_HUB_DOWNLOAD_TIMEOUT)


def proxy_for(endpoint: str) -> str | None:
    """The proxy (``HTTPS_PROXY``, ``HTTP_PROXY``, ``ALL_PROXY``) the client will go through to reach
    ``endpoint``, or None (none set, or ``NO_PROXY`` exempts the host)."""
    parts = urlsplit(endpoint)
    proxies = urllib.request.getproxies_environment()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass_environment(parts.hostname or "", proxies):
        return None
    return proxy


def unreachable_reason(endpoint: str, timeout: float = PROBE_TIMEOUT) -> str | None:
    """Why a direct TCP connection to ``endpoint``'s host fails (no retry, at most ``timeout`` s to
    connect), or None when it succeeds — or when a proxy is in the way, where a direct probe says
    nothing and the client is left to try."""
    if proxy_for(endpoint) is not None:
        return None
    parts = urlsplit(endpoint)
    host = parts.hostname or ""
    try:
        port = parts.port or {"https": 443, "http": 80}.get(parts.scheme, 443)
    except ValueError:
        return f"HF_ENDPOINT={endpoint!r} is not a URL with a valid port"
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except socket.gaierror:
        return f"the host name {host!r} does not resolve"
    except TimeoutError:
        return f"{host}:{port} did not answer within {timeout:g} s"
    except OSError as exc:
        return f"{host}:{port}: {exc.strerror or exc}"


def _described(name: str, repo: str, revision: str | None) -> str:
    """``model 'gpt2-small' (gpt2, revision 'dev')``"""
    extra = [repo] if repo != name else []
    if revision is not None:
        extra.append(f"revision {revision!r}")
    return f"model {name!r}" + (f" ({', '.join(extra)})" if extra else "")


def _offline_help(what: str, endpoint: str | None = None, switch: str | None = None) -> str:
    """``what`` went wrong, then every way to get a model without the hub: the advice for a machine
    that is offline (``switch``: the setting that made it so)."""
    bundled = ", ".join(sorted(BUNDLED_FILES)) or "none installed"
    mirror = (f"  * behind a mirror or a proxy: set HF_ENDPOINT to the mirror (now {endpoint}) or HTTPS_PROXY "
              "to the proxy;\n") if endpoint is not None else ""
    unset = f"unset {switch} and " if switch else ""
    return (
        f"{what}\n"
        "How to fix it, any one of:\n"
        f"  * {unset}connect to the internet once, so the weights are downloaded into the Hugging Face cache;\n"
        f"{mirror}"
        "  * point model.name (or --model) at a local checkpoint folder "
        "(config.json, weights and tokenizer files);\n"
        f"  * use a bundled offline model (`make demo`; bundled ids: {bundled})."
    )


def _chain(exc: BaseException):
    """``exc`` and the exceptions it was raised from, outermost first."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _find(exc: BaseException, *class_names: str) -> BaseException | None:
    """The first exception in ``exc``'s chain that is an instance of a class named one of
    ``class_names`` (by name, so that ``httpx`` and ``httpx2`` errors match alike)."""
    for e in _chain(exc):
        if any(c.__name__ in class_names for c in type(e).__mro__):
            return e
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0].strip() if text else type(exc).__name__


def _status(exc: BaseException, default: int) -> int:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None) or default


def _http_error(e: BaseException, failed: str, repo: str, endpoint: str) -> ModelUnavailableError:
    """:func:`download_error` for an HTTP answer of the hub (``HfHubHTTPError`` with a response):
    5xx, 401/403, a 404 of a listed file, anything else."""
    response = e.response
    status = f"{response.status_code} {response.reason_phrase}".strip()
    if response.status_code >= 500:
        return ModelUnavailableError(
            f"model.name: {failed}: the hub answered {status} ({response.request.url}).\n"
            "How to fix it: the hub is failing, not your setup: retry later (files already downloaded are "
            "kept, and the next run fetches only the rest)"
            + (f"; or, if the mirror in HF_ENDPOINT ({endpoint}) is down, unset HF_ENDPOINT to use "
               "huggingface.co." if os.environ.get("HF_ENDPOINT") else "."))
    if response.status_code in (401, 403):
        return ModelUnavailableError(
            f"model.name: {failed}: the hub refused access ({status}).\n"
            "How to fix it: log in with `hf auth login` (or set HF_TOKEN) as a user who may read "
            f"{repo!r}.")
    if response.status_code == 404:
        return ModelUnavailableError(
            f"model.name: {failed}: the hub lists a file it does not serve ({status}: "
            f"{response.request.url}).\n"
            "How to fix it: run again later; if it persists, the repo or the mirror in HF_ENDPOINT is broken.")
    return ModelUnavailableError(
        f"model.name: {failed}: the hub answered {status} ({_first_line(e)}).\n"
        "How to fix it: run again; if it persists, download the model elsewhere and point model.name at "
        "its folder.")


def download_error(exc: BaseException, name: str, repo: str, revision: str | None,
                   endpoint: str) -> ModelUnavailableError:
    """One message for a failed download: the cause in the first line, then the fix for that cause
    (the offline advice only when the hub cannot be reached)."""
    what = _described(name, repo, revision)
    failed = f"could not download {what} from {endpoint}"
    rev = revision or "main"
    if (e := _find(exc, "ProxyError")) is not None:
        proxy = proxy_for(endpoint) or "none set"
        return ModelUnavailableError(
            f"model.name: {failed}: the proxy failed ({_first_line(e)}).\n"
            f"How to fix it: check HTTPS_PROXY / ALL_PROXY (now {proxy}) and NO_PROXY, then run again.")
    if (e := _find(exc, "TimeoutException", "TimeoutError")) is not None:
        timeout = download_timeout()
        return ModelUnavailableError(
            f"model.name: {failed}: the hub did not answer within {timeout:g} s "
            f"(HF_HUB_DOWNLOAD_TIMEOUT={timeout:g}; {_first_line(e)}).\n"
            "How to fix it: on a slow connection or mirror, allow more time, e.g. "
            "`HF_HUB_DOWNLOAD_TIMEOUT=60 headreport ...`, and run again (files already downloaded are kept).")
    if (e := _find(exc, "ConnectError", "OfflineModeIsEnabled", "ConnectionError")) is not None \
            and _find(exc, "HfHubHTTPError") is None:
        return ModelUnavailableError(_offline_help(
            f"model.name: {what} is not in the local Hugging Face cache and the hub at {endpoint} cannot be "
            f"reached ({_first_line(e)}).", endpoint))
    if (e := _find(exc, "GatedRepoError")) is not None:
        return ModelUnavailableError(
            f"model.name: {failed}: {repo!r} is gated or private ({_first_line(e)}).\n"
            f"How to fix it: accept its terms at {endpoint}/{repo}, then log in with `hf auth login` "
            "(or set HF_TOKEN) as a user who has access.")
    if (e := _find(exc, "RepositoryNotFoundError")) is not None:
        return ModelUnavailableError(
            f"model.name: {failed}: the hub has no model {repo!r} ({_status(e, 404)} Repository Not Found).\n"
            f"How to fix it: check the name (owner/name, exactly as on {endpoint}/{repo}); a private repo also "
            "needs `hf auth login` (or HF_TOKEN); a local checkpoint is named by its folder's path.")
    if (e := _find(exc, "RevisionNotFoundError")) is not None:
        return ModelUnavailableError(
            f"model.revision: {failed}: {repo!r} has no revision {rev!r} ({_status(e, 404)} Revision Not Found).\n"
            f"How to fix it: set model.revision to a branch, tag or full commit sha that {repo!r} has (see "
            f"{endpoint}/{repo}/tree/main), or remove model.revision to use the default branch.")
    if (e := _find(exc, "HfHubHTTPError")) is not None and getattr(e, "response", None) is not None:
        return _http_error(e, failed, repo, endpoint)
    if (e := _find(exc, "RemoteProtocolError", "ReadError")) is not None or "Consistency check failed" in str(exc):
        sizes = re.search(r"should be of size (\d+) but has size (\d+)", str(exc))
        how = (f"a file arrived with {int(sizes[2]):,} of its {int(sizes[1]):,} bytes" if sizes
               else _first_line(e or exc))
        return ModelUnavailableError(
            f"model.name: {failed}: the transfer was cut short ({how}).\n"
            "How to fix it: run again: complete files stay in the cache and only the rest is fetched; if it "
            "keeps happening, a proxy or the connection is cutting large files.")
    return ModelUnavailableError(
        f"model.name: {failed}: {type(exc).__name__}: {_first_line(exc)}\n"
        "How to fix it: run again; if it persists, download the model elsewhere and point model.name at "
        "its folder.")


def resolve_model_alias(name: str) -> str | None:
    """TransformerLens' official HF name for an alias (``gpt2-small`` → ``gpt2``), else None.

    Reads TransformerLens' alias table directly: importing transformer_lens takes seconds, and an
    offline user with no cached weights should get the error message at once.
    """
    spec = importlib.util.find_spec("transformer_lens")
    for location in (spec.submodule_search_locations or []) if spec else []:
        table = Path(location) / "tools" / "model_registry" / "data" / "model_aliases.json"
        if table.is_file():
            for official, aliases in json.loads(table.read_text(encoding="utf-8"))["aliases"].items():
                if name in aliases:
                    return official
            return None
    from transformer_lens.tools.model_registry.registry_io import resolve_model_alias as tl_resolve  # noqa: PLC0415 - torch-free front end

    return tl_resolve(name)


def _cached_snapshot(repo: str, revision: str | None) -> Path | None:
    """The cached snapshot of ``repo`` at ``revision`` (a branch or tag through ``refs/``, a commit
    sha directly) when it is complete and holds weights; no request is made."""
    from huggingface_hub import snapshot_download  # noqa: PLC0415 - the hub client only when the hub is asked

    try:
        folder = Path(snapshot_download(repo, revision=revision, local_files_only=True, allow_patterns=PATTERNS))
    except Exception as exc:  # not in the cache (LocalEntryNotFoundError, IncompleteSnapshotError, ...)
        from huggingface_hub.errors import HFValidationError  # noqa: PLC0415 - the hub client only when the hub is asked

        if isinstance(exc, HFValidationError):
            raise
        return None
    return folder if any(p.name.endswith(WEIGHT_SUFFIXES) for p in folder.iterdir()) else None


def _write_ref(storage: Path, revision: str, sha: str) -> None:
    """Record in the cache that branch/tag ``revision`` is commit ``sha`` (``refs/<revision>``, the
    file the client reads offline), atomically."""
    if revision.startswith("/") or ".." in revision.split("/"):
        return  # never a path out of refs/
    ref = storage / "refs" / revision
    try:
        if ref.is_file() and ref.read_text(encoding="utf-8").strip() == sha:
            return
        ref.parent.mkdir(parents=True, exist_ok=True)
        tmp = ref.with_name(f".{ref.name}.{os.getpid()}.tmp")
        tmp.write_text(sha, encoding="utf-8")
        os.replace(tmp, ref)
    except OSError:  # best effort, as the client's own: a read-only cache still serves this run
        pass


def download_snapshot(repo: str, revision: str | None, endpoint: str) -> Path:
    """Download ``repo`` at ``revision`` from ``endpoint`` into the cache; the client's errors propagate.

    The revision is resolved to a commit with one request that honours ``HF_HUB_DOWNLOAD_TIMEOUT``
    (the client's own would wait forever), then the snapshot of that commit is downloaded and the
    branch or tag recorded in ``refs/``, so that the next run finds it offline."""
    from huggingface_hub import HfApi, constants, snapshot_download  # noqa: PLC0415 - the hub client only when the hub is asked

    ref = revision or constants.DEFAULT_REVISION  # "main", as the client's own download asks
    sha = HfApi(endpoint=endpoint).repo_info(repo, revision=ref, timeout=download_timeout()).sha
    if sha is None:
        raise RuntimeError(f"the hub at {endpoint} answered without a commit sha for {repo!r}")
    folder = Path(snapshot_download(repo, revision=sha, allow_patterns=PATTERNS, endpoint=endpoint))
    if ref != sha:  # a branch, a tag or a short sha: the next run finds it offline
        _write_ref(folder.parent.parent, ref, sha)
    return folder


def resolve_local_folder(name: str, revision: str | None) -> tuple[Path, dict[str, Any]]:
    """Find the local folder holding ``name``'s checkpoint at ``revision``: a folder path as it is,
    a hub snapshot from the cache (no request), else downloaded — when downloads are allowed and
    the hub can be reached; every failure a :class:`ModelUnavailableError` saying how to fix it."""
    path = Path(name).expanduser()
    looks_like_path = name.startswith((".", "/", "~")) or os.sep in name.strip("/") and path.exists()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelUnavailableError(
                f"model.name: folder {str(path)!r} is not a Hugging Face checkpoint (no config.json in it)"
            )
        return path.resolve(), {"source": "local_folder", "path": str(path.resolve())}
    if looks_like_path or path.suffix in WEIGHT_SUFFIXES:
        raise ModelUnavailableError(f"model.name: checkpoint folder {name!r} does not exist")

    from huggingface_hub.errors import HFValidationError  # noqa: PLC0415 - the hub client only when the hub is asked

    repo = resolve_model_alias(name) or name
    try:
        folder = _cached_snapshot(repo, revision)
    except HFValidationError:
        raise ModelUnavailableError(
            f"model.name: {name!r} is neither a checkpoint folder nor a valid hub model name") from None
    if folder is None:
        what = _described(name, repo, revision)
        switch = offline_switch()
        if switch is not None:
            raise ModelUnavailableError(_offline_help(
                f"model.name: {what} is not in the local Hugging Face cache and {switch} is set, "
                "so it cannot be downloaded.", switch=switch
            ))
        endpoint = hub_endpoint()
        reason = unreachable_reason(endpoint)
        if reason is not None:
            raise ModelUnavailableError(_offline_help(
                f"model.name: {what} is not in the local Hugging Face cache and the hub at {endpoint} cannot be "
                f"reached ({reason}).", endpoint
            ))
        try:
            folder = download_snapshot(repo, revision, endpoint)
        except Exception as exc:
            raise download_error(exc, name, repo, revision, endpoint) from None
    return folder, {"source": "hub", "repo_id": repo, "revision": folder.name}


def checkpoint_folder(model_cfg: ModelConfig) -> tuple[Path, dict[str, Any]]:
    """The folder of ``model_cfg``'s checkpoint at ``model_cfg.revision`` and where it came from —
    the one resolution that loading (:func:`analysis.preflight.resolve_source`) and the staleness
    key (:func:`analysis.staleness.model_files`) share, so that both see the same files."""
    if model_cfg.name.startswith(MEMORY_PREFIX):
        raise ModelUnavailableError(
            f"model.name: {model_cfg.name!r} was a model in memory (headreport.analyze in a notebook); there is no "
            "file to load it from or to compare the artifacts against, so they cannot be rebuilt or checked for "
            "staleness here: run headreport.analyze(model) again in the notebook, or set model.name to a hub name, "
            "a checkpoint folder or a .gguf file")
    return resolve_local_folder(model_cfg.name, model_cfg.revision)
