"""Which mitigation rescues which failure at which depth, by how much, how sure.

A mitigation is one change from the plain baseline (default init, no
normalization, no residual; sigmoid among activations; no pooling, dropout or
weight decay; SGD) along one factor. Its effect at a depth is the difference
in test accuracy (and in final gradient attenuation) between trials with the
change and baseline trials that agree on every other factor (depth, seed,
activation, lr, ...): paired where the grid allows, otherwise a difference of
group means. The 95% interval is a percentile bootstrap over pairs
(`scipy.stats.bootstrap`).

Accuracy that falls with depth while gradients stay healthy is degradation
(He et al. 2016), not vanishing; `depth_trends` tells the two apart.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
from scipy import stats

from vgtune.config import FACTORS

MITIGATION_FACTORS = ("init", "norm", "residual", "activation", "pool", "dropout", "weight_decay", "optimizer")
BASELINE = {"init": "default", "norm": "none", "residual": "none", "pool": "none", "dropout": 0.0,
            "weight_decay": 0.0, "optimizer": "sgd"}
ACTIVATION_BASELINES = ("sigmoid", "tanh", "relu")
EFFECT_COLUMNS = ["mitigation", "factor", "value", "depth", "n", "paired", "baseline_acc", "mitigated_acc",
                  "delta_test_acc", "ci_low", "ci_high", "delta_attenuation", "rescued", "unhealthy_baselines",
                  "transitions", "rank"]
BOOTSTRAP = 2000
DEGRADATION_DROP = 0.10  # accuracy lost from the shallowest to the deepest depth that counts as a drop


def scored(df: pd.DataFrame) -> pd.DataFrame:
    """Trials that have an accuracy to compare (finished, not errored)."""
    return df[df["status"].isin(["completed", "diverged", "stopped"]) & df["test_acc"].notna()]


def varying(df: pd.DataFrame, columns) -> list[str]:
    return [c for c in columns if c in df.columns and df[c].astype(str).nunique() > 1]


def baseline(df: pd.DataFrame) -> dict[str, object]:
    """The plain value of every mitigation factor that varies in `df`."""
    base = {}
    for f in varying(df, MITIGATION_FACTORS):
        values = list(pd.unique(df[f]))
        if f == "activation":
            base[f] = next((a for a in ACTIVATION_BASELINES if a in values), sorted(values)[0])
        else:
            base[f] = BASELINE[f] if BASELINE[f] in values else sorted(values, key=str)[0]
    return base


def bootstrap_interval(diffs: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """95% percentile-bootstrap interval of the mean of paired differences; NaN below two pairs."""
    if len(diffs) < 2:
        return float("nan"), float("nan")
    res = stats.bootstrap((diffs,), np.mean, n_resamples=BOOTSTRAP, method="percentile", confidence_level=0.95,
                          rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def bootstrap_interval_unpaired(a: np.ndarray, b: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """95% percentile-bootstrap interval of mean(a) - mean(b), resampling each group on its own."""
    if len(a) < 2 or len(b) < 2:
        return float("nan"), float("nan")
    res = stats.bootstrap((a, b), lambda x, y, axis=-1: x.mean(axis=axis) - y.mean(axis=axis),
                          n_resamples=BOOTSTRAP, method="percentile", confidence_level=0.95,
                          rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def _mean_change(after: pd.Series, before: pd.Series) -> float:
    """Mean of after - before over the pairs where it is defined (+-inf: a gradient from or to zero)."""
    diff = (after.to_numpy(dtype=float) - before.to_numpy(dtype=float))
    diff = diff[~np.isnan(diff)]
    return float(diff.mean()) if len(diff) else float("nan")


def _transitions(before: pd.Series, after: pd.Series) -> tuple[int, str]:
    """How many unhealthy baselines the change made healthy, and the commonest transitions."""
    moves = Counter(f"{b}->{a}" for b, a in zip(before, after) if b != a)
    rescued = sum(1 for b, a in zip(before, after) if b != "healthy" and a == "healthy")
    return rescued, ", ".join(f"{m} x{n}" for m, n in moves.most_common(3))


def _groups(df: pd.DataFrame, factor: str, base: dict) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """(rows with the change, baseline rows, columns they are matched on)."""
    held = [g for g in base if g not in (factor, "activation")]  # activation is context unless studied
    mask = np.ones(len(df), dtype=bool)
    for g in held:
        mask &= (df[g] == base[g]).to_numpy()
    sub = df[mask]
    config = [c for c in list(FACTORS) if c in df.columns]
    context = [c for c in config if c not in held and c != factor and df[c].astype(str).nunique() > 1]
    return sub[sub[factor] != base[factor]], sub[sub[factor] == base[factor]], context


def effects(df: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """One row per (mitigation, depth): accuracy and attenuation effects against the baseline."""
    df = scored(df)
    base = baseline(df)
    rows = []
    for factor in base:
        changed, plain, context = _groups(df, factor, base)
        for value, grp in changed.groupby(factor, sort=True):
            for depth, mit in grp.groupby("depth"):
                ref = plain[plain["depth"] == depth]
                rows.append(_effect(factor, value, depth, mit, ref, context, seed))
    out = pd.DataFrame(rows, columns=EFFECT_COLUMNS[:-1])
    if out.empty:
        return out.assign(rank=pd.Series(dtype=float))
    deepest = out["depth"].max()
    score = out[out["depth"] == deepest].set_index("mitigation")["delta_test_acc"]
    out["rank"] = out["mitigation"].map(score.rank(ascending=False, method="min"))
    return out.sort_values(["rank", "mitigation", "depth"], na_position="last").reset_index(drop=True)


def _effect(factor, value, depth, mit: pd.DataFrame, ref: pd.DataFrame, context: list[str], seed: int) -> dict:
    keys = [c for c in context if c != "depth"] + ["depth"]
    pairs = mit.merge(ref, on=keys, suffixes=("", "_base"))
    row = {"mitigation": f"{factor}={value}", "factor": factor, "value": value, "depth": depth}
    if len(pairs):
        diffs = (pairs["test_acc"] - pairs["test_acc_base"]).to_numpy()
        low, high = bootstrap_interval(diffs, seed)
        rescued, moves = _transitions(pairs["diagnosis_base"], pairs["diagnosis"])
        row.update(n=len(pairs), paired=True, baseline_acc=pairs["test_acc_base"].mean(),
                   mitigated_acc=pairs["test_acc"].mean(), delta_test_acc=diffs.mean(), ci_low=low, ci_high=high,
                   delta_attenuation=_mean_change(pairs["grad_attenuation_final"],
                                                    pairs["grad_attenuation_final_base"]),
                   rescued=rescued, unhealthy_baselines=int((pairs["diagnosis_base"] != "healthy").sum()),
                   transitions=moves)
    else:  # nothing to pair with (e.g. sampled lr): compare group means
        a, b = mit["test_acc"].to_numpy(), ref["test_acc"].to_numpy()
        low, high = bootstrap_interval_unpaired(a, b, seed)
        row.update(n=len(a), paired=False, baseline_acc=b.mean() if len(b) else float("nan"),
                   mitigated_acc=a.mean(), delta_test_acc=a.mean() - b.mean() if len(b) else float("nan"),
                   ci_low=low, ci_high=high,
                   delta_attenuation=(_finite_mean(mit["grad_attenuation_final"])
                                      - _finite_mean(ref["grad_attenuation_final"])),
                   rescued=int((mit["diagnosis"] == "healthy").sum()),
                   unhealthy_baselines=int((ref["diagnosis"] != "healthy").sum()), transitions="")
    return row


def _finite_mean(values: pd.Series) -> float:
    values = values[np.isfinite(values.to_numpy(dtype=float))]
    return float(values.mean()) if len(values) else float("nan")


def ranking(eff: pd.DataFrame) -> pd.DataFrame:
    """One row per mitigation, best first: effect at the deepest depth plus the effect per depth."""
    if eff.empty:
        return eff
    deepest = eff["depth"].max()
    top = eff[eff["depth"] == deepest].set_index("mitigation")
    wide = eff.pivot_table(index="mitigation", columns="depth", values="delta_test_acc")
    wide.columns = [f"delta_acc_d{d}" for d in wide.columns]
    out = top[["rank", "n", "baseline_acc", "mitigated_acc", "delta_test_acc", "ci_low", "ci_high",
               "delta_attenuation", "rescued", "unhealthy_baselines", "transitions"]].join(wide)
    return out.sort_values("rank").reset_index()


def main_effects(df: pd.DataFrame) -> pd.DataFrame:
    """Mean outcome per value of each varying factor, over every other factor."""
    df = scored(df)
    rows = []
    for f in varying(df, list(FACTORS)):
        for value, g in df.groupby(f):
            rows.append({"factor": f, "value": value, "n": len(g), "test_acc": g["test_acc"].mean(),
                         "grad_attenuation_init": g["grad_attenuation_init"].mean(),
                         "grad_attenuation_final": g["grad_attenuation_final"].mean(),
                         "healthy_share": (g["diagnosis"] == "healthy").mean()})
    return pd.DataFrame(rows)


def best_per_depth(df: pd.DataFrame) -> pd.DataFrame:
    df = scored(df)
    cols = ["depth"] + [c for c in varying(df, list(FACTORS)) if c != "depth"]
    best = df.sort_values("test_acc").groupby("depth").tail(1).sort_values("depth")
    return best[cols + ["test_acc", "grad_attenuation_final", "diagnosis"]].reset_index(drop=True)


def depth_trends(df: pd.DataFrame) -> pd.DataFrame:
    """Configurations whose accuracy drops with depth, and whether gradients explain it.

    verdict: `vanishing` (deep trials' gradients vanished), `degradation` (accuracy
    fell while gradients stayed healthy), or the deep trials' other diagnosis.
    """
    df = scored(df)
    config = [c for c in varying(df, list(FACTORS)) if c not in ("depth", "seed")]
    if df["depth"].nunique() < 2:
        return pd.DataFrame()
    rows = []
    groups = df.groupby(config, dropna=False) if config else [((), df)]
    for key, g in groups:
        by_depth = g.groupby("depth")
        acc = by_depth["test_acc"].mean()
        shallow, deep = acc.index.min(), acc.index.max()
        drop = acc[shallow] - acc[deep]
        if drop < DEGRADATION_DROP:
            continue
        deep_rows = g[g["depth"] == deep]
        diag = deep_rows["diagnosis"].mode().iloc[0]
        verdict = "degradation" if (deep_rows["diagnosis"] == "healthy").all() else diag
        key = key if isinstance(key, tuple) else (key,)
        rows.append(dict(zip(config, key)) | {
            "shallow_depth": shallow, "deep_depth": deep, "acc_shallow": acc[shallow], "acc_deep": acc[deep],
            "drop": drop, "attenuation_deep": deep_rows["grad_attenuation_final"].mean(), "verdict": verdict})
    return pd.DataFrame(rows)
