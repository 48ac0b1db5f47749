"""The job plan: which probes a job still needs, as a pure function of the results so far.

Baselines first (full fine-tuning × seeds → perf_full → threshold), then one ThresholdSearch per
(model, task, method). Results already in the tracking store (this job interrupted, or another
job with the same baseline) are replayed in round by round, exactly as the searcher proposed
them, so nothing that finished is run again and a resumed search takes the uninterrupted path.
A probe that raised is an error, never a result: its search stops and ends as `error`.
No Ray, no MLflow here: the Tune searcher and the tracker are thin shells around this class.
Nor is any model loaded here: the caller says how a pair's Problem is built (`build`), which
the methods read their dimension ranges from.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from sweeper import methods
from sweeper.digest import digest
from sweeper.search import Probe, ProbeResult, SearchResult, SearchSettings, ThresholdSearch
from sweeper.spec import JobSpec, TaskRef
from sweeper.tasks import TASKS, Problem, build_problem
from sweeper.tracking.cache import Cache, baseline_score
from sweeper.tracking.schema import family_hash
from sweeper.training.train import RULE
from sweeper.training.trial import Trial

BuildProblem = Callable[[str, str, dict], Problem]  # (task, model, options) → Problem


@dataclass(frozen=True)
class Request:
    """One trial to run: a baseline seed or a search probe, with its full probe config."""

    kind: str  # "baseline" | "probe"
    label: str  # its search's, "model/task/method" (a baseline's: "model/task/full")
    seed: int
    dim: int | None
    config: dict[str, Any]

    @property
    def config_hash(self) -> str:
        """Identity of the probe: a hash of everything that determines its result."""
        return digest(self.config)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("kind", "label", "seed", "dim", "config")}


@dataclass
class SearchState:
    label: str  # "model/task/method"
    model: str
    task: TaskRef
    method: str
    base_config: Trial  # the probe config without dim, seed, threshold
    threshold_search: ThresholdSearch | None = None  # once the baseline gives the bar
    records: list[dict[str, Any]] = field(default_factory=list)
    search_hash: str | None = None
    stop_threshold: float | None = None  # the stop-on-pass bar on `select`, once the baseline is in
    backlog: list[Probe] = field(default_factory=list)  # a replayed round's unfinished probes
    in_flight: set[tuple[int, int]] = field(default_factory=set)
    error: str | None = None  # the first probe that raised: the search has no verdict

    @property
    def finished(self) -> bool:
        if self.threshold_search is None:
            return True
        if self.error is not None:
            return not self.in_flight
        return self.threshold_search.finished

    @property
    def dim_name(self) -> str:
        return methods.dim_name(self.method)


@dataclass
class PairState:
    label: str  # "model/task" (with its options when a model runs the task twice)
    model: str
    task: TaskRef
    baseline_config: Trial  # without seed
    baseline_hash: str
    seeds: int
    results: dict[int, float] = field(default_factory=dict)
    select_results: dict[int, float] = field(default_factory=dict)  # seed → select score
    records: list[dict[str, Any]] = field(default_factory=list)
    reused: bool = False
    pending: set[int] = field(default_factory=set)
    searches: list[SearchState] = field(default_factory=list)

    chance: float | None = None  # a constant guess's score on `report`, once known
    error: str | None = None  # why this pair has no threshold (then no search starts)
    warning: str | None = None  # a bar the baseline itself did not reach, once known

    @property
    def done(self) -> bool:
        return len(self.results) >= self.seeds

    @property
    def perf_full(self) -> float:
        """Mean over seeds of the baseline's report score; nan if any seed has none: a
        diverged seed is an error to fix, never silently left out of the mean."""
        values = list(self.results.values())
        if not values or not all(math.isfinite(v) for v in values):
            return math.nan
        return statistics.fmean(values)

    @property
    def perf_full_select(self) -> float:
        """Mean over seeds of the baseline's select score (of the checkpoint it chose): the
        stop-on-pass bar is made from it, on the scale the probes' select scores are read."""
        values = [self.select_results.get(seed, math.nan) for seed in self.results]
        if not values or not all(math.isfinite(v) for v in values):
            return math.nan
        return statistics.fmean(values)

    @property
    def perf_full_std(self) -> float:
        values = list(self.results.values())
        if len(values) < 2 or not all(math.isfinite(v) for v in values):
            return math.nan if not values or math.isnan(self.perf_full) else 0.0
        return statistics.stdev(values)

    def threshold_error(self, threshold: float, stop_threshold: float) -> str | None:
        """Why no search can run against this baseline, or None."""
        bad = sorted(seed for seed, v in self.results.items() if not math.isfinite(v))
        if bad:
            return (
                f"baseline seed(s) {bad} of {self.label} diverged or errored, so perf_full is "
                "undefined; lower methods.full.train.lr (or its lr_search range) and run again"
            )
        if not math.isfinite(stop_threshold):
            return (
                f"the baseline of {self.label} has no select score to make the stop-on-pass bar "
                "from (a store written before select scores were kept?); run it anew under "
                "another job name"
            )
        if self.chance is not None and threshold <= self.chance:
            return (
                f"the bar {threshold:.4g} for {self.label} is at or below chance "
                f"({self.chance:.4g}, a constant guess on the report set; the baseline scored "
                f"{self.perf_full:.4g}): "
                "raise the threshold, or make the baseline learn (its lr, steps)"
            )
        return None


