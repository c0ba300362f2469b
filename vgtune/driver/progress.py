"""One progress line for a running sweep, in place of Tune's status table (which stays at `-v 2`).

    97/130 trials done (81 completed, 12 stopped, 4 diverged) · 2 running · 0:51 elapsed · at most 360

The design proposes trials as results arrive, so the line counts the trials proposed so far
and the most the design could run. On a terminal the line is rewritten in place every
`every` seconds, as tqdm does; in a log (not a terminal) it is printed as a plain line at
that interval.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any, TextIO

from ray import tune

from vgtune.driver.trial_members import of_trial

ORDER = ("completed", "stopped", "diverged", "error")  # STATUSES, in the order the progress line counts them


def _clock(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}" if minutes >= 60 else f"{minutes}:{secs:02d}"


def ended_as(trial) -> list[str | None]:
    """completed | stopped | diverged | error for each ended trial a Tune trial trains (itself, or each
    member of a pack), None for one pending or running."""
    return [m.status(trial.status) for m in of_trial(trial)]


def _scores(trial, metric: str) -> list[float]:
    values = [m.last.metrics.get(metric) for m in of_trial(trial) if m.last is not None]
    return [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]


def summary_line(trials: list, total: int, elapsed: float, metric: str, mode: str) -> str:
    """The progress line for `trials` (Tune's Trial objects) after `elapsed` seconds; `total`: the most trials the
    sweep's design can run."""
    states = [(t, s) for t in trials for s in ended_as(t)]
    ended = [s for _, s in states if s]
    counts = ", ".join(f"{ended.count(s)} {s}" for s in ORDER if ended.count(s))
    running = sum(t.status == "RUNNING" and s is None for t, s in states)
    scores = [v for t in trials for v in _scores(t, metric)]
    best = (max if mode == "max" else min)(scores) if scores else None
    parts = [f"{len(ended)}/{len(states)} trials done" + (f" ({counts})" if counts else ""), f"{running} running",
             f"{_clock(elapsed)} elapsed", f"at most {total}"]
    if best is not None:
        parts.append(f"best {metric} {best:.3f}")
    return " · ".join(parts)


class ProgressLine(tune.ProgressReporter):
    """A Tune progress reporter that prints `summary_line` at most every `every` seconds."""

    def __init__(self, total: int, metric: str, mode: str, every: float = 5.0, stream: TextIO | None = None):
        self.total = total  # the most trials the sweep's design can run
        self.metric = metric  # the spec's metric, for "best so far"
        self.mode = mode
        self.every = every  # seconds between lines
        self.stream = stream  # None: sys.stdout at the time of writing (the reporter is pickled with the run)
        self._start = time.monotonic()
        self._last = -math.inf
        self._width = 0

    def setup(self, start_time: float | None = None, **kwargs: Any) -> None:
        self._start = time.monotonic()

    def should_report(self, trials: list, done: bool = False) -> bool:
        return done or time.monotonic() - self._last >= self.every

    def report(self, trials: list, done: bool, *sys_info: str) -> None:
        self._last = time.monotonic()
        line = summary_line(trials, self.total, self._last - self._start, self.metric, self.mode)
        out = self.stream or sys.stdout
        if out.isatty():
            out.write("\r" + line.ljust(self._width) + ("\n" if done else ""))
            self._width = len(line)
        else:
            out.write(line + "\n")
        out.flush()
