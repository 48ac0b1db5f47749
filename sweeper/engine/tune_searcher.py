"""The Ray Tune `Searcher`: a thin shell that feeds `JobPlan` requests to Tune as trials.

Tune asks `suggest` whenever a worker is free; the plan decides what to run (baseline seeds,
then each search's k-section rounds). Finished trials go back to the plan and to `on_result`
(the driver's MLflow + progress hook), all in the driver process.

A trial Tune reports as errored was lost with its worker or node (a probe's own exception is
its result, see `driver.probe_trainable`), after Tune's own retries. Counting it as a failed
probe would bias the search, so it is issued again, as a new trial, after a growing pause;
lost too often, it ends the job (`TrialLost`) and `sweeper resume` runs it again.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from ray.tune.search import Searcher

from sweeper.engine.plan import JobPlan, Request
from sweeper.errors import ClusterError

ResultHook = Callable[[Request, dict[str, Any]], None]
LOST_REQUEUES = 5  # times a lost probe is issued again before the job stops
LOST_BACKOFF_S = 5.0  # pause before it is, × the number of times it was lost


class TrialLost(ClusterError):
    """A probe lost with its worker or node more often than LOST_REQUEUES allows."""


def error_result(message: str = "trial raised an error", trace: str = "") -> dict[str, Any]:
    """What a crashed trial reports: no metric, outcome `error` with its message and traceback
    (the plan stops its search: an error is never counted as a fail)."""
    return {
        "metric": math.nan,
        "passed": False,
        "outcome": "error",
        "error": message,
        "traceback": trace,
    }


class PlanSearcher(Searcher):
    """Tune's view of a `JobPlan`. No `save`/`restore`: Tune saves a searcher only into its
    experiment checkpoints (skipping one that does not implement `save`) and restores it only
    for `Tuner.restore`, which sweeper never calls: a job resumes from MLflow (`load_cache`)."""

    def __init__(self, plan: JobPlan, on_result: ResultHook, on_change: Callable[[], None]):
        super().__init__(metric="metric", mode="max")
        self.plan = plan
        self.on_result = on_result
        self.on_change = on_change
        self.queue: deque[Request] = deque()
        self.live: dict[str, Request] = {}
        self.failure: BaseException | None = None  # a driver-side error: end the job, re-raise
        self.lost: dict[str, int] = {}  # probe key → times lost
        self.reissue: list[tuple[float, Request]] = []  # (not before, probe)

    def suggest(self, trial_id: str) -> dict | str | None:
        if self.failure is not None:
            return Searcher.FINISHED
        if self.reissue:
            not_before, request = self.reissue[0]
            if time.monotonic() < not_before:
                return None  # ask again later
            self.reissue.pop(0)
            return self._issue(trial_id, request)
        if not self.queue:
            self.queue.extend(self.plan.propose())
        if self.queue:
            return self._issue(trial_id, self.queue.popleft())
        if not self.live:
            # Nothing running and nothing to propose: the plan is finished (or a budget ended).
            return Searcher.FINISHED
        return None

    def _issue(self, trial_id: str, request: Request) -> dict:
        self.live[trial_id] = request
        self.on_change()
        return {"request": request.to_dict()}

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        request = self.live.pop(trial_id, None)
        if request is None:
            return
        if error:
            self._lost(request)
            return
        if not result or "outcome" not in result:
            result = error_result()
        try:
            self.on_result(request, result)
            self.on_change()
        except Exception as e:  # Tune would log and carry on; a lost result must stop the job
            self.failure = self.failure or e  # the first says why; later ones follow from it

    def _lost(self, request: Request) -> None:
        lost = self.lost[request.config_hash] = self.lost.get(request.config_hash, 0) + 1
        if lost > LOST_REQUEUES:
            self.failure = self.failure or TrialLost(
                f"{request.label} at {request.dim} (seed {request.seed}) was lost with its "
                f"worker or node {lost} times (each after Tune's own retries); the job stopped, "
                "`sweeper resume` runs it again"
            )
            return
        self.reissue.append((time.monotonic() + LOST_BACKOFF_S * lost, request))
        self.on_change()

    def running(self) -> list[Request]:
        return list(self.live.values())

    def __getstate__(self) -> dict[str, Any]:
        """Tune pickles its searcher with the experiment; the driver's hooks stay behind."""
        hooks = {"on_result": None, "on_change": None, "failure": None}
        return {**self.__dict__, **hooks, "queue": deque(), "live": {}, "reissue": []}
