"""Errors a user can fix: each names the field (or CLI argument) and says how to fix it."""

from urllib.parse import urlparse


class SpecError(ValueError):
    """Bad input: `field` is the path of the offending field, e.g. `methods.did.search.lo`."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class ClusterError(RuntimeError):
    """The cluster cannot run the job (unreachable, another Ray, a package missing, trials lost
    again and again): one line saying what and what to do; the CLI exits 1."""


class StoreError(RuntimeError):
    """The tracking store cannot take a write: its disk is full, a local I/O error, a server
    that stayed down. One line saying what and what to do; the CLI exits 1, and `sweeper
    resume` continues once the cause is gone (every finished write is whole)."""


def one_line(error: BaseException) -> str:
    """`error`'s message on one line, at most 300 characters (a library's runs to pages, and a
    user needs the gist next to the field to fix); its type where it has none."""
    text = " ".join(str(error).split())
    return text[:300] or type(error).__name__


def shown(uri: str) -> str:
    """`uri` fit to print: a password in it (`user:secret@host`) becomes `***`."""
    parsed = urlparse(uri)
    if parsed.password is None:
        return uri
    netloc = parsed.netloc.replace(f":{parsed.password}@", ":***@", 1)
    return parsed._replace(netloc=netloc).geturl()
