"""The MLflow UI in a real browser: headless Chromium finds a finished sweep's trial runs.

`.ci/run` installs Debian's chromium; the screenshot is kept in .ci-artifacts/.
"""

import re
import shutil
import subprocess

import pytest

from tests.helpers import REPO, free_port, start_mlflow_server, stop
from vgtune.driver import spec as spec_mod
from vgtune.driver.runner import SweepOptions, run_sweep
from vgtune.tracking.logger import view_url

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
    trials = client.search_runs([exp.experiment_id], "tags.`vgtune.role` = 'trial'")
    (sweep_run,) = client.search_runs([exp.experiment_id], "tags.`vgtune.role` = 'sweep'")
    assert len(trials) == 2
    port = free_port()
    server = start_mlflow_server(tmp_path / "mlflow.db", tmp_path / "artifacts", port)
    base = f"http://127.0.0.1:{port}/#/experiments/{exp.experiment_id}"
    shots = REPO / ".ci-artifacts"
    shots.mkdir(exist_ok=True)
    view = view_url(f"http://127.0.0.1:{port}", exp.experiment_id)  # the link `vgtune sweep` prints
    try:
        page = _chromium(tmp_path, f"{base}/runs", "--dump-dom").stdout
        landed = _chromium(tmp_path, view, "--dump-dom").stdout
        _chromium(tmp_path, view, f"--screenshot={shots / 'mlflow_ui.png'}")
        run_pages = [_chromium(tmp_path, f"{base}/runs/{r.info.run_id}", "--dump-dom").stdout for r in trials]
    finally:
        stop(server)
    # The experiment page lists the sweep's parent run with its two trials folded under it...
    assert sweep_run.info.run_name in page and re.search(r">3<.{0,80}matching runs", page)
    # The experiment is a model-training one, and the printed link lands on the runs table with
    # vgtune's columns, not on the GenAI layout (traces, evaluation runs).
    assert client.get_experiment(exp.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
    assert "Evaluation runs" not in landed and "A vgtune sweep: one parent run" in landed
    for column in ("depth", "test_acc", "grad_attenuation_final"):  # (tag columns lie past the fold)
        assert re.search(rf"role=\"columnheader\"[^>]*>(?:(?!role=\"columnheader\").)*{column}", landed, re.S), column
    # ...and each trial's page opens from there with its name.
    for run, dom in zip(trials, run_pages):
        assert run.info.run_name in dom, f"trial run {run.info.run_name} page did not render"
    assert (shots / "mlflow_ui.png").stat().st_size > 10_000
