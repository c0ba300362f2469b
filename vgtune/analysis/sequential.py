"""Group-sequential boundaries: the level each look of a comparison is judged at.

A comparison's seeds arrive in planned looks (`seeds: [5, 10, 20]`: 5 seeds, then 5
more, then 10 more) and the comparison stops at the first look that decides it.
Testing each look at the comparison's whole level would inflate its error (about
3x over three looks); instead the level is spent over the looks (Lan & DeMets
1983) with the Pocock-type function alpha * ln(1 + (e - 1) t), t the share of the
last look's seeds seen so far (Jennison & Turnbull 2000, ch. 7). Each look gets a
nominal two-sided level; the intervals drawn at those levels are *repeated
confidence intervals* (Jennison & Turnbull ch. 9): with probability 1 - alpha,
every one of them, at every look, covers the true effect. Every verdict (helps,
hurts, negligible) is read off such an interval, so a wrong verdict at any look
means an interval that missed, whatever the stopping rule.

The boundary is exact for z-statistics with independent increments (the seeds of
one look are independent of the others'); the t-statistic of a look is compared at
that look's nominal level, as Jennison & Turnbull (ch. 11) recommend for unknown
variance. That is close, not exact: with looks of 5, 10 and 20 seeds a lone
comparison at 5% errs about 5.4% of the time, and at the 5%/14 each of the default
family's comparisons gets, as planned. `bench/stats.py` measures the error rates.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from scipy import optimize, stats

GRID = 801  # points of the numerical integration over the continuation region of one look


def spent(t: float, alpha: float) -> float:
    """The Pocock-type alpha-spending function: the error spent once a share `t` of the seeds is seen."""
    return alpha * math.log(1 + (math.e - 1) * min(1.0, t))


@functools.lru_cache(maxsize=256)
def levels(looks: tuple[int, ...], alpha: float) -> tuple[float, ...]:
    """The nominal two-sided level of each look, for cumulative seed counts `looks` (increasing) and a comparison's
    level `alpha`: the chance that any look's |z| crosses its boundary under no effect is `alpha`."""
    if not looks or any(b <= a for a, b in zip(looks, looks[1:])) or looks[0] < 1:
        raise ValueError(f"looks must be increasing positive seed counts, got {looks}")
    info = np.asarray(looks, dtype=float)
    t = info / info[-1]
    bounds: list[float] = []
    grid, density = None, None  # S_{k-1} on the continuation region, and its (sub-)density
    for k in range(len(looks)):
        target = spent(t[k], alpha) - (spent(t[k - 1], alpha) if k else 0.0)
        if k == 0:
            c = stats.norm.isf(target / 2)
        else:
            step = info[k] - info[k - 1]
            c = _boundary(grid, density, info[k], step, target)
        bounds.append(c)
        grid, density = _continue(grid, density, info[k], info[k - 1] if k else 0.0, c)
    return tuple(float(2 * stats.norm.sf(c)) for c in bounds)


def _crossing(grid: np.ndarray, density: np.ndarray, info: float, step: float, c: float) -> float:
    """P(|S_k| >= c sqrt(info), not stopped before), S_k = S_{k-1} + N(0, step)."""
    b, sd = c * math.sqrt(info), math.sqrt(step)
    out = stats.norm.cdf((-b - grid) / sd) + stats.norm.sf((b - grid) / sd)
    return float(np.trapezoid(density * out, grid))


def _boundary(grid: np.ndarray, density: np.ndarray, info: float, step: float, target: float) -> float:
    """The z boundary at which this look crosses with probability `target` (on the paths still going)."""
    if target <= 0:
        return math.inf
    f = lambda c: _crossing(grid, density, info, step, c) - target  # noqa: E731
    return float(optimize.brentq(f, 0.0, 40.0, xtol=1e-10))


def _continue(grid: np.ndarray | None, density: np.ndarray | None, info: float, before: float,
              c: float) -> tuple[np.ndarray, np.ndarray]:
    """The sub-density of S_k on |S_k| < c sqrt(info), from S_{k-1}'s (None at the first look)."""
    b = c * math.sqrt(info) if math.isfinite(c) else 12 * math.sqrt(info)
    new = np.linspace(-b, b, GRID)
    if grid is None:
        return new, stats.norm.pdf(new, scale=math.sqrt(info))
    sd = math.sqrt(info - before)
    kernel = stats.norm.pdf((new[:, None] - grid[None, :]) / sd) / sd
    return new, np.trapezoid(kernel * density[None, :], grid, axis=1)


__all__ = ["spent", "levels"]
