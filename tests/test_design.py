"""The adaptive design without Ray: group-sequential levels, the verdict rule, the bracket, the looks."""

import math

import numpy as np
import pytest
from scipy import stats as sps

from vgtune.analysis import sequential
from vgtune.analysis import verdicts as vd
from vgtune.analysis.stats import Test
from vgtune.driver import spec as spec_mod

# ----------------------------------------------------------------- the levels of the looks


def test_one_look_spends_the_whole_level():
    assert sequential.levels((5,), 0.01) == pytest.approx((0.01,))


@pytest.mark.parametrize("looks", [(5, 10, 20), (1, 2, 3), (4, 8, 12, 20)])
def test_the_looks_together_cross_at_the_level_under_no_effect(looks):
    # Simulated z statistics with independent increments: the chance that any look crosses is alpha.
    alpha, rng = 0.05, np.random.default_rng(0)
    info = np.asarray(looks, dtype=float)
    z = np.cumsum(rng.normal(size=(200_000, len(looks))) * np.sqrt(np.diff(np.r_[0, info])), axis=1) / np.sqrt(info)
    bounds = sps.norm.isf(np.asarray(sequential.levels(looks, alpha)) / 2)
    assert (np.abs(z) >= bounds).any(axis=1).mean() == pytest.approx(alpha, abs=0.003)


def test_a_look_gets_less_than_the_whole_level_and_pocock_spends_early():
    levels = sequential.levels((5, 10, 20), 0.05)
    assert all(level < 0.05 for level in levels) and levels[0] > 0.05 / 3


@pytest.mark.parametrize("looks", [(), (5, 5), (0, 4), (10, 5)])
def test_looks_must_increase(looks):
    with pytest.raises(ValueError, match="increasing positive"):
        sequential.levels(looks, 0.05)


# ----------------------------------------------------------------- one comparison's verdict


def _looks(diffs, looks=(5, 10, 20), failed=False):
    return [(Test(diffs=np.asarray(diffs[:n], dtype=float)), failed) for n in looks if n <= len(diffs)]


def test_a_large_effect_helps_at_the_first_look():
    j = vd.judge(_looks(0.5 + np.linspace(-0.02, 0.02, 20)), vd.Plan(family=14))
    assert (j.verdict, j.look, j.seeds) == ("helps", 1, 5) and j.low > 0 and "look 1 of 3" in j.reason


def test_a_harmful_change_hurts():
    assert vd.judge(_looks(-0.3 + np.linspace(-0.02, 0.02, 20)), vd.Plan()).verdict == "hurts"


def test_a_tiny_effect_is_negligible_once_the_interval_fits_inside_the_margin():
    rng = np.random.default_rng(1)
    diffs = rng.normal(0.0, 0.01, 20)
    j = vd.judge(_looks(diffs), vd.Plan(margin=0.05, family=14))
    assert j.verdict == "negligible" and -0.05 < j.low and j.high < 0.05


def test_holm_and_bh_intervals_never_say_negligible():
    rng = np.random.default_rng(1)
    diffs = rng.normal(0.0, 0.01, 20)
    assert vd.judge(_looks(diffs, (20,)), vd.Plan(looks=(20,), correction="holm")).verdict == "inconclusive"


def test_two_failed_networks_are_neither_trains_before_any_test():
    j = vd.judge(_looks(np.zeros(5), failed=True), vd.Plan())
    assert j.verdict == "neither trains" and j.look == 1 and "failed on every seed" in j.reason


def test_noise_stays_open_until_the_looks_are_spent():
    rng = np.random.default_rng(2)
    diffs = rng.normal(0.02, 0.15, 20)
    plan = vd.Plan(family=14)
    assert vd.is_open(_looks(diffs, (5,)), plan) and vd.is_open(_looks(diffs, (5, 10)), plan)
    j = vd.judge(_looks(diffs), plan)
    assert j.verdict == "inconclusive" and j.look == 3 and j.seeds == 20 and j.reason == "looks spent (20 seeds)"
    assert not vd.is_open(_looks(diffs), plan)


def test_the_nominal_level_of_each_look_is_the_comparisons_share_spent_over_the_looks():
    plan = vd.Plan(family=14)
    assert plan.level == pytest.approx(0.05 / 14) and plan.levels == sequential.levels((5, 10, 20), 0.05 / 14)
    assert vd.Plan(correction="none", family=14).level == 0.05


# ----------------------------------------------------------------- the design on a real spec, simulated results

SPEC = {"name": "d", "parameters": {"depth": [3, 9], "activation": ["relu"]},
        "variants": [{}, {"norm": "batch"}, {"init": "kaiming_normal"}], "nuisance": {"lr": [0.01, 0.04]},
        "repeats": 1, "seeds": [3, 6], "fixed": {"width": 4, "epochs": 1}}


def _run(design, outcome):
    """Hand the design's proposals their outcomes until it is finished; the proposals in rounds."""
    rounds = []
    while not design.finished:
        new = design.propose()
        assert new or design.outstanding, "the design waits for nothing"
        rounds.append(new)
        for item in new:
            design.record(item, outcome(item))
    return rounds


def _outcome(best_lr=0.04, effect=0.3, noise=0.01):
    """A trial's outcome as a function of the trial alone: accuracy peaks at `best_lr`, batch norm adds `effect`,
    each (arm, seed, rate) adds its own normal noise."""
    def outcome(item):
        t = item["train"]
        acc = 0.5 + (effect if t["norm"] == "batch" else 0.0) - 0.05 * abs(math.log(t["lr"] / best_lr))
        key = f"{item['meta']['arm']}|{t['seed']}|{t['lr']}"
        acc += noise * np.random.default_rng(sum(key.encode())).normal() * (1 + len(key) % 3) / 2
        return {"status": "completed", "val_acc": acc, "test_acc": acc, "chance_acc": 0.1}
    return outcome


