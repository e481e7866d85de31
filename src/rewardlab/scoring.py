"""Scoring (prompt, response) pairs with a reward model: sequence reward, prompt reward and token rewards, one pass.

One forward pass per batch gives the reward head at every position; the sequence reward R(x, y), the prompt reward R(x)
and every token-reward method (`rewardlab.redistribution`) are read from it. Only `abc` also asks for the last layer's
attention. Batches are formed from length-sorted sequences to limit padding; results come back in input order.
"""

from __future__ import annotations

import html
import os
import weakref
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch

from rewardlab.data.templates import EncodedSequence, encode_prompt_response, pad_sequences
from rewardlab.data.types import PromptCompletion, Text
from rewardlab.masks import response_mask
from rewardlab.modeling.reward_model import RewardModel
from rewardlab.progress import progress as show_progress
from rewardlab.redistribution import (
    DEFAULT_ABC_BETA,
    DEFAULT_BETA_C,
    TOKEN_REWARD_METHODS,
    prompt_rewards,
    redistribute,
    sequence_rewards,
    token_reward_method,
)
from rewardlab.runtime import HTML_GENERATOR, write_text


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


# --- one forward pass ----------------------------------------------------------------------------------------------


@torch.inference_mode()
def score_batch(
    rm: RewardModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    response_start: torch.Tensor,
    settings: TokenRewardSettings | Sequence[TokenRewardSettings],
    packed: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(sequence rewards (B,), prompt rewards (B,), token rewards (B, T) or None) from ONE forward pass.

    `settings` is one for the whole batch or one per row (the server batches requests that ask for different methods);
    rows whose method is None get zero token rewards when other rows ask for some. `packed`: padding-free where the model
    supports it (the same numbers; off for a run that turned padding-free batches off).
    """
    per_row = [settings] * len(input_ids) if isinstance(settings, TokenRewardSettings) else list(settings)
    device = rm.device
    input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
    response_start = response_start.to(device)
    need_attention = any(s.needs_attention for s in per_row)
    out = rm(input_ids, attention_mask, output_attentions=need_attention, packed=packed)  # padding-free where supported
    positions = out.position_rewards.float()
    token_rewards = None
    if any(s.method is not None for s in per_row):
        token_rewards = torch.zeros_like(positions)
        for group in sorted({s for s in per_row if s.method is not None}, key=repr):
            rows = torch.tensor([i for i, s in enumerate(per_row) if s == group], device=device)
            token_rewards[rows] = redistribute(
                group.method,
                positions[rows],
                attention_mask[rows],
                response_start[rows],
                beta_c=group.beta_c,
                abc_beta=group.abc_beta,
                attention=out.attentions[rows] if group.needs_attention else None,
            )
    return (
        sequence_rewards(positions, attention_mask),
        prompt_rewards(positions, attention_mask, response_start),
        token_rewards,
    )


def score_sequences(
    rm: RewardModel,
    sequences: Sequence[EncodedSequence],
    settings: TokenRewardSettings | Sequence[TokenRewardSettings],
    *,
    padding_side: str = "right",
    packed: bool = True,
) -> list[SequenceScore]:
    """Score already-encoded sequences as ONE batch (callers choose the batches); settings and `packed` as in
    `score_batch`."""
    per_row = [settings] * len(sequences) if isinstance(settings, TokenRewardSettings) else list(settings)
    pad_id = rm.tokenizer.pad_token_id if rm.tokenizer.pad_token_id is not None else 0
    input_ids, attention_mask, response_start = pad_sequences(list(sequences), pad_id, padding_side)
    rewards, prompt_values, token_rewards = score_batch(rm, input_ids, attention_mask, response_start, per_row, packed)
    in_response = response_mask(attention_mask, response_start)
    rewards, prompt_values = rewards.cpu().tolist(), prompt_values.cpu().tolist()
    token_rewards = token_rewards.cpu() if token_rewards is not None else None
    scores = []
    for i, row_settings in enumerate(per_row):
        row_mask = in_response[i]
        values = token_rewards[i][row_mask].tolist() if token_rewards is not None and row_settings.method else None
        scores.append(SequenceScore(rewards[i], prompt_values[i], input_ids[i][row_mask].tolist(), values))
    return scores


# --- token text ----------------------------------------------------------------------------------------------------


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


# --- one scored row -------------------------------------------------------------------------------------------------


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


# --- scoring lists of completions ----------------------------------------------------------------------------------


def _as_pair(item: PromptCompletion | tuple[Text, Text]) -> tuple[Text, Text]:
    if isinstance(item, PromptCompletion):
        return item.prompt, item.completion
    prompt, response = item
    return prompt, response


def score_completions(
    rm: RewardModel,
    items: Sequence[PromptCompletion] | Sequence[tuple[Text, Text]],
    *,
    token_rewards: str | None = None,
    batch_size: int = 8,
    max_length: int | None = None,
    beta_c: float = DEFAULT_BETA_C,
    abc_beta: float = DEFAULT_ABC_BETA,
    padding_side: str = "right",
    progress: bool = False,
) -> list[ScoreResult]:
    """Score every (prompt, response): one forward pass per batch of length-sorted sequences; results in input order.

    Over-long sequences keep their end (`max_length`, truncation keep_end) and are flagged `truncated`.
    """
    settings = TokenRewardSettings(token_rewards, beta_c, abc_beta)
    pairs = [_as_pair(item) for item in items]
    encoded = [encode_prompt_response(rm.tokenizer, p, r, max_length, "keep_end") for p, r in pairs]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].input_ids), reverse=True)
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if progress:
        batches = show_progress(batches, desc="scoring", unit="batch")
    results: list[ScoreResult | None] = [None] * len(pairs)
    for batch in batches:
        scores = score_sequences(rm, [encoded[i] for i in batch], settings, padding_side=padding_side)
        for i, score in zip(batch, scores, strict=True):
            prompt, response = pairs[i]
            results[i] = ScoreResult(prompt, response, **score_row(rm.tokenizer, score, encoded[i].truncated, settings))
    return results  # type: ignore[return-value]


def telescoping_gap(results: Sequence[ScoreResult]) -> float:
    """max |sum(token_rewards) - (reward - prompt_reward)|: 0 up to float error for r3hf (and mix with beta_c = 1)."""
    gaps = [abs(sum(r.token_rewards) - (r.reward - r.prompt_reward)) for r in results if r.token_rewards is not None]
    return max(gaps, default=0.0)


# --- HTML view -----------------------------------------------------------------------------------------------------


def _colour(value: float, scale: float) -> str:
    """Diverging scale: red for negative, white at 0, blue for positive (saturating at |value| = scale)."""
    t = max(-1.0, min(1.0, value / scale)) if scale > 0 else 0.0
    end = (178, 24, 43) if t < 0 else (33, 102, 172)
    red, green, blue = (round(255 + (channel - 255) * abs(t)) for channel in end)  # from white towards the end colour
    return f"rgb({red},{green},{blue})"


def _text(value: Text) -> str:
    if isinstance(value, str):
        return value
    return "\n".join(f"[{m.get('role', '?')}] {m.get('content', '')}" for m in value)


def render_html(results: Sequence[ScoreResult], path: str | os.PathLike) -> None:
    """Write an HTML page: each response token coloured by its reward on one shared diverging scale, with a legend."""
    values = [v for r in results for v in (r.token_rewards or [])]
    scale = max((abs(v) for v in values), default=0.0)
    legend_stops = ", ".join(_colour(x * scale, scale) for x in (-1.0, -0.5, 0.0, 0.5, 1.0))
    blocks = []
    for index, r in enumerate(results):
        if r.tokens is not None and r.token_rewards is not None:
            spans = "".join(
                f'<span class="tok" style="background:{_colour(v, scale)}" title="{v:+.4f}">{html.escape(t)}</span>'
                for t, v in zip(r.tokens, r.token_rewards, strict=True)
            )
            total = f" &middot; sum(token rewards) {sum(r.token_rewards):+.4f}"
        else:
            spans = html.escape(_text(r.response))
            total = ""
        blocks.append(
            f"<section><h2>#{index} &middot; reward {r.reward:+.4f} &middot; prompt reward {r.prompt_reward:+.4f}"
            f"{total}{' &middot; truncated' if r.truncated else ''}</h2>"
            f'<div class="prompt">{html.escape(_text(r.prompt))}</div><div class="response">{spans}</div></section>'
        )
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">{HTML_GENERATOR}<title>rewardlab token rewards</title>
<style>
body {{ font-family: sans-serif; max-width: 60em; margin: 2em auto; }}
h2 {{ font-size: 1em; font-weight: normal; color: #333; }}
.prompt, .response {{ white-space: pre-wrap; font-family: monospace; padding: .5em; }}
.prompt {{ color: #666; background: #f4f4f4; }}
.tok {{ border-radius: 2px; }}
.legend {{ display: flex; align-items: center; gap: .5em; }}
.bar {{ width: 20em; height: 1em; background: linear-gradient(to right, {legend_stops}); border: 1px solid #ccc; }}
</style></head><body>
<h1>Token rewards</h1>
<div class="legend"><span>{-scale:+.4f}</span><div class="bar"></div><span>{scale:+.4f}</span>
<span>(hover a token for its reward)</span></div>
{"".join(blocks)}
</body></html>
"""
    write_text(path, page)


def results_summary(results: Sequence[ScoreResult]) -> dict:
    """Summary metrics for a scored file."""
    n = len(results)
    return {
        "rows": n,
        "mean_reward": sum(r.reward for r in results) / n if n else None,
        "mean_prompt_reward": sum(r.prompt_reward for r in results) / n if n else None,
        "truncated": sum(r.truncated for r in results),
        "max_abs_sum_gap": telescoping_gap(results),
    }
