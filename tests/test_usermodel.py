"""A user's own network and data through `vgtune sweep`: real Ray Tune, a real MLflow store, the report."""

import json
import textwrap

import pandas as pd
import pytest
import torch

from tests.helpers import REPO, sqlite_uri, sweep_args, trial_runs
from vgtune import cli

pytestmark = pytest.mark.usefixtures("ray_cluster")

# An nn.Sequential has no `blocks`: the spec names the modules to probe. The loader returns six tensors.
SEQNET = """
import torch
import torch.nn as nn

from vgtune.layers import get_activation


def build(depth, width, activation, norm, residual, num_classes, in_channels, image_size, hidden):
    layers = [nn.Conv2d(in_channels, width, 3, padding=1), get_activation(activation)]
    for _ in range(depth - 1):
        layers += [nn.Conv2d(width, width, 3, padding=1), get_activation(activation)]
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(width * image_size ** 2, hidden), nn.ReLU(),
                         nn.Linear(hidden, num_classes))


def load(split_seed):
    g = torch.Generator().manual_seed(split_seed)
    protos = torch.randn(3, 2, 6, 6, generator=g)

    def split(n):
        y = torch.randint(0, 3, (n,), generator=g)
        return protos[y] + 0.5 * torch.randn(n, 2, 6, 6, generator=g), y
    return (*split(300), *split(90), *split(90))
"""
SEQ_SPEC = """
name: seqnet
model: seqnet:build
probe: ["1", "3", "5"]
dataset: seqnet:load
parameters:
  model_args: {hidden: [8, 16]}
fixed: {depth: 3, width: 4, epochs: 2, batch_size: 30, init: kaiming_normal, lr: 0.05}
"""


def _run(args, tmp_path):
    return cli.main(["sweep", *args, *sweep_args(tmp_path)])


def test_the_example_sweeps_its_own_network_and_data(tmp_path, monkeypatch):
    """examples/mynet.yaml as a user runs it (from another folder): a factory with `blocks`, a Dataset loader."""
    monkeypatch.chdir(tmp_path)
    code = _run([str(REPO / "examples" / "mynet.yaml"), "--set", "parameters.depth=[2,4]",
                 "--set", "parameters.activation=[relu]", "--set", "fixed.epochs=1", "--set", "repeats=1"], tmp_path)
    assert code == 0
    client, runs = trial_runs(sqlite_uri(tmp_path), "mynet")
    assert len(runs) == 6  # 2 depths x 3 variants
    for run in runs:
        depth = int(run.data.params["depth"])
        assert run.info.status == "FINISHED" and run.data.tags["status"] == "completed"
        assert run.data.params["model"] == "mynet:build" and run.data.params["dataset"] == "mydata:load"
        assert json.loads(run.data.params["model_args"]) == {"head_dropout": 0.1}
        blocks = {k.split("/")[0] for k in run.data.metrics if k.startswith("block")}
        assert blocks == {f"block{i:02d}" for i in range(1, depth + 1)}
        assert "gradient_flow.svg" in [a.path for a in client.list_artifacts(run.info.run_id)]
    trials = pd.read_csv(tmp_path / "reports" / "mynet" / "trials.csv")
    assert len(trials) == 6 and set(trials["model"]) == {"mynet:build"}
    assert trials["grad_attenuation_init"].notna().all() and trials["test_acc"].max() > 0.6  # 4 classes: it learns
    assert trials["theory"].str.startswith("n/a").all()
    compared = pd.read_csv(tmp_path / "reports" / "mynet" / "mitigations.csv")
    assert {"norm=batch", "residual=standard"} <= set(compared["mitigation"])


def test_probe_paths_model_args_and_a_tensor_loader(tmp_path):
    (tmp_path / "seqnet.py").write_text(textwrap.dedent(SEQNET))
    (tmp_path / "seqnet.yaml").write_text(textwrap.dedent(SEQ_SPEC))
    assert _run([str(tmp_path / "seqnet.yaml")], tmp_path) == 0
    client, runs = trial_runs(sqlite_uri(tmp_path), "seqnet")
    assert sorted(json.loads(r.data.params["model_args"])["hidden"] for r in runs) == [8, 16]
    for run in runs:
        assert run.data.params["probe"] == '["1", "3", "5"]'
        blocks = {k.split("/")[0] for k in run.data.metrics if k.startswith("block")}
        assert blocks == {"block01", "block02", "block03"}
        assert run.data.metrics["block01/dead_frac"] >= 0  # the probed modules are the ReLUs themselves
    trials = pd.read_csv(tmp_path / "reports" / "seqnet" / "trials.csv")
    assert len(trials) == 2 and trials["model_args"].nunique() == 2 and (trials["status"] == "completed").all()
    assert (trials["test_acc"] > 0.5).all()  # three separable prototypes: it learns


def test_a_user_model_gets_every_conv_and_linear_initialized():
    from vgtune.core.models import init_weights

    net = torch.nn.Sequential(torch.nn.Conv2d(1, 16, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(64, 32))
    init_weights(net, "normal", activation="relu")
    for layer in (net[0], net[3]):
        assert abs(layer.weight.std().item() - 0.01) < 0.002 and layer.bias.abs().max() == 0
    init_weights(net, "lsuv", sample=torch.randn(64, 1, 4, 4), activation="relu")
    assert abs(net[0](torch.randn(64, 1, 4, 4)).std().item() - 1) < 0.3


def test_blocks_without_an_activation_module_read_nan_dead_units():
    from vgtune.core.gradflow import GradFlowProbe

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            conv = torch.nn.Conv2d
            self.blocks = torch.nn.ModuleList([conv(1, 4, 3, padding=1), conv(4, 4, 3, padding=1)])
            self.head = torch.nn.Linear(4, 3)

        def forward(self, x):
            for b in self.blocks:
                x = torch.relu(b(x))  # functional: nothing to hook
            return self.head(x.mean(dim=(2, 3)))

    net = Net()
    probe = GradFlowProbe(net, "relu")
    with probe.capture():
        torch.nn.functional.cross_entropy(net(torch.randn(8, 1, 5, 5)), torch.zeros(8, dtype=torch.long)).backward()
    series = probe.read()
    assert all(g > 0 for g in series["grad_norm"])
    assert all(v != v for v in series["dead_frac"])  # NaN: not measured, rather than a made-up 0