def test_an_arm_whose_best_rate_lies_past_the_grid_steps_out_until_it_is_inside():
    design = spec_mod.parse(SPEC).design()
    rounds = _run(design, _outcome(best_lr=0.3))  # the grid's ratio is 4: 0.04 -> 0.16 -> 0.64
    assert set(design.chosen().values()) == {"lr=0.16"}  # inside what was tried: 0.64 was worse
    tried = {it["meta"]["nuisance"] for r in rounds for it in r if it["meta"]["stage"] == "select"}
    assert tried == {"lr=0.01", "lr=0.04", "lr=0.16", "lr=0.64"}


def test_the_bracket_stops_after_extend_steps():
    design = spec_mod.parse(SPEC | {"extend": 1}).design()
    _run(design, _outcome(best_lr=100.0))
    assert set(design.chosen().values()) == {"lr=0.16"}  # on the edge of everything tried: extend ran out


def test_confirmation_starts_per_arm_as_soon_as_its_setting_is_chosen_and_is_fresh():
    design = spec_mod.parse(SPEC).design()
    first = design.propose()
    assert {it["meta"]["stage"] for it in first} == {"select"}
    arm = first[0]["meta"]["arm"]
    for item in first:
        if item["meta"]["arm"] == arm:
            design.record(item, _outcome()(item))
    second = design.propose()  # only this arm's confirmation (0.04 is on the edge: a step first)
    assert {it["meta"]["arm"] for it in second} == {arm}
    assert {it["meta"]["nuisance"] for it in second} == {"lr=0.16"}


def test_decided_comparisons_stop_and_only_open_ones_take_the_next_look():
    design = spec_mod.parse(SPEC).design()
    rounds = _run(design, _outcome(effect=0.3, noise=0.002))
    judged = design.judgements()
    looks = {it["meta"]["look"] for r in rounds for it in r if it["meta"]["stage"] == "confirm"}
    assert looks == {"1"}  # batch norm helps at look 1; kaiming changes next to nothing: negligible at look 1
    assert sorted(j.verdict for j in judged.values()) == ["helps", "negligible"]


def test_an_open_comparison_gets_every_look_for_both_its_arms_only():
    design = spec_mod.parse(SPEC).design()
    rounds = _run(design, _outcome(effect=0.05, noise=0.2))
    per_arm = {}
    for it in (it for r in rounds for it in r if it["meta"]["stage"] == "confirm"):
        per_arm.setdefault(it["meta"]["arm"], set()).add(int(it["meta"]["look"]))
    assert any(j.look == 2 for j in design.judgements().values())
    assert max(max(v) for v in per_arm.values()) == 2
    assert sum(len(v) == 2 for v in per_arm.values()) >= 2  # a mitigation and its baseline


def test_a_resumed_design_hands_out_what_the_undisturbed_one_did_and_nothing_twice():
    spec, outcome = spec_mod.parse(SPEC), _outcome(effect=0.05, noise=0.2)
    whole = spec.design()
    _run(whole, outcome)
    first = spec.design()
    handed = first.propose()
    for item in handed[: len(handed) // 2]:
        first.record(item, outcome(item))
    resumed = spec.design()
    resumed.restore(first.state())
    assert resumed.outstanding == len(handed) - len(handed) // 2
    assert not {(it["meta"]["arm"], it["meta"]["nuisance"], it["train"]["seed"]) for it in resumed.propose()} & {
        (it["meta"]["arm"], it["meta"]["nuisance"], it["train"]["seed"]) for it in handed}  # nothing twice
    for item in handed[len(handed) // 2:]:  # Tune runs the trials that were in flight again
        resumed.record(item, outcome(item))
    for item in [it for it in whole_items(whole) if _key(it) in resumed.proposed - resumed.results.keys()]:
        resumed.record(item, outcome(item))
    _run(resumed, outcome)
    assert resumed.proposed == whole.proposed and resumed.judgements() == whole.judgements()


def test_errored_trials_leave_the_arm_out_without_stalling_the_design():
    design = spec_mod.parse(SPEC).design()
    _run(design, lambda item: {"status": "error"} if item["train"]["norm"] == "batch"
         else _outcome()(item))
    assert design.finished and len(design.chosen()) == 4  # the batch-norm arms cannot be chosen


def test_the_most_trials_bounds_what_runs():
    design = spec_mod.parse(SPEC).design()
    rounds = _run(design, _outcome(effect=0.05, noise=0.2))
    assert sum(len(r) for r in rounds) <= design.most()


def _key(item):
    return item["meta"]["arm"], item["meta"]["nuisance"], int(item["train"]["seed"])


def whole_items(design):
    """Every trial a finished design handed out, rebuilt from its arms (for replaying outcomes)."""
    return [it for arm in design.arms.values() for it in design._wanted(arm)]


def test_a_factory_keyword_axis_makes_arms_of_its_own():
    from pathlib import Path

    from vgtune.core import usercode

    usercode.add_path(str(Path(__file__).parents[1] / "examples"))
    raw = {"name": "m", "model": "mynet:build", "dataset": "mydata:load", "variants": [{}, {"norm": "batch"}],
           "parameters": {"depth": [2], "model_args": {"head_dropout": [0.0, 0.1]}},
           "nuisance": {"lr": [0.01, 0.04]}, "repeats": 1, "fixed": {"width": 4}}
    design = spec_mod.parse(raw).design()
    assert len(design.arms) == 4 and len(design.comparisons) == 2  # batch norm at each scale
