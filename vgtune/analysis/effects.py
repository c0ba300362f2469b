"""Which mitigation rescues which failure at which depth, by how much, how sure.

A mitigation is one change from the plain baseline (default init, no
normalization, no residual; sigmoid among activations; no pooling, dropout or
weight decay; SGD) along one factor, or one spec variant however many keys it
sets. Its effect is measured separately in every context cell (depth and every
other varying factor, activation say): the difference in test accuracy between
trials with the change and baseline trials of the same cell, paired by seed, so
the interval comes from seeds, not from pooling unlike configurations (a
difference of group means where nothing pairs). Nuisance options (a tuned
learning rate) are not part of the cell: each side runs at its own chosen
setting. A trial that failed to train scores the chance rate (its split's
majority-class share), never its broken network's output: it diverged, the
gradient-collapse stopper ended it, or its accuracy is at most `chance_margin`
above that rate; so two failed networks differ by exactly nothing. A trial a
scheduler stopped early ran part of the budget and enters no comparison.
The verdicts (`vgtune.analysis.verdicts`) are judged look by look over the
comparisons of the family (`family:`, by default the deepest depth); the others
are shown with an unadjusted 95% interval and no verdict. Mitigations are ranked
within each cell by their effect on validation accuracy, so test data chooses
nothing.

Accuracy that falls with depth while gradients stay healthy is degradation
(He et al. 2016), not vanishing; `depth_trends` tells the two apart.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from vgtune.analysis import stats as st
from vgtune.analysis import verdicts as vd
from vgtune.core.columns import CHANCE_OF
from vgtune.core.member import SCHEDULER_STOP
from vgtune.core.schema import FACTORS

MITIGATION_FACTORS = ("init", "norm", "residual", "activation", "pool", "dropout", "weight_decay", "optimizer")
BASELINE = {"init": "default", "norm": "none", "residual": "none", "pool": "none", "dropout": 0.0,
            "weight_decay": 0.0, "optimizer": "sgd"}
ACTIVATION_BASELINES = ("sigmoid", "tanh", "relu")
EFFECT_COLUMNS = ["mitigation", "factor", "value", "depth", "family", "n", "seeds", "look", "paired", "nuisance",
                  "baseline_acc", "mitigated_acc", "delta_test_acc", "ci_low", "ci_high", "level", "p_adjusted", "mde",
                  "verdict", "stopped", "delta_val_acc", "diverged", "diverged_baseline", "failed",
                  "failed_baseline", "delta_attenuation", "vanished", "vanished_baseline", "healthy", "rescued",
                  "unhealthy_baselines", "transitions", "rank"]
DEGRADATION_DROP = 0.10  # accuracy lost from the shallowest to the deepest depth that counts as a drop
FAMILY_DEFAULT = "deepest"  # `family:` when the spec names none: the comparisons at the deepest depth
FAMILY_WORDS = ("deepest", "all")
BROKEN = ("diverged", "stopped")  # statuses of a trial that failed to train, whatever its accuracy


def scored(df: pd.DataFrame) -> pd.DataFrame:
    """Trials that have an accuracy to compare: finished and not errored, nor cut short by a scheduler (a trial
    that ran part of the budget would compare unlike budgets)."""
    ok = df["status"].isin(["completed", "diverged", "stopped"]) & df["test_acc"].notna()
    if "stop_reason" in df.columns:
        ok &= ~df["stop_reason"].fillna("").astype(str).str.startswith(SCHEDULER_STOP)
    return df[ok]


def failures(df: pd.DataFrame, chance_margin: float) -> pd.DataFrame:
    """Failure-scored accuracies: a trial that did not train on a split (it diverged, was stopped for a collapsed
    gradient, or scored at most `chance_margin` above the split's chance rate) scores exactly that rate; `failed`
    says so for the test split. The report's tables read these scores; trials.csv keeps the measured accuracies."""
    out = df.copy()
    broken = df["status"].isin(BROKEN).to_numpy()
    out["failed"] = broken
    for acc, chance in CHANCE_OF.items():
        if chance in df.columns and acc in df.columns:
            out[acc], fail = failure_scores(broken, df[acc].to_numpy(dtype=float), df[chance].to_numpy(dtype=float),
                                            chance_margin)
            if acc == "test_acc":
                out["failed"] = fail
    return out


def failure_scores(broken: np.ndarray, acc: np.ndarray, chance: np.ndarray,
                   chance_margin: float) -> tuple[np.ndarray, np.ndarray]:
    """(scores, failed): the rule of `failures` on arrays (`broken`: diverged or stopped by the stopper)."""
    fail = ~np.isnan(chance) & (broken | (acc <= chance + chance_margin))
    return np.where(fail, chance, acc), fail


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


def _median_change(after: pd.Series, before: pd.Series) -> tuple[float, int, int]:
    """(median of after - before over the pairs where both are finite, seeds whose gradient vanished entirely
    after, before): a gradient that never reached block 1 is -inf decades, which no mean or median summarizes."""
    a, b = after.to_numpy(dtype=float), before.to_numpy(dtype=float)
    ok = np.isfinite(a) & np.isfinite(b)
    median = float(np.median(a[ok] - b[ok])) if ok.any() else float("nan")
    return median, int(np.isneginf(a).sum()), int(np.isneginf(b).sum())


def _transitions(before: pd.Series, after: pd.Series) -> tuple[int, str]:
    """How many unhealthy baselines the change made healthy, and the commonest transitions."""
    moves = Counter(f"{b}->{a}" for b, a in zip(before, after) if b != a)
    rescued = sum(1 for b, a in zip(before, after) if b != "healthy" and a == "healthy")
    return rescued, ", ".join(f"{m} x{n}" for m, n in moves.most_common(3))


@dataclass
class Comparison:
    """A mitigation against its baseline in one cell: which rows of a table hold either side."""

    mitigation: str  # `init=kaiming_normal`, or the spec variant's label
    factor: str  # the factor it changes (`variant` for a spec variant)
    value: Any  # the changed value
    cell: dict[str, Any]  # depth and the other context columns -> their values
    mitigated: pd.Index  # rows with the change
    baseline: pd.Index  # baseline rows of the same cell

    @property
    def key(self) -> str:
        """A stable id: the mitigation and its cell."""
        return "|".join([self.mitigation, *(f"{k}={v}" for k, v in self.cell.items())])


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


def comparisons(df: pd.DataFrame, nuisance: tuple[str, ...] | list[str] = ()) -> list[Comparison]:
    """Every comparison a table of trials (or of arms, one row each) holds, in report order; `nuisance`: options
    tuned per arm, so not matched between the two sides."""
    base = baseline(df)
    skip = set(nuisance) | {"seed"}
    out = []
    for factor in base:
        changed, plain, cells = _groups(df, factor, base, skip)
        for keys, mit in changed.groupby([factor] + cells, sort=True, dropna=False):
            cell = dict(zip(cells, keys[1:]))
            ref = plain
            for c, v in cell.items():
                ref = ref[ref[c].map(str) == str(v)]
            label = keys[0] if factor == "variant" else f"{factor}={keys[0]}"
            out.append(Comparison(label, factor, keys[0], cell, mit.index, ref.index))
    return out


def in_family(cells: list[dict[str, Any]], family: Any) -> list[bool]:
    """Which comparisons (by cell) the family holds: `deepest` (the deepest depth's), `all`, or a mapping of cell
    columns to a value or a list of values (`{depth: [24], activation: relu}`)."""
    if family in (None, FAMILY_DEFAULT):
        deepest = max((c["depth"] for c in cells), default=None)
        return [c["depth"] == deepest for c in cells]
    if family == "all":
        return [True] * len(cells)
    wanted = {k: {str(x) for x in (v if isinstance(v, list) else [v])} for k, v in family.items()}
    return [all(str(c.get(k, "")) in vs for k, vs in wanted.items()) for c in cells]


def effects(df: pd.DataFrame, nuisance: tuple[str, ...] | list[str] = (), plan: vd.Plan | None = None,
            family: Any = FAMILY_DEFAULT, chance_margin: float = 0.05, family_size: int | None = None) -> pd.DataFrame:
    """One row per (mitigation, cell): accuracy and attenuation effects against the baseline, ranked per cell
    by the validation effect. The family's rows are judged look by look (`plan`, `vgtune.analysis.verdicts`),
    every column of a row on the seeds its verdict rests on; the others are described on every seed. A `look`
    column (1, 2, ...) places each trial's seed in its look (none: one look); a look still short of its planned
    seeds on either arm (a sweep still running) is not judged. `family_size`: the family's comparisons as the
    sweep's design counted them (the larger of that and those found here judges them)."""
    plan = plan or vd.Plan()
    complete = _complete_looks(df, plan)
    df = failures(scored(df), chance_margin)
    found = comparisons(df, nuisance)
    if not found:
        return pd.DataFrame(columns=EFFECT_COLUMNS)
    judged = in_family([c.cell for c in found], family)
    plan = vd.Plan(plan.looks, plan.margin, plan.correction, max(family_size or 0, sum(judged), 1), plan.alpha)
    rows = []
    for comparison, member in zip(found, judged):
        mit, ref = df.loc[comparison.mitigated], df.loc[comparison.baseline]
        looks = min((complete.get(a, len(plan.looks)) for a in {*mit.get("arm", []), *ref.get("arm", [])}),
                    default=len(plan.looks))
        rows.append(_effect(comparison, mit, ref, plan, member, looks))
    out = pd.DataFrame(rows)
    if plan.correction in ("holm", "bh"):
        out = _step_down(out, plan)
    out = out.drop(columns="_test")
    cell_cols = [c for c in out.columns if c not in EFFECT_COLUMNS]
    out = out[EFFECT_COLUMNS[:4] + cell_cols + EFFECT_COLUMNS[4:-1]]
    group = out[["depth"] + cell_cols].map(str).agg("|".join, axis=1)
    out["rank"] = out.groupby(group)["delta_val_acc"].rank(ascending=False, method="min")
    return out.sort_values(["depth", *cell_cols, "rank", "mitigation"], na_position="last").reset_index(drop=True)


def _complete_looks(df: pd.DataFrame, plan: vd.Plan) -> dict[str, int]:
    """arm -> how many of its leading looks have every planned seed (errored trials count: they ran); {} for a
    sweep whose trials carry no look (its trials are the grid's)."""
    looked = "look" in df.columns and pd.to_numeric(df["look"], errors="coerce").notna().any()
    if "arm" not in df.columns or not looked:
        return {}
    planned = np.diff(np.r_[0, plan.looks])
    look = _look_of(df)
    out = {}
    for arm, looks in pd.Series(look, index=df.index).groupby(df["arm"]):
        counts = looks.value_counts()
        out[arm] = next((k for k, n in enumerate(planned) if counts.get(k + 1, 0) < n), len(planned))
    return out


def _verdict(data: list[tuple[st.Test, bool]], plan: vd.Plan, member: bool) -> dict[str, Any]:
    """The verdict columns of a row: judged look by look for the family, described (95%, every seed) otherwise."""
    if member:
        j = vd.judge(data, plan)
        test = data[j.look - 1][0] if j.look else st.Test(diffs=np.array([]))
        return {"verdict": j.verdict, "look": j.look, "seeds": j.seeds, "ci_low": j.low, "ci_high": j.high,
                "level": j.level, "p_adjusted": min(1.0, j.p * plan.alpha / j.level) if j.look else np.nan,
                "mde": test.mde(j.level) if j.look else np.nan, "stopped": j.reason, "delta_test_acc": j.mean,
                "_test": test}
    test = data[-1][0] if data else st.Test(diffs=np.array([]))
    low, high = vd.describe(test)
    return {"verdict": "", "look": len(data), "seeds": test.n, "ci_low": low, "ci_high": high, "level": st.ALPHA,
            "p_adjusted": np.nan, "mde": test.mde(st.ALPHA), "stopped": "outside the family: not judged",
            "delta_test_acc": test.mean, "_test": test}


def _step_down(out: pd.DataFrame, plan: vd.Plan) -> pd.DataFrame:
    """`holm` / `bh` over the family's comparisons at their one look; no `negligible` (see verdicts)."""
    member = out["family"].to_numpy(dtype=bool)
    tests = list(out["_test"])
    neither = (out["verdict"] == vd.NEITHER).to_numpy()
    p = np.array([t.p_value() if m and not nt else np.nan for t, m, nt in zip(tests, member, neither)])
    p_adjusted, levels = st.adjust(p, plan.correction, plan.alpha)
    level = st.mde_level(int((~np.isnan(p_adjusted)).sum()), plan.correction, plan.alpha)
    verdict, low, high, why = [], [], [], []
    for t, m, nt, a in zip(tests, member, neither, levels):
        v, lo, hi = vd.at_look(t, nt, a if not np.isnan(a) else st.ALPHA, None) if m else (None, *vd.describe(t))
        verdict.append((v or vd.INCONCLUSIVE) if m else "")
        low.append(lo)
        high.append(hi)
        why.append(f"{plan.correction} over the family, {t.n} seeds" if m else "outside the family: not judged")
    return out.assign(verdict=verdict, ci_low=low, ci_high=high, level=levels, p_adjusted=p_adjusted,
                      mde=[t.mde(level) for t in tests], stopped=why)


def _pairs(mit: pd.DataFrame, ref: pd.DataFrame) -> pd.DataFrame:
    """Mitigated and baseline trials side by side by seed (`*_base` columns); empty where nothing pairs."""
    if len(mit) == 1 and len(ref) == 1:
        return mit.merge(ref, how="cross", suffixes=("", "_base"))
    if "seed" in mit.columns and not ref.empty:
        pairs = mit.merge(ref, on="seed", suffixes=("", "_base"))
        return pairs if not pairs.duplicated("seed").any() else pairs.iloc[0:0]  # several per seed: not pairs
    return mit.iloc[0:0]


def _look_of(df: pd.DataFrame) -> np.ndarray:
    """Each row's look (1 where the table has none)."""
    if "look" not in df.columns:
        return np.ones(len(df), dtype=int)
    return pd.to_numeric(df["look"], errors="coerce").fillna(1).astype(int).to_numpy()


def paired_looks(mit_score: np.ndarray, ref_score: np.ndarray, mit_failed: np.ndarray, ref_failed: np.ndarray,
                 look: np.ndarray, planned: int) -> list[tuple[st.Test, bool]]:
    """A paired comparison's cumulative data after each look up to the latest one present (at most `planned`):
    (the test of the differences, both arms failed on every seed)."""
    last = min(planned, int(look.max())) if len(look) else 0
    out = []
    for k in range(1, last + 1):
        sel = look <= k
        out.append((st.Test(diffs=mit_score[sel] - ref_score[sel]),
                    vd.both_failed(mit_failed[sel], ref_failed[sel])))
    return out


def _effect(comparison: Comparison, mit: pd.DataFrame, ref: pd.DataFrame, plan: vd.Plan, member: bool,
            looks: int) -> dict[str, Any]:
    """One comparison's row, judged on at most its first `looks` looks; every column on the seeds its verdict
    rests on."""
    chosen = "; ".join(sorted({str(v) for v in mit.get("nuisance", pd.Series(dtype=str)).dropna() if v}))
    row = {"mitigation": comparison.mitigation, "factor": comparison.factor, "value": comparison.value,
           **comparison.cell, "family": member, "nuisance": chosen}
    pairs = _pairs(mit, ref)
    if len(pairs):
        look = np.maximum(_look_of(pairs), _look_of(pairs.rename(columns=lambda c: c[:-5] if c.endswith("_base")
                                                                      else c + "_mit")))
        data = paired_looks(pairs["test_acc"].to_numpy(float), pairs["test_acc_base"].to_numpy(float),
                            pairs["failed"].to_numpy(bool), pairs["failed_base"].to_numpy(bool), look,
                            min(len(plan.looks), looks))
        row |= _verdict(data, plan, member)
        pairs = pairs[look <= max(row["look"], 1)]
        rescued, moves = _transitions(pairs["diagnosis_base"], pairs["diagnosis"])
        delta, vanished, vanished_base = _median_change(pairs["grad_attenuation_final"],
                                                        pairs["grad_attenuation_final_base"])
        mit, ref = pairs, pairs.rename(columns=lambda c: c[:-5] if c.endswith("_base") else c + "_mit")
        row.update(n=len(pairs), paired=True, delta_val_acc=(pairs["val_acc"] - pairs["val_acc_base"]).mean(),
                   delta_attenuation=delta, vanished=vanished, vanished_baseline=vanished_base,
                   rescued=rescued, transitions=moves)
    else:  # nothing pairs (sampled options, several trials per seed): compare group means, one look
        test = st.Test(a=mit["test_acc"].to_numpy(dtype=float), b=ref["test_acc"].to_numpy(dtype=float))
        row |= _verdict([(test, vd.both_failed(mit["failed"].to_numpy(bool), ref["failed"].to_numpy(bool)))],
                        plan, member)
        row.update(n=len(mit), paired=False,
                   delta_val_acc=mit["val_acc"].mean() - ref["val_acc"].mean() if len(ref) else np.nan,
                   delta_attenuation=(_finite_median(mit["grad_attenuation_final"])
                                      - _finite_median(ref["grad_attenuation_final"])),
                   vanished=int(np.isneginf(mit["grad_attenuation_final"].to_numpy(float)).sum()),
                   vanished_baseline=int(np.isneginf(ref["grad_attenuation_final"].to_numpy(float)).sum()),
                   rescued=int((mit["diagnosis"] == "healthy").sum()), transitions="")
    row.update(baseline_acc=ref["test_acc"].mean() if len(ref) else np.nan, mitigated_acc=mit["test_acc"].mean(),
               diverged=int((mit["status"] == "diverged").sum()),
               diverged_baseline=int((ref["status"] == "diverged").sum()),
               failed=int(mit["failed"].sum()), failed_baseline=int(ref["failed"].sum()),
               healthy=int(((mit["diagnosis"] == "healthy") & (mit["status"] != "diverged")).sum()),
               unhealthy_baselines=int((ref["diagnosis"] != "healthy").sum()))
    return row


def _finite_median(values: pd.Series) -> float:
    values = values[np.isfinite(values.to_numpy(dtype=float))]
    return float(values.median()) if len(values) else float("nan")


def label(value) -> str:
    """A cell value as text; empty where a mitigation has no such context (the activation comparison)."""
    return "" if pd.isna(value) else str(value)


def cell_columns(eff: pd.DataFrame) -> list[str]:
    """The context columns of an effects table besides depth (activation, ...)."""
    return [c for c in eff.columns if c not in EFFECT_COLUMNS]


def ranking(eff: pd.DataFrame) -> pd.DataFrame:
    """At the deepest depth, one row per mitigation and cell, best first within each cell; plus the effect per depth.
    A comparison of a factor that is itself a cell of the others (`activation=relu` against sigmoid, where the
    mitigations are compared per activation) is no mitigation of a cell: it stays in the effects table only."""
    if eff.empty:
        return eff
    cells = cell_columns(eff)
    deepest = eff["depth"].max()
    if cells:  # a factor that is a cell of the others (activation) is context there, not a mitigation to rank
        eff = eff[~eff["factor"].isin(cells)]
    keyed = eff.assign(**{c: eff[c].map(label) for c in cells})
    top = keyed[keyed["depth"] == deepest]
    wide = keyed.pivot_table(index=["mitigation", *cells], columns="depth", values="delta_test_acc")
    wide.columns = [f"delta_acc_d{d}" for d in wide.columns]
    cols = ["rank", "family", "n", "seeds", "look", "nuisance", "baseline_acc", "mitigated_acc", "delta_test_acc",
            "ci_low", "ci_high", "p_adjusted", "mde", "verdict", "stopped", "delta_val_acc", "diverged",
            "diverged_baseline", "failed", "failed_baseline", "delta_attenuation", "vanished", "vanished_baseline",
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
                         "grad_attenuation_init": _finite_median(g["grad_attenuation_init"]),
                         "grad_attenuation_final": _finite_median(g["grad_attenuation_final"]),
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
                     "grad_attenuation_final": _finite_median(best["grad_attenuation_final"]),
                     "diagnosis": best["diagnosis"].mode().iloc[0]})
    return pd.DataFrame(rows)


