"""Evaluating a reward model on listwise sets (RewardBench 2, RM-Bench): every completion scored alone, then the
benchmark's rule (`rewardlab.listwise_metrics`) applied to the rewards.

Scoring is the scoring service's (`ScoringService.score_encoded`: one padding-free forward per batch, the reward read at
each sequence's last real token): the completions of all prompts are pooled, sorted by length and batched, so a
prompt's completions need not share a batch and no compute goes to padding. `batch_size` counts pairs, as
everywhere in eval-rm: a batch holds 2 x batch_size completions, the sequences of batch_size pairs.

Over-long completions follow `truncation`: keep_end cuts the prompt's oldest tokens; drop leaves out the whole prompt
(a benchmark prompt with a missing completion cannot be scored by its rule). Both are counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rewardlab.config import EvalBatchingSpec
from rewardlab.data.listwise import EVAL_FORMATS, ListwiseDataset, ListwiseExample
from rewardlab.data.templates import EncodedSequence, encode_prompt_response
from rewardlab.errors import UserError
from rewardlab.listwise_metrics import rewardbench2_scores, rm_bench_scores
from rewardlab.modeling.service import ScoredBatch, ScoringService


def sequence_rewards(batch: ScoredBatch) -> list[float]:
    """The view listwise scoring reads: R(x, y) of each row."""
    return batch.rewards.tolist()


def score_listwise(
    model,
    examples: Sequence[ListwiseExample],
    max_length: int | None = EvalBatchingSpec.max_length,
    truncation: str = EvalBatchingSpec.truncation,
    batch_size: int = EvalBatchingSpec.batch_size,
    progress: bool = False,
    desc: str = "scoring",
) -> tuple[list[int], list[list[float]], list[list[float]], dict[str, int]]:
    """(indices of the prompts scored, their chosen rewards, their rejected rewards, counts {truncated, dropped}).

    Rewards come in each example's own order (the file's order); prompts in dataset order.
    """
    tokenizer = model.tokenizer
    kept: list[int] = []
    sequences: list[EncodedSequence] = []
    owners: list[tuple[int, int]] = []  # (position in `kept`, completion number) of each sequence
    truncated = dropped = 0
    for index, example in enumerate(examples):
        encoded = [encode_prompt_response(tokenizer, example.prompt, c, max_length, truncation) for c in example.completions]
        if any(e is None for e in encoded):
            dropped += 1
            continue
        truncated += any(e.truncated for e in encoded)  # type: ignore[union-attr]
        owners += [(len(kept), k) for k in range(len(encoded))]
        sequences += encoded  # type: ignore[arg-type]
        kept.append(index)
    rewards: list[list[float]] = [[0.0] * len(examples[i].completions) for i in kept]
    service = ScoringService(model, batch_size=2 * batch_size)  # 2 x batch_size completions: the sequences of its pairs
    with service.evaluating():
        scored = service.score_encoded(sequences, progress=progress, view=sequence_rewards, desc=desc, leave=False)
    for (row, k), reward in zip(owners, scored, strict=True):
        rewards[row][k] = reward
    chosen = [r[: len(examples[i].chosen)] for r, i in zip(rewards, kept, strict=True)]
    rejected = [r[len(examples[i].chosen) :] for r, i in zip(rewards, kept, strict=True)]
    return kept, chosen, rejected, {"truncated": truncated, "dropped": dropped}


def listwise_metrics(
    format: str, examples: Sequence[ListwiseExample], chosen: Sequence[Sequence[float]], rejected: Sequence[Sequence[float]]
) -> dict[str, Any]:
    """The benchmark's figures from the scored examples' rewards: {"rewardbench2": ...} or {"rm_bench": ...}, plus n."""
    if not examples:
        raise UserError("no prompt left to evaluate after truncation")
    metrics: dict[str, Any] = {
        "n": len(examples),
        "completions": sum(len(c) + len(r) for c, r in zip(chosen, rejected, strict=True)),
    }
    if format == "rewardbench2":
        subsets = [e.subset or "unknown" for e in examples]
        metrics["rewardbench2"] = rewardbench2_scores(subsets, [e.metadata.get("id") for e in examples], chosen, rejected)
        metrics["subset_counts"] = {s: subsets.count(s) for s in sorted(set(subsets))}
    elif format == "rm-bench":
        metrics["rm_bench"] = rm_bench_scores([e.domain or "unknown" for e in examples], chosen, rejected)
    else:
        raise UserError(f"not a listwise evaluation format: {format!r} (expected one of {', '.join(EVAL_FORMATS)})")
    return metrics


def evaluate_listwise(
    model,
    dataset: ListwiseDataset,
    max_length: int | None = EvalBatchingSpec.max_length,
    truncation: str = EvalBatchingSpec.truncation,
    batch_size: int = EvalBatchingSpec.batch_size,
    progress: bool = False,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Metrics for one listwise set (with its data counts) and one `--scores` row per prompt scored:
    {dataset, index, id, subset | domain, chosen_rewards, rejected_rewards}."""
    kept, chosen, rejected, counts = score_listwise(
        model, dataset.examples, max_length, truncation, batch_size, progress, desc=dataset.name
    )
    examples = [dataset.examples[i] for i in kept]
    metrics = listwise_metrics(dataset.format, examples, chosen, rejected)
    metrics |= counts | {"data": dataset.stats}
    label = "subset" if dataset.format == "rewardbench2" else "domain"
    rows = [
        {
            "dataset": dataset.name,
            "index": i,
            "id": example.metadata.get("id"),
            label: example.subset if label == "subset" else example.domain,
            "chosen_rewards": c,
            "rejected_rewards": r,
        }
        for i, example, c, r in zip(kept, examples, chosen, rejected, strict=True)
    ]
    return metrics, rows


