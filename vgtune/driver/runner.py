"""Run a sweep spec with Ray Tune: resources, scheduler, stopper, retries, resume, tracking.

    outcome = run_sweep(spec.load("sweeps/default.yaml"), SweepOptions())

Trials are `vgtune.driver.trainable.run_trial` with actor reuse (per-trial start-up was
the dominant cost of small trials), submitted longest first. Results and checkpoints go under
`storage/<name>-<timestamp>/`; `resume=True` continues the newest such folder
with `Tuner.restore`, running only what is unfinished.

A spec with nuisance options runs in two stages, each one `Tuner.fit`, under one
MLflow parent run: stage 1 (select) trains every arm at every setting and
chooses each arm's on the spec's (validation) metric with `vgtune.analysis.fairness.select`;
stage 2 (confirm) retrains every arm at its choice on fresh seeds, without the
gradient-collapse stopper, in `storage/<name>-<timestamp>-confirm/`. A resume
continues whichever stage was interrupted.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
import signal
import socket
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from vgtune.analysis import fairness
from vgtune.core import packing, usercode
from vgtune.driver import local_ray
from vgtune.driver.mlflow_callback import flush_all
from vgtune.driver.spec import SpecError, SweepSpec, check_data, check_models, check_resources
from vgtune.driver.trial_members import members
from vgtune.tracking.store import check_uri, resolve_uri


@dataclass
class SweepOptions:
    address: str | None = None  # Ray cluster address (ray://host:10001 or host:6379); None = local Ray
    tracking_uri: str | None = None  # MLflow store; None = $MLFLOW_TRACKING_URI or sqlite:///mlflow.db
    storage: str = "runs"  # Tune results and checkpoints; on a cluster, a path every node can reach
    out: str = "reports"  # report folders go to OUT/<experiment>/
    resume: bool = False  # continue the newest unfinished run folder of this spec
    num_cpus: int | None = None  # local Ray only: CPUs to use (None = all of this machine)
    verbose: int = 1  # Tune's console output: 0 silent, 1 status table, 2 per-result


@dataclass
class SweepOutcome:
    experiment: str  # MLflow experiment name
    sweep_id: str  # run folder name (also the `vgtune.sweep` tag of every run)
    path: str  # Tune experiment folder
    tracking_uri: str
    wall_seconds: float  # Tuner.fit() wall time
    concurrency: int  # trials the cluster could run at once
    trials: list[dict[str, Any]] = field(default_factory=list)  # config, meta, last epoch row, status, error per trial
    unfinished: int = 0  # trials left pending or running (an interrupted sweep); `--resume` runs them
    signal: int | None = None  # SIGTERM if that is what stopped the sweep (SIGINT is Tune's own)
    experiment_id: str | None = None  # MLflow experiment id (None if nothing could be recorded)
    tune_trials: int = 0  # Ray Tune trials that ran them (fewer than `trials` when packed)
    parent_run_id: str | None = None  # this invocation's MLflow sweep run
    chosen: dict[str, str] = field(default_factory=dict)  # arm -> the nuisance setting stage 1 chose for it
    planned: int = 0  # trials of the stages that ran (a stage not reached counts none)
    write_failures: int = 0  # MLflow writes given up on
    work_seconds: float = 0.0  # training and evaluation in this invocation (not before an interrupt it resumes)

    @property
    def finished(self) -> int:
        return self.planned - self.unfinished

    def seconds(self, key: str) -> float:
        """A per-trial time (train_seconds, eval_seconds, setup_seconds) summed over the trials."""
        return sum(t["last"].get(key, 0.0) for t in self.trials)

    def busy_share(self, wall: float | None = None) -> float:
        """Share of the trial slots' time spent training and evaluating (the rest is set-up and orchestration),
        over Tuner.fit's wall time or the given one (the whole command's, say): both this invocation's, so a
        resumed sweep counts only the work it did itself."""
        return self.work_seconds / max(1e-9, (wall or self.wall_seconds) * self.concurrency)


def _check_address(address: str, timeout: float = 10.0) -> None:
    """Fail within `timeout` if nothing listens at a Ray address."""
    if address == "auto":
        return
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port or 6379)), timeout=timeout):
            pass
    except (OSError, ValueError) as exc:
        raise SpecError(f"Ray cluster at {address} is not reachable ({exc}); start one with "
                        "`make cluster-up` or drop --address to run locally") from None


def _init_ray(options: SweepOptions, spec: SweepSpec) -> None:
    """Start (`local_ray`) or join Ray; the spec's own modules (`model: mynet:build`) travel with the job as
    py_modules. `prepare` has checked the options."""
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")  # relative data roots keep working
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # MLflow is the log
    # ...so the ResultGrid finds no result.json; the last results it needs come from memory.
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the CLIReporter table, with factor columns
    # An interrupted sweep says itself how to continue (`vgtune sweep SPEC --resume`), not Tune's API.
    logging.getLogger("ray.tune.tune").addFilter(_no_restore_hint)
    shipped = usercode.shipped(spec.references)
    runtime_env = {"py_modules": shipped} if shipped else None
    if options.address:
        ray.init(address=options.address, log_to_driver=options.verbose > 1, runtime_env=runtime_env)
    else:  # in a session of its own, out of reach of signals sent to the sweep's process group
        local_ray.start(options.num_cpus, log_to_driver=options.verbose > 1, runtime_env=runtime_env)


def _no_restore_hint(record: logging.LogRecord) -> bool:
    message = record.getMessage()
    return "Tuner.restore" not in message and "Trials did not complete" not in message


def _scheduler(spec: SweepSpec):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    sched = dict(spec.scheduler)
    if sched.pop("type") == "asha":
        max_t = sched.pop("max_t", max(t["epochs"] for t in spec.trials))
        return ASHAScheduler(time_attr="epoch", max_t=max_t, **sched)
    return FIFOScheduler()


def _find_resumable(storage: Path, name: str) -> Path:
    from ray import tune

    candidates = sorted((p for p in storage.glob(f"{name}-*") if not p.name.endswith(CONFIRM_SUFFIX)),
                        key=lambda p: p.stat().st_mtime, reverse=True)
    for path in candidates:
        if tune.Tuner.can_restore(str(path.resolve())):
            return path.resolve()
    raise SpecError("--resume", f"no run folder of sweep {name!r} under {storage}/ to resume; "
                    "run it without --resume first")


def _trainable(spec: SweepSpec):
    from ray import tune

    from vgtune.driver.trainable import run_trial

    return tune.with_resources(run_trial, {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu})


def longest_first(trials: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Trials (`{"train": TrainConfig dict, ...}`, or packs of them) by a rough cost (epochs x depth x width^2
    x members), largest first, grid order among equals.

    Tune starts trials in this order, so the last ones to start are the short ones and
    the workers finish together instead of one long trial running on alone at the end.
    """
    def cost(item: dict[str, Any]) -> int:
        train = item["train"]
        return train["epochs"] * train["depth"] * train["width"] ** 2 * len(packing.members(item))
    return sorted(trials, key=lambda t: -cost(t))


