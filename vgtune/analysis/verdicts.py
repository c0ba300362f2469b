"""A comparison's verdict, look by look: helps, hurts, negligible, neither trains or inconclusive.

A *comparison* is a mitigation against its baseline in one cell; its seeds come in
planned looks (`Plan.looks`, cumulative: 5, then 10, then 20 seeds). After each look:

1. `neither trains` when both arms failed to train on every seed so far (diverged, stopped
   by the gradient-collapse stopper, or at most `chance_margin` above the chance rate;
   `vgtune.analysis.effects.failures`): two failed networks are neither equal nor different;
2. otherwise the interval of the mean paired difference in test accuracy, at the look's
   nominal level (`vgtune.analysis.sequential.levels` of the comparison's share of the
   family's level): `helps` if it lies above 0, `hurts` if below, `negligible` if it lies
   inside +-margin (an equivalence test, Lakens 2017);
3. otherwise the comparison goes on to the next look, or ends `inconclusive` after the last.

The family is the set of comparisons a report gives verdicts on; its level `alpha` is shared
equally (`bonferroni`: alpha/m each; `none`: alpha each, no family control). With every
comparison's intervals covering at alpha/m across all its looks, the chance that any verdict
in the family is wrong is at most alpha. With one look, `holm` and `bh` adjust the family's
p-values together instead (`vgtune.analysis.stats.adjust`); their intervals are not
simultaneous, so they state no `negligible`.

These functions are the stopping rule of the sweep's design (`vgtune.analysis.design`) and
the report's verdicts alike, so the report re-derives from MLflow what the sweep decided.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from vgtune.analysis import sequential
from vgtune.analysis.stats import ALPHA, Test

HELPS, HURTS, NEGLIGIBLE, NEITHER, INCONCLUSIVE = "helps", "hurts", "negligible", "neither trains", "inconclusive"
VERDICTS = (HELPS, HURTS, NEGLIGIBLE, NEITHER, INCONCLUSIVE)
DECIDED = VERDICTS[:4]  # a comparison with one of these stops taking seeds
CORRECTIONS = ("bonferroni", "holm", "bh", "none")  # how the family shares alpha; holm and bh need one look
SIMULTANEOUS = ("bonferroni", "none")  # intervals that cover together: they can also say `negligible`
DEFAULT_LOOKS = (5, 10, 20)  # seeds per comparison after each look
DEFAULT_MARGIN = 0.05  # test accuracy: an effect inside +-margin is negligible (bench/stats.py supports it)


@dataclass(frozen=True)
class Plan:
    """How a sweep's comparisons are judged."""

    looks: tuple[int, ...] = DEFAULT_LOOKS  # cumulative seeds of a comparison at each look
    margin: float = DEFAULT_MARGIN  # |effect| in test accuracy below which it is negligible
    correction: str = "bonferroni"  # bonferroni | holm | bh | none: how the family shares alpha
    family: int = 1  # comparisons judged together (m)
    alpha: float = ALPHA  # the family's error rate

    @property
    def level(self) -> float:
        """One comparison's level over all its looks (holm and bh: their first step's)."""
        return self.alpha if self.correction == "none" else self.alpha / max(1, self.family)

    @property
    def levels(self) -> tuple[float, ...]:
        """The nominal two-sided level of each look (group-sequential, `vgtune.analysis.sequential`)."""
        return sequential.levels(tuple(self.looks), self.level)

    @property
    def equivalence(self) -> bool:
        """Whether its intervals may say `negligible` (they cover together)."""
        return self.correction in SIMULTANEOUS


@dataclass
class Judgement:
    """A comparison's verdict and the look it stopped at."""

    verdict: str  # one of VERDICTS
    look: int  # the look it stopped at (1-based; 0: no data)
    seeds: int  # paired seeds (or the smaller group) at that look
    mean: float  # mean difference at that look (biased away from 0 when it stopped early)
    low: float  # the interval at that look's level
    high: float
    p: float  # the test's two-sided p at that look (sign test for identical differences)
    level: float  # the nominal level the interval is drawn at
    reason: str  # why it stopped, in words


def at_look(test: Test, neither: bool, level: float, margin: float | None) -> tuple[str | None, float, float]:
    """(verdict or None while open, interval low, high) of one look's data at its nominal `level`; `margin` None
    where the intervals cannot support `negligible`."""
    if neither:
        return NEITHER, 0.0, 0.0
    low, high = test.interval(level)
    if math.isnan(low):  # untestable: one seed
        return None, low, high
    if low > 0:
        return HELPS, low, high
    if high < 0:
        return HURTS, low, high
    if margin is not None and -margin < low and high < margin:
        return NEGLIGIBLE, low, high
    return None, low, high


def judge(looks: list[tuple[Test, bool]], plan: Plan) -> Judgement:
    """The verdict of a comparison whose data at look k (cumulative) is `looks[k]` = (test, both arms failed on
    every seed); it stops at the first look that decides it. Fewer looks than planned: it is still open after
    the last one given unless that is the plan's last."""
    levels = plan.levels
    margin = plan.margin if plan.equivalence else None
    out = Judgement(INCONCLUSIVE, 0, 0, math.nan, math.nan, math.nan, math.nan, math.nan, "no paired seeds")
    for k, (test, neither) in enumerate(looks[:len(levels)]):
        verdict, low, high = at_look(test, neither, levels[k], margin)
        out = Judgement(verdict or INCONCLUSIVE, k + 1, test.n, test.mean, low, high, math.nan, levels[k], "")
        if verdict is not None:
            out.p, out.reason = test.p_value(), _why(verdict, k, test.n, len(levels))
            return out
    if out.look:
        out.p = looks[out.look - 1][0].p_value()
    if out.look == len(levels):
        out.reason = f"looks spent ({out.seeds} seeds)"
    elif out.look:
        out.reason = f"open after look {out.look} ({out.seeds} seeds)"
    return out


def is_open(looks: list[tuple[Test, bool]], plan: Plan) -> bool:
    """Whether the comparison wants the next look's seeds: undecided by these looks, and looks remain."""
    return len(looks) < len(plan.looks) and judge(looks, plan).verdict not in DECIDED


def _why(verdict: str, k: int, n: int, looks: int) -> str:
    where = f"look {k + 1} of {looks}, {n} seeds"
    return {NEITHER: f"both arms failed on every seed ({where})"}.get(verdict, f"{verdict} at {where}")


def describe(test: Test, alpha: float = ALPHA) -> tuple[float, float]:
    """The unadjusted (1 - alpha) interval of a comparison outside the family: shown, never judged."""
    return test.interval(alpha)


def both_failed(failed_mit: np.ndarray, failed_ref: np.ndarray) -> bool:
    """Both arms failed on every seed (and there is at least one)."""
    return len(failed_mit) > 0 and len(failed_ref) > 0 and bool(np.all(failed_mit)) and bool(np.all(failed_ref))


__all__ = ["Plan", "Judgement", "judge", "is_open", "at_look", "describe", "both_failed", "VERDICTS", "DECIDED",
           "CORRECTIONS", "DEFAULT_LOOKS", "DEFAULT_MARGIN", "HELPS", "HURTS", "NEGLIGIBLE", "NEITHER",
           "INCONCLUSIVE"]
