"""Sweep benchmarks on the default spec: efficiency, and what the gradient-collapse stopper saves.

efficiency = seconds the trials spent in their own work (the training loops and each
epoch's validation/test pass) / (Tuner.fit wall seconds x concurrent trials): the share
of the workers' time not lost to orchestration. The training loops alone, and the
breakdown of the rest, are reported next to it. The default sweep runs three times:
solo (`pack: off`); solo without the stopper (the baseline for the epochs saved and for
the report's ranking); and packed as it ships (`pack: auto`), as a user runs it (`vgtune
sweep` in a subprocess, report included), against the first run: its Tuner.fit speed-up,
the whole command's efficiency (the share of wall x slots spent training and evaluating,
Ray start and report included), how far each packed trial's test accuracy lies from its
solo run's next to how far the two seeds of one setting lie apart, and whether the best
mitigation of every cell stays.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from vgtune.analysis import effects, report
from vgtune.driver import spec
from vgtune.driver.runner import SweepOptions, run_sweep
from vgtune.tracking.reader import load_trials

SPEC = "sweeps/default.yaml"


def _sweep(folder: Path, overrides: list[str]):
    import ray

    s = spec.load(SPEC, overrides)
    options = SweepOptions(tracking_uri=f"sqlite:///{folder}/mlflow.db", storage=str(folder / "runs"),
                           out=str(folder / "reports"), verbose=0)
    outcome = run_sweep(s, options)
    ray.shutdown()
    return s, outcome, load_trials(outcome.tracking_uri, s.name)


def _command(folder: Path, overrides: list[str]) -> tuple[dict[str, float], pd.DataFrame]:
    """`vgtune sweep SPEC` as a user runs it; its fit seconds, whole-command seconds and busy share."""
    sets = [w for o in overrides for w in ("--set", o)]
    uri = f"sqlite:///{folder}/mlflow.db"
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "vgtune.cli", "sweep", str(Path(SPEC).resolve()), *sets,
                           "--tracking-uri", uri, "--storage", str(folder / "runs"), "--out", str(folder / "out"),
                           "-v", "0"], capture_output=True, text=True, cwd=folder)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise RuntimeError(f"vgtune sweep failed ({proc.returncode}): {proc.stderr[-2000:]}")
    fit = re.search(r"trials.* in (\d+)s, (\d+) at a time", proc.stdout)
    whole = re.search(r"Whole command: (\d+)s .* spent (\d+)% of it", proc.stdout)
    figures = {"fit": float(fit[1]), "slots": float(fit[2]), "whole": float(whole[1]),
               "busy": float(whole[2]) / 100, "process": wall}
    return figures, load_trials(uri, spec.load(SPEC).name)


def _ranks(s, df) -> pd.DataFrame:
    """Each mitigation's rank and verdict per cell at the deepest depth, as the report decides them."""
    res = report.analyse(df, report.Selection(s.metric, s.mode, tuple(s.nuisance)))
    rank = res["ranking"]
    keys = ["mitigation", *effects.cell_columns(res["effects"])]
    return rank.assign(**{k: rank[k].map(str) for k in keys}).set_index(keys)[["rank", "verdict", "delta_test_acc"]]


def _best_changed(a: pd.DataFrame, b: pd.DataFrame) -> pd.Index:
    """Cells whose rank-1 mitigation differs between two rankings (activation comparisons left out)."""
    both = a.join(b.add_suffix("_b"), how="outer")
    mit = both[~both.index.get_level_values("mitigation").str.startswith("activation=")]
    return mit[mit["rank"] == 1].index.symmetric_difference(mit[mit["rank_b"] == 1].index)


