"""One background thread that runs tracking writes in order, retrying with backoff.

Tune calls its callbacks on the driver's event loop and a trial's
`tune.report` waits for that loop, so a slow MLflow write would stall every
worker. The tracker hands its writes to this thread instead: the loop returns
at once, writes still happen one at a time (a single SQLite writer), and a
tracking server that is briefly away (restarted, say) costs retries, not runs.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

log = logging.getLogger("vgtune.tracking")


class TrackingError(RuntimeError):
    """The tracking store could not be written at all (raised after the sweep, by `flush_all`)."""


class Unavailable(Exception):
    """Raised by a write that cannot succeed however often it is retried (recorded, not retried)."""


class BackgroundWriter:
    def __init__(self, retries: int = 8, backoff: float = 0.5, max_delay: float = 30.0):
        self.retries = retries  # attempts after the first failure
        self.backoff = backoff  # first delay, doubled after every failure
        self.max_delay = max_delay  # cap on one delay (seconds)
        self.failures: list[str] = []  # writes given up on, with the last error
        self._queue: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="vgtune-mlflow-writer", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[], None]) -> None:
        self._queue.put(fn)

    def flush(self) -> None:
        """Block until every submitted write has run (or been given up)."""
        self._queue.join()

    def close(self) -> None:
        self.flush()
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        while True:
            fn = self._queue.get()
            try:
                if fn is None:
                    return
                self._run(fn)
            finally:
                self._queue.task_done()

    def _run(self, fn: Callable[[], None]) -> None:
        delay = self.backoff
        for attempt in range(self.retries + 1):
            try:
                fn()
                return
            except Exception as exc:  # a write must never take the sweep down
                if attempt == self.retries or isinstance(exc, Unavailable):
                    self.failures.append(f"{getattr(fn, '__name__', 'write')}: {exc}")
                    log.warning("giving up on an MLflow write after %d attempts: %s", attempt + 1, exc)
                    return
                log.warning("MLflow write failed (%s); retrying in %.1fs", exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, self.max_delay)
