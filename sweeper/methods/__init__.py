"""Fine-tuning methods, one module each, in a registry (name → Method) that everything that
lists or dispatches on methods reads. Adding a method: a module defining a `Method`, and one
`register` line below (PEFT registers its tuners the same way).
"""

from __future__ import annotations

from sweeper.methods.base import Method

METHODS: dict[str, Method] = {}  # in registration order: the order jobs search them in


def register(method: Method) -> Method:
    if method.name in METHODS:
        raise ValueError(f"method {method.name!r} is registered twice")
    METHODS[method.name] = method
    return method


def get(name: str) -> Method:
    """The method called `name`; ValueError naming the known ones otherwise."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {list(METHODS)}")
    return METHODS[name]


def searched() -> tuple[str, ...]:
    """The methods a job searches (all but the baseline), in registration order."""
    return tuple(name for name, method in METHODS.items() if method.searched)


def supported(unsupported: tuple[str, ...]) -> tuple[str, ...]:
    """The methods a task runs: every registered one but those it excludes (TaskInfo.unsupported),
    so a new method is offered to every task that does not say otherwise."""
    return tuple(name for name in METHODS if name not in unsupported)


def dim_name(method: str | None) -> str:
    """What a method's dimension is called in MLflow params, run names and tables: r for
    LoRA, d otherwise (an unknown or missing method included, as stored runs have it)."""
    known = METHODS.get(method) if method is not None else None
    return (known.dim_name if known else None) or "d"


from sweeper.methods import full, lora, resampled, subspace  # noqa: E402

register(full.FULL)
register(subspace.DID)
register(subspace.SAID)
register(lora.LORA)
register(resampled.RESAMPLED)
BASELINE = full.FULL.name  # the method perf_full is measured with: the one a job never searches

__all__ = ["BASELINE", "METHODS", "Method", "dim_name", "get", "register", "searched", "supported"]
