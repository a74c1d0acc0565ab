"""The artifact contract: versioned JSON files, validated, deterministic, written atomically.

Files in an artifacts folder:

* ``model.json``      kind "model": config, provenance, model dimensions, the heads analysed.
* ``head_L.H.json``   kind "head": one head's results (spectra, singular directions, cos² rankings,
                      subspace alignment of names vs generic words, OV self-suppression).
* ``survey.json``     kind "survey": per-head statistics for every head (optional).
* ``timings.json``    kind "timings": wall-clock seconds per step. Kept apart on purpose: every
                      other file is byte-identical for the same inputs (sorted keys, floats rounded to
                      7 significant digits, no timestamps).

The JSON Schema is ``analysis/data/artifact.schema.json``; :func:`write_artifacts` validates every
document before writing any, and :func:`read_artifact` validates on read.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import UserError

SCHEMA_VERSION = "3.0"
MANIFEST = "manifest.json"
SIGNIFICANT_DIGITS = 7


class ArtifactError(UserError):
    """An artifact file is missing, unreadable or does not follow the schema."""


def canonical(obj: Any) -> Any:
    """Round floats to a fixed number of significant digits (NaN/inf → None), recursively."""
    if isinstance(obj, bool) or obj is None or isinstance(obj, (int, str)):
        return obj
    if isinstance(obj, float):
        if not math.isfinite(obj):
            return None
        r = float(f"{obj:.{SIGNIFICANT_DIGITS}g}")
        return 0.0 if r == 0 else r
    if isinstance(obj, dict):
        return {str(k): canonical(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [canonical(v) for v in obj]
    if hasattr(obj, "item"):  # numpy / torch scalars
        return canonical(obj.item())
    raise TypeError(f"cannot put {type(obj).__name__} into an artifact")


def dumps(doc: dict[str, Any]) -> str:
    return json.dumps(canonical(doc), sort_keys=True, ensure_ascii=False, indent=1, allow_nan=False) + "\n"


@functools.lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    return json.loads(resources.files("analysis.data").joinpath("artifact.schema.json").read_text("utf-8"))


@functools.lru_cache(maxsize=1)
def _validator():
    import jsonschema

    return jsonschema.Draft202012Validator(schema())


def validate(doc: dict[str, Any], where: str = "artifact") -> None:
    """Raise :class:`ArtifactError` if ``doc`` does not follow the schema: the message names the
    file, the JSON path (``/results/head/label``) and the rule that failed (``pattern``)."""
    import jsonschema

    errors = list(_validator().iter_errors(doc))
    if errors:
        e = jsonschema.exceptions.best_match(errors)
        while e.context:  # oneOf/anyOf: report the most specific failure
            e = jsonschema.exceptions.best_match(e.context)
        path = "/" + "/".join(str(p) for p in e.absolute_path)
        message = e.message if len(e.message) <= 300 else e.message[:300] + "…"
        raise ArtifactError(f"{where}: does not follow artifact schema {SCHEMA_VERSION} at {path}: "
                            f"{message} (rule: {e.validator})")


def head_filename(label: str) -> str:
    return f"head_{label}.json"


def explorer_filename(label: str) -> str:
    return f"explorer_{label}.json"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_temps(folder: Path) -> list[Path]:
    """Remove the temp files (``.NAME.PID.*.tmp``) and staging folders (``.render-PID-*``) that a
    killed headreport process (SIGKILL, power loss) left in ``folder``; a live process's are kept."""
    import re
    import shutil

    removed = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for entry in entries:
        m = re.match(r"^\..+\.(\d+)\.[^.]+\.tmp$", entry.name) or re.match(r"^\.render-(\d+)-", entry.name)
        if not m or pid_alive(int(m.group(1))):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            _unlink_quietly(entry)
        removed.append(entry)
    return removed


def _write_temp(path: Path, text: str) -> Path:
    """Write ``text`` to a new temp file beside ``path`` (fsynced); removed again on any failure.
    The name carries this process's id, so a later run can tell a dead run's leftovers."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:  # Ctrl-C included: never leave a partial file behind
        _unlink_quietly(Path(tmp))
        raise
    return Path(tmp)


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temp file in the same folder and an atomic rename."""
    tmp = _write_temp(path, text)
    try:
        os.replace(tmp, path)
    except BaseException:
        _unlink_quietly(tmp)
        raise


