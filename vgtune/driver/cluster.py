"""A real two-node Ray cluster on this machine, and `ray job submit` of a sweep to it.

    python -m vgtune.driver.cluster up [--port 6379] [--dashboard-port 8265] [--cpus-per-node 1]
    python -m vgtune.driver.cluster submit SPEC [--tracking-uri http://127.0.0.1:5000] [--storage DIR] [-- ARGS]
    python -m vgtune.driver.cluster down

`up` starts a head node and a second worker node with `ray start`, each in a
temp dir of its own, with Ray's token authentication on and a fresh token in
`.cluster/auth_token` (every command here passes it through
RAY_AUTH_TOKEN_PATH). Each `ray start` runs in a session of its own, which
every daemon and worker of that node inherits; `down` stops exactly the
processes of those sessions, whatever they renamed themselves to (never `ray
stop`, which stops every Ray of the user).

Only the dashboard and job API are bound to 127.0.0.1. Ray (2.60) rewrites a
`--node-ip-address` of 127.0.0.1 to the machine's routable address, and binds a
node's servers to loopback only when its address is 127.0.0.1, which `ray
start` allows only where it refuses a second node
(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0). So the GCS (*:PORT), raylets, workers
and dashboard agents listen on all interfaces and the Ray client server (10001)
on this machine's address, all refusing calls without the token; the
Prometheus metrics ports (dashboard 44227, agents) listen on 0.0.0.0 and serve
metrics to anyone. Keep this machine's ports firewalled.

The cluster is driven through Ray's CLI in subprocesses, not `ray.util.state` /
`JobSubmissionClient` in this process: the token settings then stay out of the
caller's environment (a test process that also runs a local Ray, say).
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
from dataclasses import asdict, dataclass, field
from pathlib import Path

STATE = Path(".cluster/state.json")


@dataclass
class ClusterConfig:
    host: str = "127.0.0.1"  # the dashboard and job API bind here; the address the nodes are given and joined at
    port: int = 6379  # GCS port of the head node
    dashboard_port: int = 8265  # dashboard and job API
    cpus_per_node: int = 1  # logical CPUs each node offers
    temp_dir: str = ""  # Ray's temp dir for this cluster (default /tmp/vgtune-ray-PORT)
    token_path: str = ""  # auth token shared by the nodes, the job API and its clients
    sessions: list[int] = field(default_factory=list)  # session ids of the nodes' `ray start` (set by `up`)

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


def _run(cmd: list[str], cfg: ClusterConfig, timeout: float = 120) -> int:
    """Run `cmd` in a session of its own; returns that session's id (= the pid `cmd` started with).

    `ray start` leaves its daemons in this session, however they rename themselves later.
    """
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment(cfg),
                            start_new_session=True)
    out, err = proc.communicate(timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} failed:\n{out[-2000:]}\n{err[-2000:]}")
    return proc.pid


def up(cfg: ClusterConfig, state: Path = STATE) -> ClusterConfig:
    """Start head + one worker node; write their settings to `state`."""
    cfg.temp_dir = cfg.temp_dir or f"/tmp/vgtune-ray-{cfg.port}"
    state.parent.mkdir(parents=True, exist_ok=True)
    token = Path(cfg.token_path or state.parent / "auth_token").resolve()
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    cfg.token_path = str(token)
    common = ["--node-ip-address", cfg.host, "--num-cpus", str(cfg.cpus_per_node), "--disable-usage-stats"]
    nodes = [[_ray(), "start", "--head", "--port", str(cfg.port), "--dashboard-host", cfg.host,
              "--dashboard-port", str(cfg.dashboard_port), "--include-dashboard", "true",
              "--temp-dir", f"{cfg.temp_dir}/head", *common],
             # Its own temp dir: nodes sharing one would share (and garbage-collect) runtime-env files.
             [_ray(), "start", "--address", cfg.address, "--temp-dir", f"{cfg.temp_dir}/worker", *common]]
    for cmd in nodes:
        try:
            cfg.sessions.append(_run(cmd, cfg))
        finally:  # recorded as it goes: a node that failed half-way is still stopped by `down`
            state.write_text(json.dumps(asdict(cfg)))
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


def _session(pid: int) -> int | None:
    """The session id of a live, non-zombie process (None if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] == "Z" else int(fields[3])


def cluster_pids(cfg: ClusterConfig) -> list[int]:
    """Live processes of this cluster: every process in the sessions its `ray start`s opened."""
    sessions = set(cfg.sessions)
    me = os.getpid()
    return [int(p.name) for p in Path("/proc").iterdir()
            if p.name.isdigit() and int(p.name) != me and _session(int(p.name)) in sessions]


def down(state: Path = STATE, timeout: float = 10) -> int:
    """Stop exactly this cluster's processes (SIGTERM, then SIGKILL); returns how many there were."""
    cfg = load(state)
    seen: set[int] = set()
    for sig in (signal.SIGTERM, signal.SIGKILL):
        deadline = time.time() + timeout
        while (pids := cluster_pids(cfg)) and time.time() < deadline:
            for pid in set(pids) - seen if sig == signal.SIGTERM else pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            seen |= set(pids)
            time.sleep(0.2)
    left = cluster_pids(cfg)
    if left:
        raise RuntimeError(f"cluster processes {left} survived SIGKILL")
    state.unlink(missing_ok=True)
    return len(seen)


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
    parser = argparse.ArgumentParser(prog="python -m vgtune.driver.cluster", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up")
    p_up.add_argument("--port", type=int, default=6379)
    p_up.add_argument("--dashboard-port", type=int, default=8265)
    p_up.add_argument("--cpus-per-node", type=int, default=1)
    sub.add_parser("down")
    p_sub = sub.add_parser("submit")
    p_sub.add_argument("spec")
    p_sub.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI") or "http://127.0.0.1:5000",
                       help="MLflow server the sweep logs to (default: $MLFLOW_TRACKING_URI or http://127.0.0.1:5000)")
    p_sub.add_argument("--storage", default=str(Path("runs").resolve()),
                       help="a path every node can reach (default: ./runs, fine for this machine)")
    p_sub.add_argument("extra", nargs="*", help="more `vgtune sweep` options, after --")
    args = parser.parse_args(argv)
    if args.command == "up":
        cfg = up(ClusterConfig(port=args.port, dashboard_port=args.dashboard_port,
                               cpus_per_node=args.cpus_per_node))
        print(f"Ray cluster up: 2 nodes at {cfg.address}, dashboard and job API at {cfg.dashboard} "
              f"(token authentication, token in {cfg.token_path}).\n"
              f"Only the dashboard and job API are bound to {cfg.host}: the GCS (*:{cfg.port}), raylets, workers and "
              "dashboard agents listen on all interfaces and the Ray client server (:10001) on this machine's address, "
              "token-protected (the GCS and the agents refuse calls without it); "
              "Ray's metrics ports (0.0.0.0) serve metrics to anyone. "
              "Keep this machine's ports firewalled.")
        return 0
    if args.command == "down":
        print(f"stopped {down()} processes of the cluster")
        return 0
    cfg = load()
    return subprocess.call(submit_command(cfg, args.spec, args.tracking_uri, args.storage, args.extra),
                           env=environment(cfg))


if __name__ == "__main__":
    sys.exit(main())
