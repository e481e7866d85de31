"""An HTTP reward server (optional `serve` extra: FastAPI + uvicorn), batching concurrent requests into forward passes.

Endpoints:
- `GET /health` -> 200 `{"status": "ok", ...}` (the model is loaded before the server starts listening).
- `POST /score` `{"items": [{"prompt": ..., "response": ...}], "token_rewards": null | "r3hf" | ...}` ->
  `{"results": [{"reward", "prompt_reward", "tokens", "token_rewards"}]}`, the same numbers as `rewardlab score`.
- `POST /get_reward`: OpenRLHF's remote reward-model protocol, `{"query": [full texts], ...}` -> `{"rewards": [...]}`.
  Each query is the already-rendered prompt + response, scored as one sequence (reward at its last token, EOS appended
  when missing, tokenised without adding special tokens, as OpenRLHF's own reward server does).

Every item of every request goes into one asyncio queue; a single worker takes whatever is pending (up to
`max_batch_size` sequences), runs one forward pass in a thread, and resolves each item's future. Requests with more than
`max_items` items get 413; sequences longer than `max_length` tokens get 422; both as `{"error": "..."}`.
"""

# No `from __future__ import annotations` here: FastAPI reads the handlers' annotations at run time, and the request
# models are created inside `create_app` (fastapi is an optional dependency), so annotations must be real objects.

import asyncio
import contextlib
from dataclasses import dataclass, field

from rewardlab.data.templates import EncodedSequence, assistant_turn_text, close_generated_turn, encode_prompt_response
from rewardlab.modeling.reward_model import RewardModel
from rewardlab.redistribution import METHODS
from rewardlab.scoring import TokenRewardSettings, response_token_texts, score_sequences

MISSING_EXTRA = "the reward server needs FastAPI and uvicorn: pip install 'rewardlab[serve]'"


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


@dataclass
class _Job:
    sequence: EncodedSequence
    settings: TokenRewardSettings
    future: asyncio.Future = field(repr=False)


class BatchingScorer:
    """Queue + worker: concurrent items are grouped into batches of at most `max_batch_size` per forward pass."""

    def __init__(self, rm: RewardModel, max_batch_size: int):
        self.rm = rm
        self.max_batch_size = max_batch_size
        self.queue: asyncio.Queue[_Job] = asyncio.Queue()
        self.batches_run = 0  # for tests and logs: how many forward passes served the requests
        self._worker: asyncio.Task | None = None

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker

    async def score(self, sequences: list[EncodedSequence], settings: TokenRewardSettings) -> list:
        loop = asyncio.get_running_loop()
        jobs = [_Job(seq, settings, loop.create_future()) for seq in sequences]
        for job in jobs:
            self.queue.put_nowait(job)
        return list(await asyncio.gather(*(job.future for job in jobs)))

    async def _run(self) -> None:
        while True:
            batch = [await self.queue.get()]
            while len(batch) < self.max_batch_size and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            batch = [job for job in batch if not job.future.cancelled()]  # the client went away
            if not batch:
                continue
            try:
                scores = await asyncio.to_thread(
                    score_sequences, self.rm, [job.sequence for job in batch], [job.settings for job in batch]
                )
            except Exception as err:  # e.g. out of memory: fail these requests, keep serving
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(err)
                continue
            self.batches_run += 1
            for job, score in zip(batch, scores, strict=True):
                if not job.future.done():
                    job.future.set_result(score)


def _effective_max_length(rm: RewardModel, max_length: int) -> int:
    """The requested bound, lowered to the tokenizer's own limit when it states a real one."""
    model_limit = getattr(rm.tokenizer, "model_max_length", None)
    if isinstance(model_limit, int) and 0 < model_limit < 10**7:
        return min(max_length, model_limit)
    return max_length


def encode_query(tokenizer, query: str, turn: tuple[str, str] | None = None) -> EncodedSequence:
    """An OpenRLHF query (full rendered text) as one sequence. Padding text is stripped. A chat turn that stops at EOS,
    as a generation does, is closed as the chat template closes it (`turn` = `assistant_turn_text(tokenizer)`), so the
    reward is read where rewardlab reads it in training; other text gets EOS appended when it lacks one."""
    pad, eos = tokenizer.pad_token, tokenizer.eos_token
    if pad and pad != eos:
        while query.startswith(pad):
            query = query[len(pad) :]
        while query.endswith(pad):
            query = query[: -len(pad)]
    query = close_generated_turn(query, eos, turn)
    ids = tokenizer(query, add_special_tokens=False)["input_ids"]
    closed_turn = turn is not None and bool(turn[1]) and query.endswith(turn[1])
    if not closed_turn and tokenizer.eos_token_id is not None and (not ids or ids[-1] != tokenizer.eos_token_id):
        ids = ids + [tokenizer.eos_token_id]
    return EncodedSequence(ids, response_start=0)


