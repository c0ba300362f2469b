"""Shared by the tests: a sweep's options and command under tmp_path, its trial runs, real services on 127.0.0.1."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f}s")


def start_mlflow_server(db: Path, artifacts: Path, port: int) -> subprocess.Popen:
    """`mlflow server` on 127.0.0.1:port with a SQLite store and artifact serving."""
    proc = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{db}", "--serve-artifacts",
         "--artifacts-destination", str(artifacts), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/health", timeout=90)
    except TimeoutError:
        stop(proc)
        raise
    return proc


def stop(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    """Stop a process and its whole session (mlflow server forks workers)."""
    import os
    import signal

    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=timeout)
    except (subprocess.TimeoutExpired, ProcessLookupError):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=timeout)


def sqlite_uri(folder: Path) -> str:
    """The MLflow SQLite store a test keeps in `folder`."""
    return f"sqlite:///{folder}/mlflow.db"


def sweep_args(tmp_path: Path, uri: str | None = None) -> list[str]:
    """`vgtune sweep` options that keep the store (default: `sqlite_uri(tmp_path)`), the Tune results and the
    reports under tmp_path, and print nothing."""
    return ["--tracking-uri", uri or sqlite_uri(tmp_path), "--storage", str(tmp_path / "runs"), "--out",
            str(tmp_path / "reports"), "-v", "0"]


def sweep_command(tmp_path: Path, spec: Path, *extra: str, uri: str | None = None) -> list[str]:
    """`vgtune sweep SPEC` as a child process, with `sweep_args`."""
    return [sys.executable, "-m", "vgtune.cli", "sweep", str(spec), *sweep_args(tmp_path, uri), *extra]


def sweep_options(tmp_path: Path, **kw):
    """`run_sweep`'s options with `sweep_args`' folders and store."""
    from vgtune.driver.runner import SweepOptions

    return SweepOptions(tracking_uri=sqlite_uri(tmp_path), storage=str(tmp_path / "runs"),
                        out=str(tmp_path / "reports"), verbose=0, **kw)


def trial_runs(uri: str, experiment: str):
    """An MLflow client of `uri` and the trial runs of `experiment` (none while it does not exist yet)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    return client, ([] if exp is None else client.search_runs([exp.experiment_id], "tags.`vgtune.role` = 'trial'"))


def untimed(rows: list[dict]) -> list[dict]:
    """History rows without their wall-clock columns (`*_seconds`), to compare two runs value for value."""
    return [{k: v for k, v in row.items() if not k.endswith("_seconds")} for row in rows]
