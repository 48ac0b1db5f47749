"""A library's exception (transformers, datasets, pyarrow) as one short line for a SpecError:
their messages run to pages, and a user needs the gist next to the field to fix."""

from __future__ import annotations


def one_line(error: BaseException) -> str:
    """`error`'s message on one line, at most 300 characters; its type where it has none."""
    text = " ".join(str(error).split())
    return text[:300] or type(error).__name__
