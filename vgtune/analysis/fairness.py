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
    """`mean_score` of `metric` per (arm, nuisance) over seeds: the rule the sweep's design chooses by."""
    values = pd.to_numeric(df[metric], errors="coerce")
    return values.groupby([df["arm"], df["nuisance"]]).agg(lambda v: mean_score(list(v), mode))


def mean_score(values: list[float], mode: str) -> float:
    """An arm's score at one setting: the mean over its seeds, a non-finite value counting as the worst possible."""
    worst = -math.inf if mode == "max" else math.inf
    finite = [v if isinstance(v, numbers.Real) and math.isfinite(v) else worst for v in values]
    return sum(finite) / len(finite) if finite else worst


def best(scores: dict[str, float], mode: str) -> tuple[str, bool]:
    """(the best setting label, whether it beats every other strictly): ties go to the first label in sorted
    order, as `select` breaks them."""
    order = sorted(scores)
    ranked = sorted(order, key=lambda k: -scores[k] if mode == "max" else scores[k])
    top = ranked[0]
    return top, len(ranked) == 1 or scores[ranked[1]] != scores[top]


def step(grid: list, side: str) -> float | None:
    """The grid's own ratio at one edge (`low` or `high`): the next value beyond it is the edge times (high) or
    over (low) it. None where the grid cannot be stepped: fewer than two values, or not all positive numbers."""
    values = sorted(grid) if all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in grid) else []
    if len(values) < 2 or values[0] <= 0 or len(set(values)) < 2:
        return None
    return values[1] / values[0] if side == "low" else values[-1] / values[-2]


def beyond(tried: list[dict], chosen: dict, grid: dict[str, list], extend: int) -> list[dict]:
    """The settings the learning-rate bracket tries next: for each stepped option (`grid`) whose `chosen` value is
    the highest (else the lowest) tried, the next step beyond it by the grid's own ratio, while fewer than `extend`
    steps were tried past the grid on that side. Values are rounded to 10 significant digits."""
    out = []
    for key, values in grid.items():
        seen = sorted({t[key] for t in tried if isinstance(t.get(key), numbers.Real)})
        value = chosen.get(key)
        side = "high" if seen and value == seen[-1] else "low" if seen and value == seen[0] else None
        ratio = step(values, side) if side else None
        if ratio is None:
            continue
        past = [v for v in seen if (v > max(values) if side == "high" else v < min(values))]
        if len(past) < extend:
            out.append(chosen | {key: float(f"{(value * ratio if side == 'high' else value / ratio):.10g}")})
    return out


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


def shared_setting(df: pd.DataFrame, metric: str = "val_acc", mode: str = "max") -> str | None:
    """The one nuisance setting best on average over every arm: what a single shared setting would be (among the
    settings every arm tried: the spec's grid, not the steps some arms' brackets took past it)."""
    scores = _scores(finished(df), metric, mode)
    arms = scores.index.get_level_values("arm").nunique()
    common = scores.groupby(level="nuisance").size().loc[lambda n: n == arms].index
    per_setting = scores[scores.index.get_level_values("nuisance").isin(common)].groupby(level="nuisance").mean()
    if per_setting.empty:  # no setting finished on every arm: there is no shared one to show
        return None
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


FLOW = {"helps": "gradient flow and accuracy", "hurts": "gradient flow, but hurts accuracy",
        "negligible": "gradient flow; accuracy unchanged", "neither trains": "gradient flow, but neither trains",
        "inconclusive": "gradient flow only", "": "gradient flow (accuracy not judged here)"}
NO_FLOW = {"helps": "accuracy only", "hurts": "neither; hurts accuracy", "negligible": "neither (no difference)",
           "neither trains": "neither: neither trains", "inconclusive": "neither",
           "": "neither (accuracy not judged here)"}
HEALTHY_ALREADY = {"helps": "accuracy (gradients were healthy)", "hurts": "hurts accuracy (gradients were healthy)",
                   "negligible": "nothing (gradients were healthy; accuracy unchanged)",
                   "neither trains": "nothing (neither trains)", "inconclusive": "nothing to restore",
                   "": "nothing to restore"}


def remedies(eff: pd.DataFrame) -> pd.DataFrame:
    """At the deepest depth: does each mitigation restore gradient flow, accuracy, both or neither?

    Gradient flow counts as restored when some baseline seeds end unhealthy and every mitigated
    seed ends in the healthy band (diagnosis `healthy`: neither vanishing nor exploding, and never a
    diverged trial); accuracy by the verdict. Counts are seeds; the effect is in test accuracy (a fraction).
    """
    if eff.empty:
        return pd.DataFrame()
    deep = eff[eff["depth"] == eff["depth"].max()]
    cells = effects.cell_columns(eff)
    rows = []
    for _, r in deep.iterrows():
        n, healthy, unhealthy = int(r["n"]), int(r["healthy"]), int(r["unhealthy_baselines"])
        verdict = r["verdict"] if isinstance(r["verdict"], str) else ""
        answer = HEALTHY_ALREADY[verdict] if unhealthy == 0 else (FLOW if healthy == n else NO_FLOW)[verdict]
        rows.append({"mitigation": r["mitigation"], "depth": r["depth"], **{c: r[c] for c in cells},
                     "delta_attenuation_decades": r["delta_attenuation"], "seeds": n, "healthy": healthy,
                     "healthy_baseline": n - unhealthy if r["paired"] else pd.NA,
                     "diverged": int(r["diverged"]), "delta_test_acc": r["delta_test_acc"],
                     "verdict": verdict, "restores": answer})
    return pd.DataFrame(rows)


# edges.csv: the arm, its label, the nuisance option, the chosen value, lowest | highest, the values tried
EDGE_COLUMNS = ["arm", "label", "option", "chosen", "edge", "tried"]


def edges(df: pd.DataFrame, nuisance: list[str] | tuple[str, ...], metric: str = "val_acc",
          mode: str = "max") -> pd.DataFrame:
    """Arms whose chosen setting of a numeric nuisance option is the lowest or highest of the two or more values
    tried (the grid and any steps the bracket took past it), and strictly better than every other setting (a tie,
    such as an arm at chance everywhere, chose nothing): the optimum may lie beyond what was tried. The design
    extends such an arm's grid while `extend` allows, so one listed here ran out of steps."""
    if not tuned(df) or "selected" not in df.columns:
        return pd.DataFrame(columns=EDGE_COLUMNS)
    label = arm_labels(df, nuisance)
    scores = _scores(finished(df), metric, mode)
    rows = []
    for arm, g in df.groupby("arm"):
        chosen = g[g["selected"]]
        ranked = scores.get(arm, pd.Series(dtype=float)).sort_values(ascending=mode == "min")
        if len(ranked) < 2 or ranked.iloc[0] == ranked.iloc[1] or chosen.empty:
            continue
        for key in nuisance:
            tried = sorted(v for v in pd.unique(g[key]) if isinstance(v, numbers.Real) and not isinstance(v, bool))
            value = chosen[key].iloc[0]
            if len(tried) >= 2 and value in (tried[0], tried[-1]):
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
