"""A local Ray in a session of its own, so that signals meant for the sweep reach the sweep, not Ray.

    local_ray.start(num_cpus=2, log_to_driver=False, runtime_env=None)  # then Tune runs as usual

`ray.init()` starts Ray's processes (GCS, raylet, workers) as children of the
driver, in its process group. Ray blocks SIGINT in them, so a terminal's Ctrl-C
reaches only the driver, and Tune stops the sweep in a few seconds. A SIGTERM to
the whole process group, which `timeout`, `systemctl stop` and Slurm's `scancel`
send, is not blocked: the GCS dies with the driver, which then waits a minute for
it and ends without saving the sweep's state.

So the head starts in a small holder process (`python -m vgtune.driver.local_ray`)
in a new session, outside the terminal's and the job's process group, with SIGINT,
SIGTERM and SIGHUP blocked, a mask Ray's processes inherit: a SIGTERM sent to every
process of a job (Slurm, systemd) reaches the driver and stops the sweep, not Ray
under it. The driver joins the head with `ray.init(address=...)`, as it joins a
cluster, and still owns it: when the driver closes the pipe between them, at its
exit (`stop`, registered with atexit) or when it dies in any way, a SIGKILL
included, the holder kills its session's processes, Ray's with it. Measured on 2
busy cores: start-up about 1.5 s longer than `ray.init()` in the driver.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

START_TIMEOUT = 180.0  # seconds for the holder's `ray.init` (a cold start on a busy 2-core machine takes ~10)
HELD_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}  # never reach the head's processes
STOP_TIMEOUT = 15.0  # seconds for the holder to end Ray before the driver kills the holder's session


@dataclass
class Holder:
    """The process that keeps the local head, and the pipe that keeps the holder."""

    proc: subprocess.Popen  # the holder, leader of its own session and process group
    control: int  # our end of the pipe; closing it tells the holder to stop Ray
    address: str  # the head's GCS address, host:port


_holder: Holder | None = None


def start(num_cpus: int | None, log_to_driver: bool, runtime_env: dict | None) -> Holder:
    """Start a local Ray head in a session of its own and connect this process to it as the driver."""
    global _holder
    if num_cpus is not None and num_cpus < 1:  # ray.init(num_cpus=0) starts a Ray that never runs a trial
        raise ValueError(f"num_cpus must be an integer >= 1, got {num_cpus}")
    import ray

    if _holder is not None:  # one started before, and since left by `ray.shutdown()`: stop it first
        stop()
    else:
        atexit.register(stop)
    _token_auth_as_ray_init()
    _holder = _spawn(num_cpus)
    joining = logging.getLogger("ray._private.worker")  # "Connecting to existing Ray cluster at ...": the holder
    level = joining.level  # has said "Started a local Ray instance.", as ray.init() does
    joining.setLevel(logging.WARNING)
    try:
        ray.init(address=_holder.address, log_to_driver=log_to_driver, runtime_env=runtime_env)
    finally:
        joining.setLevel(level)
    return _holder


def _token_auth_as_ray_init() -> None:
    """Token authentication as `ray.init()` sets it for a local Ray it starts: on (a token in ~/.ray/auth_token)
    unless RAY_AUTH_MODE says otherwise. Set in this process, which joins the head by address (where Ray does not
    turn it on by itself), and so in the holder, which inherits the environment."""
    from ray._private.authentication.authentication_token_setup import enable_token_auth_by_default

    enable_token_auth_by_default()


def _spawn(num_cpus: int | None) -> Holder:
    control_read, control_write = os.pipe()  # driver -> holder: open while the driver wants Ray
    reply_read, reply_write = os.pipe()  # holder -> driver: the head's address, once up
    held = signal.pthread_sigmask(signal.SIG_BLOCK, HELD_SIGNALS)  # the holder and Ray's processes inherit it
    try:
        proc = subprocess.Popen([sys.executable, "-m", __name__, str(control_read), str(reply_write),
                                 json.dumps({"num_cpus": num_cpus})],
                                pass_fds=(control_read, reply_write), stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, start_new_session=True)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
    os.close(control_read)
    os.close(reply_write)
    try:
        address = _read_address(reply_read, proc)
    except BaseException:
        os.close(control_write)
        _kill_session(proc)
        raise
    finally:
        os.close(reply_read)
    return Holder(proc, control_write, address)


def _read_address(fd: int, proc: subprocess.Popen) -> str:
    deadline, data = time.monotonic() + START_TIMEOUT, b""
    while not data.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0:
            raise RuntimeError(f"the local Ray head did not start within {START_TIMEOUT:.0f}s")
        if select.select([fd], [], [], left)[0]:
            chunk = os.read(fd, 4096)
            if not chunk:
                raise RuntimeError("the local Ray head failed to start (its error is above)")
            data += chunk
    return data.decode().strip()


def stop(timeout: float = STOP_TIMEOUT) -> None:
    """Disconnect this driver and stop the local head it started (nothing if it started none)."""
    global _holder
    holder, _holder = _holder, None
    if holder is None:
        return
    import ray

    ray.shutdown()
    os.close(holder.control)  # the holder kills its session, itself included
    try:
        holder.proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_session(holder.proc)


def _kill_session(proc: subprocess.Popen) -> None:
    """SIGKILL the holder's process group, then reap the holder. It leads the group, so the group's id is its pid,
    which cannot have been reused before the holder is reaped here."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _hold(control: int, reply: int, options: dict) -> None:
    """The holder: start the head, say its address, keep it until the driver closes `control`. Started with
    HELD_SIGNALS blocked (`_spawn`), which every process `ray.init` starts inherits."""
    import ray

    context = ray.init(num_cpus=options["num_cpus"], include_dashboard=False, log_to_driver=False)
    try:
        os.write(reply, (context.address_info["gcs_address"] + "\n").encode())
        os.close(reply)
        while os.read(control, 4096):  # EOF: the driver stopped us, or ended
            pass
    except BrokenPipeError:  # the driver ended while Ray started
        pass
    # Ray's processes hold SIGTERM, which `ray.shutdown()` sends, waiting a second for each: end them all at once
    # (the head keeps nothing a sweep needs: Tune's state and the checkpoints are on disk, the runs in MLflow).
    os.killpg(os.getpgid(0), signal.SIGKILL)


if __name__ == "__main__":
    _hold(int(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3]))
