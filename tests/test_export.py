"""Export to plain transformers classes, checked by loading the checkpoint with transformers alone."""

import pytest
import torch
from transformers import AutoModelForTokenClassification, AutoTokenizer

from rewardlab.data.step_encoding import encode_steps
from rewardlab.errors import UserError
from rewardlab.export import PRM_LABELS, export_token_classifier
from rewardlab.modeling.reward_model import build_reward_model

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def prm_dir(tmp_path_factory):
    """A reward model whose head is drawn at random: the export must carry any head exactly, trained or not."""
    rm = build_reward_model("tiny-llama", seed=3)
    with torch.no_grad():
        rm.head.net.weight.normal_(0, 0.5)  # larger than its initial draw: probabilities away from 1/2
    path = tmp_path_factory.mktemp("prm") / "model"
    rm.save_pretrained(path)
    return path, rm.eval()


def test_token_classifier_gives_the_step_probabilities_in_plain_transformers(prm_dir, tmp_path):
    path, rm = prm_dir
    report = export_token_classifier(path, tmp_path / "hf", device="cpu")
    assert report["architecture"].endswith("ForTokenClassification") and report["max_abs_diff"] <= 1e-4

    # a user of TRL's PRM trainer: AutoModelForTokenClassification, P(correct) = softmax(logits)[..., 1] at each step's end
    model = AutoModelForTokenClassification.from_pretrained(tmp_path / "hf").eval()
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert model.config.id2label == PRM_LABELS and model.config.num_labels == 2
    encoded = encode_steps(tokenizer, "reverse then shift: abc", ["cba", "dcb", "odd  spacing é"])
    ids = torch.tensor([encoded.input_ids])
    with torch.no_grad():
        theirs = model(input_ids=ids).logits.softmax(-1)[0, encoded.step_ends, 1]
        ours = torch.sigmoid(rm(ids, torch.ones_like(ids)).position_rewards[0, encoded.step_ends])
    assert len(encoded.step_ends) == 3
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=0)


def test_token_export_refuses_a_path_it_did_not_make(prm_dir, tmp_path):
    path, _ = prm_dir
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "notes.txt").write_text("mine")
    with pytest.raises(UserError):
        export_token_classifier(path, tmp_path / "hf", device="cpu")
    assert (tmp_path / "hf" / "notes.txt").read_text() == "mine"
