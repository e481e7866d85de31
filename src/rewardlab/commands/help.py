"""--help that reads at 80 columns: every command is a `HelpCommand`.

typer lays an options panel out as a table of six columns: the option, its short form, the `--no-` form of a switch, that
one's short form, the type and the help. One switch with long names in a panel (`--gradient-checkpointing` and
`--no-gradient-checkpointing`) takes 55 of 80 columns, so rich squeezes the table: option names are cut
(`--gradient-checkpo...`) and the help wraps to ~10-20 characters. A `HelpCommand` shows a switch's two forms stacked in
the option's own column while it writes its help, which leaves the help about half the width. Option names are never cut
as long as a panel's longest name and type leave the help some room; the settings' panels (rewardlab.config.help_panel)
keep each table short.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import click
from typer.core import TyperCommand


class HelpCommand(TyperCommand):
    """A typer command whose --help stacks a switch's `--x` and `--no-x` in one column (see the module docstring)."""

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        if self.rich_markup_mode is None:  # click's own layout: names and help on separate lines already
            return super().format_help(ctx, formatter)
        with stacked_switches(self.params):
            return super().format_help(ctx, formatter)


@contextmanager
def stacked_switches(params: Sequence[click.Parameter]) -> Iterator[None]:
    """While the block runs, each switch (`--x/--no-x`) has one option string, its forms on two lines, and no secondary
    ones; restored after (parsing never sees the change: it happens inside --help only)."""
    saved = []
    for param in params:
        if getattr(param, "secondary_opts", None):  # by attribute: typer may bring its own copy of click
            saved.append((param, param.opts, param.secondary_opts))
            param.opts = ["\n".join([*param.opts, *param.secondary_opts])]
            param.secondary_opts = []
    try:
        yield
    finally:
        for param, opts, secondary in saved:
            param.opts, param.secondary_opts = opts, secondary
