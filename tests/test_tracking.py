"""The tracker's write path without Ray: retries, and a store that cannot be written at all."""

from types import SimpleNamespace

import pytest

from vgtune.tracking import MLflowTracker, flush_all
from vgtune.writer import BackgroundWriter, TrackingError, Unavailable


def test_writer_retries_transient_errors_but_not_unavailable():
    writer = BackgroundWriter(retries=3, backoff=0.001)
    calls = {"flaky": 0, "gone": 0}

    def flaky():
        calls["flaky"] += 1
        if calls["flaky"] < 3:
            raise ConnectionError("server restarting")

    def gone():
        calls["gone"] += 1
        raise Unavailable("no run")

    writer.submit(flaky)
    writer.submit(gone)
    writer.close()
    assert calls == {"flaky": 3, "gone": 1}
    assert writer.failures == ["gone: no run"]


def test_store_that_cannot_be_written_fails_the_sweep_once(tmp_path):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    tracker = MLflowTracker(f"sqlite:///{not_a_folder}/mlflow.db", "exp", "exp-1", "name: exp\n", 1)
    tracker._writer = BackgroundWriter(retries=0)
    MLflowTracker.live.append(tracker)
    trial = SimpleNamespace(trial_id="t1", config={"trial": {"train": {"depth": 3}, "meta": {}}}, last_result={})
    tracker.setup()
    tracker.on_trial_start(0, [], trial)
    tracker.on_trial_result(0, [], trial, {"epoch": 1})
    with pytest.raises(TrackingError, match=f"nothing was recorded in MLflow sqlite:///{not_a_folder}"):
        flush_all()
    assert len(tracker.writer.failures) == 3
    assert tracker.writer.failures[0].startswith("start")
    assert all("no sweep run" in f for f in tracker.writer.failures[1:])
    assert not MLflowTracker.live


def test_importing_vgtune_installs_no_global_hooks():
    """No SQLAlchemy listener, pyplot backend or MLflow URI is set by importing vgtune's modules."""
    import subprocess
    import sys

    code = ("import sqlalchemy.event as e, sqlalchemy.engine as en, matplotlib, mlflow\n"
            "before = matplotlib.get_backend.__module__, mlflow.get_tracking_uri()\n"
            "import vgtune.tracking, vgtune.report, vgtune.runs, vgtune.plots, vgtune.store, vgtune.cli\n"
            "import vgtune.store as s\n"
            "assert not e.contains(en.Engine, 'connect', s._sqlite_pragmas)\n"
            "import sys; assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'\n"
            "assert mlflow.get_tracking_uri() == before[1]\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_report_build_from_python_uses_wal(tmp_path):
    """`report.build()` called from Python opens SQLite stores as the CLI does (WAL, busy timeout)."""
    import sqlite3

    from vgtune import report
    from vgtune.store import client_for

    uri = f"sqlite:///{tmp_path}/m.db"
    client_for(uri).create_experiment("e")
    report.build("e", uri, tmp_path / "out", log_artifacts=False)
    with sqlite3.connect(tmp_path / "m.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
