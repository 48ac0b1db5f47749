"""`sweeper report` and `sweeper dashboard`: MLflow → one HTML file, or the same views live.

`register(subparsers)` adds both subcommands to the main `sweeper` parser; misuse raises
`SpecError` naming the argument, which the CLI turns into one line and exit code 2.
"""

from __future__ import annotations

import argparse
import errno
import ipaddress
import math
import os
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlparse

from sweeper.dashboard import DEFAULT_MLFLOW_UI
from sweeper.errors import SpecError

DEFAULT_PORT = 8050
WILDCARDS = ("", "0.0.0.0", "::")


def register(subparsers) -> None:
    report = subparsers.add_parser(
        "report", help="write one self-contained HTML report (charts, table) from MLflow"
    )
    report.add_argument("experiments", nargs="+", metavar="EXPERIMENT", help="job name(s)")
    report.add_argument("-o", "--output", default="report.html", help="HTML file to write")
    report.add_argument("--csv", metavar="PATH", help="also write the summary table as CSV")
    report.add_argument("--parquet", metavar="PATH", help="also write it as Parquet")
    report.add_argument(
        "--force",
        action="store_true",
        help="overwrite existing files even when they are not earlier reports (a store, say)",
    )
    dashboard = subparsers.add_parser(
        "dashboard", help="serve the report's views live on loopback, refreshed from MLflow"
    )
    dashboard.add_argument(
        "experiments", nargs="*", metavar="EXPERIMENT", help="job name(s); default: all"
    )
    dashboard.add_argument("--host", default="127.0.0.1", help="address to bind (loopback)")
    dashboard.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="also serve requests for this host name (default: loopback names only)",
    )
    dashboard.add_argument("--port", type=int, default=DEFAULT_PORT, help="0 picks a free one")
    dashboard.add_argument(
        "--refresh", type=float, default=5.0, metavar="SECONDS", help="page refresh interval"
    )
    for parser in (report, dashboard):
        parser.add_argument(
            "--tracking-uri",
            help="MLflow store (default: $MLFLOW_TRACKING_URI, else runs/EXPERIMENT/mlflow.db)",
        )
        parser.add_argument(
            "--mlflow-ui",
            default=DEFAULT_MLFLOW_UI,
            metavar="URL",
            help=f"base URL of `mlflow ui` for the run links (default {DEFAULT_MLFLOW_UI})",
        )
    report.set_defaults(func=cmd_report)
    dashboard.set_defaults(func=cmd_dashboard)


def tracking_uri(given: str | None, experiments: Sequence[str]) -> str:
    """The store to read: the argument, $MLFLOW_TRACKING_URI, or the embedded default's file."""
    uri = given or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        from sweeper.store import default_store

        candidates = {default_store(Path("runs", e)).resolve() for e in experiments}
        found = sorted(p for p in candidates if p.is_file())
        if len(found) != 1:
            why = "several stores match" if found else "runs/EXPERIMENT/mlflow.db does not exist"
            raise SpecError(
                "--tracking-uri",
                f"not given and {why}; pass e.g. --tracking-uri sqlite:///runs/quickstart/mlflow.db",
            )
        uri = f"sqlite:///{found[0]}"
    from sweeper.store import scheme_of, server_problem, store_problem

    problem = store_problem(uri)  # MLflow would make a store of an empty file or a new folder
    if not problem and scheme_of(uri) in ("http", "https"):
        problem = server_problem(uri)  # in seconds, not MLflow's minutes of retries
    if problem:
        raise SpecError("--tracking-uri", problem)
    return uri


def _check_url(value: str) -> str:
    parsed = urlparse(value)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise SpecError(
            "--mlflow-ui", f"expected an http(s) URL like http://127.0.0.1:5000, got {value!r}"
        )
    return value


def _writable(
    flag: str, value: str | None, force: bool = False, store: Path | None = None
) -> Path | None:
    """An output path; an existing file is overwritten only if it is an earlier output of the
    same kind (or with --force). A tracking store, and anything in a run dir, never is."""
    if value is None:
        return None
    path = Path(value)
    if why := _protected(path, store):
        raise SpecError(flag, f"{path} {why}; sweeper never writes there, not even with --force")
    if not path.parent.resolve().is_dir():
        raise SpecError(flag, f"folder {path.parent} does not exist")
    if path.is_dir():
        raise SpecError(flag, f"{path} is a folder; give a file name")
    if path.exists() and not path.is_file():
        raise SpecError(flag, f"{path} is not a regular file")
    if path.is_file() and path.stat().st_size and not force and not _own_output(flag, path):
        raise SpecError(
            flag,
            f"{path} exists and is not an earlier {OUTPUT_KINDS[flag]}; refusing to overwrite "
            "it (pass --force to overwrite anyway)",
        )
    return path


RUN_DIR_MARK = "mlflow.db"  # a run dir holds its store under this name (store.default_store)


def _protected(path: Path, store: Path | None) -> str | None:
    """Why `path` (its links resolved) must not be written: it is the store being read, any
    SQLite database, or a file inside a run dir (a folder holding an mlflow.db, or the
    store's own folder); None if it may be."""
    from sweeper.store import SQLITE_MAGIC

    real = path.resolve()
    if store is not None and real == store.resolve():
        return "is the tracking store this report reads"
    if real.is_file():
        with open(real, "rb") as f:
            if f.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC:
                return f"is a SQLite database ({real}), maybe a tracking store"
    folders = [*real.parents]
    if store is not None:
        run_dir = store.resolve().parent
        if run_dir in folders:
            return f"is inside the run dir {run_dir}"
    for folder in folders:
        if (folder / RUN_DIR_MARK).is_file():
            return f"is inside the run dir {folder}"
    return None


