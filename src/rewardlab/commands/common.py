"""What every command shares: one-line user errors, quiet library logging, commands generated from config dataclasses."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import sys
import typing
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer

from rewardlab.config import (
    help_panel,
    is_setting,
    option_flags,
    option_type,
    resolve_config,
    without_none,
)
from rewardlab.errors import UserError


@contextmanager
def user_errors():
    """Turn a UserError into `error: ...` on stderr and exit code 1. Only that: any other exception is a bug in rewardlab
    and propagates with its traceback (a KeyError in our code must not read as bad input)."""
    try:
        yield
    except UserError as err:
        typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None


def normalization_record(rm) -> dict | None:
    """What outputs state about normalisation: the statistics used, or None when rewards are raw."""
    stats = getattr(rm, "normalization", None)
    return None if stats is None else stats.to_dict()


def echo(message: str) -> None:
    print(message, file=sys.stderr)


def named_inputs(model: str, specs: list[str]) -> list[str]:
    """A command's inputs as paths (the model, each NAME=SPEC data set): its outputs must lie apart from them."""
    from rewardlab.data.io import parse_named_spec

    return [model, *(parse_named_spec(spec)[1] for spec in specs)]


# ----------------------------------------------------------------------------------------------------------------------
# commands generated from a config dataclass


def config_option(f: dataclasses.Field, hint: Any, show_defaults: bool, panel: str | None = None) -> inspect.Parameter:
    """One typer option for one config field: flags, help, range and type from the field's declaration.

    Commands with `--config` leave an option's default at None (the field's default, or the YAML file's value, applies),
    so --help states defaults in the help text as it always has; `show_defaults` shows the field's own default instead
    (a field's own `show_default`, when set, wins). A positional field becomes an argument, an `envvar` one reads it.
    """
    meta = f.metadata
    kind = option_type(f, hint)
    show = show_defaults if meta.get("show_default") is None else meta["show_default"]
    if meta.get("required"):
        default: Any = ...
    elif show:
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    else:
        default = None
    # ranges and choices are checked on the resolved config (config.check_ranges), so a bad value reads the same from
    # every command, a YAML file and Python
    extra = {"metavar": meta["metavar"]} if meta.get("metavar") else {}
    if meta.get("positional"):
        option = typer.Argument(default, help=meta.get("help"), rich_help_panel=panel, **extra)
    else:
        extra |= {"envvar": meta["envvar"], "show_envvar": True} if meta.get("envvar") else {}
        option = typer.Option(default, *option_flags(f, kind is bool), help=meta.get("help"), rich_help_panel=panel, **extra)
    annotation = kind if default is not None else kind | None
    return inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation)


def fields_in_help_order(cls: type) -> list[dataclasses.Field]:
    """The command's own fields first, in declaration order (a restated mixin field where the class restates it), then
    the mixins' fields: a dataclass would list the mixins' first."""
    own = list(cls.__dict__.get("__annotations__", {}))
    by_name = {f.name: f for f in dataclasses.fields(cls) if is_setting(f)}
    return [by_name[name] for name in own if name in by_name] + [f for f in by_name.values() if f.name not in own]


def fields_in_panel_order(cls: type, panels: dict[str, str | None]) -> list[dataclasses.Field]:
    """The fields in help order, each panel's together: panels in the order a config's `help_panels` lists them, then
    in the order they first appear (typer shows a panel where its first option is)."""
    declared = [panel for klass in reversed(cls.__mro__) for panel in klass.__dict__.get("help_panels", {})]
    rank = {panel: i for i, panel in enumerate(dict.fromkeys([*declared, *panels.values()]))}
    return sorted(fields_in_help_order(cls), key=lambda f: rank[panels[f.name]])


def given_on_command_line(ctx: typer.Context, name: str) -> bool:
    # by name: typer may bring its own copy of click, whose ParameterSource is another enum than click's
    source = ctx.get_parameter_source(name)
    return source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT")


def config_command(
    cls: type,
    run: Callable[[Any], None],
    *,
    doc: str,
    config_file: bool = True,
    show_defaults: bool = False,
    convert: dict[str, Callable[[Any], Any]] | None = None,
    build: str | None = None,
    precheck: Callable[[Any], None] | None = None,
    make: Callable[..., Any] | None = None,
    name: str = "command",
) -> Callable[..., None]:
    """A typer command with one option per `setting` field of the dataclass `cls` (and `--config FILE.yaml` when
    config_file), that resolves defaults < YAML file < flags given on the command line into a config and calls `run(cfg)`.

    convert: field name -> function from the option's value to the field's (e.g. NAME=PATH entries -> a dict);
    make: builds the config from the resolved values instead of `cls(**values)` (the demo's quick and full sizes);
    name: the function's name (typer names a command added without a name after it: eval_rm -> eval-rm);
    build: "module:Class", a subclass of `cls` with the same fields to construct instead, imported only when the command
    runs (so that building the command line imports no trainer);
    precheck: run on the resolved settings before `build` is imported (cheap checks: the output path), so they fail fast.
    """
    hints = typing.get_type_hints(cls)
    convert = {f.name: as_field_value(hints[f.name]) for f in dataclasses.fields(cls)} | (convert or {})
    params = [inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context)]
    if config_file:
        help_text = f"YAML file with {build.split(':')[1] if build else cls.__name__} fields."
        option = typer.Option(None, "--config", help=help_text)
        params.append(inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, default=option, annotation=Path | None))
    panels = {f.name: help_panel(cls, f.name) for f in fields_in_help_order(cls)}
    params += [config_option(f, hints[f.name], show_defaults, panels[f.name]) for f in fields_in_panel_order(cls, panels)]

    def command(ctx: typer.Context, config: Path | None = None, **options: Any) -> None:
        with user_errors():
            given = {name: convert[name](value) for name, value in options.items() if given_on_command_line(ctx, name)}
            name = build.split(":")[1] if build else None  # what users call the settings (RewardTrainingConfig)
            # unknown keys, ranges and choices fail here, before a trainer is imported
            cfg = resolve_config(cls, config, given, name, make)
            if precheck is not None:
                precheck(cfg)
            if build:
                cfg = import_class(build)(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)})
        run(cfg)

    command.__signature__ = inspect.Signature(params)  # typer builds the options from this
    command.__doc__ = doc
    command.__name__ = command.__qualname__ = name
    return command


def import_class(spec: str) -> type:
    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name)


def plain(value: Any) -> Any:
    """A parsed option value as a config field holds it (paths as strings, repeated options as lists)."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def as_field_value(hint: Any) -> Callable[[Any], Any]:
    """How a parsed option's value becomes the field's: `plain`, except that a Path field keeps its Path."""
    return (lambda value: value) if without_none(hint) is Path else plain


def call_with_fields(function: Callable[..., None]) -> Callable[[Any], None]:
    """`run(cfg)` for a command whose body takes its settings as keyword arguments, one per field."""
    return lambda cfg: function(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)})
