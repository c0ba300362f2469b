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
a small image drops the taps that fall outside it, which scales the effective
sigma_w^2 of every block (both directions) by the Perron share `tap_share`: deep
in a stack the spatial variance profile settles on the Perron vector of the tap
operator, so the share is its largest eigenvalue, (lambda_max(T) / k)^2 for i.i.d.
taps (T the 0/1 band matrix; 0.921 for 3x3 on 8x8, where the mean share
`border_share` is 0.840) and 1 for delta-orthogonal kernels. Expectations are
Gauss-Hermite quadrature over any activation module (derivatives by autograd)
while sqrt(q) is small enough for its nodes to resolve phi' (q <= 4); beyond, a
trapezoid rule in z fine enough for phi' of a saturating activation, whose width
shrinks as 1/sqrt(q).

The depth scale xi at the fixed point q* of the deeper blocks' map is Schoenholz
et al.'s correlation depth xi_c = 1 / |ln chi_c|, chi_c = sigma_w^2 E[phi'(u_1) phi'(u_2)]
at the stable fixed point c* of the correlation map: plain networks train up to
about 6 xi_c blocks. In the ordered phase c* = 1 and xi_c = 1 / |ln chi_1|, the
blocks per e-fold of gradient; in the chaotic phase (chi_1 > 1) c* < 1 and xi_c
is deeper than 1 / |ln chi_1| (`correlation_depth`). Only plain stacks have a
prediction; otherwise `theory` says why not (`n/a: batch norm`, ...).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

QUADRATURE_POINTS = 100  # even: no node at z = 0, where ReLU-like derivatives jump
Q_MAX = 1e4  # a length map still growing here has no fixed point (an unbounded phi, chaotic)
HERMITE_MAX_Q = 4.0  # above: node spacing * sqrt(q) > 0.6, too coarse for tanh' / sigmoid'
TRAPEZOID_STEP = 0.02  # in u = sqrt(q) z, the pre-activation
PAIR_STEP = 0.05  # the same for pairs (u_1, u_2): n^2 points, and the correlation depth needs ~1%
TRAINABLE_DEPTHS = 6.0  # plain nets train up to about 6 xi (Schoenholz et al. 2017)
_NODES, _WEIGHTS = np.polynomial.hermite_e.hermegauss(QUADRATURE_POINTS)
_WEIGHTS = _WEIGHTS / math.sqrt(2 * math.pi)  # E_z[f(z)] = sum w_i f(z_i), z ~ N(0, 1)
NORM_NAMES = {"batch": "batch norm", "group": "group norm", "layer": "layer norm"}


@dataclass
class Prediction:
    """The mean-field prediction for one configuration at initialization."""

    grad_attenuation: float  # predicted log10 ||dL/dh_1|| / ||dL/dh_L||; NaN where the theory does not apply
    chi1: float  # chi_1 at the fixed point of blocks 2..L (1 = critical)
    depth_scale: float  # xi_c (blocks): 1 / |ln chi1| if ordered, deeper if chaotic; inf at criticality
    theory: str  # "mean field" or why there is no prediction ("n/a: batch norm")
    sigma_w2: float = math.nan  # effective sigma_w^2 of blocks 2..L (tap share included)
    q: tuple[float, ...] = ()  # q_1..q_L

    def as_dict(self) -> dict[str, float | str]:
        return {"chi1": self.chi1, "depth_scale": self.depth_scale,
                "grad_attenuation_predicted": self.grad_attenuation, "theory": self.theory}


def not_applicable(reason: str) -> Prediction:
    return Prediction(math.nan, math.nan, math.nan, f"n/a: {reason}")


