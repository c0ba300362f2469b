"""The gradient-collapse stopper: ends trials whose gradient cannot flow back any more.

When the first block's gradient has collapsed (attenuation at or below a floor)
for `patience` consecutive probes, more epochs will not revive it: plain deep
sigmoid stacks sit at 10^-16 from the first epoch to the last. Stopping them
frees their worker for trials that can learn. The Tune trainable asks it after
every epoch of every member (`vgtune.driver.trainable`; a Tune stopper would stop
a whole pack), and the reason travels with the member's epoch to its MLflow run.
"""

from __future__ import annotations

import math
from typing import Any

from vgtune.core import checks
from vgtune.core.member import RUNNING


class GradientCollapseStopper:
    def __init__(self, floor: float = -6.0, patience: int = 2):
        checks.number("floor", floor, high=0, high_open=True)  # a log10 attenuation
        checks.integer("patience", patience, 1)
        self.floor = floor  # attenuation at or below which a probe counts as collapsed
        self.patience = patience  # consecutive collapsed probes that stop a trial
        self.streak: dict[str, int] = {}  # trial id -> collapsed probes in a row
        self.reasons: dict[str, str] = {}  # trial id -> why it was stopped

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        value = result.get("grad_attenuation", math.nan)
        # -inf: no gradient reached the first block at all
        collapsed = isinstance(value, (int, float)) and not math.isnan(value) and value <= self.floor
        self.streak[trial_id] = self.streak.get(trial_id, 0) + 1 if collapsed else 0
        if self.streak[trial_id] >= self.patience and result.get("status") == RUNNING:
            self.reasons[trial_id] = (f"gradient collapsed: attenuation {value:.1f} <= {self.floor:g} "
                                      f"for {self.patience} epochs")
            return True
        return False
