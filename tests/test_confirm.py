"""Select, then confirm, for real: Ray Tune, a MLflow SQLite store, PyTorch trials, and the report's verdicts."""

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from tests.helpers import sweep_options
from vgtune.analysis import fairness, report
from vgtune.driver import spec as spec_mod
from vgtune.driver.runner import run_sweep
from vgtune.tracking.reader import load_trials

pytestmark = pytest.mark.usefixtures("ray_cluster")


def test_each_arm_is_confirmed_at_its_choice_on_fresh_seeds_in_looks_while_its_comparison_is_open(tmp_path):
    # Plain and Xavier deep sigmoid stacks both stay at chance: neither trains, decided at look 1. Batch norm
    # trains, but two seeds cannot tell by how much at this level: its comparison (and its baseline) go on.
    spec = spec_mod.parse({"name": "looks", "parameters": {"depth": [12], "activation": ["sigmoid"]},
                           "variants": [{}, {"init": "xavier_normal"}, {"norm": "batch"}],
                           "nuisance": {"lr": [0.02, 0.2]}, "repeats": 2, "seeds": [2, 4], "extend": 0,
                           "split": "per_seed", "pack": "auto", "fixed": {"width": 4, "epochs": 2},
                           "stop": {"gradient_collapse": True, "attenuation_floor": -3, "patience": 1}})
    outcome = run_sweep(spec, sweep_options(tmp_path))
    assert outcome.unfinished == 0 and outcome.finished == len(outcome.trials)
    df = load_trials(outcome.tracking_uri, "looks")
    first, second = df[df["stage"] == "select"], df[df["stage"] == "confirm"]
    assert len(first) == 12 and set(first["seed"]) == {0, 1} and set(second["seed"]) <= {2, 3, 4, 5}
    # Confirmation runs the setting the selection's validation scores chose, as the report re-derives it.
    chosen = fairness.select(first)
    assert dict(zip(second["arm"], second["nuisance"])) == dict(
        chosen.loc[chosen["selected"], ["arm", "nuisance"]].drop_duplicates().values.tolist())
    assert outcome.chosen == dict(zip(second["arm"], second["nuisance"]))
    looks = second.groupby("variant")["look"].agg(lambda v: sorted(set(v)))
    assert looks["init=xavier_normal"] == ["1"] and looks["norm=batch"] == looks[""] == ["1", "2"]
    # The stopper cut the selection's collapsing plain stack short; confirmation trains every trial fully.
    assert (first["status"] == "stopped").any()
    assert (second["epochs_run"] == 2).all() and set(second["status"]) <= {"completed", "diverged"}
    client = MlflowClient(outcome.tracking_uri)
    parents = client.search_runs([outcome.experiment_id], "tags.`vgtune.role` = 'sweep'")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert {r for r in df["mlflow_run_id"]} and all(
        client.get_run(r).data.tags["mlflow.parentRunId"] == parents[0].info.run_id for r in df["mlflow_run_id"])
    params = parents[0].data.params
    assert params["seeds"] == "2,4" and params["family_size"] == "2" and params["trials_max"] == str(spec.total_trials)
    assert parents[0].data.tags["trials"] == str(len(df))
    made = report.make("looks", outcome.tracking_uri, tmp_path / "rep")
    eff = made.tables["effects"].set_index("mitigation")
    assert eff.loc["init=xavier_normal", "verdict"] == "neither trains" and eff.loc["init=xavier_normal", "look"] == 1
    assert eff.loc["norm=batch", "look"] == 2 and eff.loc["norm=batch", "seeds"] == 4
    trials_csv = pd.read_csv(tmp_path / "rep" / "looks" / "trials.csv")
    assert set(trials_csv["stage"]) == {"select", "confirm"} and set(trials_csv["look"].dropna()) == {1, 2}
    assert (tmp_path / "rep" / "looks" / "forest.png").is_file()
    assert {"p_adjusted", "mde", "ci_low", "ci_high", "stopped"} <= set(
        pd.read_csv(tmp_path / "rep" / "looks" / "mitigations.csv").columns)


def _verdicts(tmp_path, raw: dict) -> pd.DataFrame:
    outcome = run_sweep(spec_mod.parse(raw), sweep_options(tmp_path))
    return report.make(raw["name"], outcome.tracking_uri, tmp_path / "rep").tables["effects"]


def test_practically_null_mitigations_get_no_helps_or_hurts(tmp_path):
    # Weight decay of 1e-7 and dropout of 0.001 change a trial's trajectory (its noise), not its expected accuracy.
    eff = _verdicts(tmp_path, {"name": "null", "parameters": {"depth": [3, 5], "activation": ["relu"]},
                               "variants": [{}, {"weight_decay": 1.0e-7}, {"dropout": 0.001}],
                               "nuisance": {"lr": [0.03, 0.1]}, "repeats": 1, "confirm": 4, "extend": 0,
                               "family": "all", "split": "per_seed", "pack": "auto",
                               "fixed": {"width": 8, "epochs": 2, "init": "kaiming_normal"}})
    assert len(eff) == 4 and (eff["seeds"] == 4).all()
    assert set(eff["verdict"]) <= {"inconclusive", "negligible"}, eff[["mitigation", "depth", "delta_test_acc"]]


def test_large_real_effects_are_all_called(tmp_path):
    # Deep plain sigmoid stacks stay at chance; batch norm trains them (Ioffe & Szegedy 2015).
    eff = _verdicts(tmp_path, {"name": "large", "parameters": {"depth": [8, 10], "activation": ["sigmoid"]},
                               "variants": [{}, {"norm": "batch"}], "repeats": 3, "split": "per_seed", "family": "all",
                               "pack": "auto", "stop": {"gradient_collapse": False},
                               "fixed": {"width": 8, "epochs": 3, "lr": 0.1}})
    assert len(eff) == 2 and (eff["verdict"] == "helps").all(), eff[["depth", "delta_test_acc", "p_adjusted"]]
    assert (eff["delta_test_acc"] > 0.3).all() and (eff["ci_low"] > 0).all()
