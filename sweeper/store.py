"""Where a job's MLflow store is, and whether it can be used: the one place that knows the
store's locations (a run dir's SQLite file and artifact folder, or the spec's URIs) and checks
them (a known scheme, a writable file or folder, a server that answers, a driver that
imports, an existing store for the commands that only read).

Nothing here writes: stores are opened read-only.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sqlite3
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlparse

from sweeper.errors import SpecError, shown
from sweeper.paths import check_file, check_folder

if TYPE_CHECKING:
    from sweeper.spec import JobSpec

SERVER_TIMEOUT_S = 5.0  # a tracking server that does not answer /health in this is down
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


# --- where a job's store is ------------------------------------------------------------------

STORE_FILE = "mlflow.db"  # the default SQLite store, in the job's run dir
ARTIFACTS_DIR = "artifacts"  # the default artifact folder, beside it


def default_store(run_dir: Path) -> Path:
    """The SQLite file of a job that names no tracking URI."""
    return run_dir / STORE_FILE


def store_uris(
    run_dir: Path, uri: str | None = None, artifacts: str | None = None
) -> tuple[str, str | None]:
    """(tracking URI, artifact location): the given ones, else SQLite + a folder in `run_dir`.

    A tracking server keeps the artifacts itself (None: its `--artifacts-destination`, served
    over HTTP), so workers and drivers on other machines need no shared folder.
    """
    uri = uri or f"sqlite:///{default_store(run_dir)}"
    if artifacts is None and not uri.startswith(("http://", "https://")):
        artifacts = (run_dir / ARTIFACTS_DIR).as_uri()
    return uri, artifacts


def default_uris(spec: JobSpec) -> tuple[str, str | None]:
    """A job's (tracking URI, artifact location): the spec's, else the run dir's defaults."""
    return store_uris(spec.run_dir.resolve(), spec.tracking.uri, spec.tracking.artifact_location)


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
