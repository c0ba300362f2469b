"""The statistics behind a verdict: Student-t intervals, multiple-comparison adjustment, detectable effects.

A report states one verdict per comparison (a mitigation against its baseline in
one cell). Each comparison's mean difference gets a Student-t test (paired by
seed: `scipy.stats.ttest_1samp` of the differences, which is `ttest_rel`; Welch's
`ttest_ind` where nothing pairs), valid from two seeds and honestly wide with
few. Differences that are identical on every seed say nothing of noise, so they
get an exact test instead: the sign test, under which n equal differences occur
with probability 2^(1-n) when there is no effect, and whose interval for the
median is that value once the level allows it (else unbounded).

The level each interval is drawn at comes from `vgtune.analysis.verdicts`: the
family's level split over its comparisons, then spent over the looks
(`vgtune.analysis.sequential`). For a design with one look, `holm` and `bh`
adjust the family's p-values together instead
(`statsmodels.stats.multitest.multipletests`), each interval drawn at the level
its comparison was tested at, so it excludes 0 exactly when the verdict is
helps/hurts: for Holm, step k of the step-down tests at ALPHA/(m-k+1) and the
comparisons after the first it keeps are drawn at the level of that step; for
BH, the rejected ones at k*·ALPHA/m (Benjamini & Yekutieli 2005) and the others
at (k*+1)·ALPHA/m. Those intervals are consistent with the verdicts, not
simultaneous, so they support no `negligible`.

`mde` is the smallest true effect a comparison would call with 80% power at its
observed spread and a given level (noncentral t power, `scipy.stats.nct`).
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats
from statsmodels.stats.multitest import multipletests

ALPHA = 0.05  # the family's error rate: family-wise (bonferroni, holm) or false-discovery (bh)
POWER = 0.8  # the power at which `mde` is the detectable effect
ADJUSTMENTS = {"holm": "holm", "bh": "fdr_bh", "none": None}  # `adjust`'s name -> multipletests method


@dataclass
class Test:
    """One comparison's data: paired differences, or two unpaired groups (mitigated, baseline)."""

    diffs: np.ndarray | None = None  # paired by seed: mitigated - baseline
    a: np.ndarray | None = None  # unpaired: mitigated
    b: np.ndarray | None = None  # unpaired: baseline

    @property
    def paired(self) -> bool:
        return self.diffs is not None

    @property
    def n(self) -> int:
        """Seeds (pairs), or the smaller group."""
        return len(self.diffs) if self.paired else min(len(self.a), len(self.b))

    @property
    def testable(self) -> bool:
        """Two or more values on each side."""
        return self.n >= 2

    @property
    def constant(self) -> bool:
        """Paired differences identical on every seed: the t statistic is undefined, the sign test exact."""
        return self.paired and self.testable and np.ptp(self.diffs) == 0

    @property
    def spread(self) -> bool:
        """Some spread to estimate noise from (unpaired: in either group)."""
        if self.paired:
            return self.testable and np.ptp(self.diffs) > 0
        return self.testable and (np.ptp(self.a) > 0 or np.ptp(self.b) > 0)

    @property
    def mean(self) -> float:
        if self.paired:
            return float(np.mean(self.diffs)) if len(self.diffs) else math.nan
        return float(np.mean(self.a) - np.mean(self.b)) if len(self.a) and len(self.b) else math.nan

    def _result(self):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            if self.paired:
                return stats.ttest_1samp(self.diffs, 0.0)
            return stats.ttest_ind(self.a, self.b, equal_var=False)

    def p_value(self) -> float:
        """Two-sided p of a zero mean difference (the sign test's for identical differences); NaN where
        untestable (one seed; unpaired groups without spread)."""
        if self.constant:
            return 1.0 if self.diffs[0] == 0 else min(1.0, 2.0 ** (1 - len(self.diffs)))
        if not self.spread:
            return math.nan
        if self.paired:  # scipy's ttest_1samp, without its overhead (the design asks after every result)
            mean, se, df = self._paired()
            return float(2 * stats.t.sf(abs(mean / se), df))
        return float(self._result().pvalue)

    def interval(self, alpha: float = ALPHA) -> tuple[float, float]:
        """The (1 - alpha) interval of the mean difference (Student t; for identical differences the sign test's:
        that value where 2^(1-n) <= alpha, else unbounded); NaN where untestable."""
        if self.constant:
            d = float(self.diffs[0])
            return (d, d) if 2.0 ** (1 - len(self.diffs)) <= alpha else (-math.inf, math.inf)
        if not self.spread:
            return math.nan, math.nan
        if self.paired:
            mean, se, df = self._paired()
            half = _t_quantile(alpha, df) * se
            return mean - half, mean + half
        ci = self._result().confidence_interval(confidence_level=1 - alpha)
        return float(ci.low), float(ci.high)

    def _paired(self) -> tuple[float, float, int]:
        """(mean, standard error, degrees of freedom) of the paired differences."""
        n = len(self.diffs)
        return float(np.mean(self.diffs)), float(np.std(self.diffs, ddof=1)) / math.sqrt(n), n - 1

    def mde(self, alpha: float = ALPHA, power: float = POWER) -> float:
        """The smallest true mean difference this many seeds at this spread would call with `power`."""
        if not self.spread:
            return math.nan
        if self.paired:
            return _standard_mde(len(self.diffs), 0, alpha, power) * float(np.std(self.diffs, ddof=1))
        sd = math.sqrt((np.var(self.a, ddof=1) + np.var(self.b, ddof=1)) / 2)
        return _standard_mde(len(self.a), len(self.b), alpha, power) * sd


