"""The sweep's adaptive design: which trials to run next, given the results so far.

Plain Python on plain results (no Ray, no MLflow): the Tune searcher
(`vgtune.driver.searcher`) only carries its trials, and the calibration bench
(`bench/stats.py`) drives it with simulated results. Every decision is a pure
function of the results recorded so far, so a resumed sweep decides as an
undisturbed one would. Per arm (one combination of the scientific factors):

1. **select**: the spec's trials of the arm, every nuisance setting on the selection
   seeds; once all are in, the setting with the best mean `metric`
   (`vgtune.analysis.fairness.best`). If that best is unique and lies on the edge of
   what was tried, the **bracket** tries the next step beyond it (the grid's own
   ratio) on the same seeds, up to `extend` steps per side, and chooses again;
2. **confirm**, as soon as the arm's setting is chosen: look 1's fresh seeds at that
   setting, then the next look's while any of the arm's comparisons in the family is
   still open after the last one (`vgtune.analysis.verdicts.is_open`): a decided
   comparison stops, and only the arms of undecided ones (their baseline included)
   take more seeds.

Without nuisance options every arm is chosen from the start; without looks the
spec's trials are the whole sweep.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from vgtune.analysis import effects, fairness
from vgtune.analysis import verdicts as vd
from vgtune.core.member import SCHEDULER_STOP
from vgtune.core.schema import param_text

Key = tuple[str, str, int]  # (arm, nuisance setting label, seed): one trial


@dataclass
class DesignConfig:
    """What the design needs of a spec, beyond its trials."""

    looks: tuple[int, ...] = vd.DEFAULT_LOOKS  # cumulative confirmation seeds at each look; (): no confirmation
    first_seed: int = 0  # the first confirmation seed (fresh: after every selection seed)
    nuisance: tuple[str, ...] = ()  # the options tuned per arm
    grid: dict[str, list] = field(default_factory=dict)  # the listed values of the options the bracket extends
    extend: int = 2  # steps the bracket may try past each edge of the grid
    metric: str = "val_acc"  # chooses each arm's setting (never test data)
    mode: str = "max"
    plan: vd.Plan = field(default_factory=vd.Plan)  # how comparisons are judged (its family size is set here)
    family: Any = effects.FAMILY_DEFAULT  # which comparisons the verdicts are judged over
    chance_margin: float = 0.05  # test accuracy at most this far above chance: the network did not train

    def seeds(self, look: int) -> list[int]:
        """The fresh seeds of look `look` (1-based)."""
        before = self.looks[look - 2] if look > 1 else 0
        return list(range(self.first_seed + before, self.first_seed + self.looks[look - 1]))


@dataclass
class _Arm:
    arm: str
    items: list[dict[str, Any]]  # the spec's trials of this arm (select; or look 1 without nuisance)
    row: dict[str, Any]  # its scientific values (for the comparisons)


@dataclass
class _Comparison:
    key: str  # effects.Comparison.key
    mitigated: str  # arm
    baseline: str  # arm
    family: bool  # judged (and given more looks while open)


class Design:
    """Proposes trials as results arrive: `propose()` after each `record()` until `finished`."""

    def __init__(self, items: list[dict[str, Any]], config: DesignConfig,
                 check: Callable[[dict[str, Any]], bool] | None = None):
        self.config = config
        self.check = check or _any  # whether a bracket's next setting is a valid trial
        self.static = not config.looks  # the spec's trials are the whole sweep
        self.confirm_only = not config.nuisance  # nothing to select: every arm is chosen from the start
        arms: dict[str, _Arm] = {}
        for it in items:
            arm = it["meta"]["arm"]
            if arm not in arms:
                scientific = {k: param_text(v) if isinstance(v, dict | list) else v  # as MLflow holds them
                              for k, v in it["train"].items() if k not in config.nuisance and k != "seed"}
                arms[arm] = _Arm(arm, [], scientific | {"variant": it["meta"].get("variant", "")})
            arms[arm].items.append(it)
        self.arms = arms
        self.comparisons = self._comparisons()
        family = sum(c.family for c in self.comparisons) or 1
        plan = config.plan  # judged at the looks trials are proposed at
        self.plan = vd.Plan(config.looks or plan.looks, plan.margin, plan.correction, family, plan.alpha)
        self.results: dict[Key, dict[str, Any]] = {}  # every finished trial's outcome
        self.proposed: set[Key] = set()  # every trial handed out
        self._memo: dict[Any, Any] = {}  # decisions derived from the current results (cleared by `record`)

    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__ | {"_memo": {}}

    # ------------------------------------------------------------------ state
    def state(self) -> dict[str, Any]:
        """What a resumed design needs (everything else derives from it)."""
        return {"results": dict(self.results), "proposed": set(self.proposed)}

    def restore(self, state: dict[str, Any]) -> None:
        self.results, self.proposed = dict(state["results"]), set(state["proposed"])
        self._memo = {}

    # ------------------------------------------------------------------ the loop
    def propose(self) -> list[dict[str, Any]]:
        """The trials to run now that were not handed out before, in spec order (marked as handed out)."""
        new = []
        for arm in self.arms.values():
            for item in self._wanted(arm):
                key = _key(item)
                if key not in self.proposed:
                    self.proposed.add(key)
                    new.append(item)
        return new

    def record(self, item: dict[str, Any], outcome: dict[str, Any]) -> None:
        """A trial's outcome: its final `status`, the selection metric, `test_acc`, `chance_acc` and `stop_reason`.
        The first outcome of a trial stands: a decision once acted on is never revised (a resumed sweep that runs
        an errored trial again decides as before)."""
        keep = ("status", self.config.metric, "test_acc", "chance_acc", "stop_reason")
        self.results.setdefault(_key(item), {k: outcome.get(k) for k in keep})
        self._memo = {}

    @property
    def outstanding(self) -> int:
        """Trials handed out without a result yet."""
        return len(self.proposed - self.results.keys())

    @property
    def finished(self) -> bool:
        """Nothing is running and nothing more would be proposed."""
        return not self.outstanding and all(_key(it) in self.proposed for a in self.arms.values()
                                            for it in self._wanted(a))

    def most(self) -> int:
        """The most trials the design could run: every bracket step on every arm, every look on every arm."""
        if self.static:
            return sum(len(a.items) for a in self.arms.values())
        confirm = len(self.arms) * self.config.looks[-1]
        if self.confirm_only:
            return confirm
        steps = sum(2 * self.config.extend for values in self.config.grid.values() if fairness.step(values, "high"))
        seeds = len({it["train"]["seed"] for a in self.arms.values() for it in a.items})
        return confirm + sum(len(a.items) + steps * seeds for a in self.arms.values())

    # ------------------------------------------------------------------ decisions
    def chosen(self) -> dict[str, str]:
        """arm -> its chosen nuisance setting label (arms still bracketing, or with no result, are absent)."""
        out = {}
        for arm in self.arms.values():
            label, _ = self._setting(arm)
            if label is not None:
                out[arm.arm] = label
        return out

    def judgements(self) -> dict[str, vd.Judgement]:
        """comparison key -> its verdict so far (the family's; the others are the report's to describe)."""
        return {c.key: vd.judge(self._latest(c), self.plan) for c in self.comparisons if c.family}

    def _latest(self, c: _Comparison) -> list[tuple[Any, bool]]:
        """The comparison's data through the last look both its arms have finished ([] before the first)."""
        for k in range(len(self.config.looks), 0, -1):
            data = self._data(c, k)
            if data is not None:
                return data
        return []

    def _wanted(self, arm: _Arm) -> list[dict[str, Any]]:
        """Every trial this arm should have by now, given the results."""
        if self.static:
            return arm.items
        label, tried = self._setting(arm)
        if label is None:
            return tried
        base = next((it for it in tried if it["meta"]["nuisance"] == label), arm.items[0])
        return tried + [{"train": base["train"] | {"seed": seed},
                         "meta": base["meta"] | {"stage": "confirm", "look": str(k)}}
                        for k in range(1, self._looks(arm) + 1) for seed in self.config.seeds(k)]

    def _setting(self, arm: _Arm) -> tuple[str | None, list[dict[str, Any]]]:
        """(the chosen setting's label, or None while selection runs; the selection trials so far)."""
        memo = ("setting", arm.arm)
        if memo not in self._memo:
            self._memo[memo] = self._select(arm)
        return self._memo[memo]

    def _select(self, arm: _Arm) -> tuple[str | None, list[dict[str, Any]]]:
        if self.confirm_only:
            return arm.items[0]["meta"]["nuisance"], []
        tried = list(arm.items)
        while True:
            if any(_key(it) not in self.results for it in tried):
                return None, tried
            scores = self._scores(tried)
            if not scores:
                return None, tried  # every trial errored: the arm cannot be confirmed
            label, unique = fairness.best(scores, self.config.mode)
            settings = {it["meta"]["nuisance"]: {k: it["train"][k] for k in self.config.nuisance} for it in tried}
            nxt = fairness.beyond(list(settings.values()), settings[label], self.config.grid,
                                  self.config.extend) if unique else []
            have = {_key(t) for t in tried}
            new = [it for s in nxt for it in self._at(arm, s) if self.check(it["train"]) and _key(it) not in have]
            if not new:
                return label, tried
            tried += new

    def _scores(self, tried: list[dict[str, Any]]) -> dict[str, float]:
        """label -> mean selection metric over the seeds that finished (errored ones left out)."""
        values: dict[str, list[float]] = {}
        for it in tried:
            res = self.results[_key(it)]
            if _compared(res):
                values.setdefault(it["meta"]["nuisance"], []).append(res[self.config.metric])
        return {k: fairness.mean_score(v, self.config.mode) for k, v in values.items()}

    def _at(self, arm: _Arm, setting: dict[str, Any]) -> list[dict[str, Any]]:
        """The arm's selection trials at another nuisance setting (the bracket's step), on the selection seeds."""
        base = arm.items[0]
        seeds = sorted({it["train"]["seed"] for it in arm.items})
        return [{"train": base["train"] | setting | {"seed": s}, "meta": base["meta"] | {"nuisance": _label(setting)}}
                for s in seeds]

    def _looks(self, arm: _Arm) -> int:
        """How many looks this arm takes now: 1, and one more while a family comparison of it is open after the
        last."""
        k = 1
        mine = [c for c in self.comparisons if c.family and arm.arm in (c.mitigated, c.baseline)]
        while k < len(self.config.looks) and any(self._open(c, k) for c in mine):
            k += 1
        return k

    def _open(self, c: _Comparison, k: int) -> bool:
        data = self._data(c, k)
        return data is not None and vd.is_open(data, self.plan)

    def _data(self, c: _Comparison, k: int) -> list[tuple[Any, bool]] | None:
        """The comparison's cumulative data after looks 1..k; None while any of it is missing."""
        memo = ("data", c.key, k)
        if memo not in self._memo:
            self._memo[memo] = self._collect(c, k)
        return self._memo[memo]

    def _collect(self, c: _Comparison, k: int) -> list[tuple[Any, bool]] | None:
        chosen = [self._setting(self.arms[a])[0] for a in (c.mitigated, c.baseline)]
        if None in chosen:
            return None
        rows, look = [], []
        for j in range(1, k + 1):
            for seed in self.config.seeds(j):
                pair = [self.results.get((a, lbl, seed)) for a, lbl in zip((c.mitigated, c.baseline), chosen)]
                if any(o is None for o in pair):
                    return None
                if all(_compared(o) for o in pair):
                    rows.append(pair)
                    look.append(j)
        if not rows:
            return effects.paired_looks(*(np.zeros(0),) * 4, np.zeros(0, dtype=int), k)
        status = np.array([[o["status"] for o in pair] for pair in rows])
        acc = np.array([[_number(o["test_acc"]) for o in pair] for pair in rows], dtype=float)
        chance = np.array([[_number(o["chance_acc"]) for o in pair] for pair in rows], dtype=float)
        score, failed = effects.failure_scores(np.isin(status, effects.BROKEN), acc, chance,
                                               self.config.chance_margin)
        return effects.paired_looks(score[:, 0], score[:, 1], failed[:, 0], failed[:, 1], np.array(look), k)

    def _comparisons(self) -> list[_Comparison]:
        table = pd.DataFrame([a.row for a in self.arms.values()], index=list(self.arms))
        found = effects.comparisons(table, self.config.nuisance)
        family = effects.in_family([c.cell for c in found], self.config.family)
        return [_Comparison(c.key, c.mitigated[0], c.baseline[0], f) for c, f in zip(found, family)
                if len(c.mitigated) == 1 and len(c.baseline) == 1]


def _compared(outcome: dict[str, Any]) -> bool:
    """Whether a trial's outcome enters a choice or a comparison: not errored, nor cut short by a scheduler (the
    rule of `effects.scored`)."""
    return outcome["status"] != "error" and not str(outcome.get("stop_reason") or "").startswith(SCHEDULER_STOP)


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) else float("nan")


def _any(train: dict[str, Any]) -> bool:
    return True


def _label(setting: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in setting.items())


def _key(item: dict[str, Any]) -> Key:
    return item["meta"]["arm"], item["meta"]["nuisance"], int(item["train"]["seed"])


__all__ = ["Design", "DesignConfig", "Key"]
