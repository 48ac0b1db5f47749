"""Text classification on Hugging Face transformers: GLUE, ANLI, local files, rotten-tomatoes.

Models: a Hugging Face model id (`bert-base-uncased`, `FacebookAI/roberta-large`), a local model
folder (`save_pretrained` layout), or the built-in `minilm` (the asset of that name, see
`sweeper/tasks/assets.py`), loaded by `AutoModelForSequenceClassification` with the task's label
count. The new head's random init is drawn from `init_seed`, so θ0 — pretrained body plus that
head — is rebuilt exactly when a compressed model is restored.

Data, through `datasets`: GLUE from the hub dataset `nyu-mll/glue`, ANLI from `facebook/anli`,
or, with the `data_dir` option, the same files from a local folder in the hub's parquet layout
(`<data_dir>/<config>/<split>-00000-of-00001.parquet`); `file` reads a local CSV, Parquet or
JSONL file through a column mapping; `rotten-tomatoes` reads its asset. Tokenised sets are saved
in Arrow under `$SWEEPER_CACHE/tokenized` (default ~/.cache/sweeper), keyed by a hash of the
tokenizer, task, options and max_length, so the probes of one worker tokenise once.

Data roles (DESIGN.md §4): `train`; `select`, on which the learning rate, the checkpoint and
stop-on-pass are chosen; `report`, on which the one chosen checkpoint is scored.
  glue/*       select: a seeded, label-stratified `select_fraction` of the train split;
               report: the validation split (GLUE's test labels are not public)
  anli/rN      select: dev_rN; report: test_rN
  file         report: `report_path`, else a seeded stratified `report_fraction` of `path`;
               select: a seeded stratified `select_fraction` of what is left for training
  rotten-tomatoes  split by movie (a fixed hash): 1 in 5 movies report, 1 in 10 select

Options (defaults in brackets):
  every task   max_length [128; rotten-tomatoes 64], train_size / select_size / report_size
               (subsample to at most this many examples, drawn with data_seed) [all],
               data_seed [0], init_seed [0], metric [accuracy; f1 where offered — GLUE
               reports both for MRPC and QQP]
  glue/*, anli/*  data_dir [none: the hub]
  glue/*, file select_fraction [0.1]
  file         path (required), report_path [none], report_fraction [0.2], text ['text'],
               text_pair [none], label ['label'], num_labels [from the labels: integers
               0..K-1, or names, which are numbered in sorted order]
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from sweeper.errors import SpecError
from sweeper.tasks.base import (
    ROLES,
    SEED_MAX,
    Option,
    Problem,
    Role,
    TrainSettings,
    epochs,
    majority_rate,
    stratified_split,
)

BUILTIN_MODEL = "minilm"  # the asset all-MiniLM-L6-v2: a real pretrained BERT, offline
LORA_TARGETS = ("query", "value")  # Hu et al.'s choice; BERT and RoBERTa name them so
EVAL_BATCH = 128
SELECT_FRACTION = 0.1  # of the train rows, where a task has no select split of its own
REPORT_FRACTION = 0.2  # of a file's rows, without a report_path
PARTS = ("train", *ROLES)
SUBSPACE_LR = 1e-2  # did/said default (Adam); see `build` for why it is this large


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
MAX_EXAMPLES = 100_000_000  # train/select/report_size: more is not a data set this runs through
BINARY_METRICS = ("accuracy", "f1")


def options(task: str) -> dict[str, Option]:
    """The options task `task` accepts (see the module docstring for their meaning)."""
    metrics = SOURCES[task].metrics if task in SOURCES else BINARY_METRICS
    out = {
        "max_length": Option(int, 8, 4096),
        "train_size": Option(int, 1, MAX_EXAMPLES),
        "select_size": Option(int, 1, MAX_EXAMPLES),
        "report_size": Option(int, 1, MAX_EXAMPLES),
        "data_seed": Option(int, 0, SEED_MAX),
        "init_seed": Option(int, 0, SEED_MAX),
        "metric": Option(str, choices=metrics),
    }
    if task in SOURCES:
        out["data_dir"] = Option(str)
    if task == "file" or (task in SOURCES and SOURCES[task].select_split is None):
        out["select_fraction"] = Option(float, 0.01, 0.5)
    if task == "file":
        out |= {
            "path": Option(str),
            "report_path": Option(str),
            "report_fraction": Option(float, 0.01, 0.5),
            "text": Option(str),
            "text_pair": Option(str),
            "label": Option(str),
            "num_labels": Option(int, 2, 100_000),
        }
    return out


def cache_root() -> Path:
    """Derived data (tokenised sets): $SWEEPER_CACHE, else ~/.cache/sweeper."""
    return Path(os.environ.get("SWEEPER_CACHE") or Path.home() / ".cache" / "sweeper")


# --- models -----------------------------------------------------------------------------------

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}(/[A-Za-z0-9][A-Za-z0-9_.-]{0,95})?$")


def model_source(model: str, need_asset: bool = True) -> str:
    """What `from_pretrained` reads for `model`: the built-in asset's folder, a local model
    folder, or a hub id — or a SpecError (field `model`) saying which of these it fails to be."""
    if model == BUILTIN_MODEL:
        if not need_asset:
            return model
        from sweeper.tasks.assets import asset_path

        try:
            return str(asset_path(BUILTIN_MODEL))
        except SpecError as e:
            raise SpecError("model", e.message) from None
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise SpecError("model", f"{model!r} is a folder without config.json, not a model")
        return str(path)
    if model.startswith(("/", "./", "../", "~")) or model.count("/") > 1:  # hub ids have ≤ 1
        raise SpecError("model", f"no model folder {model!r}")
    if not _HUB_ID.match(model) or "--" in model or ".." in model:
        raise SpecError(
            "model",
            f"{model!r} is neither the built-in {BUILTIN_MODEL!r}, a local model folder, nor a "
            "Hugging Face model id such as 'bert-base-uncased' or 'FacebookAI/roberta-base'",
        )
    return model


def module_names(model: str, opts: dict) -> set[str] | None:
    """The model's module names (last components), from its config alone — an empty model on
    the meta device, no weights read; None where only a hub download could tell."""
    try:
        source = model_source(model)
    except SpecError:
        return None
    if not Path(source).is_dir():
        return None
    from transformers import AutoConfig, AutoModelForSequenceClassification

    _quiet_transformers()
    with torch.device("meta"), _stdout_with_isatty():
        net = AutoModelForSequenceClassification.from_config(AutoConfig.from_pretrained(source))
    return {name.rpartition(".")[2] for name, _ in net.named_modules()}


def _quiet_transformers() -> None:
    # Every load reports the new, randomly initialised head: expected here, noise in probe logs.
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def load_model(source: str, num_labels: int, init_seed: int) -> nn.Module:
    """The pretrained model with a fresh `num_labels` head drawn from `init_seed` (float32)."""
    from transformers import AutoModelForSequenceClassification

    _quiet_transformers()
    # fork_rng: the head's init must not depend on, nor move, the trial's own random stream.
    with torch.random.fork_rng(devices=[]), _stdout_with_isatty():
        torch.manual_seed(init_seed)
        try:
            return AutoModelForSequenceClassification.from_pretrained(
                source, num_labels=num_labels, dtype=torch.float32
            )
        except (OSError, ValueError, KeyError) as e:
            raise SpecError("model", f"cannot load model {source!r}: {_first_line(e)}") from None


def _stdout_with_isatty() -> contextlib.AbstractContextManager:
    """transformers 5's load report calls sys.stdout.isatty(); a Ray worker's captured stdout
    (its `Tee`) has no such method, and every load there would fail: lend it a stream that has."""
    if hasattr(sys.stdout, "isatty"):
        return contextlib.nullcontext()
    return contextlib.redirect_stdout(sys.__stdout__ or io.StringIO())


def load_tokenizer(source: str):
    from transformers import AutoTokenizer

    _quiet_transformers()
    try:
        return AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError, KeyError) as e:
        raise SpecError(
            "model", f"cannot load the tokenizer of {source!r}: {_first_line(e)}"
        ) from None


def head_prefixes(model: nn.Module) -> tuple[str, ...]:
    """The task head: every top-level child with weights other than the pretrained body
    (`classifier` for BERT, and RoBERTa's dense + out_proj `classifier`)."""
    body = getattr(model, "base_model_prefix", "")
    return tuple(
        name
        for name, child in model.named_children()
        if name != body and next(child.parameters(), None) is not None
    )


def _first_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text[:300] or type(error).__name__


# --- data -------------------------------------------------------------------------------------


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
        raise SpecError(
            f"task_options.{field}", f"cannot read {path!r}: {_first_line(e)}"
        ) from None


def _movie_role(movie: str) -> str:
    # Split by movie, not by review: reviews of one film share names and plot words, and a
    # review-level split would let the model pass on them. A fixed hash: the same split everywhere.
    bucket = int(hashlib.sha256(movie.encode()).hexdigest(), 16) % 10
    return "report" if bucket in (0, 5) else "select" if bucket == 1 else "train"


def _rotten_tomatoes():
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


def _hub_files(task: str, data_dir: str) -> dict[str, str]:
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


def _raw(task: str, opts: dict, local_only: bool = False):
    """({part: table} for train/select/report in the normal form, num_labels, where);
    None for a hub set if local_only. Columns and labels are checked before any split, so a
    wrong column is named as such and not as data too small to split."""
    seed = opts.get("data_seed", 0)
    if task == "rotten-tomatoes":
        tables, where = _rotten_tomatoes(), "the rotten-tomatoes asset"
    elif task == "file":
        if "path" not in opts:
            raise SpecError("task_options.path", "required: the data file (CSV, Parquet, JSONL)")
        tables, where = {"train": _read_table(opts["path"], "path")}, opts["path"]
        if "report_path" in opts:
            tables["report"] = _read_table(opts["report_path"], "report_path")
    else:
        s = SOURCES[task]
        if "data_dir" in opts:
            files = _hub_files(task, opts["data_dir"])
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
                data_files=_hub_files(task, opts["data_dir"]),
                cache_dir=str(cache_root() / "datasets"),
            )
        else:
            loaded = datasets.load_dataset(s.hub, s.config)
    except (OSError, ValueError, ConnectionError) as e:
        field = "task_options.data_dir" if "data_dir" in opts else "task"
        raise SpecError(
            field,
            f"cannot load {s.hub} ({s.config}): {_first_line(e)}; offline, point the data_dir "
            "option at a local copy in the hub's parquet layout",
        ) from None
    return {split: loaded[split].data.table for split in s.splits}


