"""The text tasks' data: hub sets, local files and the rotten-tomatoes asset, read through
pyarrow and `datasets`, their labels numbered 0..K-1, split into the three data roles.

GLUE comes from the hub dataset `nyu-mll/glue`, ANLI from `facebook/anli`, or, with the
`data_dir` option, the same files from a local folder in the hub's parquet layout
(`<data_dir>/<config>/<split>-00000-of-00001.parquet`); `file` reads a local CSV, Parquet or
JSONL file through a column mapping; `rotten-tomatoes` reads its asset.

Data roles (docs/design/decision-rule.md): `train`; `select`, on which the learning rate, the
checkpoint and stop-on-pass are chosen; `report`, on which the one chosen checkpoint is scored.
  glue/*       select: a seeded, label-stratified `select_fraction` of the train split;
               report: the validation split (GLUE's test labels are not public)
  anli/rN      select: dev_rN; report: test_rN
  file         report: `report_path`, else a seeded stratified `report_fraction` of `path`;
               select: a seeded stratified `select_fraction` of what is left for training
  rotten-tomatoes  split by movie (a fixed hash): 1 in 5 movies report, 1 in 10 select
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweeper.errors import SpecError, one_line
from sweeper.tasks.base import ROLES, stratified_split

SELECT_FRACTION = 0.1  # of the train rows, where a task has no select split of its own
REPORT_FRACTION = 0.2  # of a file's rows, without a report_path
PARTS = ("train", *ROLES)


@dataclass(frozen=True)
class Source:
    """A hub data set: where it lives, its splits per role, its columns and label count.

    select_split None: `select` is carved from the train split (`select_fraction`)."""

    hub: str
    config: str
    train_split: str
    report_split: str
    text: str
    text_pair: str | None
    num_labels: int
    metrics: tuple[str, ...] = ("accuracy",)
    select_split: str | None = None

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(s for s in (self.train_split, self.select_split, self.report_split) if s)


_GLUE = "nyu-mll/glue"
SOURCES: dict[str, Source] = {
    "glue/mrpc": Source(
        _GLUE, "mrpc", "train", "validation", "sentence1", "sentence2", 2, ("accuracy", "f1")
    ),
    "glue/sst2": Source(_GLUE, "sst2", "train", "validation", "sentence", None, 2),
    "glue/qqp": Source(
        _GLUE, "qqp", "train", "validation", "question1", "question2", 2, ("accuracy", "f1")
    ),
    "glue/mnli": Source(_GLUE, "mnli", "train", "validation_matched", "premise", "hypothesis", 3),
    "glue/rte": Source(_GLUE, "rte", "train", "validation", "sentence1", "sentence2", 2),
    "glue/qnli": Source(_GLUE, "qnli", "train", "validation", "question", "sentence", 2),
    **{
        f"anli/r{r}": Source(
            "facebook/anli",
            "plain_text",
            f"train_r{r}",
            f"test_r{r}",
            "premise",
            "hypothesis",
            3,
            select_split=f"dev_r{r}",
        )
        for r in (1, 2, 3)
    },
}
TASK_NAMES = (*SOURCES, "file", "rotten-tomatoes")


def cache_root() -> Path:
    """Derived data (tokenised sets, `datasets`' cache of data_dir files): $SWEEPER_CACHE, else
    ~/.cache/sweeper."""
    return Path(os.environ.get("SWEEPER_CACHE") or Path.home() / ".cache" / "sweeper")


@dataclass(frozen=True)
class Columns:
    """Where text, text pair and label are in the raw data, and the option naming each."""

    text: str
    text_pair: str | None
    label: str
    num_labels: int | None
    field: Callable[[str], str]  # role ('text', 'text_pair', 'label') → the option to blame


def _columns(task: str, opts: dict) -> Columns:
    if task in SOURCES:
        s = SOURCES[task]
        blamed = "data_dir" if "data_dir" in opts else "task"
        return Columns(s.text, s.text_pair, "label", s.num_labels, lambda _: blamed)
    if task == "file":
        return Columns(
            opts.get("text", "text"),
            opts.get("text_pair"),
            opts.get("label", "label"),
            opts.get("num_labels"),
            lambda role: role,
        )
    return Columns("text", None, "label", 2, lambda _: "task")


def _normalise(tables: dict[str, Any], columns: Columns, where: str):
    """Pyarrow tables by part → tables of (text[, text_pair], label ∈ [0, K)) by part, and K.

    Names as labels are numbered in sorted order over all parts; integer labels must lie in
    [0, num_labels) — a clear error now, not an index error deep inside a trial.
    """
    import pyarrow as pa

    def blame(role: str) -> str:
        field = columns.field(role)
        return field if field == "task" else f"task_options.{field}"

    roles = {"text": columns.text, "text_pair": columns.text_pair, "label": columns.label}
    for name, table in tables.items():
        for role, column in roles.items():
            if column is not None and column not in table.column_names:
                raise SpecError(
                    blame(role),
                    f"no column {column!r} in the {name} data of {where}; "
                    f"columns: {table.column_names}",
                )
    labels = [t.column(columns.label).to_pylist() for t in tables.values()]
    every = [v for part in labels for v in part]
    if any(v is None for v in every):
        raise SpecError(blame("label"), f"missing labels in column {columns.label!r} of {where}")
    if all(isinstance(v, str) for v in every):
        names = sorted(set(every))
        if columns.num_labels is not None and len(names) > columns.num_labels:
            raise SpecError(
                blame("label"),
                f"{len(names)} label names in {where}, num_labels is {columns.num_labels}",
            )
        number = {name: i for i, name in enumerate(names)}
        labels = [[number[v] for v in part] for part in labels]
        num_labels = columns.num_labels or len(names)
    else:
        if not all(isinstance(v, int) or (isinstance(v, float) and v.is_integer()) for v in every):
            raise SpecError(blame("label"), f"labels in {where} must be integers or names")
        labels = [[int(v) for v in part] for part in labels]
        num_labels = columns.num_labels or max(2, max(max(p) for p in labels) + 1)
        bad = sorted({v for part in labels for v in part if not 0 <= v < num_labels})
        if bad:
            raise SpecError(
                blame("label"),
                f"label(s) {bad[:5]} in column {columns.label!r} of {where} are outside "
                f"[0, {num_labels}); labels must be 0..{num_labels - 1}",
            )

    def table(t, y):
        data = {"text": t.column(columns.text).cast(pa.string())}
        if columns.text_pair:
            data["text_pair"] = t.column(columns.text_pair).cast(pa.string())
        data["label"] = pa.array(y, pa.int64())
        return pa.table(data)

    parts = {name: table(t, y) for (name, t), y in zip(tables.items(), labels, strict=True)}
    return parts, num_labels


def _read_table(path: str, field: str):
    """A local CSV, Parquet or JSON-lines file as a pyarrow table (compression by extension)."""
    import pyarrow as pa
    import pyarrow.csv
    import pyarrow.json
    import pyarrow.parquet

    p = Path(path).expanduser()
    if not p.is_file():
        raise SpecError(f"task_options.{field}", f"no such file {path!r}")
    suffixes = [s.lower() for s in p.suffixes if s.lower() not in (".bz2", ".gz", ".zst")]
    kind = suffixes[-1] if suffixes else ""
    readers = {
        ".csv": pyarrow.csv.read_csv,
        ".parquet": pyarrow.parquet.read_table,
        ".jsonl": pyarrow.json.read_json,
        ".json": pyarrow.json.read_json,
    }
    if kind not in readers:
        raise SpecError(f"task_options.{field}", f"{path!r}: expected .csv, .parquet or .jsonl")
    try:
        return readers[kind](str(p))
    except (pa.ArrowInvalid, OSError) as e:
        raise SpecError(f"task_options.{field}", f"cannot read {path!r}: {one_line(e)}") from None


def _movie_role(movie: str) -> str:
    # Split by movie, not by review: reviews of one film share names and plot words, and a
    # review-level split would let the model pass on them. A fixed hash: the same split everywhere.
    bucket = int(hashlib.sha256(movie.encode()).hexdigest(), 16) % 10
    return "report" if bucket in (0, 5) else "select" if bucket == 1 else "train"


def rotten_tomatoes():
    """The asset's fresh and rotten reviews (label 1: fresh) by part; plot summaries dropped."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv

    from sweeper.tasks.assets import asset_path

    try:
        folder = asset_path("rotten-tomatoes")
    except SpecError as e:
        raise SpecError("task", e.message) from None
    table = pyarrow.csv.read_csv(str(folder / "rotten_tomatoes.csv.bz2"))
    table = table.filter(pc.is_in(table.column("category"), pa.array(["fresh", "rotten"])))
    table = table.append_column(
        "label", pc.cast(pc.equal(table.column("category"), "fresh"), pa.int64())
    )
    roles = pa.array([_movie_role(m) for m in table.column("movie_name").to_pylist()])
    return {part: table.filter(pc.equal(roles, part)) for part in PARTS}


def hub_files(task: str, data_dir: str) -> dict[str, str]:
    """A hub task's parquet file per split under `data_dir`; SpecError naming one missing."""
    s = SOURCES[task]
    folder = Path(data_dir).expanduser() / s.config
    files = {split: str(folder / f"{split}-00000-of-00001.parquet") for split in s.splits}
    for path in files.values():
        if not Path(path).is_file():
            raise SpecError(
                "task_options.data_dir",
                f"no {path}; data_dir holds the hub's layout <data_dir>/{s.config}/"
                f"<split>-00000-of-00001.parquet",
            )
    return files


def read_parts(task: str, opts: dict, local_only: bool = False):
    """({part: table} for train/select/report in the normal form, num_labels, where);
    None for a hub set if local_only. Columns and labels are checked before any split, so a
    wrong column is named as such and not as data too small to split."""
    seed = opts.get("data_seed", 0)
    if task == "rotten-tomatoes":
        tables, where = rotten_tomatoes(), "the rotten-tomatoes asset"
    elif task == "file":
        if "path" not in opts:
            raise SpecError("task_options.path", "required: the data file (CSV, Parquet, JSONL)")
        tables, where = {"train": _read_table(opts["path"], "path")}, opts["path"]
        if "report_path" in opts:
            tables["report"] = _read_table(opts["report_path"], "report_path")
    else:
        s = SOURCES[task]
        if "data_dir" in opts:
            files = hub_files(task, opts["data_dir"])
            where = opts["data_dir"]
            if local_only:  # a cheap look: the parquet files themselves, no datasets cache
                import pyarrow.parquet as pq

                splits = {split: pq.read_table(path) for split, path in files.items()}
        elif local_only:
            return None
        else:
            where = f"{s.hub} ({s.config})"
        if not local_only:
            splits = _load_dataset(task, opts)
        tables = {"train": splits[s.train_split], "report": splits[s.report_split]}
        if s.select_split is not None:
            tables["select"] = splits[s.select_split]
    tables, num_labels = _normalise(tables, _columns(task, opts), where)
    field = "task_options.path" if task == "file" else _columns(task, opts).field("text")
    field = field if field.startswith("task") else f"task_options.{field}"
    for part, fraction, part_seed in (
        ("report", opts.get("report_fraction", REPORT_FRACTION), seed),
        ("select", opts.get("select_fraction", SELECT_FRACTION), seed + 1),
    ):
        if part not in tables:
            rest, taken = stratified_split(
                tables["train"].column("label").to_numpy(), fraction, part_seed
            )
            if not len(rest) or not len(taken):
                raise SpecError(
                    field,
                    f"{where}: {tables['train'].num_rows} rows are too few to split into train, "
                    "select and report (a label needs 3 rows or more); add rows, or give "
                    "report_path",
                )
            tables["train"], tables[part] = tables["train"].take(rest), tables["train"].take(taken)
    return {part: tables[part] for part in PARTS}, num_labels, where


def _load_dataset(task: str, opts: dict) -> dict[str, Any]:
    """A GLUE/ANLI task's splits through `datasets.load_dataset`: from the hub, or the
    same parquet files from `data_dir`."""
    import datasets

    datasets.disable_progress_bars()
    s = SOURCES[task]
    try:
        if "data_dir" in opts:
            loaded = datasets.load_dataset(
                "parquet",
                data_files=hub_files(task, opts["data_dir"]),
                cache_dir=str(cache_root() / "datasets"),
            )
        else:
            loaded = datasets.load_dataset(s.hub, s.config)
    except (OSError, ValueError, ConnectionError) as e:
        field = "task_options.data_dir" if "data_dir" in opts else "task"
        raise SpecError(
            field,
            f"cannot load {s.hub} ({s.config}): {one_line(e)}; offline, point the data_dir "
            "option at a local copy in the hub's parquet layout",
        ) from None
    return {split: loaded[split].data.table for split in s.splits}
