"""Real faults with real processes and signals: crashes, interruptions, a restarted server.

Each sweep runs as a `vgtune` subprocess with its own local Ray, so this module
starts no Ray itself and can find (and kill) the trial workers by their titles.
"""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from tests.helpers import free_port, start_mlflow_server, stop, sweep_command, trial_runs

SPEC = """
name: {name}
parameters:
  depth: [6, 8]
  norm: [none, batch]
fixed: {{width: 16, epochs: {epochs}, init: kaiming_normal, lr: 0.02}}
stop: {{gradient_collapse: false}}
max_failures: 2
"""


def _write(tmp_path, name, epochs=6):
    path = tmp_path / f"{name}.yaml"
    path.write_text(textwrap.dedent(SPEC.format(name=name, epochs=epochs)))
    return path


def _cmd(tmp_path, spec, uri, *extra):
    return sweep_command(tmp_path, spec, *extra, uri=uri)


def _wait_for(predicate, timeout=180, every=0.3):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if predicate():
                return True
        except Exception:  # the store may not exist yet
            pass
        time.sleep(every)
    return False


def _complete_histories(client, runs, epochs):
    for r in runs:
        steps = [m.step for m in client.get_metric_history(r.info.run_id, "val_acc")]
        assert steps == list(range(1, epochs + 1)), (r.info.run_name, steps)


def _trial_workers():
    out = subprocess.run(["pgrep", "-f", "ray::ImplicitFunc"], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def test_killed_worker_resumes_from_its_checkpoint(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    spec = _write(tmp_path, "crash", epochs=8)
    proc = subprocess.Popen(_cmd(tmp_path, spec, uri, "--num-cpus", "1", "--no-report"), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)

    def mid_training():
        _, runs = trial_runs(uri, "crash")
        return any(r.info.status == "RUNNING" and 2 <= int(r.data.tags.get("vgtune.epoch", 0)) <= 5 for r in runs)

    assert _wait_for(mid_training), "no trial reached mid-training"
    victims = _trial_workers()
    assert victims
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    out, _ = proc.communicate(timeout=400)
    assert proc.returncode == 0, out[-3000:]
    client, runs = trial_runs(uri, "crash")
    assert len(runs) == 4 and all(r.data.tags["status"] == "completed" for r in runs)
    assert sum(int(r.data.tags.get("vgtune.failures", 0)) for r in runs) >= 1
    _complete_histories(client, runs, 8)  # no gaps, no duplicated steps


def test_sigterm_saves_state_and_resume_matches_an_uninterrupted_run(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    spec = _write(tmp_path, "term", epochs=4)
    proc = subprocess.Popen(_cmd(tmp_path, spec, uri, "--num-cpus", "1"), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    assert _wait_for(lambda: sum(r.info.status == "FINISHED" for r in trial_runs(uri, "term")[1]) >= 1)
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=120)[0].decode()
    assert proc.returncode == 143, out[-3000:]
    assert "interrupted" in out and "--resume" in out
    _, before = trial_runs(uri, "term")
    finished = {r.data.tags["vgtune.trial_id"]: r.info.run_id for r in before if r.info.status == "FINISHED"}
    assert 1 <= len(finished) < 4
    resumed = subprocess.run(_cmd(tmp_path, spec, uri, "--num-cpus", "1", "--resume"), capture_output=True,
                             text=True, timeout=400)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    client, runs = trial_runs(uri, "term")
    assert len(runs) == 4 and len({r.data.tags["vgtune.trial_id"] for r in runs}) == 4
    assert all(finished[t] == r.info.run_id for r in runs if (t := r.data.tags["vgtune.trial_id"]) in finished)
    _complete_histories(client, runs, 4)

    other = tmp_path / "straight"
    other.mkdir()
    straight = subprocess.run(_cmd(other, spec, f"sqlite:///{other}/mlflow.db", "--num-cpus", "1"),
                              capture_output=True, text=True, timeout=400)
    assert straight.returncode == 0
    cols = ["depth", "norm", "status", "diagnosis", "test_acc", "val_acc", "train_loss", "grad_attenuation_init",
            "grad_attenuation_final", "epochs_run"]
    a = pd.read_csv(tmp_path / "reports" / "term" / "trials.csv")[cols]
    b = pd.read_csv(other / "reports" / "term" / "trials.csv")[cols]
    pd.testing.assert_frame_equal(a, b)
    for name in ("mitigations.csv", "ranking.csv"):
        pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "reports" / "term" / name),
                                      pd.read_csv(other / "reports" / "term" / name))


def test_mlflow_server_restarted_mid_sweep_loses_nothing(tmp_path):
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server = start_mlflow_server(tmp_path / "mlflow.db", tmp_path / "artifacts", port)
    spec = _write(tmp_path, "restart", epochs=6)
    proc = subprocess.Popen(_cmd(tmp_path, spec, uri), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert _wait_for(lambda: len(trial_runs(uri, "restart")[1]) >= 1)
        stop(server)
        time.sleep(4)
        server = start_mlflow_server(tmp_path / "mlflow.db", tmp_path / "artifacts", port)
        out, _ = proc.communicate(timeout=400)
        assert proc.returncode == 0, out[-3000:]
        client, runs = trial_runs(uri, "restart")
        assert len(runs) == 4 and all(r.data.tags["status"] == "completed" for r in runs)
        _complete_histories(client, runs, 6)
        for r in runs:
            assert "gradient_flow.svg" in [a.path for a in client.list_artifacts(r.info.run_id)]
        # The report at the end of the sweep read the runs back through the server.
        assert len(pd.read_csv(tmp_path / "reports" / "restart" / "trials.csv")) == 4
    finally:
        if proc.poll() is None:
            proc.kill()
        stop(server)


def test_two_sweeps_and_a_report_share_one_sqlite_store(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    first = subprocess.Popen(_cmd(tmp_path, _write(tmp_path, "one", epochs=3), uri, "--num-cpus", "1"),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert _wait_for(lambda: MlflowClient(uri).get_experiment_by_name("one") is not None)
    second = subprocess.Popen(_cmd(tmp_path, _write(tmp_path, "two", epochs=3), uri, "--num-cpus", "1"),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    reads = 0
    while first.poll() is None or second.poll() is None:  # report while both write
        r = subprocess.run([sys.executable, "-m", "vgtune.cli", "report", "one", "--tracking-uri", uri, "--out",
                            str(tmp_path / "live")], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0 and "locked" not in r.stderr, r.stderr[-2000:]
        reads += 1
    outs = [p.communicate()[0] for p in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, outs
    assert not any("database is locked" in o for o in outs)
    assert reads >= 1
    for name in ("one", "two"):
        client, runs = trial_runs(uri, name)
        assert len(runs) == 4 and all(r.data.tags["status"] == "completed" for r in runs)
        _complete_histories(client, runs, 3)


@pytest.fixture(autouse=True)
def _no_leftover_workers():
    yield
    assert _wait_for(lambda: not _trial_workers(), timeout=30), "trial workers left behind"
