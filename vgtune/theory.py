"""Mean-field theory of signal propagation: the gradient flow a plain CNN should have at init.

Poole et al. 2016, Schoenholz et al. 2017, Xiao et al. 2018 (CNNs). With weights
W ~ (0, sigma_w^2 / N_in), N_in = C_in * k^2, and biases of variance sigma_b^2,
the pre-activation variance of block l follows the length map

    q_1 = sigma_w1^2 * E[x^2] + sigma_b1^2                      (x: the input)
    q_l = sigma_wl^2 * E_z[phi(sqrt(q_{l-1}) z)^2] + sigma_bl^2,  z ~ N(0, 1)

and the squared gradient w.r.t. the block outputs grows by
chi_1(q_l) = sigma_wl^2 * E_z[phi'(sqrt(q_l) z)^2] per block, so

    log10(||dL/dh_1|| / ||dL/dh_L||) ~= 1/2 * sum_{l=2..L} log10 chi_1(q_l).

`predict` iterates the map block by block (no fixed-point shortcut: sweeps are
shallow) with sigma_w^2 = N_in * E[W^2] and sigma_b^2 = E[b^2] read off the
weights as initialized, so every init scheme (LSUV and `init_scale` included)
is covered without a table. Zero padding is part of the model: a 'same' conv on
a small image sees, on average, only a share `border` of its kernel taps, which
scales the effective sigma_w^2 of blocks 2..L (both directions). Expectations are
Gauss-Hermite quadrature over any activation module (derivatives by autograd)
while sqrt(q) is small enough for its nodes to resolve phi' (q <= 4); beyond, a
trapezoid rule in z fine enough for phi' of a saturating activation, whose width
shrinks as 1/sqrt(q).

The depth scale xi = 1 / |ln chi_1(q*)| at the fixed point q* of the deeper
blocks' map: gradients change by e per xi blocks, and Schoenholz et al. find
plain networks trainable up to about 6 xi blocks. Only plain stacks have a
prediction; otherwise `theory` says why not (`n/a: batch norm`, ...).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

QUADRATURE_POINTS = 100  # even: no node at z = 0, where ReLU-like derivatives jump
HERMITE_MAX_Q = 4.0  # above: node spacing * sqrt(q) > 0.6, too coarse for tanh' / sigmoid'
TRAPEZOID_STEP = 0.02  # in u = sqrt(q) z, the pre-activation
TRAINABLE_DEPTHS = 6.0  # plain nets train up to about 6 xi (Schoenholz et al. 2017)
_NODES, _WEIGHTS = np.polynomial.hermite_e.hermegauss(QUADRATURE_POINTS)
_WEIGHTS = _WEIGHTS / math.sqrt(2 * math.pi)  # E_z[f(z)] = sum w_i f(z_i), z ~ N(0, 1)
NORM_NAMES = {"batch": "batch norm", "group": "group norm", "layer": "layer norm"}


@dataclass
class Prediction:
    """The mean-field prediction for one configuration at initialization."""

    grad_attenuation: float  # predicted log10 ||dL/dh_1|| / ||dL/dh_L||; NaN where the theory does not apply
    chi1: float  # chi_1 at the fixed point of blocks 2..L (1 = critical)
    depth_scale: float  # xi = 1 / |ln chi1| (blocks); inf at criticality
    theory: str  # "mean field" or why there is no prediction ("n/a: batch norm")
    sigma_w2: float = math.nan  # effective sigma_w^2 of blocks 2..L (border share included)
    q: tuple[float, ...] = ()  # q_1..q_L

    def as_dict(self) -> dict[str, float | str]:
        return {"chi1": self.chi1, "depth_scale": self.depth_scale,
                "grad_attenuation_predicted": self.grad_attenuation, "theory": self.theory}


def not_applicable(reason: str) -> Prediction:
    return Prediction(math.nan, math.nan, math.nan, f"n/a: {reason}")


def why_not(norm: str, residual: str, pool: str, dropout: float, network: str = "cnn") -> str | None:
    """Why a configuration is outside the plain-stack theory (None if it is inside); `network` is the arch
    or the user's `model: module:function`."""
    if network != "cnn":
        return f"mean-field theory here covers the plain cnn, not {network}"
    if norm != "none":
        return NORM_NAMES.get(norm, f"{norm} norm")
    if residual != "none":
        return f"{residual} residual"
    if pool != "none":
        return f"{pool} pooling"
    if dropout > 0:
        return "dropout"
    return None


