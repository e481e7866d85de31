"""`rewardlab doctor`: passes on a trained tiny reward model and its export; fails, naming the check, on a checkpoint
broken on purpose for each contract (a random or missing head, the pad token at EOS, a truncated chat template); the
figures recomputed independently."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from rewardlab.cli import app
from rewardlab.doctor import (
    FAILED,
    INFO,
    PASSED,
    SKIPPED,
    alignment_ratio,
    examine,
    length_accuracy,
    random_alignment,
    within,
)
from rewardlab.export import export_sequence_classifier
from rewardlab.modeling.reward_model import HEAD_WEIGHTS, initial_head
from rewardlab.train_rm import RewardTrainingConfig, train_reward_model

pytestmark = pytest.mark.usefixtures("one_thread")
runner = CliRunner()


@pytest.fixture(scope="module")
def trained(easy_data, tmp_path_factory):
    """A tiny-llama reward model fully fine-tuned for 6 steps on the easy task (chat data), seed 42."""
    out = tmp_path_factory.mktemp("doctor") / "run"
    cfg = RewardTrainingConfig(
        train_data=str(easy_data / "small.jsonl"),
        output_dir=str(out),
        max_steps=6,
        learning_rate=3e-3,
        per_device_train_batch_size=16,
        head_dropout=0.0,
        progress=False,
    )
    train_reward_model(cfg)
    return out


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    out = tmp_path_factory.mktemp("doctor-export") / "hf"
    export_sequence_classifier(trained, out, device="cpu")
    return out


def statuses(report: dict) -> dict[str, str]:
    return {row["name"]: row["status"] for row in report["checks"]}


def row(report: dict, name: str) -> dict:
    return next(r for r in report["checks"] if r["name"] == name)


def copy_of(directory, tmp_path):
    target = tmp_path / directory.name
    shutil.copytree(directory, target)
    return target


# ----------------------------------------------------------------------------------------------------------------------
# pure pieces


def test_alignment_ratio_against_numpy():
    g = torch.Generator().manual_seed(0)
    features = torch.randn(40, 6, generator=g, dtype=torch.float64) * torch.tensor([5.0, 1, 1, 0.5, 0.1, 2])
    w = torch.randn(3, 6, generator=g, dtype=torch.float64)
    x, v = features.numpy(), w.numpy()
    expected = [np.var(x @ v[k]) / (np.dot(v[k], v[k]) / 6 * np.var(x, axis=0).sum()) for k in range(3)]
    torch.testing.assert_close(alignment_ratio(features, w), torch.tensor(expected, dtype=torch.float64))
    # the largest-variance axis gives the largest ratio: var 25 against a mean variance of (25+1+1+.25+.01+4)/6
    assert alignment_ratio(features, torch.eye(6, dtype=torch.float64)).argmax().item() == 0
    # an isotropic direction gives 1 on average (exactly, in expectation)
    assert random_alignment(features, n=4000).mean().item() == pytest.approx(1.0, abs=0.1)


def test_length_accuracy_and_within_by_hand():
    assert length_accuracy(torch.tensor([5, 3, 4, 2]), torch.tensor([1, 3, 9, 1])) == pytest.approx((1 + 0.5 + 0 + 1) / 4)
    gap, ok = within(torch.tensor([10.0, 0.5]), torch.tensor([10.0009, 0.5]))
    assert gap == pytest.approx(0.0009, rel=1e-3) and ok  # 1e-4 x |10|
    assert not within(torch.tensor([0.5]), torch.tensor([0.5002]))[1]  # 1e-4 x max(1, 0.5)
    assert not within(torch.tensor([float("nan")]), torch.tensor([0.0]))[1]


def test_chat_closing_accepts_eos_that_is_also_the_pad_token():
    """SmolLM2 pads with its EOS, <|im_end|>: the closing still ends the turn. A closing without it does not."""
    from rewardlab.doctor import Subject, check_chat_closing
    from rewardlab.modeling.tiny import build_byte_tokenizer

    tokenizer = build_byte_tokenizer()
    tokenizer.pad_token = tokenizer.eos_token
    assert check_chat_closing(Subject("rewardlab", None, tokenizer, "x")).status == PASSED
    tokenizer.chat_template = tokenizer.chat_template.replace("{{ message['content'] }}</s>", "{{ message['content'] }}\n")
    assert check_chat_closing(Subject("rewardlab", None, tokenizer, "x")).status == FAILED


# ----------------------------------------------------------------------------------------------------------------------
# a good checkpoint


def test_doctor_passes_on_a_trained_model_with_data(trained, easy_data):
    report = examine(str(trained), str(easy_data / "test.jsonl"), limit=48, device="cpu")
    got = statuses(report)
    assert report["failed"] == [] and report["kind"] == "rewardlab"
    for name in ("head", "pad_eos", "text_convention", "chat_closing", "padding_sides", "packed", "export", "server", "bf16"):
        assert got[name] == PASSED, row(report, name)
    assert got["closing_after_eos"] == INFO and got["length_baseline"] == INFO and got["reward_length_correlation"] == INFO
    assert row(report, "head")["figure"] > row(report, "head")["extra"]["random_quantile_99"]

    # the data rows, recomputed from the file on their own: response lengths in tokens, rewards from eval-rm's scoring
    from rewardlab.data.loading import load_preferences
    from rewardlab.evaluation import evaluate_preferences
    from rewardlab.modeling.loader import load_reward_model

    rm = load_reward_model(trained)
    examples = load_preferences(str(easy_data / "test.jsonl"), limit=48).examples
    metrics, scores = evaluate_preferences(rm, examples)

    def n_tokens(prompt, response):
        full = rm.tokenizer.apply_chat_template(prompt + response, tokenize=False)
        opened = rm.tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
        return len(rm.tokenizer(full[len(opened) :], add_special_tokens=False)["input_ids"])

    chosen = [n_tokens(e.prompt, e.chosen) for e in examples]
    rejected = [n_tokens(e.prompt, e.rejected) for e in examples]
    longer_wins = np.mean([1.0 if c > r else 0.5 if c == r else 0.0 for c, r in zip(chosen, rejected, strict=True)])
    baseline = row(report, "length_baseline")
    assert baseline["figure"] == pytest.approx(longer_wins)
    assert baseline["extra"]["model_accuracy"] == pytest.approx(metrics["accuracy"])
    rewards = np.array(scores["chosen_reward"] + scores["rejected_reward"])
    expected_r = np.corrcoef(rewards, np.array(chosen + rejected, dtype=float))[0, 1]
    assert row(report, "reward_length_correlation")["figure"] == pytest.approx(expected_r, abs=1e-4)


def test_doctor_passes_on_the_export(exported):
    report = examine(str(exported), device="cpu")
    got = statuses(report)
    assert report["failed"] == [] and report["kind"] == "transformers"
    for name in ("head", "pad_eos", "text_convention", "chat_closing", "padding_sides", "bf16"):
        assert got[name] == PASSED, row(report, name)
    assert got["packed"] == got["export"] == got["server"] == SKIPPED


def test_cli_writes_strict_json_and_exits_0(exported, tmp_path):
    result = runner.invoke(app, ["doctor", str(exported), "--output", str(tmp_path / "doctor.json"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1].startswith("ok: no check failed")
    saved = json.loads((tmp_path / "doctor.json").read_text(), parse_constant=lambda c: pytest.fail(f"non-strict {c}"))
    assert saved["failed"] == [] and {r["name"] for r in saved["checks"]} >= {"head", "pad_eos", "bf16"}


# ----------------------------------------------------------------------------------------------------------------------
# planted faults: each fails, naming its check


def test_a_reinitialised_head_fails(trained, tmp_path):
    """The head redrawn from another seed after training: a random direction to the trained backbone."""
    run = copy_of(trained, tmp_path)
    head_file = run / "model" / HEAD_WEIGHTS
    head = load_file(head_file)
    hidden = head["net.weight"].shape[1]
    from rewardlab.modeling.reward_model import RewardModelConfig

    fresh = initial_head(hidden, RewardModelConfig(base_model="tiny-llama", head_dropout=0.0), seed=123)
    save_file({"net.weight": fresh.net.weight.detach().contiguous()}, head_file)
    result = runner.invoke(app, ["doctor", str(run), "--device", "cpu"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1].startswith("FAILED: head")
    # the same head, but the one the run's own seed draws: never trained
    seed_draw = initial_head(hidden, RewardModelConfig(base_model="tiny-llama"), seed=42)
    save_file({"net.weight": seed_draw.net.weight.detach().contiguous()}, head_file)
    report = examine(str(run), device="cpu")
    assert report["failed"][0] == "head" and "its run's seed draws" in row(report, "head")["detail"]


def test_a_head_missing_from_a_transformers_checkpoint_fails(exported, tmp_path):
    """trl#1379: the score layer not saved, so transformers draws it at load."""
    hf = copy_of(exported, tmp_path)
    weights = load_file(hf / "model.safetensors")
    del weights["score.weight"]
    save_file(weights, hf / "model.safetensors", metadata={"format": "pt"})
    report = examine(str(hf), device="cpu")
    # (a random head's scores barely vary, so bf16 rounding may fail beside it)
    assert report["failed"][0] == "head" and "score.weight missing" in row(report, "head")["detail"]


