"""`rewardlab demo`: the whole RLHF loop on the built-in world, offline."""

from __future__ import annotations

from rewardlab.commands.common import config_command, user_errors
from rewardlab.demo.config import DemoConfig
from rewardlab.progress import quiet_libraries


def run(cfg: DemoConfig) -> None:
    from rewardlab.demo import run_demo

    with user_errors():
        quiet_libraries()
        results = run_demo(cfg)
    for line in results["findings"]:
        print(f"- {line}")
    print(f"wrote {cfg.output_dir}/report.md, results.json and figures")


demo = config_command(
    DemoConfig,
    run,
    doc="Base policy -> preference data -> reward models (vanilla, margin, label smoothing, GRM) -> best-of-N -> PPO.",
    config_file=False,
    show_defaults=True,
    make=DemoConfig.make,
    name="demo",
)
