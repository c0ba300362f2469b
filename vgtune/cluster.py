"""A real two-node Ray cluster on this machine, and `ray job submit` of a sweep to it.

    python -m vgtune.cluster up [--port 6379] [--dashboard-port 8265] [--cpus-per-node 1]
    python -m vgtune.cluster submit SPEC [--tracking-uri http://127.0.0.1:5000] [--storage DIR] [-- ARGS]
    python -m vgtune.cluster down

`up` starts a head node and a second worker node with `ray start`, both on
127.0.0.1, in a temp dir of their own, with Ray's token authentication on and
a fresh token in `.cluster/auth_token` (every command here passes it through
RAY_AUTH_TOKEN_PATH); `down` stops exactly the processes that run under that
temp dir (never `ray stop`, which stops every Ray of the user). Without a token,
Ray's job API has no authentication: keep the dashboard on loopback.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

STATE = Path(".cluster/state.json")


@dataclass
class ClusterConfig:
    host: str = "127.0.0.1"  # every node and the dashboard bind here
    port: int = 6379  # GCS port of the head node
    dashboard_port: int = 8265  # dashboard and job API
    cpus_per_node: int = 1  # logical CPUs each node offers
    temp_dir: str = ""  # Ray's temp dir for this cluster (default /tmp/vgtune-ray-PORT)
    token_path: str = ""  # auth token shared by the nodes, the job API and its clients

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def dashboard(self) -> str:
        return f"http://{self.host}:{self.dashboard_port}"


def _ray() -> str:
    return str(Path(sys.executable).with_name("ray"))


def environment(cfg: ClusterConfig) -> dict[str, str]:
    """The environment every command talking to this cluster runs with."""
    return {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": cfg.token_path,
            "RAY_USAGE_STATS_ENABLED": "0"}


def _run(cmd: list[str], cfg: ClusterConfig, timeout: float = 120) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=environment(cfg))
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")


def up(cfg: ClusterConfig, state: Path = STATE) -> ClusterConfig:
    """Start head + one worker node; write their settings to `state`."""
    cfg.temp_dir = cfg.temp_dir or f"/tmp/vgtune-ray-{cfg.port}"
    state.parent.mkdir(parents=True, exist_ok=True)
    token = Path(cfg.token_path or state.parent / "auth_token").resolve()
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    cfg.token_path = str(token)
    state.write_text(json.dumps(asdict(cfg)))
    common = ["--node-ip-address", cfg.host, "--num-cpus", str(cfg.cpus_per_node), "--disable-usage-stats"]
    _run([_ray(), "start", "--head", "--port", str(cfg.port), "--dashboard-host", cfg.host,
          "--dashboard-port", str(cfg.dashboard_port), "--include-dashboard", "true",
          "--temp-dir", f"{cfg.temp_dir}/head", *common], cfg)
    # Its own temp dir: nodes sharing one would share (and garbage-collect) runtime-env files.
    _run([_ray(), "start", "--address", cfg.address, "--temp-dir", f"{cfg.temp_dir}/worker", *common], cfg)
    _wait_for_nodes(cfg, 2)
    _wait_for_job_api(cfg)
    return cfg


def _wait_for_job_api(cfg: ClusterConfig, timeout: float = 90) -> None:
    """The job agent comes up after the nodes: wait until a trivial job is accepted and done."""
    deadline = time.time() + timeout
    last = ""
    while time.time() < deadline:
        proc = subprocess.run([_ray(), "job", "submit", "--address", cfg.dashboard, "--", "true"],
                              capture_output=True, text=True, timeout=60, env=environment(cfg))
        if proc.returncode == 0:
            return
        last = (proc.stdout + proc.stderr).strip().rpartition("\n")[2]
        time.sleep(1)
    raise RuntimeError(f"the job API at {cfg.dashboard} did not accept a job in {timeout:.0f}s: {last}")


def _wait_for_nodes(cfg: ClusterConfig, count: int, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        proc = subprocess.run([_ray(), "list", "nodes", "--address", cfg.dashboard, "--format", "json"],
                              capture_output=True, text=True, timeout=30, env=environment(cfg))
        if proc.returncode == 0:
            nodes = [n for n in json.loads(proc.stdout or "[]") if n.get("state") == "ALIVE"]
            if len(nodes) >= count:
                return
        time.sleep(1)
    raise RuntimeError(f"the cluster at {cfg.address} did not report {count} live nodes in {timeout:.0f}s")


def load(state: Path = STATE) -> ClusterConfig:
    if not state.is_file():
        raise SystemExit(f"no cluster state at {state}: start one with `make cluster-up`")
    return ClusterConfig(**json.loads(state.read_text()))


def cluster_pids(temp_dir: str) -> list[int]:
    """Processes of this cluster: every Ray process names its temp/session dir on its command line."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if temp_dir in cmdline:
            pids.append(int(proc.name))
    return pids


def down(state: Path = STATE, timeout: float = 10) -> int:
    """Stop exactly this cluster's processes (SIGTERM, then SIGKILL); returns how many there were."""
    cfg = load(state)
    pids = cluster_pids(cfg.temp_dir)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + timeout
        while time.time() < deadline and any(Path(f"/proc/{p}").exists() and not _zombie(p) for p in pids):
            time.sleep(0.2)
    state.unlink(missing_ok=True)
    return len(pids)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


def submit_command(cfg: ClusterConfig, spec: str, tracking_uri: str, storage: str, extra: list[str],
                   working_dir: str = ".") -> list[str]:
    """`ray job submit` running `vgtune sweep` on the cluster; follows the logs, exits with the job.

    The entrypoint uses this interpreter: the local cluster's nodes run from the same environment.
    """
    runtime_env = {"working_dir": working_dir,
                   "excludes": [".venv", ".git", "runs", "reports", "mlruns", "mlartifacts", "*.db", ".cluster",
                                ".bench"]}
    return [_ray(), "job", "submit", "--address", cfg.dashboard, "--runtime-env-json", json.dumps(runtime_env),
            "--", sys.executable, "-m", "vgtune.cli", "sweep", spec, "--address", "auto",
            "--tracking-uri", tracking_uri, "--storage", storage, *extra]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vgtune.cluster", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up")
    p_up.add_argument("--port", type=int, default=6379)
    p_up.add_argument("--dashboard-port", type=int, default=8265)
    p_up.add_argument("--cpus-per-node", type=int, default=1)
    sub.add_parser("down")
    p_sub = sub.add_parser("submit")
    p_sub.add_argument("spec")
    p_sub.add_argument("--tracking-uri", default="http://127.0.0.1:5000")
    p_sub.add_argument("--storage", default=str(Path("runs").resolve()),
                       help="a path every node can reach (default: ./runs, fine for this machine)")
    p_sub.add_argument("extra", nargs="*", help="more `vgtune sweep` options, after --")
    args = parser.parse_args(argv)
    if args.command == "up":
        cfg = up(ClusterConfig(port=args.port, dashboard_port=args.dashboard_port,
                               cpus_per_node=args.cpus_per_node))
        print(f"Ray cluster up: 2 nodes at {cfg.address}, dashboard and job API at {cfg.dashboard} "
              "(no authentication: loopback only)")
        return 0
    if args.command == "down":
        print(f"stopped {down()} processes of the cluster")
        return 0
    cfg = load()
    return subprocess.call(submit_command(cfg, args.spec, args.tracking_uri, args.storage, args.extra),
                           env=environment(cfg))


if __name__ == "__main__":
    sys.exit(main())
