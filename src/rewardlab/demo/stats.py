"""Summaries over seeds."""

from __future__ import annotations

import statistics


def mean_std(values: list[float]) -> dict:
    """{"mean", "std" (sample standard deviation; 0 for one value), "values"}."""
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "values": values,
    }
