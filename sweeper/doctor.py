"""`sweeper doctor`: the first command to run when something is off (like `ray status`).

One line per check — versions, the GPUs and the fused kernel's self-test on each, the built-in
assets, the Ray cluster and the MLflow store — and exit status 1 if any check fails. Network
checks use short timeouts. Nothing it does stays behind: the MLflow store is read, and its
writability is shown by a scratch tag set on and removed from an experiment (a server) or by a
scratch file created and removed beside the SQLite file (or a file store).
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import socket
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from sweeper.errors import one_line

OK, FAIL, WARN, SKIP = "ok", "FAIL", "warn", "skip"
TIMEOUT = 5.0  # seconds, for every network check


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # ok | FAIL | warn (worth knowing, not broken) | skip (nothing to check)
    detail: str

    def line(self) -> str:
        return f"{self.status:<5} {self.name:<22} {self.detail}"


def _one_line(error: BaseException) -> str:
    """`Type: message`: a check that crashed is read for what broke, so its type comes first
    (and only once: an empty message stays empty)."""
    return f"{type(error).__name__}: {one_line(error) if str(error).strip() else ''}"


def check_versions() -> Iterator[Check]:
    yield Check("python", OK, f"{platform.python_version()} ({sys.executable})")
    import torch

    cuda = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU build (no CUDA)"
    yield Check("torch", OK, f"{torch.__version__}, {cuda}")
    try:
        import triton
    except ImportError:
        if platform.system() == "Linux" and platform.machine() == "x86_64":
            yield Check(
                "triton", FAIL, "not installed: pip install triton (the GPU kernel needs it)"
            )
        else:
            yield Check("triton", SKIP, f"not available on {platform.machine()}: CPU path only")
    else:
        yield Check("triton", OK, triton.__version__)
    import ray

    yield Check("ray", OK, ray.__version__)
    import mlflow

    yield Check("mlflow", OK, mlflow.__version__)


def check_gpus() -> Iterator[Check]:
    """The GPUs torch sees, and the fused kernel's self-test on each."""
    import torch

    from sweeper.projection import selftest

    if not torch.cuda.is_available():
        if torch.version.cuda is None and shutil.which("nvidia-smi"):
            yield Check(
                "gpus",
                FAIL,
                "nvidia-smi is here but torch is a CPU build: install a CUDA build of torch",
            )
        else:
            yield Check("gpus", SKIP, "no GPU seen (torch.cuda.is_available() is False)")
        yield Check("kernel self-test", SKIP, "no GPU: the fused Triton kernel runs on GPUs only")
    else:
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            memory = props.total_memory / 2**30
            detail = f"{props.name}, sm_{props.major}{props.minor}, {memory:.1f} GiB"
            yield Check(f"gpu cuda:{i}", OK, detail)
        for i in range(torch.cuda.device_count()):
            verdict = selftest.run(torch.device("cuda", i), "triton")
            yield Check(f"kernel self-test cuda:{i}", OK if verdict.ok else FAIL, verdict.reason)
    verdict = selftest.run(torch.device("cpu"), "cpu")  # what CPU jobs compute with
    yield Check("kernel self-test cpu", OK if verdict.ok else FAIL, verdict.reason)


def check_assets() -> Iterator[Check]:
    from sweeper.tasks import assets

    for row in assets.listing():
        name, path = row["name"], Path(row["path"])
        if row["fetched"] != "yes":
            yield Check(
                f"asset {name}",
                WARN,
                f"not fetched (only tasks that use it need it): sweeper assets fetch {name}",
            )
            continue
        missing = [f for f in assets.ASSETS[name].files.values() if not (path / f).is_file()]
        if missing:
            yield Check(
                f"asset {name}",
                FAIL,
                f"{path} lacks {', '.join(missing)}: sweeper assets fetch {name} --force",
            )
        else:
            yield Check(f"asset {name}", OK, str(path))


def check_ray(address: str | None) -> Iterator[Check]:
    """The cluster's dashboard answers, as Ray's Jobs API, with this client's Ray version."""
    if not address:
        yield Check("ray cluster", SKIP, "no --address given (e.g. http://HEAD:8265)")
        return
    from sweeper.cluster.submit import connect
    from sweeper.errors import ClusterError, SpecError

    url = urlparse(address if "://" in address else f"http://{address}")
    try:
        socket.create_connection((url.hostname, url.port or 80), timeout=TIMEOUT).close()
        if silent := _silent(url.geturl()):  # Ray's client waits far longer than TIMEOUT
            yield Check("ray cluster", FAIL, f"{address}: {silent}")
            return
        client = connect(address)
    except (ClusterError, SpecError, OSError, TypeError) as e:
        detail = str(e) if isinstance(e, ClusterError | SpecError) else _one_line(e)
        yield Check("ray cluster", FAIL, f"{address}: {detail}")
        return
    theirs = getattr(client, "_server_ray_version", None) or "unknown"
    yield Check("ray cluster", OK, f"{address} answers, Ray {theirs} (this client's minor)")


