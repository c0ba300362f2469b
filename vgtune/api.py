"""The public Python API: what `vgtune sweep | report | probe` run, for notebooks and scripts.

    import vgtune
    result = vgtune.sweep("sweeps/default.yaml", epochs=2)   # keyword name=value means --set name=value
    result = vgtune.sweep("sweeps/default.yaml", overrides={"fixed.epochs": 2})  # dotted paths
    result.trials      # pandas DataFrame: the trials table (trials.csv)
    result.verdicts    # pandas DataFrame: one row per comparison (effect, interval, p_adjusted, verdict)
    result.report_dir  # pathlib.Path of the written report
    vgtune.report(sweep=None)   # re-analyse the most recent sweep's experiment (or a named one) -> same result type
    vgtune.probe(depth=24, activation="sigmoid")  # gradient flow at initialization, no training -> ProbeResult

A bad value raises `vgtune.InputError` naming its key path and the valid values; an unknown keyword is a TypeError.
The command line (`vgtune.cli`) parses its arguments, calls these functions and
prints what they return. Torch, Ray and MLflow are imported on the first call,
not by `import vgtune`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from vgtune.core.diagnosis import Thresholds
from vgtune.core.schema import FIELDS, TrainConfig
from vgtune.driver import spec as spec_mod
from vgtune.exceptions import InputError

if TYPE_CHECKING:
    import pandas as pd

    from vgtune.driver.runner import SweepOutcome
    from vgtune.driver.spec import SweepSpec

SWEEP_OPTIONS = ("tracking_uri", "storage", "out", "num_cpus", "address", "resume", "verbose")


@dataclass(repr=False)
class SweepResult:
    """What a sweep concluded, as its report folder holds it. Its repr is one line (experiment, trials, verdicts,
    report folder); the tables are its fields."""

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

    def __repr__(self) -> str:
        verdicts = self.verdicts["verdict"].value_counts() if "verdict" in self.verdicts.columns else {}
        counts = ", ".join(f"{n} {v}" for v, n in verdicts.items()) or "none"
        return (f"SweepResult(experiment={self.experiment!r}, trials={len(self.trials)}, verdicts: {counts}, "
                f"report_dir={os.fspath(self.report_dir)!r})")

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
        self.outcome, self.total = outcome, total  # total: the most trials the sweep's design could run
        cut = f", {outcome.unfinished} were cut short" if outcome.unfinished else ""
        super().__init__(f"sweep {outcome.sweep_id}: interrupted after {outcome.wall_seconds:.0f}s; "
                         f"{outcome.finished} trials finished{cut}, and the design has more to run.")


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

    _check_options(resume, verbose)
    loaded = _load(spec, overrides, values)
    outcome = run_sweep(loaded, _options(tracking_uri, storage, out, num_cpus, address, resume, verbose))
    if outcome.interrupted:
        raise SweepInterrupted(outcome, loaded.total_trials)
    return outcome


def _check_options(resume: bool, verbose: int) -> None:
    """The sweep options that `prepare` does not check: InputError naming the option."""
    from vgtune.core import checks

    checks.boolean("resume", resume)
    if isinstance(verbose, bool) or verbose not in (0, 1, 2):
        raise checks.invalid("verbose", f"must be 0, 1 or 2, got {verbose!r}")


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
    the newest finished run winning), as `vgtune sweep` prints it. Raises InputError for a bad value (SpecError
    for a spec that cannot run), before Ray starts; SweepInterrupted if Ctrl-C or SIGTERM stopped the sweep.
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
    Raises InputError at `tracking_uri` within seconds for a store that cannot be read (a server that does not
    answer, a folder store), UnknownExperiment (an InputError) listing what the store holds (a store that is not
    there is read, never created).
    """
    from vgtune.tracking.reader import UnknownExperiment, experiment_of, experiments, last_experiment

    uri = _checked_uri(tracking_uri)
    only = sweep
    if experiment is None and sweep is None:
        experiment = last_experiment(uri)
    elif experiment is None and sweep in experiments(uri):
        experiment, only = sweep, None
    elif experiment is None:
        experiment = experiment_of(uri, sweep)
        if experiment is None:
            raise UnknownExperiment("sweep", f"no experiment or sweep {sweep!r} in {uri}", experiments(uri),
                                    "experiments")
    from vgtune.analysis import report as report_mod  # plots and statistics: seconds, so after the checks

    made = report_mod.make(experiment, uri, Path(out), sweep=only)
    return SweepResult(made.tables["trials"], made.tables["effects"], made.folder, experiment, uri, made.findings,
                       made.tables)


def _checked_uri(tracking_uri: str | None) -> str:
    """The MLflow store to read, checked within seconds: InputError at `tracking_uri` if it cannot be read."""
    from vgtune.tracking.store import check_uri, resolve_uri

    uri = resolve_uri(tracking_uri)
    try:
        check_uri(uri, write=False)
    except ValueError as exc:
        raise InputError("tracking_uri", str(exc)) from None
    return uri


# ------------------------------------------------------------------ probe

