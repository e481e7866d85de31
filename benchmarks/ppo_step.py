"""Cost of dense (R3HF) token rewards in a PPO step, measured side by side with sparse rewards.

    python benchmarks/ppo_step.py             # a table
    python benchmarks/ppo_step.py --quick     # seconds
    python benchmarks/ppo_step.py --json      # one JSON object per comparison: benchmark, ratio, better, ...

One `PPOTrainer` (random tiny-Llama policy and a random tiny-Llama reward model of the same size; speed does not depend
on the weights) runs a full PPO step (rollout + update) with `reward_shaping` = sparse and = r3hf alternately, order
rotated every repetition, after a warm-up. Before every step the policy, critic and optimiser are restored to one saved
state and the rollout seed is fixed, so both contenders generate the SAME responses and differ only in the token
rewards. Comparisons (ratio = median r3hf / median sparse):
- ppo_update_seconds (better: lower): the `ppo_epochs` passes over the rollout; the same work for both, expected ~1;
- ppo_reward_seconds (better: lower): reward-model forward pass + token rewards (r3hf only adds a subtraction);
- ppo_step_seconds (better: lower): the whole step, rollout and update;
- ppo_generated_tokens_per_second (better: higher): generation throughput inside the step, expected ~1.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch
from transformers.utils import logging as hf_logging

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DEFAULT_HIDDEN, DEFAULT_LAYERS, alternate, comparison, emit, load_average, machine  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="one JSON object per comparison")
    parser.add_argument("--quick", action="store_true", help="a small model and few repetitions")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=16, help="responses per rollout")
    parser.add_argument("--minibatch-size", type=int, default=8)
    parser.add_argument("--ppo-epochs", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--hidden-size", type=int, default=DEFAULT_HIDDEN)
    parser.add_argument("--num-layers", type=int, default=DEFAULT_LAYERS)
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.hidden_size, args.num_layers, args.max_new_tokens, args.batch_size = 3, 64, 2, 16, 8
    return args


def build_trainer(args: argparse.Namespace, output_dir: str):
    from rewardlab.modeling.head import RewardHead
    from rewardlab.modeling.reward_model import RewardModel, RewardModelConfig
    from rewardlab.modeling.tiny import build_tiny_llama
    from rewardlab.rl.ppo import PPOTrainer
    from rewardlab.rl.ppo_config import PPOConfig
    from rewardlab.tasks.world import make_prompts

    size = {"hidden_size": args.hidden_size, "num_layers": args.num_layers}
    policy = build_tiny_llama(seed=0, **size)
    lm, tokenizer = build_tiny_llama(seed=1, **size)
    head = RewardHead(args.hidden_size, "linear", dropout=0.0)
    reward_model = RewardModel(lm, tokenizer, head, RewardModelConfig(base_model="tiny-llama", head_dropout=0.0))
    cfg = PPOConfig(
        output_dir=output_dir,
        batch_size=args.batch_size,
        minibatch_size=args.minibatch_size,
        ppo_epochs=args.ppo_epochs,
        max_new_tokens=args.max_new_tokens,
        progress=False,
        save_policy=False,
    )
    prompts = make_prompts("train", args.batch_size, seed=0)
    return PPOTrainer(cfg, policy=policy, reward_model=reward_model, prompts=prompts), prompts


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    hf_logging.disable_progress_bar()
    torch.manual_seed(0)
    load_before = load_average()
    trainer, prompts = build_trainer(args, output_dir="unused")
    start_state = copy.deepcopy(trainer.model.state_dict())
    start_optimizer = copy.deepcopy(trainer.optimizer.state_dict())

    def step(shaping: str) -> dict[str, float]:
        trainer.model.load_state_dict(start_state)
        trainer.optimizer.load_state_dict(start_optimizer)
        trainer.cfg.reward_shaping = shaping
        rollout = trainer.rollout(prompts, step=0)  # fixed seed: the same responses for both contenders
        update = trainer.update(rollout)
        timings = rollout.timings
        rollout_seconds = timings["generate_seconds"] + timings["policy_forward_seconds"] + timings["reward_seconds"]
        return {
            "update_seconds": update["update_seconds"],
            "reward_seconds": timings["reward_seconds"],
            "step_seconds": rollout_seconds + update["update_seconds"],
            "tokens_per_second": timings["generated_tokens"] / timings["generate_seconds"],
            "responses_hash": float(hash(tuple(rollout.batch.response_ids.flatten().tolist())) % 2**31),
        }

    runs = alternate({"r3hf": lambda: step("r3hf"), "sparse": lambda: step("sparse")}, args.repeats, warmup=1)
    hashes = {run["responses_hash"] for runs_of in runs.values() for run in runs_of}
    extra = {
        "device": machine(str(trainer.accelerator.device)),
        "hidden_size": args.hidden_size,
        "num_layers": args.num_layers,
        "batch_size": args.batch_size,
        "max_new_tokens": args.max_new_tokens,
        "ppo_epochs": args.ppo_epochs,
        "same_responses": len(hashes) == 1,
        "load_average_before": load_before,
        "load_average_after": load_average(),
    }
    results = [
        comparison("ppo_update_seconds", runs, "r3hf", "sparse", "lower", key="update_seconds", **extra),
        comparison("ppo_reward_seconds", runs, "r3hf", "sparse", "lower", key="reward_seconds", **extra),
        comparison("ppo_step_seconds", runs, "r3hf", "sparse", "lower", key="step_seconds", **extra),
        comparison("ppo_generated_tokens_per_second", runs, "r3hf", "sparse", "higher", key="tokens_per_second", **extra),
    ]
    emit(results, args.json, header=f"PPO step, r3hf vs sparse token rewards ({extra['device']})")
    return results


if __name__ == "__main__":
    main()
