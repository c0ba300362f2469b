"""The Tune callback that mirrors a sweep into MLflow, from the driver only.

Only the driver writes, so a SQLite store never sees concurrent writers; for a
cluster, point `--tracking-uri` at an `http://` MLflow server. The hooks only
queue work: a `BackgroundWriter` thread runs the `RunLogger` calls in order,
so Tune's event loop never waits on MLflow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from ray import tune

from vgtune.runlog import RunLogger, final_status
from vgtune.stopper import GradientCollapseStopper
from vgtune.writer import BackgroundWriter, TrackingError


class MLflowTracker(tune.Callback):
    """Tune callback: one parent run per sweep invocation, one child run per trial."""

    # Trackers of this process with writes queued; `flush_all` waits for them. A class
    # registry because `Tuner.restore` unpickles its own copy of the callback.
    live: ClassVar[list[MLflowTracker]] = []

    def __init__(self, uri: str, experiment: str, sweep_id: str, spec_text: str, total_trials: int,
                 stopper: GradientCollapseStopper | None = None, factors: list[str] | None = None,
                 params: dict[str, str] | None = None):
        self.uri = uri
        self.experiment = experiment  # MLflow experiment (= spec name)
        self.sweep_id = sweep_id  # run folder name, stable across --resume
        self.spec_text = spec_text  # the spec as run, logged on the parent run
        self.total_trials = total_trials
        self.stopper = stopper  # asked why a trial stopped early
        self.factors = factors or []  # options the sweep varies (run names)
        self.params = params or {}  # more params of the sweep run
        self.unfinished = 0  # trials that had not ended when the experiment did (an interrupted sweep)
        self._ended: set[str] = set()  # trial ids that completed or errored in this invocation
        self._logger: RunLogger | None = None
        self._writer: BackgroundWriter | None = None

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles callbacks with the experiment
        return dict(self.__dict__) | {"_logger": None, "_writer": None, "_ended": set(), "unfinished": 0}

    @property
    def logger(self) -> RunLogger:
        if self._logger is None:
            self._logger = RunLogger(self.uri, self.experiment, self.sweep_id, self.spec_text, self.total_trials,
                                     self.factors, self.params)
        return self._logger

    @property
    def writer(self) -> BackgroundWriter:
        if self._writer is None:
            self._writer = BackgroundWriter()
            MLflowTracker.live.append(self)
        return self._writer

    @property
    def parent_run_id(self) -> str | None:
        return self._logger.parent_run_id if self._logger else None

    @property
    def experiment_id(self) -> str | None:
        return self._logger.exp_id if self._logger else None

    @property
    def counts(self) -> dict[str, int]:
        return self._logger.counts if self._logger else {}

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    # -- sweep ------------------------------------------------------------------
    def setup(self, **info: Any) -> None:
        # Queued like every write: creating a fresh store (schema migrations) takes seconds
        # that would otherwise delay the first trials.
        logger = self.logger
        self.writer.submit(logger.start)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.writer.flush()
        # Tune marks every trial TERMINATED when an interrupted experiment cleans up, so
        # "finished" is what this tracker saw end, or found finished in MLflow on a resume.
        done = self._ended | self.logger.finished_before
        self.unfinished = sum(t.trial_id not in done for t in trials)
        failures = len(self.writer.failures)
        # An interrupted sweep's run ends KILLED; `--resume` starts a new parent run.
        self.writer.submit(lambda: self.logger.finish(failures, "KILLED" if self.unfinished else "FINISHED"))
        self.writer.flush()

    # -- trials: the hooks queue, the writer thread writes -----------------------
    def on_trial_start(self, iteration: int, trials: list, trial, **info: Any) -> None:
        tid, cfg, meta = trial.trial_id, dict(trial.config["trial"]["train"]), dict(trial.config["trial"]["meta"])
        self.writer.submit(lambda: self.logger.trial_run(tid, cfg, meta))

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info: Any) -> None:
        tid, cfg = trial.trial_id, dict(trial.config["trial"]["train"])
        self.writer.submit(lambda: self.logger.log_result(tid, cfg, result))

    def on_trial_complete(self, iteration: int, trials: list, trial, **info: Any) -> None:
        last, cfg = dict(trial.last_result or {}), dict(trial.config["trial"]["train"])
        status = final_status(last, cfg["epochs"])
        tags = {"status": status, "diagnosis": last.get("diagnosis", "healthy")}
        if status == "stopped":
            reason = (self.stopper.reasons.get(trial.trial_id) if self.stopper else None) or "stopped by the scheduler"
            tags["vgtune.stop_reason"] = reason
        tid = trial.trial_id
        self._ended.add(tid)
        self.writer.submit(lambda: self.logger.close(tid, cfg, tags, "FINISHED", last))

    def on_trial_recover(self, iteration: int, trials: list, trial, **info: Any) -> None:
        """A crashed trial that Tune retries from its last checkpoint: count it on the run."""
        tid, cfg = trial.trial_id, dict(trial.config["trial"]["train"])
        failures = trial.run_metadata.num_failures
        self.writer.submit(lambda: self.logger.set_failures(tid, cfg, failures))

    def on_trial_error(self, iteration: int, trials: list, trial, **info: Any) -> None:
        text = _error_text(trial)
        last, cfg, tid = dict(trial.last_result or {}), dict(trial.config["trial"]["train"]), trial.trial_id
        self._ended.add(tid)
        lines = text.strip().splitlines()
        tags = {"status": "error", "diagnosis": last.get("diagnosis", "healthy"),
                "vgtune.error": lines[-1][:4000] if lines else "unknown error"}
        self.writer.submit(lambda: self.logger.close(tid, cfg, tags, "FAILED", last, error_text=text))


def _error_text(trial) -> str:
    """The trial's error trace: Tune writes it locally first, then syncs it to storage."""
    try:
        path = trial.error_file
        if path and Path(path).is_file():
            return Path(path).read_text()
        return str(trial.get_error() or "unknown error")
    except Exception as exc:  # storage unreachable: still close the run
        return f"unknown error ({exc})"


def flush_all() -> list[MLflowTracker]:
    """Wait for every queued MLflow write of this process (call after `Tuner.fit`); returns the trackers.

    Raises TrackingError if a sweep's MLflow run could not be created, so nothing was recorded.
    """
    broken, flushed = None, []
    while MLflowTracker.live:
        tracker = MLflowTracker.live.pop()
        tracker.flush()
        flushed.append(tracker)
        if tracker.parent_run_id is None:
            broken = tracker
    if broken is not None:
        failures = broken.writer.failures
        raise TrackingError(f"nothing was recorded in MLflow {broken.uri}: "
                            f"{failures[0] if failures else 'the sweep run was not created'}")
    return flushed
