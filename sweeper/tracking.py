"""The MLflow layout (DESIGN.md §5) — the one module that writes to or reads from MLflow.

* one experiment per job name;
* a parent run per (model, task, method) search (kind=search) and per baseline (kind=baseline);
* a child run per finished trial (kind=probe or baseline_seed), written whole when the trial
  ends — params, per-eval-step metrics, outcome tag, the compressed θ_d of a passing probe — so
  a crash never leaves a half-written probe behind and resuming counts finished ones exactly;
* parents carry d90/r90, its interval, perf_full, threshold, status, and the probe table.

Every write the driver makes mid-job waits out a tracking server that is down (`Patience`,
`tracking.retry_seconds`) and is safe to repeat, so an outage loses and duplicates nothing.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from sweeper.paths import confined
from sweeper.tracking_retry import Patience, unreachable

if TYPE_CHECKING:  # the dashboard reads through this module without importing torch
    from sweeper.plan import Cache, PairState, Request, SearchState
    from sweeper.search import SearchResult
    from sweeper.spec import JobSpec

PAGE = 10_000


def all_runs(client: MlflowClient, experiment_ids: list[str], filter_string: str = "") -> list:
    """Every run matching the filter, page by page."""
    runs, token = [], None
    while True:
        page = client.search_runs(experiment_ids, filter_string, max_results=PAGE, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


MAX_TAG = 7000  # MLflow keeps tag values up to 8000 characters


def _tail(text: str, limit: int) -> str:
    """The last `limit` characters: a traceback's end says what raised."""
    return text if len(text) <= limit else "…" + text[-(limit - 1) :]


def _lr_rule(config: dict[str, Any]) -> str:
    search = config.get("lr_search")
    if search:
        return f"search(low={search['low']}, high={search['high']}, tries={search['tries']})"
    return f"fixed({config['train'].get('lr', 'task default')})"


def default_uris(spec: JobSpec) -> tuple[str, str | None]:
    """(tracking URI, artifact location): the spec's, else SQLite + a folder in the run dir.

    A tracking server keeps the artifacts itself (None: its `--artifacts-destination`, served
    over HTTP), so workers and drivers on other machines need no shared folder.
    """
    run_dir = spec.run_dir.resolve()
    uri = spec.tracking.uri or f"sqlite:///{run_dir / 'mlflow.db'}"
    artifacts = spec.tracking.artifact_location
    if artifacts is None and not uri.startswith(("http://", "https://")):
        artifacts = (run_dir / "artifacts").as_uri()
    return uri, artifacts


