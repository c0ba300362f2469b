"""The report on a real MLflow SQLite store filled with runs of known values."""

import shutil

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from vgtune import api, cli
from vgtune.analysis import report
from vgtune.analysis.effects import effects
from vgtune.core.columns import CONTRACT_FACTORS, RESULTS
from vgtune.tracking import reader

FACTORS = {"width": 8, "init": "default", "residual": "none", "optimizer": "sgd", "lr": 0.05, "dataset": "digits"}


def _trial(client, exp_id, parent, sweep, *, depth, activation, norm, seed, acc, att, diagnosis,
           status="completed", end_time=None):
    run = client.create_run(exp_id, tags={"vgtune.role": "trial", "vgtune.sweep": sweep, "status": status,
                                          "diagnosis": diagnosis, "mlflow.parentRunId": parent})
    rid = run.info.run_id
    for k, v in (FACTORS | {"depth": depth, "activation": activation, "norm": norm, "seed": seed}).items():
        client.log_param(rid, k, v)
    if acc is not None:
        for k, v in {"test_acc": acc, "val_acc": acc, "train_loss": 1 - acc, "grad_attenuation_init": att,
                     "grad_attenuation_final": att, "train_seconds": 1.0, "epochs_run": 3}.items():
            client.log_metric(rid, k, v)
        for block in range(depth):
            client.log_metric(rid, f"block{block + 1:02d}/grad_norm", 10 ** (att * (depth - block) / depth))
    if status != "running":
        client.set_terminated(rid, "FAILED" if status == "error" else "FINISHED", end_time=end_time)
    return rid


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{tmp}/mlflow.db"
    client = MlflowClient(uri)
    exp_id = client.create_experiment("known", artifact_location=(tmp / "art").as_uri())
    parent = client.create_run(exp_id, tags={"vgtune.role": "sweep", "vgtune.sweep": "known-1"}).info.run_id
    t = lambda **kw: _trial(client, exp_id, parent, "known-1", **kw)  # noqa: E731
    for seed in range(3):
        t(depth=4, activation="sigmoid", norm="none", seed=seed, acc=0.9, att=-1.0, diagnosis="healthy")
        t(depth=16, activation="sigmoid", norm="none", seed=seed, acc=0.1, att=-8.0, diagnosis="vanishing")
        t(depth=4, activation="sigmoid", norm="batch", seed=seed, acc=0.92, att=-0.2, diagnosis="healthy")
        t(depth=16, activation="sigmoid", norm="batch", seed=seed, acc=0.8 + 0.05 * seed, att=-0.5,
          diagnosis="healthy")
        t(depth=4, activation="relu", norm="none", seed=seed, acc=0.95, att=-0.1, diagnosis="healthy")
        t(depth=16, activation="relu", norm="none", seed=seed, acc=0.6, att=-0.3, diagnosis="healthy")
    t(depth=16, activation="sigmoid", norm="layer", seed=0, acc=None, att=None, diagnosis="healthy", status="error")
    # An older invocation ran one configuration too: it must not be counted twice.
    _trial(client, exp_id, parent, "known-0", depth=16, activation="sigmoid", norm="none", seed=0, acc=0.5,
           att=-8.0, diagnosis="vanishing", end_time=1)
    client.set_terminated(parent, "FINISHED")
    return uri, tmp


def test_trials_table_has_the_contract_columns_and_no_duplicates(store):
    uri, _ = store
    df = reader.load_trials(uri, "known")
    assert len(df) == 19  # 18 + the errored one; the older duplicate is dropped
    base = df[(df.depth == 16) & (df.activation == "sigmoid") & (df.norm == "none") & (df.seed == 0)]
    assert base["test_acc"].tolist() == [0.1]
    assert (df["status"] == "error").sum() == 1