# ------------------------------------------------------------------ expectations

class Activation:
    """E_z[phi(sqrt(q) z)^2] and E_z[phi'(sqrt(q) z)^2] of one activation module, by quadrature."""

    def __init__(self, module: nn.Module):
        self.module = module

    def _values(self, q: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(weights, phi(u), phi'(u)) at the quadrature points u = sqrt(q) z."""
        q = max(q, 1e-24)  # q -> 0 is a limit: phi'(0) of a ReLU is 0 in torch, 1 just above
        if q <= HERMITE_MAX_Q:
            z, weights = _NODES, _WEIGHTS
        else:
            n = min(int(16 * math.sqrt(q) / TRAPEZOID_STEP), 4_000_000) // 2 * 2  # even: no node at z = 0
            z = np.linspace(-8.0, 8.0, n)
            weights = np.exp(-z * z / 2) * (z[1] - z[0]) / math.sqrt(2 * math.pi)
        with torch.enable_grad():
            u = torch.tensor(z * math.sqrt(q), dtype=torch.float64, requires_grad=True)
            out = self.module(u)
            (grad,) = torch.autograd.grad(out.sum(), u)
        return weights, out.detach().numpy(), grad.numpy()

    def second_moment(self, q: float) -> float:
        weights, phi, _ = self._values(q)
        return float(np.dot(weights, phi ** 2))

    def derivative_moment(self, q: float) -> float:
        weights, _, dphi = self._values(q)
        return float(np.dot(weights, dphi ** 2))


def chi1(act: Activation, sigma_w2: float, q: float) -> float:
    return sigma_w2 * act.derivative_moment(q)


def fixed_point(act: Activation, sigma_w2: float, sigma_b2: float, q_max: float = 1e4) -> float:
    """The fixed point q* of q -> sigma_w2 * E[phi(sqrt(q) z)^2] + sigma_b2 (root-found, not iterated).

    0 when the map contracts to 0 (phi(0) = 0, sigma_b = 0, ordered phase); q_max if the signal grows
    past it (an unbounded activation in its chaotic phase, where q* does not exist).
    """
    def excess(q: float) -> float:
        return sigma_w2 * act.second_moment(q) + sigma_b2 - q

    low = 0.0 if excess(0.0) > 0 else 1e-12
    if excess(low) <= 0:
        return 0.0
    high = 1.0
    while excess(high) > 0:
        high *= 4
        if high > q_max:
            return q_max
    from scipy import optimize  # here, not at import: a torch-only machine can still train normed nets

    return float(optimize.brentq(excess, low, high, xtol=1e-14, rtol=1e-12))


def depth_scale(chi: float) -> float:
    """xi = 1 / |ln chi_1|: blocks per e-fold of gradient change (inf at chi_1 = 1)."""
    if not math.isfinite(chi) or chi <= 0:
        return 0.0
    return math.inf if chi == 1 else 1.0 / abs(math.log(chi))


def critical_sigma_w2(act: Activation, sigma_b2: float = 0.0, low: float = 1e-3, high: float = 1e3) -> float:
    """The sigma_w^2 at which chi_1(q*) = 1 (root-found in log sigma_w^2); NaN if none in [low, high]."""
    def excess(log_s2: float) -> float:
        s2 = math.exp(log_s2)
        return math.log(chi1(act, s2, fixed_point(act, s2, sigma_b2)))

    lo, hi = math.log(low), math.log(high)
    if excess(lo) * excess(hi) > 0:
        return math.nan
    from scipy import optimize

    return math.exp(optimize.brentq(excess, lo, hi, xtol=1e-9, rtol=1e-9, maxiter=300))


# ------------------------------------------------------------------ a real model

def border_share(image_size: int, kernel_size: int) -> float:
    """Mean share of a 'same' zero-padded kernel's taps that land inside an image_size^2 image."""
    pad = kernel_size // 2
    inside = [sum(0 <= p + o < image_size for o in range(-pad, pad + 1)) for p in range(image_size)]
    return (sum(inside) / (image_size * kernel_size)) ** 2


def conv_variances(conv: nn.Conv2d) -> tuple[float, float]:
    """(sigma_w^2, sigma_b^2) of a conv as initialized: N_in * E[W^2] and E[b^2]."""
    w = conv.weight.detach().double()
    fan_in = w[0].numel()  # C_in * k * k
    sigma_w2 = fan_in * float((w ** 2).mean())
    sigma_b2 = float((conv.bias.detach().double() ** 2).mean()) if conv.bias is not None else 0.0
    return sigma_w2, sigma_b2


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, activation: nn.Module, image_size: int) -> Prediction:
    """The prediction for a plain stack `model.blocks` (each with `.conv`) on inputs `x` (B, C, H, W)."""
    act = Activation(activation)
    convs = [block.conv for block in model.blocks]
    border = border_share(image_size, convs[0].kernel_size[0])
    variances = [conv_variances(conv) for conv in convs]
    sw1, sb1 = variances[0]
    qs = [sw1 * border * float((x.double() ** 2).mean()) + sb1]
    log_chi = 0.0
    for sw, sb in variances[1:]:
        qs.append(sw * border * act.second_moment(qs[-1]) + sb)
        log_chi += math.log10(chi1(act, sw * border, qs[-1]))
    # The fixed point of the deeper blocks' map, with their mean variances (block 1 alone if depth is 1).
    deep = variances[1:] or variances
    sw = border * sum(v[0] for v in deep) / len(deep)
    sb = sum(v[1] for v in deep) / len(deep)
    chi_star = chi1(act, sw, fixed_point(act, sw, sb))
    return Prediction(0.5 * log_chi, chi_star, depth_scale(chi_star), "mean field", sw, tuple(qs))


# ------------------------------------------------------------------ what an activation needs

def init_sigma_w2(init: str, activation: str, width: int = 64, kernel_size: int = 3) -> float:
    """sigma_w^2 = N_in * E[W^2] that the named init gives a width x width conv for `activation`."""
    from vgtune.models import INITS

    conv = nn.Conv2d(width, width, kernel_size)
    fn = INITS[init]
    if fn is not None:
        with torch.no_grad():
            fn(conv.weight, activation)
    return conv_variances(conv)[0]


def critical_table(activations: list[str], inits: list[str] | None = None) -> list[dict]:
    """Per activation: the critical sigma_w^2 (sigma_b = 0, no border), each named init's, the closest ones.

    `factor_off` is how far (a factor, >= 1) the closest init's sigma_w^2 lies from the critical one.
    """
    from vgtune.models import INITS, get_activation

    names = [i for i in (inits or INITS) if i != "lsuv"]  # LSUV's scale depends on the data
    torch.manual_seed(0)
    rows = []
    for a in activations:
        critical = critical_sigma_w2(Activation(get_activation(a)))
        given = {i: init_sigma_w2(i, a) for i in names}
        off = {i: abs(math.log(v / critical)) if math.isfinite(critical) and v > 0 else math.inf
               for i, v in given.items()}
        best = min(off.values())
        closest = [i for i in sorted(off, key=off.get) if off[i] <= best + math.log(1.1)]  # ties within 10%
        rows.append({"activation": a, "critical_sigma_w2": critical, "closest_init": ", ".join(closest),
                     "closest_sigma_w2": given[closest[0]], "factor_off": math.exp(best),
                     **{f"sigma_w2[{i}]": v for i, v in given.items()}})
    return rows

