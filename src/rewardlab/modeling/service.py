"""The scoring service: one loaded reward model and every way of scoring with it.

`rewardlab score`, the HTTP server, verl's local scorer, TRL's reward function and the RL scorers are thin adapters
over `ScoringService`. It owns the loaded model (`ScoringService.load`, over `modeling.loader.load_for_scoring`), the
encoding (`rewardlab.data.templates`: messages through the chat template, plain strings as the joined text
prompt + response + EOS, token ids as they are; over-long sequences keep their end), length-sorted batching, the
token-reward settings and the result row.

One forward pass per batch gives the reward head at every position (`ScoredBatch.position_rewards`); every output is a
view of that batch: the sequence reward R(x, y), the prompt reward R(x), a method's token rewards
(`rewardlab.redistribution`; only `abc` also asks for the last layer's attention), or the rewards at given token
positions (`ScoredBatch.rewards_at`). A new view is a function of a `ScoredBatch` passed to `score_encoded(view=...)`.

Entry points: `score(items)` ((prompt, response) pairs -> `ScoreResult` rows), `score_encoded(sequences)` (encoded
sequences -> `SequenceScore`), both synchronous, length-sorted and in input order; `score_batch` (one forward pass);
`score_async(sequences)` (asynchronous: concurrent callers on one event loop share forward passes, `AsyncBatcher`). The
synchronous and asynchronous entries take the same `view` (step rewards: `rewardlab.step_scoring`).
eval-rm's pairs (`pair_batches`, `score_pairs`: the trainer's evaluation too, under accelerate split over processes and
gathered back) and batches the caller padded itself (`forward_padded`: PPO's prompt + response layout) are read from
the same `ScoredBatch`. A model that is being trained is scored inside `evaluating()` (eval mode, restored after).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

import torch
from torch.utils.data import DataLoader

from rewardlab.data.pairs import EncodedPair, pair_rows
from rewardlab.data.templates import EncodedSequence, encode_prompt_response, keep_end, pad_sequences
from rewardlab.data.types import PromptCompletion, Text
from rewardlab.errors import UserError
from rewardlab.masks import response_mask
from rewardlab.progress import progress as show_progress
from rewardlab.redistribution import (
    DEFAULT_ABC_BETA,
    DEFAULT_BETA_C,
    TOKEN_REWARD_METHODS,
    prompt_rewards,
    redistribute,
    token_reward_method,
)

T = TypeVar("T")


@dataclass(frozen=True)
class TokenRewardSettings:
    """Which token rewards to compute (None: sequence and prompt reward only) and the methods' coefficients."""

    method: str | None = None
    beta_c: float = DEFAULT_BETA_C  # mix: weight of the dense r3hf rewards (R3HF Eq. 7)
    abc_beta: float = DEFAULT_ABC_BETA  # abc: weight of the attention-distributed part

    def __post_init__(self) -> None:
        if self.method is not None:
            token_reward_method(self.method, "token_rewards")

    @property
    def needs_attention(self) -> bool:
        return self.method is not None and TOKEN_REWARD_METHODS[self.method].needs_attention


@dataclass
class SequenceScore:
    """Scores of one encoded sequence; token_rewards covers the response tokens (response_ids) only."""

    reward: float
    prompt_reward: float
    response_ids: list[int]
    token_rewards: list[float] | None


@dataclass
class ScoreResult:
    prompt: Text
    response: Text
    reward: float  # R(x, y): the reward head at the last token
    prompt_reward: float  # R(x): the reward head at the last prompt token (0 when no prompt token is left)
    tokens: list[str] | None  # the response tokens as text (joined, they give the response as the model saw it)
    token_rewards: list[float] | None  # one per token, or None without --token-rewards
    truncated: bool = False

    def to_row(self) -> dict:
        return asdict(self)


# --- one forward pass, and its views --------------------------------------------------------------------------------


