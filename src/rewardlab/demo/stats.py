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


def with_spread(stat: dict, sign: str = "") -> str:
    """`0.812 ± 0.010` over several seeds; with one seed there is no spread to show: `0.812 (1 seed)`."""
    mean = f"{stat['mean']:{sign}.3f}"
    if len(stat.get("values", ())) < 2:
        return f"{mean} (1 seed)"
    return f"{mean} ± {stat['std']:.3f}"
