"""The thin Ray Tune adapter around `vgtune.train`: report per epoch, checkpoint, resume.

Each epoch becomes one `tune.report` with the epoch's metrics, the per-block
series of its gradient-flow probe under `layers`, and (every `checkpoint_every`
epochs and at the end) a checkpoint from which a retried trial
(`FailureConfig.max_failures`) or a resumed sweep continues.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from vgtune import usercode
from vgtune.config import THEORY
from vgtune.gradflow import Thresholds
from vgtune.train import EpochReport, TrainConfig, train

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
    cfg = TrainConfig.from_dict(config["trial"]["train"])
    thresholds = Thresholds(**config.get("thresholds", {}))
    every = int(config.get("checkpoint_every", 1))

    node = ray.get_runtime_context().get_node_id()

    def on_epoch(report: EpochReport) -> None:
        metrics = epoch_metrics(report) | {"node": node}
        if report.metrics["epoch"] % every and not report.final:
            tune.report(metrics)
            return
        with tempfile.TemporaryDirectory() as d:
            torch.save(report.state(), Path(d) / STATE_FILE)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))

    train(cfg, on_epoch=on_epoch, resume=_load_state(tune.get_checkpoint()), thresholds=thresholds)
