import math

import pytest
import torch
import torch.nn.functional as F

from vgtune.core.diagnosis import Thresholds, diagnose
from vgtune.core.gradflow import GradFlowProbe, attenuation, norm, profile, summarize
from vgtune.core.models import ModelConfig, build_model, get_activation, init_weights


def _reference_grad_norms(model, x, y):
    outs, h = [], x
    for block in model.blocks:
        h = block(h)
        outs.append(h)
    loss = F.cross_entropy(model.head(h.flatten(1)), y)
    return [g.norm().item() for g in torch.autograd.grad(loss, outs)]


@pytest.mark.parametrize("residual", ["none", "standard"])
def test_probe_matches_autograd_reference(residual):
    torch.manual_seed(0)
    model = build_model(ModelConfig(depth=4, width=6, activation="tanh", residual=residual))
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    reference = _reference_grad_norms(model, x, y)
    probe = GradFlowProbe(model, "tanh")
    with probe.capture():
        F.cross_entropy(model(x), y).backward()
    series = probe.read()
    assert series["grad_norm"] == pytest.approx(reference, rel=1e-5)
    w_ref = [torch.cat([p.grad.flatten() for p in b.parameters()]).norm().item() for b in model.blocks]
    assert series["weight_grad_norm"] == pytest.approx(w_ref, rel=1e-5)


def test_no_hooks_outside_capture():
    model = build_model(ModelConfig(depth=3, width=4))
    probe = GradFlowProbe(model, "relu")
    with probe.capture():
        assert all(len(b._forward_hooks) == 1 for b in model.blocks)
    assert all(len(b._forward_hooks) == 0 and len(b.act._forward_hooks) == 0 and len(b.act._forward_pre_hooks) == 0
               for b in model.blocks)


def test_update_ratio_is_relative_step_size():
    model = build_model(ModelConfig(depth=2, width=4))
    probe = GradFlowProbe(model, "relu")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with probe.capture():
        F.cross_entropy(model(torch.randn(8, 1, 8, 8)), torch.zeros(8, dtype=torch.long)).backward()
    before = [torch.cat([p.detach().flatten().clone() for p in b.parameters()]) for b in model.blocks]
    grads = [torch.cat([p.grad.flatten() for p in b.parameters()]) for b in model.blocks]
    probe.snapshot()
    opt.step()
    ratios = probe.read()["update_ratio"]
    expected = [(0.1 * g.norm() / w.norm()).item() for g, w in zip(grads, before)]
    assert ratios == pytest.approx(expected, rel=1e-4)


def test_dead_units_are_counted():
    model = build_model(ModelConfig(depth=2, width=4, activation="relu"))
    with torch.no_grad():
        model.blocks[1].conv.bias.fill_(-1e3)  # every unit of block 2 is negative
    probe = GradFlowProbe(model, "relu")
    with probe.capture():
        F.cross_entropy(model(torch.randn(8, 1, 8, 8)), torch.zeros(8, dtype=torch.long)).backward()
    dead = probe.read()["dead_frac"]
    assert dead[1] == 1.0 and dead[0] < 1.0


def test_saturated_units_are_counted():
    model = build_model(ModelConfig(depth=2, width=4, activation="sigmoid"))
    init_weights(model, "normal")
    with torch.no_grad():
        model.blocks[0].conv.bias.fill_(20.0)
    probe = GradFlowProbe(model, "sigmoid")
    with probe.capture():
        model(torch.randn(8, 1, 8, 8)).sum().backward()
    sat = probe.read()["saturated_frac"]
    assert sat[0] == 1.0 and sat[1] == 0.0


def test_attenuation_definition():
    assert attenuation([1e-5, 1.0]) == pytest.approx(-5.0)
    assert attenuation([1.0, 1.0]) == 0.0
    assert math.isnan(attenuation([math.nan, 1.0]))


def test_a_zero_gradient_is_minus_infinity_not_a_clamped_count():
    assert attenuation([0.0, 1e-3]) == -math.inf
    assert attenuation([1e-3, 0.0]) == math.inf
    assert attenuation([1e-44, 1.0]) == pytest.approx(-44, abs=0.2)  # a subnormal float32 is a measurement


def test_norm_is_exact_where_the_squares_underflow_float32():
    tiny = torch.full((1000,), 1e-23)  # squares 1e-46: below float32's smallest subnormal
    assert tiny.norm().item() == 0.0  # what a plain float32 norm reads
    assert norm(tiny).item() == pytest.approx(1e-23 * math.sqrt(1000), rel=1e-5)
    assert norm(torch.full((4,), 1e-44)).item() > 0  # subnormal float32 gradients still count
    assert norm(torch.zeros(10)).item() == 0.0
    assert norm(torch.tensor([3e30, 4e30])).item() == pytest.approx(5e30, rel=1e-6)  # squares would overflow


