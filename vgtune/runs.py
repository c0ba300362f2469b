"""Load a sweep's trials from MLflow into one tidy DataFrame (one row per trial).

The columns are `vgtune.config`'s: every `TrainConfig` field as a typed factor
column (contract factors first), the result columns, then `sweep`, `end_time`
and the final per-block series as `block*/...` columns for the plots.

Several invocations of one sweep (resumed, or re-run with more seeds) merge:
a configuration run twice counts once, its most recent finished run winning.
Two trials that differ in any training option are two rows.
"""

from __future__ import annotations

import math

import pandas as pd
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from vgtune.config import ARM_COLUMNS, FACTORS, RESULTS, parse_param
from vgtune.store import client_for

SQL_INF = 1.7e308  # MLflow's SQL stores keep +-inf as +-max float
RESULT_METRICS = ("test_acc", "val_acc", "train_loss", "grad_attenuation_init", "grad_attenuation_final",
                  "train_seconds", "epochs_run", "chi1", "depth_scale", "grad_attenuation_predicted")


class UnknownExperiment(ValueError):
    pass


def experiments(uri: str) -> list[str]:
    return [e.name for e in client_for(uri).search_experiments() if e.name != "Default"]


def latest_sweep_run(client: MlflowClient, experiment_ids: list[str]):
    """The most recently started sweep (parent) run among these experiments, or None."""
    runs = client.search_runs(experiment_ids, "tags.`vgtune.role` = 'sweep'", max_results=1,
                              order_by=["start_time DESC"])
    return runs[0] if runs else None


def last_experiment(uri: str) -> str:
    """The experiment of the most recently started sweep."""
    client = client_for(uri)
    run = latest_sweep_run(client, [e.experiment_id for e in client.search_experiments()])
    if run is None:
        raise UnknownExperiment(f"no vgtune sweep in {uri} yet; run `make sweep` first")
    return client.get_experiment(run.info.experiment_id).name


def _require(uri: str, experiment: str) -> str:
    exp = client_for(uri).get_experiment_by_name(experiment)
    if exp is None:
        names = experiments(uri)
        raise UnknownExperiment(f"no experiment {experiment!r} in {uri}; existing: {', '.join(names) or '(none)'}")
    return exp.experiment_id


def load_trials(uri: str, experiment: str, sweep: str | None = None) -> pd.DataFrame:
    """One row per distinct trial configuration of `experiment` (optionally one sweep folder)."""
    exp_id = _require(uri, experiment)
    client = client_for(uri)
    filt = "tags.`vgtune.role` = 'trial'" + (f" and tags.`vgtune.sweep` = '{sweep}'" if sweep else "")
    runs = _search_all(client, exp_id, filt)
    if sweep and not runs:
        sweeps = sorted({r.data.tags.get("vgtune.sweep", "") for r in _search_all(
            client, exp_id, "tags.`vgtune.role` = 'sweep'")} - {""})
        raise UnknownExperiment(f"no runs of sweep {sweep!r} in experiment {experiment!r}; "
                                f"its sweeps: {', '.join(sweeps) or '(none)'}")
    return tidy(runs)


def _search_all(client: MlflowClient, exp_id: str, filt: str) -> list[Run]:
    runs, token = [], None
    while True:
        page = client.search_runs([exp_id], filt, max_results=50000, page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            return runs


def _metric(value: float | None) -> float:
    if value is None:
        return math.nan
    if abs(value) >= SQL_INF:
        return math.copysign(math.inf, value)
    return value


def _row(run: Run) -> dict:
    params, metrics, tags = run.data.params, run.data.metrics, run.data.tags
    row = {f: parse_param(f, params.get(f)) for f in FACTORS}
    row["status"] = tags.get("status", "running")
    row["diagnosis"] = tags.get("diagnosis", "healthy")
    row |= {m: _metric(metrics.get(m)) for m in RESULT_METRICS}
    if math.isnan(row["grad_attenuation_final"]):
        row["grad_attenuation_final"] = _metric(metrics.get("grad_attenuation"))
    if math.isnan(row["epochs_run"]) and "vgtune.epoch" in tags:
        row["epochs_run"] = float(tags["vgtune.epoch"])
    row["theory"] = tags.get("vgtune.theory", "")
    row |= {k: tags.get(f"vgtune.{k}", "") for k in ARM_COLUMNS}
    row |= {"mlflow_run_id": run.info.run_id, "sweep": tags.get("vgtune.sweep"), "end_time": run.info.end_time}
    row |= {k: _metric(v) for k, v in metrics.items() if k.startswith("block")}
    return row


def tidy(runs: list[Run]) -> pd.DataFrame:
    """MLflow trial runs -> the trials table."""
    if not runs:
        return pd.DataFrame(columns=list(FACTORS + RESULTS))
    df = pd.DataFrame([_row(r) for r in runs])
    for col in FACTORS:  # ints stay ints where no trial lacks the value
        if df[col].notna().all() and df[col].map(type).eq(int).all():
            df[col] = df[col].astype(int)
    return dedupe(df)


def dedupe(df: pd.DataFrame) -> pd.DataFrame:
    """A configuration run in several invocations counts once: finished beats running, newest wins.

    A configuration is every `TrainConfig` field, so distinct trials never merge.
    """
    config_cols = [c for c in FACTORS if c in df.columns]
    finished = (df["status"] != "running").astype(int)
    order = df.assign(_finished=finished).sort_values(["_finished", "end_time"], na_position="first", kind="stable")
    keys = order[config_cols].map(str).agg("|".join, axis=1)
    kept = order[~keys.duplicated(keep="last")].drop(columns="_finished")
    return kept.sort_values(config_cols, kind="stable").reset_index(drop=True)