def trial_config(spec: JobSpec, model: str, task: TaskRef, method: str) -> Trial:
    """The config every probe of (model, task, method) shares: no threshold, dim or seed."""
    train = spec.train_for(method).model_dump(exclude_none=True)
    lr_search = train.pop("lr_search", None)
    searched = methods.get(method).searched
    m = getattr(spec.methods, method)
    return Trial(
        task=task.name,
        model=model,
        task_options=dict(task.options),
        method=method,
        train=train,
        lr_search=lr_search,
        # the decision rule and the head policy: part of every hash, so results chosen or
        # scored another way are never reused as if they were the same probe
        rule=RULE,
        head_policy=spec.head_policy,
        init=spec.init,
        # no early stop of any kind on baselines: perf_full is the bar every probe is held to
        stop_on_pass=spec.early_stop.on_pass and searched,
        pass_margin_z=spec.early_stop.pass_margin_z,
        patience=spec.early_stop.hopeless_patience if searched else None,
        method_options=methods.get(method).options_from_spec(m, spec.resources.fastfood_kernel),
    )


class JobPlan:
    """`build`: how the plan gets a pair's Problem, once its baseline is done, to learn the
    dimension range of each method (default: the task's builder, which loads the model)."""

    def __init__(
        self,
        spec: JobSpec,
        workers: int,
        cache: Cache | None = None,
        build: BuildProblem = build_problem,
    ) -> None:
        self.spec = spec
        self.build = build
        self.workers = max(1, workers)
        self.cache = cache or Cache()
        self.pairs: list[PairState] = []
        names = pair_names(spec.pairs())
        for (model, task), name in zip(spec.pairs(), names, strict=True):
            config = trial_config(spec, model, task, methods.BASELINE)
            pair = PairState(
                label=name,
                model=model,
                task=task,
                baseline_config=config,
                baseline_hash=family_hash(config.to_json()),
                seeds=spec.seeds.baseline,
            )
            for method in spec.methods.searched():
                if method in methods.supported(TASKS[task.name].unsupported):
                    pair.searches.append(
                        SearchState(
                            label=f"{name}/{method}",
                            model=model,
                            task=task,
                            method=method,
                            base_config=trial_config(spec, model, task, method),
                        )
                    )
            cached = self.cache.baselines.get(pair.baseline_hash, {})
            cached_select = self.cache.baselines_select.get(pair.baseline_hash, {})
            for seed in range(pair.seeds):
                if seed in cached:
                    pair.results[seed] = cached[seed]
                    pair.select_results[seed] = cached_select.get(seed, math.nan)
                    pair.reused = True
            self.pairs.append(pair)
            self.start_searches(pair)

    # --- proposing and recording ------------------------------------------------------------

    def propose(self) -> list[Request]:
        """Every trial that can start now: missing baseline seeds, then each search's round."""
        out: list[Request] = []
        for pair in self.pairs:
            for seed in range(pair.seeds):
                if seed not in pair.results and seed not in pair.pending:
                    pair.pending.add(seed)
                    config = replace(pair.baseline_config, seed=seed).to_json()
                    out.append(
                        Request("baseline", f"{pair.label}/{methods.BASELINE}", seed, None, config)
                    )
        for pair in self.pairs:
            for state in pair.searches:
                if state.threshold_search is None or state.error is not None:
                    continue
                probes, state.backlog = (
                    state.backlog or state.threshold_search.propose(self.workers),
                    [],
                )
                for probe in probes:
                    state.in_flight.add((probe.dim, probe.seed))
                    config = replace(
                        state.base_config,
                        threshold=state.threshold_search.settings.threshold,
                        stop_threshold=state.stop_threshold,
                        dim=probe.dim,
                        seed=probe.seed,
                    ).to_json()
                    out.append(Request("probe", state.label, probe.seed, probe.dim, config))
        return out

    def record(self, request: Request, result: dict[str, Any]) -> dict[str, Any]:
        """Take a finished trial's result (see `probe.run_probe`; errors come as nan metrics).
        Returns the row it adds to the probe table."""
        row = _record(request, result, reused=False)
        failure = None
        if row["outcome"] == "error":
            failure = f"{request.label} {_where(request)} raised {result.get('error', '?')}"
        if request.kind == "baseline":
            pair = self.pair_of(request)
            pair.pending.discard(request.seed)
            pair.results[request.seed] = baseline_score(row["outcome"], row["metric"])
            pair.select_results[request.seed] = baseline_score(
                row["outcome"], float(result.get("select_metric", math.nan))
            )
            pair.records.append(row)
            pair.error = pair.error or failure
            self.start_searches(pair)
            return row
        state = self.search_of(request)
        state.in_flight.discard((request.dim, request.seed))
        state.records.append(row)
        if failure is not None:  # never a fail: the probe measured nothing
            state.error = state.error or failure
            return row
        state.threshold_search.record(
            ProbeResult(request.dim, request.seed, row["metric"], row["passed"])
        )
        return row

    def start_searches(self, pair: PairState) -> None:
        """Once a pair's baseline is complete: its threshold, and a search per method."""
        if not pair.done or pair.error is not None:
            return
        rule = self.spec.threshold
        threshold, stop_threshold = rule.bars(pair.perf_full, pair.perf_full_select)
        problem = None
        for state in pair.searches:
            if state.threshold_search is not None:
                continue
            search_range = getattr(self.spec.methods, state.method).search
            problem = problem or self.build(pair.task.name, pair.model, pair.task.options)
            pair.chance = problem.chance
            pair.error = pair.threshold_error(threshold, stop_threshold)
            if pair.error is not None:
                return
            if rule.absolute is not None and threshold > pair.perf_full:
                pair.warning = (
                    f"the absolute bar {threshold:.4g} is above what the baseline of {pair.label} "
                    f"reached ({pair.perf_full:.4g}): expect no pass within the range"
                )
            trial = replace(state.base_config, dim=1)
            floor, limit = methods.get(state.method).dim_range(problem, trial)
            hi = max(
                min(search_range.hi, limit), floor + 1
            )  # past D (or a layer's width) adds nothing
            state.threshold_search = ThresholdSearch(
                SearchSettings(
                    lo=min(max(search_range.lo, floor), hi - 1),
                    hi=hi,
                    hard_hi=max(limit, hi),
                    hard_lo=min(floor, hi - 1),  # widening lo never goes below what can run
                    threshold=threshold,
                    tolerance=self.spec.tolerance,
                    probe_seeds=self.spec.seeds.probe,
                    boundary_seeds=self.spec.seeds.boundary,
                    max_probes=self.spec.budget.max_probes,
                )
            )
            state.stop_threshold = stop_threshold
            bars = replace(state.base_config, threshold=threshold, stop_threshold=stop_threshold)
            state.search_hash = family_hash(bars.to_json())
            self._replay(state, self.cache.probes.get(state.search_hash, []))

    def _replay(self, state: SearchState, records: list[dict[str, Any]]) -> None:
        """Feed finished probes back round by round, as the searcher proposes them.

        A round cut short (a stop in the middle of it) keeps its unfinished probes as the
        backlog, run next: the search then continues exactly as if never interrupted, where
        handing it the finished ones at once would let it plan a different round. Stored
        probes a finished search never proposed (a budget lowered since) are counted too;
        those of another path (another worker count) are not used."""
        known = {(r["dim"], r["seed"]): r for r in records}
        while known:
            probes = state.threshold_search.propose(self.workers)
            if not probes:  # finished: its verdict still counts every stored probe of it
                for (dim, seed), record in sorted(known.items()):  # (a lowered max_probes)
                    state.threshold_search.record(
                        ProbeResult(dim, seed, record["metric"], record["passed"])
                    )
                    state.records.append({**record, "reused": True})
                return
            state.backlog = [p for p in probes if (p.dim, p.seed) not in known]
            for probe in probes:
                record = known.pop((probe.dim, probe.seed), None)
                if record is not None:
                    metric, passed = record["metric"], record["passed"]
                    state.threshold_search.record(
                        ProbeResult(probe.dim, probe.seed, metric, passed)
                    )
                    state.records.append({**record, "reused": True})
            if state.backlog:
                return

    # --- what the job knows now -------------------------------------------------------------

    @property
    def finished(self) -> bool:
        for pair in self.pairs:
            if not pair.done or pair.pending:
                return False
            if not all(state.finished for state in pair.searches):
                return False
        return True

    def result(self, state: SearchState) -> SearchResult | None:
        """The search's verdict (partial if a wall-time budget stopped it); None: no baseline.
        A search with an errored probe has no verdict: `error`, whatever else it saw."""
        if state.threshold_search is None:
            return None
        if state.error is not None:
            return SearchResult("error", None, None, None, len(state.records))
        return state.threshold_search.result(partial=True)

    def searches(self) -> list[tuple[PairState, SearchState]]:
        return [(pair, state) for pair in self.pairs for state in pair.searches]

    def pair_of(self, request: Request) -> PairState:
        key = (
            request.label.removesuffix(f"/{methods.BASELINE}")
            if request.kind == "baseline"
            else None
        )
        return next(p for p in self.pairs if p.label == key)

    def search_of(self, request: Request) -> SearchState:
        return next(s for p in self.pairs for s in p.searches if s.label == request.label)


