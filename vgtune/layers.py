"""Building blocks for your own network, by the names a sweep spec uses (the public home of vgtune's tables).

A factory (`model: mynet:build` in a spec) gets the trial's `activation`, `norm`
and `residual` as names; mapping them through these functions keeps them
factors of the sweep:

    from vgtune.layers import add_branch_scale, get_activation, get_norm

    self.conv = nn.Conv2d(c, c, 3, padding=1, bias=norm == "none")
    self.norm = get_norm(norm, c)             # "batch" -> nn.BatchNorm2d(c); "none" -> nn.Identity()
    self.act = get_activation(activation)     # "tanh" -> nn.Tanh()
    self.skip = add_branch_scale(self, residual)   # then h = x + self.alpha * f(x) where it is True

    list_activations()   # ['relu', 'leaky_relu', ..., 'identity']: what `activation:` may name

vgtune initializes a user network itself (the spec's `init` and `init_scale`,
applied to every conv and linear weight); `init_weights` and `get_init` do the
same by name for a network built outside a sweep (`get_init(name)` is the
function `(weight, activation) -> None` itself; None for `default`, PyTorch's
own). An unknown name raises
`vgtune.InputError` listing the valid ones. The tables live in
`vgtune.core.models`, which is internal: import them from here.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from vgtune.core.models import (
    ACTIVATIONS,
    INITS,
    NORMS,
    RESIDUALS,
    add_branch_scale,
    get_activation,
    get_init,
    get_norm,
)
from vgtune.core.models import init_weights as _init_weights


def init_weights(model: nn.Module, name: str, activation: str, *, scale: float = 1.0,
                 sample: torch.Tensor | None = None) -> None:
    """Initialize every conv and linear weight of `model` (of vgtune's own CNN: its block convs) with the init
    named `name` (gains matched to `activation`; biases to 0), then multiply the weights by `scale`, as a sweep's
    `init` and `init_scale` do. `lsuv` also needs `sample`, a batch of inputs."""
    ACTIVATIONS.get(activation)
    _init_weights(model, name, sample=sample, scale=scale, activation=activation)


def list_activations() -> list[str]:
    """The names `get_activation` (and a spec's `activation`) takes."""
    return ACTIVATIONS.names()


def list_norms() -> list[str]:
    """The names `get_norm` (and a spec's `norm`) takes."""
    return NORMS.names()


def list_inits() -> list[str]:
    """The names `init_weights` and `get_init` (and a spec's `init`) take."""
    return INITS.names()


def list_residuals() -> list[str]:
    """The names `add_branch_scale` (and a spec's `residual`) takes."""
    return RESIDUALS.names()


__all__ = ["get_activation", "get_norm", "get_init", "init_weights", "add_branch_scale", "list_activations",
           "list_norms", "list_inits", "list_residuals"]
