"""The tracker's write path without Ray: retries, and a store that cannot be written at all."""

from types import SimpleNamespace

import pytest

from vgtune import tracking
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
    tracking._ACTIVE.append(tracker)
    trial = SimpleNamespace(trial_id="t1", config={"train": {"depth": 3}}, last_result={})
    tracker.setup()
    tracker.on_trial_start(0, [], trial)
    tracker.on_trial_result(0, [], trial, {"epoch": 1})
    with pytest.raises(TrackingError, match=f"nothing was recorded in MLflow sqlite:///{not_a_folder}"):
        flush_all()
    assert len(tracker.writer.failures) == 3
    assert tracker.writer.failures[0].startswith("_start")
    assert all("no sweep run" in f for f in tracker.writer.failures[1:])
    assert not tracking._ACTIVE
