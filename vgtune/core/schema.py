"""The trial schema: `TrainConfig`, and the trials-table columns derived from it.

One place says what a trial is. The spec validates against it, every field is
logged as an MLflow param, and the report turns every field back into a typed
factor column, so two trials that differ in any option never merge into one
row. This module imports neither torch nor MLflow.

The trials table (`trials.csv`) leads with the columns `vgtune.core.columns`
lists (`TRIALS_HEAD`), then every other `TrainConfig` field in declaration
order (`FACTORS` is every field, the contract factors first).
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from vgtune.core import checks
from vgtune.core.columns import CONTRACT_FACTORS

OPTIMIZERS = ("sgd", "adam")
LR_SCHEDULES = ("constant", "step", "cosine")  # step: x0.1 at 50% and 75% of the epochs (He et al. 2016)
AUGMENTS = ("none", "crop_flip")  # crop_flip: 4-pixel padded random crops and horizontal flips
STATUSES = ("completed", "diverged", "stopped", "error")  # how a trial ended
RUNNING = "running"  # a trial's status before it ended (an epoch row's before its last)
SPLITS = ("fixed", "per_seed")  # per_seed: each seed draws its own train/validation split (the test split is fixed)
DEVICES = "auto, cpu, cuda or cuda:N"


@dataclass
class TrainConfig:
    # model
    depth: int = 4  # conv blocks (resnet_cifar: weighted layers, 6n+2)
    width: int = 16  # channels per block
    kernel_size: int = 3  # conv kernel side
    activation: str = "relu"  # see vgtune.core.models.ACTIVATIONS
    init: str = "default"  # see vgtune.core.models.INITS
    init_scale: float = 1.0  # multiplies the initialized conv weights (sigma_w^2 scales by its square)
    norm: str = "none"  # see vgtune.core.models.NORMS
    residual: str = "none"  # see vgtune.core.models.RESIDUALS
    pool: str = "none"  # pooling between stages: none | max | avg
    dropout: float = 0.0  # dropout after every activation
    arch: str = "cnn"  # see vgtune.core.networks.ARCHS: cnn | resnet_cifar
    model: str | None = None  # a user factory "module:function" in place of arch (vgtune.core.networks)
    model_args: dict[str, Any] = field(default_factory=dict)  # more keywords for the user factory
    probe: list[str] | None = None  # module paths of the blocks to probe; None = the model's `blocks`
    # optimization
    optimizer: str = "sgd"  # sgd (with momentum) | adam
    lr: float = 0.05  # learning rate
    lr_schedule: str = "constant"  # constant | step (x0.1 at 50% and 75% of the epochs) | cosine (per epoch)
    momentum: float = 0.9  # sgd momentum
    weight_decay: float = 0.0  # L2 penalty (coupled, as in torch.optim)
    epochs: int = 6  # passes over the training split
    batch_size: int = 64  # examples per step
    seed: int = 0  # weights, batch order, dropout (and with split per_seed the train/val split); CPU repeats it
    # data
    dataset: str = "digits"  # see vgtune.core.data.DATASETS, or a user loader "module:function"
    root: str | None = None  # where torchvision / imagefolder data lives (spec: dataset.root)
    download: bool = False  # allow torchvision to download into root
    image_size: int = 32  # imagefolder resize side
    limit: int | None = None  # cap on training examples
    augment: str = "none"  # none | crop_flip (training batches: random 4-pixel-padded crops, horizontal flips)
    split_seed: int = 0  # train/val/test split seed, shared by all trials
    split: str = "fixed"  # fixed: one train/val split for all trials | per_seed: `seed` draws it (test stays fixed)
    max_gb: float = 4.0  # a user loader's data may take at most this much memory as tensors (spec: dataset.max_gb)
    # probes and safety
    probes: bool = True  # gradient-flow probes (off only to measure their cost)
    probe_every: int = 0  # steps between gradient-flow probes; 0 = at each epoch's last step
    init_probe_batches: int = 2  # batches averaged for grad_attenuation_init
    diverge_loss: float = 1e4  # a loss above this (or non-finite) ends the trial as diverged
    # hardware
    device: str = "auto"  # auto (cuda if available) | cpu | cuda | cuda:N
    channels_last: bool = True  # NHWC memory format on CUDA
    bf16: bool = False  # bfloat16 autocast on CUDA
    threads: int = 0  # torch CPU threads; 0 = leave torch's default

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from a dict the spec checked (`vgtune.driver.spec`): the values are trusted, not validated again.
        Fields under their former names (`RENAMED`, a checkpoint of an older sweep) are read too; an unknown key
        raises OptionError (a ValueError) listing the valid keys."""
        values = {RENAMED.get(k, k): v for k, v in values.items()}
        unknown = sorted(set(values) - set(FIELDS))
        if unknown:
            raise checks.OptionError(unknown[0], f"unknown training option(s) {', '.join(unknown)}", FIELDS)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        """Raise OptionError naming the bad option and the allowed values. The names of networks, inits and
        datasets are looked up where they are registered: `vgtune.core.train.validate` checks them too."""
        checks.choice("optimizer", self.optimizer, OPTIMIZERS)
        checks.choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        checks.choice("augment", self.augment, AUGMENTS)
        checks.choice("split", self.split, SPLITS)
        checks.number("lr", self.lr, 0, low_open=True)
        checks.number("init_scale", self.init_scale, 0, low_open=True)
        checks.number("diverge_loss", self.diverge_loss, 0, low_open=True)
        checks.number("max_gb", self.max_gb, 0, low_open=True)
        for name in ("momentum", "weight_decay"):
            checks.number(name, getattr(self, name), 0)
        checks.number("dropout", self.dropout, 0, 1, high_open=True)
        for name, low in (("depth", 1), ("width", 1), ("kernel_size", 1), ("epochs", 1), ("batch_size", 1),
                          ("probe_every", 0), ("init_probe_batches", 1), ("threads", 0), ("seed", 0),
                          ("split_seed", 0)):
            checks.integer(name, getattr(self, name), low)
        if self.limit is not None:
            checks.integer("limit", self.limit, 1)
        for name in ("download", "probes", "channels_last", "bf16"):
            checks.boolean(name, getattr(self, name))
        if not isinstance(self.device, str) or not (self.device in ("auto", "cpu", "cuda")
                                                    or self.device.startswith("cuda:")):
            raise checks.invalid("device", f"must be {DEVICES}, got {self.device!r}")


