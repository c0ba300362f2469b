"""The public Python API: what `vgtune sweep | report | probe` run, for notebooks and scripts.

    import vgtune
    result = vgtune.sweep("sweeps/default.yaml", epochs=2)   # keyword name=value means --set name=value
    result = vgtune.sweep("sweeps/default.yaml", overrides={"fixed.epochs": 2})  # dotted paths
    result.trials      # pandas DataFrame: the trials table (trials.csv)
    result.verdicts    # pandas DataFrame: one row per comparison (effect, interval, p_adjusted, verdict)
    result.report_dir  # pathlib.Path of the written report
    vgtune.report(sweep=None)   # re-analyse the most recent sweep's experiment (or a named one) -> same result type
    vgtune.probe(depth=24, activation="sigmoid")  # gradient flow at initialization, no training -> dict

The command line (`vgtune.cli`) parses its arguments, calls these functions and
prints what they return. Torch, Ray and MLflow are imported on the first call,
not by `import vgtune`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from vgtune.core.diagnosis import Thresholds
from vgtune.core.schema import FIELDS
from vgtune.driver import spec as spec_mod

if TYPE_CHECKING:
    import pandas as pd

    from vgtune.driver.runner import SweepOutcome
    from vgtune.driver.spec import SweepSpec

SWEEP_OPTIONS = ("tracking_uri", "storage", "out", "num_cpus", "address", "resume", "verbose")


@dataclass
class SweepResult:
    """What a sweep concluded, as its report folder holds it."""

    trials: pd.DataFrame  # the trials table: one row per trial, as report_dir/trials.csv
    verdicts: pd.DataFrame  # one row per comparison (mitigation x depth x cell): effect, interval, p_adjusted,
    # verdict, as report_dir/mitigations.csv
    report_dir: Path  # the report folder: report.html, report.md, the CSVs and the plots
    experiment: str  # the MLflow experiment (= the spec's name)
    tracking_uri: str | None  # the MLflow store the trials were read from (None: read back from a folder)
    findings: list[str] = field(default_factory=list)  # the report's summary lines, as `vgtune sweep` prints them
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)  # every table of the report by key: trials,
    # effects (= verdicts), ranking, remedies, main_effects, best_per_depth, depth_trends, edges, ...
    outcome: SweepOutcome | None = None  # what Ray Tune ran (`sweep` only): sweep_id, wall time, concurrency, ...

    @property
    def ranking(self) -> pd.DataFrame:
        """At the deepest depth, one row per mitigation and cell, best (on validation) first: ranking.csv."""
        return self.tables["ranking"]

    def summary(self) -> str:
        """The findings and the remedies table, as `vgtune sweep` and `vgtune report` print them."""
        from vgtune.analysis import report as report_mod

        return report_mod.summary(self.findings, self.tables)

    @classmethod
    def load(cls, report_dir: str | os.PathLike) -> SweepResult:
        """A report folder read back from disk, no MLflow needed (also one written before ranking.csv and
        mitigations.csv swapped names); `findings` stay empty."""
        from vgtune.analysis import report as report_mod

        folder = Path(report_dir)
        tables = report_mod.read_tables(folder)
        return cls(tables["trials"], tables["effects"], folder, folder.name, None, [], tables)


class SweepInterrupted(KeyboardInterrupt):
    """A sweep stopped (Ctrl-C, SIGTERM) before every trial finished; `resume=True` runs only the rest.
    A KeyboardInterrupt, so that `except Exception` does not swallow the user's interrupt."""

    def __init__(self, outcome: SweepOutcome, total: int) -> None:
        self.outcome, self.total = outcome, total
        super().__init__(f"sweep {outcome.sweep_id}: interrupted after {outcome.wall_seconds:.0f}s; "
                         f"{outcome.finished} of {total} trials finished, {total - outcome.finished} did not.")


# ------------------------------------------------------------------ sweep


