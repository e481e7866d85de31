"""Evaluation of a process reward model on step-labelled data, as the trainer runs it on its eval sets.

Each example's steps are scored in one forward pass (`rewardlab.data.step_encoding`, batched like eval-rm's pairs): the
head's logit at each step's end, P(step correct) = sigmoid(logit). Figures:
    accuracy            the share of labelled steps on the right side of P = 1/2 (model selection reads it)
    loss                the labelled steps' mean binary cross-entropy (the training loss; selection with
                        `select_metric` "loss")
    processbench        first-error identification at P = 1/2 (`rewardlab.step_metrics.processbench_scores`): per subset
                        the accuracy on samples with an error, on samples without, and their harmonic mean (F1)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from rewardlab.data.step_batches import StepCollator
from rewardlab.data.step_encoding import EncodedStepExample, encode_step_examples
from rewardlab.data.types import StepExample
from rewardlab.errors import UserError
from rewardlab.losses import gather_steps
from rewardlab.progress import progress as show_progress
from rewardlab.step_metrics import predicted_first_error, processbench_scores

THRESHOLD = 0.5  # P(step correct) under which a step counts as the first error (ProcessBench's PRM threshold)


def score_steps(
    model,
    encoded: list[EncodedStepExample],
    batch_size: int = 16,
    accelerator=None,
    progress: bool = False,
    desc: str = "scoring steps",
    packed: bool = True,
) -> dict[int, list[float]]:
    """Each example's step logits (its dataset index -> one logit per kept step), length-sorted batches without gradients,
    in eval mode; under accelerate the batches are split over processes and gathered back."""
    ordered = sorted(encoded, key=lambda e: e.length)
    loader = DataLoader(ordered, batch_size=batch_size, shuffle=False, collate_fn=StepCollator(model.tokenizer.pad_token_id))
    device = model.device
    if accelerator is not None:
        loader = accelerator.prepare_data_loader(loader)
        device = accelerator.device
    was_training = model.training
    model.eval()
    logits_by_index: dict[int, list[float]] = {}
    try:
        for batch in show_progress(loader, desc=desc, enabled=progress, leave=False):
            batch = {k: v.to(device) for k, v in batch.items()}
            with torch.no_grad():
                out = model(batch["input_ids"], batch["attention_mask"], packed=packed)
            logits = gather_steps(out.position_rewards.float(), batch["step_ends"])
            logits = logits.masked_fill(batch["step_ends"] < 0, math.nan)  # past a row's steps
            index = batch["index"]
            if accelerator is not None:
                logits = accelerator.pad_across_processes(logits, dim=1, pad_index=math.nan)
                logits, index = accelerator.gather_for_metrics((logits, index))
            for row, i in zip(logits.cpu().tolist(), index.cpu().tolist(), strict=True):
                logits_by_index[i] = [x for x in row if not math.isnan(x)]
    finally:
        model.train(was_training)
    return logits_by_index


def probability(logit: float) -> float:
    return 1.0 / (1.0 + math.exp(-logit)) if logit >= 0 else math.exp(logit) / (1.0 + math.exp(logit))


def step_cross_entropy(logits: list[float], labels: list[float]) -> float:
    """The mean binary cross-entropy of step logits against 1 (correct) / 0 (wrong) labels: the training loss
    (`losses.step_bce_loss`), in float64."""
    return F.binary_cross_entropy_with_logits(
        torch.tensor(logits, dtype=torch.float64), torch.tensor(labels, dtype=torch.float64)
    ).item()


def step_metrics(examples: list[StepExample], logits: dict[int, list[float]]) -> dict:
    """The figures of the module docstring from each scored example's step logits (keys: dataset indices)."""
    right = total = 0
    labelled_logits, step_labels = [], []
    subsets, labels, probabilities = [], [], []
    for i, step_logits in sorted(logits.items()):
        example = examples[i]
        for logit, label in zip(step_logits, example.labels, strict=False):
            if label is not None:
                right += (logit > 0) == label
                total += 1
                labelled_logits.append(logit)
                step_labels.append(float(label))
        subsets.append(example.subset or "all")
        labels.append(example.first_error)
        probabilities.append([probability(x) for x in step_logits])
    return {
        "n": len(logits),
        "steps": total,
        "accuracy": right / total if total else float("nan"),
        "loss": step_cross_entropy(labelled_logits, step_labels) if total else float("nan"),
        "processbench": processbench_scores(subsets, labels, probabilities, THRESHOLD),
    }


def evaluate_steps(
    model,
    examples: list[StepExample],
    max_length: int | None = 1024,
    batch_size: int = 16,
    accelerator=None,
    progress: bool = False,
    desc: str = "eval",
    encodings: dict[int, tuple[list[EncodedStepExample], dict[str, int]]] | None = None,
) -> tuple[dict, dict[int, list[float]]]:
    """Metrics for one step-labelled set (see the module docstring) and each example's step logits by index. Over-long
    examples keep the prompt and the whole steps that fit. `encodings`: the caller's `encode_step_examples` results by
    the id of their `examples` list, for one model and max_length, kept while those lists live (as
    `evaluation.evaluate_preferences`')."""
    encodings = {} if encodings is None else encodings
    if id(examples) not in encodings:
        encodings[id(examples)] = encode_step_examples(model.tokenizer, examples, max_length)
    encoded, counts = encodings[id(examples)]
    if not encoded:
        raise UserError("no example left to evaluate after truncation")
    logits = score_steps(model, encoded, batch_size, accelerator, progress, desc)
    metrics = step_metrics(examples, logits)
    metrics["truncated"], metrics["dropped"] = counts["truncated"], counts["dropped"]
    return metrics, logits


def step_score_rows(dataset: str, examples: list[StepExample], logits: dict[int, list[float]]) -> list[dict]:
    """scores.jsonl rows of one step-labelled set: its name, the example's index, subset and first error (-1: none), each
    kept step's P(correct), and the first step under P = 1/2 (-1: none)."""
    rows = []
    for i, step_logits in sorted(logits.items()):
        scores = [probability(x) for x in step_logits]
        prediction = predicted_first_error(scores, THRESHOLD)
        rows.append(
            {"dataset": dataset, "index": i, "subset": examples[i].subset, "label": examples[i].first_error,
             "step_scores": scores, "prediction": prediction}
        )  # fmt: skip
    return rows
