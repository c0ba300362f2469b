"""Report benchmarks: ranking + plots for 10,000 trials, and loading 1,000 runs from SQLite."""

from __future__ import annotations

import cProfile
import itertools
import pstats
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from vgtune import report
from vgtune.runs import load_trials
from vgtune.store import experiment_id

GRID = {"depth": [4, 8, 12, 16, 24], "activation": ["sigmoid", "tanh", "relu", "gelu"],
        "init": ["default", "xavier_normal", "kaiming_normal", "orthogonal", "lsuv"],
        "norm": ["none", "batch", "group"], "residual": ["none", "standard", "rezero"]}


def synthetic_trials(n: int = 10_000, seed: int = 0) -> pd.DataFrame:
    """A trials table shaped like a real sweep's, with a made-up but depth-sensitive outcome."""
    rng = np.random.default_rng(seed)
    configs = list(itertools.product(*GRID.values()))
    seeds = -(-n // len(configs))
    rows = [dict(zip(GRID, c)) | {"seed": s} for s in range(seeds) for c in configs][:n]
    df = pd.DataFrame(rows)
    rescue = (df.norm != "none") | (df.residual != "none") | (df.init != "default")
    att = np.where(rescue, -0.5, -0.6 * df.depth) + rng.normal(0, 0.3, n)
    df["grad_attenuation_init"] = att
    df["grad_attenuation_final"] = att + rng.normal(0, 0.2, n)
    df["test_acc"] = np.clip(np.where(att < -2, 0.1, 0.95 - 0.004 * df.depth) + rng.normal(0, 0.03, n), 0, 1)
    df["val_acc"] = df["test_acc"]
    df["diagnosis"] = np.where(att < -2, "vanishing", "healthy")
    df["status"] = "completed"
    for col, value in {"width": 16, "optimizer": "sgd", "lr": 0.05, "dataset": "digits", "train_loss": 0.5,
                       "train_seconds": 1.0, "epochs_run": 6, "mlflow_run_id": "x"}.items():
        df[col] = value
    for b in range(24):
        df[f"block{b + 1:02d}/grad_norm"] = np.where(df.depth > b, 10 ** (att * (1 - b / 24)), np.nan)
    return df


def _fill_store(uri: str, n: int) -> None:
    client = MlflowClient(uri)
    exp = experiment_id(client, uri, "load")
    parent = client.create_run(exp, tags={"vgtune.role": "sweep", "vgtune.sweep": "load-1"}).info.run_id
    df = synthetic_trials(n)
    for row in df.itertuples(index=False):
        rid = client.create_run(exp).info.run_id
        params = [Param(k, str(getattr(row, k))) for k in ("depth", "width", "activation", "init", "norm",
                                                           "residual", "optimizer", "lr", "seed", "dataset")]
        metrics = [Metric(k, float(getattr(row, k)), 0, 4) for k in
                   ("test_acc", "val_acc", "train_loss", "grad_attenuation_init", "grad_attenuation_final",
                    "train_seconds", "epochs_run")]
        tags = [RunTag("vgtune.role", "trial"), RunTag("vgtune.sweep", "load-1"), RunTag("status", row.status),
                RunTag("diagnosis", row.diagnosis), RunTag("mlflow.parentRunId", parent)]
        client.log_batch(rid, metrics=metrics, params=params, tags=tags)
        client.set_terminated(rid)


def run() -> list[dict]:
    df = synthetic_trials()
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        report.write(df, "bench", Path(d) / "bench")
        ranking_s = time.perf_counter() - t0
    rows = [{"name": "report: ranking + plots for 10,000 trials (seconds)", "value": ranking_s, "target": "<= 5",
             "ok": ranking_s <= 5.0}]
    with tempfile.TemporaryDirectory() as d:
        uri = f"sqlite:///{d}/mlflow.db"
        _fill_store(uri, 1000)
        prof = cProfile.Profile()
        t0 = time.perf_counter()
        prof.enable()
        loaded = load_trials(uri, "load")
        prof.disable()
        load_s = time.perf_counter() - t0
    stats = pstats.Stats(prof)
    search = sum(v[3] for k, v in stats.stats.items() if k[2] == "search_runs" and "mlflow/tracking/client" in k[0])
    rows.append({"name": "report: load 1,000 runs from SQLite (seconds)", "value": load_s, "target": "report",
                 "note": f"{len(loaded)} trials; {search:.2f}s in MlflowClient.search_runs (SQL queries and entity "
                         f"building), {load_s - search:.2f}s in pandas tidying"})
    return rows