def write_artifacts(out_dir: Path, docs: dict[str, dict[str, Any]], inputs: dict[str, Any] | None = None) -> list[Path]:
    """Validate every document first, then write them all: every file goes to a temp file first
    (the slow part: write + fsync), and only once all are on disk are they renamed into place, so a
    failure or Ctrl-C while writing leaves neither temp files nor a partial set of new artifacts.
    ``docs``: filename → document.

    The artifact-set manifest (``manifest.json``) is removed before the first rename and written
    last, atomically, listing every file of the set with its sha256 and the staleness key
    ``inputs`` (:mod:`analysis.staleness`): files of an earlier run with the same key stay listed,
    others drop out, and once the new manifest is in place the files that dropped out are removed
    (:func:`remove_dropped`: only files the earlier manifest lists, unchanged since written, never
    through a link), so that no optional artifact of another run (an explorer, the prompts) stays
    beside the new set. :func:`load_artifacts` reads only what the manifest lists. A set left
    half-renamed (a SIGKILL between two renames) has no manifest, which ``headreport build`` takes
    as "re-analyse" and ``render`` refuses."""
    texts = {}
    for name, doc in docs.items():
        doc = canonical(doc)
        validate(doc, where=name)
        texts[name] = dumps(doc)
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out_dir)
    previous = read_manifest(out_dir)
    staged: list[tuple[Path, Path]] = []
    try:
        for name, text in texts.items():
            staged.append((_write_temp(out_dir / name, text), out_dir / name))
        _unlink_quietly(out_dir / MANIFEST)
        for tmp, path in staged:
            os.replace(tmp, path)
    except BaseException:
        for tmp, _ in staged:
            _unlink_quietly(tmp)
        raise
    if inputs is not None:
        files = {}
        same_inputs = previous is not None and _key_core(previous.get("inputs", {})) == _key_core(inputs)
        if same_inputs:  # an earlier run with the same inputs: its files still belong to the set
            files.update({n: h for n, h in previous["files"].items() if _is_own_file(out_dir, n, h)})
        files.update({name: hashlib.sha256(text.encode("utf-8")).hexdigest() for name, text in texts.items()
                      if name != "timings.json"})
        manifest = {"schema_version": SCHEMA_VERSION, "kind": "manifest", "files": dict(sorted(files.items())),
                    "inputs": inputs}
        validate(manifest, where=MANIFEST)
        atomic_write_text(out_dir / MANIFEST, json.dumps(manifest, sort_keys=True, indent=1) + "\n")
        if previous is not None:
            remove_dropped(out_dir, previous["files"], keep=set(files) | set(texts))
    return [path for _, path in staged]


def _is_own_file(out_dir: Path, name: str, sha256: str) -> bool:
    """``out_dir/name`` is a plain file (no link) directly in ``out_dir`` whose content is still the
    one a manifest recorded (``sha256``): a file this tool wrote and nobody changed since."""
    path = out_dir / name
    if Path(name).name != name or path.is_symlink() or not path.is_file():
        return False
    try:
        return sha256_bytes_of(path) == sha256
    except OSError:
        return False


def remove_dropped(out_dir: Path, previous: dict[str, str], keep: set[str]) -> list[str]:
    """Remove the files an earlier manifest listed (``previous``: name → sha256) that the new set
    does not ``keep``: only those still as written (:func:`_is_own_file`); a changed file, a link or
    a folder in their place is left alone (and is not part of the set). Returns the names removed."""
    removed = []
    for name, sha256 in sorted(previous.items()):
        if name in keep or name == MANIFEST or not _is_own_file(out_dir, name, sha256):
            continue
        _unlink_quietly(out_dir / name)
        removed.append(name)
    return removed


def _key_core(inputs: dict[str, Any]) -> dict[str, Any]:
    """The staleness key without its stat cache (times differ, contents do not)."""
    return {k: v for k, v in inputs.items() if k != "checkpoint_files"}


def sha256_bytes_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_manifest(out_dir: Path) -> dict[str, Any] | None:
    """The artifact-set manifest of ``out_dir``, or None when absent or not a valid one."""
    try:
        doc = json.loads((out_dir / MANIFEST).read_text(encoding="utf-8"), parse_constant=_reject_constant)
        validate(doc, where=MANIFEST)
    except (OSError, ValueError, RecursionError, ArtifactError):
        return None
    return doc if doc.get("kind") == "manifest" else None


