"""Pairwise evaluation of reward models: accuracy (a tie counts one half), margins, per-subset and RewardBench scores."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

import torch

from rewardlab.config import EvalBatchingSpec
from rewardlab.data.pairs import EncodedPair, encode_pairs
from rewardlab.data.types import PreferenceExample
from rewardlab.errors import UserError
from rewardlab.losses import bradley_terry_loss, pairwise_accuracy
from rewardlab.modeling.service import PairBatch, ScoringService


def scored_pair_batches(
    model,
    pairs: list[EncodedPair],
    batch_size: int = EvalBatchingSpec.batch_size,
    accelerator=None,
    progress: bool = False,
    desc: str = "scoring",
    packed: bool = True,
    response_logprobs: bool = False,
) -> Iterator[PairBatch]:
    """One `PairBatch` (one forward pass) for every batch of pairs, as eval-rm scores them: the scoring service's
    `pair_batches`, length-sorted batches of `batch_size` pairs (rows 0..B-1 chosen, B..2B-1 rejected), padding-free
    where the model supports it, in eval mode, without gradients. `response_logprobs`: the outputs also carry each
    sequence's summed response log-probs (the kept LM head).

    Anything read from these batches (`score_pairs`, `rewardlab.diagnose`) sees exactly the numbers eval-rm sees.
    """
    service = ScoringService(model, batch_size=2 * batch_size, packed=packed)
    return service.pair_batches(pairs, accelerator=accelerator, progress=progress, desc=desc, response_logprobs=response_logprobs)


def score_pairs(
    model,
    pairs: list[EncodedPair],
    batch_size: int = EvalBatchingSpec.batch_size,
    accelerator=None,
    progress: bool = False,
    desc: str = "scoring",
    packed: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rewards of chosen and rejected for every pair, and the pairs' dataset indices (all on CPU, in index order):
    the scoring service's `score_pairs` over `scored_pair_batches`' batches.

    Pairs are batched by length, and with `packed` (models that support it) run padding-free, so no compute goes to
    padding; scores do not depend on either. Under accelerate, the batches are split over processes and gathered back.
    """
    service = ScoringService(model, batch_size=2 * batch_size, packed=packed)
    return service.score_pairs(pairs, accelerator=accelerator, progress=progress, desc=desc)


def preference_metrics(chosen: torch.Tensor, rejected: torch.Tensor, subsets: list[str | None] | None = None) -> dict:
    """Accuracy, mean margin, and (when examples carry a subset) per-subset accuracy and RewardBench section scores."""
    from rewardlab.rewardbench import SECTIONS, section_scores

    metrics: dict = {
        "n": int(chosen.numel()),
        "accuracy": pairwise_accuracy(chosen, rejected, torch.float64).item() if chosen.numel() else float("nan"),
        # the mean Bradley-Terry log-loss, -log sigmoid(r_c - r_r) (what `select_metric` "loss" keeps lowest)
        "loss": bradley_terry_loss(chosen.double(), rejected.double()).item() if chosen.numel() else float("nan"),
        "mean_margin": (chosen - rejected).mean().item() if chosen.numel() else float("nan"),
        "mean_chosen_reward": chosen.mean().item() if chosen.numel() else float("nan"),
        "mean_rejected_reward": rejected.mean().item() if chosen.numel() else float("nan"),
    }
    if subsets and any(s is not None for s in subsets):
        groups: dict[str, list[int]] = defaultdict(list)
        for i, s in enumerate(subsets):
            groups[s or "unknown"].append(i)
        per_subset = {
            s: {"accuracy": pairwise_accuracy(chosen[rows], rejected[rows], torch.float64).item(), "n": len(rows)}
            for s, rows in sorted(groups.items())
        }
        metrics["per_subset"] = per_subset
        known = {s for subs in SECTIONS.values() for s in subs}
        if known & set(per_subset):
            metrics["rewardbench"] = section_scores(
                {s: v["accuracy"] for s, v in per_subset.items()}, {s: v["n"] for s, v in per_subset.items()}
            )
    return metrics


def evaluate_preferences(
    model,
    examples: list[PreferenceExample],
    max_length: int | None = EvalBatchingSpec.max_length,
    truncation: str = EvalBatchingSpec.truncation,
    batch_size: int = EvalBatchingSpec.batch_size,
    accelerator=None,
    progress: bool = False,
    desc: str = "eval",
    encodings: dict[int, tuple[list[EncodedPair], dict[str, int]]] | None = None,
) -> tuple[dict, dict]:
    """Metrics for one preference set, and the raw scores {index, chosen_reward, rejected_reward}. `encodings`: the
    caller's `encode_pairs` results by the id of their `examples` list, for one model, max_length and truncation, kept
    while those lists live (a training run's eval sets: each is encoded once for all its evaluations)."""
    encodings = {} if encodings is None else encodings
    if id(examples) not in encodings:
        encodings[id(examples)] = encode_pairs(model.tokenizer, examples, max_length, truncation)
    pairs, counts = encodings[id(examples)]
    if not pairs:
        raise UserError("no pair left to evaluate after truncation")
    chosen, rejected, index = score_pairs(model, pairs, batch_size, accelerator, progress, desc)
    subsets = [examples[i].subset for i in index.tolist()]
    metrics = preference_metrics(chosen, rejected, subsets)
    metrics["truncated"], metrics["dropped"] = counts["truncated"], counts["dropped"]
    scores = {"index": index.tolist(), "chosen_reward": chosen.tolist(), "rejected_reward": rejected.tolist()}
    return metrics, scores


def score_rows(dataset: str, examples: list[PreferenceExample], scores: dict) -> list[dict]:
    """eval-rm's `--scores` rows of one preference set from `evaluate_preferences`'s raw scores: one a pair, with the
    set's name, the pair's index in `examples` and its subset."""
    return [
        {"dataset": dataset, "index": i, "subset": examples[i].subset, "chosen_reward": c, "rejected_reward": r}
        for i, c, r in zip(scores["index"], scores["chosen_reward"], scores["rejected_reward"], strict=True)
    ]
