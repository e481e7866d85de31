"""The suite's rows: one comparison of two contenders' measurements (`row`, `skipped_row`), printed, saved and plotted."""

from __future__ import annotations

import json
import math
from pathlib import Path

from common import print_table

TARGETS = {
    "rm_train": 1.5, "rm_train_peak_memory": 1.0, "limit": 1.15, "token_rewards_vs_sequence": 1.05,
    "grm_overhead_sft": 1.15,
}  # fmt: skip


def row(
    benchmark: str, measured: dict, numerator: str, denominator: str, better: str, key: str, context: dict,
    target: float | None | str = "default", **extra,
):  # fmt: skip
    """One comparison: the ratio of the contenders' medians of `key`, with what each measured. Targets are the issue's
    (set for a GPU); `met` says whether this run meets them."""
    top, bottom = measured[numerator], measured[denominator]
    ratio = top[key] / bottom[key]
    target = TARGETS.get(benchmark) if target == "default" else target
    met = None if target is None else (ratio >= target if better == "higher" else ratio <= target)
    out = {
        "benchmark": benchmark, "ratio": ratio, "better": better, "target": target, "met": met,
        "device": context["device"], "attention": top["attention"], "dtype": top["dtype"],
        "numerator": numerator, "denominator": denominator, "ratio_of": key,
        "tokens_per_second": top["tokens_per_second"], "peak_memory_mb": top["peak_memory_mb"], "mfu": top["mfu"],
        "model_tflops_per_second": tflops(top), "denominator_model_tflops_per_second": tflops(bottom),
        "seconds": top["seconds"], "seconds_all": top["seconds_all"],
        "denominator_attention": bottom["attention"], "denominator_tokens_per_second": bottom["tokens_per_second"],
        "denominator_peak_memory_mb": bottom["peak_memory_mb"], "denominator_mfu": bottom["mfu"],
        "denominator_seconds": bottom["seconds"], "denominator_seconds_all": bottom["seconds_all"],
        "kernel_fallbacks": top.get("kernel_fallbacks", {}), "denominator_kernel_fallbacks": bottom.get("kernel_fallbacks", {}),
        "model": context["model"], "threads": context["threads"], **extra,
    }  # fmt: skip
    if len(top.get("rounds_seconds", [])) > 1:
        out["rounds_ratios"] = [a / b for a, b in zip(top["rounds_seconds"], bottom["rounds_seconds"], strict=True)]
    return out


def tflops(measured: dict) -> float | None:
    """Model FLOPs per second achieved (useful work only: padding a contender computes is not counted)."""
    return None if measured.get("flops") is None else measured["flops"] / measured["seconds"] / 1e12


def skipped_row(benchmark: str, reason: str, context: dict, **extra) -> dict:
    return {"benchmark": benchmark, "ratio": None, "better": None, "target": None, "met": None,
            "device": context["device"], "attention": None, "dtype": None, "tokens_per_second": None,
            "peak_memory_mb": None, "mfu": None, "skipped": reason, **extra}  # fmt: skip


def emit(rows: list[dict], args) -> None:
    if args.output:
        from rewardlab.runtime import write_json

        out = Path(args.output)
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "rows.json", rows)
        plot(rows, out / "ratios.png")
    if args.json:
        for r in rows:
            print(json.dumps(r, allow_nan=False, default=str) if all_finite(r) else json.dumps(strict(r)))
        return
    table = []
    for r in rows:
        if r.get("skipped"):
            table.append([r["benchmark"], "-", "-", "-", "-", "-", "-", f"skipped: {r['skipped']}"])
            continue
        target = "" if r["target"] is None else (">= " if r["better"] == "higher" else "<= ") + str(r["target"])
        vocab = f" V={r['vocab_size']}" if "vocab_size" in r else ""
        mem = f"{r['peak_memory_mb']:.0f}/{r['denominator_peak_memory_mb']:.0f} MB"
        tps = f"{r['tokens_per_second']:.0f}/{r['denominator_tokens_per_second']:.0f}"
        mfu = "" if r["mfu"] is None else f"{r['mfu']:.1%}/{r['denominator_mfu']:.1%}"
        table.append([r["benchmark"] + vocab, f"{r['ratio']:.3f}", r["better"], target, r["attention"], r["dtype"], tps,
                      f"{mem} {mfu}".strip()])  # fmt: skip
    print(f"{rows[0]['device'] if rows else ''}; load average {rows[0]['load_average'] if rows else ''}")
    print_table(["benchmark", "ratio", "better", "target", "attention", "dtype", "tokens/s", "peak memory, MFU"], table)


def all_finite(value) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(all_finite(v) for v in value.values())
    if isinstance(value, list):
        return all(all_finite(v) for v in value)
    return True


def strict(value):
    from rewardlab.runtime import strict_json

    return strict_json(value)


def plot(rows: list[dict], path: Path) -> None:
    """Each ratio as a bar, its target as a tick: a glance at what is met."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [r for r in rows if r.get("ratio") is not None]
    labels = [r["benchmark"] + (f" V={r['vocab_size']}" if "vocab_size" in r else "") for r in shown]
    fig, ax = plt.subplots(figsize=(9, 0.4 * len(shown) + 1.2))
    ax.barh(labels, [r["ratio"] for r in shown], color=["tab:green" if r["met"] else "tab:gray" for r in shown])
    for i, r in enumerate(shown):
        if r["target"] is not None:
            ax.plot([r["target"]] * 2, [i - 0.4, i + 0.4], color="black")
    ax.axvline(1.0, color="black", lw=0.5, ls=":")
    ax.invert_yaxis()
    ax.set_xlabel("ratio (bars: measured; ticks: targets; green: target met)")
    ax.set_title(f"{shown[0]['device'] if shown else ''}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
