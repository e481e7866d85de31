"""`rewardlab bon`: best-of-N over-optimisation curves for one or more proxy reward models against a gold scorer."""

from __future__ import annotations

from pathlib import Path

import typer

from rewardlab.commands.common import UserError, device_option, dtype_option, echo, quiet_libraries, user_errors


def parse_proxies(specs: list[str]) -> dict[str, str]:
    """`--proxy NAME=PATH` (or a bare PATH, named after its last component) -> {name: path}; names must be unique."""
    from rewardlab.data.io import parse_named_spec

    proxies: dict[str, str] = {}
    for spec in specs:
        name, path = parse_named_spec(spec)
        if name in proxies:
            raise UserError(f"--proxy: duplicate name '{name}' ({proxies[name]} and {path}); name them NAME=PATH")
        proxies[name] = path
    return proxies


def bon(
    policy: str = typer.Option("builtin", "--policy", help="'builtin' (the world's base policy), hub id or dir."),
    proxy: list[str] = typer.Option(..., "--proxy", help="Proxy reward model NAME=PATH; repeat for several."),
    gold: str = typer.Option("builtin", "--gold", help="Gold scorer: 'builtin' (the world's) or a reward model dir."),
    prompts: str = typer.Option("builtin", "--prompts", help="Prompt data (file or hub id), or builtin[:SPLIT]."),
    output: Path = typer.Option(..., "--output", help="Directory for samples, scores, curves.json and the plot."),
    n: int = typer.Option(256, "--n", min=1, help="Samples per prompt (the largest N)."),
    samples: Path | None = typer.Option(None, "--samples", help="Reuse a samples.jsonl instead of sampling."),
    max_new_tokens: int = typer.Option(32, "--max-new-tokens", min=1),
    temperature: float = typer.Option(0.7, "--temperature", min=0.0),
    top_p: float = typer.Option(0.95, "--top-p", min=0.0, max=1.0),
    seed: int = typer.Option(0, "--seed"),
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="Sequences per generate call."),
    score_batch_size: int = typer.Option(32, "--score-batch-size", min=1, help="Sequences per reward-model pass."),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Prompts to use (builtin: 64 by default)."),
    unbiased: bool = typer.Option(False, "--unbiased", help="Average over all N-subsets instead of the first N."),
    device: str | None = device_option(),
    dtype: str = dtype_option(),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Best-of-N: sample n responses per prompt once, pick the best of the first N by each proxy, report proxy and
    gold reward of the picks against KL_bon = log N - (N-1)/N, and fit Gao et al.'s R(d) = d (a - b d)."""
    from rewardlab.rl.bon import BonConfig, run_bon

    with user_errors():
        if samples is not None and not samples.exists():
            raise UserError(f"{samples}: no such samples file")
        cfg = BonConfig(
            policy=policy,
            proxies=parse_proxies(proxy),
            gold=gold,
            prompts=prompts,
            output_dir=str(output),
            n=n,
            samples=str(samples) if samples is not None else None,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
            batch_size=batch_size,
            score_batch_size=score_batch_size,
            limit=limit,
            unbiased=unbiased,
            device=device,
            dtype=dtype,
            progress=progress,
        )
        quiet_libraries()
        try:
            result = run_bon(cfg)
        except OSError as err:
            raise UserError(str(err).splitlines()[0]) from None
    for name, curve in result["curves"].items():
        best = max(range(len(curve["n"])), key=lambda i: curve["gold"][i])
        echo(
            f"{name}: gold {curve['gold'][0]:.4f} at N=1 -> {curve['gold'][-1]:.4f} at N={curve['n'][-1]} "
            f"(peak {curve['gold'][best]:.4f} at N={curve['n'][best]}); proxy {curve['proxy'][0]:.4f} -> "
            f"{curve['proxy'][-1]:.4f}"
        )
    echo(f"wrote {output}/curves.json, bon_curves.png, samples.jsonl, scores.jsonl, config.json")
