"""Load a sweep's trials from MLflow into one tidy DataFrame (one row per trial).

Columns follow DESIGN.md: the factors `depth, width, activation, init, norm,
residual, optimizer, lr, seed, dataset`, then `status, diagnosis, test_acc,
val_acc, train_loss, grad_attenuation_init, grad_attenuation_final,
train_seconds, epochs_run, mlflow_run_id`. Other training options follow as
extra factor columns; the final per-block series stay in `block*/...` columns
for the plots.

Several invocations of one sweep (resumed, or re-run with more seeds) merge:
a configuration run twice counts once, its most recent finished run winning.
"""

from __future__ import annotations

import mlflow
import pandas as pd
from mlflow.tracking import MlflowClient

FACTORS = ["depth", "width", "activation", "init", "norm", "residual", "optimizer", "lr", "seed", "dataset"]
RESULTS = ["status", "diagnosis", "test_acc", "val_acc", "train_loss", "grad_attenuation_init",
           "grad_attenuation_final", "train_seconds", "epochs_run", "mlflow_run_id"]
EXTRA_FACTORS = ["kernel_size", "pool", "dropout", "weight_decay", "momentum", "epochs", "batch_size",
                 "data_root", "limit", "split_seed"]
NUMERIC = {"depth": int, "width": int, "lr": float, "seed": int, "kernel_size": int, "dropout": float,
           "weight_decay": float, "momentum": float, "epochs": int, "batch_size": int, "split_seed": int}


class UnknownExperiment(ValueError):
    pass


def experiments(uri: str) -> list[str]:
    return [e.name for e in MlflowClient(uri).search_experiments() if e.name != "Default"]


def latest_sweep_run(client: MlflowClient, experiment_ids: list[str]):
    """The most recently started sweep (parent) run among these experiments, or None."""
    runs = client.search_runs(experiment_ids, "tags.`vgtune.role` = 'sweep'", max_results=1,
                              order_by=["start_time DESC"])
    return runs[0] if runs else None


def last_experiment(uri: str) -> str:
    """The experiment of the most recently started sweep."""
    client = MlflowClient(uri)
    run = latest_sweep_run(client, [e.experiment_id for e in client.search_experiments()])
    if run is None:
        raise UnknownExperiment(f"no vgtune sweep in {uri} yet; run `make sweep` first")
    return client.get_experiment(run.info.experiment_id).name


def _require(uri: str, experiment: str) -> str:
    exp = MlflowClient(uri).get_experiment_by_name(experiment)
    if exp is None:
        names = experiments(uri)
        raise UnknownExperiment(f"no experiment {experiment!r} in {uri}; existing: {', '.join(names) or '(none)'}")
    return exp.experiment_id


def load_trials(uri: str, experiment: str, sweep: str | None = None) -> pd.DataFrame:
    """One row per distinct trial configuration of `experiment` (optionally one sweep folder)."""
    exp_id = _require(uri, experiment)
    filt = "tags.`vgtune.role` = 'trial'" + (f" and tags.`vgtune.sweep` = '{sweep}'" if sweep else "")
    mlflow.set_tracking_uri(uri)
    raw = mlflow.search_runs([exp_id], filter_string=filt, max_results=100000, output_format="pandas")
    if sweep and raw.empty:
        sweeps = sorted({r.data.tags.get("vgtune.sweep", "") for r in MlflowClient(uri).search_runs(
            [exp_id], "tags.`vgtune.role` = 'sweep'", max_results=1000)} - {""})
        raise UnknownExperiment(f"no runs of sweep {sweep!r} in experiment {experiment!r}; "
                                f"its sweeps: {', '.join(sweeps) or '(none)'}")
    return tidy(raw)


def tidy(raw: pd.DataFrame) -> pd.DataFrame:
    """MLflow's search_runs frame -> the trials table."""
    if raw.empty:
        return pd.DataFrame(columns=FACTORS + RESULTS)
    df = pd.DataFrame(index=raw.index)
    for col in FACTORS + EXTRA_FACTORS:
        values = raw.get(f"params.{col}")
        if values is None:
            continue
        if col in NUMERIC:
            values = pd.to_numeric(values.replace("None", None), errors="coerce")
            if NUMERIC[col] is int and values.notna().all():
                values = values.astype(int)
        df[col] = values
    df["status"] = raw.get("tags.status", pd.Series("running", index=raw.index)).fillna("running")
    df["diagnosis"] = raw.get("tags.diagnosis", pd.Series("healthy", index=raw.index)).fillna("healthy")
    for col in ("test_acc", "val_acc", "train_loss", "grad_attenuation_init", "grad_attenuation_final",
                "train_seconds", "epochs_run"):
        df[col] = raw.get(f"metrics.{col}", pd.Series(float("nan"), index=raw.index))
    df["grad_attenuation_final"] = df["grad_attenuation_final"].fillna(raw.get("metrics.grad_attenuation"))
    df["epochs_run"] = df["epochs_run"].fillna(pd.to_numeric(raw.get("tags.vgtune.epoch"), errors="coerce"))
    df["mlflow_run_id"] = raw["run_id"]
    df["sweep"] = raw.get("tags.vgtune.sweep")
    df["end_time"] = raw.get("end_time")
    blocks = raw[[c for c in raw.columns if c.startswith("metrics.block")]]
    df = pd.concat([df, blocks.rename(columns=lambda c: c[len("metrics."):])], axis=1)
    return _dedupe(df)


def _dedupe(df: pd.DataFrame) -> pd.DataFrame:
    """A configuration run in several invocations counts once: finished beats running, newest wins."""
    config_cols = [c for c in FACTORS + EXTRA_FACTORS if c in df.columns]
    finished = (df["status"] != "running").astype(int)
    order = df.assign(_finished=finished).sort_values(["_finished", "end_time"], na_position="first")
    keys = order[config_cols].astype(str).agg("|".join, axis=1)
    kept = order[~keys.duplicated(keep="last")].drop(columns="_finished")
    return kept.sort_values(config_cols, kind="stable").reset_index(drop=True)
