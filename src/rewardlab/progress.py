"""Progress reports for every loop rewardlab runs, made in one place: `progress(...)`.

On a terminal (or in a notebook) it is a tqdm bar, as before. When stderr is not a terminal (a log file, a pipe, CI) a bar
would write every update joined by carriage returns (the quick demo wrote 190 KB of them); there a loop writes a plain line
each time it passes another `every` percent (10 by default: at most ~11 lines for any loop) and one at its end. Disabled
(`--no-progress`), it writes nothing.

    for batch in progress(loader, desc="scoring", enabled=show):
        ...
    bar = progress(total=steps, desc="train-rm", enabled=show)
    bar.update(1); bar.set_postfix(loss="0.123"); bar.close()

`write(message)` prints a line without breaking a bar that is being drawn (tqdm.write).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import IO, Any

from tqdm import tqdm as std_tqdm

DEFAULT_EVERY = 10  # percent between two plain lines
PLAIN_FORMAT = "{percentage:3.0f}% {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"
PLAIN_FORMAT_NO_TOTAL = "{n_fmt} [{elapsed}, {rate_fmt}{postfix}]"


def progress(
    iterable: Iterable | None = None,
    *,
    total: float | None = None,
    desc: str | None = None,
    enabled: bool = True,
    leave: bool = True,
    initial: float = 0,
    unit: str = "it",
    every: float = DEFAULT_EVERY,
    file: IO[str] | None = None,
) -> Any:
    """A progress report over `iterable` (or one advanced with `.update(n)` up to `total`): a tqdm bar when `file` (default
    stderr) is a terminal or a notebook shows it, plain lines every `every` percent when it is not, nothing when disabled.

    Whatever it returns iterates like `iterable` and has tqdm's update / set_postfix / set_description / close.
    """
    file = sys.stderr if file is None else file
    if not enabled:
        return std_tqdm(iterable, total=total, disable=True)
    if is_terminal(file) or in_notebook():
        from tqdm.auto import tqdm

        return tqdm(iterable, total=total, desc=desc, leave=leave, initial=initial, unit=unit, file=file, dynamic_ncols=True)
    return PlainProgress(iterable, total=total, desc=desc, initial=initial, unit=unit, every=every, file=file)


def write(message: str, file: IO[str] | None = None) -> None:
    """Print a line (to stdout unless `file`) without breaking a progress bar on the terminal."""
    std_tqdm.write(message, file=file)


def is_terminal(file: IO[str]) -> bool:
    isatty = getattr(file, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed file
        return False


def in_notebook() -> bool:
    """True under Jupyter, where tqdm.auto draws a widget (stderr is no terminal there, but the widget is fine)."""
    if "IPython" not in sys.modules:  # cheap: a notebook has IPython imported long before us
        return False
    import warnings

    with warnings.catch_warnings():  # autonotebook warns that it picked the notebook bar, which is what we ask
        warnings.simplefilter("ignore")
        from tqdm.autonotebook import tqdm as notebook_tqdm
    return notebook_tqdm is not std_tqdm


class PlainProgress:
    """Progress for a log: one line each time the count passes another `every` percent of `total` and one at the end (a
    line at the end only when the total is unknown). No carriage returns, no redrawing."""

    def __init__(
        self,
        iterable: Iterable | None = None,
        *,
        total: float | None = None,
        desc: str | None = None,
        initial: float = 0,
        unit: str = "it",
        every: float = DEFAULT_EVERY,
        file: IO[str],
    ) -> None:
        if total is None and iterable is not None:
            try:
                total = len(iterable)  # type: ignore[arg-type]
            except TypeError:  # a generator
                total = None
        if every <= 0:
            raise ValueError(f"every must be > 0 percent, got {every}")
        self.iterable, self.total, self.desc, self.unit, self.every, self.file = iterable, total, desc or "", unit, every, file
        self.n = initial
        self.postfix: str | None = None
        self.start = time.monotonic()
        self.reported_step = self._step()  # a resumed loop starts counting from where it stands
        self.reported_n: float | None = initial if initial else None
        self.closed = False

    def __iter__(self) -> Iterator:
        if self.iterable is None:
            raise TypeError("nothing to iterate: this progress was made without an iterable")
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __len__(self) -> int:
        return int(self.total or 0)

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: float = 1) -> None:
        self.n += n
        step = self._step()
        if step > self.reported_step:
            self.reported_step = step
            self._report()

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True, **kwargs: Any) -> None:
        values = dict(ordered_dict or {}) | kwargs
        self.postfix = ", ".join(f"{key}={value}" for key, value in values.items()) or None

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = s or None

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        self.desc = desc or ""

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.reported_n != self.n:
            self._report()

    def line(self) -> str:
        """The progress as one line of text (tqdm's meter, without the bar)."""
        known = self.total is not None and self.total > 0
        meter = std_tqdm.format_meter(
            self.n,
            self.total if known else None,
            time.monotonic() - self.start,
            unit=self.unit,
            postfix=self.postfix,
            bar_format=PLAIN_FORMAT if known else PLAIN_FORMAT_NO_TOTAL,
        )
        return f"{self.desc}: {meter}" if self.desc else meter

    def _step(self) -> int:
        """How many `every`-percent steps of the total the count has passed (0 when the total is unknown)."""
        if not self.total or self.total <= 0:
            return 0
        return int(100 * min(self.n, self.total) / self.total // self.every)

    def _report(self) -> None:
        self.reported_n = self.n
        print(self.line(), file=self.file, flush=True)


def quiet_libraries() -> None:
    """transformers/datasets chatter (load reports, shard bars) hides our own progress; keep errors only."""
    import warnings

    import huggingface_hub
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    huggingface_hub.utils.logging.set_verbosity_error()  # retries of an unreachable hub: the one-line error says it
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")  # peft calling a renamed transformers API
    try:
        import datasets

        datasets.logging.set_verbosity_error()
    except ImportError:  # pragma: no cover
        pass