def create_app(
    rm: RewardModel,
    *,
    max_batch_size: int = 16,
    max_items: int = 64,
    max_length: int = 4096,
    beta_c: float = 1.0,
    abc_beta: float = 0.8,
    model_name: str | None = None,
):
    """The FastAPI app serving `rm` (already loaded, in eval mode)."""
    require_serve_extra()
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from pydantic import BaseModel, ConfigDict

    Message = dict[str, str]
    Text = str | list[Message]

    class ScoreItem(BaseModel):
        prompt: Text
        response: Text

    class ScoreRequest(BaseModel):
        items: list[ScoreItem]
        token_rewards: str | None = None
        beta_c: float | None = None
        abc_beta: float | None = None

    class GetRewardRequest(BaseModel):
        model_config = ConfigDict(extra="allow")  # OpenRLHF also sends prompts, labels...
        query: list[str]

    length_limit = _effective_max_length(rm, max_length)
    tokenizer = rm.tokenizer
    turn = assistant_turn_text(tokenizer)
    rm.eval()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.scorer = BatchingScorer(rm, max_batch_size)
        app.state.scorer.start()
        try:
            yield
        finally:
            await app.state.scorer.stop()

    app = FastAPI(title="rewardlab reward server", lifespan=lifespan)

    @app.exception_handler(RequestError)
    async def refuse(request: Request, err: RequestError) -> JSONResponse:
        return JSONResponse(status_code=err.status, content={"error": err.message})

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0] if err.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
        return JSONResponse(status_code=422, content={"error": f"{where}: {first.get('msg')}", "detail": err.errors()})

    def check_count(n: int) -> None:
        if n == 0:
            raise RequestError(422, "no items to score")
        if n > max_items:
            raise RequestError(413, f"{n} items in one request; the limit is {max_items} (--max-items)")

    def check_lengths(sequences: list[EncodedSequence], what: str) -> None:
        for i, seq in enumerate(sequences):
            if len(seq.input_ids) > length_limit:
                raise RequestError(422, f"{what}.{i}: {len(seq.input_ids)} tokens; the limit is {length_limit} (--max-length)")

    def encode_items(items: list[ScoreItem]) -> list[EncodedSequence]:
        sequences = []
        for i, item in enumerate(items):
            try:
                sequences.append(encode_prompt_response(tokenizer, item.prompt, item.response))
            except (ValueError, KeyError, TypeError) as err:
                raise RequestError(422, f"items.{i}: cannot render: {err}") from None
        return sequences

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "model": model_name, "max_items": max_items, "max_length": length_limit}

    @app.post("/score")
    async def score(body: ScoreRequest) -> dict:
        check_count(len(body.items))
        if body.token_rewards is not None and body.token_rewards not in METHODS:
            raise RequestError(422, f"token_rewards: unknown method {body.token_rewards!r}; one of {', '.join(METHODS)}")
        settings = TokenRewardSettings(
            body.token_rewards,
            beta_c if body.beta_c is None else body.beta_c,
            abc_beta if body.abc_beta is None else body.abc_beta,
        )
        sequences = await asyncio.to_thread(encode_items, body.items)
        check_lengths(sequences, "items")
        scores = await app.state.scorer.score(sequences, settings)
        results = []
        for s in scores:
            tokens = response_token_texts(tokenizer, s.response_ids) if settings.method else None
            results.append(
                {
                    "reward": s.reward,
                    "prompt_reward": s.prompt_reward,
                    "tokens": tokens,
                    "token_rewards": s.token_rewards,
                }
            )
        return {"results": results}

    @app.post("/get_reward")
    async def get_reward(body: GetRewardRequest) -> dict:
        check_count(len(body.query))
        sequences = await asyncio.to_thread(lambda: [encode_query(tokenizer, q, turn) for q in body.query])
        check_lengths(sequences, "query")
        scores = await app.state.scorer.score(sequences, TokenRewardSettings())
        return {"rewards": [s.reward for s in scores]}

    return app


def run_server(rm: RewardModel, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info", **limits) -> None:
    """Serve until interrupted (limits: max_batch_size, max_items, max_length, beta_c, abc_beta, model_name)."""
    require_serve_extra()
    import uvicorn

    uvicorn.run(create_app(rm, **limits), host=host, port=port, log_level=log_level)