class Tracker:
    def __init__(self, spec: JobSpec, job_id: str) -> None:
        self.spec = spec
        self.job_id = job_id
        self.uri, artifacts = default_uris(spec)
        # With a server, MLflow prints "🏃 View run … at: http://…" for every run it ends, into
        # the live terminal view; the dashboards link runs instead.
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        # MLflow's own retries of one request (7 by default: ~4 min, uninterruptible) shrink to
        # ~12 s; `Patience` waits out longer outages, asking between attempts whether to stop.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")
        if self.uri.startswith("sqlite:///"):  # the default, or a store named in the spec
            Path(self.uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.client = MlflowClient(tracking_uri=self.uri)
        experiment = self.client.get_experiment_by_name(spec.name)
        if experiment is None:
            self.experiment_id = self.client.create_experiment(
                spec.name, artifact_location=artifacts, tags={"sweeper.kind": "job"}
            )
        else:
            self.experiment_id = experiment.experiment_id
        self._parents: dict[str, str] = {}
        self.patient = Patience(spec.tracking.retry_seconds)

    # --- reading back -----------------------------------------------------------------------

    def _runs(self, experiment_ids: list[str], filter_string: str) -> list:
        return all_runs(self.client, experiment_ids, filter_string)

    def load_cache(self) -> Cache:
        """Finished probes of this experiment, and finished baseline seeds of any experiment."""
        from sweeper.plan import Cache

        cache = Cache()
        finished = "attributes.status = 'FINISHED'"
        for run in self._runs([self.experiment_id], f"tags.kind = 'probe' and {finished}"):
            tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
            cache.probes.setdefault(tags["search_hash"], []).append(
                {
                    "point": int(tags["point"]),
                    "seed": int(params["seed"]),
                    "metric": metrics.get("metric", math.nan),
                    "passed": tags["passed"] == "true",
                    "outcome": tags["outcome"],
                    "lr": float(params["lr"]) if "lr" in params else None,
                    "steps": int(metrics.get("steps", 0)),
                    "seconds": metrics.get("seconds"),
                    "trainable_params": int(params.get("trainable_params", 0)),
                    "run_id": run.info.run_id,
                }
            )
        everywhere = [e.experiment_id for e in self.client.search_experiments()]
        for run in self._runs(everywhere, f"tags.kind = 'baseline_seed' and {finished}"):
            seeds = cache.baselines.setdefault(run.data.tags["baseline_hash"], {})
            seeds[int(run.data.params["seed"])] = run.data.metrics.get("metric", math.nan)
        return cache

    # --- writing ----------------------------------------------------------------------------

    def _parent(self, kind: str, key: str, hash_key: str, hash_value: str, tags: dict) -> str:
        memo = f"{kind}/{hash_value}"
        if memo not in self._parents:
            self._parents[memo] = self.patient(
                f"opening the {kind} run {key}",
                lambda: self._find_or_create(kind, key, hash_key, hash_value, tags),
            )
        return self._parents[memo]

    def _find_or_create(
        self, kind: str, key: str, hash_key: str, hash_value: str, tags: dict
    ) -> str:
        found = self._runs(
            [self.experiment_id], f"tags.kind = '{kind}' and tags.{hash_key} = '{hash_value}'"
        )
        if found:
            run_id = found[0].info.run_id
            self.client.update_run(run_id, status="RUNNING")
            return run_id
        return self.client.create_run(
            self.experiment_id,
            run_name=key,
            tags={"kind": kind, hash_key: hash_value, "job_id": self.job_id, **tags},
        ).info.run_id

    def close_open_runs(self) -> None:
        """Parents of this job still RUNNING end KILLED (resume reopens them); a child still
        RUNNING was cut off mid-write and is deleted (its probe runs again, whole).

        Called when a job is interrupted, and when one starts: a driver killed outright
        (SIGKILL, a lost node) leaves its open runs behind, and only this job writes them. The
        store is asked, not this process's memory, so a run created an instant before the stop
        is closed too.
        """
        running = f"tags.job_id = '{self.job_id}' and attributes.status = 'RUNNING'"

        def close() -> None:
            for run in self._runs([self.experiment_id], running):
                if run.data.tags.get("kind") in ("probe", "baseline_seed"):
                    self.client.delete_run(run.info.run_id)
                else:
                    self.client.set_terminated(run.info.run_id, "KILLED")

        self.patient("closing open runs", close)

    def baseline_parent(self, pair: PairState) -> str:
        return self._parent(
            "baseline",
            f"{pair.key}/full",
            "baseline_hash",
            pair.baseline_hash,
            {"model": pair.model, "task": pair.task.name, "method": "full"},
        )

    def search_parent(self, state: SearchState) -> str:
        return self._parent(
            "search",
            state.key,
            "search_hash",
            state.search_hash,
            {"model": state.model, "task": state.task.name, "method": state.method},
        )

    def log_trial(
        self, parent_id: str, request: Request, result: dict[str, Any], write_id: str | None = None
    ) -> str:
        """One finished trial as a complete child run, exactly once; returns its run id.

        The run carries a `write_id` tag (fresh unless given), so an attempt retried after an
        outage — or a second call with the same id — finds what an earlier one left: a finished
        run is kept, a half-written one is deleted and written again whole.
        """
        config = request.config
        dim_name = "r" if config["method"] == "lora" else "d"
        kind = "probe" if request.kind == "probe" else "baseline_seed"
        run_name = f"{config['method']} seed={request.seed}"
        if request.point is not None:
            run_name = f"{config['method']} {dim_name}={request.point} seed={request.seed}"
        tags = {
            "mlflow.parentRunId": parent_id,
            "kind": kind,
            "job_id": self.job_id,
            "config_hash": request.key,
            "search": request.search,
            "outcome": result.get("outcome", "error"),
            "passed": str(bool(result.get("passed"))).lower(),
            "point": str(request.point),
            "write_id": write_id or uuid.uuid4().hex,
        }
        if result.get("outcome") == "error":  # what went wrong stays with the run
            tags["error"] = _tail(str(result.get("error", "")), 2000)
            tags["traceback"] = _tail(str(result.get("traceback", "")), MAX_TAG)
        if result.get("kernel"):  # subspace probes: the Fastfood kernel that trained, and why
            tags |= {"kernel": result["kernel"], "kernel_reason": result["kernel_reason"][:5000]}
        from sweeper.plan import family

        tags["search_hash" if kind == "probe" else "baseline_hash"] = family(config)
        params = {
            "method": config["method"],
            "model": config["model"],
            "task": config["task"],
            "seed": request.seed,
            "lr": result.get("lr"),
            "D": result.get("D"),
            "trainable_params": result.get("trainable_params"),
            "projection": config.get("projection", "-"),
            "layout": config.get("layout", "-"),
            "optimizer": config["train"].get("optimizer", "task default"),
            "metric_name": result.get("metric_name"),
            # the decision rule's settings (DESIGN.md §4), so every number says how it was made
            "rule": config.get("rule"),
            "head": config.get("head"),
            "lr_rule": _lr_rule(config),
            "stop_on_pass": config.get("stop_on_pass"),
            "pass_margin_z": config.get("pass_margin_z"),
            "hopeless_patience": config.get("patience"),
            **{f"{part}_size": n for part, n in (result.get("split_sizes") or {}).items()},
        }
        if request.point is not None:
            params[dim_name] = request.point
        now = int(time.time() * 1000)
        metrics = []
        for row in result.get("history", []):
            step = int(row["step"])
            for key, value in row.items():
                if key == "step" or not _finite(value):
                    continue
                name = key if key.startswith("train/") else f"eval/{key}"
                metrics.append(Metric(name, float(value), now, step))
        for key, value in (result.get("report_metrics") or {}).items():
            if _finite(value):
                metrics.append(Metric(f"report/{key}", float(value), now, 0))
        for key in ("metric", "select_metric", "checkpoint_step", "seconds", "steps"):
            if _finite(result.get(key)):
                metrics.append(Metric(key, float(result[key]), now, 0))
        batch = [Param(k, str(v)) for k, v in params.items() if v is not None]
        status = "FINISHED" if result.get("outcome") != "error" else "FAILED"

        attempts = 0 if write_id is None else 1  # a fresh id has nothing to find at first

        def write() -> str:
            nonlocal attempts
            attempts += 1
            if attempts > 1 and (written := self._settle(tags["write_id"])):
                return written
            run_id = self.client.create_run(
                self.experiment_id, run_name=run_name, tags=tags
            ).info.run_id
            self.client.log_batch(run_id, metrics=metrics, params=batch)
            self._log_compressed(run_id, result)
            self.client.set_terminated(run_id, status)
            self._settle(tags["write_id"])  # a second run left by MLflow's retry of create_run
            return run_id

        return self.patient(f"writing the trial {run_name}", write)

    def _settle(self, write_id: str) -> str | None:
        """Delete the unfinished runs of one write; return the finished one, if any."""
        finished = None
        for run in self._runs([self.experiment_id], f"tags.write_id = '{write_id}'"):
            if run.info.status == "RUNNING":
                self.client.delete_run(run.info.run_id)
            else:
                finished = run.info.run_id
        return finished

    def _log_compressed(self, run_id: str, result: dict[str, Any]) -> None:
        if result.get("compressed"):
            with tempfile.TemporaryDirectory() as tmp:
                from sweeper.probe import decode_compressed

                path = Path(tmp) / "theta_d.safetensors"
                decode_compressed(result["compressed"], str(path))
                self.client.log_artifact(run_id, str(path), "compressed")

    def finish_baseline(self, pair: PairState) -> None:
        metrics = _metric_batch({"perf_full": pair.perf_full, "perf_full_std": pair.perf_full_std})

        def write() -> None:
            run_id = self.baseline_parent(pair)
            self.client.log_batch(run_id, metrics=metrics)
            self.client.set_tag(run_id, "seeds", str(len(pair.results)))
            if pair.reused:
                self.client.set_tag(run_id, "reused", "true")
            if pair.error is not None:
                self.client.set_tag(run_id, "error", pair.error)
            self.client.set_terminated(run_id, "FAILED" if pair.error else "FINISHED")

        self.patient(f"finishing the baseline {pair.key}", write)

    def finish_search(
        self, state: SearchState, pair: PairState, result: SearchResult | None
    ) -> None:
        """Write the verdict, the probe table and the smallest passing θ_d to the parent run.

        Every step repeats harmlessly (same metric timestamps, tags and artifacts overwritten),
        so after an outage the whole verdict is simply written again.
        """
        if result is None:  # no baseline: there is no threshold to search against
            return
        dim = state.dim_name
        metrics = {
            "perf_full": pair.perf_full,
            "perf_full_std": pair.perf_full_std,
            "threshold": state.search.settings.threshold,
            "probes": result.probes,
        }
        if result.answer is not None:
            metrics[f"{dim}90"] = result.answer
        if result.interval is not None:
            metrics[f"{dim}90_lo"], metrics[f"{dim}90_hi"] = result.interval
        batch = _metric_batch(metrics)
        tags = {
            "status": result.outcome,
            **({"error": _tail(state.error, 2000)} if state.error else {}),
            "bracket": str(list(result.bracket) if result.bracket else None),
            "threshold_fraction": str(self.spec.threshold_fraction),
            "dim_name": dim,
        }

        def write() -> None:
            run_id = self.search_parent(state)
            self.client.log_batch(run_id, metrics=batch)
            for key, value in tags.items():
                self.client.set_tag(run_id, key, value)
            self._log_probe_table(run_id, state.records)
            self._copy_smallest_pass(run_id, state.records)
            status = "FAILED" if result.outcome == "error" else "FINISHED"
            self.client.set_terminated(run_id, status)

        self.patient(f"finishing the search {state.key}", write)

    def _log_probe_table(self, run_id: str, records: list[dict[str, Any]]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        columns = ["point", "seed", "metric", "passed", "outcome", "lr", "steps", "seconds"]
        columns += ["trainable_params", "reused", "run_id", "error"]
        table = pa.Table.from_pylist([{c: r.get(c) for c in columns} for r in records])
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "probes.parquet"
            pq.write_table(table, path)
            self.client.log_artifact(run_id, str(path))

    def _copy_smallest_pass(self, run_id: str, records: list[dict[str, Any]]) -> None:
        passing = [r for r in records if r["passed"] and r.get("run_id")]
        if not passing:
            return
        best = min(passing, key=lambda r: (r["point"], r["seed"]))
        with tempfile.TemporaryDirectory() as tmp:
            # The listing comes from the store: MLflow releases before mid-2026 joined its paths
            # unchecked, so a `../` there could write outside tmp. Refuse it (the job stops).
            for info in self.client.list_artifacts(best["run_id"], "compressed"):
                confined(tmp, info.path)
            try:
                local = self.client.download_artifacts(best["run_id"], "compressed", tmp)
            except Exception as exc:
                if unreachable(exc):  # an outage, not a missing artifact: retry the verdict
                    raise
                return
            self.client.log_artifacts(run_id, local, "compressed")
            self.client.set_tag(run_id, "compressed_from", best["run_id"])


def _metric_batch(metrics: dict[str, float]) -> list[Metric]:
    """Step-0 metrics with one timestamp, fixed before any retry so a repeat adds no history."""
    now = int(time.time() * 1000)
    return [Metric(k, float(v), now, 0) for k, v in metrics.items() if _finite(v)]


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)
