"""The artifact contract: versioned JSON files, validated, deterministic, written atomically.

Files in an artifacts folder (docs/artifacts.md describes each field):

* ``model.json``          kind "model": config, provenance, model dimensions, the heads analysed.
* ``head_L.H.json``       kind "head": one head's results (spectra, singular directions, cos²
                          rankings, names vs generic words, OV self-suppression and QK self-attention
                          ranks, the most suppressed tokens).
* ``explorer_L.H.json``   kind "explorer": the token explorer's lists of one head (encoded).
* ``vocabulary.json``     kind "vocabulary": every token as decoded (the explorer's search).
* ``prompts.json``        kind "prompts": the analysed heads on real prompts.
* ``survey.json``         kind "survey": every head's statistics, ranking and atlas signatures.
* ``manifest.json``       kind "manifest": every file above with its sha256, and the staleness key
                          (the only files a reader reads are those it lists).
* ``timings.json``        kind "timings": wall-clock seconds per step. Kept apart on purpose (and out
                          of the manifest): every other file is byte-identical for the same inputs
                          (sorted keys, floats rounded to 7 significant digits, no timestamps).

The JSON Schema is ``analysis/data/artifact.schema.json``; :func:`write_artifacts` validates every
document before writing any, and :func:`read_artifact` validates on read.
"""

from __future__ import annotations

import binascii
import functools
import hashlib
import importlib.metadata
import json
import math
import os
import re
import shutil
import tempfile
import zlib
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any

from . import attention_patterns
from .errors import UserError

SCHEMA_VERSION = "3.2"
MANIFEST = "manifest.json"
#: the step timings: merged across the runs into one folder (:func:`merged_timings`), so not hashed
TIMINGS = "timings.json"
#: the other files this tool writes with its temp files: the manifests (artifacts, report)
OWN_NAMES = {MANIFEST, "report.json"}
SIGNIFICANT_DIGITS = 7


class OutputOwnershipError(UserError):
    """An output folder holds files of the names this tool writes that it did not write."""


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
    return json.loads(resources.files("headreport.analysis.data").joinpath("artifact.schema.json").read_text("utf-8"))


@functools.lru_cache(maxsize=1)
def _validator():
    import jsonschema  # noqa: PLC0415 - 0.2 s: the CLI imports this module before it refuses a bad config

    return jsonschema.Draft202012Validator(schema())


def validate(doc: dict[str, Any], where: str = "artifact") -> None:
    """Raise :class:`ArtifactError` if ``doc`` does not follow the schema: the message names the
    file, the JSON path (``/results/head/label``) and the rule that failed (``pattern``)."""
    import jsonschema  # noqa: PLC0415 - as in _validator

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


#: the names this tool writes in an artifacts folder (besides its own temp files)
ARTIFACT_NAME = re.compile(
    r"\A(?:model|survey|timings|vocabulary|prompts|(?:head|explorer)_[0-9]{1,6}\.[0-9]{1,6})\.json\Z")
#: a temp file of ours: ``.<artifact name>.headreport-<pid>-<random>.tmp`` (see :func:`_write_temp`)
TEMP_NAME = re.compile(r"\A\.(?P<name>[^/]+)\.headreport-(?P<pid>[0-9]{1,10})-[A-Za-z0-9_]{4,32}\.tmp\Z")
#: a render's staging folder of ours: ``.headreport-render-<pid>-<random>`` (report/render.py)
STAGE_NAME = re.compile(r"\A\.headreport-render-(?P<pid>[0-9]{1,10})-[A-Za-z0-9_]{4,32}\Z")


def remove_stale_temps(folder: Path) -> list[Path]:
    """Remove the temp files and staging folders that a killed headreport process (SIGKILL, power
    loss) left in ``folder``: only names this tool makes (:data:`TEMP_NAME` for one of its own file
    names, :data:`STAGE_NAME`), of a process that is no longer alive, and never through a link (a
    link is removed itself, a real folder emptied). A live process's are kept; anything else is
    never touched."""
    removed = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for entry in entries:
        temp, stage = TEMP_NAME.match(entry.name), STAGE_NAME.match(entry.name)
        ours = (temp is not None and (ARTIFACT_NAME.match(temp["name"]) or temp["name"] in OWN_NAMES)
                and not entry.is_dir()) or (stage is not None and entry.is_dir() and not entry.is_symlink())
        if not ours or pid_alive(int((temp or stage)["pid"])):
            continue
        if stage is not None:
            shutil.rmtree(entry, ignore_errors=True)
        else:
            _unlink_quietly(entry)
        removed.append(entry)
    return removed


