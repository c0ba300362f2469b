"""Calibration of the report's verdicts on simulated sweeps whose true effects are known.

Every simulated report runs the real analysis (`vgtune.analysis.fairness.select` to choose
each arm's learning rate, `vgtune.analysis.effects.effects` for intervals and verdicts)
on a family shaped like the default sweep's: 2 depths x 3 activations x 4
mitigations plus 2 activation comparisons per depth = 28 comparisons. It counts:

- the family-wise rate of helps/hurts on null effects, at 2, 3, 5 and 10 seeds, with
  Gaussian and heavy-tailed (Student t, 3 df) seed noise, and with zero-spread
  baselines (a stuck network scores the same on every seed) next to noisy
  mitigations; the baseline beside it is the rule this replaced (a 95% percentile
  bootstrap per comparison, no adjustment);
- the power to say "helps" for true effects of 2, 5, 10 and 20 points;
- the bias of the reported effect after each arm's learning rate is chosen on
  validation (3 equally good rates): reporting the choosing seeds' test accuracy
  (the old way) against fresh confirmation seeds (the new one).

`VGTUNE_BENCH_REPS` sets the simulated reports per cell (default 200).
"""

from __future__ import annotations

import math
import os
import time

import numpy as np
import pandas as pd
from scipy import stats as sps

from vgtune.analysis import effects, fairness

SEEDS = (2, 3, 5, 10)
EFFECTS = (0.02, 0.05, 0.10, 0.20)  # true effects whose power is measured
SPREAD = 0.03  # seed-to-seed sd of test accuracy (3 points)
DEPTHS = (4, 24)
ACTIVATIONS = ("sigmoid", "tanh", "relu")
VARIANTS = ({}, {"init": "xavier_normal"}, {"init": "kaiming_normal"}, {"norm": "batch"}, {"residual": "standard"})
CHANCE = 0.10  # the chance rate (majority-class share) of the simulated test split
ALPHA = 0.05


def reps() -> int:
    return int(os.environ.get("VGTUNE_BENCH_REPS", "200"))


def _noise(rng: np.random.Generator, kind: str, size) -> np.ndarray:
    if kind == "heavy":  # Student t with 3 df, scaled to the same sd
        return rng.standard_t(3, size) * SPREAD / math.sqrt(3.0)
    return rng.normal(0.0, SPREAD, size)


def _arm(depth: int, activation: str, variant: dict) -> dict:
    return {"depth": depth, "activation": activation, "init": "default", "norm": "none", "residual": "none"} | variant


def true_effect(activation: str, v: int) -> float:
    """The power family's effect of depth-24 mitigation `v` (1-4) in `activation`'s cell: each of EFFECTS 3 times."""
    return EFFECTS[(ACTIVATIONS.index(activation) * 4 + v - 1) % len(EFFECTS)]


def family(rng: np.random.Generator, seeds: list[int], noise: str, effects: bool = False,
           stuck: bool = False) -> pd.DataFrame:
    """One confirmation stage: every arm of the family on `seeds`, all effects null unless `effects`
    (then the depth-24 mitigations have `true_effect`); with `stuck`, depth-24 baselines score one value
    on every seed (zero spread) and their mitigations vary around it."""
    rows = []
    for depth in DEPTHS:
        for activation in ACTIVATIONS:
            for v, variant in enumerate(VARIANTS):
                arm = _arm(depth, activation, variant)
                plain = v == 0
                flat = stuck and depth == 24 and plain
                level = 0.25 if stuck and depth == 24 else 0.6
                mean = level + (true_effect(activation, v) if effects and depth == 24 and not plain else 0.0)
                acc = np.full(len(seeds), mean) if flat else mean + _noise(rng, noise, len(seeds))
                for seed, a in zip(seeds, acc):
                    rows.append(arm | {"seed": seed, "test_acc": float(np.clip(a, 0, 1)),
                                       "val_acc": float(np.clip(a + rng.normal(0, 0.005), 0, 1)),
                                       "status": "completed", "diagnosis": "healthy", "grad_attenuation_final": -1.0,
                                       "chance_acc": CHANCE, "nuisance": "lr=0.05", "variant": ""})
    return pd.DataFrame(rows)


def _verdicts(df: pd.DataFrame) -> pd.DataFrame:
    return effects.effects(df, nuisance=["lr"], correction="holm")


def _old_verdicts(df: pd.DataFrame, rng: np.random.Generator) -> int:
    """Helps/hurts the replaced rule states: a 95% percentile bootstrap of the paired mean, unadjusted."""
    called = 0
    for _, cell in df.groupby(["depth", "activation"]):
        plain = cell[(cell["init"] == "default") & (cell["norm"] == "none") & (cell["residual"] == "none")]
        for _, mit in cell.drop(plain.index).groupby(["init", "norm", "residual"]):
            d = mit["test_acc"].to_numpy() - plain["test_acc"].to_numpy()
            res = sps.bootstrap((d,), np.mean, n_resamples=500, method="percentile", rng=rng)
            called += res.confidence_interval.low > 0 or res.confidence_interval.high < 0
    return called


