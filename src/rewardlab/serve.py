"""An HTTP reward server (optional `serve` extra: FastAPI + uvicorn), batching concurrent requests into forward passes.

Endpoints:
- `GET /health` -> 200 `{"status": "ok", ...}` (the model is loaded before the server starts listening; never needs a key).
- `POST /score` `{"items": [{"prompt": ..., "response": ...}], "token_rewards": null | "r3hf" | ...}` ->
  `{"results": [{"reward", "prompt_reward", "tokens", "token_rewards", "truncated"}]}`, the same numbers as
  `rewardlab score`. An item may instead give token ids, `{"prompt_ids": [...], "response_ids": [...]}`, scored as
  they are (no special tokens added): how RL engines that hold the policy's token ids (verl) get token rewards aligned
  with their own tokens. `"token_rewards": "step"` on a process reward model (objective prm) gives id items its step
  rewards, sigmoid(s_k) - 1/2 at each step's last token (`rewardlab.rl.rollout.step_row_scores`, what `rewardlab ppo
  --reward-shaping step` and verl's local scorer compute; `reward` their sum, `prompt_reward` 0); text items are refused
  for it, and so is a method that reads the other kind of model (422).
- `POST /score_steps` `{"items": [{"prompt": ..., "steps": [...]}], "step_rewards": "prm" | "r3hf", "separator": "\n"}`
  -> `{"results": [{"step_view", "step_rewards", ..., "aggregations", "n_steps", "scored_steps", "truncated"}]}`: one
  reward per step, the same numbers as `rewardlab score --step-rewards` (`rewardlab.step_scoring`); an item may give
  `"response"` (a string split on the separator) instead of `steps`.
- `POST /get_reward`: OpenRLHF's remote reward-model protocol, `{"query": [full texts], "prompts": [...], ...}` ->
  `{"rewards": [...], "scores": [...], "extra_logs": {"truncated": [0 | 1, ...]}, "truncated": n}`. Each query is the
  already-rendered prompt + response, tokenised whole (as `rewardlab score` tokenises prompt + response); `prompts[i]`,
  when the query starts with it, marks where the response starts (the prompt reward and token rewards need it; the reward
  does not). Tokenised without adding special tokens; a chat turn
  that stops at EOS is closed as the template closes it; other text gets EOS appended when it lacks one.

Limits never refuse work a trainer sends: a sequence over `max_length` tokens is truncated keeping its end (the reward is
read there; `truncated` says so, and a warning is logged), and a request with many items is split into forward passes of
at most `max_batch_size`. What bounds a request is its body: over `max_body_bytes` -> 413, sent after the rest of the
body has been read and discarded (up to `drain_limit`), so that clients still sending read it.

Scoring is the scoring service's (`rewardlab.modeling.service.ScoringService`): every item of every request goes into
its asynchronous entry, one queue whose worker takes whatever is pending (up to `max_batch_size` sequences), runs one
forward pass in a thread, and resolves each item's future. `step` requests are the exception: a PRM reads them as
`rewardlab ppo` does (EOS replaced by the separator), in their own forward passes of at most `max_batch_size` rows, in
a thread, one step request at a time.

Access: with an API key (`--api-key` or `REWARDLAB_API_KEY`), every path but `/health` needs
`Authorization: Bearer <key>` (or HTTP Basic auth with the key as password, which clients such as aiohttp send for a URL
of the form `http://user:<key>@host:port/...`); anything else gets 401.
"""

# No `from __future__ import annotations` here: FastAPI reads the handlers' annotations at run time, and the request
# models are created inside `create_app` (fastapi is an optional dependency), so annotations must be real objects.

import asyncio
import base64
import binascii
import contextlib
import hmac
import ipaddress
import json
import logging
import sys

