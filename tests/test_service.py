"""The scoring service (rewardlab.modeling.service): its entries agree, views read one forward pass, the async entry
shares forward passes between concurrent callers."""

from __future__ import annotations

import asyncio

import pytest
import torch

from rewardlab.data.pairs import encode_pairs
from rewardlab.data.types import PreferenceExample
from rewardlab.masks import pad_rows
from rewardlab.modeling.reward_model import build_reward_model
from rewardlab.modeling.service import ScoredBatch, ScoringService, TokenRewardSettings
from rewardlab.scoring import score_completions

pytestmark = pytest.mark.usefixtures("one_thread")

ITEMS = [
    ("What is 2 + 2?", " It is 4."),
    ("Human: hi\n\nAssistant: ", "Hello there, friend."),
    ([{"role": "user", "content": "Say hi."}], [{"role": "assistant", "content": "Salut !"}]),
    ("x", " y"),
]


@pytest.fixture(scope="module")
def rm():
    return build_reward_model("tiny-llama", head_dropout=0.0, seed=1).eval()


def test_sync_entries_give_score_completions_numbers(rm) -> None:
    service = ScoringService(rm, batch_size=3, settings=TokenRewardSettings("r3hf"))
    want = score_completions(rm, ITEMS, token_rewards="r3hf", batch_size=3)
    assert [r.to_row() for r in service.score(ITEMS)] == [r.to_row() for r in want]
    assert service.rewards(ITEMS) == [r.reward for r in want]
    scores = service.score_encoded([service.encode(p, r) for p, r in ITEMS])
    assert [s.token_rewards for s in scores] == [r.token_rewards for r in want]


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_rewards_at_token_positions_is_a_view_of_the_same_pass(rm, padding_side: str) -> None:
    """The reward head at given positions of each sequence (what step rewards will read): R(x, y) at the last token,
    R(x) at the last prompt token, whatever the padding."""
    service = ScoringService(rm, batch_size=4, padding_side=padding_side)
    sequences = [service.encode(p, r) for p, r in ITEMS]

    def ends(batch: ScoredBatch) -> list[tuple[float, float]]:
        rows = range(len(batch.settings))
        lengths = batch.attention_mask.sum(-1).tolist()
        starts = [int(batch.response_start[i]) - batch.offsets[i] for i in rows]
        return [tuple(batch.rewards_at(i, [starts[i] - 1, lengths[i] - 1])) for i in rows]

    got = service.score_encoded(sequences, view=ends)
    for (prompt_reward, reward), score in zip(got, service.score_encoded(sequences), strict=True):
        assert reward == pytest.approx(score.reward, abs=1e-6)
        assert prompt_reward == pytest.approx(score.prompt_reward, abs=1e-6)


def test_async_entry_shares_forward_passes_and_gives_the_same_numbers(rm) -> None:
    service = ScoringService(rm, batch_size=8)
    sequences = [service.encode(p, r) for p, r in ITEMS]
    settings = [TokenRewardSettings("r3hf"), TokenRewardSettings()]

    async def concurrently():
        calls = [service.score_async([seq], settings[i % 2]) for i, seq in enumerate(sequences)]
        results = await asyncio.gather(*calls)
        await service.batcher().stop()
        return [r for (r,) in results], service.batcher().batches_run

    scores, passes = asyncio.run(concurrently())
    assert passes == 1  # every caller queued before the worker ran: one forward pass
    for i, (got, seq) in enumerate(zip(scores, sequences, strict=True)):
        (alone,) = service.score_batch([seq], settings[i % 2])
        assert got.reward == pytest.approx(alone.reward, abs=1e-5)
        assert (got.token_rewards is None) == (i % 2 == 1)


def test_pair_entry_scores_a_model_in_training_as_each_sequence_alone(rm) -> None:
    """eval-rm's pair batches (chosen and rejected in one pass) give each sequence its own reward; a model in training
    is scored in eval mode and left in training mode."""
    examples = [PreferenceExample(p, r, r + " and more") for p, r in ITEMS if isinstance(p, str)]
    pairs, _ = encode_pairs(rm.tokenizer, examples, max_length=None)
    service = ScoringService(rm, batch_size=4)
    rm.train()
    try:
        chosen, rejected, index = service.score_pairs(pairs)
        assert rm.training
    finally:
        rm.eval()
    alone = [s.reward for s in service.score_encoded([p.chosen for p in pairs] + [p.rejected for p in pairs])]
    assert index.tolist() == list(range(len(pairs)))
    assert chosen.tolist() == pytest.approx(alone[: len(pairs)], abs=1e-5)
    assert rejected.tolist() == pytest.approx(alone[len(pairs) :], abs=1e-5)


def test_forward_padded_reads_a_batch_padded_inside_its_rows(rm) -> None:
    """PPO's layout (left-padded prompts, right-padded responses): rewards and token rewards as scored alone."""
    service = ScoringService(rm, batch_size=4, packed=False)
    sequences = [service.encode(p, r) for p, r in ITEMS if isinstance(p, str)]
    prompts = [s.input_ids[: s.response_start] for s in sequences]
    responses = [s.input_ids[s.response_start :] for s in sequences]
    prompt_ids, prompt_mask = pad_rows(prompts, 0, "left")
    response_ids, response_mask = pad_rows(responses, 0, "right")
    width = prompt_ids.shape[1]
    scored = service.forward_padded(
        torch.cat([prompt_ids, response_ids], 1),
        torch.cat([prompt_mask, response_mask], 1),
        torch.full((len(sequences),), width),
        TokenRewardSettings("r3hf"),
    )
    alone = service.score_encoded(sequences, TokenRewardSettings("r3hf"))
    assert scored.rewards.tolist() == pytest.approx([s.reward for s in alone], abs=1e-5)
    for row, score in enumerate(alone):
        n = len(responses[row])
        assert scored.token_rewards[row, width : width + n].tolist() == pytest.approx(score.token_rewards, abs=1e-5)
