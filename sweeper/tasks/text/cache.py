"""The tokenised-set cache: each task's train/select/report, tokenised once and saved in Arrow
under `$SWEEPER_CACHE/tokenized` (default ~/.cache/sweeper), keyed by a hash of the tokenizer,
task, options and max_length, so the probes of one worker tokenise once."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from sweeper.digest import digest
from sweeper.tasks.text.data import PARTS, cache_root, hub_files, read_parts


def _subsample(table, size: int | None, seed: int):
    if size is None or size >= table.num_rows:
        return table
    order = torch.randperm(table.num_rows, generator=torch.Generator().manual_seed(seed))
    return table.take(order[:size].sort().values.numpy())


def _file_stamps(task: str, opts: dict) -> list:
    """Size and mtime of every local input: an edited file is tokenised again."""
    paths = [opts[k] for k in ("path", "report_path") if k in opts]
    if "data_dir" in opts:
        paths += list(hub_files(task, opts["data_dir"]).values())
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
        tables, num_labels, _ = read_parts(task, opts)
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