def pair_names(pairs: list[tuple[str, TaskRef]]) -> list[str]:
    """Each (model, task) pair's name, `model/task`; a task that a model runs with several
    option sets names its options too (`fc/mnist[init_seed=1]`), so no two pairs share one."""
    counts: dict[tuple[str, str], int] = {}
    for model, task in pairs:
        counts[model, task.name] = counts.get((model, task.name), 0) + 1
    names = []
    for model, task in pairs:
        name = f"{model}/{task.name}"
        if counts[model, task.name] > 1:
            options = ",".join(f"{k}={v}" for k, v in sorted(task.options.items()))
            name += f"[{options}]"
        names.append(name)
    return names


def _where(request: Request) -> str:
    at = "" if request.dim is None else f"at {request.dim} "
    return f"{at}(seed {request.seed})"


def _record(request: Request, result: dict[str, Any], reused: bool) -> dict[str, Any]:
    return {
        "dim": request.dim,
        "seed": request.seed,
        "metric": float(result.get("metric", math.nan)),
        "passed": bool(result.get("passed", False)),
        "outcome": result.get("outcome", "error"),
        "lr": result.get("lr"),
        "steps": result.get("steps"),
        "seconds": result.get("seconds"),
        "trainable_params": result.get("trainable_params"),
        "error": result.get("error"),
        "reused": reused,
    }
