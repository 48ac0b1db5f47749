"""What `sweeper run` needs from the machine it runs on, checked before anything is created.

The schema (`sweeper.spec`) says whether a spec is well formed; this module says whether *this
machine* can run it: the run dir and the tracking store can be written, the tracking server
answers, the artifact store's client package is installed, and a trial's CPUs and GPUs exist
here. `sweeper validate` and `sweeper run` call the same `check_run`, so validate passes only
what run can start; each problem is one `SpecError` naming the spec field to fix.

Nothing here writes: a folder's writability is tried with a temporary folder that is removed at
once, and stores are opened read-only.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sqlite3
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlparse

from sweeper.errors import SpecError, shown

if TYPE_CHECKING:
    from sweeper.spec import JobSpec

SERVER_TIMEOUT_S = 5.0  # a tracking server that does not answer /health in this is down
NAME_MAX = 255  # bytes in one path component (Linux, macOS)
DB_SCHEMES = ("postgresql", "mysql", "mssql")
TRACKING_SCHEMES = ("sqlite", "file", "http", "https", *DB_SCHEMES, "databricks")
# artifact URI scheme → (module to import, pip package): MLflow's artifact repositories
ARTIFACT_CLIENTS = {
    "s3": ("boto3", "boto3"),
    "gs": ("google.cloud.storage", "google-cloud-storage"),
    "wasbs": ("azure.storage.blob", "azure-storage-blob azure-identity"),
    "abfss": ("azure.storage.filedatalake", "azure-storage-file-datalake azure-identity"),
    "hdfs": ("pyarrow", "pyarrow"),
    "viewfs": ("pyarrow", "pyarrow"),
    "sftp": ("pysftp", "pysftp"),
    "ftp": ("ftplib", "(the standard library)"),
    "mlflow-artifacts": ("mlflow", "mlflow"),  # served by the tracking server
    "http": ("mlflow", "mlflow"),
    "https": ("mlflow", "mlflow"),
}
SQLITE_MAGIC = b"SQLite format 3\x00"
HOW_TRACKING = (
    "use sqlite:///PATH/mlflow.db, file:///ABS/FOLDER, http(s)://MLFLOW-SERVER or "
    "postgresql://…, or leave it out (runs/<name>/mlflow.db)"
)


@dataclass(frozen=True)
class Destinations:
    """Where a job writes: its run dir (Ray's results), the MLflow store, the artifacts."""

    run_dir: Path
    tracking_uri: str
    artifact_location: str | None  # None: the tracking server keeps them

    def lines(self) -> list[str]:
        artifacts = self.artifact_location or "kept by the tracking server"
        return [
            f"run dir {self.run_dir} (Ray Tune's results)",
            f"tracking store {shown(self.tracking_uri)}",
            f"artifacts {artifacts}",
        ]


def check_run(spec: JobSpec, *, this_machine: bool = True) -> Destinations:
    """Everything `run` needs from this machine; returns where it will write.
    `this_machine=False`: a spec for a cluster (`validate --cluster`), whose CPUs and GPUs
    `submit` checks there."""
    from sweeper.tracking.schema import default_uris

    check_folder(spec.run_dir, "tracking.run_dir")
    uri, artifacts = default_uris(spec)
    if spec.tracking.uri is None and (odd := set("?#%") & set(str(spec.run_dir.resolve()))):
        raise SpecError(
            "tracking.run_dir",
            f"holds {''.join(sorted(odd))!r}, which the store's sqlite:/// URI reads as its "
            "options (the store would land elsewhere); name a folder without ?, # or %",
        )
    check_tracking(uri, "tracking.uri" if spec.tracking.uri else "tracking.run_dir")
    check_one_store(uri)
    if artifacts is not None:
        check_artifacts(artifacts, "tracking.artifact_location")
    if this_machine:
        check_resources(spec)
    return Destinations(spec.run_dir.resolve(), uri, artifacts)


def check_one_store(uri: str) -> None:
    """`run` writes where its spec says; `report` and `dashboard` read $MLFLOW_TRACKING_URI
    when given no store. Set to another store, it would send them to where this job is not,
    so it is refused here rather than silently ignored."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if not env or _same_store(env, uri):
        return
    raise SpecError(
        "MLFLOW_TRACKING_URI",
        f"is {shown(env)}, but this job writes to {shown(uri)} (its tracking.uri, else its "
        "run dir); put that URI in the spec's tracking.uri, or unset MLFLOW_TRACKING_URI",
    )


def _same_store(a: str, b: str) -> bool:
    if scheme_of(a) == scheme_of(b) == "sqlite":
        try:
            pa, pb = sqlite_path(a), sqlite_path(b)
        except ValueError:
            return False
        return pa is not None and pb is not None and pa.resolve() == pb.resolve()
    return a.rstrip("/") == b.rstrip("/")


# --- folders and files ----------------------------------------------------------------------


def check_folder(path: Path, field: str) -> None:
    """`path` is a folder this process can write in, or one it can create."""
    _check_path_form(path, field)
    existing = path
    while not existing.exists() and existing != existing.parent:
        if existing.is_symlink():  # a dangling link: mkdir would fail on it
            raise SpecError(field, f"{existing} is a broken symbolic link")
        existing = existing.parent
    if not existing.is_dir():
        where = "" if existing == path else f" (in {path})"
        raise SpecError(field, f"{existing}{where} is a file, not a folder; give a folder path")
    _check_writable(existing, path, field)


def check_file(
    path: Path, field: str, magic: bytes | None = None, make_folder: bool = True
) -> None:
    """`path` is a regular file this process may overwrite (its folder writable), or one it can
    create; `magic`: an existing non-empty file must start with these bytes; `make_folder`:
    the writer creates missing folders on the way (else the folder must exist)."""
    _check_path_form(path, field)
    if path.exists() or path.is_symlink():
        if not path.is_file():
            raise SpecError(field, f"{path} exists and is not a regular file")
        if magic is not None and path.stat().st_size:
            with open(path, "rb") as f:
                if f.read(len(magic)) != magic:
                    raise SpecError(field, f"{path} exists and is not a SQLite database")
        if not os.access(path, os.R_OK | os.W_OK):
            raise SpecError(field, f"{path} is not writable by this user")
    if not make_folder and not path.parent.is_dir():
        raise SpecError(field, f"folder {path.parent} does not exist; create it first")
    check_folder(path.parent, field)


def _check_path_form(path: Path, field: str) -> None:
    text = str(path)
    if "\x00" in text:
        raise SpecError(field, "holds a NUL byte, which no path can")
    if len(os.fsencode(text)) >= 4096:
        raise SpecError(field, "longer than the 4,096 bytes a path may have")
    for part in path.parts:
        if len(os.fsencode(part)) > NAME_MAX:
            raise SpecError(field, f"a folder or file name over {NAME_MAX} bytes ({part[:20]}…)")


def _check_writable(existing: Path, wanted: Path, field: str) -> None:
    """Try it: permissions, read-only mounts and pseudo file systems (/proc, /sys, where even
    root cannot create) all show up as a folder that cannot be made. The try is removed."""
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".sweeper-write-check-", dir=existing))
    except OSError as e:
        why = e.strerror or str(e)
        raise SpecError(field, f"cannot write in {existing} (for {wanted}): {why}") from None


# --- the tracking store and the artifact store ----------------------------------------------


def scheme_of(uri: str) -> str:
    """`postgresql+psycopg2://…` → `postgresql`; a plain path → ''."""
    return urlparse(uri).scheme.split("+")[0].lower()


def sqlite_path(uri: str) -> Path | None:
    """The file of a `sqlite:///PATH` URI (relative to the working dir unless PATH is absolute);
    None for an in-memory database."""
    rest = uri.split(":", 1)[1]
    if not rest.startswith("///"):
        raise ValueError("expected sqlite:///PATH (three slashes; four for an absolute path)")
    path = unquote(rest[3:].split("?", 1)[0])
    return None if path in ("", ":memory:") else Path(path)


def file_path(uri: str) -> Path:
    """The folder of a `file:///ABS/FOLDER` URI or a plain path."""
    if scheme_of(uri) == "file":
        return Path(unquote(urlparse(uri).path))
    return Path(uri)


def check_tracking(uri: str, field: str) -> None:
    """The store `run` would write: a known scheme, a writable file or folder, a server that
    answers, a database driver that imports."""
    scheme = scheme_of(uri)
    if scheme not in TRACKING_SCHEMES:
        what = f"unknown scheme {scheme!r}" if scheme else "no scheme"
        raise SpecError(field, f"{shown(uri)!r}: {what}; {HOW_TRACKING}")
    if scheme == "sqlite":
        try:
            path = sqlite_path(uri)
        except ValueError as e:
            raise SpecError(field, f"{uri!r}: {e}") from None
        if path is None:
            raise SpecError(field, "an in-memory store loses every result; give a file")
        check_file(path, field, magic=SQLITE_MAGIC)
        if path.is_file() and path.stat().st_size and (damage := sqlite_damage(path)):
            raise SpecError(
                field,
                f"{path} is a damaged SQLite database ({damage}); restore it from a copy, or "
                "move it aside to start a new store",
            )
    elif scheme == "file":
        check_folder(file_path(uri), field)
    elif scheme in ("http", "https"):
        problem = server_problem(uri)
        if problem:
            raise SpecError(field, problem)
    elif scheme in DB_SCHEMES:
        _check_db_driver(uri, field)


def sqlite_damage(path: Path) -> str | None:
    """What SQLite's own check finds wrong with a database (truncated, overwritten pages),
    read-only; None when it is whole."""
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=10)
    except sqlite3.Error as e:
        return str(e)
    with contextlib.closing(db):
        try:
            rows = db.execute("pragma quick_check(1)").fetchall()
        except sqlite3.Error as e:
            return str(e)
    verdict = rows[0][0] if rows else "no answer"
    return None if verdict == "ok" else " ".join(str(verdict).split())[:200]


def server_problem(uri: str, timeout: float = SERVER_TIMEOUT_S) -> str | None:
    """Why the MLflow server at `uri` cannot be used now (None: it answers /health).
    Credentials in the URI (`user:secret@`) go as basic authentication, as MLflow sends
    them, and are never printed."""
    parsed = urlparse(uri)
    if not parsed.hostname:
        return f"{shown(uri)!r} names no host; expected http(s)://HOST:PORT"
    plain = parsed._replace(netloc=parsed.netloc.rpartition("@")[2]).geturl()
    request = urllib.request.Request(plain.rstrip("/") + "/health")
    if parsed.username is not None:
        import base64

        pair = f"{unquote(parsed.username)}:{unquote(parsed.password or '')}".encode()
        request.add_header("Authorization", "Basic " + base64.b64encode(pair).decode())
    uri = shown(uri)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            answer.read(1024)
    except urllib.error.HTTPError as e:
        if e.code in (401, 403):
            return None  # it answers, behind authentication (MLFLOW_TRACKING_USERNAME/PASSWORD)
        return f"{uri} answers /health with HTTP {e.code}: is it an MLflow server?"
    except (OSError, ValueError) as e:  # refused, unreachable, timed out, a bad port
        reason = getattr(e, "reason", None) or e
        reason = getattr(reason, "strerror", None) or str(reason)
        return (
            f"no MLflow server answers at {uri} ({reason}); start it "
            "(cluster/mlflow-server.sh start) or fix the URI"
        )
    return None


def _check_db_driver(uri: str, field: str) -> None:
    try:
        from sqlalchemy.engine import make_url

        make_url(uri).get_dialect().import_dbapi()
    except ImportError as e:
        raise SpecError(
            field,
            f"{uri.split('://')[0]}: its database driver is not installed ({e}); install it, "
            "or name one that is (postgresql+psycopg2://…)",
        ) from None
    except Exception as e:  # a malformed URL, an unknown dialect
        raise SpecError(field, f"{uri!r}: {' '.join(str(e).split())[:200]}") from None


def check_artifacts(location: str, field: str) -> None:
    """The artifact store: a writable folder, or a scheme whose client package imports."""
    scheme = scheme_of(location)
    if scheme in ("", "file"):
        check_folder(file_path(location), field)
        return
    if scheme not in ARTIFACT_CLIENTS:
        known = ", ".join(f"{s}://" for s in ARTIFACT_CLIENTS)
        raise SpecError(field, f"{location!r}: unknown scheme {scheme!r}; use a folder or {known}")
    module, package = ARTIFACT_CLIENTS[scheme]
    if not _importable(module):
        raise SpecError(
            field,
            f"{scheme}:// artifacts need {module}, not installed here: pip install {package} "
            "(on every machine that runs trials)",
        )


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # its parent package is missing
        return False


# --- resources ------------------------------------------------------------------------------


def check_resources(spec: JobSpec) -> None:
    """A trial must fit on this machine, or Ray holds it pending forever ("running 1").

    Skipped when RAY_ADDRESS names a cluster to join (its nodes are not this machine's).
    """
    if os.environ.get("RAY_ADDRESS"):
        return
    r = spec.resources
    cpus = os.cpu_count() or 1  # what the embedded Ray is started with (driver._init_ray)
    if r.cpus_per_trial > cpus:
        raise SpecError(
            "resources.cpus_per_trial",
            f"{r.cpus_per_trial:g} CPUs per trial, but this machine has {cpus}; a trial would "
            f"wait forever (use ≤ {cpus}, or `sweeper submit` to a cluster with such nodes; "
            "`sweeper validate --cluster` checks a spec meant for one)",
        )
    if r.gpus_per_trial > 0:
        gpus = _gpu_count()
        if r.gpus_per_trial > gpus:
            have = f"{gpus} GPUs" if gpus else "no GPU"
            raise SpecError(
                "resources.gpus_per_trial",
                f"{r.gpus_per_trial:g} GPUs per trial, but this machine has {have}; use "
                f"{'0 (CPU)' if not gpus else f'≤ {gpus}'} or `sweeper submit` to a GPU cluster",
            )


def _gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


# --- reading what exists, for read-only commands --------------------------------------------


def store_problem(uri: str, experiments: list[str] | tuple[str, ...] = ()) -> str | None:
    """Why `uri` is not an existing MLflow store holding `experiments` (None: it is one).

    Asked before any MLflow client opens it, because opening a SQLite file or a file-store
    folder that is not a store yet *creates* one (a schema, a Default experiment).
    Servers and databases are the client's to judge.
    """
    scheme = scheme_of(uri)
    if scheme == "sqlite":
        try:
            path = sqlite_path(uri)
        except ValueError as e:
            return f"{uri!r}: {e}"
        if path is None or not path.is_file():
            return f"no MLflow store at {path.resolve() if path else uri}"
        names = _sqlite_experiments(path)
        if names is None:
            return f"{path} is not an MLflow store (no experiments table)"
        missing = [e for e in experiments if e not in names]
        if missing:
            return f"no experiment {missing[0]!r} in {path}"
        return None
    if scheme in ("", "file"):
        folder = file_path(uri)
        if not folder.is_dir():
            return f"no MLflow file store at {folder}"
        return None
    if scheme not in TRACKING_SCHEMES:
        return f"{uri!r}: unknown scheme {scheme!r}; {HOW_TRACKING}"
    return None


def _sqlite_experiments(path: Path) -> set[str] | None:
    """Experiment names in a SQLite store, opened read-only; None if it is not a store."""
    with open(path, "rb") as f:
        if f.read(len(SQLITE_MAGIC)) != SQLITE_MAGIC:
            return None
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=10)
    except sqlite3.Error:
        return None
    with contextlib.closing(db):
        try:
            return {row[0] for row in db.execute("select name from experiments")}
        except sqlite3.Error:
            return None


def check_resumable(spec: JobSpec) -> None:
    """`resume` continues a job that ran: its store and experiment must exist already, or
    resuming would create an empty store just to say there is nothing in it."""
    from sweeper.tracking.schema import default_uris

    uri, _ = default_uris(spec)
    if scheme_of(uri) in ("sqlite", "file", ""):
        problem = store_problem(uri, [spec.name])
        if problem:
            raise SpecError("JOB", f"nothing to resume ({problem}); start it with `sweeper run`")