def _subsample(table, size: int | None, seed: int):
    if size is None or size >= table.num_rows:
        return table
    order = torch.randperm(table.num_rows, generator=torch.Generator().manual_seed(seed))
    return table.take(order[:size].sort().values.numpy())


def _file_stamps(task: str, opts: dict) -> list:
    """Size and mtime of every local input: an edited file is tokenised again."""
    paths = [opts[k] for k in ("path", "report_path") if k in opts]
    if "data_dir" in opts:
        paths += list(_hub_files(task, opts["data_dir"]).values())
    stamps = []
    for p in paths:
        st = Path(p).expanduser().stat()
        stamps.append([str(Path(p).expanduser().resolve()), st.st_size, st.st_mtime_ns])
    return stamps


_MEMO: dict[str, Any] = {}  # in-process: a worker's trials load each tokenised set once


def tokenized(task: str, opts: dict, tokenizer, max_length: int):
    """The task's tokenised (train, select, report) as a `datasets.DatasetDict` and its label count,
    from the Arrow cache when this tokenizer has seen these data and options before."""
    import datasets

    from sweeper.spec import digest

    data_keys = ("path", "report_path", "report_fraction", "select_fraction", "text", "text_pair")
    data_keys += ("label", "num_labels", "data_dir", "train_size", "select_size", "report_size")
    key = digest(
        {
            "format": 2,  # 2: three data roles
            "task": task,
            "tokenizer": tokenizer.name_or_path,
            "vocab": len(tokenizer),
            "max_length": max_length,
            "data": {k: opts.get(k) for k in data_keys},
            "data_seed": opts.get("data_seed", 0),
            "files": _file_stamps(task, opts),
        }
    )
    folder = cache_root() / "tokenized" / key
    if str(folder) in _MEMO:
        return _MEMO[str(folder)]
    if not (folder / "dataset_dict.json").is_file():
        tables, num_labels, _ = _raw(task, opts)
        seed = opts.get("data_seed", 0)
        parts = {
            part: _subsample(tables[part], opts.get(f"{part}_size"), seed + i)
            for i, part in enumerate(PARTS)
        }
        datasets.disable_progress_bars()

        def encode(batch):
            pair = batch.get("text_pair")
            out = tokenizer(batch["text"], pair, truncation=True, max_length=max_length)
            return {k: out[k] for k in ("input_ids", "token_type_ids") if k in out}

        dataset = datasets.DatasetDict(
            {
                name: datasets.Dataset(table).map(
                    encode,
                    batched=True,
                    remove_columns=[c for c in table.column_names if c != "label"],
                )
                for name, table in parts.items()
            }
        )
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{key}-"))
        try:
            dataset.save_to_disk(str(tmp))
            (tmp / "num_labels").write_text(str(num_labels))
            try:
                tmp.rename(folder)  # atomic: readers never see a half-written set
            except OSError:
                if not folder.is_dir():  # else another worker won the race: theirs is as good
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    dataset = datasets.load_from_disk(str(folder))
    result = (dataset, int((folder / "num_labels").read_text()))
    _MEMO[str(folder)] = result
    return result


