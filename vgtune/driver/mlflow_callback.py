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

from vgtune.core.member import SCHEDULER_STOP, TrialEpoch
from vgtune.driver.trial_members import TrialMember, of_trial
from vgtune.tracking.store import TrackingError
from vgtune.tracking.writer_process import WriterProcess


class MLflowTracker(tune.Callback):
    """Tune callback: one parent run per sweep invocation, one child run per trial (per member of a pack).

    Tune's results are read once into `TrialEpoch`s; a member's run closes when its epoch says it
    ended (`MemberEpoch.ended`), or when its Tune trial ends or fails first.
    """

    # Trackers of this process with writes queued; `flush_all` waits for them. A class
    # registry because `Tuner.restore` unpickles its own copy of the callback.
    live: ClassVar[list[MLflowTracker]] = []

    def __init__(self, uri: str, experiment: str, sweep_id: str, spec_text: str, total_trials: int,
                 factors: list[str] | None = None, params: dict[str, str] | None = None, retries: int = 8):
        self.uri = uri
        self.experiment = experiment  # MLflow experiment (= spec name)
        self.sweep_id = sweep_id  # run folder name, stable across --resume
        self.spec_text = spec_text  # the spec as run, logged on the parent run
        self.total_trials = total_trials  # the most trials the sweep's design can run
        self.factors = factors or []  # options the sweep varies (run names)
        self.params = params or {}  # more params of the sweep run
        self.retries = retries  # attempts of a failing write after the first
        self.unfinished = 0  # trials that had not ended when the experiment did (an interrupted sweep)
        self.work_seconds = 0.0  # training and evaluation of the epochs reported to this invocation
        self._ended: set[str] = set()  # trial ids that completed or errored in this invocation
        self._writer: WriterProcess | None = None

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles callbacks with the experiment
        # A restored copy runs in a new invocation, which makes its own parent run (`--resume` says so).
        return dict(self.__dict__) | {"_writer": None, "_ended": set(), "unfinished": 0, "work_seconds": 0.0}

    @property
    def writer(self) -> WriterProcess:
        """The child process that owns this sweep's RunLogger (started on first use)."""
        if self._writer is None:
            args = (self.uri, self.experiment, self.sweep_id, self.spec_text, self.total_trials, self.factors,
                    self.params)
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
        self.unfinished = sum(m.trial_id not in done for t in trials for m in of_trial(t))
        # An interrupted sweep's run ends KILLED; `--resume` starts a new parent run.
        self.writer.submit("finish", len(state["failures"]), "KILLED" if self.unfinished else "FINISHED")
        self.writer.flush()

    # -- trials: the hooks hand over, the writer process writes ------------------
    def on_trial_start(self, iteration: int, trials: list, trial, **info: Any) -> None:
        for m in of_trial(trial):
            self.writer.submit("trial_run", m.trial_id, m.config, _tags(m))

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info: Any) -> None:
        members = of_trial(trial)
        for epoch in TrialEpoch.from_result(result, len(members)).trained:
            m = members[epoch.member]
            self.work_seconds += epoch.work_seconds
            self.writer.submit("log_result", m.trial_id, m.config, epoch.row())
            if epoch.ended:  # the member diverged, was stopped or is done
                self._close_finished(m, epoch.status, epoch.metrics, epoch.stop_reason)

    def on_trial_complete(self, iteration: int, trials: list, trial, **info: Any) -> None:
        for m in of_trial(trial):
            if m.trial_id not in self._ended:  # still training when its Tune trial was stopped
                self._close_finished(m, m.status("TERMINATED"), m.row, SCHEDULER_STOP)

    def _close_finished(self, m: TrialMember, status: str, last: dict[str, Any], reason: str | None) -> None:
        tags = {"status": status, "diagnosis": diagnosis_of(status, last)}
        if status == "stopped":
            tags["vgtune.stop_reason"] = reason or SCHEDULER_STOP
        self._ended.add(m.trial_id)
        self.writer.submit("close", m.trial_id, m.config, tags, "FINISHED", last)

    def on_trial_recover(self, iteration: int, trials: list, trial, **info: Any) -> None:
        """A crashed trial that Tune retries from its last checkpoint: count it on the run."""
        failures = trial.run_metadata.num_failures
        for m in of_trial(trial):
            if m.trial_id not in self._ended:
                self.writer.submit("set_failures", m.trial_id, m.config, failures)

    def on_trial_error(self, iteration: int, trials: list, trial, **info: Any) -> None:
        text = _error_text(trial)
        lines = text.strip().splitlines()
        for m in of_trial(trial):
            if m.trial_id in self._ended:
                continue
            self._ended.add(m.trial_id)
            tags = {"status": m.status("ERROR"), "diagnosis": diagnosis_of("error", m.row),
                    "vgtune.error": lines[-1][:4000] if lines else "unknown error"}
            self.writer.submit("close", m.trial_id, m.config, tags, "FAILED", m.row, text)


def diagnosis_of(status: str, last: dict[str, Any]) -> str:
    """A member's diagnosis tag: its last epoch's, `diverged` for a diverged one whatever was probed before."""
    return "diverged" if status == "diverged" else last.get("diagnosis", "healthy")


def _tags(m: TrialMember) -> dict[str, str]:
    """The `vgtune.*` tags of a member's run: its meta, and its pack's Tune trial id."""
    return m.meta | ({"pack": m.pack} if m.pack else {})


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
