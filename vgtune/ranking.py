"""Which mitigation rescues which failure at which depth, by how much, how sure.

A mitigation is one change from the plain baseline (default init, no
normalization, no residual; sigmoid among activations; no pooling, dropout or
weight decay; SGD) along one factor, or one spec variant however many keys it
sets. Its effect is measured separately in every context cell (depth and every
other varying factor, activation say): the difference in test accuracy (and in
final gradient attenuation) between trials with the change and baseline trials
of the same cell, paired by seed, so the interval comes from seeds, not from
pooling unlike configurations (a difference of group means where nothing
pairs). Nuisance options (a tuned learning rate) are not part of the cell: each
side runs at its own chosen setting. The 95% interval is a percentile bootstrap
over the pairs (`scipy.stats.bootstrap`); the verdict is `helps` or `hurts` when
it excludes 0, else `inconclusive`. With two seeds that interval is just the
range of the two paired differences: take verdicts from three or more seeds
(`repeats: 3`) where they matter. Mitigations are ranked within each cell.

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
EFFECT_COLUMNS = ["mitigation", "factor", "value", "depth", "n", "seeds", "paired", "nuisance", "baseline_acc",
                  "mitigated_acc", "delta_test_acc", "ci_low", "ci_high", "verdict", "delta_attenuation", "rescued",
                  "unhealthy_baselines", "transitions", "rank"]
BOOTSTRAP = 2000
DEGRADATION_DROP = 0.10  # accuracy lost from the shallowest to the deepest depth that counts as a drop


def scored(df: pd.DataFrame) -> pd.DataFrame:
    """Trials that have an accuracy to compare (finished, not errored)."""
    return df[df["status"].isin(["completed", "diverged", "stopped"]) & df["test_acc"].notna()]


def varying(df: pd.DataFrame, columns) -> list[str]:
    return [c for c in columns if c in df.columns and df[c].astype(str).nunique() > 1]


def variant_keys(df: pd.DataFrame) -> set[str]:
    """Options that spec variants set (their labels read `key=value,key=value`)."""
    if "variant" not in df.columns:
        return set()
    labels = [v for v in df["variant"].dropna().unique() if v]
    return {part.split("=", 1)[0] for label in labels for part in str(label).split(",")}


def baseline(df: pd.DataFrame) -> dict[str, object]:
    """The plain value of every mitigation factor that varies in `df`.

    Where spec variants vary, the variant is the factor (its plain value the empty `{}` variant)
    and the options the variants set are not factors of their own.
    """
    base: dict[str, object] = {}
    replaced = variant_keys(df)
    if replaced and "" in set(df["variant"].fillna("")):
        base["variant"] = ""
    for f in varying(df, MITIGATION_FACTORS):
        if f in replaced and "variant" in base:
            continue
        values = list(pd.unique(df[f]))
        if f == "activation":
            base[f] = next((a for a in ACTIVATION_BASELINES if a in values), sorted(values)[0])
        else:
            base[f] = BASELINE[f] if BASELINE[f] in values else sorted(values, key=str)[0]
    return base


def verdict(low: float, high: float) -> str:
    """`helps` / `hurts` when the 95% interval excludes 0, else `inconclusive` (also without an interval)."""
    if low > 0:
        return "helps"
    if high < 0:
        return "hurts"
    return "inconclusive"


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


def _groups(df: pd.DataFrame, factor: str, base: dict, skip: set[str]) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """(rows with the change, baseline rows, the cell columns they are compared within)."""
    held = [g for g in base if g not in (factor, "activation")]  # activation is context unless studied
    mask = np.ones(len(df), dtype=bool)
    for g in held:
        mask &= (df[g].fillna("") == base[g]).to_numpy()
    sub = df[mask]
    config = [c for c in FACTORS if c in df.columns]
    replaced = variant_keys(df) if factor == "variant" or "variant" in base else set()
    cells = [c for c in config if c not in held and c != factor and c not in skip and c not in replaced
             and c != "depth" and df[c].astype(str).nunique() > 1]
    return sub[sub[factor] != base[factor]], sub[sub[factor] == base[factor]], ["depth"] + cells


def effects(df: pd.DataFrame, seed: int = 0, nuisance: tuple[str, ...] | list[str] = ()) -> pd.DataFrame:
    """One row per (mitigation, cell): accuracy and attenuation effects against the baseline, ranked per cell.

    `nuisance`: options tuned per arm, so not matched between the two sides.
    """
    df = scored(df)
    base = baseline(df)
    skip = set(nuisance) | {"seed"}
    rows = []
    for factor in base:
        changed, plain, cells = _groups(df, factor, base, skip)
        for keys, mit in changed.groupby([factor] + cells, sort=True, dropna=False):
            cell = dict(zip(cells, keys[1:]))
            ref = plain
            for c, v in cell.items():
                ref = ref[ref[c].map(str) == str(v)]
            rows.append(_effect(factor, keys[0], cell, mit, ref, seed))
    out = pd.DataFrame(rows)
    if out.empty:
        return pd.DataFrame(columns=EFFECT_COLUMNS)
    cell_cols = [c for c in out.columns if c not in EFFECT_COLUMNS]
    out = out[EFFECT_COLUMNS[:4] + cell_cols + EFFECT_COLUMNS[4:-1]]
    group = out[["depth"] + cell_cols].map(str).agg("|".join, axis=1)
    out["rank"] = out.groupby(group)["delta_test_acc"].rank(ascending=False, method="min")
    return out.sort_values(["depth", *cell_cols, "rank", "mitigation"], na_position="last").reset_index(drop=True)


def _effect(factor, value, cell: dict, mit: pd.DataFrame, ref: pd.DataFrame, seed: int) -> dict:
    label = value if factor == "variant" else f"{factor}={value}"
    chosen = "; ".join(sorted({str(v) for v in mit.get("nuisance", pd.Series(dtype=str)).dropna() if v}))
    row = {"mitigation": label, "factor": factor, "value": value, **cell, "nuisance": chosen}
    if len(mit) == 1 and len(ref) == 1:
        pairs = mit.merge(ref, how="cross", suffixes=("", "_base"))
    elif "seed" in mit.columns and not ref.empty:
        pairs = mit.merge(ref, on="seed", suffixes=("", "_base"))
        pairs = pairs if not pairs.duplicated("seed").any() else pairs.iloc[0:0]  # several per seed: not pairs
    else:
        pairs = mit.iloc[0:0]
    if len(pairs):
        diffs = (pairs["test_acc"] - pairs["test_acc_base"]).to_numpy()
        low, high = bootstrap_interval(diffs, seed)
        rescued, moves = _transitions(pairs["diagnosis_base"], pairs["diagnosis"])
        row.update(n=len(pairs), seeds=len(pairs), paired=True, baseline_acc=pairs["test_acc_base"].mean(),
                   mitigated_acc=pairs["test_acc"].mean(), delta_test_acc=diffs.mean(), ci_low=low, ci_high=high,
                   delta_attenuation=_mean_change(pairs["grad_attenuation_final"],
                                                  pairs["grad_attenuation_final_base"]),
                   rescued=rescued, unhealthy_baselines=int((pairs["diagnosis_base"] != "healthy").sum()),
                   transitions=moves)
    else:  # nothing pairs (sampled options, several trials per seed): compare group means
        a, b = mit["test_acc"].to_numpy(), ref["test_acc"].to_numpy()
        low, high = bootstrap_interval_unpaired(a, b, seed)
        row.update(n=len(a), seeds=int(mit["seed"].nunique()) if "seed" in mit else len(a), paired=False,
                   baseline_acc=b.mean() if len(b) else float("nan"), mitigated_acc=a.mean(),
                   delta_test_acc=a.mean() - b.mean() if len(b) else float("nan"), ci_low=low, ci_high=high,
                   delta_attenuation=(_finite_mean(mit["grad_attenuation_final"])
                                      - _finite_mean(ref["grad_attenuation_final"])),
                   rescued=int((mit["diagnosis"] == "healthy").sum()),
                   unhealthy_baselines=int((ref["diagnosis"] != "healthy").sum()), transitions="")
    row["verdict"] = verdict(row["ci_low"], row["ci_high"])
    return row


def _finite_mean(values: pd.Series) -> float:
    values = values[np.isfinite(values.to_numpy(dtype=float))]
    return float(values.mean()) if len(values) else float("nan")


def label(value) -> str:
    """A cell value as text; empty where a mitigation has no such context (the activation comparison)."""
    return "" if pd.isna(value) else str(value)


def cell_columns(eff: pd.DataFrame) -> list[str]:
    """The context columns of an effects table besides depth (activation, ...)."""
    return [c for c in eff.columns if c not in EFFECT_COLUMNS]


def ranking(eff: pd.DataFrame) -> pd.DataFrame:
    """At the deepest depth, one row per mitigation and cell, best first within each cell; plus the effect per depth."""
    if eff.empty:
        return eff
    cells = cell_columns(eff)
    deepest = eff["depth"].max()
    keyed = eff.assign(**{c: eff[c].map(label) for c in cells})
    top = keyed[keyed["depth"] == deepest]
    wide = keyed.pivot_table(index=["mitigation", *cells], columns="depth", values="delta_test_acc")
    wide.columns = [f"delta_acc_d{d}" for d in wide.columns]
    cols = ["rank", "n", "seeds", "nuisance", "baseline_acc", "mitigated_acc", "delta_test_acc", "ci_low", "ci_high",
            "verdict", "delta_attenuation", "rescued", "unhealthy_baselines", "transitions"]
    out = top.set_index(["mitigation", *cells])[cols].join(wide).reset_index()
    return out.sort_values([*cells, "rank", "mitigation"]).reset_index(drop=True)


def main_effects(df: pd.DataFrame) -> pd.DataFrame:
    """Mean outcome per value of each varying factor, over every other factor."""
    df = scored(df)
    rows = []
    for f in varying(df, FACTORS):
        for value, g in df.groupby(f):
            rows.append({"factor": f, "value": value, "n": len(g), "test_acc": g["test_acc"].mean(),
                         "grad_attenuation_init": g["grad_attenuation_init"].mean(),
                         "grad_attenuation_final": g["grad_attenuation_final"].mean(),
                         "healthy_share": (g["diagnosis"] == "healthy").mean()})
    return pd.DataFrame(rows)


def best_per_depth(df: pd.DataFrame) -> pd.DataFrame:
    df = scored(df)
    cols = ["depth"] + [c for c in varying(df, FACTORS) if c != "depth"]
    best = df.sort_values("test_acc").groupby("depth").tail(1).sort_values("depth")
    return best[cols + ["test_acc", "grad_attenuation_final", "diagnosis"]].reset_index(drop=True)


def depth_trends(df: pd.DataFrame) -> pd.DataFrame:
    """Configurations whose accuracy drops with depth, and whether gradients explain it.

    verdict: `vanishing` (deep trials' gradients vanished), `degradation` (accuracy
    fell while gradients stayed healthy), or the deep trials' other diagnosis.
    """
    df = scored(df)
    config = [c for c in varying(df, FACTORS) if c not in ("depth", "seed")]
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
