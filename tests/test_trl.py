"""rewardlab as a TRL reward function: the same numbers as `rewardlab score`, and real GRPO / RLOO steps with it."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from rewardlab.cli import app
from rewardlab.integrations.trl import reward_function
from rewardlab.modeling.reward_model import build_reward_model
from rewardlab.runtime import write_jsonl

trl = pytest.importorskip("trl")
pytestmark = pytest.mark.usefixtures("one_thread")

PLAIN = [
    ("What is 2 + 2?", " It is 4."),
    ("Name a colour.", " Blue"),
    ("x", ""),  # an empty completion: the EOS alone is scored
]
CHAT = [
    ([{"role": "user", "content": "Say hi in French."}], [{"role": "assistant", "content": "Salut !"}]),
    (
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2 + 2?"}],
        [{"role": "assistant", "content": "4"}],
    ),
]


@pytest.fixture(scope="module")
def rm_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("trl") / "rm"
    build_reward_model("tiny-llama", head_dropout=0.0, seed=7).save_pretrained(path)
    return path


def rewardlab_score(rm_dir, rows, tmp_path) -> list[float]:
    """The CLI, as a user runs it."""
    data, out = tmp_path / "rows.jsonl", tmp_path / "scores.jsonl"
    write_jsonl(data, [{"prompt": p, "completion": c} for p, c in rows])
    result = CliRunner().invoke(
        app, ["score", "--model", str(rm_dir), "--data", str(data), "--output", str(out), "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    return [json.loads(line)["reward"] for line in out.read_text().splitlines()]


@pytest.mark.parametrize("rows", [PLAIN, CHAT], ids=["plain", "chat"])
def test_reward_function_returns_rewardlab_score_numbers(rm_dir, rows, tmp_path) -> None:
    want = rewardlab_score(rm_dir, rows, tmp_path)
    fn = reward_function(str(rm_dir), device="cpu", batch_size=2)
    prompts, completions = [p for p, _ in rows], [c for _, c in rows]
    got = fn(
        prompts=prompts, completions=completions, completion_ids=[[0]] * len(rows), trainer_state=None, label=[1] * len(rows)
    )
    assert got == pytest.approx(want, abs=1e-4)
    assert all(isinstance(r, float) for r in got) and fn.__name__ == "rewardlab"


def test_plain_strings_get_the_eos_a_generation_stopped_at(rm_dir) -> None:
    """TRL decodes completions without special tokens; scoring them without EOS reads the reward at the wrong token."""
    fn = reward_function(str(rm_dir), device="cpu")
    with_eos = fn(prompts=["What is 2 + 2?"], completions=[" It is 4."])[0]
    rm = fn.rm
    ids = rm.tokenizer("What is 2 + 2? It is 4.", add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        without_eos = float(rm(ids, torch.ones_like(ids)).sequence_rewards[0])
    assert with_eos != pytest.approx(without_eos, abs=1e-4)


def test_a_wrong_model_path_fails_at_construction(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="no such reward model directory"):
        reward_function(str(tmp_path / "nope"))
    with pytest.raises(ValueError, match="batch_size"):
        reward_function("tiny-llama", batch_size=0)


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory):
    from rewardlab.modeling.tiny import build_tiny_llama

    path = tmp_path_factory.mktemp("trl") / "policy"
    model, tokenizer = build_tiny_llama(seed=1)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


class Recorder:
    """Wraps the reward function to see what TRL passed and got (the wrapped function is what TRL calls)."""

    def __init__(self, fn):
        self.fn, self.calls = fn, []
        self.__name__ = fn.__name__

    def __call__(self, prompts, completions, **kwargs):
        rewards = self.fn(prompts=prompts, completions=completions, **kwargs)
        self.calls.append((list(prompts), list(completions), rewards, sorted(kwargs)))
        return rewards


@pytest.mark.parametrize("trainer_name", ["GRPOTrainer", "RLOOTrainer"])
def test_one_real_trl_step_with_the_reward_function(rm_dir, policy_dir, tmp_path, trainer_name) -> None:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM

    trainer_cls = getattr(trl, trainer_name)
    config_cls = getattr(trl, trainer_name.replace("Trainer", "Config"))
    args = config_cls(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=8,
        max_steps=1,
        learning_rate=1e-2,
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        bf16=False,
        seed=0,
    )
    recorder = Recorder(reward_function(str(rm_dir), device="cpu"))
    policy = AutoModelForCausalLM.from_pretrained(policy_dir)
    before = {name: p.detach().clone() for name, p in policy.named_parameters()}
    dataset = Dataset.from_dict({"prompt": ["What is 2 + 2?", "Name a colour."] * 2})
    trainer = trainer_cls(model=policy, reward_funcs=[recorder], args=args, train_dataset=dataset)
    trainer.train()

    assert recorder.calls, "TRL never called the reward function"
    prompts, completions, rewards, keys = recorder.calls[0]
    assert "completion_ids" in keys and "trainer_state" in keys  # TRL's own keyword arguments reached it
    again = reward_function(str(rm_dir), device="cpu")(prompts=prompts, completions=completions)
    assert rewards == pytest.approx(again, abs=1e-5)  # what TRL trained on is rewardlab's score of its completions
    logged = [entry for entry in trainer.state.log_history if "rewards/rewardlab/mean" in entry]
    assert logged and logged[0]["rewards/rewardlab/mean"] == pytest.approx(sum(rewards) / len(rewards), abs=1e-4)
    changed = any(not torch.equal(before[name], p.detach()) for name, p in trainer.model.named_parameters())
    assert changed, "one optimisation step left every policy weight as it was"
