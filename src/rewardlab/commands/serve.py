"""`rewardlab serve`: an HTTP reward server (/score, OpenRLHF's /get_reward) with request batching."""

from __future__ import annotations

from dataclasses import dataclass

from rewardlab.commands.common import call_with_fields, config_command
from rewardlab.config import AggregateSpec, NormalizeSpec, PlacementSpec, setting
from rewardlab.errors import UserError
from rewardlab.redistribution import DEFAULT_ABC_BETA, DEFAULT_BETA_C
from rewardlab.runtime import API_KEY_ENV


@dataclass(kw_only=True)
class ServeConfig(PlacementSpec, NormalizeSpec, AggregateSpec):
    """`rewardlab serve`'s settings (the command is generated from them; their ranges are checked before anything
    loads)."""

    model: str = setting(required=True, help="Reward model directory (saved by rewardlab), or 'tiny-llama'.")
    host: str = setting("127.0.0.1", help="Interface to listen on (0.0.0.0 for all).")
    port: int = setting(8000, min=0, max=65535, help="Port to listen on (0: any free one).")
    max_batch_size: int = setting(16, min=1, help="Sequences per forward pass.")
    max_length: int = setting(4096, min=2, help="Longer sequences are truncated keeping their end (counted, logged).")
    max_body_bytes: int = setting(8 * 1024 * 1024, min=1, help="Largest request body (else 413); default 8 MiB.")
    api_key: str | None = setting(
        None,
        envvar=API_KEY_ENV,
        help="Require 'Authorization: Bearer <key>' on every path but /health (prefer the environment variable).",
    )
    beta_c: float = setting(DEFAULT_BETA_C, help="Default mix weight (a request may override it).")
    abc_beta: float = setting(DEFAULT_ABC_BETA, help="Default abc weight (a request may override it).")
    log_level: str = setting("info", help="uvicorn's log level.")


def run(
    *,
    model: str,
    host: str,
    port: int,
    max_batch_size: int,
    max_length: int,
    max_body_bytes: int,
    api_key: str | None,
    beta_c: float,
    abc_beta: float,
    aggregate: str | None,
    normalize: bool,
    device: str | None,
    dtype: str,
    log_level: str,
) -> None:
    """`rewardlab serve` on its resolved settings (ServeConfig's fields)."""
    from rewardlab.commands.common import echo, user_errors
    from rewardlab.modeling.loader import load_for_scoring
    from rewardlab.progress import quiet_libraries
    from rewardlab.serve import require_serve_extra, run_server

    with user_errors():
        try:
            require_serve_extra()
        except ImportError as err:
            raise UserError(str(err)) from None
        quiet_libraries()
        rm = load_for_scoring(model, device, dtype, aggregate=aggregate, normalize=normalize)
    if rm.normalization is not None:
        stats = rm.normalization
        echo(f"serving normalised rewards: (r - {stats.mean:+.4f}) / {stats.std:.4f} (statistics of {stats.source})")
    run_server(
        rm,
        host=host,
        port=port,
        log_level=log_level,
        max_batch_size=max_batch_size,
        max_length=max_length,
        max_body_bytes=max_body_bytes,
        api_key=api_key,
        beta_c=beta_c,
        abc_beta=abc_beta,
        model_name=model,
    )


serve = config_command(
    ServeConfig,
    call_with_fields(run),
    doc="Serve a reward model over HTTP: POST /score, POST /get_reward (OpenRLHF), GET /health.",
    config_file=False,
    show_defaults=True,
    name="serve",
)
