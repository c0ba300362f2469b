"""Interrupt a real sweep (SIGINT to the driver, SIGTERM to its process group), resume it, count the runs.

The sweep runs as a `vgtune` subprocess with its own local Ray, so this module
starts no Ray of its own.
"""

import os
import shlex
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.helpers import sweep_command, trial_runs

SPEC = """
name: resumable
parameters:
  depth: [3, 5]
  activation: [relu, tanh]
  seed: [0, 1]
fixed: {width: 8, epochs: 3, init: kaiming_normal}
stop: {gradient_collapse: false}
pack: PACK
"""


def _trial_runs(uri):
    return trial_runs(uri, "resumable")


def _busy_percent(out):
    """The share of its wall time a sweep's summary says its trial slots spent training and evaluating."""
    (line,) = [ln for ln in out.splitlines() if ln.startswith("sweep ") and "of it training" in ln]
    return int(line.split("at a time, ")[1].split("%")[0])


def _wait_until(proc, uri, ready, timeout=180):
    """Until `ready(trial runs)` holds (or the sweep ended)."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.5)
        try:
            if ready(_trial_runs(uri)[1]):
                return
        except Exception:  # the store is being created
            continue


def _descendants(pid: int) -> list[int]:
    """The processes below `pid`, read from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # it ended meanwhile
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], list(children.get(pid, []))
    while todo:
        found.append(todo.pop())
        todo += children.get(found[-1], [])
    return found


def _alive(pid: int) -> bool:
    """Running, or stopped but not yet reaped (a zombie has ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _sweep(tmp_path, *extra):
    return sweep_command(tmp_path, tmp_path / "spec.yaml", "--num-cpus", "1", "--no-report", *extra)


@pytest.mark.parametrize("pack", ["off", "2"])  # 2: four packs of two, each resumed from its members' checkpoints
def test_interrupted_sweep_resumes_without_duplicates(tmp_path, pack):
    (tmp_path / "spec.yaml").write_text(textwrap.dedent(SPEC).replace("PACK", pack))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    proc = subprocess.Popen(_sweep(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=tmp_path)
    deadline = time.time() + 180
    finished = []
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.5)
        try:
            finished = [r for r in _trial_runs(uri)[1] if r.info.status == "FINISHED"]
        except Exception:  # the store is being created
            continue
        if len(finished) >= 2:
            break
    assert proc.poll() is None, "the sweep ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    out = proc.communicate(timeout=120)[0].decode()
    assert proc.returncode == 130, out[-3000:]
    assert "interrupted" in out and "Tuner.restore" not in out and "still running" not in out
    (line,) = [ln for ln in out.splitlines() if ln.startswith("Continue with: ")]
    resume = shlex.split(line.removeprefix("Continue with: "))
    assert resume[:2] == ["vgtune", "sweep"] and resume[-1] == "--resume"
    _, before = _trial_runs(uri)
    done_before = {r.data.tags["vgtune.trial_id"]: r.info.run_id for r in before if r.info.status == "FINISHED"}
    assert 2 <= len(done_before) < 8

    # The line the interrupted sweep printed, run as printed (`vgtune` is this interpreter's).
    resumed = subprocess.run([sys.executable, "-m", "vgtune.cli", *resume[1:]], capture_output=True, text=True,
                             timeout=300, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    assert 0 < _busy_percent(resumed.stdout) <= 100  # only this run's training counts against its wall time
    client, after = _trial_runs(uri)
    ids = [r.data.tags["vgtune.trial_id"] for r in after]
    assert len(after) == 8 and len(set(ids)) == 8  # every trial once, no duplicate runs
    assert all(r.info.status == "FINISHED" and r.data.tags["status"] == "completed" for r in after)
    for tid, run_id in done_before.items():  # finished trials kept their one run
        assert dict(zip(ids, [r.info.run_id for r in after]))[tid] == run_id
    for r in after:  # one complete history per trial: no gaps, no duplicated steps
        assert [m.step for m in client.get_metric_history(r.info.run_id, "val_acc")] == [1, 2, 3]
    exp = client.get_experiment_by_name("resumable")
    parents = client.search_runs([exp.experiment_id], "tags.`vgtune.role` = 'sweep'")
    assert len(parents) == 2 and {p.data.tags["vgtune.resumed"] for p in parents} == {"true", "false"}


LOOKS = """
name: resumable
parameters:
  depth: [3]
  activation: [relu, tanh]
variants: [{}, {norm: batch}]
nuisance: {lr: [0.02, 0.1]}
repeats: 1
seeds: [2, 4]
extend: 1
family: all
fixed: {width: 8, epochs: 3, init: kaiming_normal}
stop: {gradient_collapse: false}
"""


def _replayed(uri) -> set[tuple[str, str, int]]:
    """The trials the sweep's design proposes when handed the recorded outcomes: what an undisturbed sweep runs."""
    from vgtune.driver import spec as spec_mod
    from vgtune.tracking.reader import load_trials

    design = spec_mod.parse(yaml.safe_load(textwrap.dedent(LOOKS))).design()
    df = load_trials(uri, "resumable")
    outcomes = {(r["arm"], r["nuisance"], int(r["seed"])): r for r in df.to_dict("records")}
    while not design.finished:
        for item in design.propose():
            design.record(item, outcomes[(item["meta"]["arm"], item["meta"]["nuisance"], item["train"]["seed"])])
    return design.proposed


