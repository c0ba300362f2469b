"""Naming a trial's gradient pathology from its measurements: `Thresholds` and `diagnose`.

Imports no torch: the spec checks `thresholds:` and the report re-reads diagnoses with it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from vgtune.core import checks

DIAGNOSES = ("healthy", "vanishing", "exploding", "dead", "saturated", "diverged")


@dataclass
class Thresholds:
    """When `diagnose` calls a trial unhealthy, and when a trial did not train at all."""

    exploding: float = 2.0  # attenuation >= this: the first block gets 100x the last's gradient
    vanishing: float = -2.0  # attenuation <= this: the first block gets 1/100 of the last's
    dead: float = 0.5  # mean dead-unit fraction over blocks >= this names a vanishing gradient 'dead'
    saturated: float = 0.5  # mean saturated fraction >= this names a vanishing gradient 'saturated'
    saturation_eps: float = 0.05  # |f'(z)| below this share of its maximum counts as (near) zero: saturated / dead
    chance_margin: float = 0.05  # an accuracy at most this far above its split's chance rate: it did not train

    def validate(self) -> None:
        """Raise ValueError naming the bad threshold and its allowed range."""
        checks.number("exploding", self.exploding, 0, low_open=True)
        checks.number("vanishing", self.vanishing, high=0, high_open=True)
        for name in ("dead", "saturated"):
            checks.number(name, getattr(self, name), 0, 1, low_open=True)
        checks.number("saturation_eps", self.saturation_eps, 0, 1, low_open=True, high_open=True)
        checks.number("chance_margin", self.chance_margin, 0, 1, high_open=True)


def diagnose(status: str, attenuation_value: float, dead_frac: float = 0.0,
             saturated_frac: float = 0.0, thresholds: Thresholds | None = None) -> str:
    """Name the gradient pathology of a trial: one of DIAGNOSES.

    `diverged` wins (a NaN attenuation counts as diverged); then exploding
    (+inf included) and vanishing (-inf included: no gradient reached
    block 1). A vanishing gradient is called `dead` or `saturated` when that
    share of units explains it. Dead or saturated units alone, with gradient
    still reaching the first block (through skips, say), are healthy: the
    fractions stay in the per-block series for whoever wants them.
    """
    t = thresholds or Thresholds()
    if status == "diverged" or math.isnan(attenuation_value):
        return "diverged"
    if attenuation_value >= t.exploding:
        return "exploding"
    if attenuation_value > t.vanishing:
        return "healthy"
    if dead_frac >= t.dead:
        return "dead"
    if saturated_frac >= t.saturated:
        return "saturated"
    return "vanishing"
