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
