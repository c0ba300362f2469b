"""The Tune callback that mirrors a sweep into MLflow, from the driver's machine only.

One process writes, so a SQLite store never sees concurrent writers; for a
cluster, point `--tracking-uri` at an `http://` MLflow server. The hooks only
hand work over: a `WriterProcess` runs the `RunLogger` calls in order in a
child process, so neither Tune's event loop nor the driver's CPU waits on MLflow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from ray import tune

from vgtune.core.packing import left, member_id
from vgtune.driver.stopper import GradientCollapseStopper
from vgtune.tracking.logger import final_status
from vgtune.tracking.store import TrackingError
from vgtune.tracking.writer_process import WriterProcess


def trials_of(trial) -> list[tuple[str, dict[str, Any], dict[str, str]]]:
    """(trial id, TrainConfig dict, meta) of what a Tune trial trains: itself, or each member of a pack."""
    item = trial.config["trial"]
    if "members" not in item:
        return [(trial.trial_id, dict(item["train"]), dict(item["meta"]))]
    return [(member_id(trial.trial_id, k), dict(m["train"]), dict(m["meta"]) | {"pack": trial.trial_id})
            for k, m in enumerate(item["members"])]


class MLflowTracker(tune.Callback):
    """Tune callback: one parent run per sweep invocation, one child run per trial (per member of a pack)."""

    # Trackers of this process with writes queued; `flush_all` waits for them. A class
    # registry because `Tuner.restore` unpickles its own copy of the callback.
    live: ClassVar[list[MLflowTracker]] = []

    def __init__(self, uri: str, experiment: str, sweep_id: str, spec_text: str, total_trials: int,
                 stopper: GradientCollapseStopper | None = None, factors: list[str] | None = None,
                 params: dict[str, str] | None = None, retries: int = 8, parent_run_id: str | None = None,
                 ends_sweep: bool = True, earlier_failures: int = 0):
        self.uri = uri
        self.experiment = experiment  # MLflow experiment (= spec name)
        self.sweep_id = sweep_id  # run folder name, stable across --resume
        self.spec_text = spec_text  # the spec as run, logged on the parent run
        self.total_trials = total_trials
        self.stopper = stopper  # asked why a trial stopped early
        self.factors = factors or []  # options the sweep varies (run names)
        self.params = params or {}  # more params of the sweep run
        self.retries = retries  # attempts of a failing write after the first
        self.parent = parent_run_id  # an earlier stage's parent run to continue (None: create one)
        self.ends_sweep = ends_sweep  # False for stage 1 of two: its parent run goes on into stage 2
        self.earlier_failures = earlier_failures  # writes stage 1 gave up on, counted on the parent run at the end
        self.unfinished = 0  # trials that had not ended when the experiment did (an interrupted sweep)
        self._ended: set[str] = set()  # trial ids that completed or errored in this invocation
        self._writer: WriterProcess | None = None

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles callbacks with the experiment
        # A restored copy runs in a new invocation, which makes its own parent run (`--resume` says so).
        return dict(self.__dict__) | {"_writer": None, "_ended": set(), "unfinished": 0, "parent": None,
                                      "earlier_failures": 0}

    @property
    def writer(self) -> WriterProcess:
        """The child process that owns this sweep's RunLogger (started on first use)."""
        if self._writer is None:
            args = (self.uri, self.experiment, self.sweep_id, self.spec_text, self.total_trials, self.factors,
                    self.params, self.parent)
            self._writer = WriterProcess(args, retries=self.retries)
            MLflowTracker.live.append(self)
        return self._writer

    def _state(self, key: str, default: Any = None) -> Any:
        return self._writer.state.get(key, default) if self._writer else default

    @property
    def parent_run_id(self) -> str | None:
        return self._state("parent_run_id")

    @property
    def experiment_id(self) -> str | None:
        return self._state("exp_id")

    @property
    def counts(self) -> dict[str, int]:
        return self._state("counts", {})

    def flush(self) -> None:
        """Wait for every write so far; the properties above then read the writer's state."""
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        """Flush, then let the writer process exit."""
        if self._writer is not None:
            self._writer.close()

    # -- sweep ------------------------------------------------------------------
    def setup(self, **info: Any) -> None:
        # Queued like every write: creating a fresh store (schema migrations) takes seconds
        # that would otherwise delay the first trials.
        self.writer.submit("start")

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        state = self.writer.flush()
        # Tune marks every trial TERMINATED when an interrupted experiment cleans up, so
        # "finished" is what this tracker saw end, or found finished in MLflow on a resume.
        done = self._ended | state["finished_before"]
        self.unfinished = sum(tid not in done for t in trials for tid, _, _ in trials_of(t))
        # An interrupted sweep's run ends KILLED; `--resume` starts a new parent run.
        if self.unfinished or self.ends_sweep:
            self.writer.submit("finish", len(state["failures"]) + self.earlier_failures,
                               "KILLED" if self.unfinished else "FINISHED")
            self.writer.flush()

    # -- trials: the hooks hand over, the writer process writes ------------------
    def on_trial_start(self, iteration: int, trials: list, trial, **info: Any) -> None:
        for tid, cfg, meta in trials_of(trial):
            self.writer.submit("trial_run", tid, cfg, meta)

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info: Any) -> None:
        if "members" not in result:
            self.writer.submit("log_result", trial.trial_id, dict(trial.config["trial"]["train"]), result)
            return
        members = trials_of(trial)
        for row in result["members"]:
            tid, cfg, _ = members[row["member"]]
            self.writer.submit("log_result", tid, cfg, row)
            if left(row):  # the member diverged, was stopped or is done
                self._close_finished(tid, cfg, row, row.get("stop_reason"))

    def on_trial_complete(self, iteration: int, trials: list, trial, **info: Any) -> None:
        last = dict(trial.last_result or {})
        if "members" in trial.config["trial"]:
            summary = last.get("summary") or []
            for k, (tid, cfg, _) in enumerate(trials_of(trial)):
                if tid not in self._ended:  # a member still training when the pack was stopped
                    self._close_finished(tid, cfg, summary[k] if k < len(summary) else {}, "stopped by the scheduler")
            return
        reason = self.stopper.reasons.get(trial.trial_id) if self.stopper else None
        self._close_finished(trial.trial_id, dict(trial.config["trial"]["train"]), last,
                             reason or "stopped by the scheduler")

    def _close_finished(self, tid: str, cfg: dict[str, Any], last: dict[str, Any], reason: str | None) -> None:
        status = final_status(last, cfg["epochs"])
        tags = {"status": status, "diagnosis": last.get("diagnosis", "healthy")}
        if status == "stopped":
            tags["vgtune.stop_reason"] = reason or "stopped by the scheduler"
        self._ended.add(tid)
        self.writer.submit("close", tid, cfg, tags, "FINISHED", last)

    def on_trial_recover(self, iteration: int, trials: list, trial, **info: Any) -> None:
        """A crashed trial that Tune retries from its last checkpoint: count it on the run."""
        failures = trial.run_metadata.num_failures
        for tid, cfg, _ in trials_of(trial):
            if tid not in self._ended:
                self.writer.submit("set_failures", tid, cfg, failures)

    def on_trial_error(self, iteration: int, trials: list, trial, **info: Any) -> None:
        text = _error_text(trial)
        last = dict(trial.last_result or {})
        lines = text.strip().splitlines()
        summary = last.get("summary") or []
        for k, (tid, cfg, _) in enumerate(trials_of(trial)):
            if tid in self._ended:
                continue
            own = summary[k] if "members" in trial.config["trial"] and k < len(summary) else last
            self._ended.add(tid)
            tags = {"status": "error", "diagnosis": own.get("diagnosis", "healthy"),
                    "vgtune.error": lines[-1][:4000] if lines else "unknown error"}
            self.writer.submit("close", tid, cfg, tags, "FAILED", own, text)


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
        tracker.close()
        flushed.append(tracker)
        if tracker.parent_run_id is None:
            broken = tracker
    if broken is not None:
        failures = broken.writer.failures
        raise TrackingError(f"nothing was recorded in MLflow {broken.uri}: "
                            f"{failures[0] if failures else 'the sweep run was not created'}")
    return flushed
