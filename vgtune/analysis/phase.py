"""Theory beside measurement, for tables: the phase diagram's lines and the agreement check.

Works on probe or trials tables that carry `vgtune.core.theory`'s columns (`chi1`,
`depth_scale`, `grad_attenuation_predicted`); pandas only.
"""

from __future__ import annotations

import math

import pandas as pd

from vgtune.core.theory import TRAINABLE_DEPTHS

# A plain configuration departs from the prediction by more than max(ABS, REL |predicted|) plus the finite-width
# allowance FLUCTUATION sqrt((depth - 1) / width) (where the table has depth and width): about 3 standard
# deviations of a plain ReLU stack's seed-to-seed spread (tanh's and sigmoid's is ~10x smaller; `python -m bench
# theory` measures the errors). The mean error over configurations averages the fluctuation out.
ABS_TOLERANCE = 0.3  # decades
REL_TOLERANCE = 0.05  # of |predicted|
FLUCTUATION = 1.0  # decades at (depth - 1) / width = 1


def has_phase_axes(df: pd.DataFrame) -> bool:
    """A phase diagram needs several init scales and depths of plain configurations with predictions."""
    plain = predicted(df)
    return all(c in plain.columns and plain[c].nunique() > 1 for c in ("init_scale", "depth"))


def predicted(df: pd.DataFrame) -> pd.DataFrame:
    """Rows with a mean-field prediction (plain stacks)."""
    if "grad_attenuation_predicted" not in df.columns:
        return df.iloc[0:0]
    return df[df["grad_attenuation_predicted"].notna()]


def critical_scale(df: pd.DataFrame) -> float:
    """The init_scale where chi_1 crosses 1, log-linearly interpolated between the scales swept."""
    chi = predicted(df).groupby("init_scale")["chi1"].mean()
    pts = [(s, c) for s, c in chi.items() if c > 0 and s > 0 and math.isfinite(c)]
    for (s0, c0), (s1, c1) in zip(pts, pts[1:]):
        if (c0 - 1) * (c1 - 1) <= 0 and c0 != c1:
            t = math.log(c0) / (math.log(c0) - math.log(c1))
            return math.exp(math.log(s0) + t * (math.log(s1) - math.log(s0)))
    return math.nan


def trainable_depth(df: pd.DataFrame) -> dict[float, float]:
    """init_scale -> 6 xi_c: the depth up to which plain nets train (Schoenholz et al. 2017; `depth_scale`)."""
    xi = predicted(df).groupby("init_scale")["depth_scale"].mean()
    return {float(s): TRAINABLE_DEPTHS * float(d) for s, d in xi.items()}


def tolerance(prediction: float, depth: float = 1, width: float = math.inf) -> float:
    """How far a measurement may lie from `prediction` (decades), finite-width allowance included."""
    return max(ABS_TOLERANCE, REL_TOLERANCE * abs(prediction)) + FLUCTUATION * math.sqrt(max(depth - 1, 0) / width)


def _tolerances(plain: pd.DataFrame) -> pd.Series:
    depth = plain["depth"] if "depth" in plain.columns else pd.Series(1, index=plain.index)
    width = plain["width"] if "width" in plain.columns else pd.Series(math.inf, index=plain.index)
    return pd.Series([tolerance(p, d, w) for p, d, w in zip(plain["grad_attenuation_predicted"], depth, width)],
                     index=plain.index, dtype=float)


def gaps(df: pd.DataFrame, measured: str = "grad_attenuation_init") -> pd.DataFrame:
    """Plain configurations with `gap` (measured - predicted, decades) and its `tolerance`."""
    plain = predicted(df)
    if plain.empty or measured not in plain.columns:
        return plain.iloc[0:0].assign(gap=[], tolerance=[])
    return plain.assign(gap=plain[measured] - plain["grad_attenuation_predicted"], tolerance=_tolerances(plain))


def departures(df: pd.DataFrame, measured: str = "grad_attenuation_init") -> pd.DataFrame:
    """Plain configurations whose measurement departs from the prediction by more than its tolerance."""
    flagged = gaps(df, measured)
    return flagged[flagged["gap"].abs() > flagged["tolerance"]]


# ------------------------------------------------------------------ report and probe outputs

def agreement_finding(df: pd.DataFrame) -> str | None:
    """One line for the report's findings: how many plain configurations theory predicted within tolerance."""
    plain = predicted(df)
    plain = plain[plain["grad_attenuation_init"].notna()] if "grad_attenuation_init" in plain else plain.iloc[0:0]
    if plain.empty:
        return None
    off, error = len(departures(plain)), gaps(plain)["gap"]
    return (f"Mean-field theory predicted the init attenuation of {len(plain)} plain configurations with a mean "
            f"absolute error of {error.abs().mean():.2f} decades (worst {error.abs().max():.2f}, mean signed "
            f"{error.mean():+.2f}); {len(plain) - off} of {len(plain)} lie within max({ABS_TOLERANCE:g} decades, "
            f"{REL_TOLERANCE:.0%}) + {FLUCTUATION:g} sqrt((depth - 1) / width) for finite width"
            + (f"; {off} depart from it (listed under Theory)." if off else "."))


def critical_inits(df: pd.DataFrame) -> pd.DataFrame:
    """Per activation of the sweep: its critical sigma_w^2 and the named inits closest to it."""
    from vgtune.core.theory import critical_table

    acts = sorted(df["activation"].dropna().unique()) if "activation" in df else []
    rows = critical_table(acts) if acts else []
    cols = ["activation", "critical_sigma_w2", "closest_init", "closest_sigma_w2", "factor_off"]
    return pd.DataFrame(rows, columns=cols)[cols] if rows else pd.DataFrame(columns=cols)


def departure_table(df: pd.DataFrame, factors: list[str]) -> pd.DataFrame:
    cols = [c for c in factors if c in df.columns] + ["grad_attenuation_init", "grad_attenuation_predicted", "gap",
                                                      "tolerance"]
    return departures(df)[cols].reset_index(drop=True) if not predicted(df).empty else pd.DataFrame(columns=cols)


def phase_figure(df: pd.DataFrame, value: str, label: str, trainable: bool, **kw):
    """The phase diagram of `value` (plain rows only) with the chi_1 = 1 line and, if asked, the 6 xi curve."""
    from vgtune.analysis import plots

    plain = predicted(df)
    return plots.phase_diagram(plain, value, label, critical_scale(plain),
                               trainable_depth(plain) if trainable else None, **kw)