def _collate(rows: dict[str, list], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad a batch to its longest example (dynamic padding: short reviews cost little)."""
    ids = rows["input_ids"]
    width = max(len(x) for x in ids)
    out = {
        "input_ids": torch.tensor([x + [pad_id] * (width - len(x)) for x in ids]),
        "attention_mask": torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids]),
    }
    if "token_type_ids" in rows:
        out["token_type_ids"] = torch.tensor(
            [x + [0] * (width - len(x)) for x in rows["token_type_ids"]]
        )
    out["labels"] = torch.tensor(rows["label"])
    return out


def f1_binary(pred: torch.Tensor, gold: torch.Tensor) -> float:
    """F1 of the positive class (label 1), as GLUE reports for MRPC and QQP."""
    tp = ((pred == 1) & (gold == 1)).sum().item()
    fp = ((pred == 1) & (gold == 0)).sum().item()
    fn = ((pred == 0) & (gold == 1)).sum().item()
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def _chance(metric: str, labels: list[int]) -> float:
    """The best a constant guess scores on `report`: the majority rate for accuracy; for F1,
    always guessing the positive class (F1 = 2p / (1 + p) at positive rate p)."""
    if metric == "f1":
        p = sum(1 for y in labels if y == 1) / max(1, len(labels))
        return 2 * p / (1 + p)
    return majority_rate(labels)


def _device_of(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


# --- the task ---------------------------------------------------------------------------------


def _resolved(task: str, opts: dict) -> dict:
    return {
        "max_length": 64 if task == "rotten-tomatoes" else 128,
        "init_seed": 0,
        "data_seed": 0,
        "metric": "accuracy",
        **opts,
    }


def check(task: str, model: str, opts: dict) -> None:
    """Spec-time look (no model, no hub data, no asset needed): the model string, and a local
    file's or data_dir's columns and labels."""
    model_source(model, need_asset=False)
    if task == "file" or "data_dir" in opts:
        _, num_labels, where = _raw(task, opts, local_only=True)
        if opts.get("metric") == "f1" and num_labels != 2:
            raise SpecError("task_options.metric", f"f1 needs two labels; {where} has {num_labels}")


def ready(task: str, model: str, opts: dict) -> None:
    """Run-time look: what `check` leaves out because a spec may be validated elsewhere —
    the built-in assets are fetched."""
    model_source(model)
    if task == "rotten-tomatoes":
        _rotten_tomatoes()


def build(task: str, model: str, opts: dict) -> Problem:
    opts = _resolved(task, opts)
    source = model_source(model)
    tokenizer = load_tokenizer(source)
    dataset, num_labels = tokenized(task, opts, tokenizer, opts["max_length"])
    if opts["metric"] == "f1" and num_labels != 2:
        raise SpecError("task_options.metric", f"f1 needs two labels, the data have {num_labels}")
    net = load_model(source, num_labels, opts["init_seed"])
    train = dataset["train"]
    pad_id = tokenizer.pad_token_id or 0
    eval_batches: dict[str, list[dict[str, torch.Tensor]]] = {}  # per role, at its first use

    def batches(batch_size: int, seed: int) -> Iterator[dict[str, torch.Tensor]]:
        for idx in epochs(len(train), batch_size, seed):
            yield _collate(train[idx.tolist()], pad_id)

    def forward(module: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        device = _device_of(module)
        inputs = {k: v.to(device) for k, v in batch.items() if k != "labels"}
        return module(**inputs).logits.float()

    def loss(module: nn.Module, batch) -> torch.Tensor:
        return F.cross_entropy(forward(module, batch), batch["labels"].to(_device_of(module)))

    def role_batches(role: Role) -> list[dict[str, torch.Tensor]]:
        if role not in eval_batches:  # sorted by length: far less padding, the same metric
            data = dataset[role]
            lengths = [len(x) for x in data["input_ids"]]
            order = sorted(range(len(lengths)), key=lengths.__getitem__)
            eval_batches[role] = [
                _collate(data[order[i : i + EVAL_BATCH]], pad_id)
                for i in range(0, len(order), EVAL_BATCH)
            ]
        return eval_batches[role]

    @torch.no_grad()
    def evaluate(module: nn.Module, role: Role) -> dict[str, float]:
        preds, losses = [], []
        for batch in role_batches(role):
            logits = forward(module, batch).cpu()
            losses.append(F.cross_entropy(logits, batch["labels"], reduction="sum"))
            preds.append(logits.argmax(1))
        pred = torch.cat(preds)
        gold = torch.cat([b["labels"] for b in role_batches(role)])
        out = {
            "accuracy": (pred == gold).float().mean().item(),
            "loss": (torch.stack(losses).sum() / len(gold)).item(),
        }
        if num_labels == 2:
            out["f1"] = f1_binary(pred, gold)
        return out

    # Subspace methods move θ_d, whose columns spread over all D weights: per weight a step is
    # ~lr/√D of θ_d's, hence learning rates 10²–10³ above full fine-tuning's (Li et al.;
    # Aghajanyan et al.). LoRA's 1e-3 is Hu et al.'s order of magnitude for BERT-sized models.
    common = {"steps": 500, "batch_size": 32, "eval_every": 100}
    subspace = TrainSettings(optimizer="adam", lr=SUBSPACE_LR, **common)
    return Problem(
        model=net,
        loss=loss,
        batches=batches,
        evaluate=evaluate,
        metric=opts["metric"],
        chance=_chance(opts["metric"], dataset["report"]["label"]),
        split_sizes={part: len(dataset[part]) for part in PARTS},
        model_ref={"task": task, "model": model, "options": opts},
        head=head_prefixes(net),
        lora_targets=LORA_TARGETS,
        defaults={
            "full": TrainSettings(optimizer="adamw", lr=2e-5, weight_decay=0.01, **common),
            "lora": TrainSettings(optimizer="adamw", lr=1e-3, **common),
            "did": subspace,
            "said": subspace,
        },
        device="auto",
    )
