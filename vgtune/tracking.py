"""MLflow tracking from the Tune driver: one parent run per sweep invocation, one child per trial.

Only the driver writes, so a SQLite store never sees concurrent writers; for a
cluster, point `--tracking-uri` at an `http://` MLflow server. Every epoch of a
trial is one `log_batch` request (metrics plus the progress tag), never a
request per metric as Ray's `MLflowLoggerCallback` makes.

Child runs carry the tags `vgtune.sweep` (the sweep's run folder), `vgtune.trial_id`,
`status` and `diagnosis`; a resumed sweep finds its trials' runs by these tags
and continues them, so no trial ever gets a second run.
"""

from __future__ import annotations

import atexit
import math
import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from ray import tune
from sqlalchemy import event
from sqlalchemy.engine import Engine

from vgtune import plots
from vgtune.stopper import GradientCollapseStopper
from vgtune.writer import BackgroundWriter, TrackingError, Unavailable

DEFAULT_URI = "sqlite:///mlflow.db"
EPOCH_KEYS = ("train_loss", "train_acc", "val_acc", "test_acc", "grad_attenuation", "dead_frac",
              "saturated_frac", "grad_norm_first", "grad_norm_last", "train_seconds", "eval_seconds")
MAX_BATCH = 1000  # MLflow's limit of metrics per log_batch


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_conn, record) -> None:
    """SQLite stores in WAL mode: readers (a report, the UI) never block the sweep's writer,
    a second writer waits instead of failing with `database is locked`, and a commit costs
    half as much (no fsync per transaction)."""
    if type(dbapi_conn).__module__.split(".")[0] != "sqlite3":
        return
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=60000")
    cur.close()