def _write_temp(path: Path, text: str) -> Path:
    """Write ``text`` to a new temp file beside ``path`` (fsynced); removed again on any failure.
    The name carries this process's id, so a later run can tell a dead run's leftovers."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.headreport-{os.getpid()}-", suffix=".tmp")
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

    The folder must hold no file of ours' names that this tool did not write
    (:func:`check_artifacts_owned`). The artifact-set manifest (``manifest.json``) lists every file
    of the set with its sha256 and the staleness key ``inputs`` (:mod:`analysis.staleness`): files
    of an earlier run with the same key stay listed, others drop out and are removed
    (:func:`remove_dropped`: only files the earlier manifest lists, unchanged since written, never
    through a link), so that no optional artifact of another run (an explorer, the prompts) stays
    beside the new set; :func:`load_artifacts` reads only what the manifest lists. The order makes
    every crash safe: the dropped files go first (still listed by the earlier manifest), then the new
    manifest is written, atomically, then the files are renamed into place. A run killed between two
    renames leaves a manifest whose sha256s do not match: ``render`` refuses such a set and
    ``headreport build`` re-analyses it, and every file in it is still listed, so still ours."""
    texts = {}
    for name, doc in docs.items():
        doc = canonical(doc)
        validate(doc, where=name)
        texts[name] = dumps(doc)
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out_dir)
    check_artifacts_owned(out_dir, names=texts)
    previous = read_manifest(out_dir)  # this version's: its inputs can be compared
    earlier = _loose_manifest(out_dir)  # any version's: which files are ours to drop
    leftovers = upgrade_leftovers(out_dir, earlier)
    staged: list[tuple[Path, Path]] = []
    try:
        for name, text in texts.items():
            staged.append((_write_temp(out_dir / name, text), out_dir / name))
        if inputs is not None:
            manifest = new_manifest(out_dir, texts, inputs, previous)
            if earlier is not None:
                remove_dropped(out_dir, earlier, keep=set(manifest["files"]))
            for name in leftovers:  # an earlier version's unlisted files of ours: not part of this set
                if name not in manifest["files"] and name != TIMINGS:
                    _unlink_quietly(out_dir / name)
            # until every rename is done, the files being replaced are ours by their old sha256 too
            replacing = {name: sha256_file(out_dir / name) for name in texts
                         if (out_dir / name).is_file() and not (out_dir / name).is_symlink()}
            _write_manifest(out_dir, {**manifest, "replacing": dict(sorted(replacing.items()))})
        else:
            _unlink_quietly(out_dir / MANIFEST)  # a set without a key is no complete set
        for tmp, path in staged:
            os.replace(tmp, path)
    except BaseException:
        for tmp, _ in staged:
            _unlink_quietly(tmp)
        raise
    if inputs is not None:
        _write_manifest(out_dir, manifest)
    return [path for _, path in staged]


def new_manifest(out_dir: Path, texts: dict[str, str], inputs: dict[str, Any],
                 previous: dict[str, Any] | None) -> dict[str, Any]:
    """The manifest of the set being written: the sha256 of every new file (``texts``: name → JSON
    text; not the timings, which differ run to run, so the manifest stays deterministic) and, when
    the ``previous`` manifest has the same staleness key ``inputs``, the earlier files of that run
    still on disk unchanged (they still belong to the set)."""
    files = {}
    if previous is not None and _key_core(previous.get("inputs", {})) == _key_core(inputs):
        files.update({n: h for n, h in previous["files"].items() if _is_own_file(out_dir, n, {h})})
    files.update({name: hashlib.sha256(text.encode("utf-8")).hexdigest() for name, text in texts.items()
                  if name != TIMINGS})
    return {"schema_version": SCHEMA_VERSION, "kind": "manifest", "files": dict(sorted(files.items())),
            "inputs": inputs}


def _write_manifest(out_dir: Path, manifest: dict[str, Any]) -> None:
    validate(manifest, where=MANIFEST)
    atomic_write_text(out_dir / MANIFEST, json.dumps(manifest, sort_keys=True, indent=1) + "\n")


def owned_hashes(manifest: dict[str, Any], name: str) -> set[str]:
    """The contents (sha256) ``name`` may have and still be this tool's, by ``manifest``: the one it
    lists and, while a write is renaming files into place, the one being replaced."""
    return {h for h in (manifest.get("files", {}).get(name), (manifest.get("replacing") or {}).get(name))
            if isinstance(h, str)}


def _loose_json(path: Path) -> dict[str, Any] | None:
    """A plain file's JSON object (never through a link), read loosely for ownership only; else None."""
    if path.is_symlink() or not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    return doc if isinstance(doc, dict) else None


def _loose_manifest(out_dir: Path) -> dict[str, Any] | None:
    """``manifest.json`` read loosely, for ownership only: any JSON object of kind ``manifest`` with a
    ``files`` object (this version's or an earlier one's), or None."""
    doc = _loose_json(out_dir / MANIFEST)
    return doc if doc is not None and doc.get("kind") == "manifest" and isinstance(doc.get("files"), dict) else None


