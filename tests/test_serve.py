"""The reward server over real HTTP: a uvicorn server on a free 127.0.0.1 port, in a background thread."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from live_server import live_server  # noqa: E402
from rewardlab.data.templates import assistant_turn_text, encode_prompt_response, keep_end  # noqa: E402
from rewardlab.modeling.reward_model import build_reward_model  # noqa: E402
from rewardlab.scoring import score_completions  # noqa: E402
from rewardlab.serve import (  # noqa: E402
    RequestGuard,
    authorized,
    create_app,
    drain_limit,
    encode_query,
    exposure_warning,
    is_loopback,
    require_serve_extra,
)

MAX_LENGTH, MAX_BATCH, MAX_BODY = 120, 8, 64 * 1024
ITEMS = [
    ("What is 2 + 2?", " It is 4."),
    ([{"role": "user", "content": "Say hi in French."}], [{"role": "assistant", "content": "Salut !"}]),
    ("Write a long answer.", " " + "words and more words " * 3),
    ("x", " y"),
]


@pytest.fixture(scope="module")
def rm():
    return build_reward_model("tiny-llama", seed=0).eval()


@pytest.fixture(scope="module")
def server(rm):
    app = create_app(rm, max_batch_size=MAX_BATCH, max_length=MAX_LENGTH, max_body_bytes=MAX_BODY, model_name="tiny-llama")
    with live_server(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        yield client, app


def as_json_items(items):
    return [{"prompt": p, "response": r} for p, r in items]


def test_health(server) -> None:
    client, _ = server
    response = client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["max_length"] == MAX_LENGTH and body["max_body_bytes"] == MAX_BODY


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
        assert got["tokens"] == want.tokens and got["truncated"] is False
        if method is None:
            assert got["token_rewards"] is None
        else:
            assert got["token_rewards"] == pytest.approx(want.token_rewards, abs=1e-5)


def test_score_takes_token_ids_as_rl_engines_hold_them(server, rm) -> None:
    client, _ = server
    encoded = [encode_prompt_response(rm.tokenizer, p, r) for p, r in ITEMS]
    items = [{"prompt_ids": e.input_ids[: e.response_start], "response_ids": e.input_ids[e.response_start :]} for e in encoded]
    response = client.post("/score", json={"items": items, "token_rewards": "r3hf"})
    assert response.status_code == 200, response.text
    for got, want in zip(response.json()["results"], score_completions(rm, ITEMS, token_rewards="r3hf"), strict=True):
        assert got["reward"] == pytest.approx(want.reward, abs=1e-5)
        assert got["token_rewards"] == pytest.approx(want.token_rewards, abs=1e-5)
    bad_id = client.post("/score", json={"items": [{"prompt_ids": [5], "response_ids": [len(rm.tokenizer)]}]})
    assert bad_id.status_code == 422 and "outside the vocabulary" in bad_id.json()["error"]
    neither = client.post("/score", json={"items": [{"prompt": "p"}]})
    assert neither.status_code == 422 and "prompt_ids" in neither.json()["error"]


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
    # A query is the full text; padding text around it (older OpenRLHF decoded padded ids) is ignored, EOS is appended.
    queries = ["What is 2 + 2? It is 4.", "<pad><pad>x y</s><pad>"]
    response = client.post("/get_reward", json={"query": queries, "prompts": ["What is 2 + 2?", "x"], "labels": [None, None]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["rewards"] == pytest.approx([r.reward for r in expected], abs=1e-5)
    assert body["scores"] == body["rewards"]  # OpenRLHF reads `scores` for filtering and logs when present
    assert body["extra_logs"] == {"truncated": [0, 0]} and body["truncated"] == 0
    odd = client.post("/get_reward", json={"query": queries, "prompts": [["not", "text"], None]})  # ignored, not refused
    assert odd.status_code == 200 and odd.json()["rewards"] == pytest.approx(body["rewards"], abs=1e-5)


def test_get_reward_splits_prompt_and_response_where_prompts_say(rm) -> None:
    tokenizer, turn = rm.tokenizer, assistant_turn_text(rm.tokenizer)
    split = encode_query(tokenizer, "What is 2 + 2? It is 4.", turn, prompt="What is 2 + 2?")
    assert split.response_start == len(tokenizer("What is 2 + 2?", add_special_tokens=False)["input_ids"])
    assert split.input_ids[-1] == tokenizer.eos_token_id
    unsplit = encode_query(tokenizer, "What is 2 + 2? It is 4.", turn, prompt="another prompt")  # not a prefix
    assert unsplit.response_start == 0 and unsplit.input_ids == split.input_ids
    # A chat query that stops at EOS is closed as the template closes it (here the closing is EOS itself).
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False)
    prompt = tokenizer.apply_chat_template(messages[:1], add_generation_prompt=True, tokenize=False)
    chat = encode_query(tokenizer, rendered, turn, prompt=prompt)
    want = encode_prompt_response(tokenizer, messages[:1], messages[1:])
    assert chat.input_ids == want.input_ids and chat.response_start == want.response_start


def test_over_long_sequences_are_truncated_keeping_their_end_never_refused(server, rm, caplog) -> None:
    client, _ = server
    long_pair = ("Once upon a time " * 8, " and then the end of a long story.")
    want = score_completions(rm, [long_pair], max_length=MAX_LENGTH)[0]
    assert want.truncated
    with caplog.at_level(logging.WARNING, logger="rewardlab.serve"):
        reply = client.post("/get_reward", json={"query": ["ok", long_pair[0] + long_pair[1]], "prompts": ["o", long_pair[0]]})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["truncated"] == 1 and body["extra_logs"]["truncated"] == [0, 1]
    assert body["rewards"][1] == pytest.approx(want.reward, abs=1e-5)
    assert any("truncated keeping their end" in r.getMessage() and "1 of 2" in r.getMessage() for r in caplog.records)

    scored = client.post("/score", json={"items": as_json_items([long_pair]), "token_rewards": "r3hf"}).json()["results"][0]
    want = score_completions(rm, [long_pair], token_rewards="r3hf", max_length=MAX_LENGTH)[0]
    assert scored["truncated"] is True and scored["reward"] == pytest.approx(want.reward, abs=1e-5)
    assert scored["token_rewards"] == pytest.approx(want.token_rewards, abs=1e-5)
    assert client.get("/health").json()["truncated"] >= 2


def test_keep_end_keeps_at_least_the_tail_and_moves_the_response_start() -> None:
    from rewardlab.data.templates import EncodedSequence

    assert keep_end(EncodedSequence([1, 2, 3, 4, 5], 2), 3) == EncodedSequence([3, 4, 5], 0, truncated=True)
    assert keep_end(EncodedSequence([1, 2, 3, 4, 5], 4), 3) == EncodedSequence([3, 4, 5], 2, truncated=True)
    assert keep_end(EncodedSequence([1, 2], 1), 5) == EncodedSequence([1, 2], 1)


def test_many_queries_are_batched_internally_never_refused(server, rm) -> None:
    client, app = server
    n = 3 * MAX_BATCH + 1
    queries = [f"question {i}? answer {i}." for i in range(n)]
    before = app.state.scorer.batches_run
    reply = client.post("/get_reward", json={"query": queries})
    assert reply.status_code == 200, reply.text
    rewards = reply.json()["rewards"]
    assert len(rewards) == n and app.state.scorer.batches_run - before >= 4  # at most MAX_BATCH per forward pass
    single = client.post("/get_reward", json={"query": [queries[-1]]}).json()["rewards"][0]
    assert rewards[-1] == pytest.approx(single, abs=1e-5)


def test_a_body_over_the_byte_limit_gets_413(server) -> None:
    client, _ = server
    big = {"query": ["q" * 1000] * (MAX_BODY // 1000 + 1)}
    declared = client.post("/get_reward", json=big)  # with Content-Length
    assert declared.status_code == 413 and "--max-body-bytes" in declared.json()["error"]

    def chunks():  # no Content-Length: chunked transfer, counted as it arrives
        yield b'{"query": ["'
        for _ in range(MAX_BODY // 1024 + 1):
            yield b"q" * 1024
        yield b'"]}'

    streamed = client.post("/get_reward", content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413
    assert client.post("/get_reward", json={"query": ["q" * 1000] * 8}).status_code == 200  # under the limit


# Over a real network a client that sends a large body blocks until the server reads it; on loopback the kernel's buffers
# (megabytes) hide that. Small buffers on both ends (16 KiB) make a body of a few hundred KiB behave as over a network.
SMALL_BUFFER = 16 * 1024
KEY = "guard-key"


def small_buffer_clients():
    """A urllib opener and a requests session whose connections have a 16 KiB send buffer."""
    import http.client
    import socket
    import urllib.request

    requests = pytest.importorskip("requests")
    from requests.adapters import HTTPAdapter
    from urllib3.connection import HTTPConnection

    class SmallBufferConnection(http.client.HTTPConnection):
        def connect(self):
            super().connect()
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL_BUFFER)

    class SmallBufferHandler(urllib.request.HTTPHandler):
        def http_open(self, req):
            return self.do_open(SmallBufferConnection, req)

    class SmallBufferAdapter(HTTPAdapter):
        def init_poolmanager(self, *args, **kwargs):
            options = [*HTTPConnection.default_socket_options, (socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL_BUFFER)]
            super().init_poolmanager(*args, socket_options=options, **kwargs)

    session = requests.Session()
    session.mount("http://", SmallBufferAdapter())
    return urllib.request.build_opener(SmallBufferHandler), session


def urllib_post(opener, url: str, body: bytes, headers: dict) -> tuple[int, dict]:
    """(status, JSON body) of a POST through urllib, which sends `Connection: close` and the whole body before reading."""
    import urllib.error
    import urllib.request

    try:
        with opener.open(urllib.request.Request(url, data=body, headers=headers), timeout=60) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read())


@pytest.fixture(scope="module", params=["h11", "httptools"])
def guarded_url(rm, request):
    """A keyed server with the small body limit, on each of uvicorn's HTTP implementations, with 16 KiB receive buffers."""
    if request.param == "httptools":
        pytest.importorskip("httptools")
    app = create_app(rm, max_length=MAX_LENGTH, max_body_bytes=MAX_BODY, api_key=KEY, model_name="tiny-llama")
    with live_server(app, http=request.param, receive_buffer=SMALL_BUFFER) as url:
        yield url


