"""Fair comparisons (the Tuning Playbook's rule): every arm at its own best nuisance setting.

An *arm* is one combination of the scientific factors; its trials differ only in
nuisance options (the learning rate, say) and seeds. Each arm's nuisance setting
is chosen on the validation metric averaged over its seeds, never on test data;
the report then compares arms at their chosen settings (`tuned`), and, to show
what a shared setting would have concluded, at the one setting that is best on
average over all arms (`fixed`).
"""

from __future__ import annotations

import math

import pandas as pd

from vgtune import ranking

SELECTION_METRICS = ("val_acc", "train_acc", "train_loss", "grad_attenuation")  # never test data


def tuned(df: pd.DataFrame) -> bool:
    """Whether the trials carry nuisance settings to choose between."""
    return "nuisance" in df.columns and df["nuisance"].fillna("").astype(str).str.len().gt(0).any()


def _scores(df: pd.DataFrame, metric: str, mode: str) -> pd.Series:
    """Mean `metric` per (arm, nuisance) over seeds; a non-finite score is the worst possible."""
    worst = -math.inf if mode == "max" else math.inf
    values = pd.to_numeric(df[metric], errors="coerce").where(lambda v: v.map(math.isfinite), worst)
    return values.groupby([df["arm"], df["nuisance"]]).mean()


def select(df: pd.DataFrame, metric: str = "val_acc", mode: str = "max") -> pd.DataFrame:
    """`df` with `selected`: True for the trials of each arm's best nuisance setting (all trials if untuned)."""
    if metric not in SELECTION_METRICS:
        raise ValueError(f"nuisance settings are chosen on {metric!r}, which is test data; "
                         f"valid: {', '.join(SELECTION_METRICS)}")
    if not tuned(df):
        return df.assign(selected=True)
    done = ranking.scored(df)
    scores = _scores(done, metric, mode)
    best = scores.groupby(level="arm").idxmax() if mode == "max" else scores.groupby(level="arm").idxmin()
    chosen = {arm: setting for arm, (_, setting) in best.items()}
    return df.assign(selected=df["nuisance"] == df["arm"].map(chosen))


def shared_setting(df: pd.DataFrame, metric: str = "val_acc", mode: str = "max") -> str:
    """The one nuisance setting best on average over every arm: what a single shared setting would be."""
    done = ranking.scored(df)
    per_setting = _scores(done, metric, mode).groupby(level="nuisance").mean()
    return str(per_setting.idxmax() if mode == "max" else per_setting.idxmin())


def compare(fixed: pd.DataFrame, chosen: pd.DataFrame) -> pd.DataFrame:
    """Per depth and cell, each mitigation's rank and verdict at the shared setting next to tuned ones."""
    cells = ["depth", *ranking.cell_columns(chosen)]
    cols = ["mitigation", *cells, "rank", "delta_test_acc", "verdict"]
    a = fixed.reindex(columns=cols + ["nuisance"])
    b = chosen.reindex(columns=cols + ["nuisance"])
    a[cells[1:]], b[cells[1:]] = a[cells[1:]].map(ranking.label), b[cells[1:]].map(ranking.label)
    both = a.drop(columns="nuisance").merge(b, on=["mitigation", *cells], how="outer", suffixes=("_fixed", "_tuned"))
    both = both.rename(columns={"nuisance": "nuisance_tuned"})
    both["changed"] = ((both["rank_fixed"] != both["rank_tuned"]) | (both["verdict_fixed"] != both["verdict_tuned"]))
    return both.sort_values([*cells, "rank_tuned", "mitigation"]).reset_index(drop=True)


def remedies(eff: pd.DataFrame, decades: float = 1.0) -> pd.DataFrame:
    """At the deepest depth: does each mitigation restore gradient flow, accuracy, both or neither?

    Gradient flow counts as restored when the final attenuation moves `decades` or more
    toward 0 or an unhealthy baseline turns healthy; accuracy by the verdict.
    """
    if eff.empty:
        return pd.DataFrame()
    deep = eff[eff["depth"] == eff["depth"].max()]
    cells = ranking.cell_columns(eff)
    rows = []
    for _, r in deep.iterrows():
        flow = (r["delta_attenuation"] >= decades) or (r["rescued"] > 0)
        answer = {(True, "helps"): "gradient flow and accuracy", (True, "hurts"): "gradient flow, but hurts accuracy",
                  (False, "helps"): "accuracy only", (False, "hurts"): "neither; hurts accuracy"}.get(
                      (bool(flow), r["verdict"]), "gradient flow only" if flow else "neither")
        rows.append({"mitigation": r["mitigation"], "depth": r["depth"], **{c: r[c] for c in cells},
                     "delta_attenuation": r["delta_attenuation"],
                     "healthy": f"{int(r['rescued'])} of {int(r['unhealthy_baselines'])}",
                     "delta_test_acc": r["delta_test_acc"], "verdict": r["verdict"], "restores": answer})
    return pd.DataFrame(rows)
