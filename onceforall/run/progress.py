"""Progress of long measurements (eval, search, latency tables, the demo) that reaches a log file.

Workflows report progress through a text callback (``say``) and, per measured subnet, an ``(i, n)`` callback.
:class:`Heartbeat` wraps a ``say``: it passes every line on and, from a background thread, adds a line when
nothing was said for ``every_s`` seconds (what is running and for how long), so a log file shows a working job
at least every 30 s however long one measurement takes. :func:`counter` turns ``(i, n)`` into lines: the first,
the last, and one every few seconds on a terminal (every 30 s in a log file) in between.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from types import TracebackType

__all__ = ["Heartbeat", "counter", "interval"]


def interval() -> float:
    """Seconds between progress lines: 2 on a terminal, 30 in a log file (stderr not a terminal)."""
    return 2.0 if sys.stderr.isatty() else 30.0


def counter(say: Callable[[str], None] | None, what: str, every_s: float | None = None) -> Callable[[int, int], None]:
    """An ``(i, n)`` callback that says ``  what: i/n`` for the first and last item and at most every
    ``every_s`` seconds (default :func:`interval`) in between; nothing when ``say`` is None."""
    every = interval() if every_s is None else every_s
    last = [-float("inf")]

    def tick(i: int, n: int) -> None:
        now = time.monotonic()
        if say is not None and (i in (1, n) or now - last[0] >= every):
            last[0] = now
            say(f"  {what}: {i}/{n}")

    return tick


class Heartbeat:
    """A ``say`` that also speaks when nothing was said for ``every_s`` seconds: ``  ... still at it (95 s):
    <the last line>``. Use as a context manager (the thread stops at its end)."""

    def __init__(self, say: Callable[[str], None], every_s: float = 30.0):
        self.say_to = say
        self.every_s = every_s
        self.lock = threading.Lock()
        self.last = self.since = time.monotonic()
        self.text = ""
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, name="onceforall-heartbeat", daemon=True)

    def __call__(self, text: str) -> None:
        with self.lock:
            self.say_to(text)
            now = time.monotonic()
            self.last = now
            if not text.startswith("  "):  # a new stage (counters and details keep the stage's start time)
                self.since = now
                self.text = text.strip().splitlines()[0][:100] if text.strip() else self.text

    def _beat(self) -> None:
        while not self.stop.wait(min(1.0, self.every_s / 4)):
            with self.lock:
                now = time.monotonic()
                if now - self.last >= self.every_s:
                    self.say_to(f"  ... still at it ({now - self.since:.0f} s): {self.text}")
                    self.last = now

    def __enter__(self) -> Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop.set()
        self.thread.join()
