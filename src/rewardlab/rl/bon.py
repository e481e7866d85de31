"""Best-of-N over-optimisation curves (Gao et al. 2022; the GRM paper's Fig. 3 setup).

    1. sample n responses per prompt ONCE from the policy (temperature 0.7, top-p 0.95) -> samples.jsonl
    2. score every sample with each proxy reward model and with the gold scorer           -> scores.jsonl
    3. for N on a geometric grid up to n: pick, per prompt, the best of the first N samples by the proxy; record the
       mean proxy and gold score of the picks, against KL_bon(N) = log N - (N - 1) / N (`kl`, the papers' axis) and the
       exact KL of best-of-N on each prompt's empirical sample distribution (`kl_empirical`)  -> curves.json
    4. fit R(d) = d (a - b d), d = sqrt(KL), to each curve normalised to start at 0      -> curves.json ("fit")
    5. plot proxy (dashed) and gold (solid) gains vs each KL, one colour per proxy       -> bon_curves.png

The analytic KL is exact only when the policy's responses never repeat; a small policy repeats itself a lot, and then
the real KL is far smaller (Beirami et al. 2024), which is why both are kept.

Over-optimisation shows as a gold curve that peaks and falls while its proxy keeps rising. Sampling once and reusing the
same samples for every proxy (`--samples`) makes the proxies' curves directly comparable.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from rewardlab.choices import STEP_AGGREGATIONS, Dtype, StepAggregation, listed
from rewardlab.config import PlacementSpec, RunSpec, check_ranges, restate, setting
from rewardlab.data.errors import DataError
from rewardlab.errors import UserError
from rewardlab.generation import SampleBatch, load_samples, sample, save_samples
from rewardlab.rl.bon_math import bon_curve, fit_gao_bon, n_grid, normalise_curve
from rewardlab.rl.scorers import Scorer, resolve_scorer
from rewardlab.rl.sources import BUILTIN, resolve_policy, resolve_prompts
from rewardlab.runtime import check_output_dir, claim_output_dir, seal_output_dir, version, write_json, write_jsonl


@dataclass
class BonConfig:
    """A best-of-N run; each field declared once with its help and flag (`rewardlab bon` is generated from them)."""

    help_panels: ClassVar[dict[str, tuple[str, ...]]] = {  # --help panels
        "Data": ("policy", "proxies", "gold", "step_aggregate", "prompts", "limit", "samples"),
        "Sampling": ("n", "max_new_tokens", "temperature", "top_p", "seed", "unbiased"),
        "Batching": ("batch_size", "score_batch_size"),
        "Run": ("output_dir", "overwrite", "device", "dtype", "progress"),
    }

    policy: str = setting(BUILTIN, help="'builtin' (the world's base policy), 'builtin-steps' (its step policy), hub id or dir.")
    proxies: dict[str, str] = setting(  # NAME -> reward model directory
        factory=dict,
        flags=("--proxy",),
        cli_type=list[str],
        required=True,
        help="Proxy reward model NAME=PATH; repeat for several.",
    )
    gold: str = setting(BUILTIN, help="Gold scorer: 'builtin' or 'builtin-steps' (the world's) or a reward model dir.")
    prompts: str = setting(BUILTIN, help="Prompt data (file or hub id), or builtin[:SPLIT] or builtin-steps[:SPLIT].")
    output_dir: str = restate(
        RunSpec,
        "output_dir",
        "runs/bon",
        flags=("--output",),
        cli_type=Path,
        required=True,
        help="Directory for samples, scores, curves.json and the plot.",
    )
    n: int = setting(256, flags=("--n",), min=1, help="Samples per prompt (the largest N).")
    samples: str | None = setting(None, cli_type=Path, help="Reuse a samples.jsonl instead of sampling.")
    max_new_tokens: int = setting(32, min=1)
    temperature: float = setting(0.7, min=0.0)
    top_p: float = setting(0.95, min=0.0, max=1.0)
    seed: int = restate(RunSpec, "seed")
    batch_size: int = setting(64, min=1, help="Sequences per generate call.")
    score_batch_size: int = setting(32, min=1, help="Sequences per reward-model pass.")
    limit: int | None = setting(None, min=1, help="Prompts to use (builtin: 64 by default).")
    unbiased: bool = setting(False, flags=("--unbiased",), help="Average over all N-subsets instead of the first N.")
    step_aggregate: StepAggregation = setting(
        "min",
        help=f"A process reward model (train-rm --objective prm) as a proxy or gold: a response's score from its steps' "
        f"P(correct), split on newlines: {listed(STEP_AGGREGATIONS, 'min')} (product: the chance every step is correct).",
    )
    # seed, output, device, progress, overwrite: RunSpec's, restated (not inherited: best-of-N has no bf16 autocast)
    device: str | None = restate(PlacementSpec, "device")
    dtype: Dtype = restate(PlacementSpec, "dtype")
    progress: bool = restate(RunSpec, "progress")
    overwrite: bool = restate(RunSpec, "overwrite", help="Replace an earlier rewardlab output at --output.")

    def validate(self, need_proxies: bool = True) -> None:
        """Every setting and the output directory, checked before any model loads (one line on a bad one)."""
        check_ranges(self)
        if need_proxies and not self.proxies:
            raise UserError("no proxy reward model: pass --proxy NAME=PATH (repeat for several)")
        for name in self.proxies:
            if not name:
                raise UserError("a proxy needs a name: --proxy NAME=PATH")
        check_output_dir(self.output_dir, overwrite=self.overwrite, inputs=self.input_paths(), flag="--output")

    def input_paths(self) -> list[str | None]:
        """What the run reads: the output directory must lie apart from each."""
        return [self.policy, self.gold, self.prompts, self.samples, *self.proxies.values()]


# ----------------------------------------------------------------------------------------------------------------------
# samples


def first_n_per_prompt(batch: SampleBatch, n: int, source: str = "<samples>") -> SampleBatch:
    """The first `n` samples of every prompt, prompt-major; a prompt with fewer than `n` is an error."""
    per_prompt: list[list] = [[] for _ in batch.prompts]
    for s in batch.samples:
        if len(per_prompt[s.prompt_index]) < n:
            per_prompt[s.prompt_index].append(s)
    short = [i for i, group in enumerate(per_prompt) if len(group) < n]
    if short:
        have = len(per_prompt[short[0]])
        raise DataError(f"prompt_index {short[0]} has {have} samples, fewer than --n {n}", file=source, field="prompt_index")
    samples = [s for group in per_prompt for s in group]
    return SampleBatch(prompts=batch.prompts, samples=samples, settings={**batch.settings, "n": n})


def score_matrix(scorer: Scorer, batch: SampleBatch, n: int) -> np.ndarray:
    """(prompts, n) scores of a prompt-major batch with exactly n samples per prompt."""
    scores = scorer.score(batch.prompts_of_samples(), batch.texts())
    return np.asarray(scores, dtype=np.float64).reshape(len(batch.prompts), n)


# ----------------------------------------------------------------------------------------------------------------------
# curves


def compute_curves(
    proxy_scores: dict[str, np.ndarray],
    gold_scores: np.ndarray,
    grid: list[int] | None = None,
    unbiased: bool = False,
    responses: list[list[str]] | None = None,
) -> dict[str, dict]:
    """Per proxy: the best-of-N curve (n, kl, d, proxy, gold, *_sem; kl_empirical with `responses`, the (prompts, n)
    response texts) and Gao fits of the normalised proxy and gold curves (on the analytic d = sqrt(kl)).

    The fit R(d) = d (a - b d) passes through 0 at d = 0, so it is fitted to the gains over N = 1 (Gao et al. 2022).
    """
    num_samples = gold_scores.shape[1]
    grid = grid or n_grid(num_samples)
    curves = {}
    for name, scores in proxy_scores.items():
        curve = bon_curve(scores, gold_scores, grid, unbiased=unbiased, responses=responses)
        curve["d"] = [math.sqrt(kl) for kl in curve["kl"]]
        fit = {}
        for key in ("proxy", "gold"):
            if len(grid) >= 2:
                a, b = fit_gao_bon(curve["d"], normalise_curve(curve[key]))
                fit[key] = {"a": a, "b": b}
            else:
                fit[key] = None  # one point: nothing to fit
        curves[name] = {**curve, "fit": fit}
    return curves


def plot_curves(curves: dict[str, dict], path: str | Path, title: str | None = None) -> None:
    """GRM-paper style: y = reward gain over N = 1, proxy dashed, gold solid, one colour per proxy; x = the analytic
    KL_bon (left panel, the papers' axis) and, when the curves have it, the empirical KL (right panel)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axes_keys = [("kl", "analytic KL_bon = log N - (N-1)/N\n(the papers' axis; an upper bound when samples repeat)")]
    if all("kl_empirical" in curve for curve in curves.values()):
        axes_keys.append(("kl_empirical", "empirical KL(best-of-N || policy)\n(exact on each prompt's sample distribution)"))
    fig, axes = plt.subplots(1, len(axes_keys), figsize=(5.5 * len(axes_keys), 4.3), sharey=True, squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (kl_key, label) in zip(axes[0], axes_keys, strict=True):
        for i, (name, curve) in enumerate(curves.items()):
            colour = colours[i % len(colours)]
            kl = np.asarray(curve[kl_key])
            for key, style in (("proxy", "--"), ("gold", "-")):
                gain = normalise_curve(curve[key])
                # No error bands: the stored s.e.m. are of the picked scores' levels across prompts, not of the gains.
                ax.plot(kl, gain, style, color=colour, marker="o", markersize=3, label=f"{name} ({key})")
        ax.axhline(0.0, color="grey", linewidth=0.6)
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("reward gain over N = 1")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title or "best-of-N: proxy (dashed) vs gold (solid)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def repetition_stats(texts: list[list[str]]) -> dict[str, float]:
    """How much a prompt's samples repeat, averaged over prompts: the fraction of samples that are distinct responses,
    and the share of the most common response (why the analytic KL overstates the real one)."""
    distinct = [len(set(row)) / len(row) for row in texts]
    top = [max(row.count(t) for t in set(row)) / len(row) for row in texts]
    return {"distinct_fraction": float(np.mean(distinct)), "top_response_share": float(np.mean(top))}


# ----------------------------------------------------------------------------------------------------------------------
# the run


@dataclass
class ScoredSamples:
    """n samples per prompt and their (prompts, n) score matrices: each proxy's and the gold scorer's."""

    batch: SampleBatch
    proxy: dict[str, np.ndarray]
    gold: np.ndarray
    output_dir: Path


def run_bon(
    cfg: BonConfig,
    *,
    policy=None,
    proxy_scorers: dict[str, Scorer] | None = None,
    gold_scorer: Scorer | None = None,
) -> dict:
    """Sample (or reuse samples), score, compute curves; write samples.jsonl, scores.jsonl, curves.json, config.json and
    bon_curves.png under cfg.output_dir. Returns the curves.json content.

    `policy` = (model, tokenizer) and the scorers may be passed in (tests, the demo); otherwise they come from the
    config.
    """
    return write_curves(cfg, sample_and_score(cfg, policy=policy, proxy_scorers=proxy_scorers, gold_scorer=gold_scorer))


def sample_and_score(
    cfg: BonConfig,
    *,
    policy=None,
    proxy_scorers: dict[str, Scorer] | None = None,
    gold_scorer: Scorer | None = None,
) -> ScoredSamples:
    """Steps 1 and 2: samples.jsonl and scores.jsonl in the claimed output directory; the score matrices returned."""
    cfg.validate(need_proxies=proxy_scorers is None)  # the output directory too: claimed once there is something to write

    # 1. n samples per prompt, once
    batch = bon_samples(cfg, policy)
    output_dir = claim_output_dir(cfg.output_dir, "bon", overwrite=cfg.overwrite, inputs=cfg.input_paths(), flag="--output")
    save_samples(output_dir / "samples.jsonl", batch)

    # 2. every sample scored by every proxy and by the gold scorer: (prompts, n) matrices
    if proxy_scorers is None:
        proxy_scorers = {name: _scorer(cfg, spec) for name, spec in cfg.proxies.items()}
    gold_scorer = gold_scorer if gold_scorer is not None else _scorer(cfg, cfg.gold)
    proxy_scores = {name: score_matrix(scorer, batch, cfg.n) for name, scorer in proxy_scorers.items()}
    gold_scores = score_matrix(gold_scorer, batch, cfg.n)
    write_jsonl(output_dir / "scores.jsonl", score_rows(batch, cfg.n, proxy_scores, gold_scores))
    return ScoredSamples(batch, proxy_scores, gold_scores, output_dir)


def write_curves(cfg: BonConfig, scored: ScoredSamples) -> dict:
    """Step 3, the best of the first N by each proxy, for N = 1, 2, 4, ..., n: proxy and gold score vs KL; curves.json,
    config.json and bon_curves.png written, the output directory sealed. Returns the curves.json content."""
    batch, gold_scores, output_dir = scored.batch, scored.gold, scored.output_dir
    texts = batch.texts()
    responses = [texts[p * cfg.n : (p + 1) * cfg.n] for p in range(len(batch.prompts))]
    curves = compute_curves(scored.proxy, gold_scores, unbiased=cfg.unbiased, responses=responses)
    result = {
        "num_prompts": len(batch.prompts),
        "samples_per_prompt": cfg.n,
        "selection": "unbiased" if cfg.unbiased else "first-n",
        "gold": cfg.gold,
        "proxy_specs": dict(cfg.proxies),
        "gold_mean": float(gold_scores.mean()),
        "eos_rate": float(np.mean([s.finished for s in batch.samples])),
        **repetition_stats(responses),
        "curves": curves,
    }
    write_json(output_dir / "curves.json", result)
    write_json(output_dir / "config.json", asdict(cfg) | {"sampling": batch.settings, "rewardlab_version": version()})
    plot_curves(curves, output_dir / "bon_curves.png")
    seal_output_dir(output_dir)
    return result


def bon_samples(cfg: BonConfig, policy=None) -> SampleBatch:
    """cfg.n samples per prompt: reused from cfg.samples (the first n of each prompt), or drawn from the policy."""
    if cfg.samples is not None:
        batch = first_n_per_prompt(load_samples(cfg.samples), cfg.n, cfg.samples)
        if cfg.limit is not None:
            keep = min(cfg.limit, len(batch.prompts))
            batch = SampleBatch(batch.prompts[:keep], batch.samples[: keep * cfg.n], batch.settings)
        return batch
    prompts = resolve_prompts(cfg.prompts, limit=cfg.limit, seed=cfg.seed, default_count=64)
    model, tokenizer = policy if policy is not None else resolve_policy(cfg.policy, device=cfg.device, dtype=cfg.dtype)
    return sample(
        model,
        tokenizer,
        prompts,
        n=cfg.n,
        max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        progress=cfg.progress,
    )


def _scorer(cfg: BonConfig, spec: str) -> Scorer:
    return resolve_scorer(
        spec, device=cfg.device, dtype=cfg.dtype, batch_size=cfg.score_batch_size, step_aggregate=cfg.step_aggregate
    )


def score_rows(batch: SampleBatch, n: int, proxy_scores: dict[str, np.ndarray], gold_scores: np.ndarray) -> list[dict]:
    """One scores.jsonl row per sample: its prompt and sample index, gold and every proxy's score."""
    rows = []
    for k, s in enumerate(batch.samples):
        p, j = divmod(k, n)
        rows.append(
            {
                "prompt_index": s.prompt_index,
                "sample_index": j,
                "gold": float(gold_scores[p, j]),
                **{f"proxy/{name}": float(scores[p, j]) for name, scores in proxy_scores.items()},
            }
        )
    return rows