def test_deep_sigmoid_attenuation_matches_a_float64_reference():
    """24 plain sigmoid blocks at PyTorch's init: block 1's gradient is ~1e-23 per element."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(depth=24, width=8, activation="sigmoid"))
    x, y = torch.randn(64, 1, 8, 8), torch.randint(0, 10, (64,))
    probe = GradFlowProbe(model, "sigmoid")
    with probe.capture():
        F.cross_entropy(model(x), y).backward()
    measured = attenuation(probe.read()["grad_norm"])
    reference = _reference_grad_norms(model.double(), x.double(), y)
    expected = math.log10(reference[0] / reference[-1])
    assert expected < -15
    assert measured == pytest.approx(expected, abs=0.05)


@pytest.mark.parametrize("args,expected", [
    (("completed", -0.3), "healthy"),
    (("completed", -5.0), "vanishing"),
    (("completed", 3.0), "exploding"),
    (("completed", -5.0, 0.8), "dead"),
    (("completed", -5.0, 0.0, 0.9), "saturated"),
    (("diverged", 0.0), "diverged"),
    (("completed", -0.5, 0.9, 0.9), "healthy"),  # dead units, but the gradient still flows
    (("completed", math.nan), "diverged"),
    (("completed", -math.inf), "vanishing"),  # no gradient at all reached block 1
    (("completed", math.inf), "exploding"),
])
def test_diagnose(args, expected):
    assert diagnose(*args) == expected


def test_diagnose_thresholds_are_configurable():
    assert diagnose("completed", -1.5, thresholds=Thresholds(vanishing=-1.0)) == "vanishing"


# ------------------------------------------------------------------ where the gradient is lost

def _probed(model, activation, x, y):
    probe = GradFlowProbe(model, activation)
    with probe.capture():
        F.cross_entropy(model(x), y).backward()
    return probe.read()


@pytest.mark.parametrize("collapsing", [3, 6])
def test_a_collapsing_middle_block_is_located(collapsing):
    """Block `collapsing` (1-based) with weights x 1e-3: the gradient falls ~3 decades across it, and recovers."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(depth=8, width=16, activation="tanh"))
    init_weights(model, "xavier_normal", activation="tanh")
    with torch.no_grad():
        model.blocks[collapsing - 1].conv.weight.mul_(1e-3)
    series = _probed(model, "tanh", torch.randn(32, 1, 8, 8), torch.randint(0, 10, (32,)))
    summary = summarize(series)
    assert summary["worst_drop_block"] == collapsing
    assert summary["worst_drop_decades"] == pytest.approx(-3.0, abs=0.5)
    g = series["grad_norm"]
    assert summary["worst_drop_decades"] == pytest.approx(math.log10(g[collapsing - 2] / g[collapsing - 1]))


def test_decades_per_block_of_a_plain_stack_is_the_total_over_its_transitions():
    torch.manual_seed(0)
    model = build_model(ModelConfig(depth=10, width=8, activation="sigmoid"))
    summary = summarize(_probed(model, "sigmoid", torch.randn(32, 1, 8, 8), torch.randint(0, 10, (32,))))
    assert summary["grad_attenuation"] < -3
    assert summary["decades_per_block"] == pytest.approx(summary["grad_attenuation"] / 9)


def test_profile_edge_cases():
    assert profile([1.0, 1e-2, 1.0]) == {"worst_drop_block": 3.0, "worst_drop_decades": pytest.approx(-2.0),
                                         "decades_per_block": 0.0}
    lost = profile([0.0, 0.0, 1.0, 1.0])  # lost across block 3; 0 -> 0 across block 2 is no new loss
    assert lost["worst_drop_block"] == 3.0 and lost["worst_drop_decades"] == -math.inf
    assert all(math.isnan(v) for v in profile([1.0]).values())
    assert all(math.isnan(v) for v in profile([1.0, math.inf, 1.0]).values())


# ------------------------------------------------------------------ dead means zero derivative

def _zero_derivative_reference(activation, z, eps=0.05):
    """Per unit: |f'(z)| < eps * max |f'| on every example, f' by autograd of the functional form."""
    fn = {"elu": F.elu, "gelu": F.gelu, "selu": F.selu, "silu": F.silu, "leaky_relu": F.leaky_relu}[activation]
    grid = torch.linspace(-20, 20, 40001, dtype=torch.float64, requires_grad=True)
    top = torch.autograd.grad(fn(grid).sum(), grid)[0].abs().max()
    u = z.detach().double().requires_grad_(True)
    d = torch.autograd.grad(fn(u).sum(), u)[0].abs()
    return (d < eps * top).all(dim=0).double().mean().item()


@pytest.mark.parametrize("activation", ["elu", "gelu", "selu", "silu", "leaky_relu"])
def test_dead_share_is_the_zero_derivative_share(activation):
    """A negative bias pushes some channels deep into the negative tail; the probe's count is autograd's."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(depth=2, width=8, activation=activation))
    with torch.no_grad():
        model.blocks[0].conv.bias.copy_(torch.linspace(-8, 2, 8))
    x = torch.randn(16, 1, 8, 8)
    z = model.blocks[0].conv(x)  # the activation's input (no norm)
    dead = _probed(model, activation, x, torch.randint(0, 10, (16,)))["dead_frac"][0]
    assert dead == pytest.approx(_zero_derivative_reference(activation, z), abs=1e-6)
    never_positive = (~(z > 0).any(dim=0)).float().mean().item()
    if activation == "leaky_relu":  # slope 0.01: below 5% of its largest, so the old count stands
        assert dead == pytest.approx(never_positive)
    else:  # a negative side that still passes gradient is not dead
        assert 0 < dead < never_positive


def test_the_derivative_is_read_before_an_in_place_activation():
    torch.manual_seed(0)
    model = build_model(ModelConfig(depth=2, width=8, activation="elu"))
    with torch.no_grad():
        model.blocks[0].conv.bias.copy_(torch.linspace(-8, 2, 8))
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    expected = _probed(model, "elu", x, y)["dead_frac"]
    for block in model.blocks:
        block.act.inplace = True
    assert _probed(model, "elu", x, y)["dead_frac"] == pytest.approx(expected)
    assert get_activation("elu").inplace is False
