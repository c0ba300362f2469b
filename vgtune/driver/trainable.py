"""The thin Ray Tune adapter around `vgtune.core.train.train_pack`: report per epoch, checkpoint, resume.

A Tune trial trains one planned item (`vgtune.core.packing.plan`): a trial alone,
or a pack of trials that train as one fused network; alone is a pack of one.
Each epoch becomes one `tune.report` of a `vgtune.core.member.TrialEpoch`: the
members that trained this epoch, with their probes, and every member's latest
epoch; every `checkpoint_every` epochs and at the end it carries a checkpoint of
every member, from which a retried trial (`FailureConfig.max_failures`) or a
resumed sweep continues. The gradient-collapse stopper runs here, per member,
since Tune would stop a whole pack.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from vgtune.core import packing, usercode
from vgtune.core.diagnosis import Thresholds
from vgtune.core.member import MemberEpoch, TrialEpoch
from vgtune.core.train import EpochReport, TrainConfig, train_pack
from vgtune.driver.stopper import GradientCollapseStopper

STATE_FILE = "state.pt"


def _load_state(checkpoint: tune.Checkpoint | None) -> dict[str, Any] | None:
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as d:
        return torch.load(Path(d) / STATE_FILE, weights_only=False)


def _checkpointed(metrics: dict[str, Any], state: dict[str, Any] | None) -> None:
    """One `tune.report`, with a checkpoint of `state` unless it is None."""
    if state is None:
        tune.report(metrics)
        return
    with tempfile.TemporaryDirectory() as d:
        torch.save(state, Path(d) / STATE_FILE)
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))


def run_trial(config: dict[str, Any]) -> None:
    """Tune function trainable; `config["trial"]` is a planned item (`{"train": TrainConfig dict, ...}` or a pack)."""
    for folder in config.get("import_paths", []):
        usercode.add_path(folder)
    items = packing.members(config["trial"])
    cfgs = [TrainConfig.from_dict(m["train"]) for m in items]
    saved = _load_state(tune.get_checkpoint())
    stop = dict(config.get("member_stop") or {})
    stoppable = set(stop.pop("members", range(len(items))))  # the members the design lets the stopper end
    reporter = _Reporter(len(cfgs), saved, GradientCollapseStopper(**stop) if stop and stoppable else None,
                         int(config.get("checkpoint_every", 1)), config.get("metric", "val_acc"),
                         config.get("mode", "max"), stoppable)
    train_pack(cfgs, on_epoch=reporter, resume=saved["members"] if saved is not None else None,
               thresholds=Thresholds(**config.get("thresholds", {})), checked=True)


class _Reporter:
    """`train_pack`'s on_epoch: one `tune.report` per epoch; stops the members the stopper names."""

    def __init__(self, size: int, saved: dict[str, Any] | None, stopper: GradientCollapseStopper | None,
                 every: int, metric: str, mode: str, stoppable: set[int]):
        self.saved = saved  # the checkpoint this run resumed from, if any
        self.stopper = stopper  # per member (keyed by its index); None: no member is stopped early
        self.stoppable = stoppable  # the members the stopper may end
        self.every = every  # checkpoint every this many epochs (and at the end)
        self.metric, self.mode = metric, mode  # the result's metric for Tune's scheduler: the members' best
        self.node = ray.get_runtime_context().get_node_id()
        latest = saved["latest"] if saved is not None else [None] * size
        self.latest: list[MemberEpoch | None] = [MemberEpoch.from_dict(m) if m else None for m in latest]
        self.states: dict[int, Callable[[], dict[str, Any]]] = {}  # member -> its latest checkpoint
        self.stopped: set[int] = set()  # members the stopper ended
        if stopper is not None and saved is not None:  # collapsed probes in a row carry over a resume
            stopper.streak.update(saved.get("streak", {}))

    def __call__(self, reports: dict[int, EpochReport]) -> set[int]:
        trained, stops = [], set()
        for k, report in reports.items():
            member = report.as_member(k)
            member.node = self.node
            if self.stopper is not None and k in self.stoppable and self.stopper(str(k), member.metrics):
                member.stop_reason = self.stopper.reasons[str(k)]
                stops.add(k)
            trained.append(member)
            self.states[k] = report.state
            self.latest[k] = member.latest()
        self.stopped |= stops
        epoch = TrialEpoch(trained, list(self.latest))
        due = epoch.ended or epoch.epoch % self.every == 0
        _checkpointed(epoch.to_result(self.metric, self.mode), self._state() if due else None)
        return stops

    def _state(self) -> dict[str, Any]:
        """Every member's latest checkpoint (one that ended keeps its last), its latest epoch, the stopper's count."""
        return {"members": [self._member_state(k) for k in range(len(self.latest))],
                "latest": [m.to_dict() if m is not None else None for m in self.latest],
                "streak": dict(self.stopper.streak) if self.stopper is not None else {}}

    def _member_state(self, k: int) -> dict[str, Any]:
        if k not in self.states:  # ended before this (resumed) run began
            return self.saved["members"][k]
        state = self.states[k]()
        if k in self.stopped:  # the state was taken before the trainer marked it
            state["result"]["status"] = "stopped"
        return state