@dataclass
class ScoredBatch:
    """One forward pass over a padded batch: the reward head at every position, and what is read from it.

    `input_ids`, `attention_mask` and `response_start` are the padded (B, T) batch where the caller had it (the CPU for
    the service's own batches); the reward tensors stay where the model ran. `offsets[i]`: the padding before row i
    (left padding), so that position p of sequence i is column offsets[i] + p; None for a layout with padding inside
    the rows (PPO's left-padded prompt + right-padded response). `output`: the model's own `RewardOutput` (hidden states,
    response log-probs) for views that read more than rewards."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    response_start: torch.Tensor
    offsets: list[int] | None
    settings: list[TokenRewardSettings]
    position_rewards: torch.Tensor  # (B, T) float32: the reward head after each token
    rewards: torch.Tensor  # (B,) float32 R(x, y): the model's sequence rewards (read at the last real token)
    prompt_rewards: torch.Tensor  # (B,) R(x)
    token_rewards: torch.Tensor | None  # (B, T), zero on rows whose settings ask for none
    output: Any = field(default=None, repr=False)

    @property
    def in_response(self) -> torch.Tensor:
        """(B, T) bool: the response tokens of each row."""
        return response_mask(self.attention_mask, self.response_start)

    def sequence_scores(self) -> list[SequenceScore]:
        """The default view: per row, R(x, y), R(x), the response ids and (when asked) their token rewards."""
        in_response = self.in_response.cpu()
        rewards, prompt_values = self.rewards.cpu().tolist(), self.prompt_rewards.cpu().tolist()
        token_rewards = self.token_rewards.cpu() if self.token_rewards is not None else None
        input_ids = self.input_ids.cpu()
        scores = []
        for i, row_settings in enumerate(self.settings):
            row_mask = in_response[i]
            values = token_rewards[i][row_mask].tolist() if token_rewards is not None and row_settings.method else None
            scores.append(SequenceScore(rewards[i], prompt_values[i], input_ids[i][row_mask].tolist(), values))
        return scores

    def rewards_at(self, row: int, positions: Sequence[int]) -> list[float]:
        """The reward head after the tokens at `positions` (indices into row `row`'s own, unpadded ids): R of the
        sequence up to and including each such token."""
        if self.offsets is None:
            raise ValueError("rewards_at needs a batch padded on one side (offsets)")
        columns = torch.tensor([self.offsets[row] + p for p in positions], dtype=torch.long)
        return self.position_rewards[row].cpu()[columns].tolist()


@dataclass
class PairBatch:
    """ONE forward pass over B preference pairs (eval-rm's batches): rows 0..B-1 of `scored` are the chosen sequences,
    B..2B-1 the rejected ones."""

    scored: ScoredBatch
    index: torch.Tensor  # (B,) the pairs' positions in their data set, on the CPU

    @property
    def size(self) -> int:
        return self.index.shape[0]

    @property
    def chosen_rewards(self) -> torch.Tensor:
        return self.scored.rewards[: self.size]

    @property
    def rejected_rewards(self) -> torch.Tensor:
        return self.scored.rewards[self.size :]


def collate_pair_rows(pairs: list[EncodedPair], pad_id: int, padding_side: str = "right") -> dict[str, torch.Tensor]:
    """B pairs as one padded (2B, T) batch, chosen rows first: input_ids, attention_mask, response_start and the pairs'
    dataset `index` (a dict of tensors, as accelerate's data loaders split and pad them)."""
    input_ids, attention_mask, response_start = pad_sequences(pair_rows(pairs), pad_id, padding_side)
    index = torch.tensor([p.index for p in pairs], dtype=torch.long)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "response_start": response_start, "index": index}


def forward_batch(
    rm,
    sequences: Sequence[EncodedSequence],
    settings: Sequence[TokenRewardSettings],
    *,
    padding_side: str = "right",
    packed: bool = True,
) -> ScoredBatch:
    """ONE forward pass over `sequences` padded into a batch, with one settings per row (the server batches requests
    that ask for different methods; rows whose method is None get zero token rewards when other rows ask for some).
    `packed`: padding-free where the model supports it (the same numbers; off for a run that turned it off)."""
    input_ids, attention_mask, response_start = pad_sequences(list(sequences), pad_token_id(rm), padding_side)
    width = input_ids.shape[1]
    offsets = [width - len(s.input_ids) if padding_side == "left" else 0 for s in sequences]
    return forward_padded(rm, input_ids, attention_mask, response_start, settings, offsets=offsets, packed=packed)


def forward_padded(
    rm,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    response_start: torch.Tensor,
    settings: Sequence[TokenRewardSettings],
    *,
    offsets: list[int] | None = None,
    packed: bool = True,
    response_logprobs: bool = False,
    device: torch.device | str | None = None,
    autocast: Callable[[], contextlib.AbstractContextManager] | None = None,
    inference: bool = True,
) -> ScoredBatch:
    """ONE forward pass over a (B, T) batch already padded, in any layout: `response_start[i]` is the column of row i's
    first response token. `response_logprobs`: the output also carries each row's summed response log-probs (the kept
    LM head); `device`: where the batch goes (default: the model's); `autocast`: a context for the model call only (a
    frozen model under mixed precision); `inference`: inference mode, or no_grad where the tensors may meet autograd
    later (a model in training, PPO's rollout)."""
    per_row = list(settings)
    device = rm.device if device is None else device
    ids, mask, start = input_ids.to(device), attention_mask.to(device), response_start.to(device)
    need_attention = any(s.needs_attention for s in per_row)
    with torch.inference_mode() if inference else torch.no_grad():
        with autocast() if autocast is not None else contextlib.nullcontext():
            in_response = response_mask(mask, start) if response_logprobs else None
            out = rm(ids, mask, in_response, output_attentions=need_attention, packed=packed)
        positions = out.position_rewards.float()
        token_rewards = None
        if any(s.method is not None for s in per_row):
            token_rewards = torch.zeros_like(positions)
            for group in sorted({s for s in per_row if s.method is not None}, key=repr):
                rows = torch.tensor([i for i, s in enumerate(per_row) if s == group], device=device)
                token_rewards[rows] = redistribute(
                    group.method,
                    positions[rows],
                    mask[rows],
                    start[rows],
                    beta_c=group.beta_c,
                    abc_beta=group.abc_beta,
                    attention=out.attentions[rows] if group.needs_attention else None,
                )
        rewards = out.sequence_rewards.float()
        return ScoredBatch(
            input_ids,
            attention_mask,
            response_start,
            offsets,
            per_row,
            positions,
            rewards,
            prompt_rewards(positions, mask, start),
            token_rewards,
            out,
        )


def pad_token_id(rm) -> int:
    return rm.tokenizer.pad_token_id if rm.tokenizer.pad_token_id is not None else 0


# --- token text and the result row -----------------------------------------------------------------------------------


_PIECES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # tokenizer -> {(anchor, token id): text}


def response_token_texts(tokenizer, ids: list[int]) -> list[str]:
    """The text each token adds, so that "".join(result) == tokenizer.decode(ids) for byte-level and sentencepiece.

    Each token is decoded after a fixed anchor token (sentencepiece drops a leading space when a token is decoded
    alone). A token that ends inside a multi-byte character decodes to U+FFFD; it is merged with the next tokens until
    the character is complete, and the text goes to the last token of the group ('' to the others).
    """
    if not ids:
        return []
    anchor = next(t for t in (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id, ids[0]) if t is not None)
    anchor_text = tokenizer.decode([anchor])

    def strip_anchor(text: str, fallback: list[int]) -> str:
        return text[len(anchor_text) :] if text.startswith(anchor_text) else tokenizer.decode(fallback)

    # A token's piece depends only on (anchor, token): decode each once per tokenizer, not once per occurrence (the
    # token texts were most of what `score --token-rewards` cost beyond scoring).
    cache = _PIECES.setdefault(tokenizer, {})
    missing = [i for i in dict.fromkeys(ids) if (anchor, i) not in cache]
    if missing:  # (batch_decode of an empty list is not an empty list)
        for i, text in zip(missing, tokenizer.batch_decode([[anchor, i] for i in missing]), strict=True):
            cache[anchor, i] = strip_anchor(text, [i])
    pieces = [cache[anchor, i] for i in ids]
    out: list[str] = []
    k = 0
    while k < len(ids):
        if "\ufffd" not in pieces[k]:
            out.append(pieces[k])
            k += 1
            continue
        # A UTF-8 character spans at most 4 bytes: try groups of 2..4 tokens (fewer at the end of the response; an empty
        # range falls through to `else`, so a response cut inside a character still advances).
        for width in range(2, min(4, len(ids) - k) + 1):
            group = ids[k : k + width]
            text = strip_anchor(tokenizer.decode([anchor, *group]), group)
            if "\ufffd" not in text:
                out.extend([""] * (width - 1) + [text])
                k += width
                break
        else:
            out.append(pieces[k])  # a genuine replacement character, or bytes that never complete
            k += 1
    return out


def score_row(tokenizer, score: SequenceScore, truncated: bool, settings: TokenRewardSettings) -> dict:
    """The numbers of one scored sequence as `rewardlab score` writes them and `rewardlab serve` returns them: reward,
    prompt_reward, tokens (the response tokens' text, with token rewards only), token_rewards, truncated (in that order:
    `ScoreResult`'s fields after prompt and response)."""
    return {
        "reward": score.reward,
        "prompt_reward": score.prompt_reward,
        "tokens": response_token_texts(tokenizer, score.response_ids) if settings.method else None,
        "token_rewards": score.token_rewards,
        "truncated": truncated,
    }


def as_pair(item: PromptCompletion | tuple[Text, Text]) -> tuple[Text, Text]:
    if isinstance(item, PromptCompletion):
        return item.prompt, item.completion
    prompt, response = item
    return prompt, response


# --- the service -----------------------------------------------------------------------------------------------------


class ScoringService:
    """A loaded reward model (in eval mode; a model in training is scored inside `evaluating()`, and `pair_batches`
    does that itself) with its scoring settings: `batch_size` sequences per forward pass (the async entry: at most
    that many; pairs: batch_size // 2 pairs), `max_length` (longer sequences keep their end; None: no limit), the
    default token-reward `settings`, `padding_side` and `packed` (padding-free forward passes where the model supports
    them)."""

    def __init__(
        self,
        rm,
        *,
        batch_size: int = 8,
        max_length: int | None = None,
        settings: TokenRewardSettings | None = None,
        padding_side: str = "right",
        packed: bool = True,
    ) -> None:
        if batch_size < 1:
            raise UserError(f"batch_size must be at least 1, not {batch_size}")
        self.rm = rm
        self.batch_size = batch_size
        self.max_length = max_length
        self.settings = settings if settings is not None else TokenRewardSettings()
        self.padding_side = padding_side
        self.packed = packed
        self.batchers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # event loop -> AsyncBatcher

    @classmethod
    def load(
        cls,
        source: Any,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        *,
        aggregate: str | None = None,
        normalize: bool = False,
        current_cuda: bool = False,
        where: str = "the reward model",
        **options: Any,
    ) -> ScoringService:
        """A service over `load_for_scoring(source, ...)` (a path, a built-in name or a loaded model); `options` are
        the constructor's."""
        from rewardlab.modeling.loader import load_for_scoring

        rm = load_for_scoring(
            source, device, dtype, aggregate=aggregate, normalize=normalize, current_cuda=current_cuda, where=where
        )
        return cls(rm, **options)

    @property
    def tokenizer(self):
        return self.rm.tokenizer

    # encoding

    def fit(self, sequence: EncodedSequence) -> EncodedSequence:
        """The sequence cut to `max_length`, keeping its end (flagged `truncated`); itself when it fits."""
        return sequence if self.max_length is None else keep_end(sequence, self.max_length)

    def encode(self, prompt: Text, response: Text) -> EncodedSequence:
        """(prompt, response) as training encodes it: messages through the chat template, plain strings as the joined
        text with EOS after it (`encode_prompt_response`), cut to `max_length`."""
        return encode_prompt_response(self.tokenizer, prompt, response, self.max_length, "keep_end")  # type: ignore[return-value]

    def encode_ids(self, prompt_ids: Sequence[int], response_ids: Sequence[int]) -> EncodedSequence:
        """Token ids scored as they are (no special tokens added), cut to `max_length`."""
        return self.fit(EncodedSequence(list(prompt_ids) + list(response_ids), len(prompt_ids)))

    # synchronous

    def batches(self, sequences: Sequence[EncodedSequence]) -> list[list[int]]:
        """Indices of `sequences`, longest first, in batches of `batch_size` (less padding)."""
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i].input_ids), reverse=True)
        return [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]

    def forward(
        self, sequences: Sequence[EncodedSequence], settings: TokenRewardSettings | Sequence[TokenRewardSettings] | None = None
    ) -> ScoredBatch:
        """ONE forward pass over `sequences` (the caller chose the batch); `settings`: one for all rows, one per row, or
        None for the service's."""
        settings = self.settings if settings is None else settings
        per_row = [settings] * len(sequences) if isinstance(settings, TokenRewardSettings) else list(settings)
        return forward_batch(self.rm, sequences, per_row, padding_side=self.padding_side, packed=self.packed)

    def forward_padded(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        response_start: torch.Tensor,
        settings: TokenRewardSettings | None = None,
        *,
        autocast: Callable[[], contextlib.AbstractContextManager] | None = None,
    ) -> ScoredBatch:
        """ONE forward pass over a batch the caller padded in its own layout (PPO: left-padded prompts, right-padded
        responses); no_grad rather than inference mode, as the caller's tensors go on into training (`forward_padded`)."""
        settings = self.settings if settings is None else settings
        return forward_padded(
            self.rm,
            input_ids,
            attention_mask,
            response_start,
            [settings] * input_ids.shape[0],
            packed=self.packed,
            autocast=autocast,
            inference=False,
        )

    def score_batch(
        self, sequences: Sequence[EncodedSequence], settings: TokenRewardSettings | Sequence[TokenRewardSettings] | None = None
    ) -> list[SequenceScore]:
        """`forward` read by the default view: one `SequenceScore` per sequence."""
        return self.forward(sequences, settings).sequence_scores()

    def score_encoded(
        self,
        sequences: Sequence[EncodedSequence],
        settings: TokenRewardSettings | None = None,
        *,
        progress: bool = False,
        view: Callable[[ScoredBatch], list[T]] = ScoredBatch.sequence_scores,  # type: ignore[assignment]
        desc: str = "scoring",
        leave: bool = True,
    ) -> list[T]:
        """Every sequence scored in length-sorted batches of `batch_size`; `view(batch)` gives one result per row of a
        batch (default: `SequenceScore`). Results come back in input order."""
        batches = show_progress(self.batches(sequences), desc=desc, unit="batch", enabled=progress, leave=leave)
        out: list[Any] = [None] * len(sequences)
        for batch in batches:
            for i, result in zip(batch, view(self.forward([sequences[i] for i in batch], settings)), strict=True):
                out[i] = result
        return out

    def row(self, score: SequenceScore, truncated: bool, settings: TokenRewardSettings | None = None) -> dict:
        """The result row of one scored sequence (`score_row`)."""
        return score_row(self.tokenizer, score, truncated, self.settings if settings is None else settings)

    def score(
        self,
        items: Sequence[PromptCompletion] | Sequence[tuple[Text, Text]],
        settings: TokenRewardSettings | None = None,
        *,
        progress: bool = False,
    ) -> list[ScoreResult]:
        """Every (prompt, response) scored: one `ScoreResult` per item, in input order (`rewardlab score`'s rows)."""
        settings = self.settings if settings is None else settings
        pairs = [as_pair(item) for item in items]
        encoded = [self.encode(prompt, response) for prompt, response in pairs]
        scores = self.score_encoded(encoded, settings, progress=progress)
        return [
            ScoreResult(prompt, response, **self.row(score, sequence.truncated, settings))
            for (prompt, response), sequence, score in zip(pairs, encoded, scores, strict=True)
        ]

    def rewards(self, items: Sequence[PromptCompletion] | Sequence[tuple[Text, Text]]) -> list[float]:
        """The sequence reward R(x, y) of every (prompt, response), in input order."""
        return [r.reward for r in self.score(items, TokenRewardSettings())]

    # a model in training, and eval-rm's pairs

    @contextlib.contextmanager
    def evaluating(self) -> Iterator[ScoringService]:
        """The model in eval mode for the block, its training mode restored after (a model that is being trained)."""
        was_training = self.rm.training
        self.rm.eval()
        try:
            yield self
        finally:
            self.rm.train(was_training)

    def pair_batches(
        self,
        pairs: Sequence[EncodedPair],
        *,
        accelerator=None,
        progress: bool = False,
        desc: str = "scoring",
        response_logprobs: bool = False,
    ) -> Iterator[PairBatch]:
        """eval-rm's batches: the pairs sorted by length (shortest first), `batch_size // 2` pairs (at least one) per
        forward pass with chosen and rejected in one batch, in eval mode (restored after) without gradients. Under
        accelerate (`accelerator`) each process scores its share of the batches (`prepare_data_loader`); gather what is
        read from them with `accelerator.gather_for_metrics` (`score_pairs`). `response_logprobs`: the outputs carry
        each sequence's summed response log-probs."""
        ordered = sorted(pairs, key=lambda p: p.length)
        collate = functools.partial(collate_pair_rows, pad_id=pad_token_id(self.rm), padding_side=self.padding_side)
        loader = DataLoader(ordered, batch_size=max(1, self.batch_size // 2), shuffle=False, collate_fn=collate)
        device = None
        if accelerator is not None:
            loader = accelerator.prepare_data_loader(loader, device_placement=False)  # forward_padded places them
            device = accelerator.device
        with self.evaluating():
            for batch in show_progress(loader, desc=desc, enabled=progress, leave=False):
                settings = [TokenRewardSettings()] * batch["input_ids"].shape[0]
                scored = forward_padded(
                    self.rm,
                    batch["input_ids"],
                    batch["attention_mask"],
                    batch["response_start"],
                    settings,
                    packed=self.packed,
                    response_logprobs=response_logprobs,
                    device=device,
                    inference=False,  # the model may be in training (the trainer's evaluation)
                )
                yield PairBatch(scored, batch["index"])

    def score_pairs(
        self, pairs: Sequence[EncodedPair], *, accelerator=None, progress: bool = False, desc: str = "scoring"
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Rewards of chosen and rejected for every pair, and the pairs' dataset indices (float32, CPU, in index order),
        from `pair_batches`; under accelerate the processes' batches are gathered back."""
        chosen, rejected, index = [], [], []
        for batch in self.pair_batches(pairs, accelerator=accelerator, progress=progress, desc=desc):
            c, r, i = batch.chosen_rewards, batch.rejected_rewards, batch.index
            if accelerator is not None:
                c, r, i = accelerator.gather_for_metrics((c, r, i.to(accelerator.device)))
            chosen.append(c.cpu())
            rejected.append(r.cpu())
            index.append(i.cpu())
        all_chosen, all_rejected, all_index = torch.cat(chosen), torch.cat(rejected), torch.cat(index)
        order = all_index.argsort()
        return all_chosen[order], all_rejected[order], all_index[order]

    # asynchronous

    def batcher(self) -> AsyncBatcher:
        """The running event loop's batching queue (one per loop, started on first use)."""
        loop = asyncio.get_running_loop()
        if loop not in self.batchers:
            self.batchers[loop] = AsyncBatcher(self)
        return self.batchers[loop]

    async def score_async(
        self,
        sequences: Sequence[EncodedSequence],
        settings: TokenRewardSettings | None = None,
        *,
        view: Callable[[ScoredBatch], list[T]] = ScoredBatch.sequence_scores,  # type: ignore[assignment]
    ) -> list[T]:
        """`view`'s result for each of `sequences` (default: `SequenceScore`), in order; concurrent calls on this event
        loop share forward passes (callers with other views or settings included)."""
        return await self.batcher().score(sequences, self.settings if settings is None else settings, view)


@dataclass
class _Job:
    sequence: EncodedSequence
    settings: TokenRewardSettings
    future: asyncio.Future = field(repr=False)
    view: Callable[[ScoredBatch], list[Any]] = ScoredBatch.sequence_scores


def read_views(scored: ScoredBatch, views: Sequence[Callable[[ScoredBatch], list[Any]]]) -> list[Any]:
    """Row i of the batch read by `views[i]`: each distinct view is computed once over the whole batch."""
    computed: dict[Any, list[Any]] = {}
    out = []
    for row, view in enumerate(views):
        if view not in computed:
            computed[view] = view(scored)
        out.append(computed[view][row])
    return out


class AsyncBatcher:
    """The service's asynchronous entry on one event loop: a queue and one worker, which takes whatever is pending (up to
    the service's `batch_size` sequences) and runs one forward pass in a thread. Started lazily on the running loop, so
    any asyncio host can use it: the server, or verl's reward-loop workers, where concurrent samples share passes."""

    def __init__(self, service: ScoringService) -> None:
        self.service = service
        self.queue: asyncio.Queue[_Job] = asyncio.Queue()
        self.batches_run = 0  # for tests and logs: how many forward passes served the callers
        self._worker: asyncio.Task | None = None

    def start(self) -> None:
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker

    async def score(
        self,
        sequences: Sequence[EncodedSequence],
        settings: TokenRewardSettings,
        view: Callable[[ScoredBatch], list[Any]] = ScoredBatch.sequence_scores,
    ) -> list[Any]:
        self.start()
        loop = asyncio.get_running_loop()
        jobs = [_Job(seq, settings, loop.create_future(), view) for seq in sequences]
        for job in jobs:
            self.queue.put_nowait(job)
        return list(await asyncio.gather(*(job.future for job in jobs)))

    async def _run(self) -> None:
        while True:
            batch = [await self.queue.get()]
            while len(batch) < self.service.batch_size and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            batch = [job for job in batch if not job.future.cancelled()]  # the caller went away
            if not batch:
                continue
            try:
                scores = await asyncio.to_thread(self._read, batch)
            except Exception as err:  # e.g. out of memory: fail these callers, keep serving
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(err)
                continue
            self.batches_run += 1
            for job, score in zip(batch, scores, strict=True):
                if not job.future.done():
                    job.future.set_result(score)

    def _read(self, jobs: list[_Job]) -> list[Any]:
        """One forward pass over the jobs' sequences, each row read by its job's view."""
        scored = self.service.forward([job.sequence for job in jobs], [job.settings for job in jobs])
        return read_views(scored, [job.view for job in jobs])


__all__ = [
    "AsyncBatcher",
    "PairBatch",
    "ScoreResult",
    "ScoredBatch",
    "ScoringService",
    "SequenceScore",
    "TokenRewardSettings",
    "collate_pair_rows",
    "forward_batch",
    "forward_padded",
    "response_token_texts",
    "score_row",
]