@dataclass
class Stage:
    """One `Tuner.fit` of a sweep: its trials (`items`) and where Tune keeps them."""

    name: str  # `select` or `confirm`
    items: list[dict[str, Any]]  # as SweepSpec.items
    folder: str  # the Tune experiment's name under the storage folder
    ends_sweep: bool  # the last stage: its end ends the MLflow parent run


def _tuner(spec: SweepSpec, options: SweepOptions, uri: str, sweep_id: str, storage: Path, stage: Stage,
           parent_run_id: str | None, earlier_failures: int = 0):
    from ray import tune

    from vgtune.driver.mlflow_callback import MLflowTracker
    from vgtune.driver.progress import ProgressLine

    # Stage 2 runs every trial its full budget: a comparison's trials all train as long.
    stops = spec.stop.gradient_collapse and not (spec.confirm and stage.name == "confirm")
    # What the report needs to read the sweep as it was meant: diagnosis thresholds, selection rule.
    sweep_params = {f"thresholds.{k}": str(v) for k, v in vars(spec.thresholds).items()}
    sweep_params |= {"metric": spec.metric, "mode": spec.mode, "correction": spec.correction}
    if spec.nuisance:
        sweep_params |= {"nuisance": ",".join(spec.nuisance), "confirm": str(spec.confirm)}
    tracker = MLflowTracker(uri, spec.name, sweep_id, yaml.safe_dump(spec.raw, sort_keys=False),
                            spec.total_trials, factors=spec.factors, params=sweep_params,
                            parent_run_id=parent_run_id, ends_sweep=stage.ends_sweep,
                            earlier_failures=earlier_failures)
    if options.verbose >= 2:  # Tune's full status table
        reporter = tune.CLIReporter(
            parameter_columns={f"trial/train/{k}": k for k in spec.factors},
            metric_columns={"epoch": "epoch", spec.metric: f"best {spec.metric}", "status": "status"},
            max_report_frequency=20, max_progress_rows=10)
    else:
        reporter = ProgressLine(len(stage.items), spec.metric, spec.mode,
                                label=f"stage {stage.name}: " if spec.confirm else "")
    extra = {"thresholds": vars(spec.thresholds), "checkpoint_every": spec.checkpoint_every,
             "metric": spec.metric, "mode": spec.mode}
    if stops:  # the gradient-collapse stopper runs per member, in the trainable
        extra["member_stop"] = {"floor": spec.stop.attenuation_floor, "patience": spec.stop.patience}
    if spec.references and spec.folder and not options.address:
        # A Ray this process did not start has no py_modules: local workers import from the spec's folder.
        extra["import_paths"] = [spec.folder]
    run_config = tune.RunConfig(
        name=stage.folder, storage_path=str(storage), callbacks=[tracker],
        verbose=options.verbose, progress_reporter=reporter,
        failure_config=tune.FailureConfig(max_failures=spec.max_failures),
        # Every checkpoint is kept: with num_to_keep set, Tune snapshots the whole experiment
        # state after (almost) every checkpoint, which costs more than the disk it saves.
        checkpoint_config=tune.CheckpointConfig())
    tune_config = tune.TuneConfig(metric=spec.metric, mode=spec.mode, scheduler=_scheduler(spec),
                                  reuse_actors=True, trial_dirname_creator=lambda t: t.trial_id)
    items = packing.plan(stage.items, spec.pack, _concurrency(spec))
    param_space = {"trial": tune.grid_search(longest_first(items)), **extra}
    return tune.Tuner(_trainable(spec), param_space=param_space, tune_config=tune_config, run_config=run_config)


