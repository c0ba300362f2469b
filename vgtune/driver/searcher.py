"""The sweep's design as a Ray Tune search algorithm: one Tune experiment whose trials are proposed as results arrive.

    tune.TuneConfig(search_alg=AdaptiveSearch(Design(spec.items, config), pack, slots), num_samples=-1,
                    max_concurrent_trials=slots)

Tune's `Searcher` contract, as `ray.tune.search.Repeater` uses it: `suggest` hands
Tune the next trial (a planned item, `vgtune.core.packing.plan`: a trial alone or a
pack of trials of one shape), None to wait for results, or FINISHED;
`on_trial_complete` records each member's outcome in the design; `save` /
`restore` make it resumable (Tune saves it with the experiment state, so a
resumed sweep continues from the same results and hands out nothing twice).
Every decision is the design's (`vgtune.analysis.design`); this class only
carries trials.
"""

from __future__ import annotations

import pickle
from typing import Any

from ray.tune.search import Searcher

from vgtune.analysis.design import Design
from vgtune.core import packing
from vgtune.core.member import SCHEDULER_STOP
from vgtune.driver.trial_members import members


def longest_first(trials: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Trials (`{"train": TrainConfig dict, ...}`, or packs of them) by a rough cost (epochs x depth x width^2
    x members), largest first, spec order among equals: the last ones to start are the short ones, so the
    trial slots finish together instead of one long trial running on alone at the end."""
    def cost(item: dict[str, Any]) -> int:
        train = item["train"]
        return train["epochs"] * train["depth"] * train["width"] ** 2 * len(packing.members(item))
    return sorted(trials, key=lambda t: -cost(t))


class AdaptiveSearch(Searcher):
    """Tune's view of a `Design`: its proposed trials, packed, longest first."""

    def __init__(self, design: Design, pack: int | str = "off", slots: int = 1, stop: dict[str, Any] | None = None):
        super().__init__()
        self.design = design
        self.pack = pack  # off | auto | N: trials of one shape packed into one Tune trial (`packing.plan`)
        self.slots = slots  # trials the cluster runs at once (packs are sized for them)
        # The gradient-collapse stopper's options (None: never stop), for the trials it may end: selection trials,
        # never a confirmation trial where a selection chose its setting (its comparison's trials all train as long).
        self.stop = stop
        self.queue: list[dict[str, Any]] = []  # proposed trials not yet handed to Tune
        self.trials: dict[str, dict[str, Any]] = {}  # Tune trial id -> the planned item it trains

    # -- Tune's contract ------------------------------------------------------------
    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        self.queue += self.design.propose()
        if not self.queue:
            return Searcher.FINISHED if self.design.finished else None
        item = self._next()
        self.trials[trial_id] = item
        config: dict[str, Any] = {"trial": item}
        stoppable = [k for k, m in enumerate(packing.members(item))
                     if self.design.confirm_only or m["meta"]["stage"] != "confirm"]
        if self.stop is not None and stoppable:
            config["member_stop"] = self.stop | {"members": stoppable}
        return config

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        """Record every member: as it ended; a member its trial's error cut short as `error`; one a scheduler cut
        short as stopped by it (part of the budget: it enters no comparison). A trial that never reported records
        nothing. (Tune saves this state before an interrupt stops the running trials, so a resumed sweep trains
        those again.)"""
        item = self.trials.get(trial_id)
        if item is None or (result is None and not error):
            return
        for m, planned in zip(members(trial_id, item, result), packing.members(item)):
            cut = {} if m.ended or error else {"stop_reason": SCHEDULER_STOP}
            self.design.record(planned, m.row | {"status": m.status("ERROR" if error else "TERMINATED")} | cut)

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.get_state(), f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.set_state(pickle.load(f))

    def get_state(self) -> dict[str, Any]:
        return {"design": self.design.state(), "queue": list(self.queue), "trials": dict(self.trials)}

    def set_state(self, state: dict[str, Any]) -> None:
        self.design.restore(state["design"])
        self.queue, self.trials = list(state["queue"]), dict(state["trials"])

    # -- packing --------------------------------------------------------------------
    def _next(self) -> dict[str, Any]:
        """The costliest pack (or trial) the queue plans into; its members leave the queue."""
        pick = longest_first(packing.plan(self.queue, self.pack, self.slots))[0]  # a stable sort: spec order ties
        taken = {id(m) for m in packing.members(pick)}
        self.queue = [it for it in self.queue if id(it) not in taken]
        return pick


__all__ = ["AdaptiveSearch", "longest_first"]
