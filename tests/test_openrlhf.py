"""OpenRLHF 0.11's own client code (`openrlhf.utils.agent`) driving `rewardlab serve` over real HTTP.

Only the generation engine is stood in for (vLLM needs a GPU): it returns fixed token ids, and everything after it is
OpenRLHF's code: the query decoded with special tokens, the request (one sample, with `prompts` and `labels`), the
retries, and how it reads `rewards`, `scores` and `extra_logs`. Needs `pip install --no-deps openrlhf==0.11.2` and the
`openrlhf` extra (aiohttp, sympy, pylatexenc); .ci/run installs them.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

agent = pytest.importorskip("openrlhf.utils.agent", reason="OpenRLHF's client: pip install --no-deps openrlhf==0.11.2")
pytest.importorskip("uvicorn")

from live_server import live_server  # noqa: E402
from rewardlab.modeling.reward_model import build_reward_model  # noqa: E402
from rewardlab.scoring import score_completions  # noqa: E402
from rewardlab.serve import create_app  # noqa: E402

MAX_LENGTH = 64
KEY = "openrlhf-key"


class FixedEngine:
    """Stands in for OpenRLHF's vLLM engine: `generate` returns the given response's token ids (EOS included, as vLLM
    returns the stop token)."""

    def __init__(self, response_ids: list[int], text: str) -> None:
        self.response_ids, self.text = response_ids, text
        self.prompts_seen: list[list[int]] = []

    async def generate(self, prompt_token_ids, sampling_params, multi_modal_data=None):
        self.prompts_seen.append(list(prompt_token_ids))
        output = SimpleNamespace(token_ids=self.response_ids, text=self.text, finish_reason="stop", logprobs=None)
        return SimpleNamespace(outputs=[output])


@pytest.fixture(scope="module")
def rm():
    return build_reward_model("tiny-llama", seed=0).eval()


@pytest.fixture(scope="module")
def url(rm):
    with live_server(create_app(rm, max_length=MAX_LENGTH, api_key=KEY)) as base:
        # OpenRLHF's client sends no headers; aiohttp turns URL credentials into Basic auth, which rewardlab accepts.
        yield base.replace("http://", f"http://rewardlab:{KEY}@") + "/get_reward"


def run_executor(url: str, rm, prompt_text: str, response_ids: list[int]) -> dict:
    executor = agent.SingleTurnAgentExecutor(remote_rm_url=url)
    engine = FixedEngine(response_ids, rm.tokenizer.decode(response_ids))
    params = SimpleNamespace(max_tokens=32, logprobs=None)
    return asyncio.run(executor.execute(prompt_text, None, params, max_length=1024, hf_tokenizer=rm.tokenizer, llm_engine=engine))


def test_openrlhf_single_turn_executor_gets_rewardlab_rewards(url, rm) -> None:
    tokenizer = rm.tokenizer
    plain_prompt, plain_response = "What is 2 + 2?", " It is 4."
    out = run_executor(url, rm, plain_prompt, tokenizer(plain_response, add_special_tokens=False)["input_ids"] + [2])
    want = score_completions(rm, [(plain_prompt, plain_response)])[0]
    assert out["reward"] == [pytest.approx(want.reward, abs=1e-5)]  # OpenRLHF keeps the list; one reward per sequence
    assert out["scores"] == out["reward"] and out["extra_logs"] == {"truncated": [0]}

    # A chat prompt as OpenRLHF's dataset renders it (--apply_chat_template), the response generated up to EOS.
    messages = [{"role": "user", "content": "Say hi in French."}]
    prompt_text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    response_ids = tokenizer("Salut !", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    out = run_executor(url, rm, prompt_text, response_ids)
    want = score_completions(rm, [(messages, [{"role": "assistant", "content": "Salut !"}])])[0]
    assert out["reward"] == [pytest.approx(want.reward, abs=1e-5)]


def test_an_over_long_sequence_is_truncated_keep_end_and_reported(url, rm) -> None:
    prompt, response = "Tell me a long story. " * 4, " Once upon a time there was an end."
    assert len(prompt) + len(response) > MAX_LENGTH  # byte-level tokenizer: one token per byte
    out = run_executor(url, rm, prompt, rm.tokenizer(response, add_special_tokens=False)["input_ids"] + [2])
    want = score_completions(rm, [(prompt, response)], max_length=MAX_LENGTH)[0]
    assert want.truncated and out["reward"] == [pytest.approx(want.reward, abs=1e-5)]
    assert out["extra_logs"] == {"truncated": [1]}  # OpenRLHF logs extra_logs as metrics


def test_a_whole_batch_in_one_request_as_openrlhf_before_0_9_1_sent_it(url, rm) -> None:
    executor = agent.SingleTurnAgentExecutor(remote_rm_url=url)
    pairs = [(f"Question {i}?", f" Answer {i}.") for i in range(100)]
    queries = [p + r for p, r in pairs]
    (reply,) = asyncio.run(executor._fetch_rewards_via_http(queries, [p for p, _ in pairs], [None] * len(pairs)))
    want = score_completions(rm, pairs, batch_size=16)
    assert reply["rewards"] == pytest.approx([w.reward for w in want], abs=1e-5) and reply["truncated"] == 0


def test_the_rewardlab_serve_command_as_a_user_starts_it(rm, tmp_path) -> None:
    """`rewardlab serve --max-length 256` in its own process: OpenRLHF-shaped requests get a reward each, an over-long
    query included (truncated), and a body over the limit gets 413."""
    import os
    import subprocess
    import sys
    import time

    import httpx

    from live_server import free_port

    port = free_port()
    command = [sys.executable, "-m", "rewardlab.cli", "serve", "--model", "tiny-llama", "--port", str(port)]
    command += ["--max-length", "256", "--max-body-bytes", "100000", "--device", "cpu"]
    env = {**os.environ, "REWARDLAB_API_KEY": KEY}
    server = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, server.stdout.read()
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "rewardlab serve did not start"
            time.sleep(0.2)
        url = base.replace("http://", f"http://rewardlab:{KEY}@") + "/get_reward"
        short = run_executor(url, rm, "What is 2 + 2?", rm.tokenizer(" 4.", add_special_tokens=False)["input_ids"] + [2])
        long_prompt = "Tell me a long story. " * 20
        long = run_executor(url, rm, long_prompt, rm.tokenizer(" The end.", add_special_tokens=False)["input_ids"] + [2])
        assert short["reward"] == [pytest.approx(score_completions(rm, [("What is 2 + 2?", " 4.")])[0].reward, abs=1e-5)]
        want = score_completions(rm, [(long_prompt, " The end.")], max_length=256)[0]
        assert want.truncated and long["reward"] == [pytest.approx(want.reward, abs=1e-5)]
        assert long["extra_logs"] == {"truncated": [1]}
        headers = {"Authorization": f"Bearer {KEY}"}
        too_big = httpx.post(f"{base}/get_reward", json={"query": ["q" * 1000] * 101}, headers=headers, timeout=30)
        assert too_big.status_code == 413
        assert httpx.post(f"{base}/get_reward", json={"query": ["x y"]}, timeout=30).status_code == 401  # no key
    finally:
        server.terminate()
        server.wait(timeout=30)