def resolve_uri(uri: str | None) -> str:
    """--tracking-uri, else $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def check_uri(uri: str, timeout: float = 10.0) -> None:
    """Fail fast (ValueError naming the address) if the store cannot be reached or written."""
    parsed = urlparse(uri)
    if parsed.scheme in ("http", "https"):
        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout) as resp:
                if resp.status != 200:
                    raise ValueError(f"MLflow server at {uri} answered {resp.status} on /health")
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ValueError(f"MLflow tracking server {uri} is not reachable ({reason}); start it with "
                             "`make mlflow-server` or pass another --tracking-uri") from None
    elif parsed.scheme == "sqlite":
        folder = Path(sqlite_path(uri)).parent
        if not folder.is_dir() or not os.access(folder, os.W_OK):
            raise ValueError(f"tracking store {uri}: folder {folder} does not exist or is not writable")
    elif parsed.scheme not in ("file", ""):
        raise ValueError(f"tracking URI {uri!r}: scheme must be sqlite, http(s) or file")


def sqlite_path(uri: str) -> str:
    return uri[len("sqlite:///"):] if uri.startswith("sqlite:///") else uri


def artifact_location(uri: str, experiment: str) -> str | None:
    """Next to a SQLite file; None (the server's choice) for a tracking server."""
    if uri.startswith("sqlite:///"):
        return (Path(sqlite_path(uri)).resolve().parent / "mlartifacts" / experiment).as_uri()
    return None


def experiment_id(client: MlflowClient, uri: str, name: str) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    # The kind tag makes the MLflow 3 UI open on the runs table, not the GenAI trace overview.
    return client.create_experiment(name, artifact_location=artifact_location(uri, name),
                                    tags={"mlflow.experimentKind": "custom_model_development"})


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def epoch_metrics(result: dict[str, Any], step: int, now_ms: int) -> list[Metric]:
    """One epoch's scalars and per-block series (`block03/grad_norm`), step = epoch."""
    metrics = [Metric(k, float(result[k]), now_ms, step) for k in EPOCH_KEYS if _finite(result.get(k))]
    for name, values in (result.get("layers") or {}).items():
        metrics += [Metric(f"block{i + 1:02d}/{name}", float(v), now_ms, step)
                    for i, v in enumerate(values) if _finite(v)]
    return metrics


def log_metrics(client: MlflowClient, run_id: str, metrics: list[Metric], tags: list[RunTag] = ()) -> None:
    """Batched: at most MAX_BATCH metrics per request."""
    for i in range(0, max(1, len(metrics)), MAX_BATCH):
        client.log_batch(run_id, metrics=metrics[i:i + MAX_BATCH], tags=list(tags) if i == 0 else [])


def trial_name(cfg: dict[str, Any]) -> str:
    return (f"d{cfg['depth']}-{cfg['activation']}-{cfg['init']}-{cfg['norm']}-{cfg['residual']}"
            f"-s{cfg['seed']}")


def final_status(last: dict[str, Any], epochs: int) -> str:
    """completed | diverged | stopped, from a trial's last reported result."""
    if last.get("status") == "diverged":
        return "diverged"
    return "completed" if last.get("epoch", 0) >= epochs else "stopped"


class MLflowTracker(tune.Callback):
    """Tune callback: mirrors a sweep into MLflow as it runs (driver side only).

    The hooks only queue work for a `BackgroundWriter`; all MLflow calls and the
    trial -> run bookkeeping happen on that one thread, in order.
    """

    def __init__(self, uri: str, experiment: str, sweep_id: str, spec_text: str,
                 total_trials: int, stopper: GradientCollapseStopper | None = None):
        self.uri = uri
        self.experiment = experiment  # MLflow experiment (= spec name)
        self.sweep_id = sweep_id  # run folder name, stable across --resume
        self.spec_text = spec_text  # the spec as run, logged on the parent run
        self.total_trials = total_trials
        self.stopper = stopper  # asked why a trial stopped early
        self._reset()

    def _reset(self) -> None:
        self.parent_run_id: str | None = None
        self._client: MlflowClient | None = None
        self._writer: BackgroundWriter | None = None
        self._runs: dict[str, str] = {}  # trial id -> run id
        self._steps: dict[str, int] = {}  # trial id -> last epoch logged
        self._probes: dict[str, list[tuple[int, list[float]]]] = {}  # for the plot
        self.counts: dict[str, int] = {}  # final status -> trials

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles callbacks with the experiment
        state = dict(self.__dict__)
        state.update(_client=None, _writer=None, parent_run_id=None, _runs={}, _steps={}, _probes={}, counts={})
        return state

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = MlflowClient(self.uri)
        return self._client

    @property
    def writer(self) -> BackgroundWriter:
        if self._writer is None:
            self._writer = BackgroundWriter()
            _ACTIVE.append(self)
        return self._writer

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    # -- sweep ------------------------------------------------------------------
    def setup(self, **info: Any) -> None:
        # Queued like every write: creating a fresh store (schema migrations) takes seconds
        # that would otherwise delay the first trials.
        self.writer.submit(self._start)

    def _start(self) -> None:
        self.exp_id = experiment_id(self.client, self.uri, self.experiment)
        self._adopt_existing_runs()
        resumed = bool(self._runs)
        run = self.client.create_run(self.exp_id, run_name=f"sweep {self.sweep_id}", tags={
            "vgtune.role": "sweep", "vgtune.sweep": self.sweep_id, "vgtune.resumed": str(resumed).lower(),
            "mlflow.source.git.commit": git_commit()})
        self.parent_run_id = run.info.run_id
        self.client.log_text(self.parent_run_id, self.spec_text, "spec.yaml")
        self.client.log_batch(self.parent_run_id, params=[Param("trials", str(self.total_trials)),
                                                          Param("sweep", self.sweep_id)])

    def _adopt_existing_runs(self) -> None:
        """Runs of this sweep from an earlier invocation (a resume continues them)."""
        runs = self.client.search_runs(
            [self.exp_id], f"tags.`vgtune.sweep` = '{self.sweep_id}' and tags.`vgtune.role` = 'trial'",
            max_results=50000)
        for run in runs:
            tid = run.data.tags.get("vgtune.trial_id")
            if tid:
                self._runs[tid] = run.info.run_id
                self._steps[tid] = int(run.data.tags.get("vgtune.epoch", "0"))
                status = run.data.tags.get("status")
                if status not in (None, "running"):
                    self.counts[status] = self.counts.get(status, 0) + 1

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.writer.flush()
        if self.parent_run_id is None:
            return
        tags = [RunTag(f"trials.{k}", str(v)) for k, v in sorted(self.counts.items())]
        if self.writer.failures:
            tags.append(RunTag("vgtune.write_failures", str(len(self.writer.failures))))
        self.client.log_batch(self.parent_run_id, tags=tags)
        self.client.set_terminated(self.parent_run_id, "FINISHED")

    # -- trials: the hooks queue, the writer thread writes -----------------------
    def on_trial_start(self, iteration: int, trials: list, trial, **info: Any) -> None:
        tid, cfg = trial.trial_id, dict(trial.config["train"])
        self.writer.submit(lambda: self._run_for(tid, cfg))

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info: Any) -> None:
        tid, cfg = trial.trial_id, dict(trial.config["train"])
        self.writer.submit(lambda: self._log_result(tid, cfg, result))

    def on_trial_complete(self, iteration: int, trials: list, trial, **info: Any) -> None:
        last, cfg = dict(trial.last_result or {}), dict(trial.config["train"])
        status = final_status(last, cfg["epochs"])
        tags = {"status": status, "diagnosis": last.get("diagnosis", "healthy")}
        if status == "stopped":
            reason = (self.stopper.reasons.get(trial.trial_id) if self.stopper else None) or "stopped by the scheduler"
            tags["vgtune.stop_reason"] = reason
        tid = trial.trial_id
        self.writer.submit(lambda: self._close(tid, cfg, tags, "FINISHED", last))

    def on_trial_recover(self, iteration: int, trials: list, trial, **info: Any) -> None:
        """A crashed trial that Tune retries from its last checkpoint: count it on the run."""
        tid, cfg = trial.trial_id, dict(trial.config["train"])
        failures = str(trial.run_metadata.num_failures)
        self.writer.submit(lambda: self.client.set_tag(self._run_for(tid, cfg), "vgtune.failures", failures))

    def on_trial_error(self, iteration: int, trials: list, trial, **info: Any) -> None:
        text = _error_text(trial)
        last, cfg, tid = dict(trial.last_result or {}), dict(trial.config["train"]), trial.trial_id
        lines = text.strip().splitlines()
        tags = {"status": "error", "diagnosis": last.get("diagnosis", "healthy"),
                "vgtune.error": lines[-1][:4000] if lines else "unknown error"}

        def close() -> None:
            self.client.log_text(self._run_for(tid, cfg), text, "error.txt")
            self._close(tid, cfg, tags, "FAILED", last)
        self.writer.submit(close)

    # -- writer thread ----------------------------------------------------------
    def _run_for(self, tid: str, cfg: dict[str, Any]) -> str:
        if self.parent_run_id is None:
            raise Unavailable(f"no sweep run in {self.uri} (its creation failed), so no trial run")
        if tid not in self._runs:
            run = self.client.create_run(self.exp_id, run_name=f"{trial_name(cfg)}-{tid}", tags={
                "mlflow.parentRunId": self.parent_run_id, "vgtune.role": "trial",
                "vgtune.sweep": self.sweep_id, "vgtune.trial_id": tid, "status": "running"})
            params = [Param(k, str(v)) for k, v in cfg.items()]
            for i in range(0, len(params), 100):
                self.client.log_batch(run.info.run_id, params=params[i:i + 100])
            self._runs[tid] = run.info.run_id
            self._steps[tid] = 0
        return self._runs[tid]

    def _log_result(self, tid: str, cfg: dict[str, Any], result: dict[str, Any]) -> None:
        run_id = self._run_for(tid, cfg)
        epoch = int(result.get("epoch", 0))
        layers, init = result.get("layers") or {}, result.get("layers_init") or {}
        if "grad_norm" in init:
            self._probes.setdefault(tid, []).append((0, init["grad_norm"]))
        if "grad_norm" in layers:
            self._probes.setdefault(tid, []).append((epoch, layers["grad_norm"]))
        if epoch <= self._steps.get(tid, 0):
            return  # already logged before a retry or a resume
        now = int(time.time() * 1000)
        metrics = epoch_metrics(result, epoch, now)
        if init:  # initialization is step 0
            metrics += epoch_metrics({"grad_attenuation": result.get("grad_attenuation_init"), "layers": init}, 0, now)
            if _finite(result.get("grad_attenuation_init")):
                metrics.append(Metric("grad_attenuation_init", float(result["grad_attenuation_init"]), now, 0))
        tags = [RunTag("vgtune.epoch", str(epoch))]
        if "node" in result:
            tags.append(RunTag("vgtune.node", result["node"]))
        log_metrics(self.client, run_id, metrics, tags)
        self._steps[tid] = epoch

    def _close(self, tid: str, cfg: dict[str, Any], tags: dict[str, str], run_status: str,
               last: dict[str, Any]) -> None:
        run_id = self._run_for(tid, cfg)
        now, step = int(time.time() * 1000), int(last.get("epoch", 0))
        final = {"grad_attenuation_final": last.get("grad_attenuation"), "epochs_run": step,
                 "train_seconds": last.get("train_seconds"), "setup_seconds": last.get("setup_seconds")}
        metrics = [Metric(k, float(v), now, step) for k, v in final.items() if _finite(v)]
        self.client.log_batch(run_id, metrics=metrics, tags=[RunTag(k, v) for k, v in tags.items()])
        probes = self._probes.pop(tid, [])
        if probes:
            fig = plots.gradient_flow(probes, title=f"{trial_name(cfg)} [{tags['status']}, {tags['diagnosis']}]")
            self.client.log_figure(run_id, fig, "gradient_flow.png")
        self.client.set_terminated(run_id, run_status)
        self.counts[tags["status"]] = self.counts.get(tags["status"], 0) + 1


def _error_text(trial) -> str:
    """The trial's error trace: Tune writes it locally first, then syncs it to storage."""
    try:
        path = trial.error_file
        if path and Path(path).is_file():
            return Path(path).read_text()
        return str(trial.get_error() or "unknown error")
    except Exception as exc:  # storage unreachable: still close the run
        return f"unknown error ({exc})"


_ACTIVE: list[MLflowTracker] = []  # trackers of this process, flushed by `flush_all`


def flush_all() -> None:
    """Wait for every queued MLflow write of this process (call after `Tuner.fit`).

    Raises TrackingError if a sweep's MLflow run could not be created, so nothing was recorded.
    """
    broken = None
    while _ACTIVE:
        tracker = _ACTIVE.pop()
        tracker.flush()
        if tracker.parent_run_id is None:
            broken = tracker
    if broken is not None:
        failures = broken.writer.failures
        raise TrackingError(f"nothing was recorded in MLflow {broken.uri}: "
                            f"{failures[0] if failures else 'the sweep run was not created'}")


@atexit.register
def _flush_at_exit() -> None:
    for tracker in _ACTIVE:
        tracker.flush()