def _kind_of_name(name: str) -> str | None:
    """The artifact kind a file of this name holds (``head_1.2.json`` → ``head``), or None."""
    if not ARTIFACT_NAME.match(name):
        return None
    stem = name.removesuffix(".json")
    return stem.split("_")[0] if "_" in stem else stem


def upgrade_leftovers(out_dir: Path, manifest: dict[str, Any] | None) -> list[str]:
    """Files an earlier headreport left unlisted beside its manifest (a manifest of an earlier schema
    version, which kept a survey or an explorer of other inputs on disk without listing it): artifact
    names whose JSON is the artifact kind the name says. They are ours, so a new run may replace or
    remove them; under this version's manifest every file of ours is listed, and none is adopted."""
    if manifest is None or manifest.get("schema_version") == SCHEMA_VERSION:
        return []
    listed = set(manifest["files"])
    return sorted(e.name for e in out_dir.iterdir() if e.name not in listed and _kind_of_name(e.name)
                  and (_loose_json(e) or {}).get("kind") == _kind_of_name(e.name))


def foreign_artifacts(out_dir: Path, names: Iterable[str] = ()) -> list[str]:
    """The entries of ``out_dir`` with a name this tool writes (an artifact name, ``manifest.json``,
    or one of ``names``) that it did not write: not listed in the folder's manifest with their
    current content (:func:`owned_hashes`), a link, or a folder; a ``manifest.json`` that is not a
    manifest. Files with other names are never touched. ``timings.json``, which runs merge and the
    manifest does not hash, is ours when it is a timings artifact, and so are an earlier version's
    unlisted leftovers (:func:`upgrade_leftovers`)."""
    try:
        present = [e for e in out_dir.iterdir()
                   if ARTIFACT_NAME.match(e.name) or e.name == MANIFEST or e.name in set(names)]
    except (FileNotFoundError, NotADirectoryError):
        return []
    manifest = _loose_manifest(out_dir)
    leftovers = set(upgrade_leftovers(out_dir, manifest))
    foreign = []
    for entry in present:
        if entry.name == MANIFEST:
            ours = manifest is not None
        elif manifest is None:
            ours = False
        elif entry.name == TIMINGS:  # merged across runs, never hashed: ours when it is a timings artifact
            ours = (_loose_json(entry) or {}).get("kind") == "timings"
        else:
            ours = entry.name in leftovers or _is_own_file(out_dir, entry.name, owned_hashes(manifest, entry.name))
        if not ours:
            foreign.append(entry.name)
    return sorted(foreign)


def check_artifacts_owned(out_dir: Path, names: Iterable[str] = ()) -> None:
    """Refuse (:class:`OutputOwnershipError`, exit 2) an artifacts folder holding a file of ours' names
    that this tool did not write: it would be overwritten or deleted. Checked before any heavy work,
    and again right before writing."""
    foreign = foreign_artifacts(out_dir, names)
    if foreign:
        shown = ", ".join(repr(str(out_dir / n)) for n in foreign[:3]) + (" ..." if len(foreign) > 3 else "")
        raise OutputOwnershipError(
            f"--out: {shown} {'is' if len(foreign) == 1 else 'are'} not headreport's (not listed in "
            f"{str(out_dir / MANIFEST)!r} as written, or a link, or a folder): "
            "headreport writes artifacts of these names "
            "there and never overwrites or deletes a file it did not write; move "
            f"{'it' if len(foreign) == 1 else 'them'} away or choose another --out")


def _is_own_file(out_dir: Path, name: str, hashes: set[str]) -> bool:
    """``out_dir/name`` is a plain file (no link) directly in ``out_dir`` whose content is one a
    manifest recorded (``hashes``, sha256): a file this tool wrote and nobody changed since."""
    path = out_dir / name
    if Path(name).name != name or path.is_symlink() or not path.is_file():
        return False
    try:
        return sha256_file(path) in hashes
    except OSError:
        return False


def remove_dropped(out_dir: Path, previous: dict[str, Any], keep: set[str]) -> list[str]:
    """Remove the files the ``previous`` manifest (of any version) listed that the new set does not ``keep``: only
    those still as written (:func:`_is_own_file`); a changed file, a link or a folder in their place
    is left alone (and is not part of the set). Returns the names removed."""
    removed = []
    for name in sorted(previous["files"]):
        if name in keep or name == MANIFEST or not _is_own_file(out_dir, name, owned_hashes(previous, name)):
            continue
        _unlink_quietly(out_dir / name)
        removed.append(name)
    return removed