def overrides_for(spec: str | os.PathLike, overrides: Mapping[str, Any] | Iterable[str] | None = None,
                  values: Mapping[str, Any] | None = None) -> list[str]:
    """The `--set key.path=value` items that `overrides` and the keywords `values` mean for this spec file.

    `overrides`: a mapping of dotted key paths to values ({"fixed.epochs": 2, "parameters.depth": [4, 8]}),
    or `key.path=value` strings as `--set` takes them (the value read as YAML).

    A keyword `name=value` is, in this order:
    - a top-level spec key (name, dataset, pack, repeats, confirm, seed, split, ...): that key. So `seed=` is the
      spec's sampling seed; the training seed is `overrides={"fixed.seed": 3}`;
    - a training option (a TrainConfig field: epochs, depth, lr, ...): set where the spec varies it:
      `nuisance.name` if the spec tunes it per arm, `parameters.name` if it is a grid axis there or the value is
      a list (an axis of its own); a single value there becomes a one-value axis. Otherwise `fixed.name`.
      Variants and explicit `configs` still apply on top.
    Any other name raises TypeError listing the valid ones.
    """
    items: list[str] = []
    if isinstance(overrides, Mapping):
        items += [f"{key}={_yaml(value)}" for key, value in overrides.items()]
    elif isinstance(overrides, str):
        raise TypeError(f"overrides: a mapping of key paths to values or a list of 'key.path=value' strings, "
                        f"got the string {overrides!r}")
    elif overrides is not None:
        items += list(overrides)
    if values:
        raw = _raw(spec)
        for name, value in values.items():
            path = _key_path(name, value, raw)
            if path.startswith(("nuisance.", "parameters.")) and not isinstance(value, list | tuple | dict):
                value = [value]  # a one-value axis: the spec's trials at this value
            items.append(f"{path}={_yaml(value)}")
    return items


