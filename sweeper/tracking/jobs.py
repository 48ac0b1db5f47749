"""Which jobs an experiment holds, so that `resume` continues the job it was started with and
never silently starts another one beside it.

Every start records its spec on the experiment (a tag per job, keyed by the digest of the
fields that define the job). A field defines the job when it changes which probes run or how
their answers are decided. A budget (`max_probes`, `max_wall_seconds`), the resources a trial
gets, where results go and the unused `seeds.boundary` can change between starts of one job;
anything else makes another job, which `run` and `resume` refuse unless told `--force`.
"""

from __future__ import annotations

import json
import time
from typing import Any

from sweeper.digest import digest
from sweeper.errors import SpecError

TAG_PREFIX = "sweeper.job."  # + the job's defining digest: its record (JSON)
TAG_BESIDE = "sweeper.beside"  # on the parent runs of a job `--force` started beside one
# Fields that may change between starts of one job: how long it may run, how a trial is
# placed, where it writes, and `seeds.boundary`, which the search accepts and never reads.
# Everything else defines the job: it is in the probes' config hashes (`fastfood_kernel`
# too) or in how the search decides (tolerance, seeds, max_probes aside).
FREE = ("budget.", "resources.cpus_per_trial", "resources.gpus_per_trial")
FREE += ("resources.max_concurrent", "tracking.", "seeds.boundary")
UNUSED = ("seeds.boundary",)
MAX_RECORD = 19_000  # MLflow keeps experiment tag values up to 20,000 characters
SHOWN = 4  # changed fields named in the refusal's one line


def leaves(data: Any, prefix: str = "") -> dict[str, Any]:
    """{'grid[0].tasks[0].options.groups': 10, …}: each scalar of a spec dump by its path."""
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out |= leaves(value, f"{prefix}.{key}" if prefix else str(key))
        return out or {prefix: {}}
    if isinstance(data, list):
        out = {}
        for i, value in enumerate(data):
            out |= leaves(value, f"{prefix}[{i}]")
        return out or {prefix: []}
    return {prefix: data}


def _free(path: str) -> bool:
    return path.startswith(FREE)


def record(spec, job_id: str) -> dict[str, Any]:
    """What a start of `spec` records: its key, its id, its fields (when they fit in a tag)."""
    fields = leaves(spec.model_dump(mode="json"))
    defining = {k: v for k, v in fields.items() if not _free(k)}
    kept = {k: v for k, v in fields.items() if not k.startswith("tracking.")}
    out = {"key": digest(defining), "job_id": job_id, "started": time.time(), "fields": kept}
    if len(json.dumps(out)) > MAX_RECORD:  # a huge grid: name the changed sections only
        sections = {}
        for path, value in defining.items():
            sections.setdefault(path.split(".")[0].split("[")[0], {})[path] = value
        out["fields"] = None
        out["sections"] = {name: digest(part) for name, part in sections.items()}
    return out


def stored(tags: dict[str, str]) -> list[dict[str, Any]]:
    """The job records among an experiment's tags, oldest start first."""
    found = []
    for key, value in tags.items():
        if key.startswith(TAG_PREFIX):
            try:
                found.append(json.loads(value))
            except ValueError:
                continue
    return sorted(found, key=lambda r: r.get("started", 0))


def _value(value: Any) -> str:
    return "(absent)" if value is _ABSENT else json.dumps(value)


_ABSENT = object()


def changes(old: dict[str, Any], new: dict[str, Any], free: bool) -> list[str]:
    """'path: old → new' for each field that differs, free fields (`free`) or defining ones."""
    a, b = old.get("fields"), new.get("fields")
    if a is None or b is None:  # a record without fields: compare sections
        sa, sb = old.get("sections") or {}, new.get("sections") or {}
        if free:
            return []
        names = sorted(set(sa) | set(sb))
        return [f"{name} (changed)" for name in names if sa.get(name) != sb.get(name)]
    out = []
    for path in sorted(set(a) | set(b)):
        if _free(path) != free:
            continue
        x, y = a.get(path, _ABSENT), b.get(path, _ABSENT)
        if x != y:
            out.append(f"{path}: {_value(x)} → {_value(y)}")
    return out


def _alike(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """The same job by its recorded fields, though its key differs: a record written while
    another set of fields was free (its key digested one more of them)."""
    return old.get("fields") is not None and not changes(old, new, free=False)


def budget_notes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """How a changed budget applies to the probes the store already holds."""
    notes = []
    for change in changes(old, new, free=True):
        path = change.split(":")[0]
        if path == "budget.max_probes":
            notes.append(
                f"{change}: stored probes all count; a search holding as many or more stops "
                "at once, its verdict over every stored probe, and the others continue to "
                "the new budget"
            )
        elif path == "budget.max_wall_seconds":
            notes.append(f"{change}: counted from this start; stored probes take none of it")
        elif path in UNUSED:
            notes.append(f"{change}: unused by the search; nothing changes")
        elif not path.startswith("tracking."):
            notes.append(f"{change}: applies to the trials this start runs")
    return notes


def check_start(
    records: list[dict[str, Any]], mine: dict[str, Any], *, resume: bool, force: bool, uri: str
) -> tuple[str | None, list[str]]:
    """(the job this start is put beside, or None; lines to print). A `run` or `resume` whose
    spec defines another job than the experiment's is refused in one line naming what changed
    (a `run` would otherwise write a second job into the same experiment unannounced)."""
    same = [r for r in records if r.get("key") == mine["key"] or _alike(r, mine)]
    if same:
        return None, budget_notes(same[-1], mine)
    if not records:
        return None, []
    latest = records[-1]
    command = "resume" if resume else "run"
    if force:
        return latest.get("job_id"), [
            f"starting job {mine['job_id']} beside job {latest.get('job_id')} ({command} "
            "--force); the report labels its searches so"
        ]
    changed = changes(latest, mine, free=False) or ["(fields not recorded)"]
    more = f" (and {len(changed) - SHOWN} more)" if len(changed) > SHOWN else ""
    raise SpecError(
        "JOB",
        f"the spec changed since job {latest.get('job_id')} started in {uri}: "
        f"{'; '.join(changed[:SHOWN])}{more}; {command} that job with its own spec, start anew "
        f"under another `name:`, or `sweeper {command} --force` to start a new job beside it",
    )
