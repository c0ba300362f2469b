"""The ceiling for many small trials: vgtune against plain Ray Tune on the same trivial trainable.

1,000 trials of a one-block width-2 CNN on 128 synthetic examples, one epoch each, run
three times on this machine: through a bare `tune.Tuner` with vgtune's trainable
(`vgtune.driver.trainable.run_trial`), actor reuse and no callbacks; through `vgtune.driver.runner.run_sweep`
(MLflow tracking to SQLite, the stopper, the progress line) one Tune trial per trial
(`pack: off`); and the same with `pack: auto` (the trials differ only in their seed, so they
pack 16 at a time). Reported: vgtune's trials/s as a share of plain Tune's, until every
MLflow write is done, and the driver process's CPU per trial in each (the figure that
bounds a cluster: one driver core serves 1 / that many trials per second).
"""

from __future__ import annotations

import resource
import tempfile
import time
from pathlib import Path

from vgtune.driver import spec

TRIALS = 1000
SPEC = {"name": "ceiling", "dataset": {"name": "synthetic", "limit": 128},
        "parameters": {"seed": list(range(TRIALS))},
        "fixed": {"depth": 1, "width": 2, "epochs": 1, "batch_size": 64, "init_probe_batches": 1}}


def _cpu() -> float:
    """CPU seconds of this process (the Tune driver), all threads."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _init_ray():
    import ray

    from vgtune.driver.runner import SweepOptions, _init_ray

    _init_ray(SweepOptions(verbose=0), spec.parse(SPEC))
    return ray


def _plain_tune(folder: Path) -> tuple[float, float]:
    from ray import tune

    from vgtune.driver.runner import _trainable, longest_first

    s = spec.parse(SPEC)
    ray = _init_ray()
    items = s.items
    tuner = tune.Tuner(_trainable(s), param_space={"trial": tune.grid_search(longest_first(items))},
                       tune_config=tune.TuneConfig(reuse_actors=True),
                       run_config=tune.RunConfig(storage_path=str(folder), verbose=0))
    t0, c0 = time.perf_counter(), _cpu()
    grid = tuner.fit()
    wall, cpu = time.perf_counter() - t0, _cpu() - c0
    assert len(grid) == TRIALS and not grid.errors
    ray.shutdown()
    return wall, cpu


def _vgtune(folder: Path, pack: str) -> tuple[float, float]:
    from vgtune.driver.runner import SweepOptions, run_sweep

    s = spec.parse(SPEC | {"pack": pack})
    _init_ray()
    options = SweepOptions(tracking_uri=f"sqlite:///{folder}/mlflow.db", storage=str(folder / "runs"),
                           out=str(folder / "reports"), verbose=0)
    c0 = _cpu()
    outcome = run_sweep(s, options)
    cpu = _cpu() - c0
    import ray

    ray.shutdown()
    assert outcome.finished == TRIALS
    return outcome.wall_seconds, cpu


def run() -> list[dict]:
    with tempfile.TemporaryDirectory() as d1, tempfile.TemporaryDirectory() as d2, \
            tempfile.TemporaryDirectory() as d3:
        tune_wall, tune_cpu = _plain_tune(Path(d1))
        runs = {pack: _vgtune(Path(d), pack) for pack, d in (("off", d2), ("auto", d3))}
    rows = []
    for pack, (wall, cpu) in runs.items():
        ratio = tune_wall / wall  # (TRIALS / wall) / (TRIALS / tune_wall)
        note = (f"{TRIALS} trivial trials: plain Tune {tune_wall:.0f}s ({TRIALS / tune_wall:.1f}/s), "
                f"vgtune {wall:.0f}s ({TRIALS / wall:.1f}/s) until every MLflow write is done")
        rows += [
            {"name": f"ceiling (pack: {pack}): vgtune trials/s / plain Tune's", "value": ratio, "target": ">= 0.9",
             "ok": ratio >= 0.9, "note": note},
            {"name": f"ceiling (pack: {pack}): driver CPU per trivial trial (core-s)", "value": cpu / TRIALS,
             "target": "<= 0.02", "ok": cpu / TRIALS <= 0.02},
        ]
    rows.append({"name": "ceiling: plain Tune driver CPU per trivial trial (core-s)", "value": tune_cpu / TRIALS,
                 "target": "report"})
    return rows
