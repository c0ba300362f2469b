"""Shared fixtures, and the test tiers.

`make test` runs every test; `make test-fast` runs the unit tier, `-m "not integration"`:
in-process tests that start no Ray, no child process, no MLflow store and no server.
The `integration` mark is set here, by one rule, and nowhere else: a test is
integration when it uses a fixture that starts something (INTEGRATION_FIXTURES: Ray,
a child Python, a fresh MLflow SQLite store) or sits in a module whose every test
drives a sweep, an MLflow store or writer process, a Ray cluster or a browser
(INTEGRATION_MODULES).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
# numpy's BLAS threads spin while they wait: on a shared 2-core machine one eigvals call took 11 s with them, 0.7 s
# without. Set before numpy is imported; Ray's workers run one OpenMP thread anyway.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

INTEGRATION_FIXTURES = {"ray_cluster", "python", "mlflow_uri"}
INTEGRATION_MODULES = {"test_cluster", "test_faults", "test_report", "test_resume", "test_tracking", "test_ui"}


def _integration_module(path: Path) -> bool:
    return path.stem in INTEGRATION_MODULES


def pytest_ignore_collect(collection_path: Path, config) -> bool | None:
    """With -m "not integration", do not even import the integration modules (Ray, MLflow, servers)."""
    if config.getoption("markexpr", "").replace(" ", "") == "notintegration" and _integration_module(
            collection_path):
        return True
    return None


def pytest_collection_modifyitems(config, items):
    for item in items:
        if _integration_module(item.path) or INTEGRATION_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="module")
def ray_cluster():
    """One local Ray instance per test module (as Ray Tune's own tests do)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture
def mlflow_uri(tmp_path) -> str:
    """A fresh MLflow SQLite store under tmp_path (created on first use, as vgtune creates one)."""
    return f"sqlite:///{tmp_path}/mlflow.db"


class Python:
    """`python ARGS...` in a child process: the CLI as a user runs it, a user's script, a fresh interpreter."""

    def run(self, *args, timeout: float = 400, **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                              **kwargs)

    def popen(self, *args, **kwargs) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, *map(str, args)], **kwargs)


@pytest.fixture
def python() -> Python:
    return Python()