def merged_timings(out_dir: Path, seconds: dict[str, float], device: str | None) -> dict[str, Any]:
    """A ``timings.json`` document: ``seconds`` merged into the one already in ``out_dir`` (same keys
    are overwritten, others kept), so ``survey`` and ``analyze`` runs into one folder keep each other's."""
    merged: dict[str, float] = {}
    path = out_dir / "timings.json"
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(old, dict) and isinstance(old.get("seconds"), dict):
            merged.update({str(k)[:200]: float(v) for k, v in old["seconds"].items()
                           if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0})
    except (OSError, ValueError, RecursionError):
        pass
    merged.update(seconds)
    return {"schema_version": SCHEMA_VERSION, "kind": "timings", "seconds": dict(sorted(merged.items())),
            "device": device}


#: an artifact larger than this is refused unread (a 100k-token explorer head stays far below)
MAX_ARTIFACT_BYTES = 512 << 20


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a finite number (artifacts write null instead)")


def read_artifact(path: str | Path, kind: str | None = None) -> dict[str, Any]:
    """Read and validate one artifact; ``kind`` checks its ``kind`` field. Anything that is not a
    schema-valid artifact (unreadable, not JSON, NaN/Infinity literals, too large) is an
    :class:`ArtifactError` naming the file."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_ARTIFACT_BYTES:
            raise ArtifactError(f"{path}: {path.stat().st_size:,} bytes; an artifact is at most "
                                f"{MAX_ARTIFACT_BYTES >> 20} MiB")
        doc = json.loads(path.read_text(encoding="utf-8"), parse_constant=_reject_constant)
    except FileNotFoundError:
        raise ArtifactError(f"{path}: artifact not found (run `headreport analyze` first)") from None
    except IsADirectoryError:
        raise ArtifactError(f"{path}: is a folder, not an artifact file") from None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ArtifactError(f"{path}: not a readable JSON artifact ({exc})") from None
    if not isinstance(doc, dict):
        raise ArtifactError(f"{path}: not a JSON object")
    if doc.get("schema_version") != SCHEMA_VERSION:
        raise ArtifactError(
            f"{path}: schema_version {doc.get('schema_version')!r}, this headreport reads {SCHEMA_VERSION!r}; "
            "rebuild the artifacts with `headreport analyze`"
        )
    validate(doc, where=str(path))
    if kind is not None and doc.get("kind") != kind:
        raise ArtifactError(f"{path}: expected a {kind!r} artifact, found {doc.get('kind')!r}")
    return doc


def load_artifacts(folder: str | Path) -> dict[str, Any]:
    """The artifact set of a folder, as its manifest lists it: ``{"model": ..., "heads": [...],
    "survey": ... | None, "timings": ... | None, "explorers": {...}, "vocabulary": ..., "prompts": ...}``.

    Only files that ``manifest.json`` lists are read, each checked against the sha256 recorded
    there: a file of another run left in the folder (an explorer, the prompts), or one changed since
    it was written, is never shown as this run's. ``timings.json`` (kept across runs by design,
    :func:`merged_timings`) is read when present. ``model`` is ``model.json``; a set with only a
    survey (no head analysed, for example because no head beat chance) gets, in its place, the
    survey's model summary, config and provenance with no heads, so the report still has its
    overview, survey and reproducibility pages."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ArtifactError(f"{folder}: artifacts folder does not exist (run `headreport analyze` first)")
    manifest = read_manifest(folder)
    if manifest is None:
        state = "is not a valid artifact manifest" if (folder / MANIFEST).exists() else "is missing"
        raise ArtifactError(f"{folder / MANIFEST}: {state}, so this folder holds no complete artifact set "
                            "(an interrupted run, or files not written by headreport); run `headreport analyze` "
                            "or `headreport build` again")
    listed = manifest["files"]

    def read(name: str, kind: str) -> dict[str, Any] | None:
        if name not in listed:
            return None
        if not _is_own_file(folder, name, listed[name]):
            raise ArtifactError(f"{folder / name}: missing or changed since it was written (its sha256 is not "
                                f"the one {MANIFEST} records); run `headreport analyze` again")
        return read_artifact(folder / name, kind=kind)

    survey = read("survey.json", "survey")
    model = read("model.json", "model")
    if model is None:
        if survey is None:
            raise ArtifactError(f"{folder / MANIFEST}: lists neither model.json nor survey.json")
        settings = survey["results"]["settings"]
        model = {"schema_version": survey["schema_version"], "kind": "model", "config": survey["config"],
                 "provenance": survey["provenance"],
                 "results": {"model": survey["results"]["model"], "heads": [],
                             "effective_embedding": {"variant": settings["effective_embedding_variant"],
                                                     "rank_variant": settings["rank_embedding"]}}}
    heads = []
    for label in model["results"]["heads"]:
        doc = read(head_filename(label), "head")
        if doc is None:
            raise ArtifactError(f"{folder / MANIFEST}: model.json names head {label}, but "
                                f"{head_filename(label)} is not in the set")
        heads.append(doc)
    timings = read_artifact(folder / "timings.json") if (folder / "timings.json").is_file() else None
    explorers = {label: doc for label in model["results"]["heads"]
                 if (doc := read(explorer_filename(label), "explorer")) is not None}
    vocabulary = read("vocabulary.json", "vocabulary") if explorers else None
    check_explorers(folder, model, explorers, vocabulary)
    prompts = read("prompts.json", "prompts")
    if prompts is not None:
        check_prompts(folder / "prompts.json", prompts, model["results"]["heads"])
    return {"model": model, "heads": heads, "survey": survey, "timings": timings, "explorers": explorers,
            "vocabulary": vocabulary, "prompts": prompts}


