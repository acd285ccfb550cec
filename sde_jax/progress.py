"""Progress of long jobs: a tqdm bar in a terminal, periodic log lines in job logs.

A :class:`Progress` follows one job (training steps, bits/dim units, sample chunks, Inception
batches) through absolute positions. When stderr is a terminal it draws a tqdm bar; otherwise
(CI, job logs, ``> file``) it logs lines such as::

    train: step 500/1500 (33%), 9.8 steps/s, ETA 1m42s
    train: 1500/1500 in 4m12s (9.1 steps/s)

The first update of a jitted job includes its compilation, so the clock of the rate starts
there: ``rate = (n - n_first) / (t - t_first)``. The first line comes as soon as a rate is
known (the second update), then one every ``log_every_s`` seconds, and a final line at
:meth:`Progress.close`. :func:`announce` logs a message (without breaking an open bar) and
:func:`announce_first_call` logs one before the first call of a function, so that no
compilation is a silent pause.
"""

import functools
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from absl import logging

from sde_jax import validation

_open_bars: list = []  # the tqdm bars of open interactive Progress objects


def format_seconds(seconds: float) -> str:
    """``12s``, ``1m42s``, ``2h05m``: a duration rounded to what a reader needs.

    Raises:
      ValueError: for a negative or non-finite ``seconds``.
    """
    seconds = validation.real("seconds", seconds)
    if seconds < 0:
        raise ValueError(f"seconds must be >= 0, got {seconds!r}.")
    total = round(seconds)
    if total < 60:
        return f"{total}s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _plural(unit: str) -> str:
    return unit + ("es" if unit.endswith(("s", "x", "ch", "sh")) else "s")


def _format_rate(rate: float, unit: str) -> str:
    """``9.8 steps/s``, or ``41.3 s/step`` below one per second."""
    if rate >= 1.0:
        return f"{rate:.1f} {_plural(unit)}/s"
    return f"{1.0 / rate:.1f} s/{unit}"


def announce(message: str, *args: Any) -> None:
    """Logs ``message % args`` at INFO, clearing and redrawing any open progress bar."""
    if not _open_bars:
        logging.info(message, *args)
        return
    bar = _open_bars[-1]
    with type(bar).external_write_mode(file=bar.fp):
        logging.info(message, *args)


def announce_first_call(fn: Callable, message: str, *args: Any) -> Callable:
    """``fn``, logging ``message % args`` before its first call ("Compiling the train step...").

    Wrap the jitted function itself (once), so a cached one announces only its first compile.
    """
    called = False

    @functools.wraps(fn)
    def wrapper(*fn_args, **fn_kwargs):
        nonlocal called
        if not called:
            called = True
            announce(message, *args)
        return fn(*fn_args, **fn_kwargs)

    return wrapper


class Progress:
    """The progress of one job, as a tqdm bar (interactive) or periodic log lines.

    Args:
      what: the job's name, the start of every line (``"train"``, ``"bits/dim"``).
      total: the position at which the job is done; None when unknown (no percent or ETA).
      unit: the singular name of one unit of work (``"step"``, ``"chunk"``).
      initial: the position at the start (units done before, e.g. by a resumed run).
      interactive: draw a tqdm bar instead of logging; None: whether stderr is a terminal.
      log_every_s: seconds between log lines after the first.
      clock: the time in seconds (monotonic); tests pass a fake one.
      file: where the bar is drawn; default stderr.

    Raises:
      ValueError: for a ``total`` < 1, an ``initial`` outside ``[0, total]``, a
        non-positive ``log_every_s`` or an empty ``what`` or ``unit``.
    """

    def __init__(
        self,
        what: str,
        total: int | None,
        *,
        unit: str = "step",
        initial: int = 0,
        interactive: bool | None = None,
        log_every_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        file: TextIO | None = None,
    ):
        for name, value in (("what", what), ("unit", unit)):
            if not isinstance(value, str) or not value:
                raise ValueError(f"{name} must be a non-empty string, got {value!r}.")
        self.total = None if total is None else validation.integer("total", total, minimum=1)
        self.initial = validation.integer("initial", initial, minimum=0, maximum=self.total)
        self.log_every_s = validation.positive("log_every_s", log_every_s)
        self.what, self.unit, self.clock, self.file = what, unit, clock, file
        self.interactive = sys.stderr.isatty() if interactive is None else bool(interactive)
        self.position = self.initial
        self.start = clock()
        self._first: tuple[int, float] | None = None  # (position, time) of the first update
        self._now = self.start
        self._last_line: float | None = None
        self._bar = None
        self._closed = False

    @property
    def rate(self) -> float | None:
        """Units per second since the first update (which holds the compilation); None before."""
        if self._first is None or self._now <= self._first[1] or self.position <= self._first[0]:
            return None
        return (self.position - self._first[0]) / (self._now - self._first[1])

    @property
    def eta_s(self) -> float | None:
        """Seconds until ``total`` at the current rate; None while unknown."""
        rate = self.rate
        if rate is None or self.total is None:
            return None
        return max(self.total - self.position, 0) / rate

    def update(self, position: int, note: str = "") -> None:
        """Records that the job reached ``position`` (absolute); ``note`` is shown beside it.

        A position past ``total`` counts as ``total`` (the last call of a loop may overshoot).

        Raises:
          ValueError: for a position below the previous one.
        """
        position = validation.integer("position", position, minimum=self.position)
        if self.total is not None:
            position = min(position, self.total)
        self.position, self._now = position, self.clock()
        if self._first is None:
            self._first = (position, self._now)
            if self.interactive:
                self._open_bar(position)
        if self.interactive:
            self._bar.update(position - self._bar.n)
            if note:
                self._bar.set_postfix_str(note, refresh=False)
            return
        due = self._last_line is None or self._now - self._last_line >= self.log_every_s
        done = self.total is not None and position >= self.total
        if due and not done and self.rate is not None:
            self._last_line = self._now
            logging.info("%s", self._line(note))

    def _open_bar(self, position: int) -> None:
        import tqdm

        self._bar = tqdm.tqdm(
            desc=self.what,
            total=self.total,
            initial=position,
            unit=self.unit,
            file=self.file,
            dynamic_ncols=True,
        )
        _open_bars.append(self._bar)

    def _line(self, note: str) -> str:
        where = f"{self.position}/{self.total}" if self.total is not None else f"{self.position}"
        parts = [f"{self.what}: {self.unit} {where}"]
        if self.total is not None:
            parts[0] += f" ({100 * self.position // self.total}%)"
        parts.append(_format_rate(self.rate, self.unit))
        if self.eta_s is not None:
            parts.append(f"ETA {format_seconds(self.eta_s)}")
        if note:
            parts.append(note)
        return ", ".join(parts)

    def close(self) -> None:
        """Ends the job: closes the bar, or logs the final line (once)."""
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
            _open_bars.remove(self._bar)
            return
        if self.interactive or self._first is None:
            return  # nothing was done: no line
        elapsed = format_seconds(max(self._now - self.start, 0.0))
        where = f"{self.position}/{self.total}" if self.total is not None else f"{self.position}"
        finished = self.total is None or self.position >= self.total
        head = f"{where} in {elapsed}" if finished else f"stopped at {where} after {elapsed}"
        rate = self.rate
        tail = f" ({_format_rate(rate, self.unit)})" if rate is not None else ""
        logging.info("%s: %s%s", self.what, head, tail)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