def test_pad_token_at_eos_fails(exported, tmp_path):
    """trl#937: a classifier whose pad_token_id is EOS reads one token early on text that ends in EOS."""
    hf = copy_of(exported, tmp_path)
    config = json.loads((hf / "config.json").read_text())
    tokenizer = json.loads((hf / "tokenizer_config.json").read_text())
    config["pad_token_id"] = config["eos_token_id"]
    (hf / "config.json").write_text(json.dumps(config))
    result = runner.invoke(app, ["doctor", str(hf), "--device", "cpu", "--output", str(tmp_path / "d.json")])
    assert result.exit_code == 1, result.output
    assert result.output.strip().splitlines()[-1].startswith("FAILED: pad_eos")
    report = json.loads((tmp_path / "d.json").read_text())
    assert row(report, "pad_eos")["figure"] > 1e-3 and tokenizer  # the tokenizer still pads with its own token


def test_a_truncated_chat_template_fails(trained, tmp_path):
    """A template cut before its closing (no </s> after an answer): the reward is read where training never read it."""
    run = copy_of(trained, tmp_path)
    template_file = run / "model" / "chat_template.jinja"
    template = template_file.read_text()
    assert "{{ message['content'] }}</s>" in template
    template_file.write_text(template.replace("{{ message['content'] }}</s>", "{{ message['content'] }}"))
    report = examine(str(run), device="cpu")
    # (the server also disagrees: /get_reward appends EOS to a chat turn its template leaves unclosed)
    assert set(report["failed"]) <= {"text_convention", "chat_closing", "server"}
    assert report["failed"][:2] == ["text_convention", "chat_closing"]
    assert "saved '</s>" in row(report, "text_convention")["detail"]
    result = runner.invoke(app, ["doctor", str(run), "--device", "cpu"])
    assert result.exit_code == 1 and "text_convention" in result.output.strip().splitlines()[-1]