# The options that shape a probe at initialization (the network, its weights, its data and the probed batches),
# and those named in a probe's config only where they differ from their default. Optimization options (lr,
# optimizer, epochs, ...) do not enter a probe: no update is made.
PROBE_OPTIONS = ("depth", "width", "kernel_size", "activation", "init", "init_scale", "norm", "residual", "pool",
                 "dropout", "arch", "dataset", "batch_size", "seed", "init_probe_batches")
PROBE_OPTIONS_IF_SET = ("model", "model_args", "probe", "root", "image_size", "limit", "split", "split_seed")


def _unit(unit: str) -> Any:
    return field(metadata={"unit": unit})


@dataclass(repr=False)
class ProbeResult:
    """One network's gradient flow at initialization, before any update (`vgtune.probe`).

    Every number's unit is in its field's metadata (`ProbeResult.units()`). A decade is a factor of 10: an
    attenuation of -5 decades means block 1 receives 10^-5 of the gradient block L receives.
    """

    config: dict[str, Any]  # the options that shape the probe (PROBE_OPTIONS, and PROBE_OPTIONS_IF_SET where set)
    grad_attenuation: float = _unit("decades")  # log10(||dL/dh_1|| / ||dL/dh_L||): ~0 healthy, < 0 vanishing
    dead_frac: float = _unit("share of units")  # 0..1, mean over blocks: ReLU-family units never active
    saturated_frac: float = _unit("share of units")  # 0..1, mean over blocks: sigmoid / tanh units saturated
    grad_norm_first: float = _unit("L2 norm")  # ||dL/dh_1||, the gradient at the first block's output
    grad_norm_last: float = _unit("L2 norm")  # ||dL/dh_L||, at the last block's output
    worst_drop_block: int | None = _unit("block")  # the block (2..L) across which the gradient falls most; None
    # where there is no drop to find (one block, a gradient that is not finite)
    worst_drop_decades: float = _unit("decades")  # the change across that block (negative: the gradient shrinks)
    decades_per_block: float = _unit("decades per block")  # grad_attenuation / (L - 1)
    chi1: float = _unit("ratio per block")  # mean-field gradient multiplier per block (1 critical); NaN: no theory
    depth_scale: float = _unit("blocks")  # mean-field depth scale xi_c (inf at criticality); NaN: no theory
    grad_attenuation_predicted: float = _unit("decades")  # the mean-field prediction of grad_attenuation
    theory: str  # "mean field", or why there is no prediction ("n/a: batch norm")
    diagnosis: str  # healthy | vanishing | exploding | dead | saturated (by the thresholds given)
    blocks: pd.DataFrame  # one row per probed block: `block` (int, 1 = first) and the per-block series,
    # grad_norm and weight_grad_norm (L2 norms), act_mean, act_std, dead_frac and saturated_frac (shares); a
    # series that reads NaN at every block is left out (update_ratio always: no update was made)

    @classmethod
    def units(cls) -> dict[str, str]:
        """The unit of each numeric field, by name."""
        return {f.name: f.metadata["unit"] for f in dataclasses.fields(cls) if "unit" in f.metadata}

    def summary(self) -> dict[str, Any]:
        """The scalar fields, as probe.csv's columns (config and blocks left out)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("config", "blocks")}

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={self.config[k]!r}" for k in ("model", "depth", "width", "activation", "init", "norm",
                                                              "residual") if k in self.config)
        drop = (f"; worst drop across block {self.worst_drop_block} ({self.worst_drop_decades:+.2f} decades)"
                if self.worst_drop_block is not None else "")
        predicted = (f" (mean field: {self.grad_attenuation_predicted:+.2f})"
                     if math.isfinite(self.grad_attenuation_predicted) else "")
        return (f"ProbeResult({shown}: {self.diagnosis}; grad_attenuation {self.grad_attenuation:+.2f} decades"
                f"{predicted}{drop}; dead {self.dead_frac:.0%}, saturated {self.saturated_frac:.0%}; "
                f"{len(self.blocks)} blocks)")


def probe(config: TrainConfig | Mapping[str, Any] | None = None, *,
          thresholds: Thresholds | Mapping[str, float] | None = None, **values: Any) -> ProbeResult:
    """Gradient flow at initialization of one network, no training: `vgtune.probe(depth=24, activation="sigmoid")`.

    config, **values: training options (a TrainConfig or a mapping of its fields; keywords win over `config`).
        thresholds: the diagnosis thresholds (a Thresholds or a mapping of its fields).
    Returns a ProbeResult: the options that matter to the probe, the attenuation in decades, the diagnosis, the
    mean-field prediction and the per-block series (`blocks`).
    Raises TypeError for an unknown keyword (listing the valid ones) and InputError (its `path`, `problem`,
    `valid`) for a bad value, an unknown key of `config` or `thresholds`, or data that cannot be loaded.
    """
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        raise TypeError(f"probe() got an unexpected keyword argument {unknown[0]!r}; valid: config, thresholds or "
                        f"a training option ({', '.join(FIELDS)})")
    if isinstance(config, TrainConfig):
        config = config.to_dict()
    if config is not None and not isinstance(config, Mapping):
        raise TypeError(f"config: a TrainConfig or a mapping of training options, got {type(config).__name__}")
    cfg = TrainConfig.from_dict(dict(config or {}) | values)
    return _probe(cfg, _thresholds(thresholds))


def _thresholds(given: Thresholds | Mapping[str, float] | None) -> Thresholds:
    """The diagnosis thresholds, checked: InputError at `thresholds.<name>` for an unknown or bad one."""
    from vgtune.core.checks import OptionError

    if given is None:
        return Thresholds()
    if isinstance(given, Mapping):
        names = [f.name for f in dataclasses.fields(Thresholds)]
        unknown = [k for k in given if k not in names]
        if unknown:
            raise InputError(f"thresholds.{unknown[0]}", "unknown threshold", names)
        given = Thresholds(**given)
    elif not isinstance(given, Thresholds):
        raise TypeError(f"thresholds: a Thresholds or a mapping, got {type(given).__name__}")
    try:
        given.validate()
    except OptionError as exc:
        raise InputError(f"thresholds.{exc.option}", exc.rule or exc.problem, exc.valid) from None
    return given


def _probe(cfg, thresholds: Thresholds, checked: bool = False) -> ProbeResult:
    """`cfg` (a TrainConfig) probed at initialization, as a ProbeResult."""
    import pandas as pd

    from vgtune.core.train import probe as probe_config

    raw = probe_config(cfg, thresholds, checked=checked)
    options = cfg.to_dict()
    defaults = TrainConfig().to_dict()
    kept = {k: options[k] for k in PROBE_OPTIONS} | {k: options[k] for k in PROBE_OPTIONS_IF_SET
                                                      if options[k] != defaults[k]}
    blocks = pd.DataFrame(raw["series"]).dropna(axis="columns", how="all")
    blocks.insert(0, "block", range(1, len(blocks) + 1))
    summary = dict(raw["summary"])
    worst = summary["worst_drop_block"]
    summary["worst_drop_block"] = int(worst) if math.isfinite(worst) else None
    return ProbeResult(kept, blocks=blocks, **summary)


@dataclass
class SpecProbe:
    """`probe_spec`'s answer: every configuration of a spec probed at initialization."""

    table: pd.DataFrame  # one row per configuration, steepest attenuation first (probe.csv)
    path: Path  # the probe.csv written
    blocks_path: Path  # probe_blocks.csv: one row per configuration and block, the per-block series
    profiles: Path  # probe_profiles.png: each configuration's gradient norm per block (log scale)
    phase_diagrams: list[tuple[Path, float]]  # (figure, theory's critical init_scale) per activation
    seconds: float  # the probes' wall time