@pytest.mark.parametrize("times", [2, 20])
def test_an_over_size_body_gets_a_413_that_urllib_and_requests_read(guarded_url, times) -> None:
    opener, session = small_buffer_clients()
    url, auth = f"{guarded_url}/get_reward", {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    body = json.dumps({"query": ["q" * (times * MAX_BODY)]}).encode()  # `times` x the limit
    status, reply = urllib_post(opener, url, body, auth)
    assert status == 413 and "--max-body-bytes" in reply["error"]
    declared = session.post(url, data=body, headers=auth, timeout=60)
    assert declared.status_code == 413 and "--max-body-bytes" in declared.json()["error"]
    closing = session.post(url, data=body, headers={**auth, "Connection": "close"}, timeout=60)
    assert closing.status_code == 413 and "--max-body-bytes" in closing.json()["error"]
    pieces = (body[i : i + 8192] for i in range(0, len(body), 8192))  # chunked: no Content-Length, counted as it streams
    streamed = session.post(url, data=pieces, headers=auth, timeout=60)
    assert streamed.status_code == 413 and "--max-body-bytes" in streamed.json()["error"]
    keyless = {"Content-Type": "application/json"}  # a refusal for the key is readable too
    status, reply = urllib_post(opener, url, body, keyless)
    assert status == 401 and "API key" in reply["error"]

    small = json.dumps({"query": ["x y"]}).encode()  # the server still serves, on fresh and reused connections
    status, reply = urllib_post(opener, url, small, auth)
    assert status == 200 and len(reply["rewards"]) == 1
    again = session.post(url, data=small, headers=auth, timeout=60)
    assert again.status_code == 200 and again.json()["rewards"] == pytest.approx(reply["rewards"], abs=1e-6)


def run_guard(guard: RequestGuard, headers: dict, chunk_bytes: int, chunks: int, complete: bool = True) -> tuple[list, int]:
    """Drive the guard as a server would: a request whose body arrives as `chunks` fresh chunks of `chunk_bytes`
    (`complete=False`: the client disconnects after them, mid-body). Returns (what the guard sent, chunks it read)."""
    read = 0

    async def receive():
        nonlocal read
        if read == chunks:
            return {"type": "http.disconnect"}
        read += 1
        return {"type": "http.request", "body": b"q" * chunk_bytes, "more_body": read < chunks or not complete}

    sent = []

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "path": "/get_reward", "headers": [(k.encode(), v.encode()) for k, v in headers.items()]}
    asyncio.run(guard(scope, receive, send))
    return sent, read