def _silent(url: str) -> str | None:
    """Why an HTTP server that accepted the connection gives no answer within TIMEOUT (a
    hung dashboard, a port that is not HTTP), else None; any answer, an error page too, is
    one."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url.rstrip("/") + "/api/version", timeout=TIMEOUT) as reply:
            reply.read(1024)
    except urllib.error.HTTPError:
        return None
    except (OSError, ValueError) as e:
        return f"no HTTP answer within {TIMEOUT:g} s ({_one_line(e)})"
    return None


def _scratch_file(folder: Path) -> str | None:
    """None if a file can be created (and is removed) in `folder`, else why not."""
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".sweeper-doctor-"):
            pass
    except OSError as e:
        return f"cannot write in {folder}: {e.strerror or e}"
    return None


def check_tracking(uri: str | None) -> Iterator[Check]:
    """The store answers (a read) and takes writes (a scratch write that is undone)."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        yield Check("mlflow store", SKIP, "no --tracking-uri given (or MLFLOW_TRACKING_URI)")
        return
    scheme = urlparse(uri).scheme.split("+")[0]
    if scheme in ("http", "https"):
        yield from _check_server(uri)
    elif scheme == "sqlite":
        path = Path(uri.removeprefix("sqlite:///"))
        if not uri.startswith("sqlite:///"):
            yield Check("mlflow store", FAIL, f"{uri}: expected sqlite:///PATH")
            return
        folder = path.parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent  # the job creates the missing folders
        problem = _scratch_file(folder)
        if problem:
            yield Check("mlflow store", FAIL, f"{uri}: {problem}")
        elif not path.exists():
            yield Check("mlflow store", OK, f"{uri}: no store yet; {folder} is writable")
        else:
            yield from _read(uri, f"{uri}: {path.stat().st_size / 2**20:.1f} MiB, writable")
    elif scheme in ("", "file"):
        folder = Path(urlparse(uri).path if scheme else uri)
        problem = _scratch_file(folder if folder.exists() else folder.parent)
        yield Check("mlflow store", FAIL if problem else OK, f"{uri}: {problem or 'writable'}")
    else:
        yield from _read(uri, f"{uri}: answers (writability not checked for this scheme)")


def _read(uri: str, detail: str) -> Iterator[Check]:
    from mlflow import MlflowClient

    try:
        MlflowClient(uri).search_experiments(max_results=1)
    except Exception as e:
        yield Check("mlflow store", FAIL, f"{uri}: {_one_line(e)}")
    else:
        yield Check("mlflow store", OK, detail)


def _check_server(uri: str) -> Iterator[Check]:
    import urllib.request

    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=TIMEOUT) as response:
            response.read()
    except OSError as e:
        yield Check("mlflow store", FAIL, f"{uri} unreachable: {_one_line(e)}")
        return
    # short, unretried requests for this check only (the job's own writes keep MLflow's)
    with _environment(
        MLFLOW_HTTP_REQUEST_TIMEOUT=str(int(TIMEOUT)), MLFLOW_HTTP_REQUEST_MAX_RETRIES="0"
    ):
        yield _server_write(uri)


def _server_write(uri: str) -> Check:
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    key = f"sweeper.doctor.{uuid.uuid4().hex[:8]}"
    try:
        experiments = client.search_experiments(max_results=1)
        if not experiments:
            return Check("mlflow store", OK, f"{uri} answers; no experiment to test a write on")
        experiment = experiments[0].experiment_id
        client.set_experiment_tag(experiment, key, "scratch")
        client.delete_experiment_tag(experiment, key)
    except Exception as e:
        return Check("mlflow store", FAIL, f"{uri}: {_one_line(e)}")
    return Check("mlflow store", OK, f"{uri} answers and takes writes")


@contextlib.contextmanager
def _environment(**variables: str):
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def run(address: str | None, tracking_uri: str | None) -> list[Check]:
    checks: list[Callable[[], Iterator[Check]]] = [
        check_versions,
        check_gpus,
        check_assets,
        lambda: check_ray(address),
        lambda: check_tracking(tracking_uri),
    ]
    results = []
    for check in checks:
        try:
            for result in check():
                print(result.line(), flush=True)
                results.append(result)
        except Exception as e:  # a check that crashes is a failed check, and the rest still run
            result = Check(getattr(check, "__name__", "check"), FAIL, _one_line(e))
            print(result.line(), flush=True)
            results.append(result)
    return results


def main(address: str | None, tracking_uri: str | None) -> int:
    results = run(address, tracking_uri)
    failed = [r.name for r in results if r.status == FAIL]
    print(
        f"{len(results)} checks, {len(failed)} failed"
        + (f": {', '.join(failed)}" if failed else "")
    )
    return 1 if failed else 0
