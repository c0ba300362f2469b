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


def test_stage_two_retrains_each_arm_at_its_choice_on_fresh_seeds_at_the_full_budget(tmp_path):
    spec = spec_mod.parse({"name": "twostage", "parameters": {"depth": [12], "activation": ["sigmoid"]},
                           "variants": [{}, {"norm": "batch"}], "nuisance": {"lr": [0.02, 0.2]}, "repeats": 2,
                           "confirm": 2, "split": "per_seed", "pack": "auto",
                           "fixed": {"width": 4, "epochs": 3},
                           "stop": {"gradient_collapse": True, "attenuation_floor": -3, "patience": 1}})
    outcome = run_sweep(spec, sweep_options(tmp_path))
    assert len(outcome.trials) == 8 + 4 and outcome.unfinished == 0 and outcome.finished == 12
    df = load_trials(outcome.tracking_uri, "twostage")
    first, second = df[df["stage"] == "select"], df[df["stage"] == "confirm"]
    assert len(first) == 8 and len(second) == 4
    assert set(first["seed"]) == {0, 1} and set(second["seed"]) == {2, 3}
    # Stage 2 runs the setting stage 1's validation scores chose, as the report re-derives it from MLflow.
    chosen = fairness.select(first)
    assert dict(zip(second["arm"], second["nuisance"])) == dict(
        chosen.loc[chosen["selected"], ["arm", "nuisance"]].drop_duplicates().values.tolist())
    assert outcome.chosen == dict(zip(second["arm"], second["nuisance"]))
    # The stopper cut stage 1's collapsing plain stack short; stage 2 trains every trial its full budget.
    assert (first["status"] == "stopped").any()
    assert (second["epochs_run"] == 3).all() and set(second["status"]) <= {"completed", "diverged"}
    client = MlflowClient(outcome.tracking_uri)
    parents = client.search_runs([outcome.experiment_id], "tags.`vgtune.role` = 'sweep'")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert {r for r in df["mlflow_run_id"]} and all(
        client.get_run(r).data.tags["mlflow.parentRunId"] == parents[0].info.run_id for r in df["mlflow_run_id"])
    assert parents[0].data.params["confirm"] == "2" and parents[0].data.params["trials"] == "12"
    _, res = report.write(df, "twostage", tmp_path / "rep", selection=report.Selection(nuisance=("lr",)))
    assert (res["effects"]["n"] == 2).all() and set(res["evidence"]["seed"]) == {2, 3}
    trials_csv = pd.read_csv(tmp_path / "rep" / "trials.csv")
    assert set(trials_csv["stage"]) == {"select", "confirm"}
    assert {"p_adjusted", "mde", "ci_low", "ci_high"} <= set(pd.read_csv(tmp_path / "rep" / "mitigations.csv").columns)


def _verdicts(tmp_path, raw: dict) -> pd.DataFrame:
    outcome = run_sweep(spec_mod.parse(raw), sweep_options(tmp_path))
    df = load_trials(outcome.tracking_uri, raw["name"])
    _, res = report.write(df, raw["name"], tmp_path / "rep", selection=report.Selection(nuisance=("lr",)))
    return res["effects"]


def test_practically_null_mitigations_get_no_helps_or_hurts(tmp_path):
    # Weight decay of 1e-7 and dropout of 0.001 change a trial's trajectory (its noise), not its expected accuracy.
    eff = _verdicts(tmp_path, {"name": "null", "parameters": {"depth": [3, 5], "activation": ["relu"]},
                               "variants": [{}, {"weight_decay": 1.0e-7}, {"dropout": 0.001}],
                               "nuisance": {"lr": [0.03, 0.1]}, "repeats": 1, "confirm": 4, "split": "per_seed",
                               "pack": "auto", "fixed": {"width": 8, "epochs": 2, "init": "kaiming_normal"}})
    assert len(eff) == 4 and (eff["seeds"] == 4).all()
    assert (eff["verdict"] == "inconclusive").all(), eff[["mitigation", "depth", "delta_test_acc", "p_adjusted"]]


def test_large_real_effects_are_all_called(tmp_path):
    # Deep plain sigmoid stacks stay at chance; batch norm trains them (Ioffe & Szegedy 2015).
    eff = _verdicts(tmp_path, {"name": "large", "parameters": {"depth": [8, 10], "activation": ["sigmoid"]},
                               "variants": [{}, {"norm": "batch"}], "repeats": 3, "split": "per_seed",
                               "pack": "auto", "stop": {"gradient_collapse": False},
                               "fixed": {"width": 8, "epochs": 3, "lr": 0.1}})
    assert len(eff) == 2 and (eff["verdict"] == "helps").all(), eff[["depth", "delta_test_acc", "p_adjusted"]]
    assert (eff["delta_test_acc"] > 0.3).all() and (eff["ci_low"] > 0).all()
