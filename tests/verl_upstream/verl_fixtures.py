"""Building blocks for the tests against the real verl: the rows, verl's own config and data layouts, GAE by hand."""

from __future__ import annotations

import os
import re
from pathlib import Path

DOCS = Path(__file__).parent.parent.parent / "docs" / "integrations.md"

# Rows scored by `rewardlab score` and fed to verl as the policy's own token ids.
ROWS = [
    ("What is 2 + 2?", " It is 4."),
    ("Write a haiku about rain.", " Soft rain on the roof, drops"),
    ([{"role": "user", "content": "Say hi in French."}], [{"role": "assistant", "content": "Salut !"}]),
    ("x", " y"),
]
PROMPT_LENGTH, RESPONSE_LENGTH = 48, 40


def documented_overrides(marker: str, **values: str) -> list[str]:
    """The override lines of the docs' fenced block tagged `<!-- verl: marker -->`, placeholders filled in: the lines a
    user copies are the lines these tests compose verl's configuration from."""
    text = DOCS.read_text(encoding="utf-8")
    found = re.search(rf"<!-- verl: {re.escape(marker)} -->\s*```[a-z]*\n(.*?)```", text, re.S)
    assert found, f"docs/integrations.md has no block tagged <!-- verl: {marker} -->"
    lines = []
    for token in found.group(1).replace("\\\n", " ").split():
        if re.match(r"^\+?[a-z_]+(\.\w+)+=", token):  # verl overrides are dotted keys (not VAR=value)
            for placeholder, value in values.items():
                token = token.replace(placeholder, value)
            lines.append(token)
    assert lines, f"the block tagged {marker} holds no overrides"
    return lines


def compose_verl_config(overrides: list[str]):
    """verl's own trainer configuration (its packaged ppo_trainer.yaml, through Hydra) with these overrides."""
    import verl
    from hydra import compose, initialize_config_dir

    config_dir = os.path.join(os.path.dirname(verl.__file__), "trainer", "config")
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        return compose("ppo_trainer", overrides=overrides)


def trainer_batch(encoded_rows, tool_spans=()):
    """A real DataProto laid out as verl's trainer holds a batch: left-padded prompts, right-padded responses, and
    `response_mask` 0 on (row, start, end) spans of tool output."""
    import torch
    from verl import DataProto

    n = len(encoded_rows)
    prompts = torch.zeros(n, PROMPT_LENGTH, dtype=torch.long)
    responses = torch.zeros(n, RESPONSE_LENGTH, dtype=torch.long)
    attention = torch.zeros(n, PROMPT_LENGTH + RESPONSE_LENGTH, dtype=torch.long)
    for i, (p, r) in enumerate(encoded_rows):
        prompts[i, PROMPT_LENGTH - len(p) :] = torch.tensor(p)
        responses[i, : len(r)] = torch.tensor(r)
        attention[i, PROMPT_LENGTH - len(p) : PROMPT_LENGTH + len(r)] = 1
    response_mask = attention[:, PROMPT_LENGTH:].clone()
    for row, lo, hi in tool_spans:
        response_mask[row, lo:hi] = 0
    position_ids = (attention.cumsum(-1) - 1).clamp(min=0)
    return DataProto.from_dict(
        tensors={
            "prompts": prompts,
            "responses": responses,
            "input_ids": torch.cat([prompts, responses], -1),
            "attention_mask": attention,
            "position_ids": position_ids,
            "response_mask": response_mask,
        },
        non_tensors={"data_source": ["test"] * n},
    )


def agent_loop_sample(prompt_ids, response_ids):
    """One sample as verl's agent loop hands it to a reward-loop worker (verl 0.8+: unpadded, attention all ones)."""
    import numpy as np
    import torch
    from verl import DataProto

    ids = torch.tensor([prompt_ids + response_ids])
    return DataProto.from_dict(
        tensors={
            "prompts": torch.tensor([prompt_ids]),
            "responses": torch.tensor([response_ids]),
            "input_ids": ids,
            "attention_mask": torch.ones_like(ids),
            "position_ids": torch.arange(ids.shape[1]).unsqueeze(0),
        },
        non_tensors={"__num_turns__": np.array([2])},
    )


def internal_outputs(batch, reward_scores, extra_infos):
    """verl's `_InternalAgentLoopOutput`s (what its agent-loop workers hand to `_postprocess`), one per row of a
    trainer-layout batch, carrying what the reward loop returned."""
    from verl.experimental.agent_loop.agent_loop import AgentLoopMetrics, _InternalAgentLoopOutput

    out = []
    for i in range(len(batch)):
        out.append(
            _InternalAgentLoopOutput(
                prompt_ids=batch.batch["prompts"][i : i + 1],
                response_ids=batch.batch["responses"][i : i + 1],
                input_ids=batch.batch["input_ids"][i : i + 1],
                position_ids=batch.batch["position_ids"][i : i + 1],
                response_mask=batch.batch["response_mask"][i : i + 1],
                attention_mask=batch.batch["attention_mask"][i : i + 1],
                reward_score=reward_scores[i],
                num_turns=2,
                metrics=AgentLoopMetrics(),
                extra_fields={"reward_extra_info": dict(extra_infos[i])},
            )
        )
    return out


def gae_by_loop(rewards, values, mask, gamma: float, lam: float):
    """Returns (advantage + value) by GAE over the policy's tokens only (mask 1), written out plainly: tool tokens are
    observations, not actions (Schulman et al. 2016, Eq. 16, on the action steps)."""
    out = [[0.0] * len(rewards[0]) for _ in rewards]
    for i in range(len(rewards)):
        steps = [t for t in range(len(rewards[i])) if mask[i][t]]
        advantage, next_value = 0.0, 0.0
        for t in reversed(steps):
            delta = rewards[i][t] + gamma * next_value - values[i][t]
            advantage = delta + gamma * lam * advantage
            next_value = values[i][t]
            out[i][t] = advantage + values[i][t]
    return out
