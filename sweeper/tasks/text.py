"""Text classification on Hugging Face transformers: GLUE, ANLI, local files, rotten-tomatoes.

Models: a Hugging Face model id (`bert-base-uncased`, `FacebookAI/roberta-large`), a local model
folder (`save_pretrained` layout), or the built-in `minilm` (the asset of that name, see
`sweeper/assets.py`), loaded by `AutoModelForSequenceClassification` with the task's label
count. The new head's random init is drawn from `init_seed`, so θ0 — pretrained body plus that
head — is rebuilt exactly when a compressed model is restored.

Data, through `datasets`: GLUE from the hub dataset `nyu-mll/glue`, ANLI from `facebook/anli`,
or, with the `data_dir` option, the same files from a local folder in the hub's parquet layout
(`<data_dir>/<config>/<split>-00000-of-00001.parquet`); `file` reads a local CSV, Parquet or
JSONL file through a column mapping; `rotten-tomatoes` reads its asset. Tokenised sets are saved
in Arrow under `$SWEEPER_CACHE/tokenized` (default ~/.cache/sweeper), keyed by a hash of the
tokenizer, task, options and max_length, so the probes of one worker tokenise once.

Options (defaults in brackets):
  every task   max_length [128; rotten-tomatoes 64], train_size / eval_size (subsample to at
               most this many examples, drawn with data_seed) [all], data_seed [0],
               init_seed [0], metric [accuracy; f1 where offered — GLUE reports both for
               MRPC and QQP]
  glue/*, anli/*  data_dir [none: the hub]
  file         path (required), eval_path [none: eval_fraction of path's rows, drawn with
               data_seed], eval_fraction [0.2], text ['text'], text_pair [none],
               label ['label'], num_labels [from the labels: integers 0..K-1, or names, which
               are numbered in sorted order]
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
from sweeper.tasks.base import SEED_MAX, Option, Problem, TrainSettings, epochs

BUILTIN_MODEL = "minilm"  # the asset all-MiniLM-L6-v2: a real pretrained BERT, offline
LORA_TARGETS = ("query", "value")  # Hu et al.'s choice; BERT and RoBERTa name them so
EVAL_BATCH = 128
SUBSPACE_LR = 1e-2  # did/said default (Adam); see `build` for why it is this large


@dataclass(frozen=True)
class Source:
    """A hub data set: where it lives, its two splits, its columns and label count."""

    hub: str
    config: str
    train_split: str
    eval_split: str
    text: str
    text_pair: str | None
    num_labels: int
    metrics: tuple[str, ...] = ("accuracy",)


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
            "facebook/anli", "plain_text", f"train_r{r}", f"dev_r{r}", "premise", "hypothesis", 3
        )
        for r in (1, 2, 3)
    },
}
TASK_NAMES = (*SOURCES, "file", "rotten-tomatoes")
MAX_EXAMPLES = 100_000_000  # train_size, eval_size: more is not a data set this runs through
BINARY_METRICS = ("accuracy", "f1")


def options(task: str) -> dict[str, Option]:
    """The options task `task` accepts (see the module docstring for their meaning)."""
    metrics = SOURCES[task].metrics if task in SOURCES else BINARY_METRICS
    out = {
        "max_length": Option(int, 8, 4096),
        "train_size": Option(int, 1, MAX_EXAMPLES),
        "eval_size": Option(int, 1, MAX_EXAMPLES),
        "data_seed": Option(int, 0, SEED_MAX),
        "init_seed": Option(int, 0, SEED_MAX),
        "metric": Option(str, choices=metrics),
    }
    if task in SOURCES:
        out["data_dir"] = Option(str)
    if task == "file":
        out |= {
            "path": Option(str),
            "eval_path": Option(str),
            "eval_fraction": Option(float, 0.01, 0.99),
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
        from sweeper.assets import asset_path

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


def _normalise(train, evaluation, columns: Columns, where: str):
    """Two pyarrow tables → two tables of (text[, text_pair], label ∈ [0, K)), and K.

    Names as labels are numbered in sorted order over both splits; integer labels must lie in
    [0, num_labels) — a clear error now, not an index error deep inside a trial.
    """
    import pyarrow as pa

    def blame(role: str) -> str:
        field = columns.field(role)
        return field if field == "task" else f"task_options.{field}"

    roles = {"text": columns.text, "text_pair": columns.text_pair, "label": columns.label}
    for table, name in ((train, "train"), (evaluation, "eval")):
        for role, column in roles.items():
            if column is not None and column not in table.column_names:
                raise SpecError(
                    blame(role),
                    f"no column {column!r} in the {name} data of {where}; "
                    f"columns: {table.column_names}",
                )
    labels = [t.column(columns.label).to_pylist() for t in (train, evaluation)]
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

    return table(train, labels[0]), table(evaluation, labels[1]), num_labels


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


def _split(table, fraction: float, seed: int):
    """(train, eval) rows of one table: a seeded random `fraction` goes to eval."""
    order = torch.randperm(table.num_rows, generator=torch.Generator().manual_seed(seed))
    cut = max(1, round(fraction * table.num_rows))
    return table.take(order[cut:].numpy()), table.take(order[:cut].numpy())


def _in_eval(movie: str) -> bool:
    # Split by movie, not by review: reviews of one film share names and plot words, and a
    # review-level split would let the model pass on them. A fixed hash: the same split everywhere.
    return int(hashlib.sha256(movie.encode()).hexdigest(), 16) % 5 == 0


def _rotten_tomatoes():
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv

    from sweeper.assets import asset_path

    try:
        folder = asset_path("rotten-tomatoes")
    except SpecError as e:
        raise SpecError("task", e.message) from None
    table = pyarrow.csv.read_csv(str(folder / "rotten_tomatoes.csv.bz2"))
    table = table.filter(pc.is_in(table.column("category"), pa.array(["fresh", "rotten"])))
    table = table.append_column(
        "label", pc.cast(pc.equal(table.column("category"), "fresh"), pa.int64())
    )
    in_eval = pa.array([_in_eval(m) for m in table.column("movie_name").to_pylist()])
    return table.filter(pc.invert(in_eval)), table.filter(in_eval)


def _hub_files(task: str, data_dir: str) -> dict[str, str]:
    s = SOURCES[task]
    folder = Path(data_dir).expanduser() / s.config
    files = {
        split: str(folder / f"{split}-00000-of-00001.parquet")
        for split in (s.train_split, s.eval_split)
    }
    for path in files.values():
        if not Path(path).is_file():
            raise SpecError(
                "task_options.data_dir",
                f"no {path}; data_dir holds the hub's layout <data_dir>/{s.config}/"
                f"<split>-00000-of-00001.parquet",
            )
    return files


def _raw(task: str, opts: dict, local_only: bool = False):
    """(train, eval, num_labels, where) in the normal form; None for a hub set if local_only."""
    if task == "rotten-tomatoes":
        train, evaluation = _rotten_tomatoes()
        where = "the rotten-tomatoes asset"
    elif task == "file":
        if "path" not in opts:
            raise SpecError("task_options.path", "required: the data file (CSV, Parquet, JSONL)")
        table = _read_table(opts["path"], "path")
        if "eval_path" in opts:
            train, evaluation = table, _read_table(opts["eval_path"], "eval_path")
        else:
            train, evaluation = _split(
                table, opts.get("eval_fraction", 0.2), opts.get("data_seed", 0)
            )
        where = opts["path"]
    else:
        s = SOURCES[task]
        if "data_dir" in opts:
            files = _hub_files(task, opts["data_dir"])
            where = opts["data_dir"]
            if local_only:  # a cheap look: the parquet files themselves, no datasets cache
                import pyarrow.parquet as pq

                train, evaluation = (pq.read_table(files[k]) for k in (s.train_split, s.eval_split))
                return (*_normalise(train, evaluation, _columns(task, opts), where), where)
        elif local_only:
            return None
        else:
            where = f"{s.hub} ({s.config})"
        train, evaluation = _load_dataset(task, opts)
    return (*_normalise(train, evaluation, _columns(task, opts), where), where)


def _load_dataset(task: str, opts: dict):
    """The two splits of a GLUE/ANLI task through `datasets.load_dataset`: from the hub, or the
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
    return (loaded[split].data.table for split in (s.train_split, s.eval_split))


