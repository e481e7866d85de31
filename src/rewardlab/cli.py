"""The `rewardlab` command line. It only wires: each command lives in `rewardlab.commands.<name>`."""

from __future__ import annotations

import typer

from rewardlab.commands.bon import bon
from rewardlab.commands.compare import compare
from rewardlab.commands.data import data_app
from rewardlab.commands.demo import demo
from rewardlab.commands.diagnose import diagnose
from rewardlab.commands.doctor import doctor
from rewardlab.commands.eval_rm import eval_rm
from rewardlab.commands.export import export
from rewardlab.commands.ppo import ppo
from rewardlab.commands.score import score
from rewardlab.commands.serve import serve
from rewardlab.commands.study import study
from rewardlab.commands.train_rm import train_rm

app = typer.Typer(
    name="rewardlab",
    help="The reward side of RLHF: GRM reward models, R3HF token rewards, best-of-N and PPO.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command("train-rm")(train_rm)
app.command("eval-rm")(eval_rm)
app.command("compare")(compare)
app.command("study")(study)
app.command("diagnose")(diagnose)
app.command("export")(export)
app.command("doctor")(doctor)
app.command("score")(score)
app.command("serve")(serve)
app.command("bon")(bon)
app.command("ppo")(ppo)
app.command("demo")(demo)
app.add_typer(data_app, name="data")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
