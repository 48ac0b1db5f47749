"""Log-scaled integer grid for the d90 / r90 search (docs/design/search.md).

d (or r) spans orders of magnitude and the stopping rule is a ratio, hi/lo ≤ 1 + tol; the
range widens by a factor when an end turns out wrong.
"""


def is_converged(lo: int, hi: int, tolerance: float) -> bool:
    """Whether the bracket (lo, hi] is tight enough: hi/lo ≤ 1 + tol, or no integer lies inside."""
    return hi - lo <= 1 or hi <= lo * (1.0 + tolerance)


def widened_down(lo: int, factor: int, times: int, floor: int = 1) -> list[int]:
    """Lower ends to try, in order, when ``lo`` already passes: lo//f, lo//f², … (never below
    ``floor``)."""
    out: list[int] = []
    for _ in range(times):
        nxt = max(floor, lo // factor)
        if nxt >= lo:
            break
        out.append(nxt)
        lo = nxt
    return out


def widened_up(hi: int, factor: int, times: int, ceiling: int | None = None) -> list[int]:
    """Upper ends to try, in order, when ``hi`` still fails: hi·f, hi·f², … (≤ ceiling)."""
    out: list[int] = []
    for _ in range(times):
        nxt = hi * factor if ceiling is None else min(hi * factor, ceiling)
        if nxt <= hi:
            break
        out.append(nxt)
        hi = nxt
    return out