OUTPUT_KINDS = {
    "--output": "sweeper report",
    "--csv": "summary CSV",
    "--parquet": "summary Parquet",
}


def _own_output(flag: str, path: Path) -> bool:
    """Whether `path` looks like what `flag` writes: a report page, the summary's CSV header,
    a Parquet file with the summary's columns."""
    from sweeper.dashboard.views import SUMMARY_COLUMNS

    with open(path, "rb") as f:
        head = f.read(2048)
    if flag == "--output":
        return head.lstrip().lower().startswith(b"<!doctype html>") and b"<title>sweeper " in head
    if flag == "--csv":
        return head.split(b"\n", 1)[0].rstrip(b"\r").decode("utf-8", "replace") == ",".join(
            SUMMARY_COLUMNS
        )
    if not head.startswith(b"PAR1"):
        return False
    import pyarrow.parquet as pq

    try:
        return tuple(pq.read_schema(path).names) == tuple(SUMMARY_COLUMNS)
    except Exception:  # a damaged file: not ours to overwrite
        return False


def _store_file(uri: str) -> Path | None:
    from sweeper.store import scheme_of, sqlite_path

    return sqlite_path(uri) if scheme_of(uri) == "sqlite" else None


def _loader(uri: str, experiments: Sequence[str], ui_base: str):
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from sweeper.dashboard.read import read_snapshot
    from sweeper.dashboard.views import view_data
    from sweeper.errors import shown

    client = MlflowClient(tracking_uri=uri)

    def load() -> dict:
        try:
            snapshot = read_snapshot(client, experiments)
        except MlflowException as e:
            first = str(e.message if hasattr(e, "message") else e).splitlines()[0]
            raise SpecError("--tracking-uri", f"cannot read {shown(uri)}: {first}") from None
        return view_data(snapshot, ui_base)

    return load


def _quiet_mlflow() -> None:
    import logging

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)


def cmd_report(args: argparse.Namespace) -> int:
    from sweeper.dashboard.export import write_csv, write_parquet
    from sweeper.dashboard.render import render_page

    ui_base = _check_url(args.mlflow_ui)
    uri = tracking_uri(args.tracking_uri, args.experiments)
    store = _store_file(uri)
    output = _writable("--output", args.output, args.force, store)
    csv_path = _writable("--csv", args.csv, args.force, store)
    parquet_path = _writable("--parquet", args.parquet, args.force, store)
    named = [p.resolve() for p in (output, csv_path, parquet_path) if p is not None]
    if len(set(named)) < len(named):
        raise SpecError("--output", "--output, --csv and --parquet must name different files")
    _quiet_mlflow()
    data = _loader(uri, args.experiments, ui_base)()
    title = f"sweeper report: {', '.join(args.experiments)}"
    output.write_text(render_page(data, title=title), encoding="utf-8")
    print(f"wrote {output} ({len(data['summary'])} searches)")
    if csv_path:
        write_csv(data["summary"], csv_path)
        print(f"wrote {csv_path}")
    if parquet_path:
        write_parquet(data["summary"], parquet_path)
        print(f"wrote {parquet_path}")
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    from sweeper.dashboard.server import DashboardServer
    from sweeper.errors import shown

    ui_base = _check_url(args.mlflow_ui)
    if not 0 <= args.port <= 65535:
        raise SpecError("--port", f"{args.port} is not a port (0–65535; 0 picks a free one)")
    if not (math.isfinite(args.refresh) and args.refresh >= 1):
        raise SpecError("--refresh", f"{args.refresh} s is too often; use ≥ 1 second")
    uri = tracking_uri(args.tracking_uri, args.experiments)
    _quiet_mlflow()
    load = _loader(uri, args.experiments, ui_base)
    load()  # unknown experiments and unreadable stores fail here, before anything is served
    title = f"sweeper dashboard: {', '.join(args.experiments) or 'all experiments'}"
    # The name it was started with is served too, wildcards aside (they name no one host).
    allowed = [*args.allow_host, *([args.host] if args.host not in WILDCARDS else [])]
    try:
        server = DashboardServer(
            (args.host, args.port), load, title=title, refresh_s=args.refresh, allowed_hosts=allowed
        )
    except (OSError, UnicodeError) as e:  # UnicodeError: a name IDNA cannot encode ("a..b")
        raise _listen_error(args.host, args.port, e) from None
    if not _loopback(args.host):
        print(f"warning: {args.host} is not loopback; anyone who reaches it sees the runs")
    print(f"sweeper dashboard on {server.url} (reading {shown(uri)}); Ctrl-C stops it", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def _listen_error(host: str, port: int, error: OSError | UnicodeError) -> SpecError:
    """Blame the argument that is wrong: a host that does not resolve or is not this machine's
    is --host's fault; a port in use or privileged is --port's."""
    why = getattr(error, "strerror", None) or str(error)
    if not isinstance(error, OSError) or isinstance(error, socket.gaierror):
        bad_host = True
    else:
        bad_host = error.errno == errno.EADDRNOTAVAIL
    if bad_host:
        return SpecError(
            "--host",
            f"cannot listen on {host!r}: {why}; give an address of this machine, "
            "e.g. 127.0.0.1 (the default)",
        )
    return SpecError("--port", f"cannot listen on {host}:{port}: {why}")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m sweeper.dashboard report|dashboard …`, the same as `sweeper report|dashboard`."""
    parser = argparse.ArgumentParser(prog="sweeper")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except SpecError as e:
        print(f"sweeper {args.command}: error: {e}", file=sys.stderr)
        return 2