from rewardlab.data.templates import EncodedSequence, assistant_turn_text, close_generated_turn, encode_joined
from rewardlab.data.types import DEFAULT_STEP_SEPARATOR
from rewardlab.errors import UserError
from rewardlab.modeling.reward_model import RewardModel
from rewardlab.modeling.service import (
    ScoringService,
    SequenceScore,
    TokenRewardSettings,
    response_token_texts,
    score_row,
)
from rewardlab.redistribution import (
    DEFAULT_ABC_BETA,
    DEFAULT_BETA_C,
    SHAPINGS,
    TokenRewardMethod,
    check_objective,
    token_reward_method,
)
from rewardlab.runtime import API_KEY_ENV
from rewardlab.step_scoring import score_step_request

MISSING_EXTRA = "the reward server needs FastAPI and uvicorn: pip install 'rewardlab[serve]'"
DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
DRAIN_FACTOR, MIN_DRAIN_BYTES = 32, 64 * 1024 * 1024  # a refused body is read and discarded up to this (drain_limit)
OPEN_PATHS = ("/health",)  # reachable without the API key (load balancers, readiness probes)

logger = logging.getLogger("rewardlab.serve")


class RequestError(Exception):
    """A request the server refuses, with its HTTP status."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def require_serve_extra() -> None:
    """Raise ImportError with an install hint when FastAPI or uvicorn is missing."""
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as err:
        raise ImportError(MISSING_EXTRA) from err


def _effective_max_length(rm: RewardModel, max_length: int) -> int:
    """The requested bound, lowered to the tokenizer's own limit when it states a real one."""
    model_limit = getattr(rm.tokenizer, "model_max_length", None)
    if isinstance(model_limit, int) and 0 < model_limit < 10**7:
        return min(max_length, model_limit)
    return max_length


def _prompt_end(query: str, prompt: str | None) -> int:
    """Where the response starts in `query`: after `prompt` when the query starts with it, else 0 (scored unsplit)."""
    if prompt and query.startswith(prompt):
        return len(prompt)
    return 0


def encode_query(tokenizer, query: str, turn: tuple[str, str] | None = None, prompt: str | None = None) -> EncodedSequence:
    """An OpenRLHF query (full rendered text) as one sequence. Padding text is stripped. The query is tokenised whole;
    `prompt`, when the query starts with it, marks where the response starts (by character offsets, as `rewardlab score`
    places it), else the whole query is the response. A chat turn that stops at EOS,
    as a generation does, is closed as the chat template closes it (`turn` = `assistant_turn_text(tokenizer)`), so the
    reward is read where rewardlab reads it in training; other text gets EOS appended when it lacks one."""
    pad, eos = tokenizer.pad_token, tokenizer.eos_token
    if pad and pad != eos:
        while query.startswith(pad):
            query = query[len(pad) :]
        while query.endswith(pad):
            query = query[: -len(pad)]
    query = close_generated_turn(query, eos, turn)
    split = _prompt_end(query, prompt)
    encoded = encode_joined(tokenizer, query[:split], query[split:], add_special_tokens=False)
    ids = encoded.input_ids
    closed_turn = turn is not None and bool(turn[1]) and query.endswith(turn[1])
    if not closed_turn and tokenizer.eos_token_id is not None and (not ids or ids[-1] != tokenizer.eos_token_id):
        ids = ids + [tokenizer.eos_token_id]
    return EncodedSequence(ids, response_start=encoded.response_start if split else 0)


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface


def exposure_warning(host: str, api_key: str | None) -> str | None:
    """The warning to print when the server would listen beyond this machine without a key, else None."""
    if api_key or is_loopback(host):
        return None
    return (
        f"warning: serving on {host} without an API key: anyone who can reach this port can use the reward model. "
        f"Set --api-key (or {API_KEY_ENV}) to require 'Authorization: Bearer <key>', or bind 127.0.0.1."
    )


def authorized(header: str | None, api_key: str) -> bool:
    """`Authorization: Bearer <key>`, or Basic credentials whose password is the key (user name ignored)."""
    if not header:
        return False
    scheme, _, value = header.partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer":
        return hmac.compare_digest(value.encode(), api_key.encode())
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return False
        return hmac.compare_digest(decoded.partition(":")[2].encode(), api_key.encode())
    return False


