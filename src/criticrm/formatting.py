"""Small shared helpers for the numbers that stage summaries and reports print."""

from __future__ import annotations


def rate(part: int, whole: int) -> float | None:
    """part / whole rounded to 4 places; None when there is nothing to divide by."""
    return round(part / whole, 4) if whole else None


def percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"
