"""Report benchmarks: ranking + plots for 10,000 trials; loading 1,000 runs from SQLite; and the whole
`vgtune report` of a 10,000-trial sweep from its store (1,000 runs logged through MlflowClient with
every per-block series of a 24-block net, copied ten times over in SQL under new run ids and seeds)."""

from __future__ import annotations

import itertools
import sqlite3
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from vgtune.analysis import report
from vgtune.core.columns import SERIES
from vgtune.tracking import reader
from vgtune.tracking.reader import load_trials
from vgtune.tracking.store import experiment_id, sqlite_path

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


def _fill_store(uri: str, n: int, blocks: bool = False) -> None:
    """n trial runs as a sweep logs them (with `blocks`, the final probe's 7 series of every block too)."""
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
        if blocks:
            metrics += [Metric(f"block{b + 1:02d}/{k}", float(b), 0, 4) for b in range(int(row.depth)) for k in SERIES]
        tags = [RunTag("vgtune.role", "trial"), RunTag("vgtune.sweep", "load-1"), RunTag("status", row.status),
                RunTag("diagnosis", row.diagnosis), RunTag("mlflow.parentRunId", parent)]
        client.log_batch(rid, metrics=metrics, params=params, tags=tags)
        client.set_terminated(rid)


def _copy_runs(uri: str, times: int) -> None:
    """Every trial run `times` more times under new run ids, each copy with its own seeds (so no dedupe)."""
    con = sqlite3.connect(sqlite_path(uri))
    con.execute("CREATE TEMP TABLE originals AS SELECT run_uuid FROM tags WHERE key = 'vgtune.role' AND "
                "value = 'trial'")
    trials = "SELECT run_uuid FROM originals"
    with con:
        for k in range(1, times + 1):
            for table in ("runs", "tags", "params", "latest_metrics", "metrics"):
                cols = [c[1] for c in con.execute(f"PRAGMA table_info({table})")]
                exprs = [f"run_uuid || '-{k}'" if c == "run_uuid" else
                         f"CASE WHEN key = 'seed' THEN CAST(CAST(value AS INTEGER) + {k * 100000} AS TEXT) "
                         f"ELSE value END" if (table == "params" and c == "value") else c for c in cols]
                con.execute(f"INSERT INTO {table} ({', '.join(cols)}) SELECT {', '.join(exprs)} FROM {table} "
                            f"WHERE run_uuid IN ({trials})")
    con.close()


def _from_store() -> dict[str, float]:
    """Seconds to load the 10,000 trials (SQL fast path; search_runs, the baseline) and for the whole report."""
    with tempfile.TemporaryDirectory() as d:
        uri = f"sqlite:///{d}/mlflow.db"
        _fill_store(uri, 1000, blocks=True)
        _copy_runs(uri, 9)
        t0 = time.perf_counter()
        folder = report.build("load", uri, Path(d) / "reports")
        whole = time.perf_counter() - t0
        t0 = time.perf_counter()
        fast = load_trials(uri, "load")
        fast_s = time.perf_counter() - t0
        exp_id = MlflowClient(uri).get_experiment_by_name("load").experiment_id
        t0 = time.perf_counter()
        slow = reader.tidy(reader._search_all(reader.client_for(uri), exp_id, "tags.`vgtune.role` = 'trial'"))
        slow_s = time.perf_counter() - t0
        assert len(fast) == len(slow) == len(pd.read_csv(folder / "trials.csv")) == 10_000
    return {"whole": whole, "fast": fast_s, "search_runs": slow_s}


def run() -> list[dict]:
    df = synthetic_trials()
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        report.write(df, "bench", Path(d) / "bench")
        ranking_s = time.perf_counter() - t0
    t = _from_store()
    return [
        {"name": "report: ranking + plots for 10,000 trials (seconds)", "value": ranking_s, "target": "<= 5",
         "ok": ranking_s <= 5.0},
        {"name": "report: vgtune report of a 10,000-trial sweep from SQLite (seconds)", "value": t["whole"],
         "target": "<= 10", "ok": t["whole"] <= 10, "note": "24-block series on every run"},
        {"name": "report: loading those runs, search_runs time / SQL time", "value": t["search_runs"] / t["fast"],
         "target": "report", "note": f"SQL {t['fast']:.1f}s, MlflowClient.search_runs {t['search_runs']:.1f}s"},
    ]
