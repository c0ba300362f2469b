"""The tracker's write path without Ray: retries, and a store that cannot be written at all."""

from types import SimpleNamespace

import pytest

from vgtune.core.member import MemberEpoch, TrialEpoch
from vgtune.driver.mlflow_callback import MLflowTracker, flush_all
from vgtune.tracking.store import TrackingError, Unavailable
from vgtune.tracking.writer_process import retry


def test_writes_are_retried_on_transient_errors_but_not_when_unavailable():
    calls = {"flaky": 0, "gone": 0}
    failures = []

    def flaky():
        calls["flaky"] += 1
        if calls["flaky"] < 3:
            raise ConnectionError("server restarting")

    def gone():
        calls["gone"] += 1
        raise Unavailable("no run")

    retry(flaky, "flaky", failures, retries=3, backoff=0.001)
    retry(gone, "gone", failures, retries=3, backoff=0.001)
    assert calls == {"flaky": 3, "gone": 1}
    assert failures == ["gone: no run"]


def _result(member: MemberEpoch) -> dict:
    """A Tune result of a trial alone whose epoch is `member` (as `vgtune.driver.trainable` reports it)."""
    return TrialEpoch([member], [member.latest()]).to_result("val_acc", "max")


def test_store_that_cannot_be_written_fails_the_sweep_once(tmp_path):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    tracker = MLflowTracker(f"sqlite:///{not_a_folder}/mlflow.db", "exp", "exp-1", "name: exp\n", 1, retries=0)
    trial = SimpleNamespace(trial_id="t1", config={"trial": {"train": {"depth": 3}, "meta": {}}}, last_result={})
    tracker.setup()
    tracker.on_trial_start(0, [], trial)
    tracker.on_trial_result(0, [], trial, _result(MemberEpoch(0, {"epoch": 1, "status": "running"})))
    with pytest.raises(TrackingError, match=f"nothing was recorded in MLflow sqlite:///{not_a_folder}"):
        flush_all()
    assert len(tracker.writer.failures) == 3
    assert tracker.writer.failures[0].startswith("start")
    assert all("no sweep run" in f for f in tracker.writer.failures[1:])
    assert not MLflowTracker.live
    assert tracker.writer._proc.poll() == 0  # the writer process has exited


def test_the_writer_process_records_a_trial_and_reports_its_state(tmp_path):
    """The child process owns the RunLogger: runs, metrics and the plot appear; the driver gets the state."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracker = MLflowTracker(uri, "exp", "exp-1", "name: exp\n", 1)
    cfg = {"depth": 2, "epochs": 1}
    layers = {k: [1.0, 2.0] for k in ("grad_norm", "weight_grad_norm", "update_ratio", "act_mean", "act_std",
                                      "dead_frac", "saturated_frac")}
    result = _result(MemberEpoch(0, {"epoch": 1, "val_acc": 0.5, "status": "completed"}, layers, layers, 2.5))
    trial = SimpleNamespace(trial_id="t1", config={"trial": {"train": cfg, "meta": {"arm": "a"}}}, last_result=result)
    tracker.setup()
    tracker.on_trial_start(0, [], trial)
    tracker.on_trial_result(0, [], trial, result)
    tracker.on_trial_complete(0, [], trial)
    tracker.on_experiment_end([trial])
    assert flush_all() == [tracker]
    assert tracker.counts == {"completed": 1} and tracker.unfinished == 0 and tracker.experiment_id
    assert tracker.work_seconds == 2.5
    client = MlflowClient(uri)
    (run,) = client.search_runs([tracker.experiment_id], "tags.`vgtune.role` = 'trial'")
    assert run.data.metrics["val_acc"] == 0.5 and run.data.metrics["block02/grad_norm"] == 2.0
    assert run.info.status == "FINISHED" and run.data.tags["vgtune.arm"] == "a"
    assert "gradient_flow.svg" in [a.path for a in client.list_artifacts(run.info.run_id)]


def test_importing_vgtune_installs_no_global_hooks():
    """No SQLAlchemy listener, pyplot backend or MLflow URI is set by importing vgtune's modules."""
    import subprocess
    import sys

    code = ("import sqlalchemy.event as e, sqlalchemy.engine as en, matplotlib, mlflow\n"
            "before = matplotlib.get_backend.__module__, mlflow.get_tracking_uri()\n"
            "import vgtune.driver.mlflow_callback, vgtune.analysis.report, vgtune.tracking.reader\n"
            "import vgtune.analysis.plots, vgtune.tracking.store, vgtune.api, vgtune.cli\n"
            "import vgtune.tracking.store as s\n"
            "assert not e.contains(en.Engine, 'connect', s._sqlite_pragmas)\n"
            "import sys; assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'\n"
            "assert mlflow.get_tracking_uri() == before[1]\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_report_build_from_python_uses_wal(tmp_path):
    """`report.build()` called from Python opens SQLite stores as the CLI does (WAL, busy timeout)."""
    import sqlite3

    from vgtune.analysis import report
    from vgtune.tracking.store import client_for

    uri = f"sqlite:///{tmp_path}/m.db"
    client_for(uri).create_experiment("e")
    report.build("e", uri, tmp_path / "out", log_artifacts=False)
    with sqlite3.connect(tmp_path / "m.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
