"""A sweep's MLflow runs: one parent run per invocation, one child run per trial.

`RunLogger` does the MLflow side of `vgtune.driver.mlflow_callback.MLflowTracker`; it knows
nothing of Ray. Its methods run in one writer process (`vgtune.tracking.writer_process`), in order, so a SQLite
store sees a single writer. Every epoch of a trial is one `log_batch` request
(metrics plus the progress tag), never a request per metric.

Child runs carry the tags `vgtune.sweep` (the sweep's run folder), `vgtune.trial_id`,
`status` and `diagnosis`; a resumed sweep finds its trials' runs by these tags
and continues them, so no trial ever gets a second run.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from vgtune.core.columns import EPOCH_METRICS, THEORY_METRICS
from vgtune.core.schema import RUNNING, param_text
from vgtune.tracking import flow_figure
from vgtune.tracking.store import Unavailable, client_for, experiment_id, git_commit

MAX_BATCH = 1000  # MLflow's limit of metrics per log_batch
PLOT = "gradient_flow.svg"  # each trial run's gradient-flow plot (vgtune.tracking.flow_figure)
# What the runs table shows when opened through `view_url` (the experiment's shared view).
VIEW_KEY = "vgtune"
VIEW_COLUMNS = (["params.`depth`", "params.`activation`", "params.`init`", "params.`norm`", "params.`residual`",
                 "params.`lr`", "params.`seed`", "metrics.`test_acc`", "metrics.`grad_attenuation_init`",
                 "metrics.`grad_attenuation_final`", "tags.`status`", "tags.`diagnosis`"])
DESCRIPTION = """A vgtune sweep: one parent run per `vgtune sweep` invocation, one child run per trial.

Each trial's factors are params (depth, activation, init, norm, residual, lr, seed, ...); its results are
metrics (test_acc, val_acc, grad_attenuation_init, grad_attenuation_final) and tags (status, diagnosis).
Per-block gradient flow is in `blockNN/<series>` metrics (step 0 = initialization) and `gradient_flow.svg`.

The runs table opens with these columns from the link `vgtune sweep` prints (`?viewStateShareKey=vgtune`);
otherwise pick them under *Columns*: depth, activation, init, norm, residual, test_acc,
grad_attenuation_final, diagnosis. The ranking of mitigations is in the sweep run's `report/` artifacts.
"""


def loggable(value: Any) -> bool:
    """A number MLflow can store: not NaN (+-inf is kept, as +-max float in SQL stores)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)


def epoch_metrics(result: dict[str, Any], step: int, now_ms: int) -> list[Metric]:
    """One epoch's scalars and per-block series (`block03/grad_norm`), step = epoch."""
    metrics = [Metric(k, float(result[k]), now_ms, step) for k in EPOCH_METRICS if loggable(result.get(k))]
    for name, values in (result.get("layers") or {}).items():
        metrics += [Metric(f"block{i + 1:02d}/{name}", float(v), now_ms, step)
                    for i, v in enumerate(values) if loggable(v)]
    return metrics


def log_metrics(client: MlflowClient, run_id: str, metrics: list[Metric], tags: list[RunTag] = ()) -> None:
    """Batched: at most MAX_BATCH metrics per request."""
    for i in range(0, max(1, len(metrics)), MAX_BATCH):
        client.log_batch(run_id, metrics=metrics[i:i + MAX_BATCH], tags=list(tags) if i == 0 else [])


def trial_name(cfg: dict[str, Any], factors: list[str]) -> str:
    """The run name: the trial's value of every factor the sweep varies (depth if none varies)."""
    return " ".join(f"{k}={cfg[k]}" for k in (factors or ["depth"]) if k in cfg)[:200]


def view_state(parent_run_id: str | None) -> str:
    """The runs table's shared view: vgtune's columns, best test accuracy first, this sweep unfolded."""
    state = {"selectedColumns": VIEW_COLUMNS, "orderByKey": "metrics.`test_acc`", "orderByAsc": False,
             "runsExpanded": {parent_run_id: True} if parent_run_id else {}}
    return json.dumps(state)


