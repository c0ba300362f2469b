"""Sweep benchmarks on the default spec: efficiency, and what the gradient-collapse stopper saves.

efficiency = sum of training seconds inside trials / (Tuner.fit wall seconds x concurrent trials).
The default sweep runs twice, with and without the stopper; the second run is
the baseline for the epochs saved and for the report's top-5 ranking.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from vgtune import ranking, spec
from vgtune.runs import load_trials
from vgtune.sweep import SweepOptions, run_sweep

SPEC = "sweeps/default.yaml"


def _sweep(folder: Path, overrides: list[str]):
    import ray

    s = spec.load(SPEC, overrides)
    options = SweepOptions(tracking_uri=f"sqlite:///{folder}/mlflow.db", storage=str(folder / "runs"),
                           out=str(folder / "reports"), verbose=0)
    outcome = run_sweep(s, options)
    ray.shutdown()
    df = load_trials(outcome.tracking_uri, s.name)
    concurrency = min(len(s.trials), int((os.cpu_count() or 1) // s.resources.cpu))
    return s, outcome, df, concurrency


def run() -> list[dict]:
    with tempfile.TemporaryDirectory() as d1, tempfile.TemporaryDirectory() as d2:
        s, outcome, df, conc = _sweep(Path(d1), [])
        train_s = df["train_seconds"].sum()
        eval_s = sum(t["last"].get("eval_seconds", 0.0) for t in outcome.trials)
        eff = train_s / (outcome.wall_seconds * conc)
        eff_eval = (train_s + eval_s) / (outcome.wall_seconds * conc)
        _, outcome_all, df_all, _ = _sweep(Path(d2), ["stop.gradient_collapse=false"])
    epochs_saved = 1 - df["epochs_run"].sum() / df_all["epochs_run"].sum()
    top = list(ranking.ranking(ranking.effects(df))["mitigation"][:5])
    top_all = list(ranking.ranking(ranking.effects(df_all))["mitigation"][:5])
    note = (f"{len(s.trials)} trials, {conc} at a time: fit {outcome.wall_seconds:.0f}s, training {train_s:.0f}s, "
            f"per-epoch evaluation {eval_s:.0f}s; without the stopper fit {outcome_all.wall_seconds:.0f}s")
    return [
        {"name": "sweep efficiency (training s / wall s x concurrency)", "value": eff, "target": ">= 0.75",
         "ok": eff >= 0.75, "note": note},
        {"name": "sweep efficiency counting per-epoch evaluation", "value": eff_eval, "target": "report"},
        {"name": "stopper: share of trial-epochs saved", "value": epochs_saved, "target": "report",
         "note": f"stopped {int((df['status'] == 'stopped').sum())} trials"},
        {"name": "stopper: report top-5 ranking unchanged (1 = yes)", "value": float(top == top_all),
         "target": "== 1", "ok": top == top_all, "note": f"with: {top}; without: {top_all}"},
    ]
