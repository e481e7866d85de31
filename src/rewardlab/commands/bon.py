"""`rewardlab bon`: best-of-N over-optimisation curves for one or more proxy reward models against a gold scorer."""

from __future__ import annotations

from pathlib import Path

from rewardlab.commands.common import config_command, echo, user_errors
from rewardlab.errors import UserError
from rewardlab.progress import quiet_libraries
from rewardlab.rl.bon import BonConfig


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


def run(cfg: BonConfig) -> None:
    from rewardlab.rl.bon import run_bon

    with user_errors():
        if cfg.samples is not None and not Path(cfg.samples).exists():
            raise UserError(f"{cfg.samples}: no such samples file")
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
    echo(f"wrote {cfg.output_dir}/curves.json, bon_curves.png, samples.jsonl, scores.jsonl, config.json")


bon = config_command(
    BonConfig,
    run,
    doc="Best-of-N: sample n responses per prompt once, pick the best of the first N by each proxy, report proxy and\n"
    "    gold reward of the picks against KL_bon = log N - (N-1)/N, and fit Gao et al.'s R(d) = d (a - b d).",
    config_file=False,
    show_defaults=True,
    convert={"proxies": parse_proxies},
    name="bon",
)