def view_url(base: str, exp_id: str) -> str:
    """The experiment's runs table in the model-training layout with vgtune's columns."""
    return f"{base.rstrip('/')}/#/experiments/{exp_id}/runs?viewStateShareKey={VIEW_KEY}&workflowType=machine_learning"


class RunLogger:
    """The MLflow runs of one sweep invocation (call from one thread only)."""

    def __init__(self, uri: str, experiment: str, sweep_id: str, spec_text: str, total_trials: int,
                 factors: list[str], params: dict[str, str] | None = None):
        self.uri = uri
        self.experiment = experiment  # MLflow experiment (= spec name)
        self.sweep_id = sweep_id  # run folder name, stable across --resume
        self.spec_text = spec_text  # the spec as run, logged on the parent run
        self.total_trials = total_trials  # the most trials the sweep's design can run (param `trials_max`)
        self.factors = factors  # options the sweep varies: the trial run names
        self.params = params or {}  # more params of the sweep run (the diagnosis thresholds)
        self._client: MlflowClient | None = None
        self.exp_id: str | None = None
        self.parent_run_id: str | None = None  # this invocation's sweep run
        self.runs: dict[str, str] = {}  # trial id -> run id
        self.steps: dict[str, int] = {}  # trial id -> last epoch logged
        self.probes: dict[str, list[tuple[int, list[float]]]] = {}  # for the plot
        self.counts: dict[str, int] = {}  # final status -> trials
        self.finished_before: set[str] = set()  # trial ids whose runs an earlier invocation finished

    @property
    def client(self) -> MlflowClient:
        """Made on first use, in the writer process: opening a new store can take seconds, or fail."""
        if self._client is None:
            self._client = client_for(self.uri)
        return self._client

    # -- the sweep run ------------------------------------------------------------
    def start(self) -> None:
        """The experiment, earlier runs of this sweep (a resume), and this invocation's parent run."""
        self.exp_id = experiment_id(self.client, self.uri, self.experiment, DESCRIPTION)
        self._adopt_existing_runs()
        run = self.client.create_run(self.exp_id, run_name=f"sweep {self.sweep_id}", tags={
            "vgtune.role": "sweep", "vgtune.sweep": self.sweep_id, "vgtune.resumed": str(bool(self.runs)).lower(),
            "mlflow.source.git.commit": git_commit()})
        self.parent_run_id = run.info.run_id
        self.client.log_text(self.parent_run_id, self.spec_text, "spec.yaml")
        params = {"trials_max": str(self.total_trials), "sweep": self.sweep_id} | self.params
        self.client.log_batch(self.parent_run_id, params=[Param(k, v) for k, v in params.items()])
        self.client.set_experiment_tag(self.exp_id, f"mlflow.sharedViewState.{VIEW_KEY}",
                                       view_state(self.parent_run_id))

    def _adopt_existing_runs(self) -> None:
        runs = self.client.search_runs(
            [self.exp_id], f"tags.`vgtune.sweep` = '{self.sweep_id}' and tags.`vgtune.role` = 'trial'",
            max_results=50000)
        for run in runs:
            tid = run.data.tags.get("vgtune.trial_id")
            if tid:
                self.runs[tid] = run.info.run_id
                self.steps[tid] = int(run.data.tags.get("vgtune.epoch", "0"))
                status = run.data.tags.get("status")
                if status not in (None, RUNNING):
                    self.counts[status] = self.counts.get(status, 0) + 1
                    self.finished_before.add(tid)

    def finish(self, failures: int, status: str = "FINISHED") -> None:
        if self.parent_run_id is None:
            return
        tags = [RunTag(f"trials.{k}", str(v)) for k, v in sorted(self.counts.items())]
        tags.append(RunTag("trials", str(sum(self.counts.values()))))
        if failures:
            tags.append(RunTag("vgtune.write_failures", str(failures)))
        self.client.log_batch(self.parent_run_id, tags=tags)
        self.client.set_terminated(self.parent_run_id, status)

    # -- trial runs -------------------------------------------------------------
    def trial_run(self, tid: str, cfg: dict[str, Any], meta: dict[str, str] | None = None) -> str:
        """The trial's run id, its run created on first use: every option a param, `meta` (arm,
        nuisance setting, variant) as `vgtune.*` tags."""
        if self.parent_run_id is None:
            raise Unavailable(f"no sweep run in {self.uri} (its creation failed), so no trial run")
        if tid not in self.runs:
            run = self.client.create_run(self.exp_id, run_name=f"{trial_name(cfg, self.factors)} {tid}", tags={
                "mlflow.parentRunId": self.parent_run_id, "vgtune.role": "trial",
                "vgtune.sweep": self.sweep_id, "vgtune.trial_id": tid, "status": RUNNING,
                **{f"vgtune.{k}": v for k, v in (meta or {}).items()}})
            params = [Param(k, param_text(v)) for k, v in cfg.items()]
            for i in range(0, len(params), 100):
                self.client.log_batch(run.info.run_id, params=params[i:i + 100])
            self.runs[tid] = run.info.run_id
            self.steps[tid] = 0
        return self.runs[tid]

    def log_result(self, tid: str, cfg: dict[str, Any], result: dict[str, Any]) -> None:
        """One epoch: metrics at step = epoch; the initialization probe at step 0 with the first epoch."""
        run_id = self.trial_run(tid, cfg)
        epoch = int(result.get("epoch", 0))
        layers, init = result.get("layers") or {}, result.get("layers_init") or {}
        if "grad_norm" in init:
            self.probes.setdefault(tid, []).append((0, init["grad_norm"]))
        if "grad_norm" in layers:
            self.probes.setdefault(tid, []).append((epoch, layers["grad_norm"]))
        if epoch <= self.steps.get(tid, 0):
            return  # already logged before a retry or a resume
        now = int(time.time() * 1000)
        metrics = epoch_metrics(result, epoch, now)
        if init:  # initialization is step 0
            metrics += epoch_metrics({"grad_attenuation": result.get("grad_attenuation_init"), "layers": init}, 0, now)
            if loggable(result.get("grad_attenuation_init")):
                metrics.append(Metric("grad_attenuation_init", float(result["grad_attenuation_init"]), now, 0))
        metrics += [Metric(k, float(result[k]), now, 0) for k in THEORY_METRICS if loggable(result.get(k))]
        tags = [RunTag("vgtune.epoch", str(epoch))]
        if "theory" in result:
            tags.append(RunTag("vgtune.theory", str(result["theory"])))
        if "node" in result:
            tags.append(RunTag("vgtune.node", result["node"]))
        log_metrics(self.client, run_id, metrics, tags)
        self.steps[tid] = epoch

    def close(self, tid: str, cfg: dict[str, Any], tags: dict[str, str], run_status: str,
              last: dict[str, Any], error_text: str | None = None) -> None:
        """Final metrics and tags, the gradient-flow plot (and the error trace), then end the run."""
        run_id = self.trial_run(tid, cfg)
        if error_text is not None:
            self.client.log_text(run_id, error_text, "error.txt")
        now, step = int(time.time() * 1000), int(last.get("epoch", 0))
        final = {"grad_attenuation_final": last.get("grad_attenuation"), "epochs_run": step,
                 "train_seconds": last.get("train_seconds"), "setup_seconds": last.get("setup_seconds")}
        metrics = [Metric(k, float(v), now, step) for k, v in final.items() if loggable(v)]
        self.client.log_batch(run_id, metrics=metrics, tags=[RunTag(k, v) for k, v in tags.items()])
        probes = self.probes.pop(tid, [])
        if probes:
            title = f"{trial_name(cfg, self.factors)} [{tags['status']}, {tags['diagnosis']}]"
            self.client.log_text(run_id, flow_figure.gradient_flow(probes, title=title), PLOT)
        self.client.set_terminated(run_id, run_status)
        self.counts[tags["status"]] = self.counts.get(tags["status"], 0) + 1

    def set_failures(self, tid: str, cfg: dict[str, Any], failures: int) -> None:
        self.client.set_tag(self.trial_run(tid, cfg), "vgtune.failures", str(failures))


def log_report(uri: str, run_id: str, folder: Path) -> None:
    """Attach a report folder (`vgtune.analysis.report`) to its sweep's run, under `report/`."""
    client_for(uri).log_artifacts(run_id, str(folder), "report")
