"""`rewardlab serve`: an HTTP reward server (/score, OpenRLHF's /get_reward) with request batching."""

from __future__ import annotations

import typer

from rewardlab.commands.common import aggregate_option, device_option, dtype_option, normalize_option
from rewardlab.errors import UserError
from rewardlab.redistribution import DEFAULT_ABC_BETA, DEFAULT_BETA_C
from rewardlab.runtime import API_KEY_ENV


def serve(
    model: str = typer.Option(..., "--model", help="Reward model directory (saved by rewardlab), or 'tiny-llama'."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on (0.0.0.0 for all)."),
    port: int = typer.Option(8000, "--port"),
    max_batch_size: int = typer.Option(16, "--max-batch-size", help="Sequences per forward pass."),
    max_length: int = typer.Option(
        4096, "--max-length", help="Longer sequences are truncated keeping their end (counted, logged)."
    ),
    max_body_bytes: int = typer.Option(
        8 * 1024 * 1024, "--max-body-bytes", help="Largest request body (else 413); default 8 MiB."
    ),
    api_key: str | None = typer.Option(
        None,
        "--api-key",
        envvar=API_KEY_ENV,
        show_envvar=True,
        help="Require 'Authorization: Bearer <key>' on every path but /health (prefer the environment variable).",
    ),
    beta_c: float = typer.Option(DEFAULT_BETA_C, "--beta-c", help="Default mix weight (a request may override it)."),
    abc_beta: float = typer.Option(DEFAULT_ABC_BETA, "--abc-beta", help="Default abc weight (a request may override it)."),
    aggregate: str | None = aggregate_option(),
    normalize: bool = normalize_option(),
    device: str | None = device_option(),
    dtype: str = dtype_option(),
    log_level: str = typer.Option("info", "--log-level"),
) -> None:
    """Serve a reward model over HTTP: POST /score, POST /get_reward (OpenRLHF), GET /health."""
    from rewardlab.commands.common import check_at_least, echo, user_errors
    from rewardlab.progress import quiet_libraries

    with user_errors():  # settings first: they fail in a second, before anything loads
        check_at_least("--port", port, 0)
        if port > 65535:
            raise UserError(f"--port {port}: must be <= 65535")
        check_at_least("--max-batch-size", max_batch_size, 1)
        check_at_least("--max-length", max_length, 2)
        check_at_least("--max-body-bytes", max_body_bytes, 1)

    from rewardlab.modeling.loader import load_for_scoring
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