def drain_limit(max_body_bytes: int) -> int:
    """How much of a refused request body the server reads and discards before answering: 32x `max_body_bytes`, at
    least 64 MiB. Clients such as urllib and python-requests send the whole body before they read the response; a server
    that answers and closes while bytes are still arriving makes the kernel reset the connection, and the client sees
    `Connection reset by peer` or `Broken pipe` instead of the answer."""
    return max(DRAIN_FACTOR * max_body_bytes, MIN_DRAIN_BYTES)


class RequestGuard:
    """ASGI middleware run before any parsing: the API key (401) and the body's size (413), as JSON `{"error": ...}`.

    The body is read here, up to the limit, and handed on; a body without Content-Length is counted as it streams.
    Before refusing, the rest of the body is read and discarded, chunk by chunk (memory stays at one chunk), up to
    `drain_limit(max_body_bytes)`, so that a client that is still sending reads the refusal. A body declared longer than
    that, or one whose client waits for `100 Continue`, is answered at once with `Connection: close`."""

    def __init__(self, app, api_key: str | None, max_body_bytes: int):
        self.app = app
        self.api_key = api_key
        self.max_body_bytes = max_body_bytes
        self.drain_bytes = drain_limit(max_body_bytes)

    @property
    def state(self):
        """The wrapped application's state (the scorer, counters)."""
        return self.app.state

    async def _refuse(
        self, receive, send, headers: dict, status: int, message: str, extra_headers: list | None = None, received: int = 0
    ) -> None:
        """Answer `status` with `{"error": message}`, after reading and discarding what is left of the request body
        (`received` bytes of it already read). Nothing is sent when the client goes away while its body is drained."""
        close = _body_left(headers) and (_expects_continue(headers) or _declared(headers, self.drain_bytes + 1))
        if not close:
            drained = await _discard_body(receive, self.drain_bytes - received)
            if drained is None:
                return  # the client disconnected
            close = not drained
        body = json.dumps({"error": message}).encode()
        headers_out = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if close:
            headers_out.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": status, "headers": headers_out + (extra_headers or [])})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope.get("headers", [])}
        if self.api_key and scope.get("path") not in OPEN_PATHS and not authorized(headers.get("authorization"), self.api_key):
            await self._refuse(receive, send, headers, 401, "missing or wrong API key", [(b"www-authenticate", b"Bearer")])
            return
        too_big = f"request body over {self.max_body_bytes} bytes (--max-body-bytes)"
        if _declared(headers, self.max_body_bytes + 1):
            await self._refuse(receive, send, headers, 413, too_big)
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                chunks.clear()
                more = message.get("more_body", False)
                await self._refuse(receive if more else _no_more_body, send, headers, 413, too_big, received=size)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body, delivered = b"".join(chunks), False

        async def replay():
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for the disconnect, as the server would

        await self.app(scope, replay, send)


def _declared(headers: dict, at_least: int) -> bool:
    """Whether the request declares a Content-Length of at least `at_least` bytes."""
    declared = headers.get("content-length")
    return declared is not None and declared.isdigit() and int(declared) >= at_least


def _body_left(headers: dict) -> bool:
    """Whether the request may carry a body (a Content-Length above 0, or a chunked one)."""
    return _declared(headers, 1) or "chunked" in headers.get("transfer-encoding", "").lower()


def _expects_continue(headers: dict) -> bool:
    """A client that sent `Expect: 100-continue` sends its body only when told to: refusing at once saves the upload."""
    return headers.get("expect", "").lower() == "100-continue"


async def _no_more_body():
    return {"type": "http.request", "body": b"", "more_body": False}


