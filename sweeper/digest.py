"""Stable hashes of JSON-able data: the cache and resume keys (probe configs, baselines,
tokenised sets). A leaf module, so that any layer may hash without importing the spec."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical_json(value: Any) -> str:
    """`value` as JSON with sorted keys and no spaces: equal data, equal text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def digest(value: Any) -> str:
    """A stable hash of JSON-able data: cache keys for baselines and probes. Changing it
    orphans every existing store's cached and resumable results."""
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()[:16]