def _restore(spec: SweepSpec, path: Path):
    from ray import tune

    return tune.Tuner.restore(str(path), _trainable(spec), resume_unfinished=True, resume_errored=True)


def prepare(spec: SweepSpec, options: SweepOptions) -> str:
    """Every check that can fail before Ray starts or MLflow is written; returns the tracking URI.

    `vgtune sweep --dry-run` runs these same checks (a cluster's resources are checked once joined)."""
    num_cpus = options.num_cpus
    if num_cpus is not None and (isinstance(num_cpus, bool) or not isinstance(num_cpus, int) or num_cpus < 1):
        raise SpecError("--num-cpus", f"must be an integer >= 1, got {num_cpus!r}")
    uri = resolve_uri(options.tracking_uri)
    try:
        check_uri(uri)
    except ValueError as exc:
        raise SpecError(str(exc)) from None
    for folder, what in ((options.storage, "--storage"), (options.out, "--out")):
        _check_writable(Path(folder), what)
    if options.resume:
        _find_resumable(Path(options.storage).resolve(), spec.name)
    if options.address:
        _check_address(options.address, timeout=5.0)  # the whole command errs within 10 s
    else:
        check_resources(spec, {"CPU": num_cpus or os.cpu_count() or 1, "GPU": _local_gpus()})
    check_data(spec)
    check_models(spec)
    return uri


