"""Prefix-signal diagnostic: how much a reward model's scores at non-final positions say about which response is better.

A Bradley-Terry reward model is trained on one position per sequence, the last. R3HF's token rewards
r_t = R(x, y<=t) - R(x, y<t) read every other position too; if those prefix scores are noise, so is the redistribution
(it still sums to R(x, y) - R(x), but the per-token signal PPO's critic learns from is noise). This measures it, from the
one forward pass per sequence that evaluation already makes (`rewardlab.evaluation.scored_pair_batches`):

- prefix accuracy: for fractions f = 0.1, 0.2, ..., 1.0, the pairwise accuracy (a tie counts one half, as in eval-rm) of
  R(x, chosen<=k_c) against R(x, rejected<=k_r), with k = ceil(f * n) of each response's own n tokens (end-of-turn / EOS
  tokens included: they are response tokens the reward is read at). At f = 1 this is eval-rm's accuracy, exactly: the
  same batches, the same numbers;
- correlation of prefix scores with the final score R(x, y), over all sequences (Pearson and Spearman), and of the prefix
  margin with the final margin over pairs (the prompt's own score R(x) cancels in a margin, so this one is not inflated
  by prompts that score high whatever follows);
- the accuracy of R(x, y<n) (every response token seen but the last, which is usually the end-of-turn / EOS token the
  reward is trained on): how much of the judgement arrives with the content, and how much only with the end token;
- the spread of R3HF token rewards over all response tokens (std, mean |r_t|, 5th / 95th percentiles), the spread of
  the sequence rewards for scale, and how much of each sequence's total |r_t| sits on its last token.

A curve near 0.5 until f = 1 means the prefix scores carry no preference signal (use sparse rewards); a curve that climbs
early means they do, and r3hf hands PPO that signal token by token. docs/evaluation.md has more on reading it.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from rewardlab.config import EvalBatchingSpec
from rewardlab.data.pairs import encode_pairs
from rewardlab.data.types import PreferenceExample
from rewardlab.errors import UserError
from rewardlab.evaluation import preference_metrics, scored_pair_batches
from rewardlab.masks import first_token_index
from rewardlab.redistribution import r3hf_rewards

STEPS = 10  # fractions 0.1, 0.2, ..., 1.0


# ----------------------------------------------------------------------------------------------------------------------
# pure functions


def fractions(steps: int = STEPS) -> list[float]:
    return [i / steps for i in range(1, steps + 1)]


def prefix_lengths(n_tokens: torch.Tensor, steps: int = STEPS) -> torch.Tensor:
    """(B, steps): ceil(i * n / steps) tokens for i = 1..steps, in integer arithmetic (0.3 * 10 is 3.0000000000000004 in
    floating point, whose ceiling is 4), so the last column is n and every prefix holds at least one token."""
    if (n_tokens < 1).any():
        raise ValueError("every response needs at least one token")
    i = torch.arange(1, steps + 1, device=n_tokens.device)
    return (i.unsqueeze(0) * n_tokens.unsqueeze(1) + steps - 1) // steps


def prefix_rewards(
    position_rewards: torch.Tensor, response_start: torch.Tensor, n_tokens: torch.Tensor, steps: int = STEPS
) -> torch.Tensor:
    """(B, steps) R(x, y<=k) for each prefix length k of `prefix_lengths`, read from (B, T) position rewards where the
    response starts at column response_start[b] and runs n_tokens[b] tokens."""
    index = response_start.unsqueeze(1) + prefix_lengths(n_tokens, steps) - 1
    return position_rewards.gather(1, index.long())


def rewards_before_last(
    position_rewards: torch.Tensor, attention_mask: torch.Tensor, response_start: torch.Tensor, n_tokens: torch.Tensor
) -> torch.Tensor:
    """(B,) R(x, y<n): the reward with every response token but the last; for a one-token response that is R(x), taken as
    0 when no prompt token is left (the convention of `rewardlab.redistribution.prompt_rewards`)."""
    index = response_start + n_tokens - 2
    valid = index >= first_token_index(attention_mask)
    values = position_rewards.gather(1, index.clamp_min(0).unsqueeze(1).long()).squeeze(1)
    return torch.where(valid, values, torch.zeros_like(values))


def average_ranks(values: torch.Tensor) -> torch.Tensor:
    """Ranks 1..n (float64), tied values sharing the mean of their ranks (as Spearman's correlation needs)."""
    order = torch.argsort(values, stable=True)
    ranks = torch.empty(len(values), dtype=torch.float64)
    sorted_values = values[order].tolist()
    start = 0
    while start < len(sorted_values):
        end = start
        while end + 1 < len(sorted_values) and sorted_values[end + 1] == sorted_values[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def pearson(x: torch.Tensor, y: torch.Tensor) -> float:
    """Pearson's correlation in float64; NaN when either side is constant (no correlation is defined)."""
    x, y = x.double() - x.double().mean(), y.double() - y.double().mean()
    denominator = (x.square().sum() * y.square().sum()).sqrt()
    return (x * y).sum().item() / denominator.item() if denominator > 0 else float("nan")


def spearman(x: torch.Tensor, y: torch.Tensor) -> float:
    return pearson(average_ranks(x), average_ranks(y))


def token_reward_spread(token_rewards: Sequence[torch.Tensor], sequence_rewards: torch.Tensor) -> dict[str, float]:
    """Spread of per-token rewards pooled over sequences, beside the spread of the sequence rewards themselves.

    last_token_share: mean over sequences of |r_last| / sum_t |r_t| (1: all of the change lands on the last token, as in
    sparse rewards; sequences whose rewards are all 0 are left out).
    """
    pooled = torch.cat([t.double() for t in token_rewards])
    shares = [(t[-1].abs() / t.abs().sum()).item() for t in token_rewards if t.abs().sum() > 0]
    return {
        "tokens": int(pooled.numel()),
        "mean": pooled.mean().item(),
        "std": pooled.std(unbiased=False).item(),
        "mean_abs": pooled.abs().mean().item(),
        "p05": torch.quantile(pooled, 0.05).item(),
        "p95": torch.quantile(pooled, 0.95).item(),
        "last_token_share": statistics.fmean(shares) if shares else float("nan"),
        "sequence_reward_std": sequence_rewards.double().std(unbiased=False).item(),
    }


def prefix_signal_metrics(
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    token_rewards: Sequence[torch.Tensor],
    chosen_before_last: torch.Tensor | None = None,
    rejected_before_last: torch.Tensor | None = None,
) -> dict:
    """Figures from (P, S) prefix rewards of chosen and rejected (last column: the full responses) and every sequence's
    R3HF token rewards: prefix_accuracy, prefix_correlation, mean_prefix_accuracy (fractions < 1), r3hf_token_rewards,
    and with the (P,) rewards before each response's last token, accuracy_before_last_token."""
    steps = chosen.shape[1]
    final_c, final_r = chosen[:, -1].contiguous(), rejected[:, -1].contiguous()
    final = torch.cat([final_c, final_r])
    accuracy, correlation = [], []
    for s, fraction in enumerate(fractions(steps)):
        c, r = chosen[:, s].contiguous(), rejected[:, s].contiguous()
        accuracy.append({"fraction": fraction, "accuracy": preference_metrics(c, r)["accuracy"]})
        scores = torch.cat([c, r])
        correlation.append(
            {
                "fraction": fraction,
                "pearson": pearson(scores, final),
                "spearman": spearman(scores, final),
                "margin_pearson": pearson(c.double() - r.double(), final_c.double() - final_r.double()),
            }
        )
    metrics = {
        "n": int(chosen.shape[0]),
        "accuracy": accuracy[-1]["accuracy"],
        "prefix_accuracy": accuracy,
        "mean_prefix_accuracy": statistics.fmean(a["accuracy"] for a in accuracy[:-1]) if steps > 1 else float("nan"),
        "prefix_correlation": correlation,
        "r3hf_token_rewards": token_reward_spread(token_rewards, final),
    }
    if chosen_before_last is not None and rejected_before_last is not None:
        metrics["accuracy_before_last_token"] = preference_metrics(chosen_before_last, rejected_before_last)["accuracy"]
    return metrics


# ----------------------------------------------------------------------------------------------------------------------
# one forward pass per sequence


@dataclass
class PrefixScores:
    """Per pair (in dataset order): prefix rewards (P, steps) and response lengths; per sequence: R3HF token rewards."""

    index: torch.Tensor  # (P,) dataset indices of the pairs kept
    chosen: torch.Tensor  # (P, steps)
    rejected: torch.Tensor  # (P, steps)
    chosen_tokens: torch.Tensor  # (P,) response tokens
    rejected_tokens: torch.Tensor  # (P,)
    chosen_before_last: torch.Tensor  # (P,) R(x, y<n)
    rejected_before_last: torch.Tensor  # (P,)
    token_rewards: list[torch.Tensor]  # 2P: chosen of every pair, then rejected, in dataset order
    counts: dict[str, int]  # pairs, truncated, dropped


def score_prefixes(
    model,
    examples: list[PreferenceExample],
    max_length: int | None = EvalBatchingSpec.max_length,
    truncation: str = EvalBatchingSpec.truncation,
    batch_size: int = EvalBatchingSpec.batch_size,
    steps: int = STEPS,
    progress: bool = False,
    desc: str = "diagnose",
) -> PrefixScores:
    """Prefix rewards and token rewards of every pair from ONE forward pass per sequence, in eval-rm's batches."""
    pairs, counts = encode_pairs(model.tokenizer, examples, max_length, truncation)
    if not pairs:
        raise UserError("no pair left to evaluate after truncation")
    index, prefixes, lengths, tokens, before = [], [], [], [], []
    for batch in scored_pair_batches(model, pairs, batch_size, progress=progress, desc=desc):
        # read on the CPU, where the batch's masks are (gathers and differences: the same numbers on any device)
        scored = batch.scored
        positions, in_response, attention_mask = scored.position_rewards.cpu(), scored.in_response, scored.attention_mask
        start, n_tokens = first_token_index(in_response), in_response.sum(-1)
        prefix = prefix_rewards(positions, start, n_tokens, steps)
        # The full-length point is read exactly where eval-rm reads the reward (the batch's sequence rewards: the same
        # number as the last position's, taken from the same tensor eval-rm takes it from).
        prefix[:, -1] = scored.rewards.cpu()
        token = r3hf_rewards(positions, attention_mask, start)
        before.append(rewards_before_last(positions, attention_mask, start, n_tokens))
        index.append(batch.index)
        prefixes.append(prefix)
        lengths.append(n_tokens)
        tokens += [token[row][in_response[row]] for row in range(len(token))]
    b_sizes = [len(i) for i in index]
    chosen_rows, rejected_rows, chosen_len, rejected_len, chosen_tok, rejected_tok = [], [], [], [], [], []
    chosen_before, rejected_before = [], []
    offset = 0
    for b, prefix, n, last in zip(b_sizes, prefixes, lengths, before, strict=True):
        chosen_rows.append(prefix[:b])
        rejected_rows.append(prefix[b:])
        chosen_len.append(n[:b])
        rejected_len.append(n[b:])
        chosen_before.append(last[:b])
        rejected_before.append(last[b:])
        chosen_tok += tokens[offset : offset + b]
        rejected_tok += tokens[offset + b : offset + 2 * b]
        offset += 2 * b
    all_index = torch.cat(index)
    order = all_index.argsort()
    return PrefixScores(
        index=all_index[order],
        chosen=torch.cat(chosen_rows)[order],
        rejected=torch.cat(rejected_rows)[order],
        chosen_tokens=torch.cat(chosen_len)[order],
        rejected_tokens=torch.cat(rejected_len)[order],
        chosen_before_last=torch.cat(chosen_before)[order],
        rejected_before_last=torch.cat(rejected_before)[order],
        token_rewards=[chosen_tok[i] for i in order.tolist()] + [rejected_tok[i] for i in order.tolist()],
        counts=counts,
    )


def diagnose_set(model, examples: list[PreferenceExample], **kwargs) -> dict:
    """The diagnostic's figures for one preference set (see the module docstring), with response-length statistics."""
    scores = score_prefixes(model, examples, **kwargs)
    metrics = prefix_signal_metrics(
        scores.chosen, scores.rejected, scores.token_rewards, scores.chosen_before_last, scores.rejected_before_last
    )
    lengths = torch.cat([scores.chosen_tokens, scores.rejected_tokens]).tolist()
    metrics["response_tokens"] = {
        "min": min(lengths),
        "median": statistics.median(lengths),
        "mean": statistics.fmean(lengths),
        "max": max(lengths),
    }
    metrics["truncated"], metrics["dropped"] = scores.counts["truncated"], scores.counts["dropped"]
    return metrics


# ----------------------------------------------------------------------------------------------------------------------
# figure


def plot_prefix_signal(results: dict[str, dict], path: str | Path, title: str | None = None) -> None:
    """Three panels per run: prefix accuracy vs fraction (chance at 0.5), correlation of prefix and final scores (solid:
    sequences, dashed: margins), and the distribution of R3HF token rewards."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    for k, (name, m) in enumerate(results.items()):
        colour = f"C{k}"
        xs = [p["fraction"] for p in m["prefix_accuracy"]]
        axes[0].plot(xs, [p["accuracy"] for p in m["prefix_accuracy"]], marker="o", color=colour, label=f"{name} (n={m['n']})")
        axes[1].plot(xs, [p["pearson"] for p in m["prefix_correlation"]], marker="o", color=colour, label=f"{name}: scores")
        axes[1].plot(xs, [p["margin_pearson"] for p in m["prefix_correlation"]], ls="--", color=colour, label=f"{name}: margins")
        spread = m["r3hf_token_rewards"]
        axes[2].bar(k - 0.2, spread["std"], width=0.35, color=colour)
        axes[2].bar(k + 0.2, spread["sequence_reward_std"], width=0.35, color=colour, alpha=0.5, hatch="//")
    axes[0].axhline(0.5, color="grey", ls=":", lw=1)
    axes[0].set(xlabel="fraction of each response's tokens", ylabel="pairwise accuracy", title="prefix accuracy")
    axes[1].set(xlabel="fraction of each response's tokens", ylabel="Pearson r with the final", title="prefix vs final score")
    axes[2].set_xticks(range(len(results)), list(results), rotation=20)
    axes[2].set(ylabel="standard deviation", title="r3hf token rewards (solid), sequence rewards (hatched)")
    axes[2].title.set_fontsize(9)
    for ax in axes[:2]:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
