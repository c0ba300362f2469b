"""The MLflow UI in a real browser: headless Chromium finds a finished sweep's trial runs.

`.ci/run` installs Debian's chromium; the screenshot is kept in .ci-artifacts/.
"""

import shutil
import subprocess

import pytest

from tests.helpers import REPO, free_port, start_mlflow_server, stop
from vgtune import spec as spec_mod
from vgtune.sweep import SweepOptions, run_sweep

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (.ci/run installs it)"),
              pytest.mark.usefixtures("ray_cluster")]
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1500,1000", "--virtual-time-budget=30000"]


def _chromium(tmp_path, url, *args):
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args, url],
                          capture_output=True, text=True, timeout=120)


def test_mlflow_ui_shows_the_trial_runs(tmp_path):
    spec = spec_mod.parse({"name": "ui", "parameters": {"depth": [2, 3]},
                           "fixed": {"width": 4, "epochs": 1, "init": "kaiming_normal"}})
    outcome = run_sweep(spec, SweepOptions(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db",
                                           storage=str(tmp_path / "runs"), out=str(tmp_path / "reports"),
                                           verbose=0))
    from mlflow.tracking import MlflowClient

    client = MlflowClient(outcome.tracking_uri)
    exp = client.get_experiment_by_name("ui")
    names = [r.info.run_name for r in client.search_runs([exp.experiment_id], "tags.`vgtune.role` = 'trial'")]
    assert len(names) == 2
    port = free_port()
    server = start_mlflow_server(tmp_path / "mlflow.db", tmp_path / "artifacts", port)
    try:
        url = f"http://127.0.0.1:{port}/#/experiments/{exp.experiment_id}?isComparingRuns=false&expandRows=true"
        dom = _chromium(tmp_path, url, "--dump-dom").stdout
        shots = REPO / ".ci-artifacts"
        shots.mkdir(exist_ok=True)
        _chromium(tmp_path, url, f"--screenshot={shots / 'mlflow_ui.png'}")
    finally:
        stop(server)
    for name in names:
        assert name in dom, f"trial run {name} not on the experiment page"
    assert (shots / "mlflow_ui.png").stat().st_size > 10_000
