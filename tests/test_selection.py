import json

import torch

from rewardlab.rm_trainer.selection import BestWeights, weights_path


def offer_weights(selection: BestWeights, model: torch.nn.Module, step: int, value: float) -> None:
    """Set the model's weights to `step` (so they say which step they are from) and offer that step's metric."""
    with torch.no_grad():
        model.weight.fill_(step)
    selection.offer(step, {"loss": value, "accuracy": value})


def test_a_checkpointed_selection_resumes_with_its_history_and_best_weights(tmp_path):
    """The best (lowest loss) is at step 2, before the checkpoint at step 3; a selection taken up from that checkpoint
    still restores step 2's weights after worse evaluations, and counts its stale evaluations from step 2."""
    model = torch.nn.Linear(2, 1, bias=False)
    first = BestWeights("val", model, "loss")
    for step, value in ((1, 0.7), (2, 0.4), (3, 0.5)):
        offer_weights(first, model, step, value)
    first.save_weights(tmp_path, 0)
    state = json.loads(json.dumps(first.checkpoint_state()))  # as trainer_state.json holds it

    resumed = BestWeights("val", model, "loss")
    assert resumed.load(state, tmp_path, 0)
    for step, value in ((4, 0.6), (5, 0.45)):
        offer_weights(resumed, model, step, value)
    assert resumed.summary() == {"on": "val", "metric": "loss", "step": 2, "loss": 0.4,
                                 "history": [(1, 0.7), (2, 0.4), (3, 0.5), (4, 0.6), (5, 0.45)]}  # fmt: skip
    assert resumed.stale_evaluations == 3
    resumed.restore()
    assert torch.equal(model.weight, torch.full((1, 2), 2.0))


def test_a_selection_on_another_set_or_metric_is_not_taken_up(tmp_path):
    model = torch.nn.Linear(2, 1, bias=False)
    first = BestWeights("val", model, "accuracy")
    offer_weights(first, model, 1, 0.0)
    first.save_weights(tmp_path, 0)
    state = first.checkpoint_state()
    for other in (BestWeights("val", model, "loss"), BestWeights("dev", model, "accuracy")):
        assert not other.load(state, tmp_path, 0) and other.history == [] and other.state is None
    assert not BestWeights("val", model, "loss").load(None, tmp_path, 0)
    assert weights_path(tmp_path, 0).exists() and not weights_path(tmp_path, 1).exists()