def check_explorers(folder: Path, model: dict[str, Any], explorers: dict[str, Any], vocabulary: Any) -> None:
    """What the schema cannot say: the explorer payloads and the vocabulary fit the model (the
    vocabulary size, the list length, the byte count the shapes imply)."""
    if not explorers:
        return
    d_vocab = model["results"]["model"]["d_vocab"]
    if vocabulary is None:
        raise ArtifactError(f"{folder / 'vocabulary.json'}: missing, but explorer artifacts need it")
    if vocabulary["d_vocab"] != d_vocab or len(vocabulary["tokens"]) != d_vocab:
        raise ArtifactError(f"{folder / 'vocabulary.json'}: {len(vocabulary['tokens'])} tokens, the model has {d_vocab}")
    for label, doc in explorers.items():
        where = folder / explorer_filename(label)
        k = doc["k"]
        want = {f: [d_vocab] if f.endswith("_rank") else [d_vocab, k] for f in doc["fields"]}
        itemsize = 2 if doc["dtype"] == "uint16" else 4
        values = sum(math.prod(s) for s in want.values()) + sum(doc["palettes"].values())
        if doc["head"] != label or doc["d_vocab"] != d_vocab or doc["shapes"] != want or \
                any(p > d_vocab for p in doc["palettes"].values()) or doc["raw_bytes"] != itemsize * values:
            raise ArtifactError(f"{where}: the explorer lists do not fit head {label} of a {d_vocab}-token model "
                                f"(shapes {doc['shapes']}, {doc['raw_bytes']} bytes)")


def check_prompts(path: Path, doc: dict[str, Any], heads: list[str]) -> None:
    """What the schema cannot say: the prompt records fit the analysed heads and the prompts."""
    r = doc["results"]
    if not r["heads"] and not r["prompts"]:  # not computed on this model: the note says why
        return
    if set(r["heads"]) != set(heads):
        raise ArtifactError(f"{path}: holds heads {sorted(r['heads'])}, the analysis has {heads}")
    lengths = [len(p["tokens"]) for p in r["prompts"]]
    for label, h in r["heads"].items():
        ok = len(h["records"]) == len(lengths) and h["summary"]["n_prompts"] == len(lengths) and all(
            len(rec["pattern"]) == n and len(rec["sources"]) == n
            and all(len(row) == i + 1 for i, row in enumerate(rec["pattern"]))
            and [s["pos"] for s in rec["sources"]] == list(range(n))
            for rec, n in zip(h["records"], lengths))
        if not ok:
            raise ArtifactError(f"{path}: head {label}'s records do not fit the {len(lengths)} prompts' tokens")