def _packing(s, outcome, df, folder: Path) -> list[dict]:
    """The default sweep packed (`pack: auto`) against the same sweep solo (`df`, `outcome`)."""
    packed, df_pack = _command(folder, ["pack=auto"])
    keys = ["arm", "nuisance", "seed"]
    both = df.merge(df_pack, on=keys, suffixes=("", "_pack"))
    gap = (both["test_acc"] - both["test_acc_pack"]).abs()
    spread = df.groupby(["arm", "nuisance"])["test_acc"].agg(lambda v: v.max() - v.min())
    same_status = (both["status"] == both["status_pack"]).mean()
    changed = _best_changed(_ranks(s, df_pack), _ranks(s, df))
    speed = outcome.wall_seconds / packed["fit"]
    note = (f"fit {outcome.wall_seconds:.0f}s solo, {packed['fit']:.0f}s packed; {len(both)} of "
            f"{len(df)} trials matched; same status for {same_status:.0%}; largest gap {gap.max():.3f}")
    return [
        {"name": "packing: default sweep Tuner.fit, solo s / packed s", "value": speed, "target": "report",
         "note": note},
        {"name": "whole command (vgtune sweep, packed): trial work / (wall x slots)", "value": packed["busy"],
         "target": ">= 0.85", "ok": packed["busy"] >= 0.85,
         "note": f"whole command {packed['whole']:.0f}s (process {packed['process']:.0f}s), of which Tuner.fit "
                 f"{packed['fit']:.0f}s; {packed['slots']:.0f} trial slots"},
        {"name": "packing: mean |test_acc packed - solo| / mean seed spread", "value": gap.mean() / spread.mean(),
         "target": "<= 1", "ok": gap.mean() <= spread.mean(),
         "note": f"{gap.mean():.4f} against {spread.mean():.4f} (max - min over the 2 seeds of a setting)"},
        {"name": "packing: best mitigation of every cell unchanged (1 = yes)", "value": float(changed.empty),
         "target": "== 1", "ok": changed.empty, "note": f"differ: {list(changed)}" if len(changed) else ""},
    ]


def run() -> list[dict]:
    with (tempfile.TemporaryDirectory() as d1, tempfile.TemporaryDirectory() as d2,
          tempfile.TemporaryDirectory() as d3):
        s, outcome, df = _sweep(Path(d1), ["pack=off"])
        conc, slots = outcome.concurrency, outcome.wall_seconds * outcome.concurrency
        train_s, eval_s, setup_s = map(outcome.seconds, ("train_seconds", "eval_seconds", "setup_seconds"))
        eff = outcome.busy_share()
        _, outcome_all, df_all = _sweep(Path(d2), ["pack=off", "stop.gradient_collapse=false"])
        packing = _packing(s, outcome, df, Path(d3))
    epochs_saved = 1 - df["epochs_run"].sum() / df_all["epochs_run"].sum()
    with_stop, without = _ranks(s, df), _ranks(s, df_all)
    both = with_stop.join(without.add_suffix("_all"), how="outer")
    # As the report's "best at depth" lines: the activation comparison is context, not a mitigation to pick.
    best = _best_changed(with_stop, without)
    flips = both[both["verdict"] != both["verdict_all"]]
    flip_note = ", ".join(f"{'/'.join(k)}: {r['verdict_all']} -> {r['verdict']} ({r['delta_test_acc']:+.2f})"
                          for k, r in flips.iterrows())
    note = (f"{len(s.trials)} trials, {conc} at a time: fit {outcome.wall_seconds:.0f}s, training loops "
            f"{train_s:.0f}s, per-epoch evaluation {eval_s:.0f}s; without the stopper fit "
            f"{outcome_all.wall_seconds:.0f}s")
    rest = 1 - (train_s + eval_s + setup_s) / slots  # actor start-up, Tune's round trips, checkpoint writes
    return [
        {"name": "sweep efficiency (pack: off): trial work s / (wall s x concurrency)", "value": eff,
         "target": ">= 0.75", "ok": eff >= 0.75, "note": note},
        {"name": "  of which the training loops alone", "value": train_s / slots, "target": "report"},
        {"name": "  trial set-up share (data, model, init probe)", "value": setup_s / slots, "target": "report"},
        {"name": "  orchestration share (start-up, scheduling, checkpoints)", "value": rest,
         "target": "report"},
        {"name": "stopper: share of trial-epochs saved", "value": epochs_saved, "target": "report",
         "note": f"stopped {int((df['status'] == 'stopped').sum())} trials"},
        {"name": "stopper: best mitigation of every cell unchanged (1 = yes)", "value": float(best.empty),
         "target": "== 1", "ok": best.empty, "note": f"differ: {list(best)}" if len(best) else ""},
        {"name": "stopper: verdicts that flip (of the ranking's)", "value": float(len(flips)), "target": "report",
         "note": f"of {len(both)}; without -> with the stopper: {flip_note}" if len(flips) else f"of {len(both)}"},
        *packing,
    ]
