"""`rewardlab demo`: the whole RLHF loop on the built-in world, offline."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rewardlab.commands.common import config_command, user_errors
from rewardlab.config import DemoSpec
from rewardlab.progress import quiet_libraries

if TYPE_CHECKING:
    from rewardlab.demo.config import DemoConfig


def make_config(**values) -> DemoConfig:
    """The demo's config from its options: the full or quick sizes (imported only when the demo runs)."""
    from rewardlab.demo.config import DemoConfig

    return DemoConfig.make(**values)


def run(cfg: DemoConfig) -> None:
    from rewardlab.demo import run_demo

    with user_errors():
        quiet_libraries()
        results = run_demo(cfg)
    for line in results["findings"]:
        print(f"- {line}")
    print(f"wrote {cfg.output_dir}/report.md, results.json and figures")


demo = config_command(
    DemoSpec,
    run,
    doc="Base policy -> preference data -> reward models (vanilla, margin, label smoothing, GRM) -> best-of-N -> PPO.",
    config_file=False,
    show_defaults=True,
    make=make_config,
    name="demo",
)
