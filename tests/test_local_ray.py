"""The local Ray's holder, without starting Ray (tests/test_resume.py drives it through real sweeps)."""

import pytest
import ray

from vgtune.driver import local_ray


@pytest.mark.parametrize("num_cpus", [0, -3])
def test_no_cpus_never_reaches_ray(num_cpus, monkeypatch):
    spawned = []
    monkeypatch.setattr(local_ray, "_spawn", spawned.append)
    with pytest.raises(ValueError, match=f"num_cpus must be an integer >= 1, got {num_cpus}"):
        local_ray.start(num_cpus, log_to_driver=False, runtime_env=None)
    assert spawned == [] and not ray.is_initialized()


def test_stop_without_a_head_does_nothing():
    local_ray.stop()
    assert not ray.is_initialized()


def test_a_second_start_stops_the_first_head(monkeypatch):
    """A script that shut Ray down between two sweeps gets a new head; the first one's holder is stopped."""
    stopped, spawned = [], []
    monkeypatch.setattr(local_ray, "_holder", "first")
    monkeypatch.setattr(local_ray, "stop", lambda: stopped.append(local_ray._holder))
    monkeypatch.setattr(local_ray, "_token_auth_as_ray_init", lambda: None)
    monkeypatch.setattr(local_ray, "_spawn", lambda n: spawned.append(n) or local_ray.Holder(None, -1, "host:1"))
    monkeypatch.setattr(ray, "init", lambda **kw: None)
    local_ray.start(1, log_to_driver=False, runtime_env=None)
    assert stopped == ["first"] and spawned == [1]
