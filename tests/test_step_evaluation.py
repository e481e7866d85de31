"""A process reward model's evaluation figures (rewardlab.step_evaluation.step_metrics) against direct computations."""

import pytest
import torch
import torch.nn.functional as F

from rewardlab.data.types import StepExample
from rewardlab.step_evaluation import step_metrics


def test_step_metrics_loss_and_accuracy_read_the_labelled_steps_only():
    examples = [
        StepExample(
            prompt="p", steps=["a", "b", "c"], labels=[True, False, None], first_error=1
        ),  # the step after the error: unlabelled
        StepExample(prompt="q", steps=["d", "e"], labels=[True, True], first_error=-1),
        StepExample(prompt="r", steps=["f", "g"], labels=[False, None], first_error=0),
    ]
    logits = {0: [2.0, 0.5, -9.0], 1: [40.0, -0.25], 2: [-60.0, 3.0]}  # large logits: no overflow
    labelled = [(x, float(y)) for i, e in enumerate(examples) for x, y in zip(logits[i], e.labels, strict=True) if y is not None]
    xs, ys = (
        torch.tensor([x for x, _ in labelled], dtype=torch.float64),
        torch.tensor([y for _, y in labelled], dtype=torch.float64),
    )
    metrics = step_metrics(examples, logits)
    assert metrics["steps"] == 5
    assert metrics["loss"] == pytest.approx(F.binary_cross_entropy_with_logits(xs, ys).item(), rel=1e-12)
    assert metrics["accuracy"] == pytest.approx(((xs > 0).double() == ys).double().mean().item())
