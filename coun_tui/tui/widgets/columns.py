"""Which table columns fit a width: the one rule behind the comparison and the run history at 80
columns (drop the highest priority number first; priority 0 always stays)."""

from __future__ import annotations


def fit(priorities: list[int], widths: list[int], available: int) -> list[int]:
    """Indices of the columns to show, in order: while the kept widths exceed `available`, the
    column with the highest priority number (the rightmost of equals) is dropped."""
    kept = list(range(len(widths)))
    while sum(widths[i] for i in kept) > available and max((priorities[i] for i in kept), default=0) > 0:
        kept.remove(max(kept, key=lambda i: (priorities[i], i)))
    return kept