def summary_line(name: str, metrics: dict[str, Any]) -> str | None:
    """eval-rm's printed line for a listwise set (None for a pairwise one)."""
    if "rewardbench2" in metrics:
        scores = metrics["rewardbench2"]
        parts = "  ".join(f"{k} {v:.3f}" for k, v in scores.items() if k != "score")
        return f"{name}: RewardBench 2 score {scores['score']:.4f}  (n={metrics['n']})  {parts}"
    if "rm_bench" in metrics:
        rm = metrics["rm_bench"]
        return (
            f"{name}: RM-Bench avg {rm['avg']:.4f}  easy {rm['easy']:.3f}  normal {rm['normal']:.3f}  hard {rm['hard']:.3f}"
            f"  (n={metrics['n']}, domains: {', '.join(rm['domains'])})"
        )
    return None


def load_eval_sets(specs: list[str], *, format: str | None = None, skip_invalid: bool = False) -> dict[str, Any]:
    """eval-rm's `--data NAME=SPEC` sets in order: listwise evaluation sets as `ListwiseDataset`, all else as
    `PreferenceDataset` (rated listwise training formats become pairs). The format is detected per set when not given."""
    from rewardlab.data.errors import DataError
    from rewardlab.data.io import parse_named_spec
    from rewardlab.data.loading import load_dataset

    sets: dict[str, Any] = {}
    for spec in specs:
        name, source = parse_named_spec(spec)
        if name in sets:
            raise DataError(f"duplicate data set name '{name}'; name them: name=path", file=source)
        sets[name] = load_dataset(source, format=format, name=name, skip_invalid=skip_invalid, listwise_eval=True)
    return sets


def describe_listwise(title: str, dataset: ListwiseDataset, tokenizer, max_length: int | None, show: int = 1) -> list[str]:
    """`data inspect`'s lines for a listwise evaluation set: counts, groups, token lengths and truncation, a sample."""
    import json

    label = "subset" if dataset.format == "rewardbench2" else "domain"
    groups: dict[str, int] = {}
    for example in dataset.examples:
        group = (example.subset if label == "subset" else example.domain) or "unknown"
        groups[group] = groups.get(group, 0) + 1
    lengths = sorted(
        len(encode_prompt_response(tokenizer, example.prompt, completion).input_ids)  # type: ignore[union-attr]
        for example in dataset.examples
        for completion in example.completions
    )
    over = sum(length > max_length for length in lengths) if max_length is not None else 0
    per_prompt = sorted({len(e.completions) for e in dataset.examples})
    lines = [
        f"{title}: format {dataset.format}; " + ", ".join(f"{k} {v}" for k, v in dataset.stats.items()),
        f"completions per prompt: {', '.join(map(str, per_prompt))}; {label}s: "
        + ", ".join(f"{g} {n}" for g, n in sorted(groups.items())),
        f"tokens per completion (with its prompt): min {lengths[0]}, median {lengths[len(lengths) // 2]}, max {lengths[-1]}; "
        f"{over} completion(s) over max_length {max_length}",
    ]
    lines += [f"skipped: {err}" for err in dataset.skipped]
    for example in dataset.examples[:show]:
        row = {
            "prompt": example.prompt,
            "chosen": example.chosen,
            "rejected": example.rejected,
            label: example.subset or example.domain,
        }
        lines.append(json.dumps(row | example.metadata, ensure_ascii=False)[:2000])
    return lines
