"""Sweep specs (`sweeps/*.yaml`): parse, validate, expand into trial configurations.

Every error is a `SpecError` with one line that names the key path and the
allowed values, raised before Ray starts or any MLflow run exists.

    name: default                 # MLflow experiment name
    dataset: digits               # or {name: cifar10, root: ~/data, download: true}
    parameters:                   # a list is a grid axis (full factorial across axes)
      depth: [4, 12, 24]
      lr: {loguniform: [0.001, 0.1]}   # a distribution, sampled `samples` times
    variants: [{}, {norm: batch}]    # each applied to every grid point (one change at a time)
    configs: [{depth: 4, norm: batch}]  # explicit configurations besides the grid
    fixed: {epochs: 6}
    nuisance: {lr: [0.01, 0.05]}  # tuned per arm on `metric` (validation data), never compared
    repeats: 2                    # select: seeds per arm and nuisance setting
    extend: 2                     # grid steps the bracket may try past an edge the best setting sits on
    seeds: [5, 10, 20]            # confirm: fresh seeds per arm after each look (`confirm: 5` is seeds: [5])
    margin: 0.05                  # an effect inside +-margin (test accuracy) is negligible
    family: deepest               # the comparisons judged together: deepest | all | {depth: [24], ...}
    split: per_seed               # each seed also draws the train/validation split (fixed: one split)
    correction: bonferroni        # how the family shares its 5%: bonferroni | none (holm | bh: one look)

With `nuisance:`, each arm first trains at every nuisance setting and chooses
one on validation data, trying steps past the grid's edge while its best lies
there; then it retrains at its choice on fresh seeds at the full budget (no
early stopping), in looks, while a comparison of it in the family is undecided;
only these fresh seeds' test accuracy enters the report's effects
(`vgtune.analysis.design` decides, `vgtune.driver.searcher` runs it in Tune).

A spec may train another network: `arch: resnet_cifar`, or the user's own
`model: mypkg.nets:build` (imported from the spec's folder or PYTHONPATH) with
`probe: [module paths]` when it has no `blocks`, and keywords for it under
`model_args:` in `fixed` (values) or `parameters` (grid axes); likewise
`dataset: mypkg.data:load`. `check_models` builds each such network once on
the driver, so a broken one fails before Ray starts.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import itertools
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from vgtune.analysis import effects, verdicts
from vgtune.analysis.design import DesignConfig
from vgtune.core import checks, usercode
from vgtune.core.checks import OptionError
from vgtune.core.columns import SELECTION_METRICS, TEST_METRICS
from vgtune.core.diagnosis import Thresholds
from vgtune.core.schema import FIELDS, SPLITS, TrainConfig
from vgtune.exceptions import InputError

TOP_KEYS = ("name", "dataset", "model", "arch", "probe", "metric", "mode", "parameters", "nuisance", "repeats",
            "variants", "configs", "samples", "seed", "fixed", "resources", "scheduler", "stop", "max_failures",
            "checkpoint_every", "thresholds", "pack", "confirm", "seeds", "margin", "extend", "family", "split",
            "correction")
# `dataset:` keys -> TrainConfig fields: each its own name, but `name`, which is the field `dataset`.
DATASET_KEYS = {"name": "dataset", "root": "root", "download": "download",
                "image_size": "image_size", "limit": "limit", "split_seed": "split_seed", "max_gb": "max_gb"}
MODEL_KEYS = ("model", "arch", "probe")  # top-level keys that are TrainConfig fields of the same name
ARGS = "model_args"  # keywords for a user factory: a mapping in fixed/variants/configs, of axes in parameters
STAGES = ("select", "confirm")  # select chooses each arm's nuisance setting; confirm retrains it on fresh seeds
MODES = ("max", "min")
BRACKETED = ("lr",)  # nuisance options whose listed grid the design extends past an edge (geometric steps)
# The direction in which a metric is better, for a spec that gives `metric:` without `mode:` (grad_attenuation
# has none: healthy is near 0, so a spec that selects on it says which end it wants).
DIRECTIONS = {"val_acc": "max", "train_acc": "max", "train_loss": "min"}
SCHEDULERS = {"fifo": (), "asha": ("grace_period", "reduction_factor", "max_t")}
DISTRIBUTIONS = ("loguniform", "uniform", "randint", "choice")
STOP_KEYS = ("gradient_collapse", "attenuation_floor", "patience")
TRAIN_KEYS = FIELDS
# The TrainConfig fields a top-level key sets, by that key's path: where an error about the field points.
OWN_PATHS = {field: "dataset" if key == "name" else f"dataset.{key}" for key, field in DATASET_KEYS.items()} | {
    key: key for key in MODEL_KEYS}
# Set per trial by a top-level section of the spec (field -> section), not by parameters.
RESERVED = {f: "dataset" for f in DATASET_KEYS.values()} | {"threads": "resources", "device": "resources",
                                                            "probe": "probe", "split": "split"}


class SpecError(InputError):
    """A sweep spec that cannot run, raised before Ray starts or any MLflow run exists.

    Carries its key path as data: `path` (`parameters.depth[1]`, `dataset.max_gb`; "" for an error about no one
    key, such as a missing file), `problem` (what is wrong) and `valid` (the allowed values, where they are a
    list). str() is one line, `path: problem; valid: a, b`. `SpecError(message)` alone has no path.
    """

    @classmethod
    def at(cls, path: str, exc: OptionError, own: bool = False) -> SpecError:
        """An option's error from vgtune.core at `path`; `own`: the path is the option's own key, so the
        message states the broken rule without naming the option twice (`dataset.max_gb: must be ...`)."""
        return cls(path, exc.rule if own and exc.rule else exc.problem, exc.valid, exc.hint)


@dataclass
class Resources:
    cpu: float = 1.0  # CPUs per trial (torch threads = max(1, int(cpu)))
    gpu: float = 0.0  # GPUs per trial; fractional shares one GPU between trials


@dataclass
class StopRule:
    gradient_collapse: bool = True  # stop trials whose first-block gradient collapsed
    attenuation_floor: float = -6.0  # attenuation at or below this counts as collapsed
    patience: int = 2  # consecutive collapsed epochs before stopping


@dataclass
class SweepSpec:
    name: str  # MLflow experiment name and run-folder prefix
    trials: list[dict[str, Any]]  # complete TrainConfig dicts, one per trial
    metric: str = "val_acc"  # what schedulers optimize
    mode: str = "max"  # max | min: the spec's `mode:`, else the metric's direction (`DIRECTIONS`)
    resources: Resources = field(default_factory=Resources)  # per trial
    scheduler: dict[str, Any] = field(default_factory=lambda: {"type": "fifo"})  # fifo | asha + options
    stop: StopRule = field(default_factory=StopRule)  # gradient-collapse stopper
    max_failures: int = 2  # retries of a crashed trial, each from its last checkpoint
    checkpoint_every: int = 1  # epochs between trial checkpoints
    thresholds: Thresholds = field(default_factory=Thresholds)  # diagnosis thresholds
    raw: dict[str, Any] = field(default_factory=dict)  # the spec as parsed, after --set
    meta: list[dict[str, str]] = field(default_factory=list)  # per trial: arm, nuisance, variant (see `trial_meta`)
    nuisance: list[str] = field(default_factory=list)  # options tuned separately for every arm
    repeats: int | None = None  # seeds 0..repeats-1 of every arm's settings
    folder: str | None = None  # the spec file's folder, where `module:function` references are imported from
    pack: int | str = "off"  # off | auto | N: trials of one shape trained together as one fused network
    looks: tuple[int, ...] = ()  # fresh seeds per arm after each confirmation look; (): `trials` are the sweep
    first_seed: int = 0  # the first confirmation seed (after every selection seed)
    margin: float = verdicts.DEFAULT_MARGIN  # |effect| in test accuracy inside which a comparison is negligible
    extend: int = 2  # grid steps the bracket may try past each edge of a nuisance grid
    family: Any = effects.FAMILY_DEFAULT  # the comparisons judged together: deepest | all | {cell column: values}
    family_size: int = 0  # comparisons in the family (m; their share of the level is 5%/m)
    correction: str = "bonferroni"  # how the family shares its level: bonferroni | none (holm | bh: one look)
    grid: dict[str, list] = field(default_factory=dict)  # the bracketed options' listed values (BRACKETED)

    @property
    def stage(self) -> str:
        """What `trials` are: `select` (a sweep with nuisance options chooses first) or `confirm`."""
        return _stage(self.nuisance)

    @property
    def arms(self) -> list[str]:
        """The arm ids, in spec order."""
        return list(dict.fromkeys(m["arm"] for m in self.meta))

    @functools.cached_property
    def total_trials(self) -> int:
        """The most trials the sweep can run: every bracket step and every look for every arm."""
        return self.design().most()

    def confirm_seeds(self) -> list[int]:
        """Every fresh confirmation seed, in look order (disjoint from the selection seeds)."""
        return list(range(self.first_seed, self.first_seed + self.looks[-1])) if self.looks else []

    def design_config(self) -> DesignConfig:
        """What the sweep's adaptive design takes from this spec (`vgtune.analysis.design`)."""
        plan = verdicts.Plan(self.looks or verdicts.DEFAULT_LOOKS, self.margin, self.correction)
        return DesignConfig(looks=self.looks, first_seed=self.first_seed, nuisance=tuple(self.nuisance),
                            grid=self.grid, extend=self.extend, metric=self.metric, mode=self.mode, plan=plan,
                            family=self.family, chance_margin=self.thresholds.chance_margin)

    def design(self):
        """The sweep's adaptive design over these trials (a bracket's next setting must pass the spec's checks)."""
        from vgtune.analysis.design import Design

        return Design(self.items, self.design_config(), check=_valid)

    @property
    def factors(self) -> list[str]:
        """Training options that differ between trials."""
        return [k for k in TRAIN_KEYS if len({repr(t[k]) for t in self.trials}) > 1]

    @property
    def configs(self) -> list[TrainConfig]:
        """The trials as the TrainConfigs `parse` checked (typed; nothing is validated again)."""
        return [TrainConfig.from_dict(t) for t in self.trials]

    @property
    def items(self) -> list[dict[str, Any]]:
        """The trials as Tune's grid sees them (`vgtune.core.packing.plan` packs them): `{"train", "meta"}`."""
        return [{"train": t, "meta": m} for t, m in zip(self.trials, self.meta)]

    @property
    def references(self) -> list[str]:
        """The user's `module:function` models and loaders the trials use."""
        from vgtune.core.usercode import is_reference

        refs = {t[k] for t in self.trials for k in ("model", "dataset") if is_reference(t[k])}
        return sorted(refs)


