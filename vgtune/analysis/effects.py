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
side runs at its own chosen setting. The interval is a Student-t interval of
the mean paired difference, adjusted with every other comparison of the report
(Holm by default, `correction:`; see `vgtune.analysis.stats`): the verdict is `helps`
or `hurts` when the adjusted p is below 0.05 (the interval then excludes 0),
else `inconclusive`; `mde` is the effect these seeds could resolve. A diverged
trial scores the chance rate (its test split's majority-class share), never its
broken network's output, and no trial scores below that rate (two failures do
not differ). Mitigations are ranked within each cell by their effect
on validation accuracy, so test data chooses nothing.

Accuracy that falls with depth while gradients stay healthy is degradation
(He et al. 2016), not vanishing; `depth_trends` tells the two apart.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd

from vgtune.analysis import stats as st
from vgtune.core.columns import CHANCE_OF
from vgtune.core.schema import FACTORS

MITIGATION_FACTORS = ("init", "norm", "residual", "activation", "pool", "dropout", "weight_decay", "optimizer")
BASELINE = {"init": "default", "norm": "none", "residual": "none", "pool": "none", "dropout": 0.0,
            "weight_decay": 0.0, "optimizer": "sgd"}
ACTIVATION_BASELINES = ("sigmoid", "tanh", "relu")
EFFECT_COLUMNS = ["mitigation", "factor", "value", "depth", "n", "seeds", "paired", "nuisance", "baseline_acc",
                  "mitigated_acc", "delta_test_acc", "ci_low", "ci_high", "p_adjusted", "mde", "verdict",
                  "delta_val_acc", "diverged", "diverged_baseline", "delta_attenuation", "healthy", "rescued",
                  "unhealthy_baselines", "transitions", "rank"]
DEGRADATION_DROP = 0.10  # accuracy lost from the shallowest to the deepest depth that counts as a drop


def scored(df: pd.DataFrame) -> pd.DataFrame:
    """Trials that have an accuracy to compare (finished, not errored)."""
    return df[df["status"].isin(["completed", "diverged", "stopped"]) & df["test_acc"].notna()]


def at_least_chance(df: pd.DataFrame) -> pd.DataFrame:
    """Accuracies floored at the chance rate (`chance_acc`, `chance_val_acc`: each split's majority-class share):
    a network worse than always giving the commonest answer has failed like a diverged one, and two failures
    differ by nothing a verdict should report. The report's tables all read these scores; trials.csv keeps the
    measured accuracies."""
    floors = {acc: chance for acc, chance in CHANCE_OF.items() if chance in df.columns}
    return df.assign(**{acc: df[acc].clip(lower=df[chance].fillna(0.0)) for acc, chance in floors.items()})


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


def effects(df: pd.DataFrame, nuisance: tuple[str, ...] | list[str] = (), correction: str = "holm") -> pd.DataFrame:
    """One row per (mitigation, cell): accuracy and attenuation effects against the baseline, ranked per cell
    by the validation effect; intervals and verdicts adjusted over all rows (`correction`, `vgtune.analysis.stats`).

    `nuisance`: options tuned per arm, so not matched between the two sides.
    """
    df = at_least_chance(scored(df))
    base = baseline(df)
    skip = set(nuisance) | {"seed"}
    rows, tests = [], []
    for factor in base:
        changed, plain, cells = _groups(df, factor, base, skip)
        for keys, mit in changed.groupby([factor] + cells, sort=True, dropna=False):
            cell = dict(zip(cells, keys[1:]))
            ref = plain
            for c, v in cell.items():
                ref = ref[ref[c].map(str) == str(v)]
            row, test = _effect(factor, keys[0], cell, mit, ref)
            rows.append(row)
            tests.append(test)
    out = pd.DataFrame(rows)
    if out.empty:
        return pd.DataFrame(columns=EFFECT_COLUMNS)
    out = _judge(out, tests, correction)
    cell_cols = [c for c in out.columns if c not in EFFECT_COLUMNS]
    out = out[EFFECT_COLUMNS[:4] + cell_cols + EFFECT_COLUMNS[4:-1]]
    group = out[["depth"] + cell_cols].map(str).agg("|".join, axis=1)
    out["rank"] = out.groupby(group)["delta_val_acc"].rank(ascending=False, method="min")
    return out.sort_values(["depth", *cell_cols, "rank", "mitigation"], na_position="last").reset_index(drop=True)


def _judge(out: pd.DataFrame, tests: list[st.Test], correction: str) -> pd.DataFrame:
    """Adjusted p, interval, detectable effect and verdict of every row, as one family."""
    p_adjusted, levels = st.adjust(np.array([t.p_value() for t in tests]), correction)
    intervals = [t.interval(a) if not np.isnan(a) else (np.nan, np.nan) for t, a in zip(tests, levels)]
    level = st.mde_level(int((~np.isnan(p_adjusted)).sum()), correction)
    return out.assign(ci_low=[lo for lo, _ in intervals], ci_high=[hi for _, hi in intervals], p_adjusted=p_adjusted,
                      mde=[t.mde(level) for t in tests],
                      verdict=[st.verdict(p, m) for p, m in zip(p_adjusted, out["delta_test_acc"])])


def _pairs(mit: pd.DataFrame, ref: pd.DataFrame) -> pd.DataFrame:
    """Mitigated and baseline trials side by side by seed (`*_base` columns); empty where nothing pairs."""
    if len(mit) == 1 and len(ref) == 1:
        return mit.merge(ref, how="cross", suffixes=("", "_base"))
    if "seed" in mit.columns and not ref.empty:
        pairs = mit.merge(ref, on="seed", suffixes=("", "_base"))
        return pairs if not pairs.duplicated("seed").any() else pairs.iloc[0:0]  # several per seed: not pairs
    return mit.iloc[0:0]


