"""Independent jobs (a study's cells, the demo's reward models and PPO runs) in worker processes.

Workers are spawned (not forked: a forked torch with threads already running can deadlock), each with an even share of the
cores as torch threads and the libraries' own progress bars quiet: the parent's bar reports the jobs.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Hashable
from concurrent.futures import ProcessPoolExecutor
from typing import Any


def _init_worker(threads: int) -> None:
    import torch

    from rewardlab.progress import quiet_libraries

    torch.set_num_threads(threads)
    quiet_libraries()  # a worker's library bars (loading, saving) would garble the parent's


def run_jobs(
    jobs: list[tuple[Hashable, Any, Any]], workers: int, on_done: Callable[[Any, dict], None], runner: Callable[[Any, Any], dict]
) -> None:
    """Run (key, config, shared) jobs as `runner(config, shared)`, one at a time in this process or in `workers` spawned
    processes (each with cores // workers torch threads), in the order given; `on_done(key, result)` sees each finished
    job as it finishes. `runner` is a module-level function (a spawned process imports it by name)."""
    if workers <= 1 or len(jobs) <= 1:
        for key, config, shared in jobs:
            on_done(key, runner(config, shared))
        return
    from concurrent.futures import as_completed

    with spawned_pool(workers, max(1, (os.cpu_count() or 1) // workers)) as pool:
        futures = {pool.submit(runner, config, shared): key for key, config, shared in jobs}
        for future in as_completed(futures):
            on_done(futures[future], future.result())


def run_in_process(fn: Callable[..., Any], *args: Any, threads: int = 1) -> Any:
    """`fn(*args)` in one spawned worker process with `threads` torch threads (a job that should not share this
    process's interpreter with the work it runs beside); returns its result. `fn` is a module-level function."""
    with spawned_pool(1, threads) as pool:
        return pool.submit(fn, *args).result()


def spawned_pool(workers: int, threads: int) -> ProcessPoolExecutor:
    """`workers` spawned processes, each with `threads` torch threads and the libraries' bars quiet."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    return ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=(threads,))
