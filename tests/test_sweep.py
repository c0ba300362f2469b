"""A real sweep: real Ray Tune, a real MLflow SQLite store, real PyTorch trials."""

import pytest

from tests.helpers import sweep_options, trial_runs
from vgtune.driver import spec as spec_mod
from vgtune.driver.runner import run_sweep

pytestmark = pytest.mark.usefixtures("ray_cluster")


def test_tiny_sweep_logs_one_child_run_per_trial(tmp_path):
    spec = spec_mod.parse({"name": "tiny", "parameters": {"depth": [2, 6], "activation": ["relu", "tanh"]},
                           "fixed": {"width": 4, "epochs": 2, "init": "kaiming_normal"}})
    outcome = run_sweep(spec, sweep_options(tmp_path))
    assert len(outcome.trials) == 4 and outcome.concurrency == 2 and 0 < outcome.busy_share() < 1
    client, runs = trial_runs(outcome.tracking_uri, "tiny")
    assert len(runs) == 4
    parents = client.search_runs([runs[0].info.experiment_id], "tags.`vgtune.role` = 'sweep'")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {parents[0].info.run_id}
    assert [a.path for a in client.list_artifacts(parents[0].info.run_id)] == ["spec.yaml"]
    for run in runs:
        assert run.info.status == "FINISHED"
        assert {"depth", "width", "activation", "init", "norm", "residual", "optimizer", "lr", "seed",
                "dataset"} <= set(run.data.params)
        assert run.data.tags["status"] == "completed"
        # Kaiming init at depth 2 and 6: final attenuation within 0.3 decades of 0, at most 18% dead ReLU units.
        assert run.data.tags["diagnosis"] == "healthy"
        m = run.data.metrics
        for key in ("val_acc", "test_acc", "train_loss", "grad_attenuation", "grad_attenuation_init",
                    "grad_attenuation_final", "block01/grad_norm", "block02/update_ratio", "block01/dead_frac"):
            assert key in m, key
        steps = [h.step for h in client.get_metric_history(run.info.run_id, "val_acc")]
        assert steps == [1, 2]
        assert [h.step for h in client.get_metric_history(run.info.run_id, "block01/grad_norm")] == [0, 1, 2]
        assert "gradient_flow.svg" in [a.path for a in client.list_artifacts(run.info.run_id)]


def test_stopper_ends_a_vanishing_trial_early(tmp_path):
    spec = spec_mod.parse({"name": "collapse", "parameters": {"depth": [20]},
                           "fixed": {"width": 4, "epochs": 6, "activation": "sigmoid"},
                           "stop": {"gradient_collapse": True, "attenuation_floor": -6, "patience": 2}})
    run_sweep(spec, sweep_options(tmp_path))
    _, runs = trial_runs(f"sqlite:///{tmp_path}/mlflow.db", "collapse")
    (run,) = runs
    assert run.data.tags["status"] == "stopped"
    assert run.data.tags["diagnosis"] == "vanishing"
    assert "gradient collapsed" in run.data.tags["vgtune.stop_reason"]
    assert run.data.metrics["epochs_run"] == 2


def test_diverging_and_crashing_trials_do_not_stop_the_sweep(tmp_path):
    spec = spec_mod.parse({"name": "faults", "parameters": {"lr": [0.05, 80.0]},
                           "fixed": {"depth": 6, "width": 8, "epochs": 3, "activation": "relu",
                                     "init": "kaiming_normal"},
                           "configs": [{"depth": 2, "width": 200000}],  # 1.4 TB of weights: out of memory
                           "max_failures": 0, "stop": {"gradient_collapse": False}})
    outcome = run_sweep(spec, sweep_options(tmp_path))
    assert len(outcome.trials) == 3
    _, runs = trial_runs(outcome.tracking_uri, "faults")
    status = {float(r.data.params["lr"]) if r.data.params["width"] == "8" else "crash": r for r in runs}
    assert status[0.05].data.tags["status"] == "completed"
    assert status[80.0].data.tags["status"] == "diverged" and status[80.0].data.tags["diagnosis"] == "diverged"
    crash = status["crash"]
    assert crash.data.tags["status"] == "error" and crash.info.status == "FAILED"
    assert "memory" in crash.data.tags["vgtune.error"].lower() or "alloc" in crash.data.tags["vgtune.error"].lower()


