"""Tiny offline stand-ins for the transformer path: a WordPiece tokenizer built from a
generated vocabulary, randomly initialised BERT / RoBERTa bodies saved as local model folders,
and data files in the Hugging Face hub's parquet layout with the hub's column schemas."""

from __future__ import annotations

import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
POSITIVE = ["good", "great", "fine", "nice", "superb"]
NEGATIVE = ["bad", "awful", "poor", "dull", "weak"]
FILLER = [f"w{i}" for i in range(60)]
VOCAB = SPECIALS + POSITIVE + NEGATIVE + FILLER
HIDDEN = 32


def save_tokenizer(folder: Path) -> None:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    ids = {token: i for i, token in enumerate(VOCAB)}
    tok = Tokenizer(models.WordPiece(ids, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])],
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],  # as BERT's
    )
    fast.save_pretrained(str(folder))


def save_tiny_model(folder: Path, kind: str = "bert", dropout: float = 0.1) -> Path:
    """A 2-layer, 32-wide body (no task head, like a pretrained checkpoint) plus tokenizer."""
    import torch
    from transformers import BertConfig, BertModel, RobertaConfig, RobertaModel

    common = dict(
        vocab_size=len(VOCAB),
        hidden_size=HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
        type_vocab_size=2,
        pad_token_id=0,
    )
    torch.manual_seed(1234)
    if kind == "bert":
        model = BertModel(BertConfig(max_position_embeddings=64, **common))
    else:
        model = RobertaModel(RobertaConfig(max_position_embeddings=66, **common))
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder))
    save_tokenizer(folder)
    return folder


def sentence(rng: random.Random, positive: bool, words: int = 6) -> str:
    cue = rng.choice(POSITIVE if positive else NEGATIVE)
    filler = [rng.choice(FILLER) for _ in range(words - 1)]
    filler.insert(rng.randrange(words), cue)
    return " ".join(filler)


def glue_rows(config: str, n: int, seed: int) -> pa.Table:
    """Rows with the hub's schema for `config` (mrpc, sst2 or anli's plain_text)."""
    rng = random.Random(seed)
    labels = [rng.randrange(3 if config == "plain_text" else 2) for _ in range(n)]
    if config == "sst2":
        return pa.table(
            {
                "sentence": [sentence(rng, y == 1) for y in labels],
                "label": pa.array(labels, pa.int64()),
                "idx": pa.array(range(n), pa.int32()),
            }
        )
    if config == "mrpc":
        return pa.table(
            {
                "sentence1": [sentence(rng, y == 1) for y in labels],
                "sentence2": [sentence(rng, y == 1) for y in labels],
                "label": pa.array(labels, pa.int64()),
                "idx": pa.array(range(n), pa.int32()),
            }
        )
    return pa.table(
        {
            "uid": [f"u{i}" for i in range(n)],
            "premise": [sentence(rng, y == 0) for y in labels],
            "hypothesis": [sentence(rng, y != 2) for y in labels],
            "label": pa.array(labels, pa.int64()),
            "reason": ["" for _ in range(n)],
        }
    )


def write_hub_layout(root: Path, config: str, splits: dict[str, int]) -> Path:
    """`root/<config>/<split>-00000-of-00001.parquet`, as the hub stores GLUE and ANLI."""
    folder = root / config
    folder.mkdir(parents=True, exist_ok=True)
    for i, (split, n) in enumerate(splits.items()):
        pq.write_table(glue_rows(config, n, seed=i), folder / f"{split}-00000-of-00001.parquet")
    return root