def test_ranking_effects_and_confidence_intervals(store):
    uri, _ = store
    eff = effects(reader.load_trials(uri, "known"))
    bn = eff[(eff.mitigation == "norm=batch") & (eff.depth == 16)].iloc[0]
    assert bn["n"] == 3 and bn["paired"]
    assert bn["delta_test_acc"] == pytest.approx(0.75)
    # Differences 0.7, 0.75, 0.8: a Student-t interval, adjusted with the other comparisons, is wider than their
    # range (which the old bootstrap reported) and still excludes 0.
    assert 0 < bn["ci_low"] < 0.7 and 0.8 < bn["ci_high"] and bn["p_adjusted"] < 0.05 and bn["mde"] > 0
    assert bn["delta_attenuation"] == pytest.approx(7.5)
    assert bn["rescued"] == 3 and "vanishing->healthy x3" in bn["transitions"]
    relu = eff[(eff.mitigation == "activation=relu") & (eff.depth == 16)].iloc[0]
    assert relu["delta_test_acc"] == pytest.approx(0.5)
    assert bn["verdict"] == "helps" and bn["seeds"] == 3 and bn["activation"] == "sigmoid"
    assert bn["rank"] == 1 and relu["rank"] == 1  # ranked within their cells (sigmoid; all activations)
    assert "norm=layer" not in set(eff.mitigation)  # only an errored trial: nothing to compare


def test_degradation_is_told_apart_from_vanishing(store):
    uri, tmp = store
    report.build("known", uri, tmp / "reports")
    trends = pd.read_csv(tmp / "reports" / "known" / "depth_trends.csv")
    verdict = dict(zip(trends["activation"] + "/" + trends["norm"], trends["verdict"]))
    assert verdict == {"relu/none": "degradation", "sigmoid/none": "vanishing"}
    text = (tmp / "reports" / "known" / "report.md").read_text()
    assert "degradation (He et al. 2016)" in text


