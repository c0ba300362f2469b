"""The Tune searcher without a Tune run: what it suggests, what it records, what it saves."""

from ray.tune.search import Searcher

from vgtune.core import packing
from vgtune.core.member import MemberEpoch, TrialEpoch
from vgtune.driver import spec as spec_mod
from vgtune.driver.searcher import AdaptiveSearch

SPEC = {"name": "s", "parameters": {"depth": [3], "activation": ["relu"]}, "variants": [{}, {"norm": "batch"}],
        "nuisance": {"lr": [0.01, 0.04]}, "repeats": 1, "seeds": [2], "extend": 0, "family": "all",
        "fixed": {"width": 4, "epochs": 1}}


def _result(item, acc=0.5, status="completed"):
    """The last Tune result of a trial whose members all ended with `status` at accuracy `acc`."""
    latest = [MemberEpoch(k, {"epoch": 1, "status": status, "val_acc": acc, "test_acc": acc, "chance_acc": 0.1})
              for k, _ in enumerate(packing.members(item))]
    return TrialEpoch(latest, latest).to_result("val_acc", "max")


def _drain(search, prefix="t"):
    """Suggest until Tune would wait; complete each suggestion; the configs suggested."""
    got = []
    for i in range(1000):
        config = search.suggest(f"{prefix}{i}")
        if config in (None, Searcher.FINISHED):
            return got, config
        got.append(config)
    raise AssertionError("the searcher never waits")


def test_it_hands_out_packs_longest_first_then_waits_then_finishes():
    spec = spec_mod.parse(SPEC | {"pack": 2})
    search = AdaptiveSearch(spec.design(), spec.pack, slots=1, stop={"floor": -6, "patience": 2})
    first, then = _drain(search)
    assert then is None  # nothing more until results arrive
    assert sum(len(packing.members(c["trial"])) for c in first) == 4 and all("member_stop" in c for c in first)
    for tid in list(search.trials):
        search.on_trial_complete(tid, _result(search.trials[tid], 0.5))
    confirm, then = _drain(search, "u")
    assert {m["meta"]["stage"] for c in confirm for m in packing.members(c["trial"])} == {"confirm"}
    assert not any("member_stop" in c for c in confirm)  # a confirmation trial trains its full budget
    for tid in [t for t in search.trials if t.startswith("u")]:
        search.on_trial_complete(tid, _result(search.trials[tid], 0.5))
    assert search.suggest("v0") == Searcher.FINISHED


def test_a_trial_that_never_reported_records_nothing_one_cut_short_is_left_out_of_comparisons():
    spec = spec_mod.parse(SPEC)
    search = AdaptiveSearch(spec.design(), "off", slots=1)
    _drain(search)
    ids = list(search.trials)
    search.on_trial_complete(ids[0], None)  # removed while pending: nothing ran
    assert not search.design.results
    search.on_trial_complete(ids[1], _result(search.trials[ids[1]], 0.5, status="running"))  # a scheduler's stop
    search.on_trial_complete(ids[2], None, error=True)
    recorded = sorted(search.design.results.values(), key=lambda r: r["status"])
    assert [(r["status"], r["stop_reason"]) for r in recorded] == [("error", None),
                                                                   ("stopped", "stopped by the scheduler")]


def test_its_state_round_trips_and_a_restored_searcher_suggests_nothing_twice(tmp_path):
    spec = spec_mod.parse(SPEC)
    search = AdaptiveSearch(spec.design(), "off", slots=1)
    _drain(search)
    ids = list(search.trials)
    for tid in ids[:2]:
        search.on_trial_complete(tid, _result(search.trials[tid]))
    search.save(str(tmp_path / "searcher.pkl"))
    restored = AdaptiveSearch(spec.design(), "off", slots=1)
    restored.restore(str(tmp_path / "searcher.pkl"))
    assert restored.trials == search.trials and restored.design.results == search.design.results
    more, _ = _drain(restored, "r")
    handed = {(m["meta"]["arm"], m["meta"]["nuisance"], m["train"]["seed"])
              for item in search.trials.values() for m in packing.members(item)}
    again = {(m["meta"]["arm"], m["meta"]["nuisance"], m["train"]["seed"])
             for c in more for m in packing.members(c["trial"])}
    assert not handed & again
