"""Run a sweep spec with Ray Tune: resources, the adaptive design, retries, resume, tracking.

    outcome = run_sweep(spec.load("sweeps/default.yaml"), SweepOptions())

One sweep is one Tune experiment whose trials its design proposes as results
arrive (`vgtune.driver.searcher.AdaptiveSearch` over `vgtune.analysis.design`):
every arm's nuisance setting is chosen (and its grid bracketed) on selection
trials, then confirmed on fresh seeds in looks, each arm as soon as it is ready.
Trials are `vgtune.driver.trainable.run_trial` with actor reuse (per-trial
start-up was the dominant cost of small trials), packed and handed out longest
first. Results, checkpoints and the design's state go under
`storage/<name>-<timestamp>/`; `resume=True` continues the newest such folder
with `Tuner.restore`, running only what is unfinished, and the design continues
from the results it had recorded.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vgtune.core import usercode
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
    unfinished: int = 0  # trials handed out but left pending or running (an interrupted sweep); `--resume` runs them
    complete: bool = True  # the design has nothing more to run (False: interrupted before it decided everything)
    signal: int | None = None  # SIGTERM if that is what stopped the sweep (SIGINT is Tune's own)
    experiment_id: str | None = None  # MLflow experiment id (None if nothing could be recorded)
    tune_trials: int = 0  # Ray Tune trials that ran them (fewer than `trials` when packed)
    parent_run_id: str | None = None  # this invocation's MLflow sweep run
    chosen: dict[str, str] = field(default_factory=dict)  # arm -> the nuisance setting its confirmation ran at
    planned: int = 0  # trials Tune ran or was running (the design had handed them out)
    write_failures: int = 0  # MLflow writes given up on
    work_seconds: float = 0.0  # training and evaluation in this invocation (not before an interrupt it resumes)

    @property
    def finished(self) -> int:
        return self.planned - self.unfinished

    @property
    def interrupted(self) -> bool:
        """Stopped before the design was done: `--resume` continues it."""
        return bool(self.unfinished) or not self.complete

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

    candidates = sorted(storage.glob(f"{name}-*"), key=lambda p: p.stat().st_mtime, reverse=True)
    for path in candidates:
        if tune.Tuner.can_restore(str(path.resolve())):
            return path.resolve()
    raise SpecError("--resume", f"no run folder of sweep {name!r} under {storage}/ to resume; "
                    "run it without --resume first")


def _trainable(spec: SweepSpec):
    from ray import tune

    from vgtune.driver.trainable import run_trial

    return tune.with_resources(run_trial, {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu})


def _tuner(spec: SweepSpec, options: SweepOptions, uri: str, sweep_id: str, storage: Path):
    from ray import tune

    from vgtune.driver.mlflow_callback import MLflowTracker
    from vgtune.driver.progress import ProgressLine
    from vgtune.driver.searcher import AdaptiveSearch

    # What the report needs to read the sweep as it was meant: thresholds, selection rule, the design.
    sweep_params = {f"thresholds.{k}": str(v) for k, v in vars(spec.thresholds).items()}
    sweep_params |= {"metric": spec.metric, "mode": spec.mode, "correction": spec.correction,
                     "family": yaml.safe_dump(spec.family, default_flow_style=True).strip(),
                     "family_size": str(spec.family_size), "margin": str(spec.margin)}
    if spec.looks:
        sweep_params["seeds"] = ",".join(map(str, spec.looks))
    if spec.nuisance:
        sweep_params |= {"nuisance": ",".join(spec.nuisance), "extend": str(spec.extend)}
    most = spec.total_trials
    tracker = MLflowTracker(uri, spec.name, sweep_id, yaml.safe_dump(spec.raw, sort_keys=False), most,
                            factors=spec.factors, params=sweep_params)
    if options.verbose >= 2:  # Tune's full status table
        reporter = tune.CLIReporter(
            parameter_columns={f"trial/train/{k}": k for k in spec.factors},
            metric_columns={"epoch": "epoch", spec.metric: f"best {spec.metric}", "status": "status"},
            max_report_frequency=20, max_progress_rows=10)
    else:
        reporter = ProgressLine(most, spec.metric, spec.mode)
    extra = {"thresholds": vars(spec.thresholds), "checkpoint_every": spec.checkpoint_every,
             "metric": spec.metric, "mode": spec.mode}
    if spec.references and spec.folder and not options.address:
        # A Ray this process did not start has no py_modules: local workers import from the spec's folder.
        extra["import_paths"] = [spec.folder]
    slots = _concurrency(spec)
    # Selection trials may stop early for a collapsed gradient (per member, in the trainable); confirmation
    # trials never do, so every trial of a comparison has the same budget.
    stop = {"floor": spec.stop.attenuation_floor, "patience": spec.stop.patience} if spec.stop.gradient_collapse \
        else None
    search = AdaptiveSearch(spec.design(), spec.pack, slots, stop=stop)
    run_config = tune.RunConfig(
        name=sweep_id, storage_path=str(storage), callbacks=[tracker],
        verbose=options.verbose, progress_reporter=reporter,
        failure_config=tune.FailureConfig(max_failures=spec.max_failures),
        # Every checkpoint is kept: with num_to_keep set, Tune snapshots the whole experiment
        # state after (almost) every checkpoint, which costs more than the disk it saves.
        checkpoint_config=tune.CheckpointConfig())
    tune_config = tune.TuneConfig(metric=spec.metric, mode=spec.mode, scheduler=_scheduler(spec),
                                  search_alg=search, num_samples=-1, max_concurrent_trials=slots,
                                  reuse_actors=True, trial_dirname_creator=lambda t: t.trial_id)
    return tune.Tuner(_trainable(spec), param_space=extra, tune_config=tune_config, run_config=run_config)


def _restore(spec: SweepSpec, path: Path):
    from ray import tune

    return tune.Tuner.restore(str(path), _trainable(spec), resume_unfinished=True, resume_errored=True)


def prepare(spec: SweepSpec, options: SweepOptions) -> str:
    """Every check that can fail before Ray starts or MLflow is written; returns the tracking URI.

    `vgtune sweep --dry-run` runs these same checks (a cluster's resources are checked once joined)."""
    num_cpus = options.num_cpus
    if num_cpus is not None and (isinstance(num_cpus, bool) or not isinstance(num_cpus, int) or num_cpus < 1):
        raise SpecError("num_cpus", f"must be an integer >= 1, got {num_cpus!r}")
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


def run_sweep(spec: SweepSpec, options: SweepOptions) -> SweepOutcome:
    uri = prepare(spec, options)
    storage = Path(options.storage).resolve()
    if options.resume:
        path = _find_resumable(storage, spec.name)
        sweep_id = path.name
    else:
        sweep_id = f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    _init_ray(options, spec)
    received = _stop_on_sigterm()
    if options.address:
        import ray

        check_resources(spec, ray.cluster_resources())
    tuner = _restore(spec, storage / sweep_id) if options.resume else _tuner(spec, options, uri, sweep_id, storage)
    outcome = _fit(spec, tuner, uri, sweep_id, storage)
    outcome.signal = received[0] if received else None
    return outcome


def _fit(spec: SweepSpec, tuner, uri: str, sweep_id: str, storage: Path) -> SweepOutcome:
    """Run (or, resuming, continue) the sweep's Tune experiment; its outcome."""
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
    parent = next((t.parent_run_id for t in trackers if t.parent_run_id), None)
    chosen = {t["meta"]["arm"]: t["meta"]["nuisance"] for t in trials if t["meta"].get("stage") == "confirm"}
    unfinished, complete = sum(t.unfinished for t in trackers), _design_done(spec, storage / sweep_id)
    if parent and unfinished == 0 and not complete:  # stopped between trials: the sweep run did not finish either
        _end_parent(uri, parent, "KILLED")
    return SweepOutcome(spec.name, sweep_id, str(storage / sweep_id), uri, wall, concurrency, trials, unfinished,
                        complete, None, exp_id, len(grid), parent, chosen=chosen, planned=len(trials),
                        write_failures=sum(len(t.writer.failures) for t in trackers),
                        work_seconds=sum(t.work_seconds for t in trackers))


def _design_done(spec: SweepSpec, folder: Path) -> bool:
    """Whether the design, as Tune last saved it with the experiment, has nothing more to run."""
    from vgtune.driver.searcher import AdaptiveSearch

    search = AdaptiveSearch(spec.design())
    try:
        search.restore_from_dir(str(folder))
    except RuntimeError:  # no saved state: the experiment stopped before Tune saved any
        return False
    return search.design.finished


def _end_parent(uri: str, run_id: str, status: str) -> None:
    """End the sweep's MLflow parent run from the driver, after its writer has closed."""
    from vgtune.tracking.store import client_for

    client_for(uri).set_terminated(run_id, status)


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
