"""Progress that reaches a log file: of training (the progress line, the averages of a log row) and of long
measurements (eval, search, latency tables, the demo).

Training: :class:`Progress` draws a live bar on a terminal and writes a flushed line every 30 s (and at each epoch
end) to a log file; :func:`progress_text` is that line, :class:`LogWindow` the averages a ``step`` row of
metrics.jsonl reports.

Workflows report progress through a text callback (``say``) and, per measured subnet, an ``(i, n)`` callback.
:class:`Heartbeat` wraps a ``say``: it passes every line on and, from a background thread, adds a line when
nothing was said for ``every_s`` seconds (what is running and for how long), so a log file shows a working job
at least every 30 s however long one measurement takes. :func:`counter` turns ``(i, n)`` into lines: the first,
the last, and one every few seconds on a terminal (every 30 s in a log file) in between.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime
from types import TracebackType
from typing import Any

__all__ = ["Heartbeat", "LogWindow", "Progress", "counter", "eta", "interval", "progress_text"]


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


class Progress:
    """Progress on stderr: a live one-line bar on a terminal; in a log file (not a terminal) a flushed line every
    ``every_s`` seconds and at every epoch end, so a log shows a working run. ``mode`` off: nothing."""

    def __init__(self, mode: str, enabled: bool, every_s: float = 30.0):
        self.on = enabled and mode != "off"
        self.bar = self.on and (mode == "on" or sys.stderr.isatty())
        self.every_s = every_s
        self.last = -float("inf")

    def update(self, text: str, *, epoch_end: bool = False) -> None:
        if not self.on:
            return
        if self.bar:
            sys.stderr.write("\r" + text[:160].ljust(160))
        else:
            now = time.monotonic()
            if not epoch_end and now - self.last < self.every_s:
                return
            self.last = now
            sys.stderr.write(f"[{datetime.now().strftime('%H:%M:%S')}] {text}\n")
        sys.stderr.flush()

    def done(self) -> None:
        if self.bar:
            sys.stderr.write("\n")

    def busy(self, what: str) -> contextlib.AbstractContextManager:
        """While a long pause of the steps runs (validation), a log file still gets a line every ``every_s``."""
        if not self.on or self.bar:
            return contextlib.nullcontext()
        beat = Heartbeat(lambda text: print(f"[{datetime.now().strftime('%H:%M:%S')}] {text.strip()}",
                                            file=sys.stderr, flush=True), every_s=self.every_s)
        beat.text = what  # said only if it takes longer than every_s
        return beat


def eta(seconds_so_far: float, steps_done: int, steps_left: int) -> str:
    """Remaining time at the pace so far, as 1h02m / 3m05s / 12s."""
    if steps_done <= 0:
        return "?"
    left = round(seconds_so_far / steps_done * steps_left)
    h, rest = divmod(left, 3600)
    m, sec = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{sec:02d}s" if m else f"{sec}s")


def progress_text(t: int, spe: int, epochs: int, total: int, eps: float, lr: float, row: dict[str, Any],
                  eta_text: str) -> str:
    """The progress line after step ``t``: loss (the full model's, else the first role's: OFA-PS's expand phases
    train no full pass) and throughput only once measured, never as ``nan`` or ``0 img/s``."""
    losses = [k for k in row if k.startswith("loss_")]
    key = "loss_full" if "loss_full" in row else (losses[0] if losses else None)
    loss = f" {key.replace('_full', '')} {row[key]:.3f}" if key else ""
    speed = f" {row['img_per_s']:.0f} img/s" if row.get("img_per_s") else ""
    return (f"epoch {t / spe:6.2f}/{epochs} step {t}/{total}{loss} eps {eps:.3g} lr {lr:.3g}{speed} "
            f"ETA {eta_text}")


class LogWindow:
    """Averages of the losses, throughput and data-wait share since the last step row."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.losses: dict[str, list[float]] = {}
        self.seconds = self.wait = 0.0
        self.images = 0

    def add(self, losses: dict[str, float], seconds: float, wait: float, images: int) -> None:
        for k, v in losses.items():
            self.losses.setdefault(k, []).append(v)
        self.seconds += seconds
        self.wait += wait
        self.images += images

    def peek(self) -> dict[str, float]:
        """The averages so far, without starting a new window (for the progress line before the first row)."""
        row = {f"loss_{k}": sum(v) / len(v) for k, v in self.losses.items()}
        if self.seconds:
            row["img_per_s"] = self.images / self.seconds
        return row

    def flush(self) -> dict[str, float]:
        row = {f"loss_{k}": round(sum(v) / len(v), 5) for k, v in self.losses.items()}
        row["img_per_s"] = round(self.images / self.seconds, 2) if self.seconds else 0.0
        row["data_wait"] = round(self.wait / self.seconds, 4) if self.seconds else 0.0
        self.reset()
        return row
