"""Pure search core for d90 / r90: no Ray, no MLflow (DESIGN.md §4)."""

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
