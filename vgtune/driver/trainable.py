"""The thin Ray Tune adapter around `vgtune.train`: report per epoch, checkpoint, resume.

Each epoch becomes one `tune.report` with the epoch's metrics, the per-block
series of its gradient-flow probe under `layers`, and (every `checkpoint_every`
epochs and at the end) a checkpoint from which a retried trial
(`FailureConfig.max_failures`) or a resumed sweep continues.

A pack (`vgtune.pack`: `config["trial"]["members"]`) is one Tune trial that
trains several trials as one fused network. Its epoch report carries each
member's metrics under `members` (`member` = its index) and every member's latest
scalars under `summary`; the gradient-collapse stopper runs here, per member,
since Tune would stop the whole pack.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from vgtune.core import usercode
from vgtune.core.columns import THEORY
from vgtune.core.diagnosis import Thresholds
from vgtune.core.fused import train_pack
from vgtune.core.packing import left
from vgtune.core.train import EpochReport, TrainConfig, train
from vgtune.driver.stopper import GradientCollapseStopper

STATE_FILE = "state.pt"


def epoch_metrics(report: EpochReport) -> dict[str, Any]:
    """What one `tune.report` carries: the epoch's row, the init attenuation, per-block lists."""
    metrics = dict(report.metrics)
    if "grad_attenuation_init" in report.summary:
        metrics["grad_attenuation_init"] = report.summary["grad_attenuation_init"]
    if report.layers is not None:
        metrics["layers"] = report.layers
    if report.init_layers is not None:
        metrics["layers_init"] = report.init_layers
    if report.metrics["epoch"] == 1:  # with the first epoch: the prediction for initialization
        metrics |= {k: report.summary[k] for k in THEORY if k in report.summary}
    return metrics


def _load_state(checkpoint: tune.Checkpoint | None) -> dict[str, Any] | None:
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as d:
        return torch.load(Path(d) / STATE_FILE, weights_only=False)


def run_trial(config: dict[str, Any]) -> None:
    """Tune function trainable; `config["trial"]["train"]` is a TrainConfig dict."""
    for folder in config.get("import_paths", []):
        usercode.add_path(folder)
    if "members" in config["trial"]:
        run_pack(config)
        return
    cfg = TrainConfig.from_dict(config["trial"]["train"])
    thresholds = Thresholds(**config.get("thresholds", {}))
    every = int(config.get("checkpoint_every", 1))

    node = ray.get_runtime_context().get_node_id()

    def on_epoch(report: EpochReport) -> None:
        due = report.final or report.metrics["epoch"] % every == 0
        _checkpointed(epoch_metrics(report) | {"node": node}, report.state() if due else None)

    train(cfg, on_epoch=on_epoch, resume=_load_state(tune.get_checkpoint()), thresholds=thresholds, checked=True)


def _checkpointed(metrics: dict[str, Any], state: dict[str, Any] | None) -> None:
    """One `tune.report`, with a checkpoint of `state` unless it is None."""
    if state is None:
        tune.report(metrics)
        return
    with tempfile.TemporaryDirectory() as d:
        torch.save(state, Path(d) / STATE_FILE)
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))


def run_pack(config: dict[str, Any]) -> None:
    """A pack of trials as one Tune trial: one report per epoch with every member's metrics."""
    members = config["trial"]["members"]
    cfgs = [TrainConfig.from_dict(m["train"]) for m in members]
    thresholds = Thresholds(**config.get("thresholds", {}))
    every = int(config.get("checkpoint_every", 1))
    metric, mode = config.get("metric", "val_acc"), config.get("mode", "max")
    stop = config.get("member_stop")
    stopper = GradientCollapseStopper(**stop) if stop else None
    node = ray.get_runtime_context().get_node_id()
    saved = _load_state(tune.get_checkpoint())
    states = {}  # member -> its latest checkpoint (a member that ended keeps its last one)
    summary: list[dict[str, Any]] = [{} for _ in members]  # each member's latest scalars
    stopped: set[int] = set()  # members the stopper ended
    if saved is not None:
        summary = saved["summary"]

    def on_epoch(reports: dict[int, EpochReport]) -> set[int]:
        rows, stops = [], set()
        for k, report in reports.items():
            row = epoch_metrics(report) | {"member": k, "node": node}
            if stopper is not None and stopper(str(k), row):
                row["stop_reason"] = stopper.reasons[str(k)]
                stops.add(k)
            rows.append(row)
            states[k] = report.state
            summary[k] = {key: v for key, v in row.items() if key not in ("layers", "layers_init")}
        scores = [r[metric] for r in summary if isinstance(r.get(metric), (int, float))]
        ended = all(left(r) for r in summary)
        result = {"epoch": max(r.get("epoch", 0) for r in summary), "status": "completed" if ended else "running",
                  "members": rows, "summary": summary, "node": node}
        if scores:
            result[metric] = max(scores) if mode == "max" else min(scores)
        due = ended or result["epoch"] % every == 0
        stopped.update(stops)
        _checkpointed(result, {"members": [_member_state(k) for k in range(len(members))],
                               "summary": summary} if due else None)
        return stops

    def _member_state(k: int) -> dict[str, Any]:
        if k not in states:  # ended before this (resumed) run began
            return saved["members"][k]
        state = states[k]()
        if k in stopped:  # the state was taken before the pack marked it
            state["result"]["status"] = "stopped"
        return state

    resume = saved["members"] if saved is not None else None
    train_pack(cfgs, on_epoch=on_epoch, resume=resume, thresholds=thresholds)
