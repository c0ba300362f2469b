"""What a trial reports after each epoch: one `MemberEpoch` per member, a `TrialEpoch` per Tune trial.

A trial that trains alone is a pack of one (`vgtune.core.train.train_pack`): every
result the Tune trainable reports is a `TrialEpoch` in its dict form, with one
`MemberEpoch` per member that trained this epoch and every member's latest one.
The driver reads Tune's result dict back once (`TrialEpoch.from_result`); whether
a member ended, and how, is decided here alone (`MemberEpoch.ended`, `final_status`).
This module imports no torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from vgtune.core.schema import RUNNING

# Why a member stopped when Tune's scheduler (or an interrupt) ended its trial first: it ran part of its budget.
SCHEDULER_STOP = "stopped by the scheduler"


@dataclass
class MemberEpoch:
    """One member's epoch as its Tune trial reports it (a trial that trains alone is member 0)."""

    member: int  # index in its Tune trial (0 for a trial that trains alone)
    metrics: dict[str, Any]  # the epoch's row: epoch, train_loss, val_acc, ..., status, diagnosis, *_seconds
    layers: dict[str, list[float]] | None = None  # the epoch's probe, per block
    layers_init: dict[str, list[float]] | None = None  # the initialization probe (with the first epoch only)
    work_seconds: float = 0.0  # this epoch's training and evaluation, in the process that ran it
    stop_reason: str | None = None  # why it was stopped early (the gradient-collapse stopper), if it was
    node: str | None = None  # the Ray node it trained on

    @property
    def epoch(self) -> int:
        return int(self.metrics.get("epoch", 0))

    @property
    def ended(self) -> bool:
        """Whether this epoch ended the member's training: it diverged, was stopped, or was its last."""
        return self.metrics.get("status", RUNNING) != RUNNING or self.stop_reason is not None

    @property
    def status(self) -> str:
        """completed | diverged | stopped once `ended`; running before."""
        status = self.metrics.get("status", RUNNING)
        return "stopped" if status == RUNNING and self.stop_reason is not None else status

    def row(self) -> dict[str, Any]:
        """One flat dict: the metrics, the probes present and the node (what an MLflow trial run logs)."""
        extra = {"layers": self.layers, "layers_init": self.layers_init, "node": self.node}
        return self.metrics | {k: v for k, v in extra.items() if v is not None}

    def latest(self) -> MemberEpoch:
        """This epoch without its probes: what the trial's later results carry of a member."""
        return dataclasses.replace(self, layers=None, layers_init=None)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MemberEpoch:
        return cls(**data)


def final_status(last: MemberEpoch | None, trial_failed: bool) -> str:
    """completed | diverged | stopped | error: how a member's training ended, its last epoch `last`.

    A member that had not ended by itself when its trial did was stopped (by the scheduler,
    or Ctrl-C), or errored if its trial failed.
    """
    if last is not None and last.ended:
        return last.status
    return "error" if trial_failed else "stopped"


@dataclass
class TrialEpoch:
    """One result of a Tune trial: the members that trained this epoch, and every member's latest epoch."""

    trained: list[MemberEpoch]  # the members that trained this epoch, with their probes
    latest: list[MemberEpoch | None]  # each member's latest epoch (no probes), by index; None before its first

    @property
    def ended(self) -> bool:
        """Every member ended: the trial trains no more."""
        return all(m is not None and m.ended for m in self.latest)

    @property
    def epoch(self) -> int:
        return max((m.epoch for m in self.latest if m is not None), default=0)

    def best(self, metric: str, mode: str) -> float | None:
        """The members' best latest `metric` (max or min as `mode` says), None if none has it."""
        values = [m.metrics[metric] for m in self.latest
                  if m is not None and isinstance(m.metrics.get(metric), (int, float))]
        if not values:
            return None
        return max(values) if mode == "max" else min(values)

    def to_result(self, metric: str, mode: str) -> dict[str, Any]:
        """Tune's result: the epoch (ASHA's time), the best `metric` (the scheduler's), and the members."""
        result = {"epoch": self.epoch, "status": "completed" if self.ended else RUNNING,
                  "members": [m.to_dict() for m in self.trained],
                  "latest": [m.to_dict() if m is not None else None for m in self.latest]}
        best = self.best(metric, mode)
        if best is not None:
            result[metric] = best
        return result

    @classmethod
    def from_result(cls, result: dict[str, Any] | None, size: int) -> TrialEpoch:
        """A Tune result (`to_result`'s, with Tune's own keys) of a trial of `size` members; {} or None: none yet."""
        result = result or {}
        latest = [MemberEpoch.from_dict(m) if m else None for m in result.get("latest") or []]
        latest += [None] * (size - len(latest))
        return cls([MemberEpoch.from_dict(m) for m in result.get("members") or []], latest)


__all__ = ["MemberEpoch", "TrialEpoch", "final_status", "RUNNING", "SCHEDULER_STOP"]
