"""A real 2-node Ray cluster and a real MLflow server on loopback; a sweep through the job API."""

import json
import os
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import REPO, free_port, start_mlflow_server, stop
from vgtune.driver.cluster import ClusterConfig, cluster_pids, down, environment, submit_command, up

SPEC = """
name: clustered
parameters:
  depth: [2, 4]
  activation: [relu, tanh]
fixed: {width: 4, epochs: 2, init: kaiming_normal}
"""


def _api(uri, path, body=None):
    req = urllib.request.Request(f"{uri}/api/2.0/mlflow/{path}", data=json.dumps(body).encode() if body else None,
                                 headers={"Content-Type": "application/json"}, method="POST" if body else "GET")
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cluster")
    state = tmp / "state.json"
    cfg = ClusterConfig(port=free_port(), dashboard_port=free_port(), temp_dir=f"/tmp/vgt-{free_port()}",
                        token_path=str(tmp / "auth_token"))
    mlflow_port = free_port()
    server = start_mlflow_server(tmp / "mlflow.db", tmp / "artifacts", mlflow_port)
    bystander = subprocess.Popen(["sleep", "600"], start_new_session=True)  # not the cluster's: must survive
    members: set[int] = set()
    try:
        up(cfg, state)
        yield cfg, f"http://127.0.0.1:{mlflow_port}", tmp
        members = set(cluster_pids(cfg)) | set(_naming(cfg.temp_dir))  # after the jobs: every daemon and worker
        assert len(members) >= 10, members
    finally:
        if state.exists():
            down(state)
        stop(server)
    alive = [p for p in members if _alive(p)]
    assert alive == [] and cluster_pids(cfg) == [] and _naming(cfg.temp_dir) == [], "cluster processes left behind"
    assert bystander.poll() is None, "down() killed a process that was not the cluster's"
    bystander.kill()
    bystander.wait()


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _naming(temp_dir: str) -> list[int]:
    """Processes whose command line names the cluster's temp dir (how they start, before renaming)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and temp_dir in (proc / "cmdline").read_bytes().decode(errors="replace"):
                pids.append(int(proc.name))
        except OSError:
            continue
    return [p for p in pids if p != os.getpid() and _alive(p)]


def _submit(services, spec: str, experiment: str, storage: Path, extra: tuple = ()) -> list[dict]:
    """`make submit`'s command for `spec` from the repository; the trial runs it left in the server."""
    cfg, uri, _ = services
    cmd = submit_command(cfg, spec, uri, str(storage), ["--no-report", "-v", "0", *extra], working_dir=str(REPO))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=400, cwd=REPO, env=environment(cfg))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    exp = _api(uri, f"experiments/get-by-name?experiment_name={experiment}")["experiment"]
    return _api(uri, "runs/search", {"experiment_ids": [exp["experiment_id"]],
                                     "filter": "tags.`vgtune.role` = 'trial'", "max_results": 100})["runs"]


def test_sweep_through_the_job_api_lands_in_the_mlflow_server(services):
    _, uri, tmp = services
    (tmp / "spec.yaml").write_text(textwrap.dedent(SPEC))
    runs = _submit(services, str(tmp / "spec.yaml"), "clustered", tmp / "runs")
    assert len(runs) == 4
    nodes = set()
    for run in runs:
        tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
        metrics = {m["key"] for m in run["data"].get("metrics", [])}
        assert run["info"]["status"] == "FINISHED" and tags["status"] == "completed"
        assert {"val_acc", "test_acc", "grad_attenuation_init", "block01/grad_norm"} <= metrics
        files = _api(uri, f"artifacts/list?run_id={run['info']['run_id']}").get("files", [])
        assert "gradient_flow.svg" in [f["path"] for f in files]
        nodes.add(tags["vgtune.node"])
    assert len(nodes) == 2, f"trials ran on {nodes}"


def test_a_user_model_spec_submits_unchanged_its_modules_ship_with_the_job(services):
    """examples/mynet.yaml imports mynet/mydata from its own folder, which is not on a worker's path in the
    job's working dir: the trials on both nodes can only import them because the driver ships them."""
    _, _, tmp = services
    # Six trials of a few seconds: long enough that the worker node's actor (slower to start: it fetches the
    # job's packages) gets trials too.
    overrides = ["--set", "parameters.depth=[2,3,4]", "--set", "parameters.activation=[relu]", "--set",
                 "variants=[{}, {norm: batch}]", "--set", "repeats=1", "--set", "fixed.epochs=3"]
    runs = _submit(services, "examples/mynet.yaml", "mynet", tmp / "runs-mynet", overrides)
    assert len(runs) == 6
    nodes = set()
    for run in runs:
        tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
        params = {p["key"]: p["value"] for p in run["data"]["params"]}
        assert tags["status"] == "completed" and params["model"] == "mynet:build"
        assert params["dataset"] == "mydata:load"
        nodes.add(tags["vgtune.node"])
    assert len(nodes) == 2, f"trials ran on {nodes}"


def test_unreachable_cluster_fails_fast_naming_the_address(tmp_path):
    (tmp_path / "spec.yaml").write_text(textwrap.dedent(SPEC))
    port = free_port()
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "vgtune.cli", "sweep", str(tmp_path / "spec.yaml"), "--address",
                           f"127.0.0.1:{port}", "--tracking-uri", f"sqlite:///{tmp_path}/m.db",
                           "--storage", str(tmp_path / "runs")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and time.time() - t0 < 10 + 5  # + interpreter start-up
    assert f"Ray cluster at 127.0.0.1:{port} is not reachable" in proc.stderr
    assert not (tmp_path / "m.db").exists()


def test_unreachable_mlflow_server_fails_fast_naming_the_address(tmp_path):
    (tmp_path / "spec.yaml").write_text(textwrap.dedent(SPEC))
    uri = f"http://127.0.0.1:{free_port()}"
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "vgtune.cli", "sweep", str(tmp_path / "spec.yaml"),
                           "--tracking-uri", uri, "--storage", str(tmp_path / "runs")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and time.time() - t0 < 10 + 5
    assert f"MLflow tracking server {uri} is not reachable" in proc.stderr