def probe_spec(spec: str | os.PathLike, overrides: Mapping[str, Any] | Iterable[str] | None = None, *,
               out: str | os.PathLike = "reports", **values: Any) -> SpecProbe:
    """Every configuration of a spec probed at initialization (no training), as `vgtune probe SPEC` does.

    Writes to OUT/<name>/: probe.csv (one row per configuration: `config`, its factors, the summary),
    probe_blocks.csv (one row per configuration and block: `config`, its factors, `block` and the per-block
    series), probe_profiles.png (the gradient norm per block, log scale, one line per configuration) and, where
    the spec varies init_scale and depth, a phase diagram per activation. `config` numbers the configurations
    in the spec's order. `overrides` and the keywords as for `sweep`."""
    import pandas as pd

    from vgtune.analysis import probe_figure

    loaded = _load(spec, overrides, values)
    spec_mod.check_data(loaded)
    spec_mod.check_models(loaded)
    factors = list(dict.fromkeys((loaded.factors or ["depth"]) + ["activation"]))
    keys = ["config", *factors]
    t0, rows, blocks = time.perf_counter(), [], []
    for i, t in enumerate(loaded.trials, start=1):
        result = _probe(TrainConfig.from_dict(t | {"device": "auto"}), loaded.thresholds, checked=True)
        key = dict(zip(keys, [i, *(t[k] for k in factors)]))
        rows.append(key | result.summary())
        blocks.append(result.blocks.assign(**{k: [v] * len(result.blocks) for k, v in key.items()}))
    seconds = time.perf_counter() - t0
    df = pd.DataFrame(rows).sort_values("grad_attenuation", kind="stable")
    per_block = pd.concat(blocks, ignore_index=True)
    per_block = per_block[keys + [c for c in per_block.columns if c not in keys]]
    folder = Path(out) / loaded.name
    folder.mkdir(parents=True, exist_ok=True)
    df.to_csv(folder / "probe.csv", index=False)
    per_block.to_csv(folder / "probe_blocks.csv", index=False)
    shaping = [f for f in factors if f in PROBE_OPTIONS + PROBE_OPTIONS_IF_SET]  # lr and the like: one line
    probe_figure.profiles(df, per_block, shaping).savefig(folder / "probe_profiles.png")
    return SpecProbe(df, folder / "probe.csv", folder / "probe_blocks.csv", folder / "probe_profiles.png",
                     _phase_diagrams(df, folder), seconds)


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
