"""The MLflow layout (DESIGN.md §5) — the one module that writes to or reads from MLflow.

* one experiment per job name;
* a parent run per (model, task, method) search (kind=search) and per baseline (kind=baseline);
* a child run per finished trial (kind=probe or baseline_seed), written whole when the trial
  ends — params, per-eval-step metrics, outcome tag, the compressed θ_d of a passing probe — so
  a crash never leaves a half-written probe behind and resuming counts finished ones exactly;
* parents carry d90/r90, its interval, perf_full, threshold, status, and the probe table.
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

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


def default_uris(spec: JobSpec) -> tuple[str, str]:
    """(tracking URI, artifact location): the spec's, else SQLite + a folder in the run dir."""
    run_dir = spec.run_dir.resolve()
    uri = spec.tracking.uri or f"sqlite:///{run_dir / 'mlflow.db'}"
    artifacts = spec.tracking.artifact_location or (run_dir / "artifacts").as_uri()
    return uri, artifacts


class Tracker:
    def __init__(self, spec: JobSpec, job_id: str) -> None:
        self.spec = spec
        self.job_id = job_id
        self.uri, artifacts = default_uris(spec)
        if self.uri.startswith("sqlite:///"):
            spec.run_dir.resolve().mkdir(parents=True, exist_ok=True)
        self.client = MlflowClient(tracking_uri=self.uri)
        experiment = self.client.get_experiment_by_name(spec.name)
        if experiment is None:
            self.experiment_id = self.client.create_experiment(
                spec.name, artifact_location=artifacts, tags={"sweeper.kind": "job"}
            )
        else:
            self.experiment_id = experiment.experiment_id
        self._parents: dict[str, str] = {}

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
        if memo in self._parents:
            return self._parents[memo]
        found = self._runs(
            [self.experiment_id], f"tags.kind = '{kind}' and tags.{hash_key} = '{hash_value}'"
        )
        if found:
            run_id = found[0].info.run_id
            self.client.update_run(run_id, status="RUNNING")
        else:
            run_id = self.client.create_run(
                self.experiment_id,
                run_name=key,
                tags={"kind": kind, hash_key: hash_value, "job_id": self.job_id, **tags},
            ).info.run_id
        self._parents[memo] = run_id
        return run_id

    def close_open_runs(self) -> None:
        """Parents of this job still RUNNING end KILLED (resume reopens them); a child still
        RUNNING was cut off mid-write and is deleted (its probe runs again, whole).

        Called when a job is interrupted, and when one starts: a driver killed outright
        (SIGKILL, a lost node) leaves its open runs behind, and only this job writes them. The
        store is asked, not this process's memory, so a run created an instant before the stop
        is closed too.
        """
        running = f"tags.job_id = '{self.job_id}' and attributes.status = 'RUNNING'"
        for run in self._runs([self.experiment_id], running):
            if run.data.tags.get("kind") in ("probe", "baseline_seed"):
                self.client.delete_run(run.info.run_id)
            else:
                self.client.set_terminated(run.info.run_id, "KILLED")

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

    def log_trial(self, parent_id: str, request: Request, result: dict[str, Any]) -> str:
        """One finished trial as a complete child run; returns its run id."""
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
        }
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
        }
        if request.point is not None:
            params[dim_name] = request.point
        run = self.client.create_run(self.experiment_id, run_name=run_name, tags=tags)
        run_id = run.info.run_id
        now = int(time.time() * 1000)
        metrics = []
        for row in result.get("history", []):
            step = int(row["step"])
            for key, value in row.items():
                if key == "step" or not _finite(value):
                    continue
                name = key if key.startswith("train/") else f"eval/{key}"
                metrics.append(Metric(name, float(value), now, step))
        for key in ("metric", "seconds", "steps"):
            if _finite(result.get(key)):
                metrics.append(Metric(key, float(result[key]), now, 0))
        self.client.log_batch(
            run_id,
            metrics=metrics,
            params=[Param(k, str(v)) for k, v in params.items() if v is not None],
        )
        if result.get("compressed"):
            with tempfile.TemporaryDirectory() as tmp:
                from sweeper.probe import decode_compressed

                path = Path(tmp) / "theta_d.safetensors"
                decode_compressed(result["compressed"], str(path))
                self.client.log_artifact(run_id, str(path), "compressed")
        status = "FINISHED" if result.get("outcome") != "error" else "FAILED"
        self.client.set_terminated(run_id, status)
        return run_id

    def finish_baseline(self, pair: PairState) -> None:
        run_id = self.baseline_parent(pair)
        metrics = {"perf_full": pair.perf_full, "perf_full_std": pair.perf_full_std}
        self._log_metrics(run_id, metrics)
        self.client.set_tag(run_id, "seeds", str(len(pair.results)))
        if pair.reused:
            self.client.set_tag(run_id, "reused", "true")
        self.client.set_terminated(run_id, "FINISHED")

    def finish_search(
        self, state: SearchState, pair: PairState, result: SearchResult | None
    ) -> None:
        """Write the verdict, the probe table and the smallest passing θ_d to the parent run."""
        if result is None:  # no baseline: there is no threshold to search against
            return
        run_id = self.search_parent(state)
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
        self._log_metrics(run_id, metrics)
        for key, value in {
            "status": result.outcome,
            "bracket": str(list(result.bracket) if result.bracket else None),
            "threshold_fraction": str(self.spec.threshold_fraction),
            "dim_name": dim,
        }.items():
            self.client.set_tag(run_id, key, value)
        self._log_probe_table(run_id, state.records)
        self._copy_smallest_pass(run_id, state.records)
        self.client.set_terminated(run_id, "FINISHED")

    def _log_metrics(self, run_id: str, metrics: dict[str, float]) -> None:
        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, 0) for k, v in metrics.items() if _finite(v)]
        self.client.log_batch(run_id, metrics=batch)

    def _log_probe_table(self, run_id: str, records: list[dict[str, Any]]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        columns = ["point", "seed", "metric", "passed", "outcome", "lr", "steps", "seconds"]
        columns += ["trainable_params", "reused", "run_id"]
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
            try:
                local = self.client.download_artifacts(best["run_id"], "compressed", tmp)
            except Exception:
                return
            self.client.log_artifacts(run_id, local, "compressed")
            self.client.set_tag(run_id, "compressed_from", best["run_id"])


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)
