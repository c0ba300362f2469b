"""Gradient-flow probes: per-block gradient, activation and update statistics.

A `GradFlowProbe` installs hooks only inside `capture()`, so between probes
training runs with no hooks firing and no host-device syncs. Inside one probed
step it records, for every block l with output h_l:

    grad_norm         ||dL/dh_l||            gradient w.r.t. the block's output
    weight_grad_norm  ||dL/dW_l||            over the block's parameters
    update_ratio      ||dW_l|| / ||W_l||     of the optimizer step (healthy ~1e-3)
    act_mean, act_std of h_l                 signal propagation (Brock et al. 2021)
    dead_frac         ReLU family: share of units whose derivative is (near) zero on every example
    saturated_frac    sigmoid/tanh: share of activations whose derivative is (near) zero

"(Near) zero" is |f'(z)| below `saturation_eps` of the activation's largest |f'|, with f'
taken by autograd at the activation's input z: for ReLU a dead unit is one never positive
over the batch; for leaky ReLU (slope 0.01) one negative on every example; for ELU and SELU
one below z = ln(eps) ~ -3 on every example; for GELU and SiLU one deep in the negative
tail, or at the zero of f', on every example.

From the per-block gradient norms: the attenuation log10(||dL/dh_1|| / ||dL/dh_L||) (~0
healthy, -5 means the first block receives 10^5 x less gradient than the last: vanishing)
and its profile (`profile`): the block across which the gradient falls most and the mean
rate in decades per block.

Norms are accumulated in float64 (`norm`), so a gradient whose elements are
~1e-23 (their squares underflow float32) still reads exactly; a gradient that
is truly zero reads 0, and its attenuation is -inf, not a clamped number of
decades.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn as nn

from vgtune.core.columns import PROFILE, SERIES
from vgtune.core.models import ACTIVATIONS, RELU_FAMILY, SATURATING


def norm(t: torch.Tensor) -> torch.Tensor:
    """||t||_2 accumulated in float64: exact for every float32 value, subnormals included (0 only if t is 0).

    A plain float32 norm squares each element in float32, so elements below ~1e-19 vanish from
    it and a 24-block sigmoid stack would read 10^-37 where the truth is 10^-20.
    """
    return torch.linalg.vector_norm(t.detach(), dtype=torch.float64)


def attenuation(grad_norms: list[float]) -> float:
    """log10(||dL/dh_1|| / ||dL/dh_L||) from per-block gradient norms.

    -inf when no gradient at all reaches the first block, +inf when none reaches the
    last, NaN when a norm is not finite (or both are zero).
    """
    first, last = grad_norms[0], grad_norms[-1]
    if not (math.isfinite(first) and math.isfinite(last)) or first == last == 0:
        return math.nan
    if first == 0:
        return -math.inf
    if last == 0:
        return math.inf
    return math.log10(first) - math.log10(last)


def profile(grad_norms: list[float]) -> dict[str, float]:
    """Where the gradient is lost, from per-block gradient norms (blocks in probe order).

    The gradient reaches h_{l-1} from h_l across block l, changing by log10(g_{l-1} / g_l)
    decades; `worst_drop_block` is the l (1-based, 2..L) where that change is lowest and
    `worst_drop_decades` the change (negative when the gradient shrinks, -inf where it
    becomes exactly 0). `decades_per_block` is the attenuation over the L - 1 transitions.
    All NaN for a single block or a non-finite norm.
    """
    nan = {name: math.nan for name in PROFILE}
    if len(grad_norms) < 2 or not all(math.isfinite(g) for g in grad_norms):
        return nan
    drops = [attenuation(grad_norms[i - 1:i + 1]) for i in range(1, len(grad_norms))]  # across block i + 1
    seen = [(d, i + 2) for i, d in enumerate(drops) if not math.isnan(d)]  # NaN: 0 -> 0, already lost
    if not seen:
        return nan
    worst, block = min(seen)
    return {"worst_drop_block": float(block), "worst_drop_decades": worst,
            "decades_per_block": attenuation(grad_norms) / (len(grad_norms) - 1)}


class GradFlowProbe:
    """Per-block statistics of one training step; hooks exist only inside `capture()`."""

    def __init__(self, model: nn.Module, activation: str, saturation_eps: float = 0.05,
                 blocks: list[nn.Module] | None = None):
        self.blocks: list[nn.Module] = list(model.blocks if blocks is None else blocks)
        self.activation = activation
        self.saturation_eps = saturation_eps
        # Dead / saturated units are counted at each block's last `activation` module; a block without one
        # (a functional activation, say) reads NaN there: not measured.
        self.acts = [last_activation(b, activation) for b in self.blocks]
        self.slopes = [max_slope(a) if a is not None else math.nan for a in self.acts]  # max |f'| per block
        self._grads: list[torch.Tensor | None] = []  # ||dL/dh_l|| per block
        self._moments: list[torch.Tensor | None] = []  # (mean, std) of h_l
        self._units: list[torch.Tensor | None] = []  # (dead, saturated) fractions
        self._snapshot: list[torch.Tensor] | None = None

    # -- capture one forward/backward --------------------------------------------
    @contextmanager
    def capture(self) -> Iterator[None]:
        """Hooks on for the forward and backward pass run inside this block."""
        self.begin()
        handles = []
        for i, (block, act) in enumerate(zip(self.blocks, self.acts)):
            handles.append(block.register_forward_hook(self._output_hook(i)))
            if act is not None:
                handles.append(act.register_forward_pre_hook(self._act_hook(i)))
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    def begin(self) -> None:
        """Forget the previous step's observations (`capture` does this; so does a fused pack's probe)."""
        n = len(self.blocks)
        self._grads, self._moments, self._units = [None] * n, [None] * n, [None] * n

    def observe_output(self, i: int, out: torch.Tensor) -> None:
        """Block i's output h_i in the forward pass: its moments."""
        h = out.detach().float()
        self._moments[i] = torch.stack([h.mean(), h.std()])

    def observe_grad(self, i: int, grad: torch.Tensor) -> None:
        """dL/dh_i in the backward pass: its norm."""
        self._grads[i] = norm(grad)

    def observe_activation(self, i: int, z: torch.Tensor) -> None:
        """The input z of block i's last activation: its dead and saturated fractions."""
        self._units[i] = self._unit_stats(i, z)

    def _output_hook(self, i: int):
        def hook(module: nn.Module, inputs, out: torch.Tensor) -> None:
            if not isinstance(out, torch.Tensor):
                return
            if out.requires_grad:
                out.register_hook(lambda g: self.observe_grad(i, g))
            self.observe_output(i, out)
        return hook

    def _act_hook(self, i: int):
        def hook(module: nn.Module, inputs) -> None:  # before the forward: an in-place activation keeps z
            self.observe_activation(i, inputs[0])
        return hook

    def _unit_stats(self, i: int, z: torch.Tensor) -> torch.Tensor:
        """(dead_frac, saturated_frac) of block i's activation at its inputs z (B, ...).

        A unit is one (channel, position): dead when its derivative is (near) zero on every
        example, saturated per example; 0 where the name does not apply (see the module doc).
        """
        near_zero = derivative(self.acts[i], z).abs() < self.saturation_eps * self.slopes[i]
        zero = near_zero.new_zeros((), dtype=torch.float32)
        dead = near_zero.all(dim=0).float().mean() if self.activation in RELU_FAMILY else zero
        sat = near_zero.float().mean() if self.activation in SATURATING else zero
        return torch.stack([dead, sat])

    def unseen(self) -> list[int]:
        """Blocks whose output the captured step did not see as a tensor with a gradient."""
        return [i for i, (g, m) in enumerate(zip(self._grads, self._moments)) if g is None or m is None]

    # -- around the optimizer step ---------------------------------------------
    def snapshot(self) -> None:
        """Copy block weights before `optimizer.step()` to measure the update."""
        self._snapshot = [_flat_params(b) for b in self.blocks]

    def read(self) -> dict[str, list[float]]:
        """The per-block series of the captured step (one host sync for all of them)."""
        rows = []
        for i, block in enumerate(self.blocks):
            params = list(block.parameters())
            device = self._moments[i].device
            nan = torch.tensor(math.nan, device=device)
            grads = [p.grad.detach().float().flatten() for p in params if p.grad is not None]
            wgrad = norm(torch.cat(grads)) if grads else nan
            ratio = nan
            if self._snapshot is not None and params:
                old = self._snapshot[i]
                ratio = norm(_flat_params(block) - old) / norm(old)  # nan for an all-zero block (0/0)
            grad = self._grads[i] if self._grads[i] is not None else nan
            units = self._units[i] if self._units[i] is not None else torch.stack([nan, nan])
            rows.append(torch.stack([v.double() for v in (grad, wgrad, ratio, *self._moments[i], *units)]))
        values = torch.stack(rows).cpu().tolist()  # (L, len(SERIES))
        self._snapshot = None
        return {name: [row[k] for row in values] for k, name in enumerate(SERIES)}


