"""Fair comparisons on hand-built trials tables: the selection rule, verdicts, shared vs tuned."""

import pandas as pd
import pytest

from vgtune.analysis import effects, fairness


def _trial(arm, norm, lr, seed, val, test, diagnosis="healthy", depth=24):
    return {"arm": arm, "norm": norm, "lr": lr, "nuisance": f"lr={lr}", "seed": seed, "depth": depth,
            "val_acc": val, "test_acc": test, "status": "completed", "diagnosis": diagnosis,
            "grad_attenuation_final": -1.0, "variant": "", "activation": "tanh"}


def test_selection_is_the_best_mean_validation_score_whatever_test_says():
    df = pd.DataFrame([
        _trial("a", "none", 0.01, 0, val=0.80, test=0.20), _trial("a", "none", 0.01, 1, val=0.70, test=0.20),
        _trial("a", "none", 0.10, 0, val=0.90, test=0.99), _trial("a", "none", 0.10, 1, val=0.50, test=0.99),
    ])  # lr=0.01: mean val 0.75 beats 0.70, although lr=0.1 has the far better test accuracy
    chosen = fairness.select(df)
    assert chosen.loc[chosen["selected"], "nuisance"].unique().tolist() == ["lr=0.01"]


def test_a_diverged_setting_is_never_chosen():
    df = pd.DataFrame([_trial("a", "none", 0.01, 0, val=0.3, test=0.3),
                       _trial("a", "none", 1.0, 0, val=float("nan"), test=0.1)])
    assert fairness.select(df).loc[lambda d: d["selected"], "lr"].tolist() == [0.01]


def test_selection_refuses_test_data():
    with pytest.raises(ValueError, match="test_acc.*test data"):
        fairness.select(pd.DataFrame([_trial("a", "none", 0.1, 0, 0.5, 0.5)]), metric="test_acc")


def test_untuned_sweeps_select_every_trial():
    df = pd.DataFrame([_trial("a", "none", 0.1, 0, 0.5, 0.5)]).assign(nuisance="")
    assert fairness.select(df)["selected"].all()


def test_an_effect_whose_interval_crosses_zero_is_inconclusive():
    rows = []
    for seed, (plain, bn) in enumerate([(0.5, 0.7), (0.6, 0.5), (0.5, 0.65), (0.55, 0.5)]):
        rows += [_trial("p", "none", 0.1, seed, plain, plain), _trial("b", "batch", 0.1, seed, bn, bn)]
    eff = effects.effects(pd.DataFrame(rows), nuisance=["lr"])
    (row,) = eff.to_dict("records")
    assert row["ci_low"] < 0 < row["ci_high"] and row["verdict"] == "inconclusive" and row["seeds"] == 4


def test_tuned_arms_pair_by_seed_across_different_learning_rates():
    rows = []
    for seed in range(3):
        rows += [_trial("p", "none", 0.01, seed, 0.5, 0.5), _trial("p", "none", 0.1, seed, 0.2, 0.2),
                 _trial("b", "batch", 0.01, seed, 0.6, 0.6), _trial("b", "batch", 0.1, seed, 0.9, 0.9 + seed / 100)]
    df = fairness.select(pd.DataFrame(rows))
    tuned = effects.effects(df[df["selected"]], nuisance=["lr"]).iloc[0]
    assert tuned["nuisance"] == "lr=0.1" and tuned["paired"] and tuned["seeds"] == 3
    assert tuned["delta_test_acc"] == pytest.approx(0.41) and tuned["verdict"] == "helps"
    shared = fairness.shared_setting(df)  # mean val over arms: lr=0.01 -> 0.55, lr=0.1 -> 0.55; ties keep the first
    fixed = effects.effects(df[df["nuisance"] == "lr=0.01"], nuisance=["lr"])
    table = fairness.compare(fixed, effects.effects(df[df["selected"]], nuisance=["lr"]))
    assert shared == "lr=0.01"
    assert table.loc[0, "delta_val_acc_fixed"] == pytest.approx(0.1)
    assert table.loc[0, "delta_val_acc_tuned"] == pytest.approx(0.4)
    assert not {"verdict_fixed", "delta_test_acc_fixed"} & set(table.columns)  # ranks on validation only


def test_a_variant_that_sets_two_keys_is_one_mitigation():
    rows = []
    for seed in range(2):
        base = _trial("p", "none", 0.1, seed, 0.3, 0.3) | {"optimizer": "sgd", "weight_decay": 0.0}
        rows += [base, base | {"arm": "q", "optimizer": "adam", "weight_decay": 1e-4, "variant":
                               "optimizer=adam,weight_decay=0.0001", "test_acc": 0.8}]
    eff = effects.effects(pd.DataFrame(rows), nuisance=["lr"])
    assert eff["mitigation"].tolist() == ["optimizer=adam,weight_decay=0.0001"] and eff.loc[0, "seeds"] == 2


def _effect_row(mitigation, healthy, unhealthy_baselines, verdict, n=3, diverged=0):
    return {"mitigation": mitigation, "depth": 24, "n": n, "paired": True, "healthy": healthy,
            "unhealthy_baselines": unhealthy_baselines, "diverged": diverged, "delta_attenuation": 1.0,
            "delta_test_acc": 0.1, "verdict": verdict}


