"""Log-scaled integer grid for the d90 / r90 search (DESIGN.md §4).

d (or r) spans orders of magnitude and the stopping rule is a ratio, hi/lo ≤ 1 + tol, so
points are spaced evenly in log d and rounded to distinct integers.
"""


def is_converged(lo: int, hi: int, tolerance: float) -> bool:
    """Whether the bracket (lo, hi] is tight enough: hi/lo ≤ 1 + tol, or no integer lies inside."""
    return hi - lo <= 1 or hi <= lo * (1.0 + tolerance)


def log_spaced_interior(lo: int, hi: int, k: int) -> list[int]:
    """Up to ``k`` distinct integers strictly inside (lo, hi), evenly spaced in log.

    All the integers inside come back when there are at most ``k`` of them; otherwise the
    points lo·(hi/lo)^(i/(k+1)), i = 1..k, rounded: one round of k parallel probes divides the
    bracket's log-width by k + 1, where a bisection divides it by 2.
    """
    if lo < 1 or hi <= lo or k < 1:
        raise ValueError(f"need 1 ≤ lo < hi and k ≥ 1, got lo={lo}, hi={hi}, k={k}")
    if hi - lo - 1 <= k:
        return list(range(lo + 1, hi))
    ratio = hi / lo
    points = {round(lo * ratio ** (i / (k + 1))) for i in range(1, k + 1)}
    return sorted(p for p in points if lo < p < hi)


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
