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

from vgtune import plots
from vgtune.gradflow import SERIES
from vgtune.stopper import GradientCollapseStopper

DEFAULT_URI = "sqlite:///mlflow.db"
EPOCH_KEYS = ("train_loss", "train_acc", "val_acc", "test_acc", "grad_attenuation", "dead_frac",
              "saturated_frac", "grad_norm_first", "grad_norm_last", "train_seconds")
FACTORS = ("depth", "width", "activation", "init", "norm", "residual", "optimizer", "lr", "seed", "dataset")
MAX_BATCH = 1000  # MLflow's limit of metrics per log_batch


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
    return client.create_experiment(name, artifact_location=artifact_location(uri, name))


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
    """Tune callback: mirrors a sweep into MLflow as it runs (driver side only)."""

    def __init__(self, uri: str, experiment: str, sweep_id: str, spec_text: str,
                 total_trials: int, stopper: GradientCollapseStopper | None = None):
        self.uri = uri
        self.experiment = experiment  # MLflow experiment (= spec name)
        self.sweep_id = sweep_id  # run folder name, stable across --resume
        self.spec_text = spec_text  # the spec as run, logged on the parent run
        self.total_trials = total_trials
        self.stopper = stopper  # asked why a trial stopped early
        self.parent_run_id: str | None = None
        self._client: MlflowClient | None = None
        self._runs: dict[str, str] = {}  # trial id -> run id
        self._steps: dict[str, int] = {}  # trial id -> last epoch logged
        self._probes: dict[str, list[tuple[int, list[float]]]] = {}  # for the plot
        self.counts: dict[str, int] = {}

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles callbacks with the experiment
        state = dict(self.__dict__)
        state["_client"] = None
        return state

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = MlflowClient(self.uri)
        return self._client

    # -- sweep ------------------------------------------------------------------
    def setup(self, **info: Any) -> None:
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
                if run.data.tags.get("status") not in (None, "running"):
                    self.counts[run.data.tags["status"]] = self.counts.get(run.data.tags["status"], 0) + 1

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        if self.parent_run_id is None:
            return
        tags = [RunTag(f"trials.{k}", str(v)) for k, v in sorted(self.counts.items())]
        self.client.log_batch(self.parent_run_id, tags=tags)
        self.client.set_terminated(self.parent_run_id, "FINISHED")

    # -- trials -----------------------------------------------------------------
    def _run_for(self, trial) -> str:
        tid = trial.trial_id
        if tid not in self._runs:
            cfg = trial.config["train"]
            run = self.client.create_run(self.exp_id, run_name=f"{trial_name(cfg)}-{tid}", tags={
                "mlflow.parentRunId": self.parent_run_id, "vgtune.role": "trial",
                "vgtune.sweep": self.sweep_id, "vgtune.trial_id": tid, "status": "running"})
            params = [Param(k, str(v)) for k, v in cfg.items()]
            for i in range(0, len(params), 100):
                self.client.log_batch(run.info.run_id, params=params[i:i + 100])
            self._runs[tid] = run.info.run_id
            self._steps[tid] = 0
        return self._runs[tid]

    def on_trial_start(self, iteration: int, trials: list, trial, **info: Any) -> None:
        self._run_for(trial)

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info: Any) -> None:
        run_id, tid = self._run_for(trial), trial.trial_id
        epoch = int(result.get("epoch", 0))
        layers = result.get("layers") or {}
        init = result.get("layers_init") or {}
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
        log_metrics(self.client, run_id, metrics, [RunTag("vgtune.epoch", str(epoch))])
        self._steps[tid] = epoch

    def on_trial_complete(self, iteration: int, trials: list, trial, **info: Any) -> None:
        last = trial.last_result or {}
        cfg = trial.config["train"]
        status = final_status(last, cfg["epochs"])
        tags = {"status": status, "diagnosis": last.get("diagnosis", "healthy")}
        if status == "stopped":
            reason = (self.stopper.reasons.get(trial.trial_id) if self.stopper else None) or "stopped by the scheduler"
            tags["vgtune.stop_reason"] = reason
        self._close(trial, tags, "FINISHED", last)

    def on_trial_error(self, iteration: int, trials: list, trial, **info: Any) -> None:
        try:
            text = str(trial.get_error() or "unknown error")
        except Exception as exc:  # the error file may be gone on a remote node
            text = f"unknown error ({exc})"
        run_id = self._run_for(trial)
        self.client.log_text(run_id, text, "error.txt")
        tags = {"status": "error", "diagnosis": (trial.last_result or {}).get("diagnosis", "healthy"),
                "vgtune.error": text.strip().splitlines()[-1][:4000] if text.strip() else "unknown error"}
        self._close(trial, tags, "FAILED", trial.last_result or {})

    def _close(self, trial, tags: dict[str, str], run_status: str, last: dict[str, Any]) -> None:
        run_id, tid = self._run_for(trial), trial.trial_id
        now, step = int(time.time() * 1000), int(last.get("epoch", 0))
        final = {"grad_attenuation_final": last.get("grad_attenuation"), "epochs_run": step,
                 "train_seconds": last.get("train_seconds")}
        metrics = [Metric(k, float(v), now, step) for k, v in final.items() if _finite(v)]
        self.client.log_batch(run_id, metrics=metrics, tags=[RunTag(k, v) for k, v in tags.items()])
        probes = self._probes.pop(tid, [])
        if probes:
            fig = plots.gradient_flow(probes, title=f"{trial_name(trial.config['train'])} [{tags['status']}, "
                                                    f"{tags['diagnosis']}]")
            self.client.log_figure(run_id, fig, "gradient_flow.png")
            plots.close(fig)
        self.client.set_terminated(run_id, run_status)
        self.counts[tags["status"]] = self.counts.get(tags["status"], 0) + 1


__all__ = ["MLflowTracker", "resolve_uri", "check_uri", "log_metrics", "epoch_metrics", "FACTORS", "SERIES"]