def test_an_axis_outside_the_contract_columns_keeps_every_trial(tmp_path):
    """Trials that differ only in options the report does not rank on are still distinct rows."""
    import pandas as pd

    spec = spec_mod.parse({"name": "axes", "parameters": {"probe_every": [0, 5], "diverge_loss": [1e3, 1e4]},
                           "fixed": {"depth": 2, "width": 4, "epochs": 1, "init": "kaiming_normal"}})
    from vgtune.analysis import report

    outcome = run_sweep(spec, sweep_options(tmp_path))
    report.build("axes", outcome.tracking_uri, tmp_path / "reports")
    trials = pd.read_csv(tmp_path / "reports" / "axes" / "trials.csv")
    assert len(outcome.trials) == 4 and len(trials) == 4
    assert sorted(zip(trials["probe_every"], trials["diverge_loss"])) == [(0, 1e3), (0, 1e4), (5, 1e3), (5, 1e4)]
    _, runs = trial_runs(outcome.tracking_uri, "axes")
    assert {r.info.run_name.rsplit(" ", 1)[0] for r in runs} == {
        f"probe_every={p} diverge_loss={d}" for p in (0, 5) for d in (1000.0, 10000.0)}


def test_theory_columns_and_the_phase_diagram_reach_the_report(tmp_path):
    import pandas as pd

    from vgtune.analysis import report

    spec = spec_mod.parse({"name": "phase", "parameters": {"init_scale": [0.5, 2.0], "depth": [2, 4],
                                                           "norm": ["none", "batch"]},
                           "fixed": {"width": 4, "epochs": 1, "activation": "tanh", "init": "xavier_normal"}})
    outcome = run_sweep(spec, sweep_options(tmp_path))
    folder = report.build("phase", outcome.tracking_uri, tmp_path / "reports")
    trials = pd.read_csv(folder / "trials.csv")
    plain, bn = trials[trials["norm"] == "none"], trials[trials["norm"] == "batch"]
    assert plain["grad_attenuation_predicted"].notna().all() and (plain["theory"] == "mean field").all()
    assert (plain.groupby("init_scale")["chi1"].mean().diff().dropna() > 0).all()  # larger weights, larger chi1
    assert bn["grad_attenuation_predicted"].isna().all() and (bn["theory"] == "n/a: batch norm").all()
    # the final probe's profile, through MLflow: a block of each stack, and the total over its transitions
    assert trials["worst_drop_block"].between(2, trials["depth"]).all()
    assert (trials["decades_per_block"] * (trials["depth"] - 1)).tolist() == pytest.approx(
        trials["grad_attenuation_final"].tolist(), rel=1e-9)
    assert (folder / "phase_accuracy.png").stat().st_size > 0 and (folder / "theory_vs_measured.png").exists()
    critical = pd.read_csv(folder / "theory_critical.csv")
    assert critical.loc[0, "activation"] == "tanh" and abs(critical.loc[0, "critical_sigma_w2"] - 1) < 1e-3
    _, runs = trial_runs(outcome.tracking_uri, "phase")
    assert all("grad_attenuation_predicted" in r.data.metrics for r in runs if r.data.params["norm"] == "none")


def test_a_trial_an_interrupted_sweep_never_started_reads_as_one_unfinished_trial():
    """Tune's result of a trial that never started may lack its config: one trial, no epoch, not an error."""
    from types import SimpleNamespace

    from vgtune.driver.runner import _outcomes

    (t,) = _outcomes(SimpleNamespace(config=None, metrics={}, error=None))
    assert t["config"] == {} and t["last"] == {} and t["status"] == "stopped" and t["error"] is None