async def _discard_body(receive, budget: int) -> bool | None:
    """Read the request body to its end, keeping none of it. True when it ended within `budget` bytes, False when it
    ran past them (the caller then closes the connection), None when the client disconnected."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        budget -= len(message.get("body", b""))
        if not message.get("more_body", False):
            return True
        if budget < 0:
            return False


def request_models():
    """The pydantic request bodies (built on demand: fastapi, and with it pydantic, is the optional `serve` extra)."""
    from pydantic import BaseModel, ConfigDict, model_validator

    Message = dict[str, str]
    Text = str | list[Message]

    class ScoreItem(BaseModel):
        prompt: Text | None = None
        response: Text | None = None
        prompt_ids: list[int] | None = None
        response_ids: list[int] | None = None

        @model_validator(mode="after")
        def one_form(self):
            texts, ids = self.prompt is not None and self.response is not None, self.response_ids is not None
            if texts == ids:
                raise ValueError("give prompt and response (text or messages), or prompt_ids and response_ids (token ids)")
            return self

    class ScoreRequest(BaseModel):
        items: list[ScoreItem]
        token_rewards: str | None = None
        beta_c: float | None = None
        abc_beta: float | None = None

    class StepItem(BaseModel):
        prompt: Text
        steps: list[str] | None = None
        response: str | None = None

        @model_validator(mode="after")
        def one_form(self):
            if (self.steps is None) == (self.response is None):
                raise ValueError("give steps (a list of strings) or response (a string split on the separator)")
            return self

    class StepRequest(BaseModel):
        items: list[StepItem]
        step_rewards: str = "prm"
        separator: str = DEFAULT_STEP_SEPARATOR

    class GetRewardRequest(BaseModel):
        model_config = ConfigDict(extra="allow")  # OpenRLHF also sends labels...
        query: list[str]
        prompts: list | None = None  # strings mark where each response starts; anything else is ignored

    return ScoreRequest, StepRequest, GetRewardRequest


class RequestEncoder:
    """Request items and queries -> token sequences, encoded by the scoring service (as training encodes them) and cut
    to its `max_length` keeping their end; what cannot be encoded is refused as RequestError(422)."""

    def __init__(self, service: ScoringService):
        self.service = service
        self.vocab_size = len(service.tokenizer)
        self.turn = assistant_turn_text(service.tokenizer)
        self.truncated = 0  # sequences truncated since start, for logs and /health

    def items(self, items) -> list[EncodedSequence]:
        """/score items: prompt and response (text or messages), or token ids scored as they are."""
        sequences = []
        for i, item in enumerate(items):
            if item.response_ids is not None:
                bad = next((t for t in (item.prompt_ids or []) + item.response_ids if not 0 <= t < self.vocab_size), None)
                if bad is not None:
                    raise RequestError(422, f"items.{i}: token id {bad} outside the vocabulary (0..{self.vocab_size - 1})")
                sequences.append(self.service.encode_ids(item.prompt_ids or [], item.response_ids))
                continue
            try:
                sequences.append(self.service.encode(item.prompt, item.response))
            except (ValueError, KeyError, TypeError) as err:
                raise RequestError(422, f"items.{i}: cannot render: {err}") from None
        return sequences

    def id_items(self, items, method: str) -> list[EncodedSequence]:
        """/score items for a method that reads token ids only (`step`: the steps are read off the policy's own
        tokens, and a finished response's last token is its EOS, which /score's text encoding may follow with the
        template's closing)."""
        text = next((i for i, item in enumerate(items) if item.response_ids is None), None)
        if text is not None:
            message = f"items.{text}: token_rewards {method!r} scores token ids (prompt_ids and response_ids), not text"
            raise RequestError(422, message)
        return self.items(items)

    def queries(self, queries: list[str], prompts: list | None) -> list[EncodedSequence]:
        """/get_reward queries; `prompts[i]`, a string, marks where query i's response starts."""
        prompts = prompts if prompts is not None and len(prompts) == len(queries) else None
        marks = [p if isinstance(p, str) else None for p in prompts] if prompts else [None] * len(queries)
        tokenizer, fit = self.service.tokenizer, self.service.fit
        return [fit(encode_query(tokenizer, q, self.turn, mark)) for q, mark in zip(queries, marks, strict=True)]

    def count_truncated(self, sequences: list[EncodedSequence], what: str) -> list[EncodedSequence]:
        """`sequences`, after logging how many were cut (and counting them for /health)."""
        count = sum(seq.truncated for seq in sequences)
        if count:
            self.truncated += count
            logger.warning(
                "%s: %d of %d sequences over %d tokens (--max-length), truncated keeping their end (%d since start)",
                what, count, len(sequences), self.service.max_length, self.truncated,
            )  # fmt: skip
        return sequences


def install_error_handlers(app) -> None:
    """Refusals as JSON `{"error": ...}`: a RequestError with its status, a body that fails validation with 422 and
    the first error's location (`items.0.prompt: ...`)."""
    from fastapi import Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse

    @app.exception_handler(RequestError)
    async def refuse(request: Request, err: RequestError) -> JSONResponse:
        return JSONResponse(status_code=err.status, content={"error": err.message})

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0] if err.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
        detail = json.loads(json.dumps(err.errors(), default=str))  # pydantic may put exceptions in `ctx`
        return JSONResponse(status_code=422, content={"error": f"{where}: {first.get('msg')}", "detail": detail})