def _flat_params(block: nn.Module) -> torch.Tensor:
    """A block's parameters as one float32 vector (empty for a block without any)."""
    params = [p.detach().flatten().float() for p in block.parameters()]
    return torch.cat(params) if params else torch.zeros(0)


def derivative(module: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """f'(z) of an elementwise activation module, by autograd in float32 (no hooks run; z is untouched)."""
    with torch.enable_grad(), torch.autocast(z.device.type, enabled=False):
        u = z.detach().float().requires_grad_(True)
        (grad,) = torch.autograd.grad(module.forward(u.clone()).sum(), u)  # clone: in-place modules too
    return grad


_SLOPES: dict[str, float] = {}  # repr(module) -> max |f'|


def max_slope(module: nn.Module) -> float:
    """The largest |f'(z)| of an activation module, over z in [-20, 20] (step 1e-3)."""
    key = repr(module)
    if key not in _SLOPES:
        _SLOPES[key] = float(derivative(module, torch.linspace(-20, 20, 40001)).abs().max())
    return _SLOPES[key]


def last_activation(block: nn.Module, activation: str) -> nn.Module | None:
    """The last submodule of `block` (itself included) of the activation's class, or None."""
    cls = ACTIVATIONS[activation] if activation in ACTIVATIONS else None
    found = [m for m in block.modules() if cls is not None and type(m) is cls]
    return found[-1] if found else None


def summarize(series: dict[str, list[float]]) -> dict[str, float]:
    """Scalars of one probe: attenuation, the mean dead / saturated fractions, the profile (`profile`)."""
    return {
        "grad_attenuation": attenuation(series["grad_norm"]),
        "dead_frac": sum(series["dead_frac"]) / len(series["dead_frac"]),
        "saturated_frac": sum(series["saturated_frac"]) / len(series["saturated_frac"]),
        "grad_norm_first": series["grad_norm"][0],
        "grad_norm_last": series["grad_norm"][-1],
        **profile(series["grad_norm"]),
    }


def mean_series(records: list[dict[str, list[float]]]) -> dict[str, list[float]]:
    """Element-wise mean of several probes' series (norms averaged before the log)."""
    return {name: [sum(vals) / len(vals) for vals in zip(*(r[name] for r in records))]
            for name in SERIES}