def test_a_sweep_interrupted_in_a_look_resumes_there_and_runs_what_its_design_would(tmp_path):
    """Ctrl-C once confirmation trials finish; --resume runs the rest: every trial once, at the settings chosen
    before the interrupt, exactly the trials the design proposes for the recorded results."""
    (tmp_path / "spec.yaml").write_text(textwrap.dedent(LOOKS))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    proc = subprocess.Popen(_sweep(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=tmp_path)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.5)
        try:
            confirmed = [r for r in _trial_runs(uri)[1]
                         if r.info.status == "FINISHED" and r.data.tags.get("vgtune.stage") == "confirm"]
        except Exception:  # the store is being created
            continue
        if confirmed:
            break
    assert proc.poll() is None, "the sweep ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    out = proc.communicate(timeout=120)[0].decode()
    assert proc.returncode == 130 and "interrupted" in out, out[-3000:]
    _, before = _trial_runs(uri)
    chosen_before = {r.data.tags["vgtune.arm"]: r.data.params["lr"] for r in before
                     if r.data.tags["vgtune.stage"] == "confirm"}
    resumed = subprocess.run(_sweep(tmp_path, "--resume"), capture_output=True, text=True, timeout=300,
                             cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    _, runs = _trial_runs(uri)
    keys = [(r.data.tags["vgtune.arm"], r.data.tags["vgtune.nuisance"], int(r.data.params["seed"])) for r in runs]
    assert len(keys) == len(set(keys)) == len({r.data.tags["vgtune.trial_id"] for r in runs})  # nothing twice
    assert set(keys) == _replayed(uri)  # nothing lost: what the design asks for, given the results
    confirm = [r for r in runs if r.data.tags["vgtune.stage"] == "confirm"]
    per_arm = {}
    for r in confirm:  # every arm confirmed at one setting, the same before and after the interrupt
        per_arm.setdefault(r.data.tags["vgtune.arm"], set()).add(r.data.params["lr"])
    assert len(per_arm) == 4 and all(len(v) == 1 for v in per_arm.values())
    assert all(per_arm[arm] == {lr} for arm, lr in chosen_before.items())
    assert {int(r.data.params["seed"]) for r in confirm} >= {2, 3}
    assert all(r.info.status == "FINISHED" for r in runs)
    client = MlflowClient(uri)
    parents = client.search_runs([runs[0].info.experiment_id], "tags.`vgtune.role` = 'sweep'",
                                 order_by=["start_time ASC"])
    assert [p.info.status for p in parents] == ["KILLED", "FINISHED"]  # one parent run per invocation
    assert [p.data.tags["vgtune.resumed"] for p in parents] == ["false", "true"]


SIGTERM_SPEC = """
name: resumable
parameters:
  depth: [3, 5]
  seed: [0, 1]
fixed: {width: 8, epochs: 3, init: kaiming_normal}
stop: {gradient_collapse: false}
"""


def test_a_sigterm_to_the_process_group_stops_the_sweep_resumably(tmp_path):
    """What `timeout`, `systemctl stop` and Slurm send: SIGTERM to every process of the sweep's process group. The
    local Ray runs in a session of its own, so it outlives the signal: the sweep stops within 10 s, as Ctrl-C
    stops it, prints the line that continues it, and that line finishes every trial."""
    (tmp_path / "spec.yaml").write_text(textwrap.dedent(SIGTERM_SPEC))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    # Its own process group, as `timeout` gives the command it runs.
    proc = subprocess.Popen(_sweep(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=tmp_path,
                            start_new_session=True)
    # Once a trial has logged its first epoch: it is mid-way, with the others still to run.
    _wait_until(proc, uri, lambda runs: any("val_acc" in r.data.metrics for r in runs))
    assert proc.poll() is None, "the sweep ended before it could be interrupted"
    ray_pids = [pid for pid in _descendants(proc.pid) if os.getsid(pid) != proc.pid]  # the head's session
    assert ray_pids, "no process of the sweep runs in a session of its own"
    sent = time.perf_counter()
    os.killpg(proc.pid, signal.SIGTERM)
    out = proc.communicate(timeout=120)[0].decode()
    assert time.perf_counter() - sent < 10, out[-3000:]
    deadline = time.time() + 10  # the driver stopped the Ray it started (and its MLflow writer)
    while time.time() < deadline and any(_alive(pid) for pid in ray_pids):
        time.sleep(0.2)
    assert not any(_alive(pid) for pid in ray_pids)
    assert proc.returncode == 128 + signal.SIGTERM, out[-3000:]
    assert "Failed to connect to GCS" not in out
    (line,) = [ln for ln in out.splitlines() if ln.startswith("Continue with: ")]
    resume = shlex.split(line.removeprefix("Continue with: "))
    resumed = subprocess.run([sys.executable, "-m", "vgtune.cli", *resume[1:]], capture_output=True, text=True,
                             timeout=300, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    client, runs = _trial_runs(uri)
    assert len(runs) == 4 and len({r.data.tags["vgtune.trial_id"] for r in runs}) == 4
    assert all(r.info.status == "FINISHED" and r.data.tags["status"] == "completed" for r in runs)
    for r in runs:  # one complete history per trial: no gaps, no duplicated steps
        assert [m.step for m in client.get_metric_history(r.info.run_id, "val_acc")] == [1, 2, 3]