def score_settings(body, beta_c: float, abc_beta: float) -> TokenRewardSettings:
    """A /score request's token-reward settings, the server's coefficients where the request gives none."""
    try:  # the method is checked where every caller's is: an unknown one is a 422, its message naming token_rewards
        return TokenRewardSettings(
            body.token_rewards,
            beta_c if body.beta_c is None else body.beta_c,
            abc_beta if body.abc_beta is None else body.abc_beta,
        )
    except UserError as err:
        raise RequestError(422, str(err)) from None


def score_method(body, objective: str) -> TokenRewardMethod | None:
    """A /score request's token-reward method (None: sequence and prompt reward only), checked against the served
    model's objective ("preference" or "prm": `step` reads a process reward model, every other method a sequence one);
    a one-line 422 otherwise."""
    if body.token_rewards is None:
        return None
    try:
        method = token_reward_method(body.token_rewards, "token_rewards", choices=SHAPINGS)
        check_objective(method, objective, "token_rewards")
    except UserError as err:
        raise RequestError(422, str(err)) from None
    return method


def step_result_row(tokenizer, score: SequenceScore, truncated: bool) -> dict:
    """A /score result row for `step`: `score_row`'s keys, with the response tokens' text beside the token rewards."""
    return score_row(tokenizer, score, truncated, TokenRewardSettings()) | {
        "tokens": response_token_texts(tokenizer, score.response_ids)
    }


