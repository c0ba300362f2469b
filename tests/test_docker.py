"""Container images and manifests, checked statically (no Docker engine here)."""

import re
import shlex
from pathlib import Path

import pytest
import yaml

from vgtune.cli import build_parser

DOCKER = Path(__file__).resolve().parent.parent / "docker"


def _flag(command: str, name: str) -> str:
    args = shlex.split(command)
    return args[args.index(name) + 1]


def _vgtune_args(command: str) -> list[str]:
    args = shlex.split(command)
    return args[args.index("vgtune") + 1:]


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load((DOCKER / "docker-compose.yml").read_text())


def test_compose_services_and_ports_agree(compose):
    services = compose["services"]
    assert {"ray-head", "ray-worker", "mlflow"} <= set(services)
    head, worker, mlflow = services["ray-head"], services["ray-worker"], services["mlflow"]
    gcs_port = _flag(head["command"], "--port")
    assert _flag(worker["command"], "--address") == f"ray-head:{gcs_port}"
    dashboard = _flag(head["command"], "--dashboard-port")
    assert f"127.0.0.1:{dashboard}:{dashboard}" in head["ports"]
    mlflow_port = _flag(mlflow["command"], "--port")
    assert f"127.0.0.1:{mlflow_port}:{mlflow_port}" in mlflow["ports"]
    assert head["environment"]["MLFLOW_TRACKING_URI"] == f"http://mlflow:{mlflow_port}"
    assert worker["deploy"]["replicas"] >= 1  # scalable with --scale ray-worker=N
    assert "mlflow" in compose["volumes"] and any(v.startswith("mlflow:") for v in mlflow["volumes"])


def test_published_ports_are_loopback_only(compose):
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"


def test_commands_exist(compose):
    assert compose["services"]["ray-head"]["command"].startswith("ray start --head")
    assert compose["services"]["mlflow"]["command"].startswith("mlflow server")
    rayjob = yaml.safe_load((DOCKER / "rayjob.yaml").read_text())
    args = build_parser().parse_args(_vgtune_args(rayjob["spec"]["entrypoint"]))
    assert args.command == "sweep" and (DOCKER.parent / args.spec).is_file()
    usage = compose["x-vgtune"]
    assert usage["build"]["dockerfile"] == "docker/Dockerfile"


def test_dockerfile_builds_from_project_files():
    text = (DOCKER / "Dockerfile").read_text()
    for src in re.findall(r"^COPY (\S+(?: \S+)*) \S+$", text, flags=re.M):
        for path in src.split():
            assert (DOCKER.parent / path).exists(), f"COPY {path}: not in the project"
    assert "ARG VARIANT=cpu" in text and "FROM base-${VARIANT}" in text
    assert "AS base-cpu" in text and "AS base-cuda" in text


def test_cluster_launcher_and_rayjob_are_consistent():
    launcher = yaml.safe_load((DOCKER / "cluster.yaml").read_text())
    assert launcher["head_node_type"] in launcher["available_node_types"]
    head_cmd = next(c for c in launcher["head_start_ray_commands"] if "--head" in c)
    port = re.search(r"--port=(\d+)", head_cmd).group(1)
    assert any(f":{port}" in c for c in launcher["worker_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_cmd
    rayjob = yaml.safe_load((DOCKER / "rayjob.yaml").read_text())
    assert rayjob["kind"] == "RayJob" and rayjob["apiVersion"] == "ray.io/v1"
    ports = {p["name"]: p["containerPort"] for p in
             rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["ports"]}
    assert ports["gcs"] == 6379 and ports["dashboard"] == 8265
