"""Scoring lists of (prompt, response) pairs or encoded sequences, and the views of scored files (summary, HTML).

`score_completions` and `score_sequences` are thin adapters over the scoring service
(`rewardlab.modeling.service.ScoringService`), which owns encoding, length-sorted batching, token-reward settings and
the result row: the numbers are the service's, the same as the server's, verl's and TRL's.
"""

from __future__ import annotations

import html
import os
from collections.abc import Sequence

from rewardlab.data.templates import EncodedSequence
from rewardlab.data.types import PromptCompletion, Text
from rewardlab.modeling.service import ScoreResult, ScoringService, SequenceScore, TokenRewardSettings
from rewardlab.redistribution import DEFAULT_ABC_BETA, DEFAULT_BETA_C
from rewardlab.runtime import HTML_GENERATOR, write_text


def score_sequences(
    rm,
    sequences: Sequence[EncodedSequence],
    settings: TokenRewardSettings | Sequence[TokenRewardSettings] | None = None,
    *,
    padding_side: str = "right",
    packed: bool = True,
) -> list[SequenceScore]:
    """Score already-encoded sequences as ONE batch (callers choose the batches): `ScoringService.score_batch`.
    `settings`: one for all, one per row, or None (sequence and prompt rewards only); `packed`: padding-free where the
    model supports it (the same numbers; off for a run that turned padding-free batches off)."""
    return ScoringService(rm, padding_side=padding_side, packed=packed).score_batch(sequences, settings)


def score_completions(
    rm,
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
    """Score every (prompt, response): `ScoringService.score`, one forward pass per batch of length-sorted sequences;
    results in input order. Over-long sequences keep their end (`max_length`) and are flagged `truncated`."""
    settings = TokenRewardSettings(token_rewards, beta_c, abc_beta)
    service = ScoringService(rm, batch_size=batch_size, max_length=max_length, settings=settings, padding_side=padding_side)
    return service.score(items, progress=progress)


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
