"""Pure search core for d90 / r90: no Ray, no MLflow (docs/design/search.md)."""

from sweeper.search.threshold import (
    Probe,
    ProbeResult,
    SearchResult,
    SearchSettings,
    SearchStatus,
    ThresholdSearch,
)

__all__ = [
    "Probe",
    "ProbeResult",
    "SearchResult",
    "SearchSettings",
    "SearchStatus",
    "ThresholdSearch",
]