def test_remedies_restore_gradient_flow_only_when_every_mitigated_seed_ends_healthy():
    eff = pd.DataFrame([_effect_row("norm=batch", 3, 3, "helps"), _effect_row("dropout=0.2", 0, 3, "inconclusive"),
                        _effect_row("pool=max", 3, 3, "inconclusive"), _effect_row("init=kaiming", 2, 3, "helps"),
                        _effect_row("residual=standard", 0, 3, "inconclusive", diverged=3),
                        _effect_row("optimizer=adam", 3, 0, "helps")])
    table = fairness.remedies(eff)
    assert dict(zip(table["mitigation"], table["restores"])) == {
        "norm=batch": "gradient flow and accuracy", "dropout=0.2": "neither", "pool=max": "gradient flow only",
        "init=kaiming": "accuracy only", "residual=standard": "neither",
        "optimizer=adam": "accuracy (gradients were healthy)"}
    assert table.set_index("mitigation").loc["residual=standard", ["diverged", "seeds"]].tolist() == [3, 3]


def test_a_comparison_where_neither_trains_restores_nothing_and_a_negligible_one_no_accuracy():
    eff = pd.DataFrame([_effect_row("init=xavier", 0, 3, "neither trains"), _effect_row("pool=max", 3, 3, "negligible"),
                        _effect_row("dropout=0.2", 0, 3, "negligible")])
    assert fairness.remedies(eff)["restores"].tolist() == [
        "neither: neither trains", "gradient flow; accuracy unchanged", "neither (no difference)"]


def test_a_chosen_setting_on_the_edge_of_a_grid_of_three_is_flagged():
    rows = [_trial(arm, norm, lr, seed, val=val, test=0.5)
            for arm, norm, best in (("p", "none", 0.01), ("b", "batch", 0.1)) for lr in (0.001, 0.01, 0.1)
            for seed in range(2) for val in [0.9 if lr == best else 0.5]]
    edges = fairness.edges(fairness.select(pd.DataFrame(rows)), ["lr"])
    assert edges[["arm", "chosen", "edge"]].values.tolist() == [["b", 0.1, "highest"]]
    assert "norm=batch" in edges["label"].iloc[0]


def test_an_integer_grid_edge_is_flagged_and_a_tie_is_not():
    rows = [_trial("b", "batch", 0.1, 0, val=0.9 if bs == 128 else 0.5, test=0.5) | {"batch_size": bs,
            "nuisance": f"batch_size={bs}"} for bs in (32, 64, 128)]
    df = pd.DataFrame(rows).astype({"batch_size": "int64"})
    assert fairness.edges(fairness.select(df), ["batch_size"])[["chosen", "edge"]].values.tolist() == [[128, "highest"]]
    assert fairness.edges(fairness.select(df.assign(val_acc=0.1)), ["batch_size"]).empty  # at chance everywhere: a tie


def test_a_grid_of_two_has_edges_too_and_one_value_none():
    rows = [_trial("b", "batch", lr, 0, val=0.9 if lr == 0.1 else 0.5, test=0.5) for lr in (0.01, 0.1)]
    assert fairness.edges(fairness.select(pd.DataFrame(rows)), ["lr"])["edge"].tolist() == ["highest"]
    assert fairness.edges(fairness.select(pd.DataFrame(rows[:1])), ["lr"]).empty


def test_the_bracket_steps_past_the_edge_by_the_grids_own_ratio_until_extend_runs_out():
    grid = {"lr": [0.005, 0.02, 0.08]}
    tried = [{"lr": v} for v in grid["lr"]]
    assert fairness.beyond(tried, {"lr": 0.08}, grid, 2) == [{"lr": 0.32}]
    assert fairness.beyond(tried, {"lr": 0.005}, grid, 2) == [{"lr": 0.00125}]
    assert fairness.beyond(tried, {"lr": 0.02}, grid, 2) == []  # inside: nothing to extend
    assert fairness.beyond(tried + [{"lr": 0.32}], {"lr": 0.32}, grid, 2) == [{"lr": 1.28}]
    assert fairness.beyond(tried + [{"lr": 0.32}, {"lr": 1.28}], {"lr": 1.28}, grid, 2) == []  # two steps: done
    assert fairness.beyond(tried, {"lr": 0.08}, grid, 0) == []
    assert fairness.beyond([{"lr": 0.1}], {"lr": 0.1}, {"lr": [0.1]}, 2) == []  # one value: no ratio
    assert fairness.beyond([{"wd": 0.0}, {"wd": 0.1}], {"wd": 0.0}, {"wd": [0.0, 0.1]}, 2) == []  # not all > 0


def test_the_best_setting_breaks_ties_as_select_does_and_says_whether_it_is_unique():
    assert fairness.best({"lr=0.1": 0.5, "lr=0.01": 0.5}, "max") == ("lr=0.01", False)
    assert fairness.best({"lr=0.1": 0.2, "lr=0.01": 0.5}, "min") == ("lr=0.1", True)
    assert fairness.mean_score([0.5, float("nan")], "max") == float("-inf")