def depth_trends(df: pd.DataFrame, nuisance: tuple[str, ...] | list[str] = ()) -> pd.DataFrame:
    """Configurations whose accuracy drops with depth, and whether gradients explain it.

    verdict: `degradation` (accuracy fell while every deep seed's gradients stayed healthy), the deep seeds'
    commonest unhealthy diagnosis (`vanishing`, `dead`, `diverged`, ...) where most of them are unhealthy, else
    `mixed` (some deep seeds healthy, some not); `healthy_deep` counts the healthy ones. Attenuation is the median
    over the deep seeds whose gradient reached block 1 at all; `vanished` counts the others.
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
        key = key if isinstance(key, tuple) else (key,)
        attenuation = deep_rows["grad_attenuation_final"].to_numpy(dtype=float)
        rows.append(dict(zip(config, key)) | {
            "shallow_depth": shallow, "deep_depth": deep, "acc_shallow": acc[shallow], "acc_deep": acc[deep],
            "drop": drop, "attenuation_deep": _finite_median(deep_rows["grad_attenuation_final"]),
            "vanished": int(np.isneginf(attenuation).sum()), "healthy_deep": _healthy_of(deep_rows),
            "verdict": _trend(deep_rows)})
    return pd.DataFrame(rows)


def _healthy(rows: pd.DataFrame) -> pd.Series:
    """Seeds whose gradients ended in the healthy band (a diverged trial never does)."""
    return (rows["diagnosis"] == "healthy") & (rows["status"] != "diverged")


def _healthy_of(rows: pd.DataFrame) -> str:
    return f"{int(_healthy(rows).sum())} of {len(rows)}"


def _trend(deep: pd.DataFrame) -> str:
    healthy = _healthy(deep)
    if healthy.all():
        return "degradation"
    if healthy.mean() >= 0.5:
        return "mixed"
    diagnoses = deep.loc[~healthy, "diagnosis"].where(deep.loc[~healthy, "status"] != "diverged", "diverged")
    return str(diagnoses.mode().iloc[0])