def _subsample(table, size: int | None, seed: int):
    if size is None or size >= table.num_rows:
        return table
    order = torch.randperm(table.num_rows, generator=torch.Generator().manual_seed(seed))
    return table.take(order[:size].sort().values.numpy())


def _file_stamps(task: str, opts: dict) -> list:
    """Size and mtime of every local input: an edited file is tokenised again."""
    paths = [opts[k] for k in ("path", "eval_path") if k in opts]
    if "data_dir" in opts:
        paths += list(_hub_files(task, opts["data_dir"]).values())
    stamps = []
    for p in paths:
        st = Path(p).expanduser().stat()
        stamps.append([str(Path(p).expanduser().resolve()), st.st_size, st.st_mtime_ns])
    return stamps


_MEMO: dict[str, Any] = {}  # in-process: a worker's trials load each tokenised set once


def tokenized(task: str, opts: dict, tokenizer, max_length: int):
    """The task's tokenised (train, eval) as a `datasets.DatasetDict` and its label count,
    from the Arrow cache when this tokenizer has seen these data and options before."""
    import datasets

    from sweeper.spec import digest

    data_keys = ("path", "eval_path", "eval_fraction", "text", "text_pair", "label", "num_labels")
    key = digest(
        {
            "format": 1,
            "task": task,
            "tokenizer": tokenizer.name_or_path,
            "vocab": len(tokenizer),
            "max_length": max_length,
            "data": {k: opts.get(k) for k in (*data_keys, "data_dir", "train_size", "eval_size")},
            "data_seed": opts.get("data_seed", 0),
            "files": _file_stamps(task, opts),
        }
    )
    folder = cache_root() / "tokenized" / key
    if str(folder) in _MEMO:
        return _MEMO[str(folder)]
    if not (folder / "dataset_dict.json").is_file():
        train, evaluation, num_labels, _ = _raw(task, opts)
        seed = opts.get("data_seed", 0)
        parts = {
            "train": _subsample(train, opts.get("train_size"), seed),
            "eval": _subsample(evaluation, opts.get("eval_size"), seed + 1),
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
        _, _, num_labels, where = _raw(task, opts, local_only=True)
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
    train, evaluation = dataset["train"], dataset["eval"]
    pad_id = tokenizer.pad_token_id or 0
    eval_batches: list[dict[str, torch.Tensor]] = []  # built at the first evaluation

    def batches(batch_size: int, seed: int) -> Iterator[dict[str, torch.Tensor]]:
        for idx in epochs(len(train), batch_size, seed):
            yield _collate(train[idx.tolist()], pad_id)

    def forward(module: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        device = _device_of(module)
        inputs = {k: v.to(device) for k, v in batch.items() if k != "labels"}
        return module(**inputs).logits.float()

    def loss(module: nn.Module, batch) -> torch.Tensor:
        return F.cross_entropy(forward(module, batch), batch["labels"].to(_device_of(module)))

    @torch.no_grad()
    def evaluate(module: nn.Module) -> dict[str, float]:
        if not eval_batches:  # sorted by length: far less padding, the same metric
            lengths = [len(x) for x in evaluation["input_ids"]]
            order = sorted(range(len(lengths)), key=lengths.__getitem__)
            for i in range(0, len(order), EVAL_BATCH):
                eval_batches.append(_collate(evaluation[order[i : i + EVAL_BATCH]], pad_id))
        preds, losses = [], []
        for batch in eval_batches:
            logits = forward(module, batch).cpu()
            losses.append(F.cross_entropy(logits, batch["labels"], reduction="sum"))
            preds.append(logits.argmax(1))
        pred = torch.cat(preds)
        gold = torch.cat([b["labels"] for b in eval_batches])
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
