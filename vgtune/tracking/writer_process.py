"""A child process that owns the sweep's `RunLogger` and makes its MLflow writes, in order, with retries.

Tune calls its callbacks on the driver's event loop, and a trial's `tune.report`
waits for that loop; the driver is also the one process every trial of a cluster
passes through. So the tracker only hands each write over: a feeder thread
pickles `(method, args)` into a pipe, and this module, run as
`python -m vgtune.tracking.writer_process`, calls `RunLogger.method(*args)` in its own process:
the SQL inserts and the per-trial plot cost the driver nothing. Writes still
happen one at a time (SQLite sees a single writer), and a tracking server that
is briefly away (restarted, say) costs retries, not runs.

The writer runs in its own session and ignores SIGINT and SIGTERM, so Ctrl-C at a
terminal or a job's SIGTERM stops the sweep, not the writes that record it; it
exits when the driver closes the pipe.
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import pickle
import queue
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from vgtune.tracking.store import TrackingError, Unavailable

log = logging.getLogger("vgtune.tracking")
IGNORED = {signal.SIGINT, signal.SIGTERM}  # the writer's end is the driver's call
STATE = ("parent_run_id", "exp_id", "counts", "finished_before")  # what a flush reports of the RunLogger


def retry(fn: Callable[[], None], name: str, failures: list[str], retries: int = 8, backoff: float = 0.5,
          max_delay: float = 30.0) -> None:
    """Run `fn`, retrying with doubling delays; a write given up on is appended to `failures`, never raised."""
    delay = backoff
    for attempt in range(retries + 1):
        try:
            fn()
            return
        except Exception as exc:  # a write must never take the sweep down
            if attempt == retries or isinstance(exc, Unavailable):
                failures.append(f"{name}: {exc}")
                log.warning("giving up on an MLflow write after %d attempts: %s", attempt + 1, exc)
                return
            log.warning("MLflow write failed (%s); retrying in %.1fs", exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, max_delay)


class WriterProcess:
    """The driver's end: `submit` returns at once; `flush` waits for every write so far and returns the
    logger's state (`STATE`, plus `failures`: the writes given up on)."""

    def __init__(self, logger_args: tuple, retries: int = 8, backoff: float = 0.5, max_delay: float = 30.0):
        req_read, req_write = os.pipe()
        rep_read, rep_write = os.pipe()
        # Started with the signals it ignores blocked, so that one arriving while it starts waits for `main`.
        held = signal.pthread_sigmask(signal.SIG_BLOCK, IGNORED)
        try:
            self._proc = subprocess.Popen([sys.executable, "-m", __name__, str(req_read), str(rep_write)],
                                          pass_fds=(req_read, rep_write), stdin=subprocess.DEVNULL,
                                          start_new_session=True)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
        os.close(req_read)
        os.close(rep_write)
        self._requests = os.fdopen(req_write, "wb")
        self._replies = rep_read
        self._queue: queue.Queue[tuple | None] = queue.Queue()
        self._tokens = itertools.count()
        self.state: dict[str, Any] = {"failures": []}  # as of the last flush
        self._feeder = threading.Thread(target=self._feed, name="vgtune-writer-feeder", daemon=True)
        self._feeder.start()
        self._queue.put(("__init__", (logger_args, {"retries": retries, "backoff": backoff,
                                                    "max_delay": max_delay})))

    @property
    def failures(self) -> list[str]:
        return self.state["failures"]

    def submit(self, method: str, *args: Any) -> None:
        self._queue.put((method, args))

    def flush(self) -> dict[str, Any]:
        token = next(self._tokens)
        self._queue.put(("__flush__", (token,)))
        while True:
            ready, _, _ = select.select([self._replies], [], [], 1.0)
            if not ready:
                if self._proc.poll() is not None:
                    raise TrackingError(f"the MLflow writer process exited (status {self._proc.returncode}); "
                                        "writes after its last flush are lost")
                continue
            reply = self._read()
            if reply["token"] == token:
                self.state = reply
                return reply

    def close(self) -> None:
        self.flush()
        self._queue.put(None)
        self._feeder.join(timeout=10)
        self._proc.wait(timeout=30)

    def _feed(self) -> None:
        while (item := self._queue.get()) is not None:
            try:
                pickle.dump(item, self._requests, protocol=pickle.HIGHEST_PROTOCOL)
                self._requests.flush()
            except (BrokenPipeError, OSError):
                return  # the child is gone; flush() says so
        self._requests.close()

    def _read(self) -> dict[str, Any]:
        size = int.from_bytes(_read_exactly(self._replies, 8), "big")
        return pickle.loads(_read_exactly(self._replies, size))


def _read_exactly(fd: int, n: int) -> bytes:
    chunks, left = [], n
    while left:
        chunk = os.read(fd, left)
        if not chunk:
            raise TrackingError("the MLflow writer process closed its pipe")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def serve(requests, replies: int) -> None:
    """The child's loop: build the RunLogger from the first message, then run each call until EOF."""
    from vgtune.tracking.logger import RunLogger

    _, (logger_args, options) = pickle.load(requests)
    logger = RunLogger(*logger_args)
    failures: list[str] = []
    while True:
        try:
            method, args = pickle.load(requests)
        except EOFError:
            return
        if method == "__flush__":
            state = {k: getattr(logger, k) for k in STATE} | {"failures": failures, "token": args[0]}
            data = pickle.dumps(state)
            view = memoryview(len(data).to_bytes(8, "big") + data)
            while view:
                view = view[os.write(replies, view):]
            continue
        retry(functools.partial(getattr(logger, method), *args), method, failures, **options)


def main(argv: list[str]) -> None:
    # The driver decides when writing ends (it closes the pipe, also when it dies): a Ctrl-C, or a SIGTERM sent
    # to every process of a job (Slurm, systemd), stops the sweep, whose last writes still land.
    for signum in IGNORED:
        signal.signal(signum, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, IGNORED)
    logging.basicConfig(format="vgtune writer: %(message)s", level=logging.WARNING)
    with os.fdopen(int(argv[0]), "rb") as requests:
        serve(requests, int(argv[1]))


if __name__ == "__main__":
    main(sys.argv[1:])