def _effect(factor, value, cell: dict, mit: pd.DataFrame, ref: pd.DataFrame) -> tuple[dict, st.Test]:
    label = value if factor == "variant" else f"{factor}={value}"
    chosen = "; ".join(sorted({str(v) for v in mit.get("nuisance", pd.Series(dtype=str)).dropna() if v}))
    row = {"mitigation": label, "factor": factor, "value": value, **cell, "nuisance": chosen}
    pairs = _pairs(mit, ref)
    if len(pairs):
        diffs = (pairs["test_acc"] - pairs["test_acc_base"]).to_numpy(dtype=float)
        test = st.Test(diffs=diffs)
        rescued, moves = _transitions(pairs["diagnosis_base"], pairs["diagnosis"])
        mit, ref = pairs, pairs.rename(columns=lambda c: c[:-5] if c.endswith("_base") else c + "_mit")
        row.update(n=len(pairs), seeds=len(pairs), paired=True, delta_test_acc=diffs.mean(),
                   delta_val_acc=(pairs["val_acc"] - pairs["val_acc_base"]).mean(),
                   delta_attenuation=_mean_change(pairs["grad_attenuation_final"],
                                                  pairs["grad_attenuation_final_base"]),
                   rescued=rescued, transitions=moves)
    else:  # nothing pairs (sampled options, several trials per seed): compare group means
        test = st.Test(a=mit["test_acc"].to_numpy(dtype=float), b=ref["test_acc"].to_numpy(dtype=float))
        row.update(n=len(mit), seeds=int(mit["seed"].nunique()) if "seed" in mit else len(mit), paired=False,
                   delta_test_acc=mit["test_acc"].mean() - ref["test_acc"].mean() if len(ref) else np.nan,
                   delta_val_acc=mit["val_acc"].mean() - ref["val_acc"].mean() if len(ref) else np.nan,
                   delta_attenuation=(_finite_mean(mit["grad_attenuation_final"])
                                      - _finite_mean(ref["grad_attenuation_final"])),
                   rescued=int((mit["diagnosis"] == "healthy").sum()), transitions="")
    row.update(baseline_acc=ref["test_acc"].mean() if len(ref) else np.nan, mitigated_acc=mit["test_acc"].mean(),
               diverged=int((mit["status"] == "diverged").sum()),
               diverged_baseline=int((ref["status"] == "diverged").sum()),
               healthy=int((mit["diagnosis"] == "healthy").sum()),
               unhealthy_baselines=int((ref["diagnosis"] != "healthy").sum()))
    return row, test


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
            "p_adjusted", "mde", "verdict", "delta_val_acc", "diverged", "diverged_baseline", "delta_attenuation",
            "healthy", "rescued", "unhealthy_baselines", "transitions"]
    out = top.set_index(["mitigation", *cells])[cols].join(wide).reset_index()
    return out.sort_values([*cells, "rank", "mitigation"]).reset_index(drop=True)


def scientific(df: pd.DataFrame, nuisance: tuple[str, ...] | list[str] = ()) -> list[str]:
    """The factors that vary in `df`, less the seed and the nuisance options: what a table may group by."""
    return [c for c in varying(df, FACTORS) if c != "seed" and c not in nuisance]


def main_effects(df: pd.DataFrame, nuisance: tuple[str, ...] | list[str] = ()) -> pd.DataFrame:
    """Mean outcome per value of each varying scientific factor, over every other factor."""
    df = scored(df)
    rows = []
    for f in scientific(df, nuisance):
        for value, g in df.groupby(f):
            rows.append({"factor": f, "value": value, "n": len(g), "test_acc": g["test_acc"].mean(),
                         "grad_attenuation_init": g["grad_attenuation_init"].mean(),
                         "grad_attenuation_final": g["grad_attenuation_final"].mean(),
                         "healthy_share": (g["diagnosis"] == "healthy").mean()})
    return pd.DataFrame(rows)


def best_per_depth(df: pd.DataFrame, nuisance: tuple[str, ...] | list[str] = ()) -> pd.DataFrame:
    """Per depth, the configuration with the best mean validation accuracy over its seeds, with its test accuracy."""
    df = scored(df)
    config = [c for c in scientific(df, nuisance) if c != "depth"]
    keys = df[config].astype(str).agg("|".join, axis=1) if config else pd.Series("", index=df.index)
    rows = []
    for depth, g in df.groupby("depth"):
        best = g[keys[g.index] == g.groupby(keys[g.index])["val_acc"].mean().idxmax()]
        rows.append({"depth": depth, **best.iloc[0][config].to_dict(), "seeds": len(best),
                     "val_acc": best["val_acc"].mean(), "test_acc": best["test_acc"].mean(),
                     "grad_attenuation_final": _finite_mean(best["grad_attenuation_final"]),
                     "diagnosis": best["diagnosis"].mode().iloc[0]})
    return pd.DataFrame(rows)


def depth_trends(df: pd.DataFrame, nuisance: tuple[str, ...] | list[str] = ()) -> pd.DataFrame:
    """Configurations whose accuracy drops with depth, and whether gradients explain it.

    verdict: `vanishing` (deep trials' gradients vanished), `degradation` (accuracy
    fell while gradients stayed healthy), or the deep trials' other diagnosis.
    """
    df = scored(df)
    config = [c for c in scientific(df, nuisance) if c != "depth"]
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
