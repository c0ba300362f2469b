"""Mean-field theory (vgtune.theory) against closed forms and against the probe on real plain CNNs."""

import math

import pytest
import torch
import torch.nn as nn

from vgtune import theory
from vgtune.train import TrainConfig, probe


@pytest.mark.parametrize("sigma_w2", [0.5, 1.0, 2.0, 3.3])
@pytest.mark.parametrize("q", [1e-6, 0.3, 1.0, 25.0])
def test_relu_chi1_is_half_sigma_w2(sigma_w2, q):
    assert theory.chi1(theory.Activation(nn.ReLU()), sigma_w2, q) == pytest.approx(sigma_w2 / 2, abs=1e-3)


def test_critical_points_of_relu_and_tanh():
    assert theory.critical_sigma_w2(theory.Activation(nn.ReLU())) == pytest.approx(2.0, abs=1e-3)
    assert theory.critical_sigma_w2(theory.Activation(nn.Tanh())) == pytest.approx(1.0, abs=1e-3)


def test_quadrature_matches_a_fine_trapezoid_for_narrow_derivatives():
    act = theory.Activation(nn.Tanh())
    for q in (0.5, 3.0, 30.0, 500.0):
        u = torch.linspace(-12 * math.sqrt(q), 12 * math.sqrt(q), 400001, dtype=torch.float64)
        density = torch.exp(-u ** 2 / (2 * q)) / math.sqrt(2 * math.pi * q)
        reference = torch.trapezoid((1 - torch.tanh(u) ** 2) ** 2 * density, u).item()
        assert act.derivative_moment(q) == pytest.approx(reference, rel=1e-4)


def test_depth_scale():
    assert theory.depth_scale(math.exp(-0.5)) == pytest.approx(2.0)
    assert theory.depth_scale(1.0) == math.inf


def test_border_share_of_a_same_conv():
    assert theory.border_share(8, 3) == pytest.approx((22 / 24) ** 2)
    assert theory.border_share(1000, 1) == 1.0


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid"])
@pytest.mark.parametrize("init", ["default", "xavier_normal", "kaiming_normal"])
def test_prediction_agrees_with_the_probe_at_depth_24(activation, init):
    result = probe(TrainConfig(depth=24, width=16, activation=activation, init=init, device="cpu"))["summary"]
    predicted, measured = result["grad_attenuation_predicted"], result["grad_attenuation"]
    assert result["theory"] == "mean field"
    assert abs(measured - predicted) <= max(1.5, 0.2 * abs(predicted)), (measured, predicted)


def test_twenty_sigmoid_blocks_at_default_init_predict_about_minus_16():
    result = probe(TrainConfig(depth=20, activation="sigmoid", device="cpu"))["summary"]
    assert result["grad_attenuation_predicted"] == pytest.approx(-16.5, abs=1.0)


def test_init_scale_crosses_the_critical_point():
    chis = [probe(TrainConfig(depth=8, width=16, activation="tanh", init="xavier_normal", init_scale=s,
                              device="cpu"))["summary"]["chi1"] for s in (0.3, 2.0)]
    assert chis[0] < 1 < chis[1]


@pytest.mark.parametrize("kw,reason", [({"norm": "batch"}, "n/a: batch norm"),
                                       ({"residual": "standard"}, "n/a: standard residual"),
                                       ({"pool": "max"}, "n/a: max pooling")])
def test_no_prediction_outside_plain_stacks(kw, reason):
    result = probe(TrainConfig(depth=4, width=8, device="cpu", **kw))["summary"]
    assert result["theory"] == reason and math.isnan(result["grad_attenuation_predicted"])


def test_critical_table_names_he_init_for_relu():
    (row,) = theory.critical_table(["relu"])
    assert row["critical_sigma_w2"] == pytest.approx(2.0, abs=1e-3)
    assert "kaiming_normal" in row["closest_init"] and row["factor_off"] < 1.1


def test_departures_list_only_the_configurations_outside_the_tolerance():
    import pandas as pd

    from vgtune import phase

    df = pd.DataFrame({"depth": [4, 8, 24, 32], "grad_attenuation_init": [-1.0, -4.0, -30.0, -23.0],
                       "grad_attenuation_predicted": [-1.2, -1.0, -20.0, -20.0]})
    # tolerance max(1.5, 20% of |predicted|): 3 decades off -1 and 10 off -20 depart; 3 off -20 does not
    assert phase.departures(df)["depth"].tolist() == [8, 24]
    assert phase.departures(df[df["depth"].isin([4, 32])]).empty
    assert "3 of 4 plain" not in phase.agreement_finding(df) and "2 of 4 plain" in phase.agreement_finding(df)