def create_app(
    rm: RewardModel,
    *,
    max_batch_size: int = 16,
    max_length: int = 4096,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    api_key: str | None = None,
    beta_c: float = DEFAULT_BETA_C,
    abc_beta: float = DEFAULT_ABC_BETA,
    model_name: str | None = None,
):
    """The FastAPI app serving `rm` (already loaded, in eval mode), wrapped in the API-key and body-size guard."""
    require_serve_extra()
    from fastapi import FastAPI

    ScoreRequest, StepRequest, GetRewardRequest = request_models()
    service = ScoringService(rm.eval(), batch_size=max_batch_size, max_length=_effective_max_length(rm, max_length))
    encoder = RequestEncoder(service)
    objective = getattr(getattr(rm, "config", None), "objective", "preference")
    step_pass = asyncio.Lock()  # one step request's forward passes at a time: GPU memory stays bounded by max_batch_size

    async def score_steps_by_ids(items) -> list[dict]:
        """`step` on id items: the PRM's forward passes (`step_row_scores`, max_batch_size rows each) in a thread."""
        from rewardlab.rl.rollout import step_row_scores

        sequences = encoder.count_truncated(await asyncio.to_thread(encoder.id_items, items, "step"), "/score")
        rows = [(seq.input_ids[: seq.response_start], seq.input_ids[seq.response_start :]) for seq in sequences]
        async with step_pass:
            scores = await asyncio.to_thread(step_row_scores, rm, rows, service.tokenizer, max_batch_size)
        return [step_result_row(service.tokenizer, s, seq.truncated) for s, seq in zip(scores, sequences, strict=True)]

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.scorer = service.batcher()  # the service's queue on the server's event loop
        app.state.scorer.start()
        try:
            yield
        finally:
            await app.state.scorer.stop()

    app = FastAPI(title="rewardlab reward server", lifespan=lifespan)

    install_error_handlers(app)

    @app.get("/health")
    async def health() -> dict:
        return {
            "status": "ok",
            "model": model_name,
            "max_length": service.max_length,
            "max_batch_size": max_batch_size,
            "max_body_bytes": max_body_bytes,
            "truncated": encoder.truncated,
            "normalize": rm.normalization is not None,
            "reward_statistics": None if rm.normalization is None else rm.normalization.to_dict(),
        }

    @app.post("/score")
    async def score(body: ScoreRequest) -> dict:
        if not body.items:
            raise RequestError(422, "no items to score")
        method = score_method(body, objective)
        if method is not None and method.needs_step_ends:
            return {"results": await score_steps_by_ids(body.items), "normalize": rm.normalization is not None}
        settings = score_settings(body, beta_c, abc_beta)
        sequences = encoder.count_truncated(await asyncio.to_thread(encoder.items, body.items), "/score")
        scores = await service.score_async(sequences, settings)
        rows = [service.row(s, seq.truncated, settings) for s, seq in zip(scores, sequences, strict=True)]
        return {"results": rows, "normalize": rm.normalization is not None}

    @app.post("/score_steps")
    async def score_steps(body: StepRequest) -> dict:
        if not body.items:
            raise RequestError(422, "no items to score")
        items = [item.model_dump(exclude_none=True) for item in body.items]
        try:
            rows = await score_step_request(service, items, body.step_rewards, body.separator)
        except UserError as err:  # an unknown view, an empty separator, steps that cannot be located
            raise RequestError(422, str(err)) from None
        return {"results": rows, "normalize": rm.normalization is not None}

    @app.post("/get_reward")
    async def get_reward(body: GetRewardRequest) -> dict:
        if not body.query:
            raise RequestError(422, "no items to score")
        encoded = await asyncio.to_thread(encoder.queries, body.query, body.prompts)
        sequences = encoder.count_truncated(encoded, "/get_reward")
        scores = await service.score_async(sequences, TokenRewardSettings())
        rewards = [s.reward for s in scores]
        flags = [int(seq.truncated) for seq in sequences]
        # OpenRLHF reads `rewards` (and `scores`, `extra_logs`, which it logs as metrics): one reward per sequence.
        return {
            "rewards": rewards,
            "scores": rewards,
            "extra_logs": {"truncated": flags},
            "truncated": sum(flags),
            "normalize": rm.normalization is not None,
        }

    return RequestGuard(app, api_key or None, max_body_bytes)


def run_server(rm: RewardModel, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info", **options) -> None:
    """Serve until interrupted (options: max_batch_size, max_length, max_body_bytes, api_key, beta_c, abc_beta,
    model_name). Warns on stderr when listening beyond this machine without an API key."""
    require_serve_extra()
    import uvicorn

    warning = exposure_warning(host, options.get("api_key"))
    if warning:
        print(warning, file=sys.stderr, flush=True)
    uvicorn.run(create_app(rm, **options), host=host, port=port, log_level=log_level)


__all__ = [
    "RequestGuard",
    "authorized",
    "create_app",
    "drain_limit",
    "encode_query",
    "exposure_warning",
    "is_loopback",
    "run_server",
]
