"""Load a sweep's trials from MLflow into one tidy DataFrame (one row per trial).

The columns are `vgtune.core.columns`' and `vgtune.core.schema`'s: every
`TrainConfig` field as a typed factor column (contract factors first; a run
logged under a field's former name reads too), the result columns, then
`sweep`, `end_time` and the final per-block series as `block*/...` columns for
the plots.

From a SQLite store the runs are read with three SQL queries over MLflow's
`runs`, `tags`, `params` and `latest_metrics` tables (a 10,000-trial sweep in
seconds, where `search_runs` builds a Python entity per metric); any other
store goes through `MlflowClient.search_runs`. Both give the same table.

Several invocations of one sweep (resumed, or re-run with more seeds) merge:
a configuration run twice counts once, its most recent finished run winning.
Two trials that differ in any training option are two rows.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import quote

import pandas as pd
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from vgtune.core.columns import ARM_COLUMNS, RESULT_METRICS, RESULTS, STOP_REASON
from vgtune.core.schema import FACTORS, RENAMED, RUNNING, parse_param
from vgtune.exceptions import InputError
from vgtune.tracking.store import client_for, holds_runs, sqlite_path

SQL_INF = 1.7e308  # MLflow's SQL stores keep +-inf as +-max float


class UnknownExperiment(InputError):
    """No experiment or sweep of that name in the store (an `InputError` at `path`, experiment or sweep). str():
    the problem, then what the store holds under `listing` (its `valid` names, or "(none)"; nothing for no
    `listing`)."""

    def __init__(self, path: str, problem: str, valid: Iterable[str] = (), listing: str = "existing"):
        self.listing = listing  # what the names are, as the message says it: existing, experiments, its sweeps
        super().__init__(path, problem, valid)

    def message(self) -> str:
        return f"{self.problem}; {self.listing}: {', '.join(self.valid) or '(none)'}" if self.listing else self.problem


def _client(uri: str) -> MlflowClient:
    """A client of the store at `uri`; UnknownExperiment where there is none, which a read never creates."""
    if not holds_runs(uri):
        raise UnknownExperiment("sweep", f"no vgtune sweep in {uri} yet (no MLflow store there); run `vgtune sweep "
                                "SPEC` first, or pass the --tracking-uri it used", listing="")
    return client_for(uri)


def experiments(uri: str) -> list[str]:
    return [e.name for e in _client(uri).search_experiments() if e.name != "Default"]


def latest_sweep_run(client: MlflowClient, experiment_ids: list[str]):
    """The most recently started sweep (parent) run among these experiments, or None."""
    runs = client.search_runs(experiment_ids, "tags.`vgtune.role` = 'sweep'", max_results=1,
                              order_by=["start_time DESC"])
    return runs[0] if runs else None


def experiment_sweep_run(uri: str, experiment: str, sweep: str | None = None):
    """The most recently started sweep (parent) run of `experiment`, or of its sweep `sweep` (a resumed sweep has
    one per invocation); None if there is none."""
    client = _client(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return None
    if sweep is None:
        return latest_sweep_run(client, [exp.experiment_id])
    runs = client.search_runs([exp.experiment_id], f"tags.`vgtune.role` = 'sweep' and tags.`vgtune.sweep` = '{sweep}'",
                              max_results=1, order_by=["start_time DESC"])
    return runs[0] if runs else None


def last_experiment(uri: str) -> str:
    """The experiment of the most recently started sweep."""
    client = _client(uri)
    run = latest_sweep_run(client, [e.experiment_id for e in client.search_experiments()])
    if run is None:
        raise UnknownExperiment("sweep", f"no vgtune sweep in {uri} yet; run `vgtune sweep SPEC` first, or pass "
                                "the --tracking-uri it used", listing="")
    return client.get_experiment(run.info.experiment_id).name


def experiment_of(uri: str, sweep: str) -> str | None:
    """The experiment whose runs carry the sweep folder name `sweep` (None if no run does)."""
    client = _client(uri)
    ids = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(ids, f"tags.`vgtune.sweep` = '{sweep}'", max_results=1) if ids else []
    return client.get_experiment(runs[0].info.experiment_id).name if runs else None


def _require(uri: str, experiment: str) -> str:
    exp = _client(uri).get_experiment_by_name(experiment)
    if exp is None:
        names = experiments(uri)
        raise UnknownExperiment("experiment", f"no experiment {experiment!r} in {uri}", names)
    return exp.experiment_id


def load_trials(uri: str, experiment: str, sweep: str | None = None) -> pd.DataFrame:
    """One row per distinct trial configuration of `experiment` (optionally one sweep folder)."""
    exp_id = _require(uri, experiment)
    client = _client(uri)
    filt = "tags.`vgtune.role` = 'trial'" + (f" and tags.`vgtune.sweep` = '{sweep}'" if sweep else "")
    runs = _sqlite_runs(uri, exp_id, sweep)
    if runs is None:
        runs = _search_all(client, exp_id, filt)
    if sweep and not runs:
        sweeps = sorted({r.data.tags.get("vgtune.sweep", "") for r in _search_all(
            client, exp_id, "tags.`vgtune.role` = 'sweep'")} - {""})
        raise UnknownExperiment("sweep", f"no runs of sweep {sweep!r} in experiment {experiment!r}", sweeps,
                                "its sweeps")
    return tidy(runs)


def _search_all(client: MlflowClient, exp_id: str, filt: str) -> list[Run]:
    runs, token = [], None
    while True:
        page = client.search_runs([exp_id], filt, max_results=50000, page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            return runs


@dataclass
class _Record:
    """What the trials table needs of one run."""

    run_id: str
    end_time: int | None
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)  # latest value of each metric
    tags: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, run: Run) -> _Record:
        return cls(run.info.run_id, run.info.end_time, run.data.params, run.data.metrics, run.data.tags)


_TRIAL_RUNS = """
    SELECT r.run_uuid, r.end_time FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid
    WHERE r.experiment_id = ? AND r.lifecycle_stage = 'active' AND t.key = 'vgtune.role' AND t.value = 'trial'
