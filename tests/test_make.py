"""The Makefile's command lines, as `make -n` prints them (nothing is run)."""

import os
import shlex
import subprocess

import pytest

from tests.helpers import REPO


def _submit_uri(env: dict, *assignments: str) -> str:
    out = subprocess.run(["make", "-n", "-o", ".venv/.installed", "submit", *assignments], cwd=REPO, env=env,
                         capture_output=True, text=True, check=True).stdout
    words = shlex.split(out.replace("\\\n", " "))
    return words[words.index("--tracking-uri") + 1]


@pytest.fixture
def env():
    return {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "HOST", "PORT")}


def test_submit_defaults_to_the_local_mlflow_server(env):
    assert _submit_uri(env) == "http://127.0.0.1:5000"


def test_submit_uses_mlflow_tracking_uri_when_set(env):
    assert _submit_uri(env | {"MLFLOW_TRACKING_URI": "http://mlflow.internal:8080"}) == "http://mlflow.internal:8080"


def test_an_explicit_host_or_port_wins(env):
    env = env | {"MLFLOW_TRACKING_URI": "http://mlflow.internal:8080"}
    assert _submit_uri(env, "PORT=5009") == "http://127.0.0.1:5009"
    assert _submit_uri(env, "HOST=127.0.0.2") == "http://127.0.0.2:5000"