def _raw(spec: str | os.PathLike) -> dict[str, Any]:
    """The spec file as parsed YAML, or {} where it cannot be read (then `spec.load` says why)."""
    try:
        raw = yaml.safe_load(Path(spec).read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return raw if isinstance(raw, dict) else {}


def _key_path(name: str, value: Any, raw: dict[str, Any]) -> str:
    if name in spec_mod.TOP_KEYS:
        return name
    if name not in FIELDS:
        raise TypeError(f"unknown keyword {name!r}; valid: a sweep option ({', '.join(SWEEP_OPTIONS)}), "
                        f"a top-level spec key ({', '.join(spec_mod.TOP_KEYS)}) or a training option "
                        f"({', '.join(FIELDS)}); a nested key goes in overrides, e.g. "
                        "overrides={'scheduler.type': 'asha'}")
    for section in ("nuisance", "parameters"):
        if isinstance(raw.get(section), dict) and name in raw[section]:
            return f"{section}.{name}"
    if isinstance(value, list | tuple) or isinstance(value, dict) and name != "model_args":
        return f"parameters.{name}"
    return f"fixed.{name}"


def _yaml(value: Any) -> str:
    """A Python value as the YAML text that `--set` reads back as that value."""
    if isinstance(value, tuple):
        value = list(value)
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if hasattr(value, "item") and not isinstance(value, list | dict):  # a numpy scalar
        value = value.item()
    text = yaml.safe_dump(value, default_flow_style=True, width=float("inf"))
    return text.removesuffix("\n...\n").removesuffix("\n")


def load_spec(spec: str | os.PathLike, overrides: Mapping[str, Any] | Iterable[str] | None = None,
              **values: Any) -> SweepSpec:
    """The spec file parsed, overridden, validated and expanded into its trials (nothing runs); `overrides` and
    the keywords as for `sweep`. Raises SpecError naming the key and the valid values."""
    return _load(spec, overrides, values)


def _load(spec, overrides, values) -> SweepSpec:
    return spec_mod.load(spec, overrides_for(spec, overrides, values))


def check_sweep(spec: str | os.PathLike, overrides: Mapping[str, Any] | Iterable[str] | None = None, *,
                tracking_uri: str | None = None, storage: str | os.PathLike = "runs",
                out: str | os.PathLike = "reports", num_cpus: int | None = None, address: str | None = None,
                resume: bool = False, **values: Any) -> SweepSpec:
    """Every check `sweep` makes before Ray starts, with nothing started or written (`vgtune sweep --dry-run`):
    the spec, the options (--num-cpus, --resume, the folders), the store, the data, user code, and whether a trial
    fits this machine (on a cluster, --address only answers: its resources are checked once a sweep joins it).
    Returns the spec; raises SpecError as `sweep` would."""
    from vgtune.driver.runner import prepare

    loaded = _load(spec, overrides, values)
    prepare(loaded, _options(tracking_uri, storage, out, num_cpus, address, resume))
    return loaded


def _options(tracking_uri, storage, out, num_cpus, address, resume, verbose=1):
    from vgtune.driver.runner import SweepOptions

    return SweepOptions(address=address, tracking_uri=tracking_uri, storage=os.fspath(storage), out=os.fspath(out),
                        resume=resume, num_cpus=num_cpus, verbose=verbose)


def run_trials(spec: str | os.PathLike, overrides: Mapping[str, Any] | Iterable[str] | None = None, *,
               tracking_uri: str | None = None, storage: str | os.PathLike = "runs",
               out: str | os.PathLike = "reports", num_cpus: int | None = None, address: str | None = None,
               resume: bool = False, verbose: int = 1, **values: Any) -> SweepOutcome:
    """Run a spec's trials through Ray Tune, tracked in MLflow, without the report (`sweep` without its last step).
    Raises SweepInterrupted if Ctrl-C or SIGTERM stopped it first."""
    from vgtune.driver.runner import run_sweep

    loaded = _load(spec, overrides, values)
    outcome = run_sweep(loaded, _options(tracking_uri, storage, out, num_cpus, address, resume, verbose))
    if outcome.unfinished:
        raise SweepInterrupted(outcome, loaded.total_trials)
    return outcome


def sweep(spec: str | os.PathLike, overrides: Mapping[str, Any] | Iterable[str] | None = None, *,
          tracking_uri: str | None = None, storage: str | os.PathLike = "runs", out: str | os.PathLike = "reports",
          num_cpus: int | None = None, address: str | None = None, resume: bool = False, verbose: int = 1,
          **values: Any) -> SweepResult:
    """Run a sweep spec and report it, as `vgtune sweep SPEC` does; returns its trials, verdicts and report folder.

    spec: a sweep spec file, e.g. "sweeps/default.yaml".
    overrides, **values: what `--set` changes, as a mapping of dotted key paths ({"fixed.epochs": 2}) or as
        keywords (epochs=2); see `overrides_for` for where a keyword lands (a top-level spec key, else the
        training option where the spec varies it, else `fixed.`). An unknown keyword raises TypeError.
    tracking_uri: the MLflow store (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db).
    storage: Tune's results and checkpoints; on a cluster a path every node reaches.
    out: the report goes to OUT/<experiment>/.
    num_cpus: local Ray only, the CPUs to use (default: all). address: a Ray cluster (ray://host:10001).
    resume: continue the newest unfinished run of this spec, running only what is unfinished.
    verbose: 0 silent; 1 one progress line; 2 Tune's status table and trial events.

    The report covers every trial of the experiment in the store (a configuration run twice counts once,
    the newest finished run winning), as `vgtune sweep` prints it. Raises SpecError for a spec that cannot
    run (before Ray starts), SweepInterrupted if Ctrl-C or SIGTERM stopped the sweep.
    """
    outcome = run_trials(spec, overrides, tracking_uri=tracking_uri, storage=storage, out=out, num_cpus=num_cpus,
                         address=address, resume=resume, verbose=verbose, **values)
    result = report(experiment=outcome.experiment, tracking_uri=outcome.tracking_uri, out=out)
    result.outcome = outcome
    return result


# ------------------------------------------------------------------ report


def report(sweep: str | None = None, *, experiment: str | None = None, tracking_uri: str | None = None,
           out: str | os.PathLike = "reports") -> SweepResult:
    """Re-analyse a sweep from MLflow and write its report folder, as `vgtune report` does.

    sweep: None for the experiment of the most recent sweep (every sweep of it, as `vgtune report --last`);
        an experiment name (a spec's `name`: every sweep of it); or one sweep's id as `vgtune sweep` printed it
        (e.g. "tiny-20261202-031500": that invocation's runs only, as `--sweep`).
    experiment: the experiment, where `sweep` names one of its sweeps.
    tracking_uri: the MLflow store (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db).
    The report's files are also logged on the sweep run: the newest of the experiment, or of the sweep named.
    Raises SpecError within seconds for a store that cannot be read (a server that does not answer, a folder
    store), UnknownExperiment listing what the store holds (a store that is not there is read, never created).
    """
    from vgtune.tracking.reader import UnknownExperiment, experiment_of, experiments, last_experiment
    from vgtune.tracking.store import check_uri, resolve_uri

    uri = resolve_uri(tracking_uri)
    try:
        check_uri(uri, write=False)
    except ValueError as exc:
        raise spec_mod.SpecError(str(exc)) from None
    only = sweep
    if experiment is None and sweep is None:
        experiment = last_experiment(uri)
    elif experiment is None and sweep in experiments(uri):
        experiment, only = sweep, None
    elif experiment is None:
        experiment = experiment_of(uri, sweep)
        if experiment is None:
            raise UnknownExperiment(f"no experiment or sweep {sweep!r} in {uri}; experiments: "
                                    f"{', '.join(experiments(uri)) or '(none)'}")
    from vgtune.analysis import report as report_mod  # plots and statistics: seconds, so after the checks

    made = report_mod.make(experiment, uri, Path(out), sweep=only)
    return SweepResult(made.tables["trials"], made.tables["effects"], made.folder, experiment, uri, made.findings,
                       made.tables)


# ------------------------------------------------------------------ probe


def probe(config: Mapping[str, Any] | None = None, *, thresholds: Thresholds | Mapping[str, float] | None = None,
          **values: Any) -> dict[str, Any]:
    """Gradient flow at initialization of one network, no training: `vgtune.probe(depth=24, activation="sigmoid")`.

    config, **values: training options (TrainConfig fields; keywords win over `config`), validated here: an unknown
        or bad one raises ValueError listing the valid ones. thresholds: the diagnosis thresholds (Thresholds or a
        mapping).
    Returns {"config": every option, "summary": {grad_attenuation, dead_frac, saturated_frac, diagnosis, the
    mean-field prediction, ...}, "series": the per-block series}.
    """
    from vgtune.core.train import TrainConfig
    from vgtune.core.train import probe as probe_config

    if isinstance(thresholds, Mapping):
        thresholds = Thresholds(**thresholds)
    return probe_config(TrainConfig.from_dict(dict(config or {}) | values), thresholds)


@dataclass
class ProbeResult:
    """`probe_spec`'s answer: every configuration of a spec probed at initialization."""

    table: pd.DataFrame  # one row per configuration, steepest attenuation first (probe.csv)
    path: Path  # the probe.csv written
    phase_diagrams: list[tuple[Path, float]]  # (figure, theory's critical init_scale) per activation
    seconds: float  # the probes' wall time


def probe_spec(spec: str | os.PathLike, overrides: Mapping[str, Any] | Iterable[str] | None = None, *,
               out: str | os.PathLike = "reports", **values: Any) -> ProbeResult:
    """Every configuration of a spec probed at initialization (no training), as `vgtune probe SPEC` does:
    writes OUT/<name>/probe.csv and, where the spec varies init_scale and depth, a phase diagram per activation.
    `overrides` and the keywords as for `sweep`."""
    import pandas as pd

    from vgtune.core.train import TrainConfig
    from vgtune.core.train import probe as probe_config

    loaded = _load(spec, overrides, values)
    spec_mod.check_data(loaded)
    spec_mod.check_models(loaded)
    t0, rows = time.perf_counter(), []
    for t in loaded.trials:
        summary = probe_config(TrainConfig.from_dict(t | {"device": "auto"}), loaded.thresholds,
                               checked=True)["summary"]
        rows.append({k: t[k] for k in loaded.factors or ["depth"]} | {"activation": t["activation"]} | summary)
    seconds = time.perf_counter() - t0
    df = pd.DataFrame(rows).sort_values("grad_attenuation")
    folder = Path(out) / loaded.name
    folder.mkdir(parents=True, exist_ok=True)
    df.to_csv(folder / "probe.csv", index=False)
    return ProbeResult(df, folder / "probe.csv", _phase_diagrams(df, folder), seconds)


def _phase_diagrams(df: pd.DataFrame, out: Path) -> list[tuple[Path, float]]:
    """Measured attenuation over init_scale x depth with the chi_1 = 1 line, one figure per activation."""
    from vgtune.analysis import phase

    if not phase.has_phase_axes(df):
        return []
    made = []
    groups = df.groupby("activation") if "activation" in df.columns else [("", df)]
    for act, g in groups:
        if not phase.has_phase_axes(g):
            continue
        label = f"{act} measured log10 ||dL/dh_1|| / ||dL/dh_L|| at init".strip()
        path = out / (f"phase_{act}.png" if act else "phase.png")
        phase.phase_figure(g, "grad_attenuation", label, trainable=False, cmap="coolwarm_r", vmin=-8,
                           vmax=8).savefig(path)
        made.append((path, phase.critical_scale(g)))
    return made