"""


def _sqlite_runs(uri: str, exp_id: str, sweep: str | None) -> list[_Record] | None:
    """The experiment's trial runs read straight from a SQLite store; None for any other store."""
    if not uri.startswith("sqlite:///"):
        return None
    con = sqlite3.connect(f"file:{quote(sqlite_path(uri))}?mode=ro", uri=True)
    try:
        con.execute("CREATE TEMP TABLE picked AS " + _TRIAL_RUNS, (int(exp_id),))
        records = {rid: _Record(rid, end) for rid, end in con.execute("SELECT run_uuid, end_time FROM picked")}
        for table, attr in (("tags", "tags"), ("params", "params")):
            for rid, key, value in con.execute(
                    f"SELECT x.run_uuid, x.key, x.value FROM {table} x JOIN picked p ON p.run_uuid = x.run_uuid"):
                getattr(records[rid], attr)[key] = value
        for rid, key, value, is_nan in con.execute(
                "SELECT m.run_uuid, m.key, m.value, m.is_nan FROM latest_metrics m "
                "JOIN picked p ON p.run_uuid = m.run_uuid"):
            records[rid].metrics[key] = math.nan if is_nan else value
    finally:
        con.close()
    runs = list(records.values())
    return [r for r in runs if r.tags.get("vgtune.sweep") == sweep] if sweep else runs


def _metric(value: float | None) -> float:
    if value is None:
        return math.nan
    if abs(value) >= SQL_INF:
        return math.copysign(math.inf, value)
    return value


def _param(params: dict[str, str], field: str) -> str | None:
    """A TrainConfig field's param, or the param it was logged under before a rename (`RENAMED`)."""
    if field in params:
        return params[field]
    return next((params[old] for old, new in RENAMED.items() if new == field and old in params), None)


def _row(run: _Record) -> dict:
    params, metrics, tags = run.params, run.metrics, run.tags
    row = {f: parse_param(f, _param(params, f)) for f in FACTORS}
    row["status"] = tags.get("status", RUNNING)
    # A diverged trial is `diverged` (runs from before that rule could carry their last probe's diagnosis).
    row["diagnosis"] = "diverged" if row["status"] == "diverged" else tags.get("diagnosis", "healthy")
    row |= {m: _metric(metrics.get(m)) for m in RESULT_METRICS}
    if math.isnan(row["grad_attenuation_final"]):
        row["grad_attenuation_final"] = _metric(metrics.get("grad_attenuation"))
    if math.isnan(row["epochs_run"]) and "vgtune.epoch" in tags:
        row["epochs_run"] = float(tags["vgtune.epoch"])
    row["theory"] = tags.get("vgtune.theory", "")
    row |= {k: tags.get(f"vgtune.{k}", "") for k in ARM_COLUMNS}
    row[STOP_REASON] = tags.get("vgtune.stop_reason", "")
    row |= {"mlflow_run_id": run.run_id, "sweep": tags.get("vgtune.sweep"), "end_time": run.end_time}
    row |= {k: _metric(v) for k, v in metrics.items() if k.startswith("block")}
    return row


def tidy(runs: list[_Record] | list[Run]) -> pd.DataFrame:
    """MLflow trial runs -> the trials table."""
    runs = [r if isinstance(r, _Record) else _Record.of(r) for r in runs]
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
    finished = (df["status"] != RUNNING).astype(int)
    order = df.assign(_finished=finished).sort_values(["_finished", "end_time"], na_position="first", kind="stable")
    keys = order[config_cols].map(str).agg("|".join, axis=1)
    kept = order[~keys.duplicated(keep="last")].drop(columns="_finished")
    return kept.sort_values(config_cols, kind="stable").reset_index(drop=True)
