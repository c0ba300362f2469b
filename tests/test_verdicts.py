"""Honest verdicts without Ray: the fresh-seed rule, per-seed splits, chance scores, what the report rests on."""


import numpy as np
import pandas as pd
import pytest
import torch

from vgtune.analysis import effects, report
from vgtune.core import data as data_mod
from vgtune.core.schema import TrainConfig
from vgtune.core.train import data_config, majority_share, train
from vgtune.driver import spec

TUNED = {"name": "t", "parameters": {"depth": [3, 5]}, "variants": [{}, {"norm": "batch"}],
         "nuisance": {"lr": [0.01, 0.1]}, "repeats": 2, "fixed": {"width": 4, "epochs": 1}}


# ----------------------------------------------------------------- the spec's two stages

def test_confirmation_seeds_are_fresh_and_come_in_looks():
    s = spec.parse(TUNED | {"seeds": [3, 5]})
    assert s.stage == "select" and {m["stage"] for m in s.meta} == {"select"}
    first_seeds = {t["seed"] for t in s.trials}
    assert s.confirm_seeds() == [2, 3, 4, 5, 6] and not first_seeds & set(s.confirm_seeds())
    config = s.design_config()
    assert config.seeds(1) == [2, 3, 4] and config.seeds(2) == [5, 6]


def test_confirmation_seeds_follow_a_fixed_seed():
    s = spec.parse(TUNED | {"repeats": None, "fixed": {"width": 4, "epochs": 1, "seed": 7}, "confirm": 2})
    assert s.confirm_seeds() == [8, 9] and s.looks == (2,)


def test_looks_default_to_5_10_20_and_a_spec_without_nuisance_is_its_own_confirmation():
    assert spec.parse(TUNED).looks == (5, 10, 20) and len(spec.parse(TUNED).confirm_seeds()) == 20
    plain = spec.parse({"name": "t", "parameters": {"depth": [3]}, "repeats": 3})
    assert plain.stage == "confirm" and plain.total_trials == 3 and plain.looks == (3,)
    assert {m["stage"] for m in plain.meta} == {"confirm"} and {m["look"] for m in plain.meta} == {"1"}
    looks = spec.parse({"name": "t", "parameters": {"depth": [3]}, "seeds": [2, 4]})
    assert [t["seed"] for t in looks.trials] == [0, 1] and looks.first_seed == 0 and looks.total_trials == 4


def test_split_and_correction_reach_the_trials_and_the_spec():
    s = spec.parse(TUNED | {"split": "per_seed", "correction": "none"})
    assert {t["split"] for t in s.trials} == {"per_seed"} and s.correction == "none"
    assert spec.parse(TUNED).correction == "bonferroni" and {t["split"] for t in spec.parse(TUNED).trials} == {"fixed"}
    assert spec.parse(TUNED | {"confirm": 4, "correction": "holm"}).correction == "holm"  # one look: holm may adjust


# ----------------------------------------------------------------- a seed draws the split

def test_per_seed_split_redraws_train_and_validation_but_not_test():
    a, b = (data_mod.load(data_config(TrainConfig(split="per_seed", seed=s))) for s in (0, 1))
    fixed = [data_mod.load(data_config(TrainConfig(seed=s))) for s in (0, 1)]
    z = lambda x: (x - x.mean()) / x.std()  # noqa: E731  (each is normalized by its own training split)
    assert torch.equal(a.y_test, b.y_test) and torch.allclose(z(a.x_test), z(b.x_test), atol=1e-5)
    assert a.x_val.shape == b.x_val.shape and not torch.equal(a.y_val, b.y_val)
    assert torch.equal(fixed[0].y_val, fixed[1].y_val)
    rows = lambda d: {tuple(r) for r in d.x_train.flatten(1).mul(1e4).round().int().tolist()}  # noqa: E731
    assert rows(a) != rows(b)


# ----------------------------------------------------------------- failures are scored by a rule