# ------------------------------------------------------------------ the trials table

FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(TrainConfig))
# Fields renamed since sweeps were logged under the old name (old -> new): checkpoints and MLflow params still read.
RENAMED = {"probe_modules": "probe", "data_root": "root", "data_max_gb": "max_gb"}
# Every TrainConfig field as a trials-table factor column: the contract factors first (vgtune.core.columns).
FACTORS: tuple[str, ...] = CONTRACT_FACTORS + tuple(f for f in FIELDS if f not in CONTRACT_FACTORS)
_HINTS = typing.get_type_hints(TrainConfig)


def _kind(hint: Any) -> type:
    """int, float, bool, str, list or dict: Optional unwrapped, generics to their origin."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = next(t for t in typing.get_args(hint) if t is not type(None))
    return typing.get_origin(hint) or hint


TYPES: dict[str, type] = {name: _kind(hint) for name, hint in _HINTS.items()}  # field -> its value's type


def param_text(value: Any) -> str:
    """A TrainConfig value as an MLflow param: `str(value)`, JSON for lists and mappings (canonical key order)."""
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def parse_param(name: str, text: str | None) -> Any:
    """A TrainConfig value back from its MLflow param string (`param_text`); None for 'None'/missing.

    List and mapping values stay JSON text: one hashable factor column (`model_args`, `probe`)."""
    if text is None or text == "None" or (isinstance(text, float) and text != text):
        return None
    kind = TYPES.get(name, str)
    if kind is bool:
        return text == "True"
    if kind is int:
        return int(float(text))
    if kind is float:
        return float(text)
    return text