def false_verdict_rates(n_seeds: int, noise: str, stuck: bool, rng: np.random.Generator) -> tuple[float, float, float]:
    """(family-wise rate of any helps/hurts, per-comparison rate, the old rule's per-comparison rate) on nulls."""
    any_wrong, wrong, old, comparisons, old_comparisons = 0, 0, 0, 0, 0
    for _ in range(reps()):
        df = family(rng, list(range(n_seeds)), noise, stuck=stuck)
        eff = _verdicts(df)
        called = int((eff["verdict"] != "inconclusive").sum())
        any_wrong += called > 0
        wrong += called
        comparisons += len(eff)
        if not stuck and noise == "gaussian":
            old += _old_verdicts(df, rng)
            old_comparisons += 24
    return any_wrong / reps(), wrong / comparisons, (old / old_comparisons if old_comparisons else math.nan)


def power(n_seeds: int, rng: np.random.Generator) -> dict[float, float]:
    """Per true effect size, the share called helps, in 28-comparison reports with 12 true effects (3 of each)."""
    hits = dict.fromkeys(EFFECTS, 0)
    for _ in range(reps()):
        eff = _verdicts(family(rng, list(range(n_seeds)), "gaussian", effects=True))
        true = eff[(eff["depth"] == 24) & ~eff["mitigation"].str.startswith("activation=")]
        for _, row in true.iterrows():
            v = next(i for i, var in enumerate(VARIANTS) if var and row["mitigation"] == _label(var))
            hits[true_effect(row["activation"], v)] += row["verdict"] == "helps"
    return {e: h / (3 * reps()) for e, h in hits.items()}


def _label(variant: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in variant.items())


def _trial(arm: str, norm: str, lr: float, seed: int, acc: float, stage: str) -> dict:
    return {"arm": arm, "norm": norm, "lr": lr, "nuisance": f"lr={lr}", "seed": seed, "stage": stage,
            "status": "completed", "diagnosis": "healthy", "grad_attenuation_final": -1.0, "variant": "",
            "activation": "relu", "depth": 24, "chance_acc": CHANCE, "val_acc": acc + 0.005, "test_acc": acc}


def selection_bias(spread: float, rng: np.random.Generator, n_seeds: int = 2, fresh: int = 5) -> tuple[float, float]:
    """(bias of the reported effect when the choosing seeds' test scores are reported, with fresh seeds'), in
    points. A stuck baseline (zero spread) against a mitigation whose 3 learning rates are equally good; a trial's
    validation and test scores both follow its network's quality, as they do in a real sweep."""
    truth, old, new = 0.35, [], []
    for _ in range(reps()):
        rows = [_trial("p", "none", lr, seed, 0.25, "select") for lr in (0.005, 0.02, 0.08) for seed in range(n_seeds)]
        rows += [_trial("b", "batch", lr, seed, 0.6 + rng.normal(0, spread), "select")
                 for lr in (0.005, 0.02, 0.08) for seed in range(n_seeds)]
        first = fairness.select(pd.DataFrame(rows))
        chosen = first.loc[first["selected"] & (first["arm"] == "b"), "lr"].iloc[0]
        confirm = [_trial("p", "none", 0.02, seed, 0.25, "confirm") for seed in range(n_seeds, n_seeds + fresh)]
        confirm += [_trial("b", "batch", chosen, seed, 0.6 + rng.normal(0, spread), "confirm")
                    for seed in range(n_seeds, n_seeds + fresh)]
        old.append(_verdicts(first[first["selected"]])["delta_test_acc"].iloc[0] - truth)
        new.append(_verdicts(pd.DataFrame(confirm))["delta_test_acc"].iloc[0] - truth)
    return 100 * float(np.mean(old)), 100 * float(np.mean(new))


def _mc(rate: float) -> float:
    """Two Monte Carlo standard errors of a rate from reps() reports."""
    return 2 * math.sqrt(max(rate, ALPHA) * (1 - max(rate, ALPHA)) / reps())


def run() -> list[dict]:
    rng = np.random.default_rng(2026)
    rows: list[dict] = []
    t0 = time.perf_counter()
    for n in SEEDS:
        for noise, stuck in (("gaussian", False), ("heavy", False), ("gaussian", True)):
            fwer, per, old = false_verdict_rates(n, noise, stuck, rng)
            label = f"{noise}{', stuck baselines' if stuck else ''}"
            note = f"per comparison {per:.3f}" + (f"; the replaced rule (bootstrap, unadjusted): {old:.3f} per "
                                                  "comparison" if not math.isnan(old) else "")
            rows.append({"name": f"stats: null FWER, {n} seeds, {label}", "value": fwer,
                         "target": f"<= {ALPHA:g}", "ok": fwer <= ALPHA + _mc(ALPHA), "note": note})
    for n in SEEDS:
        for effect, share in power(n, rng).items():
            rows.append({"name": f"stats: power, {n} seeds, true effect {100 * effect:g} points",
                         "value": share, "target": "report"})
    for spread in (0.03, 0.10):
        old, new = selection_bias(spread, rng)
        se = 2 * 100 * spread / math.sqrt(5 * reps())
        rows.append({"name": f"stats: selection bias (points), seed spread {100 * spread:g}, fresh seeds",
                     "value": new, "target": f"|x| <= {se:.2f}", "ok": abs(new) <= se,
                     "note": f"the choosing seeds' own test scores (the replaced way): {old:+.2f} points"})
    rows.append({"name": "stats: seconds", "value": time.perf_counter() - t0, "target": "report",
                 "note": f"{reps()} simulated reports per cell"})
    return rows