def _key_core(inputs: dict[str, Any]) -> dict[str, Any]:
    """The staleness key without its stat cache (times differ, contents do not)."""
    return {k: v for k, v in inputs.items() if k != "checkpoint_files"}


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in 4 MiB chunks (a checkpoint, an artifact, an export)."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def package_versions(names: Iterable[str], missing: str | None = "not installed") -> dict[str, str]:
    """Each distribution's installed version (``importlib.metadata``), ``missing`` for one that is
    not installed (left out when ``missing`` is None): the provenance of artifacts and reports."""
    out = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            if missing is not None:
                out[name] = missing
    return out


def code_digest(packages: Iterable[str], suffixes: tuple[str, ...]) -> str:
    """sha256 over every file whose name ends in one of ``suffixes`` in the folders of the installed
    ``packages`` (sub-folders included, ``__pycache__`` not), in sorted order, each file's bytes
    preceded by its name ``package/relative/path``: the code part of a staleness or render key."""
    h = hashlib.sha256()
    for package in packages:
        root = Path(str(resources.files(package)))
        for path in sorted(root.rglob("*")):
            if path.is_file() and path.suffix in suffixes and "__pycache__" not in path.parts:
                h.update(f"{package}/{path.relative_to(root).as_posix()}".encode())
                h.update(path.read_bytes())
    return h.hexdigest()


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
    it was written, is never shown as this run's. ``model`` is ``model.json``; a set with only a
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
        if not _is_own_file(folder, name, {listed[name]}):
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
    check_heads(folder, model, heads)
    if survey is not None:
        check_survey(folder / "survey.json", survey)
    timings = read_artifact(folder / TIMINGS, kind="timings") if (folder / TIMINGS).is_file() else None
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
        raise ArtifactError(
            f"{folder / 'vocabulary.json'}: {len(vocabulary['tokens'])} tokens, the model has {d_vocab}")
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
        check_explorer_payload(where, doc, d_vocab)


def check_explorer_payload(where: Path, doc: dict[str, Any], d_vocab: int) -> None:
    """The payload inflates to bytes with the sha256 it records, and every rank lies in 1..d_vocab and
    every listed id in 0..d_vocab − 1 (the page would otherwise say "ranks 65,535 of 50,257")."""
    from .explorer_codec import decode  # noqa: PLC0415 - numpy only when an explorer payload is checked

    try:
        arrays = decode(doc)
    except (ValueError, zlib.error, binascii.Error, IndexError, TypeError) as exc:
        raise ArtifactError(f"{where}: the explorer payload is corrupt ({str(exc)[:200]})") from None
    for field, a in arrays.items():
        lo, hi = (1, d_vocab) if field.endswith("_rank") else (0, d_vocab - 1)
        if a.size and (int(a.min()) < lo or int(a.max()) > hi):
            raise ArtifactError(f"{where}: explorer field {field} holds values outside {lo}..{hi} "
                                f"(min {int(a.min())}, max {int(a.max())}) for a {d_vocab}-token model")


def check_survey(where: Path, survey: dict[str, Any]) -> None:
    """Every surveyed head is the head its label says, inside the model, and listed once."""
    m = survey["results"]["model"]
    seen = set()
    for r in survey["results"]["heads"]:
        if r["label"] != f"{r['layer']}.{r['head']}" or r["label"] in seen or not (
                r["layer"] < m["n_layers"] and r["head"] < m["n_heads"] and r["kv_head"] < m["n_kv_heads"]):
            raise ArtifactError(f"{where}: head record {r['label']} (layer {r['layer']}, head {r['head']}) does not "
                                f"fit the model's {m['n_layers']} layers × {m['n_heads']} heads, or is listed twice")
        seen.add(r["label"])


def check_heads(folder: Path, model: dict[str, Any], heads: list[dict[str, Any]]) -> None:
    """What the schema cannot say: each head file is the head its name says, inside the model."""
    m = model["results"]["model"]
    for label, doc in zip(model["results"]["heads"], heads, strict=True):
        h = doc["results"]["head"]
        where = folder / head_filename(label)
        if h["label"] != label or f"{h['layer']}.{h['head']}" != label:
            raise ArtifactError(f"{where}: holds head {h['label']} (layer {h['layer']}, head {h['head']}), "
                                f"not head {label}")
        if not (h["layer"] < m["n_layers"] and h["head"] < m["n_heads"] and h["kv_head"] < m["n_kv_heads"]):
            raise ArtifactError(f"{where}: head {label} (key/value head {h['kv_head']}) is outside the model's "
                                f"{m['n_layers']} layers × {m['n_heads']} heads ({m['n_kv_heads']} key/value heads)")


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
            attention_patterns.fits(rec["pattern"], n) and len(rec["sources"]) == n
            and [s["pos"] for s in rec["sources"]] == list(range(n))
            for rec, n in zip(h["records"], lengths))
        if not ok:
            raise ArtifactError(f"{path}: head {label}'s records do not fit the {len(lengths)} prompts' tokens")