@functools.lru_cache(maxsize=4096)
def _t_quantile(alpha: float, df: int) -> float:
    """The two-sided (1 - alpha) Student t quantile."""
    return float(stats.t.isf(alpha / 2, df))


@functools.lru_cache(maxsize=4096)
def _standard_mde(n: int, n_other: int, alpha: float, power: float) -> float:
    """The detectable effect in standard deviations (Cohen's d) of a two-sided t test at `alpha` with `power`:
    paired (one-sample on the differences) if n_other is 0, else two groups of n and n_other."""
    upper = 1.0
    while t_power(upper, n, n_other, alpha) < power:
        upper *= 2
        if upper > 1e6:
            return math.inf
    return float(optimize.brentq(lambda d: t_power(d, n, n_other, alpha) - power, 0.0, upper, xtol=1e-9))


def t_power(d: float, n: int, n_other: int, alpha: float) -> float:
    """Power of the two-sided t test at `alpha` against a true effect of `d` standard deviations (noncentral t;
    statsmodels' solver was seen to stop short of the answer at the small levels a family adjustment gives)."""
    if n_other:
        df, nc = n + n_other - 2, d * math.sqrt(n * n_other / (n + n_other))
    else:
        df, nc = n - 1, d * math.sqrt(n)
    crit = stats.t.ppf(1 - alpha / 2, df)
    upper = stats.nct.sf(crit, df, nc)
    upper = upper if math.isfinite(upper) else 1 - stats.nct.cdf(crit, df, nc)
    lower = stats.nct.cdf(-crit, df, nc)  # far in the tail scipy can return NaN for what is 0 to machine precision
    return float(upper + (lower if math.isfinite(lower) else 0.0))


def mde_level(m: int, correction: str, alpha: float = ALPHA) -> float:
    """The level at which every comparison of a family of `m` reports its detectable effect."""
    return alpha if correction == "none" or m < 1 else alpha / m


def adjust(p: np.ndarray, correction: str = "holm", alpha: float = ALPHA) -> tuple[np.ndarray, np.ndarray]:
    """(adjusted p, the level each interval is drawn at) for a family of p-values; NaNs stay out of it."""
    if correction not in ADJUSTMENTS:
        raise ValueError(f"unknown correction {correction!r}; valid: {', '.join(ADJUSTMENTS)}")
    p = np.asarray(p, dtype=float)
    adjusted, levels = np.full_like(p, np.nan), np.full_like(p, np.nan)
    ok = ~np.isnan(p)
    m = int(ok.sum())
    if m == 0:
        return adjusted, levels
    method = ADJUSTMENTS[correction]
    if method is None:
        adjusted[ok], levels[ok] = p[ok], alpha
        return adjusted, levels
    adjusted[ok] = multipletests(p[ok], alpha=alpha, method=method)[1]
    levels[ok] = _levels(p[ok], alpha, correction)
    return adjusted, levels


def _levels(p: np.ndarray, alpha: float, correction: str) -> np.ndarray:
    """Per comparison, the level its test ran at (see the module docstring): consistent with the verdict."""
    m, order = len(p), np.argsort(p, kind="stable")
    ranked = p[order]
    out = np.empty(m)
    if correction == "holm":
        steps = alpha / (m - np.arange(m))  # step k (0-based) tests at alpha / (m - k)
        kept = np.nonzero(ranked > steps)[0]
        stop = kept[0] if len(kept) else m
        out[order] = np.where(np.arange(m) < stop, steps, steps[min(stop, m - 1)])
        return out
    below = np.nonzero(ranked <= alpha * np.arange(1, m + 1) / m)[0]  # BH: k* = the largest such rank
    k = below[-1] + 1 if len(below) else 0
    out[order] = np.where(np.arange(m) < k, k * alpha / m, min(1.0, (k + 1) * alpha / m))
    return out