def why_no_theory(norm: str, residual: str, pool: str, dropout: float, network: str = "cnn") -> str | None:
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

    def _values(self, q: float, step: float = TRAPEZOID_STEP) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(weights, phi(u), phi'(u)) at the quadrature points u = sqrt(q) z."""
        q = max(q, 1e-24)  # q -> 0 is a limit: phi'(0) of a ReLU is 0 in torch, 1 just above
        if q <= HERMITE_MAX_Q:
            z, weights = _NODES, _WEIGHTS
        else:
            n = min(int(16 * math.sqrt(q) / step), 4_000_000) // 2 * 2  # even: no node at z = 0
            z = np.linspace(-8.0, 8.0, n)
            weights = np.exp(-z * z / 2) * (z[1] - z[0]) / math.sqrt(2 * math.pi)
        phi, dphi = self._at(z * math.sqrt(q))
        return weights, phi, dphi

    def _at(self, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(phi(u), phi'(u)), by autograd."""
        with torch.enable_grad():
            t = torch.tensor(u, dtype=torch.float64, requires_grad=True)
            out = self.module(t)
            (grad,) = torch.autograd.grad(out.sum(), t)
        return out.detach().numpy(), grad.numpy()

    def pair_moments(self, q: float, c: float) -> tuple[float, float]:
        """(E[phi(u_1) phi(u_2)], E[phi'(u_1) phi'(u_2)]) for u_1, u_2 of variance q and correlation c."""
        weights, phi1, dphi1 = self._values(q, PAIR_STEP)
        z = _NODES if max(q, 1e-24) <= HERMITE_MAX_Q else np.linspace(-8.0, 8.0, len(weights))
        u2 = math.sqrt(q) * (c * z[:, None] + math.sqrt(max(0.0, 1 - c * c)) * z[None, :])  # rows: z_1
        phi2, dphi2 = self._at(u2)
        pair = weights[:, None] * weights[None, :]
        return float(np.sum(pair * phi1[:, None] * phi2)), float(np.sum(pair * dphi1[:, None] * dphi2))

    def second_moment(self, q: float) -> float:
        weights, phi, _ = self._values(q)
        return float(np.dot(weights, phi ** 2))

    def derivative_moment(self, q: float) -> float:
        weights, _, dphi = self._values(q)
        return float(np.dot(weights, dphi ** 2))


def chi1(act: Activation, sigma_w2: float, q: float) -> float:
    return sigma_w2 * act.derivative_moment(q)


def fixed_point(act: Activation, sigma_w2: float, sigma_b2: float, q_max: float = Q_MAX) -> float:
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
    """xi = 1 / |ln chi|: blocks per e-fold (inf at chi = 1); of the gradient for chi = chi_1."""
    if not math.isfinite(chi) or chi <= 0:
        return 0.0
    return math.inf if chi == 1 else 1.0 / abs(math.log(chi))


def correlation_fixed_point(act: Activation, sigma_w2: float, sigma_b2: float, q: float) -> float:
    """The stable fixed point c* of the correlation map c -> (sigma_w2 E[phi(u_1) phi(u_2)] + sigma_b2) / q at q*.

    1 in the ordered phase (chi_1 <= 1), or where q* does not exist; below 1 in the chaotic phase (0 for an
    odd phi without bias, whose map is odd in c).
    """
    if q <= 0 or chi1(act, sigma_w2, q) <= 1:
        return 1.0

    def excess(c: float) -> float:
        return (sigma_w2 * act.pair_moments(q, c)[0] + sigma_b2) / q - c

    top = 1 - 1e-2
    if excess(0.0) <= 1e-9:
        return 0.0
    if excess(top) >= 0:
        return 1.0  # no fixed point resolved below 1
    from scipy import optimize

    return float(optimize.brentq(excess, 0.0, top, xtol=1e-6))


def correlation_depth(act: Activation, sigma_w2: float, sigma_b2: float, q: float) -> float:
    """Schoenholz et al.'s xi_c = 1 / |ln chi_c|, chi_c = sigma_w2 E[phi'(u_1) phi'(u_2)] at c*:
    = 1 / |ln chi_1| in the ordered phase; plain nets train up to about 6 xi_c blocks."""
    c = correlation_fixed_point(act, sigma_w2, sigma_b2, q)
    if c >= 1.0:
        return depth_scale(chi1(act, sigma_w2, q))
    return depth_scale(sigma_w2 * act.pair_moments(q, c)[1])


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


def tap_share(weight: torch.Tensor, image_size: int) -> float:
    """The Perron share of a 'same' zero-padded conv on an image_size^2 image: the largest eigenvalue of
    its tap operator on the spatial variance profile, each tap weighted by its share of E[W^2].

    The taps' energies are taken as rows x columns (exact for i.i.d. and delta kernels): the share is
    the product of the two 1-D operators' largest eigenvalues, (lambda_max(T) / k)^2 for i.i.d. taps,
    T the 0/1 band matrix; 1 when only the centre tap has weight.
    """
    energy = (weight.detach().double() ** 2).mean(dim=(0, 1)).numpy()
    total = energy.sum()
    if total == 0:
        return 1.0
    share = 1.0
    for taps in (energy.sum(axis=1) / total, energy.sum(axis=0) / total):
        pad = len(taps) // 2
        idx = np.arange(image_size)
        offset = idx[None, :] - idx[:, None] + pad  # T[p, r] = taps[r - p + pad]: input r feeds output p
        op = np.where((offset >= 0) & (offset < len(taps)), taps[np.clip(offset, 0, len(taps) - 1)], 0.0)
        share *= float(np.max(np.abs(np.linalg.eigvals(op))))
    return share


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
    # (sigma_w^2 * the conv's tap share, sigma_b^2) per block
    variances = [(sw * tap_share(conv.weight, image_size), sb) for conv, (sw, sb) in
                 zip(convs, map(conv_variances, convs))]
    sw1, sb1 = variances[0]
    qs = [sw1 * float((x.double() ** 2).mean()) + sb1]
    log_chi = 0.0
    for sw, sb in variances[1:]:
        qs.append(sw * act.second_moment(qs[-1]) + sb)
        log_chi += math.log10(chi1(act, sw, qs[-1]))
    # The fixed point of the deeper blocks' map, with their mean variances (block 1 alone if depth is 1).
    deep = variances[1:] or variances
    sw = sum(v[0] for v in deep) / len(deep)
    sb = sum(v[1] for v in deep) / len(deep)
    q_star = fixed_point(act, sw, sb)
    chi_star = chi1(act, sw, q_star)
    xi = correlation_depth(act, sw, sb, q_star) if q_star < Q_MAX else depth_scale(chi_star)
    return Prediction(0.5 * log_chi, chi_star, xi, "mean field", sw, tuple(qs))


# ------------------------------------------------------------------ what an activation needs

def init_sigma_w2(init: str, activation: str, width: int = 64, kernel_size: int = 3) -> float:
    """sigma_w^2 = N_in * E[W^2] that the named init gives a width x width conv for `activation`."""
    from vgtune.core.models import INITS

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
    from vgtune.core.models import INITS, get_activation

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

