"""The trials a Ray Tune trial trains, read from it once: itself alone, or each member of its pack.

A Tune trial's config holds a planned item (`vgtune.core.packing.plan`) and its
results are `vgtune.core.member.TrialEpoch`s. The progress line, the MLflow
callback and the sweep's outcome count and close trials through `members`, so
every count a user reads is in trials, never in Ray trials.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vgtune.core import packing
from vgtune.core.member import MemberEpoch, TrialEpoch, final_status

ENDED = ("TERMINATED", "ERROR")  # Tune's states of a trial that runs no more


@dataclass
class TrialMember:
    """One trial of a Tune trial (the Tune trial itself, or one member of its pack)."""

    trial_id: str  # its own id (its MLflow run's `vgtune.trial_id`): the Tune trial's, or `<that>-m<k>` in a pack
    index: int  # its member index in the Tune trial's results (0 alone)
    config: dict[str, Any]  # its TrainConfig dict
    meta: dict[str, str]  # arm, nuisance setting, variant, stage
    pack: str | None  # the Tune trial id of its pack; None for a trial that trains alone
    last: MemberEpoch | None  # its latest epoch, None before its first

    @property
    def row(self) -> dict[str, Any]:
        """Its latest epoch's row ({} before its first)."""
        return dict(self.last.metrics) if self.last is not None else {}

    @property
    def ended(self) -> bool:
        """It ended by itself: diverged, was stopped, or trained its last epoch."""
        return self.last is not None and self.last.ended

    def status(self, tune_state: str) -> str | None:
        """completed | stopped | diverged | error once it ended, or its Tune trial did (`tune_state`
        TERMINATED or ERROR); None while it waits or trains."""
        if self.ended or tune_state in ENDED:
            return final_status(self.last, tune_state == "ERROR")
        return None


def members(tune_id: str, item: dict[str, Any], result: dict[str, Any] | None) -> list[TrialMember]:
    """The trials of a Tune trial `tune_id` that trains the planned `item`, with `result` its last result."""
    items = packing.members(item)
    latest = TrialEpoch.from_result(result, len(items)).latest
    if "members" not in item:  # `item` may be {}: a Tune result of an unstarted trial can lack its config
        return [TrialMember(tune_id, 0, dict(item.get("train", {})), dict(item.get("meta", {})), None, latest[0])]
    return [TrialMember(packing.member_id(tune_id, k), k, dict(m["train"]), dict(m.get("meta", {})), tune_id, last)
            for k, (m, last) in enumerate(zip(items, latest))]


def of_trial(trial) -> list[TrialMember]:
    """The trials of a Tune `Trial`, each with its latest epoch."""
    return members(trial.trial_id, trial.config["trial"], trial.last_result)


__all__ = ["TrialMember", "members", "of_trial", "ENDED"]
