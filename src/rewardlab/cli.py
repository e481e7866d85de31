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
from rewardlab.commands.help import HelpCommand
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
app.command("train-rm", cls=HelpCommand)(train_rm)
app.command("eval-rm", cls=HelpCommand)(eval_rm)
app.command("compare", cls=HelpCommand)(compare)
app.command("study", cls=HelpCommand)(study)
app.command("diagnose", cls=HelpCommand)(diagnose)
app.command("export", cls=HelpCommand)(export)
app.command("doctor", cls=HelpCommand)(doctor)
app.command("score", cls=HelpCommand)(score)
app.command("serve", cls=HelpCommand)(serve)
app.command("bon", cls=HelpCommand)(bon)
app.command("ppo", cls=HelpCommand)(ppo)
app.command("demo", cls=HelpCommand)(demo)
app.add_typer(data_app, name="data")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