def test_a_diverged_trial_scores_the_chance_rate_of_its_test_split():
    result = train(TrainConfig(depth=3, width=4, epochs=2, lr=1e6, diverge_loss=10.0))
    test_y = data_mod.load(data_config(TrainConfig())).y_test
    assert result.status == "diverged"
    assert result.summary["test_acc"] == pytest.approx(majority_share(test_y))
    assert result.summary["chance_acc"] == pytest.approx(majority_share(test_y))
    assert result.history[-1]["test_acc"] == pytest.approx(majority_share(test_y))


def test_majority_share():
    assert majority_share(torch.tensor([0, 1, 1, 2, 1])) == pytest.approx(0.6)


def _row(arm, depth, norm, lr, seed, val, test, stage="confirm", status="completed", diagnosis="healthy"):
    return {"arm": arm, "depth": depth, "norm": norm, "lr": lr, "nuisance": f"lr={lr}", "seed": seed,
            "val_acc": val, "test_acc": test, "status": status, "diagnosis": diagnosis, "stage": stage,
            "grad_attenuation_final": -1.0, "grad_attenuation_init": -1.0, "variant": "", "activation": "relu",
            "chance_acc": 0.15}


def test_two_failures_do_not_differ():
    # The baseline is stuck around the chance rate (jittering just above and below it), the mitigation diverged
    # (scored at it): both failed to train, on every seed, so neither trains -- never helps, nor negligible.
    rows = []
    for seed in range(5):
        rows += [_row("p", 24, "none", 0.1, seed, 0.09, 0.13 + (-1) ** seed * 0.03, diagnosis="vanishing"),
                 _row("b", 24, "batch", 0.1, seed, 0.15, 0.15, status="diverged", diagnosis="diverged")]
    (row,) = effects.effects(pd.DataFrame(rows), nuisance=["lr"]).to_dict("records")
    assert row["delta_test_acc"] == pytest.approx(0.0) and row["verdict"] == "neither trains"
    assert row["diverged"] == 5 and row["healthy"] == 0 and row["failed"] == row["failed_baseline"] == 5


def test_a_network_that_trained_on_some_seeds_is_compared_not_called_failed():
    rows = []
    for seed in range(5):
        rows += [_row("p", 24, "none", 0.1, seed, 0.09, 0.10, diagnosis="vanishing"),
                 _row("b", 24, "batch", 0.1, seed, 0.5, 0.5 if seed else 0.1)]
    (row,) = effects.effects(pd.DataFrame(rows), nuisance=["lr"]).to_dict("records")
    assert row["verdict"] != "neither trains" and row["failed"] == 1 and row["failed_baseline"] == 5


# ----------------------------------------------------------------- what the report rests on

def _two_stage_frame() -> pd.DataFrame:
    """Stage 1 with a lucky lr whose test scores are inflated; stage 2 on fresh seeds tells the truth."""
    rows = []
    for seed in (0, 1):
        for depth in (4, 24):
            rows += [_row("p" + str(depth), depth, "none", 0.01, seed, 0.5, 0.5, "select"),
                     _row("p" + str(depth), depth, "none", 0.1, seed, 0.4, 0.4, "select"),
                     _row("b" + str(depth), depth, "batch", 0.01, seed, 0.6, 0.6, "select"),
                     _row("b" + str(depth), depth, "batch", 0.1, seed, 0.99, 0.99, "select")]
    rng = np.random.default_rng(0)
    for seed in (2, 3, 4, 5):
        for depth in (4, 24):
            noise = rng.normal(0, 0.01, 2)
            rows += [_row("p" + str(depth), depth, "none", 0.01, seed, 0.5, 0.5 + noise[0]),
                     _row("b" + str(depth), depth, "batch", 0.1, seed, 0.7, 0.7 + noise[1])]
    return pd.DataFrame(rows)