def _local_gpus() -> int:
    import torch

    return torch.cuda.device_count()


def _check_writable(path: Path, what: str) -> None:
    """The folder, or its nearest existing parent, must take a file (probed, since root passes os.access)."""
    existing = next((p for p in [path, *path.resolve().parents] if p.exists()), None)
    try:
        if existing is None or not existing.is_dir():
            raise OSError("not a folder")
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError:
        raise SpecError(f"{what} {path}", "not a writable folder") from None


CONFIRM_SUFFIX = "-confirm"  # stage 2's Tune experiment folder: <sweep id>-confirm beside stage 1's


def run_sweep(spec: SweepSpec, options: SweepOptions) -> SweepOutcome:
    uri = prepare(spec, options)
    storage = Path(options.storage).resolve()
    if options.resume:
        path = _find_resumable(storage, spec.name)
        sweep_id = path.name
    else:
        sweep_id = f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        path = storage / sweep_id
    _init_ray(options, spec)
    received = _stop_on_sigterm()
    if options.address:
        import ray

        check_resources(spec, ray.cluster_resources())
    signum = lambda: received[0] if received else None  # noqa: E731
    run = functools.partial(_fit, spec, options, uri, sweep_id, storage)
    confirm_folder = sweep_id + CONFIRM_SUFFIX
    in_stage2 = options.resume and spec.confirm and _restorable(storage / confirm_folder)
    first = Stage(spec.stage, spec.items, sweep_id, ends_sweep=not spec.confirm)
    outcome = _results(spec, path) if in_stage2 else run(first, None, options.resume)
    outcome.signal = signum()
    if outcome.unfinished or not spec.confirm:
        return outcome
    try:
        outcome.chosen = choose(spec, outcome.trials)
        second = Stage("confirm", spec.confirm_items(outcome.chosen), confirm_folder, ends_sweep=True)
        if not second.items:
            _end_parent(uri, outcome.parent_run_id, "FINISHED")
            return outcome
        return _merge(outcome, run(second, outcome.parent_run_id, in_stage2, outcome.write_failures), signum())
    except BaseException:  # Ctrl-C between the stages, or stage 2 failed to start: the sweep run ends here
        _end_parent(uri, outcome.parent_run_id, "KILLED")
        raise


def _end_parent(uri: str, run_id: str | None, status: str) -> None:
    """End the sweep's MLflow parent run from the driver (stage 2 never started, so no writer will)."""
    if run_id is not None:
        from vgtune.tracking.store import client_for

        client_for(uri).set_terminated(run_id, status)


def _fit(spec: SweepSpec, options: SweepOptions, uri: str, sweep_id: str, storage: Path, stage: Stage,
         parent_run_id: str | None, resume: bool, earlier_failures: int = 0) -> SweepOutcome:
    """Run (or, resuming, continue) one stage; its outcome."""
    tuner = (_restore(spec, storage / stage.folder) if resume
             else _tuner(spec, options, uri, sweep_id, storage, stage, parent_run_id, earlier_failures))
    concurrency = _concurrency(spec)
    t0 = time.perf_counter()
    try:
        grid = tuner.fit()
    finally:
        trackers = flush_all()
    wall = time.perf_counter() - t0
    trials = [t for result in grid for t in _outcomes(result)]
    concurrency = min(concurrency, len(grid)) or concurrency  # a few packs fill fewer slots
    exp_id = next((t.experiment_id for t in trackers if t.experiment_id), None)
    parent = next((t.parent_run_id for t in trackers if t.parent_run_id), parent_run_id)
    return SweepOutcome(spec.name, sweep_id, str(storage / sweep_id), uri, wall, concurrency, trials,
                        sum(t.unfinished for t in trackers), None, exp_id, len(grid), parent, planned=len(stage.items),
                        write_failures=sum(len(t.writer.failures) for t in trackers),
                        work_seconds=sum(t.work_seconds for t in trackers))