class NeverCalled:
    state = None

    async def __call__(self, scope, receive, send):
        raise AssertionError("a refused request reached the application")


def test_a_refused_body_is_read_to_its_end_in_bounded_memory() -> None:
    import tracemalloc

    limit, chunk, chunks = 1 << 20, 64 << 10, 512  # a 32 MiB body, 32x the limit, within the drain bound (64 MiB)
    guard = RequestGuard(NeverCalled(), None, limit)
    assert guard.drain_bytes == drain_limit(limit) == 64 << 20
    for headers in ({"content-length": str(chunk * chunks)}, {"transfer-encoding": "chunked"}):
        tracemalloc.start()
        try:
            sent, read = run_guard(guard, headers, chunk, chunks)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert read == chunks  # drained to the end: the client is not cut off mid-send
        assert sent[0]["status"] == 413 and (b"connection", b"close") not in sent[0]["headers"]
        assert "--max-body-bytes" in json.loads(sent[1]["body"])["error"]
        assert peak < 4 * limit  # never the whole 32 MiB: the limit's worth of chunks at most, then one chunk at a time


def test_a_body_past_the_drain_bound_or_awaiting_100_continue_is_refused_at_once_with_connection_close() -> None:
    limit, chunk = 1024, 64 << 10
    guard = RequestGuard(NeverCalled(), None, limit)
    bound = drain_limit(limit)
    assert bound == 64 << 20 and drain_limit(8 << 20) == 256 << 20  # 32x the limit, at least 64 MiB

    declared_past, read = run_guard(guard, {"content-length": str(bound + 1)}, chunk, 2 * bound // chunk)
    assert read == 0 and declared_past[0]["status"] == 413 and (b"connection", b"close") in declared_past[0]["headers"]
    streamed_past, read = run_guard(guard, {"transfer-encoding": "chunked"}, chunk, 2 * bound // chunk)
    assert read == bound // chunk + 1  # read until past the bound, then given up
    assert streamed_past[0]["status"] == 413 and (b"connection", b"close") in streamed_past[0]["headers"]
    expecting, read = run_guard(guard, {"content-length": str(10 * limit), "expect": "100-continue"}, chunk, 1)
    assert read == 0 and expecting[0]["status"] == 413 and (b"connection", b"close") in expecting[0]["headers"]

    keyed = RequestGuard(NeverCalled(), "k", limit)
    unauthorised, read = run_guard(keyed, {"content-length": str(limit // 2)}, limit // 4, 2)
    assert read == 2 and unauthorised[0]["status"] == 401 and (b"www-authenticate", b"Bearer") in unauthorised[0]["headers"]
    # The client left while its body was drained: no answer.
    gone, _ = run_guard(keyed, {"content-length": str(10 * chunk)}, chunk, 3, complete=False)
    assert gone == []


def test_bad_requests_give_json_4xx(server) -> None:
    client, _ = server
    unknown = client.post("/score", json={"items": as_json_items(ITEMS[:1]), "token_rewards": "nope"})
    assert unknown.status_code == 422 and "nope" in unknown.json()["error"]
    malformed = client.post("/score", json={"items": [{"prompt": 3}]})
    assert malformed.status_code == 422 and "error" in malformed.json()
    assert client.post("/score", json={"items": []}).status_code == 422
    assert client.post("/get_reward", json={"query": []}).status_code == 422
    assert client.get("/health").status_code == 200  # still serving


def test_an_api_key_is_required_everywhere_but_health(rm) -> None:
    from fastapi.testclient import TestClient

    key = "s3cret-key"
    with TestClient(create_app(rm, api_key=key)) as client:
        body = {"query": ["x y"]}
        assert client.get("/health").status_code == 200
        missing = client.post("/get_reward", json=body)
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
        assert client.post("/get_reward", json=body, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get("/docs").status_code == 401
        assert client.post("/get_reward", json=body, headers={"Authorization": f"Bearer {key}"}).status_code == 200
        basic = base64.b64encode(f"rewardlab:{key}".encode()).decode()  # what aiohttp sends for http://user:key@host
        assert client.post("/get_reward", json=body, headers={"Authorization": f"Basic {basic}"}).status_code == 200
        assert client.post("/score", json={"items": as_json_items(ITEMS[:1])}).status_code == 401
    assert not authorized("Basic not-base64!", key) and not authorized("Token s3cret-key", key)


def test_listening_beyond_loopback_without_a_key_warns(monkeypatch, tmp_path) -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and is_loopback("127.0.0.2")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3") and not is_loopback("myhost")
    assert exposure_warning("127.0.0.1", None) is None and exposure_warning("0.0.0.0", "k") is None
    assert "without an API key" in exposure_warning("0.0.0.0", None)

    import typer
    import uvicorn
    from typer.testing import CliRunner

    from rewardlab.commands.serve import serve

    started = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: started.append(kwargs))
    monkeypatch.delenv("REWARDLAB_API_KEY", raising=False)
    app = typer.Typer()
    app.command()(serve)
    app.callback()(lambda: None)
    runner = CliRunner()
    exposed = runner.invoke(app, ["serve", "--model", "tiny-llama", "--host", "0.0.0.0", "--port", "0"])
    assert exposed.exit_code == 0, exposed.output
    assert "without an API key" in exposed.output and started[-1]["host"] == "0.0.0.0"
    keyed = runner.invoke(
        app, ["serve", "--model", "tiny-llama", "--host", "0.0.0.0", "--port", "0"], env={"REWARDLAB_API_KEY": "k"}
    )
    assert keyed.exit_code == 0 and "without an API key" not in keyed.output
    local = runner.invoke(app, ["serve", "--model", "tiny-llama", "--port", "0"])
    assert local.exit_code == 0 and "without an API key" not in local.output and len(started) == 3


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


def test_score_steps_gives_the_step_views_numbers(server, rm) -> None:
    from rewardlab.modeling.service import ScoringService
    from rewardlab.step_scoring import score_steps

    client, _ = server
    steps = [("Q: 3 + 5?\n", ["3 + 5 = 8.", "The answer is 8."]), ([{"role": "user", "content": "Hi"}], ["a", "b"])]
    service = ScoringService(rm, max_length=MAX_LENGTH)
    for view in ("prm", "r3hf"):
        items = [{"prompt": p, "steps": s} for p, s in steps[:1]] + [{"prompt": steps[1][0], "response": "a\nb"}]
        response = client.post("/score_steps", json={"items": items, "step_rewards": view})
        assert response.status_code == 200, response.text
        for got, want in zip(response.json()["results"], score_steps(service, steps, view), strict=True):
            assert got["step_view"] == view and got["step_rewards"] == pytest.approx(want.step_rewards, abs=1e-5)
            got_aggregations, want_aggregations = got["aggregations"], want.aggregations()
            if view == "r3hf":  # no product of r3hf rewards
                assert got_aggregations.pop("product") is None and want_aggregations.pop("product") is None
            assert got_aggregations == pytest.approx(want_aggregations, abs=1e-5)
    for body, message in [
        ({"items": [{"prompt": "Q", "steps": ["a"]}], "step_rewards": "orm"}, "expected one of prm, r3hf"),
        ({"items": [{"prompt": "Q"}]}, "give steps"),
        ({"items": []}, "no items"),
        ({"items": [{"prompt": "Q", "response": "a"}], "separator": ""}, "separator must not be empty"),
    ]:
        refused = client.post("/score_steps", json=body)
        assert refused.status_code == 422 and message in refused.json()["error"], refused.text