def test_effects_rest_on_the_fresh_seeds_alone():
    res = report.analyse(_two_stage_frame(), report.Selection(nuisance=("lr",)))
    eff = res["effects"]
    assert set(res["evidence"]["seed"]) == {2, 3, 4, 5} and (eff["n"] == 4).all()
    assert eff["delta_test_acc"].tolist() == pytest.approx([0.2, 0.2], abs=0.03)  # not 0.49 from stage 1
    first = res["trials"][res["trials"]["stage"] == "select"]
    assert set(first.loc[first["selected"], "nuisance"]) == {"lr=0.01", "lr=0.1"}


def test_no_table_groups_by_a_nuisance_option_or_the_seed():
    # The same arm chose different rates at the two depths: it must stay one configuration across depths.
    res = report.analyse(_two_stage_frame(), report.Selection(nuisance=("lr",)))
    assert not {"lr", "seed"} & set(res["main_effects"]["factor"])
    assert "lr" not in res["best_per_depth"].columns and "seed" not in res["best_per_depth"].columns
    frame = res["evidence"].assign(test_acc=lambda d: np.where(d["depth"] == 24, d["test_acc"] - 0.3, d["test_acc"]))
    trends = effects.depth_trends(frame, nuisance=("lr",))
    assert "lr" not in trends.columns and sorted(trends["norm"]) == ["batch", "none"]


def test_best_per_depth_is_chosen_on_validation_not_test():
    rows = []
    for seed in range(3):
        rows += [_row("a", 4, "none", 0.1, seed, val=0.9, test=0.6),
                 _row("b", 4, "batch", 0.1, seed, val=0.5, test=0.99)]
    best = effects.best_per_depth(pd.DataFrame(rows), nuisance=("lr",))
    assert best["norm"].tolist() == ["none"] and best["test_acc"].tolist() == pytest.approx([0.6])


def test_a_sweep_without_confirmation_says_its_test_scores_are_biased():
    old = _two_stage_frame().query("stage == 'select'").assign(stage="")
    res = report.analyse(old, report.Selection(nuisance=("lr",)))
    lines = report._evidence_lines(res["trials"], res, report.Selection(nuisance=("lr",)))
    assert any("No fresh-seed confirmation" in line for line in lines)
    # The effects rest on the seeds that chose the settings: +0.49 at both depths (fresh seeds find about +0.2).
    assert res["effects"]["delta_test_acc"].tolist() == pytest.approx([0.49, 0.49])


def test_a_diverged_pack_member_scores_chance_while_the_others_train_on():
    from vgtune.core.train import train_pack

    cfgs = [TrainConfig(depth=3, width=4, epochs=2, lr=lr, diverge_loss=10.0) for lr in (0.05, 1e6)]
    ok, ran_away = train_pack(cfgs)
    chance = majority_share(data_mod.load(data_config(TrainConfig())).y_test)
    assert ran_away.status == "diverged" and ran_away.summary["test_acc"] == pytest.approx(chance)
    assert ok.status == "completed" and ok.summary["test_acc"] > chance


def test_a_look_still_short_of_its_seeds_is_not_judged_and_every_column_rests_on_the_judged_seeds():
    from vgtune.analysis import verdicts as vd

    rng = np.random.default_rng(3)
    rows = []
    for seed in range(1, 8):  # look 1: seeds 1-5; look 2 planned 5 more, only 2 ran so far
        look = "1" if seed <= 5 else "2"
        noise = rng.normal(0, 0.1, 2)
        rows += [_row("p", 24, "none", 0.1, seed, 0.5, 0.5 + noise[0]) | {"look": look},
                 _row("b", 24, "batch", 0.1, seed, 0.5, 0.52 + noise[1]) | {"look": look}]
    (row,) = effects.effects(pd.DataFrame(rows), nuisance=["lr"], plan=vd.Plan(looks=(5, 10)),
                             family="all").to_dict("records")
    assert row["look"] == 1 and row["seeds"] == row["n"] == 5 and row["verdict"] == "inconclusive"
    assert row["stopped"] == "open after look 1 (5 seeds)"
