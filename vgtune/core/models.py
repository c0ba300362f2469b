"""CNN builder from names: activation / init / norm / residual / pooling.

The network is a stack of `depth` conv blocks followed by a linear classifier
on the flattened feature map (spatial layout matters for small digits). Block 1
maps the input channels to `width`; blocks 2..depth are width -> width and are
the ones that can carry a skip connection. Every block's
output h_l is what `vgtune.core.gradflow` probes.

    x (B, C_in, H, W) -> block_1 -> ... -> block_L -> flatten -> linear -> logits

Every name a config gives (activation, norm, residual, pool, init) is looked up
in its `vgtune.core.registry.Registry`, whose error lists the valid names.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from vgtune.core import checks
from vgtune.core.registry import Registry

ACTIVATIONS: Registry[type[nn.Module]] = Registry("activation")
ACTIVATIONS.register("relu", nn.ReLU)
ACTIVATIONS.register("leaky_relu", nn.LeakyReLU)
ACTIVATIONS.register("elu", nn.ELU)
ACTIVATIONS.register("selu", nn.SELU)
ACTIVATIONS.register("gelu", nn.GELU)
ACTIVATIONS.register("silu", nn.SiLU)
ACTIVATIONS.register("tanh", nn.Tanh)
ACTIVATIONS.register("sigmoid", nn.Sigmoid)
ACTIVATIONS.register("identity", nn.Identity)

# Activations whose units can die (never positive) and those that saturate.
RELU_FAMILY = frozenset({"relu", "leaky_relu", "elu", "selu", "gelu", "silu"})
SATURATING = frozenset({"tanh", "sigmoid"})

# Gain name understood by torch.nn.init for each activation (SELU uses LeCun
# init, i.e. 'linear', as Klambauer et al. 2017 prescribe; smooth ReLUs use 'relu').
_GAIN_NAME = {
    "relu": "relu", "leaky_relu": "leaky_relu", "elu": "relu", "selu": "linear",
    "gelu": "relu", "silu": "relu", "tanh": "tanh", "sigmoid": "sigmoid",
    "identity": "linear",
}


NORMS: Registry[Callable[[int], nn.Module]] = Registry("norm")  # channels -> layer
NORMS.register("none", lambda c: nn.Identity())
NORMS.register("batch", nn.BatchNorm2d)


@NORMS.register("group")
def _group_norm(channels: int) -> nn.Module:
    groups = math.gcd(channels, 8)
    return nn.GroupNorm(groups, channels)


NORMS.register("layer", lambda c: nn.GroupNorm(1, c))  # LayerNorm over (C, H, W)

# Residual schemes: None = no skip; otherwise the initial value of the branch
# scale alpha in h = x + alpha * f(x), and whether alpha is learned.
RESIDUALS: Registry[tuple[float, bool] | None] = Registry("residual")
RESIDUALS.register("none", None)
RESIDUALS.register("standard", (1.0, False))  # He et al. 2016
RESIDUALS.register("rezero", (0.0, True))  # ReZero / SkipInit: learnable alpha starting at 0

POOLS: Registry[type[nn.Module] | None] = Registry("pool")
POOLS.register("none", None)
POOLS.register("max", nn.MaxPool2d)
POOLS.register("avg", nn.AvgPool2d)


def get_activation(name: str | Callable[[], nn.Module]) -> nn.Module:
    """Activation module by name; a callable is called as is."""
    if callable(name):
        return name()
    return ACTIVATIONS.create(name)


def get_norm(name: str, channels: int) -> nn.Module:
    """Normalization layer by name for `channels` channels."""
    return NORMS.create(name, channels)


def gain_name(activation: str) -> str:
    """The torch.nn.init nonlinearity name that matches `activation`."""
    return _GAIN_NAME[activation]


@dataclass
class ModelConfig:
    depth: int = 4  # number of conv blocks (L)
    width: int = 16  # channels of every block
    kernel_size: int = 3  # odd conv kernel; 'same' padding
    activation: str = "relu"  # name in ACTIVATIONS
    norm: str = "none"  # name in NORMS
    residual: str = "none"  # name in RESIDUALS
    pool: str = "none"  # name in POOLS, applied between stages
    pool_stages: int = 2  # number of 2x2 pooling layers spread over the depth
    dropout: float = 0.0  # dropout probability after each activation
    in_channels: int = 1  # channels of the input images
    image_size: int = 8  # input height == width
    num_classes: int = 10  # classifier outputs
    arch: str = "cnn"  # name in vgtune.core.networks.ARCHS
    model: str | None = None  # a user factory "module:function" in place of arch (vgtune.core.networks)
    model_args: dict[str, Any] = dataclasses.field(default_factory=dict)  # more keywords for the user factory
    probe: list[str] | None = None  # module paths of the blocks to probe; None = the model's `blocks`

    def validate(self) -> None:
        """Raise OptionError (a ValueError) naming the bad field and the allowed values."""
        for registry, name in ((ACTIVATIONS, self.activation), (NORMS, self.norm), (RESIDUALS, self.residual),
                               (POOLS, self.pool)):
            registry.get(name)
        for field, low in (("depth", 1), ("width", 1), ("kernel_size", 1), ("in_channels", 1),
                           ("image_size", 1), ("num_classes", 2), ("pool_stages", 0)):
            checks.integer(field, getattr(self, field), low)
        if self.kernel_size % 2 == 0:
            raise checks.invalid("kernel_size", f"must be odd, got {self.kernel_size}")
        checks.number("dropout", self.dropout, 0, 1, high_open=True)
        if not isinstance(self.model_args, dict) or not all(isinstance(k, str) for k in self.model_args):
            raise checks.invalid("model_args", "must be a mapping of keyword names to values, "
                                               f"got {self.model_args!r}")
        if self.probe is not None and (not isinstance(self.probe, list) or not self.probe
                                       or not all(isinstance(p, str) and p for p in self.probe)):
            raise checks.invalid("probe", "must be a non-empty list of module paths (e.g. [layer1.0, layer2.0]), "
                                 f"got {self.probe!r}")


def add_branch_scale(module: nn.Module, residual: str) -> bool:
    """Give `module` the `alpha` of h = x + alpha * f(x) that `residual` prescribes (a parameter if
    learned, else a buffer); False for `none`, which has no skip."""
    scheme = RESIDUALS[residual]
    if scheme is None:
        return False
    init, learned = scheme
    alpha = torch.tensor(float(init))
    if learned:
        module.alpha = nn.Parameter(alpha)
    else:
        module.register_buffer("alpha", alpha)
    return True


class Block(nn.Module):
    """conv -> norm -> act -> dropout, optional skip h = x + alpha * f(x), optional pool."""

    def __init__(self, cin: int, cout: int, cfg: ModelConfig, pool: bool):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, cfg.kernel_size, padding=cfg.kernel_size // 2,
                              bias=cfg.norm == "none")
        self.norm = get_norm(cfg.norm, cout)
        self.act = get_activation(cfg.activation)
        self.drop = nn.Dropout(cfg.dropout) if cfg.dropout > 0 else nn.Identity()
        self.skip = cin == cout and add_branch_scale(self, cfg.residual)
        pool_cls = POOLS[cfg.pool]
        self.pool = pool_cls(2) if (pool and pool_cls is not None) else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.drop(self.act(self.norm(self.conv(x))))
        if self.skip:
            out = x + self.alpha * out
        return self.pool(out)


def _pool_positions(cfg: ModelConfig) -> set[int]:
    """Blocks (0-based) after which to pool: evenly spread, never below 1x1."""
    if cfg.pool == "none":
        return set()
    stages = min(cfg.pool_stages, int(math.log2(cfg.image_size)), cfg.depth)
    return {round(cfg.depth * (i + 1) / (stages + 1)) - 1 for i in range(stages)}


class CNN(nn.Module):
    """`depth` blocks then a linear classifier on the flattened feature map."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        cfg.validate()
        self.config = cfg
        pools = _pool_positions(cfg)
        chans = [cfg.in_channels] + [cfg.width] * cfg.depth
        self.blocks = nn.ModuleList(
            Block(chans[i], chans[i + 1], cfg, i in pools) for i in range(cfg.depth)
        )
        side = cfg.image_size // 2 ** len(pools)  # H' = W' after the pooling stages
        self.head = nn.Linear(cfg.width * side * side, cfg.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:  # (B, C, H, W) -> (B, width, H', W')
            x = block(x)
        return self.head(x.flatten(1))  # (B, width * H' * W') -> (B, num_classes)


def build_model(cfg: ModelConfig) -> CNN:
    """A CNN with PyTorch's default initialization (see `init_weights`)."""
    return CNN(cfg)


# ---------------------------------------------------------------- initialization

def _delta_orthogonal_(w: torch.Tensor, gain: float) -> None:
    """Xiao et al. 2018: zero kernel but an orthogonal matrix at the centre tap (orthogonal if not a 2-D conv)."""
    if w.dim() != 4:
        nn.init.orthogonal_(w, gain=gain)
        return
    out_c, in_c, kh, kw = w.shape
    with torch.no_grad():
        w.zero_()
        centre = torch.empty(out_c, in_c)
        nn.init.orthogonal_(centre, gain=gain)
        w[:, :, kh // 2, kw // 2] = centre


def _kaiming(fn: Callable) -> Callable[[torch.Tensor, str], None]:
    return lambda w, act: fn(w, mode="fan_in", nonlinearity=gain_name(act))


INITS: Registry[Callable[[torch.Tensor, str], None] | None] = Registry("init")  # (weight, activation) -> None
INITS.register("default", None)  # PyTorch's own (kaiming_uniform with a=sqrt(5))
INITS.register("normal", lambda w, act: nn.init.normal_(w, 0.0, 0.01))  # naive small init
INITS.register("xavier_uniform", lambda w, act: nn.init.xavier_uniform_(w, nn.init.calculate_gain(gain_name(act))))
INITS.register("xavier_normal", lambda w, act: nn.init.xavier_normal_(w, nn.init.calculate_gain(gain_name(act))))
INITS.register("kaiming_uniform", _kaiming(nn.init.kaiming_uniform_))
INITS.register("kaiming_normal", _kaiming(nn.init.kaiming_normal_))
INITS.register("orthogonal", lambda w, act: nn.init.orthogonal_(w, nn.init.calculate_gain(gain_name(act))))
INITS.register("delta_orthogonal", lambda w, act: _delta_orthogonal_(w, nn.init.calculate_gain(gain_name(act))))
INITS.register("lsuv", lambda w, act: nn.init.orthogonal_(w))  # then rescaled on data by lsuv_()
WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)  # the layers an init touches in a model not vgtune's CNN


def get_init(name: str) -> Callable[[torch.Tensor, str], None] | None:
    """Weight initializer by name (None = keep PyTorch's default)."""
    return INITS.get(name)


def init_targets(model: nn.Module) -> list[nn.Module]:
    """The layers an init scheme sets: the block convs of vgtune's CNN (its classifier keeps PyTorch's
    default), every conv and linear layer of any other network."""
    if isinstance(model, CNN):
        return [block.conv for block in model.blocks]
    return [m for m in model.modules() if isinstance(m, WEIGHTED)]


@torch.no_grad()
def init_weights(model: nn.Module, name: str, sample: torch.Tensor | None = None, scale: float = 1.0,
                 activation: str | None = None) -> None:
    """Initialize the `init_targets` weights with the named scheme (biases to 0), then multiply them by `scale`.

    The gains follow `activation` (default: the model's `config.activation`). `lsuv`
    (Mishkin & Matas 2016) also needs `sample`, a batch of inputs, to rescale each
    layer until its output has unit variance.
    """
    layers = init_targets(model)
    activation = activation or model.config.activation
    fn = get_init(name)
    if fn is not None:
        for layer in layers:
            fn(layer.weight, activation)
            if layer.bias is not None:
                layer.bias.zero_()
        if name == "lsuv":
            if sample is None:
                raise ValueError("init 'lsuv' needs a data sample to calibrate on")
            lsuv_(model, sample, layers)
    if scale != 1.0:
        for layer in layers:
            layer.weight.mul_(scale)


@torch.no_grad()
def lsuv_(model: nn.Module, sample: torch.Tensor, layers: list[nn.Module], tol: float = 0.05,
          max_iter: int = 10) -> None:
    """Layer-sequential unit variance: scale each layer, in order, until its output std on `sample` is 1."""
    was_training = model.training
    model.eval()
    out: dict[str, torch.Tensor] = {}
    for layer in layers:
        handle = layer.register_forward_hook(lambda m, i, o: out.__setitem__("y", o))
        try:
            for _ in range(max_iter):
                out.clear()
                model(sample)
                if "y" not in out:  # the forward pass does not reach this layer
                    break
                std = out["y"].float().std().item()
                if not math.isfinite(std) or std == 0 or abs(std - 1.0) < tol:
                    break
                layer.weight.div_(std)
        finally:
            handle.remove()
    model.train(was_training)


__all__ = [
    "ACTIVATIONS", "NORMS", "RESIDUALS", "POOLS", "INITS", "RELU_FAMILY", "SATURATING",
    "ModelConfig", "CNN", "Block", "build_model", "init_weights", "init_targets", "lsuv_",
    "get_activation", "get_norm", "get_init",
]
