"""Errors a user can fix: each names the field (or CLI argument) and says how to fix it."""


class SpecError(ValueError):
    """Bad input: `field` is the path of the offending field, e.g. `methods.did.search.lo`."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
