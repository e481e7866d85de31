"""A process reward model's step token rewards over HTTP: `POST /score` with `"token_rewards": "step"` gives id items the
numbers of `rl.rollout.step_row_scores`, which `rewardlab ppo --reward-shaping step` (`response_step_scores`) and verl's
local scorer compute, and verl's `server_url` with method `step` gets them back unchanged. A tiny untrained PRM (a tiny
model whose config says objective prm) suffices: the numbers must agree, whatever they are."""

from __future__ import annotations

import asyncio

import pytest
import torch

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from live_server import live_server  # noqa: E402
from rewardlab.generation import Sample, prompt_token_ids  # noqa: E402
from rewardlab.integrations.verl import TokenRewardManager, TokenRewardScorer, VerlRewardOptions  # noqa: E402
from rewardlab.modeling.reward_model import build_reward_model  # noqa: E402
from rewardlab.rl.rollout import build_response_batch, response_step_scores, separator_token_id  # noqa: E402
from rewardlab.serve import create_app  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

MAX_BATCH = 2  # fewer than the rows: the server splits them into forward passes
ROW_KEYS = ["reward", "prompt_reward", "tokens", "token_rewards", "truncated"]
CHATML_LIKE = (  # closes a turn with EOS and a newline, as ChatML closes with "<|im_end|>\n": closing must not be added
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@pytest.fixture(scope="module")
def prm():
    rm = build_reward_model("tiny-llama", seed=0).eval()
    rm.config.objective = "prm"
    rm.tokenizer.chat_template = CHATML_LIKE
    return rm


@pytest.fixture(scope="module")
def rows(prm):
    """(prompt ids, response ids) as verl holds them: chat prompts, several steps, one response cut without EOS."""
    tokenizer = prm.tokenizer
    eos = tokenizer.eos_token_id

    def ids(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False).input_ids

    def chat(question: str) -> list[int]:
        return prompt_token_ids(tokenizer, [{"role": "user", "content": question}])

    return [
        (chat("What is 2 + 3 + 4?"), ids("2 + 3 = 5\n5 + 4 = 9\nThe answer is 9.") + [eos]),  # three steps, finished
        (chat("What is 7 * 6?"), ids("7 * 6 = 42\nso the ans")),  # cut mid-step (no EOS): its last line ends nowhere
        (chat("Say 1."), ids("1") + [eos]),  # one step
        (ids("Count to three.\n"), ids("one\ntwo\nthree\n") + [eos]),  # plain prompt, a step ended by a separator
        (ids("x"), ids("a\nb")),  # unfinished, one complete step
    ]


@pytest.fixture(scope="module")
def expected(prm, rows):
    """PPO's step scores (`response_step_scores`) on all rows in one batch: (returns, per-row token rewards)."""
    tokenizer = prm.tokenizer
    samples = [Sample(0, p, r, r[-1] == tokenizer.eos_token_id, "") for p, r in rows]
    batch = build_response_batch(samples, tokenizer.pad_token_id)
    finished = torch.tensor([s.finished for s in samples])
    with torch.no_grad():
        total, scores = response_step_scores(prm, batch, finished, tokenizer, separator_token_id(tokenizer))
    return total.tolist(), [scores[i, : len(r)].tolist() for i, (_, r) in enumerate(rows)]


@pytest.fixture(scope="module")
def server(prm):
    with live_server(create_app(prm, max_batch_size=MAX_BATCH)) as url, httpx.Client(base_url=url, timeout=60) as client:
        yield url, client


def id_items(rows) -> list[dict]:
    return [{"prompt_ids": p, "response_ids": r} for p, r in rows]


def local_scores(prm, rows, micro_batch_size: int = 3):
    options = VerlRewardOptions(reward_model=prm, method="step", micro_batch_size=micro_batch_size)
    return TokenRewardScorer(options, prm.tokenizer).score(rows)


def test_score_step_gives_the_local_and_ppo_step_rewards(prm, rows, expected, server) -> None:
    _, client = server
    reply = client.post("/score", json={"items": id_items(rows), "token_rewards": "step"})
    assert reply.status_code == 200, reply.text
    results = reply.json()["results"]
    totals, per_row = expected
    local = local_scores(prm, rows)
    for i, (got, (_, response)) in enumerate(zip(results, rows, strict=True)):
        assert list(got) == ROW_KEYS and got["prompt_reward"] == 0.0 and got["truncated"] is False
        assert len(got["token_rewards"]) == len(got["tokens"]) == len(response)
        assert got["token_rewards"] == pytest.approx(per_row[i], abs=1e-6)
        assert got["token_rewards"] == pytest.approx(local[i].token_rewards, abs=1e-6)
        assert got["reward"] == pytest.approx(totals[i], abs=1e-6) and got["reward"] == pytest.approx(local[i].reward, abs=1e-6)
    # the several-step row has a reward at each of its three step ends; the cut row none on its unfinished last line
    assert sum(r != 0 for r in results[0]["token_rewards"]) == 3 and results[0]["token_rewards"][-1] != 0
    assert sum(r != 0 for r in results[1]["token_rewards"]) == 1 and results[1]["token_rewards"][-1] == 0


def test_step_token_rewards_sum_to_the_reward(rows, server) -> None:
    _, client = server
    results = client.post("/score", json={"items": id_items(rows), "token_rewards": "step"}).json()["results"]
    for got in results:
        assert sum(got["token_rewards"]) == pytest.approx(got["reward"], abs=1e-6)


def test_verl_with_server_url_and_step_equals_verl_local(prm, rows, server) -> None:
    url, _ = server
    local = local_scores(prm, rows, micro_batch_size=1)
    options = VerlRewardOptions(server_url=url, method="step", micro_batch_size=2)
    remote = TokenRewardScorer(options, prm.tokenizer)
    for got in (remote.score(rows), asyncio.run(remote.score_server_async(rows))):
        for g, want in zip(got, local, strict=True):
            assert g.reward == pytest.approx(want.reward, abs=1e-6) and g.prompt_reward == want.prompt_reward == 0.0
            assert g.token_rewards == pytest.approx(want.token_rewards, abs=1e-6)


def test_verls_manager_over_http_gives_the_local_managers_tensor(prm, rows, server) -> None:
    from types import SimpleNamespace

    url, _ = server
    batch = build_response_batch([Sample(0, p, r, False, "") for p, r in rows], prm.tokenizer.pad_token_id)
    width = batch.context_width
    mask = torch.cat([batch.attention_mask[:, :width], batch.mask.long()], dim=1)
    verl_batch = {"prompts": batch.input_ids[:, :width], "responses": batch.response_ids, "input_ids": batch.input_ids}
    data = SimpleNamespace(batch=verl_batch | {"attention_mask": mask})
    local = TokenRewardManager(prm.tokenizer, reward_model=prm, method="step")(data, return_dict=True)
    remote = TokenRewardManager(prm.tokenizer, server_url=url, method="step")(data, return_dict=True)
    assert torch.allclose(remote["reward_tensor"], local["reward_tensor"], atol=1e-6)
    assert remote["reward_extra_info"]["rm_score"] == pytest.approx(local["reward_extra_info"]["rm_score"], abs=1e-6)


def test_a_prompt_cut_at_max_length_scores_the_kept_row(prm, rows) -> None:
    from fastapi.testclient import TestClient

    prompt, response = rows[0]
    keep = len(response) + 3  # the cut takes the prompt's start only
    with TestClient(create_app(prm, max_length=keep)) as client:
        reply = client.post("/score", json={"items": id_items([(prompt, response)]), "token_rewards": "step"})
    (got,) = reply.json()["results"]
    (want,) = local_scores(prm, [(prompt[len(prompt) + len(response) - keep :], response)])
    assert got["truncated"] is True and got["token_rewards"] == pytest.approx(want.token_rewards, abs=1e-6)


def test_refusals_are_one_line_422s(prm, rows, server) -> None:
    from fastapi.testclient import TestClient

    url, client = server

    def refused(reply, said: str) -> None:
        error = reply.json()["error"]
        assert reply.status_code == 422 and said in error and "\n" not in error, reply.text

    for method in ("r3hf", "sparse"):  # a sequence method on a PRM
        refused(client.post("/score", json={"items": id_items(rows[:1]), "token_rewards": method}), "process reward model")
    text = [{"prompt": "What is 1 + 1?", "response": "1 + 1 = 2"}]
    refused(client.post("/score", json={"items": text, "token_rewards": "step"}), "token ids")
    refused(client.post("/score", json={"items": id_items(rows[:1]) + text, "token_rewards": "step"}), "items.1")
    refused(client.post("/score", json={"items": id_items(rows[:1]), "token_rewards": "nope"}), "nope")
    sequence_rm = build_reward_model("tiny-llama", seed=1).eval()
    with TestClient(create_app(sequence_rm)) as other:
        refused(other.post("/score", json={"items": id_items(rows[:1]), "token_rewards": "step"}), "sequence reward model")
        assert other.post("/score", json={"items": id_items(rows[:1]), "token_rewards": "r3hf"}).status_code == 200
    remote = TokenRewardScorer(VerlRewardOptions(server_url=url, method="r3hf"), prm.tokenizer)
    with pytest.raises(RuntimeError, match="HTTP 422.*process reward model"):
        remote.score(rows[:1])