def test_report_files_exist_and_html_embeds_plots(store):
    uri, tmp = store
    folder = report.build("known", uri, tmp / "out")
    for name in ("trials.csv", "ranking.csv", "mitigations.csv", "report.md", "report.html", *report.PLOTS):
        assert (folder / name).stat().st_size > 0, name
    html = (folder / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(report.PLOTS)
    trials = pd.read_csv(folder / "trials.csv")
    assert list(trials.columns[:20]) == list(CONTRACT_FACTORS + RESULTS)
    assert "1 error" in (folder / "report.md").read_text()
    parent = MlflowClient(uri).search_runs([MlflowClient(uri).get_experiment_by_name("known").experiment_id],
                                           "tags.`vgtune.role` = 'sweep'")[0]
    assert "report" in [a.path for a in MlflowClient(uri).list_artifacts(parent.info.run_id)]


def test_a_report_folder_reads_back_also_from_before_the_two_files_swapped_names(store, tmp_path):
    uri, _ = store
    folder = report.build("known", uri, tmp_path / "new", log_artifacts=False)
    new = report.read_tables(folder)
    assert "depth" in new["effects"] and "depth" not in new["ranking"] and "delta_acc_d16" in new["ranking"]
    old = tmp_path / "old"
    shutil.copytree(folder, old)  # as written before: ranking.csv held the effects, mitigations.csv the ranking
    (old / "ranking.csv").rename(old / "effects.tmp")
    (old / "mitigations.csv").rename(old / "ranking.csv")
    (old / "effects.tmp").rename(old / "mitigations.csv")
    back = api.SweepResult.load(old)
    pd.testing.assert_frame_equal(back.verdicts, new["effects"])
    pd.testing.assert_frame_equal(back.ranking, new["ranking"])
    pd.testing.assert_frame_equal(back.trials, new["trials"])


def test_the_api_reports_the_latest_an_experiment_or_one_sweep(store, tmp_path):
    uri, _ = store
    latest = api.report(tracking_uri=uri, out=tmp_path)
    assert latest.experiment == "known" and latest.report_dir == tmp_path / "known" and len(latest.trials) == 19
    assert (latest.report_dir / "mitigations.csv").is_file()
    pd.testing.assert_frame_equal(latest.verdicts, latest.tables["effects"])
    assert len(api.report("known", tracking_uri=uri, out=tmp_path).trials) == 19
    older = api.report("known-0", tracking_uri=uri, out=tmp_path)  # one sweep's id: its runs only
    assert older.experiment == "known" and older.trials["test_acc"].tolist() == [0.5]
    with pytest.raises(reader.UnknownExperiment, match="no experiment or sweep 'nope'.*experiments: known"):
        api.report("nope", tracking_uri=uri, out=tmp_path)


def test_a_report_of_one_sweep_is_logged_on_that_sweeps_run(tmp_path, capsys):
    """`vgtune report --sweep ID` (no experiment needed) reads that sweep's runs and attaches its report to that
    sweep's run, not to the experiment's newest."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    exp_id = client.create_experiment("two", artifact_location=(tmp_path / "art").as_uri())
    parents = {}
    for i, sweep in enumerate(("two-1", "two-2")):  # two-2 started later: the experiment's newest sweep run
        parents[sweep] = client.create_run(exp_id, start_time=1000 * (i + 1), tags={
            "vgtune.role": "sweep", "vgtune.sweep": sweep}).info.run_id
        _trial(client, exp_id, parents[sweep], sweep, depth=4, activation="relu", norm="none", seed=i, acc=0.9,
               att=-0.1, diagnosis="healthy")
    assert cli.main(["report", "--sweep", "two-1", "--tracking-uri", uri, "--out", str(tmp_path / "out")]) == 0
    assert "1 trials: 1 completed" in capsys.readouterr().out
    logged = {sweep: [a.path for a in client.list_artifacts(run_id)] for sweep, run_id in parents.items()}
    assert logged == {"two-1": ["report"], "two-2": []}


def test_unknown_experiment_lists_existing(store):
    uri, _ = store
    with pytest.raises(reader.UnknownExperiment, match="no experiment 'nope'.*existing: known"):
        reader.load_trials(uri, "nope")


def test_unknown_sweep_folder_lists_the_sweeps(store):
    uri, _ = store
    with pytest.raises(reader.UnknownExperiment, match="no runs of sweep 'known-9'.*its sweeps: known-1"):
        reader.load_trials(uri, "known", sweep="known-9")


def test_running_sweep_is_reported_as_far_as_it_got(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    exp_id = client.create_experiment("live", artifact_location=(tmp_path / "art").as_uri())
    parent = client.create_run(exp_id, tags={"vgtune.role": "sweep", "vgtune.sweep": "live-1"}).info.run_id
    _trial(client, exp_id, parent, "live-1", depth=4, activation="relu", norm="none", seed=0, acc=0.9, att=-0.1,
           diagnosis="healthy")
    _trial(client, exp_id, parent, "live-1", depth=4, activation="relu", norm="batch", seed=0, acc=0.5, att=-0.1,
           diagnosis="healthy", status="running")
    folder = report.build("live", uri, tmp_path / "reports")
    assert "still running" in (folder / "report.md").read_text()


def test_the_sqlite_fast_path_reads_what_search_runs_reads(store, tmp_path):
    """Straight SQL over the store and MlflowClient.search_runs give the same trials table (NaN, inf, tags)."""
    uri, _ = store
    client = MlflowClient(uri)
    exp_id = client.get_experiment_by_name("known").experiment_id
    odd = client.create_run(exp_id, tags={"vgtune.role": "trial", "vgtune.sweep": "known-1", "status": "diverged"})
    for k, v in ({"depth": 2, "activation": "tanh", "norm": "none", "seed": 9} | FACTORS).items():
        client.log_param(odd.info.run_id, k, v)
    client.log_metric(odd.info.run_id, "grad_attenuation_init", float("-inf"))
    client.log_metric(odd.info.run_id, "train_loss", float("nan"))
    client.set_terminated(odd.info.run_id)
    fast = reader.load_trials(uri, "known")
    slow = reader.tidy(reader._search_all(reader.client_for(uri), exp_id, "tags.`vgtune.role` = 'trial'"))
    pd.testing.assert_frame_equal(fast, slow)
    row = fast[fast.seed == 9].iloc[0]
    assert row["grad_attenuation_init"] == float("-inf") and pd.isna(row["train_loss"])
    assert reader._sqlite_runs(uri, exp_id, "known-0") and len(reader.load_trials(uri, "known", sweep="known-0")) == 1
    assert reader._sqlite_runs("http://127.0.0.1:1", exp_id, None) is None
    client.delete_run(odd.info.run_id)