def _restorable(path: Path) -> bool:
    from ray import tune

    return path.is_dir() and tune.Tuner.can_restore(str(path))


def _results(spec: SweepSpec, path: Path) -> SweepOutcome:
    """A finished stage 1 read back from its Tune folder, without running anything (resuming stage 2)."""
    grid = _restore(spec, path).get_results()
    trials = [t for result in grid for t in _outcomes(result)]
    return SweepOutcome(spec.name, path.name, str(path), "", 0.0, 1, trials, 0, None, None, len(grid),
                        planned=len(trials))


def _merge(first: SweepOutcome, second: SweepOutcome, signum: int | None) -> SweepOutcome:
    """Both stages as one sweep's outcome (stage 1's folder; the concurrency of the longer stage)."""
    longer = first if first.wall_seconds >= second.wall_seconds else second
    return dataclasses.replace(
        second, wall_seconds=first.wall_seconds + second.wall_seconds, concurrency=longer.concurrency,
        trials=first.trials + second.trials, unfinished=first.unfinished + second.unfinished, signal=signum,
        experiment_id=second.experiment_id or first.experiment_id, tune_trials=first.tune_trials + second.tune_trials,
        chosen=first.chosen, planned=first.planned + second.planned,
        write_failures=first.write_failures + second.write_failures,
        work_seconds=first.work_seconds + second.work_seconds)


def choose(spec: SweepSpec, trials: list[dict[str, Any]]) -> dict[str, str]:
    """arm -> its nuisance setting, chosen on the spec's metric over stage 1's seeds (`fairness.select`)."""
    rows = [t["meta"] | {"status": t["status"], spec.metric: t["last"].get(spec.metric, math.nan)} for t in trials]
    picked = fairness.select(pd.DataFrame(rows), spec.metric, spec.mode)
    chosen = picked[picked["selected"]].drop_duplicates("arm")
    missing = [arm for arm in spec.arms if arm not in set(chosen["arm"])]
    if missing:
        logging.getLogger("vgtune").warning(
            "stage 2: %d of %d arms had no finished stage-1 trial (every one errored) and are not confirmed",
            len(missing), len(spec.arms))
    return dict(zip(chosen["arm"], chosen["nuisance"]))


def _outcomes(result) -> list[dict[str, Any]]:
    """Config, meta, last epoch row, status and error of each trial a Tune result stands for (itself, or each
    member of its pack)."""
    error = str(result.error) if result.error else None
    out = []
    for m in members("", (result.config or {}).get("trial", {}), result.metrics):
        out.append({"config": m.config, "meta": m.meta, "last": m.row, "error": error,
                    "status": m.status("ERROR" if error else "TERMINATED")})
    return out


def _stop_on_sigterm() -> list[int]:
    """Make SIGTERM (a scheduler's kill, `docker stop`, `timeout`) stop the sweep as gracefully as Ctrl-C.

    Installed after `ray.init`, whose own SIGTERM handler would abort the driver. The
    handler turns SIGTERM into the SIGINT Tune listens for; the list records it. A local
    Ray runs in a session of its own with SIGTERM blocked (`local_ray`), so a SIGTERM to
    the sweep's whole process group, or to every process of the job, leaves it running
    while Tune saves its state.
    """
    received: list[int] = []

    def handler(signum, frame) -> None:
        received.append(signum)
        os.kill(os.getpid(), signal.SIGINT)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)
    return received


def _concurrency(spec: SweepSpec) -> int:
    import ray

    have = ray.cluster_resources()
    fits = [have.get("CPU", 0) // spec.resources.cpu]
    if spec.resources.gpu:
        fits.append(have.get("GPU", 0) // spec.resources.gpu)
    return max(1, min(len(spec.trials), int(min(fits))))
