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
import numbers

import pandas as pd

from vgtune.analysis import effects
from vgtune.core.columns import SELECTION_METRICS
from vgtune.core.schema import STATUSES


def tuned(df: pd.DataFrame) -> bool:
    """Whether the trials carry nuisance settings to choose between."""
    return "nuisance" in df.columns and df["nuisance"].fillna("").astype(str).str.len().gt(0).any()


def finished(df: pd.DataFrame) -> pd.DataFrame:
    """Trials that ended with a score to choose on: completed, stopped, or diverged (scored at chance)."""
    return df[df["status"].isin(STATUSES[:3])]


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
    scores = _scores(finished(df), metric, mode)
    best = scores.groupby(level="arm").idxmax() if mode == "max" else scores.groupby(level="arm").idxmin()
    chosen = {arm: setting for arm, (_, setting) in best.items()}
    return df.assign(selected=df["nuisance"] == df["arm"].map(chosen))


def shared_setting(df: pd.DataFrame, metric: str = "val_acc", mode: str = "max") -> str:
    """The one nuisance setting best on average over every arm: what a single shared setting would be."""
    per_setting = _scores(finished(df), metric, mode).groupby(level="nuisance").mean()
    return str(per_setting.idxmax() if mode == "max" else per_setting.idxmin())


def compare(fixed: pd.DataFrame, chosen: pd.DataFrame) -> pd.DataFrame:
    """Per depth and cell, each mitigation's rank (by validation effect) at the shared setting next to tuned ones.

    Ranks only, on validation data: the verdicts a report states come from its fresh seeds alone, and the
    family-wise error rate counts those."""
    cells = ["depth", *effects.cell_columns(chosen)]
    cols = ["mitigation", *cells, "rank", "delta_val_acc"]
    a = fixed.reindex(columns=cols + ["nuisance"])
    b = chosen.reindex(columns=cols + ["nuisance"])
    a[cells[1:]], b[cells[1:]] = a[cells[1:]].map(effects.label), b[cells[1:]].map(effects.label)
    both = a.drop(columns="nuisance").merge(b, on=["mitigation", *cells], how="outer", suffixes=("_fixed", "_tuned"))
    both = both.rename(columns={"nuisance": "nuisance_tuned"})
    both["changed"] = both["rank_fixed"] != both["rank_tuned"]
    return both.sort_values([*cells, "rank_tuned", "mitigation"]).reset_index(drop=True)


FLOW = {(True, "helps"): "gradient flow and accuracy", (True, "hurts"): "gradient flow, but hurts accuracy",
        (True, "inconclusive"): "gradient flow only", (False, "helps"): "accuracy only",
        (False, "hurts"): "neither; hurts accuracy", (False, "inconclusive"): "neither"}
HEALTHY_ALREADY = {"helps": "accuracy (gradients were healthy)", "hurts": "hurts accuracy (gradients were healthy)",
                   "inconclusive": "nothing to restore"}


def remedies(eff: pd.DataFrame) -> pd.DataFrame:
    """At the deepest depth: does each mitigation restore gradient flow, accuracy, both or neither?

    Gradient flow counts as restored when some baseline seeds end unhealthy and every mitigated
    seed ends in the healthy band (diagnosis `healthy`, so neither vanishing nor exploding nor
    diverged); accuracy by the verdict.
    """
    if eff.empty:
        return pd.DataFrame()
    deep = eff[eff["depth"] == eff["depth"].max()]
    cells = effects.cell_columns(eff)
    rows = []
    for _, r in deep.iterrows():
        n, healthy, unhealthy = int(r["n"]), int(r["healthy"]), int(r["unhealthy_baselines"])
        answer = (HEALTHY_ALREADY[r["verdict"]] if unhealthy == 0
                  else FLOW[(healthy == n, r["verdict"])])
        rows.append({"mitigation": r["mitigation"], "depth": r["depth"], **{c: r[c] for c in cells},
                     "delta_attenuation": r["delta_attenuation"], "healthy": f"{healthy} of {n}",
                     "healthy_baseline": f"{int(r['n']) - unhealthy} of {n}" if r["paired"] else "",
                     "diverged": f"{int(r['diverged'])} of {n}", "delta_test_acc": r["delta_test_acc"],
                     "verdict": r["verdict"], "restores": answer})
    return pd.DataFrame(rows)


# edges.csv: the arm, its label, the nuisance option, the chosen value, lowest | highest, the values tried
EDGE_COLUMNS = ["arm", "label", "option", "chosen", "edge", "tried"]


def edges(df: pd.DataFrame, nuisance: list[str] | tuple[str, ...], metric: str = "val_acc",
          mode: str = "max") -> pd.DataFrame:
    """Arms whose chosen setting of a numeric nuisance option is the lowest or highest of a grid of 3 or more,
    and strictly better than every other setting (a tie, such as an arm at chance everywhere, chose nothing):
    the optimum may lie outside the grid (the Tuning Playbook: extend it)."""
    if not tuned(df) or "selected" not in df.columns:
        return pd.DataFrame(columns=EDGE_COLUMNS)
    label = arm_labels(df, nuisance)
    scores = _scores(finished(df), metric, mode)
    rows = []
    for arm, g in df.groupby("arm"):
        chosen = g[g["selected"]]
        ranked = scores.get(arm, pd.Series(dtype=float)).sort_values(ascending=mode == "min")
        if len(ranked) < 2 or ranked.iloc[0] == ranked.iloc[1]:
            continue
        for key in nuisance:
            tried = sorted(v for v in pd.unique(g[key]) if isinstance(v, numbers.Real) and not isinstance(v, bool))
            if len(tried) < 3 or chosen.empty:
                continue
            value = chosen[key].iloc[0]
            if value in (tried[0], tried[-1]):
                rows.append({"arm": arm, "label": label[arm], "option": key, "chosen": value,
                             "edge": "lowest" if value == tried[0] else "highest",
                             "tried": ", ".join(f"{v:g}" for v in tried)})
    rows.sort(key=lambda r: _label_key(r["label"]))
    return pd.DataFrame(rows, columns=EDGE_COLUMNS)


def _label_key(label: str) -> tuple:
    """Arms in depth order, then by name."""
    depth = label.split()[0].removeprefix("depth=") if label.startswith("depth=") else ""
    return (int(depth) if depth.isdigit() else 0, label)


def arm_labels(df: pd.DataFrame, nuisance: list[str] | tuple[str, ...]) -> dict[str, str]:
    """arm -> its depth and activation, then its spec variant or else every mitigation factor it sets away from
    the plain baseline (`depth=24 activation=relu norm=batch`)."""
    config = effects.scientific(df, nuisance)
    out = {}
    for arm, row in df.drop_duplicates("arm").set_index("arm").iterrows():
        parts = [f"{c}={row[c]}" for c in ("depth", "activation") if c in config]
        variant = row.get("variant")
        if isinstance(variant, str) and variant:
            parts.append(variant)
        else:
            parts += [f"{c}={row[c]}" for c in config if c in effects.BASELINE and row[c] != effects.BASELINE[c]]
        out[arm] = " ".join(parts if len(parts) > 2 or variant else parts + ["(plain)"]) or str(arm)
    return out
