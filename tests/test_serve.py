"""The reward server over real HTTP: a uvicorn server on a free 127.0.0.1 port, in a background thread."""

from __future__ import annotations

import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

import uvicorn  # noqa: E402

from rewardlab.modeling.reward_model import build_reward_model  # noqa: E402
from rewardlab.scoring import score_completions  # noqa: E402
from rewardlab.serve import create_app, require_serve_extra  # noqa: E402

MAX_ITEMS, MAX_LENGTH = 6, 120
ITEMS = [
    ("What is 2 + 2?", " It is 4."),
    ([{"role": "user", "content": "Say hi in French."}], [{"role": "assistant", "content": "Salut !"}]),
    ("Write a long answer.", " " + "words and more words " * 3),
    ("x", " y"),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def rm():
    return build_reward_model("tiny-llama", seed=0).eval()


@pytest.fixture(scope="module")
def server(rm):
    app = create_app(rm, max_batch_size=8, max_items=MAX_ITEMS, max_length=MAX_LENGTH, model_name="tiny-llama")
    port = free_port()
    uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not uv.started:
        if time.monotonic() > deadline or not thread.is_alive():
            uv.should_exit = True
            pytest.fail("the reward server did not start")
        time.sleep(0.02)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
        yield client, app
    uv.should_exit = True
    thread.join(timeout=10)
    assert not thread.is_alive()


def as_json_items(items):
    return [{"prompt": p, "response": r} for p, r in items]


def test_health(server) -> None:
    client, _ = server
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok" and response.json()["max_items"] == MAX_ITEMS


@pytest.mark.parametrize("method", [None, "r3hf", "abc"])
def test_score_matches_score_completions(server, rm, method) -> None:
    client, _ = server
    response = client.post("/score", json={"items": as_json_items(ITEMS), "token_rewards": method})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    expected = score_completions(rm, ITEMS, token_rewards=method, batch_size=2)
    assert len(results) == len(expected)
    for got, want in zip(results, expected, strict=True):
        assert got["reward"] == pytest.approx(want.reward, abs=1e-5)
        assert got["prompt_reward"] == pytest.approx(want.prompt_reward, abs=1e-5)
        assert got["tokens"] == want.tokens
        if method is None:
            assert got["token_rewards"] is None
        else:
            assert got["token_rewards"] == pytest.approx(want.token_rewards, abs=1e-5)


def test_request_items_share_one_forward_pass_and_concurrent_requests_agree(server, rm) -> None:
    client, app = server
    before = app.state.scorer.batches_run
    response = client.post("/score", json={"items": as_json_items(ITEMS), "token_rewards": "r3hf"})
    assert response.status_code == 200
    assert app.state.scorer.batches_run == before + 1  # all 4 items queued before the worker ran: one batch

    expected = score_completions(rm, ITEMS, token_rewards="mix", beta_c=0.5)
    bodies = [
        {"items": as_json_items([ITEMS[i % 4], ITEMS[(i + 1) % 4]]), "token_rewards": "mix", "beta_c": 0.5} for i in range(8)
    ]
    with ThreadPoolExecutor(max_workers=8) as pool:
        replies = list(pool.map(lambda body: client.post("/score", json=body), bodies))
    for i, reply in enumerate(replies):
        assert reply.status_code == 200
        for got, want in zip(reply.json()["results"], [expected[i % 4], expected[(i + 1) % 4]], strict=True):
            assert got["reward"] == pytest.approx(want.reward, abs=1e-5)
            assert got["token_rewards"] == pytest.approx(want.token_rewards, abs=1e-5)


def test_get_reward_openrlhf_protocol(server, rm) -> None:
    client, _ = server
    expected = score_completions(rm, [ITEMS[0], ITEMS[3]])
    # A query is the full text; padding text around it (OpenRLHF decodes padded ids) is ignored, EOS is appended.
    queries = ["What is 2 + 2? It is 4.", "<pad><pad>x y</s><pad>"]
    response = client.post("/get_reward", json={"query": queries, "prompts": ["What is 2 + 2?", "x"], "labels": None})
    assert response.status_code == 200, response.text
    assert response.json()["rewards"] == pytest.approx([r.reward for r in expected], abs=1e-5)


def test_limits_and_bad_requests_give_json_4xx(server) -> None:
    client, _ = server
    too_many = client.post("/score", json={"items": as_json_items([ITEMS[0]] * (MAX_ITEMS + 1))})
    assert too_many.status_code == 413 and "limit is 6" in too_many.json()["error"]
    too_long = client.post("/score", json={"items": [{"prompt": "p" * MAX_LENGTH, "response": " r"}]})
    assert too_long.status_code == 422 and "items.0" in too_long.json()["error"]
    long_query = client.post("/get_reward", json={"query": ["ok", "q" * (MAX_LENGTH + 1)]})
    assert long_query.status_code == 422 and "query.1" in long_query.json()["error"]
    many_queries = client.post("/get_reward", json={"query": ["q"] * (MAX_ITEMS + 1)})
    assert many_queries.status_code == 413
    unknown = client.post("/score", json={"items": as_json_items(ITEMS[:1]), "token_rewards": "nope"})
    assert unknown.status_code == 422 and "nope" in unknown.json()["error"]
    malformed = client.post("/score", json={"items": [{"prompt": 3}]})
    assert malformed.status_code == 422 and "error" in malformed.json()
    empty = client.post("/score", json={"items": []})
    assert empty.status_code == 422
    assert client.get("/health").status_code == 200  # still serving


def test_missing_extra_gives_an_install_hint(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "fastapi", None)  # makes `import fastapi` raise ImportError
    with pytest.raises(ImportError, match=r"rewardlab\[serve\]"):
        require_serve_extra()


def test_serve_command_reports_a_missing_model(tmp_path) -> None:
    import typer
    from typer.testing import CliRunner

    from rewardlab.commands.serve import serve

    app = typer.Typer()
    app.command()(serve)
    app.callback()(lambda: None)
    result = CliRunner().invoke(app, ["serve", "--model", str(tmp_path / "missing-rm"), "--port", "0"])
    assert result.exit_code == 1 and "missing-rm" in result.output and "Traceback" not in result.output