# ------------------------------------------------------------------ reading

def load(path: str | Path, overrides: list[str] | None = None) -> SweepSpec:
    """Read, override (`key.path=value`), validate and expand a spec file."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"spec file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SpecError(f"{path}: YAML syntax error{where}: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: a spec is a mapping of keys ({', '.join(TOP_KEYS)}), got {type(raw).__name__}")
    raw.setdefault("name", path.stem)
    for item in overrides or []:
        apply_override(raw, item)
    folder = str(path.parent.resolve())
    if _refers_to_code(raw):  # `model: mynet:build` beside the spec; other specs leave sys.path alone
        usercode.add_path(folder)
    spec = parse(raw)
    spec.folder = folder
    return spec


def _refers_to_code(raw: dict) -> bool:
    """Whether any value in the spec is a `module:function` reference (what `load` imports)."""
    if isinstance(raw, dict):
        return any(_refers_to_code(v) for v in raw.values())
    if isinstance(raw, list):
        return any(_refers_to_code(v) for v in raw)
    return usercode.is_reference(raw)


def apply_override(raw: dict[str, Any], item: str) -> None:
    """`fixed.epochs=2` or `parameters.depth=[4,8]`: the value is read as YAML."""
    key, sep, text = item.partition("=")
    if not sep or not key:
        raise SpecError(f"--set {item!r}", "expected key.path=value, e.g. fixed.epochs=2")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        raise SpecError(f"--set {key}", f"cannot read value {text!r} as YAML") from None
    parts = key.split(".")
    if parts[0] not in TOP_KEYS:
        raise SpecError(f"--set {key}", f"unknown key {parts[0]!r}", TOP_KEYS)
    node = raw
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None or isinstance(child, str) and part == "dataset":
            child = {"name": child} if isinstance(child, str) else {}
            node[part] = child
        if not isinstance(child, dict):
            raise SpecError(f"--set {key}", f"{'.'.join(parts[:i + 1])} is not a mapping")
        node = child
    node[parts[-1]] = value


# ------------------------------------------------------------------ validation

def _mapping(raw: dict, key: str, default: Any = None) -> dict:
    value = raw.get(key, default if default is not None else {})
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise SpecError(key, f"expected a mapping, got {type(value).__name__} {value!r}")
    return value


def _check_keys(where: str, given: dict, allowed: tuple[str, ...] | list[str]) -> None:
    unknown = [k for k in given if k not in allowed]
    if unknown:
        raise SpecError(f"{where}{unknown[0]}", "unknown key", allowed)


def _number(where: str, value: Any, low: float, integer: bool = False, strict: bool = False) -> Any:
    try:
        if integer:
            return checks.integer(where, value, int(low) + int(strict))
        return checks.number(where, value, low, low_open=strict)
    except OptionError as exc:
        raise SpecError(where, exc.rule) from None


def _dataset(raw: dict) -> dict[str, Any]:
    value = raw.get("dataset", "digits")
    if isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, dict) or "name" not in value:
        raise SpecError("dataset", f"expected a name or a mapping with 'name', got {value!r}")
    _check_keys("dataset.", value, tuple(DATASET_KEYS))
    return {DATASET_KEYS[k]: v for k, v in value.items()}


def _model(raw: dict) -> dict[str, Any]:
    """The top-level model keys as TrainConfig fields."""
    return {key: raw[key] for key in MODEL_KEYS if key in raw}


def _flat(where: str, values: dict[str, Any]) -> dict[str, Any]:
    """`model_args: {k: v}` as `model_args.k: v` keys, so merging sections merges the keywords."""
    if ARGS not in values:
        return values
    args = values[ARGS]
    if not isinstance(args, dict) or not all(isinstance(k, str) for k in args):
        raise SpecError(f"{where}{ARGS}", f"expected a mapping of keyword names to values, got {args!r}")
    return {k: v for k, v in values.items() if k != ARGS} | {f"{ARGS}.{k}": v for k, v in args.items()}


def _nest(values: dict[str, Any]) -> dict[str, Any]:
    """The inverse of `_flat`: the `model_args.k` keys back into one mapping (sorted by keyword)."""
    prefix = ARGS + "."
    args = {k[len(prefix):]: v for k, v in sorted(values.items()) if k.startswith(prefix)}
    return {k: v for k, v in values.items() if not k.startswith(prefix)} | ({ARGS: args} if args else {})


def _checked(values: dict[str, Any]) -> TrainConfig:
    """These values as a TrainConfig, every rule checked (names included); OptionError naming the option."""
    from vgtune.core.train import validate  # the registered names: imports torch, when a spec is checked

    cfg = TrainConfig(**_nest(values))
    validate(cfg)
    return cfg


def _error(where: str, exc: OptionError, keys: Iterable[str] = ()) -> SpecError:
    """The option's error at its own key: a top-level one (`model`, `dataset.max_gb`), or `where.option` when
    `where` is a section that sets it (`keys`: the section's keys, `model_args.k` for a factory's keyword);
    else at `where`."""
    own = OWN_PATHS.get(exc.option)
    if own:
        return SpecError.at(own, exc, own=True)
    if any(key == exc.option or key.startswith(f"{exc.option}.") for key in keys):
        return SpecError.at(f"{where}.{exc.option}", exc, own=True)
    return SpecError.at(where, exc)


def _train_config(where: str, values: dict[str, Any], keys: Iterable[str] = ()) -> TrainConfig:
    try:
        return _checked(values)
    except OptionError as exc:
        raise _error(where, exc, keys) from None


def _check_values(base: dict[str, Any], fixed: dict[str, Any], axes: dict[str, list | dict]) -> None:
    """Every grid value, with the first value of the other axes (rules span fields: resnet_cifar's depth, a
    factory's keywords), so an error names `parameters.KEY[i]`, or `fixed.KEY` when the option it names is fixed
    (`fixed` when vgtune's default of an option the spec does not set clashes with what it does set)."""
    firsts = {k: _first(a) for k, a in axes.items()}
    try:
        _checked(base | fixed | firsts)
    except OptionError as exc:
        raise _error(f"parameters.{exc.option}[0]" if exc.option in axes else "fixed", exc, fixed) from None
    for key, axis in axes.items():
        for i, value in enumerate(_values(axis)):
            _train_config(f"parameters.{key}[{i}]", base | fixed | firsts | {key: value})


def _check_training_keys(where: str, values: dict) -> None:
    allowed = [k for k in TRAIN_KEYS if k not in RESERVED]
    for key in values:
        if key in RESERVED:
            raise SpecError(f"{where}{key}", f"set by the spec's top-level {RESERVED[key]}: key, not here")
    _check_keys(where, values, allowed)


def _axis(key: str, value: Any, section: str = "parameters") -> list | dict:
    where = f"{section}.{key}"
    if isinstance(value, list):
        if not value:
            raise SpecError(where, "empty list; give at least one value")
        return value
    if isinstance(value, dict):
        if len(value) != 1 or next(iter(value)) not in DISTRIBUTIONS:
            raise SpecError(where, f"a distribution is one of {{{', '.join(DISTRIBUTIONS)}: ...}}, got {value!r}")
        (kind, args), = value.items()
        if kind == "choice":
            if not isinstance(args, list) or not args:
                raise SpecError(f"{where}.choice", f"expected a non-empty list, got {args!r}")
        elif not (isinstance(args, list) and len(args) == 2 and all(checks.is_number(a) for a in args)
                  and args[0] < args[1]):
            raise SpecError(f"{where}.{kind}", f"expected [low, high] with low < high, got {args!r}")
        elif kind == "loguniform" and args[0] <= 0:
            raise SpecError(f"{where}.loguniform", f"bounds must be > 0, got {args!r}")
        elif kind == "randint" and not all(isinstance(a, int) and not isinstance(a, bool) for a in args):
            raise SpecError(f"{where}.randint", f"bounds must be integers, got {args!r}")
        return value
    return [value]  # a scalar is a one-value axis



def _values(axis: list | dict) -> list:
    """The values of an axis that can be listed: a grid, a choice; a range's lower bound."""
    if isinstance(axis, list):
        return axis
    (kind, args), = axis.items()
    return list(args) if kind == "choice" else [args[0]]


def _first(axis: list | dict) -> Any:
    """An axis's first value (a distribution's first choice or lower bound)."""
    return _values(axis)[0]


def _sample(dist: dict, rng: np.random.Generator) -> Any:
    (kind, args), = dist.items()
    if kind == "loguniform":
        return float(np.exp(rng.uniform(np.log(args[0]), np.log(args[1]))))
    if kind == "uniform":
        return float(rng.uniform(args[0], args[1]))
    if kind == "randint":
        return int(rng.integers(args[0], args[1]))
    return args[int(rng.integers(len(args)))]


def _config_list(raw: dict, key: str, default: list) -> list[dict[str, Any]]:
    items = raw.get(key)
    if items is None:
        return default
    if not isinstance(items, list) or not items or not all(isinstance(c, dict) for c in items):
        raise SpecError(key, f"expected a non-empty list of mappings, got {items!r}")
    for i, c in enumerate(items):
        _check_training_keys(f"{key}[{i}].", c)
    return [_flat(f"{key}[{i}].", c) for i, c in enumerate(items)]


def _resources(raw: dict) -> Resources:
    given = _mapping(raw, "resources")
    _check_keys("resources.", given, ("cpu", "gpu"))
    res = Resources(**given)
    _number("resources.cpu", res.cpu, 0, strict=True)
    _number("resources.gpu", res.gpu, 0)
    if res.gpu > 1 and res.gpu != int(res.gpu):
        raise SpecError("resources.gpu", f"fractions are allowed below 1 only, got {res.gpu}")
    return res


def _scheduler(raw: dict) -> dict[str, Any]:
    sched = dict(_mapping(raw, "scheduler", {"type": "fifo"}))
    kind = sched.setdefault("type", "fifo")
    if kind not in SCHEDULERS:
        raise SpecError("scheduler.type", f"unknown scheduler {kind!r}", SCHEDULERS)
    _check_keys("scheduler.", sched, ("type",) + SCHEDULERS[kind])
    for key in SCHEDULERS[kind]:
        if key in sched:
            _number(f"scheduler.{key}", sched[key], 1, integer=True)
    return sched


def _stop(raw: dict) -> StopRule:
    given = _mapping(raw, "stop")
    _check_keys("stop.", given, STOP_KEYS)
    rule = StopRule(**given)
    try:
        checks.boolean("gradient_collapse", rule.gradient_collapse)
        checks.integer("patience", rule.patience, 1)
        checks.number("attenuation_floor", rule.attenuation_floor, high=0, high_open=True)
    except OptionError as exc:
        raise SpecError(f"stop.{exc.option}", exc.rule) from None
    return rule


def _thresholds(raw: dict) -> Thresholds:
    given = _mapping(raw, "thresholds")
    names = [f.name for f in dataclasses.fields(Thresholds)]
    _check_keys("thresholds.", given, names)
    thresholds = Thresholds(**given)
    try:
        thresholds.validate()
    except OptionError as exc:
        raise SpecError(f"thresholds.{exc.option}", exc.rule) from None
    return thresholds


def parse(raw: dict[str, Any]) -> SweepSpec:
    """Validate a parsed spec and expand it into trial configurations."""
    raw = copy.deepcopy(raw)
    _check_keys("", raw, TOP_KEYS)
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip() or "/" in name:
        raise SpecError("name", f"must be a non-empty string without '/', got {name!r}")
    metric = raw.get("metric", "val_acc")
    if metric in TEST_METRICS:
        raise SpecError("metric", f"{metric} is test data, which never chooses a setting or drives a scheduler",
                        SELECTION_METRICS)
    if metric not in SELECTION_METRICS:
        raise SpecError("metric", f"unknown metric {metric!r}", SELECTION_METRICS)
    mode = _mode(raw, metric)
    resources = _resources(raw)
    correction = _choice(raw, "correction", verdicts.CORRECTIONS)
    base = _dataset(raw) | _model(raw) | {"threads": max(1, int(resources.cpu)),
                                          "device": "cuda" if resources.gpu > 0 else "cpu",
                                          "split": _choice(raw, "split", SPLITS)}
    fixed = _mapping(raw, "fixed")
    _check_training_keys("fixed.", fixed)
    fixed = _flat("fixed.", fixed)
    parameters = _mapping(raw, "parameters")
    _check_training_keys("parameters.", parameters)
    parameters = _flat("parameters.", parameters)
    axes = {k: _axis(k, v) for k, v in parameters.items()}
    explicit, variants = _config_list(raw, "configs", []), _config_list(raw, "variants", [{}])
    samples = _number("samples", raw.get("samples", 1), 1, integer=True)
    seed = _number("seed", raw.get("seed", 0), 0, integer=True)
    fixed_only = not axes and not explicit and variants == [{}]  # then one trial of the fixed configuration

    # Each grid value alone, so an error points at parameters.KEY[i].
    _check_values(base, fixed, axes)

    grid_keys = [k for k, a in axes.items() if isinstance(a, list)]
    dist_keys = [k for k, a in axes.items() if isinstance(a, dict)]
    rng = np.random.default_rng(seed)
    nuisance = _nuisance(raw, parameters, base | fixed, variants, explicit)
    repeats = _repeats(raw, parameters, fixed, variants, explicit)
    looks = _looks(raw, nuisance, repeats, [parameters, fixed, *variants, *explicit])
    settings = _settings(nuisance, samples, rng)
    if nuisance:
        seeds = [{"seed": i} for i in range(repeats)] if repeats else [{}]
    else:  # the first look's seeds (or none: the trials as the grid says)
        seeds = [{"seed": i} for i in range(looks[0])] if looks else [{}]
    stage = {"stage": _stage(nuisance), "look": "1" if looks and not nuisance else ""}
    # (where, scientific values, variant label, the keys `where` itself sets: an error about one names it there)
    points: list[tuple[str, dict[str, Any], str, dict[str, Any]]] = []
    if axes or fixed_only or variants != [{}]:
        for _ in range(samples if dist_keys or not nuisance else 1):  # with nuisance, samples draw settings
            for point in itertools.product(*(axes[k] for k in grid_keys)):
                values = base | fixed | dict(zip(grid_keys, point)) | {k: _sample(axes[k], rng) for k in dist_keys}
                for i, variant in enumerate(variants):
                    points.append((f"variants[{i}]" if variant else "parameters", values | variant, _label(variant),
                                   variant))
    points += [(f"configs[{i}]", base | fixed | c, "", c) for i, c in enumerate(explicit)]
    trials: list[dict[str, Any]] = []
    meta: list[dict[str, str]] = []
    for where, values, variant, own in points:
        for setting in settings:
            for s in seeds:
                trials.append(_train_config(where, values | setting | s, own).to_dict())
                meta.append(trial_meta(trials[-1], list(nuisance), variant) | stage)

    max_failures = _number("max_failures", raw.get("max_failures", 2), 0, integer=True)
    checkpoint_every = _number("checkpoint_every", raw.get("checkpoint_every", 1), 1, integer=True)
    scheduler = _scheduler(raw)
    if nuisance and scheduler["type"] != "fifo":
        raise SpecError("scheduler.type", f"{scheduler['type']} would let one arm's trials cut another's short, so "
                        "nuisance settings would not be chosen fairly; use fifo with nuisance")
    if len(looks) > 1 and scheduler["type"] != "fifo":
        raise SpecError("scheduler.type", f"{scheduler['type']} would cut confirmation trials short, and a "
                        f"comparison judged over looks needs every trial at the full budget; use fifo with seeds: "
                        f"{list(looks)}, or one look (seeds: [{looks[-1]}])")
    if correction in ("holm", "bh") and len(looks) > 1:
        raise SpecError("correction", f"{correction} adjusts the family's p-values all at once, which looks do not "
                        f"wait for; with seeds: {list(looks)} use bonferroni or none (or one look: seeds: "
                        f"[{looks[-1]}])", ("bonferroni", "none"))
    spec = SweepSpec(name=name, trials=trials, metric=metric, mode=mode, resources=resources,
                     scheduler=scheduler, stop=_stop(raw), max_failures=max_failures,
                     checkpoint_every=checkpoint_every, thresholds=_thresholds(raw), raw=raw, meta=meta,
                     nuisance=list(nuisance), repeats=repeats, pack=_pack(raw, scheduler, trials), looks=looks,
                     first_seed=max(t["seed"] for t in trials) + 1 if nuisance else 0,
                     margin=_margin(raw), extend=_number("extend", raw.get("extend", 2), 0, integer=True),
                     family=_family(raw), correction=correction,
                     grid={k: list(a) for k, a in nuisance.items() if k in BRACKETED and isinstance(a, list)})
    spec.family_size = _family_size(spec, "family" in raw)
    return spec


def _mode(raw: dict, metric: str) -> str:
    """`mode:`, else the direction in which `metric` is better (`DIRECTIONS`); a metric without one needs it."""
    if "mode" not in raw:
        if metric not in DIRECTIONS:
            raise SpecError("mode", f"metric {metric} has no better end to assume (healthy is near 0); set mode: "
                            "max or mode: min")
        return DIRECTIONS[metric]
    mode = raw["mode"]
    if mode not in MODES:
        raise SpecError("mode", f"must be one of {', '.join(MODES)}, got {mode!r}")
    return mode


def _stage(nuisance) -> str:
    """The stage a spec's own trials are: select where there are nuisance options to choose, else confirm."""
    return STAGES[0] if nuisance else STAGES[1]


def _choice(raw: dict, key: str, valid: tuple[str, ...]) -> str:
    """A top-level key whose value is one of `valid` (default: the first)."""
    value = raw.get(key, valid[0])
    if value not in valid:
        raise SpecError(key, f"must be one of {', '.join(valid)}, got {value!r}")
    return value


def _looks(raw: dict, nuisance: dict, repeats: int | None, sections: list[dict]) -> tuple[int, ...]:
    """Fresh seeds per arm after each confirmation look: `seeds: [5, 10, 20]` (the default with nuisance), or
    `confirm: N` (one look). Without nuisance the looks' seeds are the only ones: `repeats: N` is one look of N;
    with neither, the trials are the grid's."""
    given = [k for k in ("seeds", "confirm") if raw.get(k) is not None]
    if len(given) > 1:
        raise SpecError("confirm", "give the confirmation seeds once: seeds: [5, 10, 20] (looks) or confirm: N "
                        "(one look), not both")
    if not given:
        if nuisance:
            return verdicts.DEFAULT_LOOKS
        return (repeats,) if repeats else ()
    key = given[0]
    if key == "confirm":
        looks = (_number("confirm", raw["confirm"], 1, integer=True),)
    else:
        looks = _seed_looks(raw["seeds"])
    if not nuisance and repeats:
        raise SpecError(key, f"without nuisance, the seeds are the looks' ({list(looks)}); drop repeats: {repeats}")
    if not nuisance and any("seed" in section for section in sections):
        raise SpecError(key, "the looks draw the seeds; remove seed from parameters, fixed, variants and configs")
    return looks


def _seed_looks(value: Any) -> tuple[int, ...]:
    ok = (isinstance(value, list) and value and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1
                                                    for v in value) and all(b > a for a, b in zip(value, value[1:])))
    if not ok:
        raise SpecError("seeds", f"must be an increasing list of positive integers (the seeds after each look, "
                        f"e.g. [5, 10, 20]), got {value!r}")
    return tuple(value)


def _margin(raw: dict) -> float:
    value = raw.get("margin", verdicts.DEFAULT_MARGIN)
    if not checks.is_number(value) or not 0 < value < 1:
        raise SpecError("margin", f"must be a number in (0, 1): a difference in test accuracy (0.05 is 5 points), "
                        f"got {value!r}")
    return float(value)


def _family(raw: dict) -> Any:
    value = raw.get("family", effects.FAMILY_DEFAULT)
    if value in effects.FAMILY_WORDS:
        return value
    allowed = (*FIELDS, "variant")
    if not isinstance(value, dict) or not value:
        raise SpecError("family", f"must be {' or '.join(effects.FAMILY_WORDS)} or a mapping of cell columns to "
                        f"values (e.g. {{depth: [24]}}), got {value!r}", effects.FAMILY_WORDS)
    _check_keys("family.", value, allowed)
    return value


def _family_size(spec: SweepSpec, given: bool) -> int:
    """The family's comparisons; a family that selects none is refused (where the spec named one)."""
    design = spec.design()
    size = sum(c.family for c in design.comparisons)
    if given and not size:
        cells = sorted({c.key.split("|", 1)[1] for c in design.comparisons if "|" in c.key})
        raise SpecError("family", f"{spec.family!r} selects no comparison; the comparisons' cells are "
                        + ("; ".join(cells[:8]) or "(none: this spec compares nothing)"))
    return size


def _valid(train: dict[str, Any]) -> bool:
    """Whether a training configuration passes every check (a bracket's step past the grid may not)."""
    try:
        _checked(train)
    except OptionError:
        return False
    return True


def _pack(raw: dict, scheduler: dict[str, Any], trials: list[dict[str, Any]]) -> int | str:
    from vgtune.core.packing import parse_size, why_unpackable

    try:
        size = parse_size(raw.get("pack", "off"))
    except ValueError as exc:
        raise SpecError("pack", str(exc)) from None
    if size != "off" and scheduler["type"] != "fifo":
        raise SpecError("pack", f"scheduler {scheduler['type']} pauses and stops trials one by one, which a fused pack "
                        "cannot; use scheduler.type fifo (the gradient-collapse stopper works per member) or pack: off")
    reasons = [why_unpackable(t) for t in trials]
    if isinstance(size, int) and all(reasons):
        raise SpecError("pack", f"{size}: no trial of this spec can be packed ({reasons[0]}); use pack: off")
    return size


# ------------------------------------------------------------------ arms and nuisance

def _label(values: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in values.items())


def trial_meta(train: dict[str, Any], nuisance: list[str], variant: str = "") -> dict[str, str]:
    """arm: a stable id of the scientific factors (everything but nuisance options and the seed);
    nuisance: the trial's nuisance setting (`lr=0.02`); variant: the spec variant it came from."""
    scientific = {k: v for k, v in sorted(train.items()) if k not in nuisance and k != "seed"}
    digest = hashlib.sha1(json.dumps(scientific, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return {"arm": digest, "nuisance": _label({k: train[k] for k in nuisance}), "variant": variant}


def _nuisance(raw: dict, parameters: dict, fixed: dict, variants: list[dict],
              explicit: list[dict]) -> dict[str, list | dict]:
    given = _mapping(raw, "nuisance")
    _check_training_keys("nuisance.", given)
    for key in given:
        if key == ARGS:
            raise SpecError(f"nuisance.{ARGS}", "a model's keywords are scientific; sweep them under parameters")
        if key == "seed":
            raise SpecError("nuisance.seed", "seeds are not tuned; ask for several with `repeats: N`")
        if key in parameters:
            raise SpecError(f"nuisance.{key}", "also under parameters; a factor is either scientific (parameters, "
                            "compared) or nuisance (tuned per arm), not both")
        for section, items in (("variants", variants), ("configs", explicit)):
            for i, item in enumerate(items):
                if key in item:
                    raise SpecError(f"{section}[{i}].{key}", "a nuisance option, tuned for every arm; remove it here")
    axes = {k: _axis(k, v, "nuisance") for k, v in given.items()}
    for key, axis in axes.items():
        for i, value in enumerate(axis if isinstance(axis, list) else axis.get("choice", [])):
            _train_config(f"nuisance.{key}[{i}]", fixed | {key: value})
    return axes


def _settings(axes: dict[str, list | dict], samples: int, rng: np.random.Generator) -> list[dict[str, Any]]:
    """Every arm's candidate nuisance settings: the grid, times `samples` draws of any distribution."""
    if not axes:
        return [{}]
    grid_keys = [k for k, a in axes.items() if isinstance(a, list)]
    dist_keys = [k for k, a in axes.items() if isinstance(a, dict)]
    draws = [{k: _sample(axes[k], rng) for k in dist_keys} for _ in range(samples if dist_keys else 1)]
    return [dict(zip(grid_keys, point)) | d for point in itertools.product(*(axes[k] for k in grid_keys))
            for d in draws]


def _repeats(raw: dict, parameters: dict, fixed: dict, variants: list[dict], explicit: list[dict]) -> int | None:
    if raw.get("repeats") is None:
        return None
    repeats = _number("repeats", raw["repeats"], 1, integer=True)
    for section, items in (("parameters", [parameters]), ("fixed", [fixed]), ("variants", variants),
                           ("configs", explicit)):
        if any("seed" in item for item in items):
            raise SpecError("repeats", f"seeds come from repeats (0..{repeats - 1}); remove seed from {section}")
    return repeats


def check_resources(spec: SweepSpec, available: dict[str, float]) -> None:
    """A trial must fit on one node of what Ray reports (`ray.cluster_resources()`)."""
    cpus, gpus = available.get("CPU", os.cpu_count() or 1), available.get("GPU", 0)
    if spec.resources.cpu > cpus:
        raise SpecError("resources.cpu", f"{spec.resources.cpu} per trial, but only {cpus:g} CPUs are available")
    if spec.resources.gpu > gpus:
        raise SpecError("resources.gpu", f"{spec.resources.gpu} per trial, but {gpus:g} GPUs are available")


def check_data(spec: SweepSpec) -> None:
    """Load every distinct dataset once on the driver, so a missing root or a broken loader fails now."""
    from vgtune.core import data as data_mod
    from vgtune.core.train import data_config

    seen = set()
    for cfg in spec.configs:
        dcfg = data_config(cfg)
        key = tuple(vars(dcfg).values())
        if key not in seen:
            seen.add(key)
            try:
                data_mod.load(dcfg)
            except data_mod.DataError as exc:
                raise SpecError("dataset", str(exc)) from None


def check_models(spec: SweepSpec) -> None:
    """Build every distinct network other than the plain cnn once on the driver (CPU), initialize it and run
    one probed training step on real examples: a broken factory, probe path or output shape fails now."""
    import torch

    from vgtune.core import data as data_mod
    from vgtune.core import networks
    from vgtune.core.train import data_config, model_config

    seen = set()
    for cfg in spec.configs:
        if cfg.model is None and cfg.arch == "cnn":
            continue
        data = data_mod.load(data_config(cfg))
        mcfg = model_config(cfg, data.input_shape, data.num_classes)
        key = json.dumps([vars(mcfg), cfg.init, cfg.init_scale], sort_keys=True, default=str)
        if key in seen:
            continue
        seen.add(key)
        torch.manual_seed(cfg.seed)
        try:
            networks.check(mcfg, data.x_train[:8], data.y_train[:8], cfg.init, cfg.init_scale)
        except OptionError as exc:
            raise _error("model", exc) from None

