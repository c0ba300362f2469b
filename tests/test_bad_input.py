"""A corpus of bad specs and options: each exits 2 with one clear line, before Ray or MLflow start.

Runs `vgtune.cli.main` in-process (no Ray fixture in this module), so it can also
check that Ray never started. Property-based tests cover the spec fields.
"""

import string

import pytest
import ray
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vgtune import cli
from vgtune.driver import spec as spec_mod
from vgtune.driver.spec import SpecError

# The user's code that the model/dataset cases below name; written beside every case's spec.
USER_CODE = """
import torch
import torch.nn as nn
from torch.utils.data import TensorDataset

NOT_CALLABLE = 3


class Net(nn.Module):
    def __init__(self, outputs=10):
        super().__init__()
        self.blocks = nn.ModuleList([nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)])
        self.unused = nn.Conv2d(4, 4, 1)
        self.head = nn.Linear(4, outputs)

    def forward(self, x):
        for b in self.blocks:
            x = torch.relu(b(x))
        return self.head(x.mean(dim=(2, 3)))


def good(**kw):
    return Net()


def wrong_sig(depth):
    return Net()


def not_module(**kw):
    return 42


def no_blocks(**kw):
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))


def wrong_output(**kw):
    return Net(outputs=3)


def raises(**kw):
    raise RuntimeError("boom")


def _x(n):
    return torch.randn(n, 1, 8, 8)


def five():
    return _x(4), torch.zeros(4, dtype=torch.long), _x(4), torch.zeros(4, dtype=torch.long), _x(4)


def float_labels():
    y = torch.tensor([0.0, 1.0, 0.0, 1.0])
    return _x(4), y, _x(4), y, _x(4), y


def big():
    y = torch.arange(64) % 10
    return (TensorDataset(_x(64), y),) * 3


def loader_raises():
    raise RuntimeError("no such file")
"""
USER_CASES = {
    "model not importable": ("model: nosuchmodule:build\n", "model: cannot import 'nosuchmodule'"),
    "model not module:function": ("model: 'badnets:'\n", "is not module:function"),
    "model function missing": ("model: badnets:nothing\n",
                               "'badnets' has no 'nothing'; callables there: Net, big, five"),
    "model not callable": ("model: badnets:NOT_CALLABLE\n", "badnets:NOT_CALLABLE is a int, not a function"),
    "model wrong signature": ("model: badnets:wrong_sig\n", "badnets:wrong_sig(depth) cannot be called with depth"),
    "model returns no module": ("model: badnets:not_module\n", "returned a int, not a torch.nn.Module"),
    "model raises": ("model: badnets:raises\n", "model: badnets:raises failed to build: RuntimeError: boom"),
    "model without blocks": ("model: badnets:no_blocks\n", "Sequential has no blocks to probe; give it a `blocks`"),
    "probe path missing": ("model: badnets:good\nprobe: [blocks.0, layer9]\n",
                           "probe: no module 'layer9' in Net; its modules include blocks, blocks.0"),
    "probe not a list": ("model: badnets:good\nprobe: blocks.0\n", "probe: must be a non-empty list of module paths"),
    "probe an unused module": ("model: badnets:good\nprobe: [blocks.0, unused]\n",
                               "probe: block 'unused' yielded no tensor output with a gradient"),
    "model output shape": ("model: badnets:wrong_output\n",
                           "output must be (batch, num_classes) = (8, 10), got (8, 3)"),
    "arch and model": ("model: badnets:good\narch: resnet_cifar\n", "arch and model both given"),
    "pool with a user model": ("model: badnets:good\nfixed: {pool: max}\n",
                               "pool: an option of vgtune's own architectures"),
    "unknown arch": ("arch: vgg\n", "unknown arch 'vgg'; valid: cnn, resnet_cifar"),
    "resnet depth": ("arch: resnet_cifar\nparameters: {depth: [10]}\n", "depth for resnet_cifar must be 6n+2"),
    "model_args without a model": ("fixed: {model_args: {hidden: 3}}\n", "model_args are passed to a user factory"),
    "model_args not a mapping": ("model: badnets:good\nparameters: {model_args: [1, 2]}\n",
                                 "parameters.model_args: expected a mapping"),
    "loader not importable": ("dataset: nosuchdata:load\n", "dataset: cannot import 'nosuchdata'"),
    "loader returns five": ("dataset: badnets:five\n", "must return six tensors"),
    "loader float labels": ("dataset: badnets:float_labels\n", "train split: labels must be an integer tensor"),
    "loader over the memory limit": ("dataset: {name: badnets:big, max_gb: 0.000001}\n",
                                     "over the limit of 1e-06 GB every worker would hold; raise it with "
                                     "dataset.max_gb"),
    "loader raises": ("dataset: badnets:loader_raises\n", "badnets:loader_raises raised RuntimeError: no such file"),
    "unknown lr_schedule": ("fixed: {lr_schedule: linear}\n", "unknown lr_schedule 'linear'; valid: constant, step"),
    "unknown augment": ("fixed: {augment: cutout}\n", "unknown augment 'cutout'; valid: none, crop_flip"),
    "max_gb 0": ("dataset: {name: digits, max_gb: 0}\n", "dataset.max_gb: must be a number > 0, got 0"),
}
CORPUS_USER = {case: (f"name: t\n{text}", [], message) for case, (text, message) in USER_CASES.items()}

GOOD = "name: ok\nparameters: {depth: [2]}\nfixed: {width: 4, epochs: 1}\n"
CORPUS = {
    "yaml syntax": ("name: t\nparameters: {depth: [2\n", [], "YAML syntax error"),
    "tab indentation": ("name: t\nparameters:\n\tdepth: [2]\n", [], "YAML syntax error"),
    "not a mapping": ("just a string\n", [], "a spec is a mapping"),
    "unknown top key": ("name: t\nepochs: 3\n", [], "epochs: unknown key; valid:"),
    "unknown parameter": ("name: t\nparameters: {layers: [2]}\n", [], "parameters.layers: unknown key; valid:"),
    "wrong type": ("name: t\nparameters: {depth: [two]}\n", [], "parameters.depth[0]: depth must be an integer"),
    "parameters not a mapping": ("name: t\nparameters: [depth]\n", [], "parameters: expected a mapping"),
    "depth 0": ("name: t\nparameters: {depth: [0]}\n", [], "depth must be an integer >= 1, got 0"),
    "lr -1": ("name: t\nfixed: {lr: -1}\n", [], "fixed: lr must be a number > 0, got -1"),
    "cpu 0": ("name: t\nresources: {cpu: 0}\n", [], "resources.cpu: must be a number > 0, got 0"),
    "gpu -1": ("name: t\nresources: {gpu: -1}\n", [], "resources.gpu: must be a number >= 0"),
    "too many cpus": ("name: t\nresources: {cpu: 512}\n", [], "resources.cpu: 512 per trial, but only"),
    "a gpu on a cpu machine": ("name: t\nresources: {gpu: 1}\n", [], "resources.gpu: 1 per trial, but 0 GPUs"),
    "unknown activation": ("name: t\nparameters: {activation: [swish]}\n", [], "unknown activation 'swish'; valid:"),
    "unknown init": ("name: t\nparameters: {init: [glorot]}\n", [], "unknown init 'glorot'; valid:"),
    "unknown norm": ("name: t\nparameters: {norm: [instance]}\n", [], "unknown norm 'instance'; valid:"),
    "unknown residual": ("name: t\nparameters: {residual: [fixup]}\n", [], "unknown residual 'fixup'; valid:"),
    "unknown dataset": ("name: t\ndataset: svhn\n", [], "unknown dataset 'svhn'; valid:"),
    "unknown optimizer": ("name: t\nfixed: {optimizer: lion}\n", [], "unknown optimizer 'lion'; valid: sgd, adam"),
    "missing data root": ("name: t\ndataset: {name: cifar10, root: /nonexistent/data}\n", [],
                          "no usable files under /nonexistent/data"),
    "no data root": ("name: t\ndataset: mnist\n", [], "needs a data root"),
    "empty grid": ("name: t\nparameters: {depth: []}\n", [], "parameters.depth: empty list"),
    "bad distribution": ("name: t\nparameters: {lr: {normal: [0, 1]}}\n", [], "a distribution is one of"),
    "bad scheduler": ("name: t\nscheduler: {type: pbt}\n", [], "unknown scheduler 'pbt'; valid: fifo, asha"),
    "bad metric": ("name: t\nmetric: accuracy\n", [], "unknown metric 'accuracy'; valid:"),
    "bad mode": ("name: t\nmode: up\n", [], "mode: must be one of max, min"),
    "negative max_failures": ("name: t\nmax_failures: -1\n", [], "max_failures: must be an integer >= 0"),
    "depth true": ("name: t\nparameters: {depth: [true]}\n", [], "depth must be an integer >= 1, got True"),
    "vanishing above 0": ("name: t\nthresholds: {vanishing: 1}\n", [], "thresholds.vanishing: must be a number < 0"),
    "dead share above 1": ("name: t\nthresholds: {dead: 2}\n", [], "thresholds.dead: must be a number in (0, 1]"),
    "saturation_eps 0": ("name: t\nthresholds: {saturation_eps: 0}\n", [],
                         "thresholds.saturation_eps: must be a number in (0, 1)"),
    "patience 0": ("name: t\nstop: {patience: 0}\n", [], "stop.patience: must be an integer >= 1, got 0"),
    "diverge_loss 0": ("name: t\nfixed: {diverge_loss: 0}\n", [], "diverge_loss must be a number > 0"),
    "bf16 as text": ("name: t\nfixed: {bf16: 'no'}\n", [], "bf16 must be true or false"),
    "factor in both sections": ("name: t\nparameters: {lr: [0.1]}\nnuisance: {lr: [0.01, 0.1]}\n", [],
                                "nuisance.lr: also under parameters"),
    "repeats 0": ("name: t\nrepeats: 0\n", [], "repeats: must be an integer >= 1, got 0"),
    "nuisance not an option": ("name: t\nnuisance: {learning_rate: [0.1]}\n", [],
                               "nuisance.learning_rate: unknown key; valid:"),
    "selection on test data": ("name: t\nmetric: test_acc\nnuisance: {lr: [0.01, 0.1]}\n", [],
                               "metric: test_acc is test data, which never chooses a setting or drives a scheduler"),
    "scheduler on test data": ("name: t\nmetric: test_acc\nscheduler: {type: asha}\n", [],
                               "drives a scheduler; valid: val_acc, train_acc, train_loss, grad_attenuation"),
    "--set metric to test data": (GOOD, ["--set", "metric=test_acc"], "metric: test_acc is test data"),
    "confirm zero": ("name: t\nnuisance: {lr: [0.01, 0.1]}\nconfirm: 0\n", [],
                     "confirm: must be an integer >= 1, got 0"),
    "confirm not an integer": ("name: t\nnuisance: {lr: [0.01, 0.1]}\nconfirm: 2.5\n", [],
                               "confirm: must be an integer >= 1, got 2.5"),
    "confirm a word": ("name: t\nnuisance: {lr: [0.01, 0.1]}\nconfirm: many\n", [],
                       "confirm: must be an integer >= 1, got 'many'"),
    "confirm without nuisance": ("name: t\nconfirm: 3\n", [], "confirm: a spec without nuisance: has no setting"),
    "unknown correction": ("name: t\ncorrection: bonferroni\n", [],
                           "correction: must be one of holm, bh, none, got 'bonferroni'"),
    "unknown split": ("name: t\nsplit: random\n", [], "split: must be one of fixed, per_seed, got 'random'"),
    "split under fixed": ("name: t\nfixed: {split: per_seed}\n", [],
                          "fixed.split: set by the spec's top-level split: key, not here"),
    "repeats and seeds": ("name: t\nparameters: {seed: [0, 1]}\nrepeats: 2\n", [],
                          "repeats: seeds come from repeats"),
    "variant sets a nuisance key": ("name: t\nnuisance: {lr: [0.1]}\nvariants: [{}, {lr: 0.01}]\n", [],
                                    "variants[1].lr: a nuisance option"),
    "asha over a nuisance grid": ("name: t\nnuisance: {lr: [0.1]}\nscheduler: {type: asha}\n", [],
                                  "scheduler.type: asha would let one arm's trials cut another's short"),
    "init_scale 0": ("name: t\nparameters: {init_scale: [0]}\n", [],
                     "parameters.init_scale[0]: init_scale must be a number > 0"),
    "bad nuisance value": ("name: t\nnuisance: {lr: [-1]}\n", [], "nuisance.lr[0]: lr must be a number > 0"),
    "pack not a size": ("name: t\npack: yes\n", [], "pack: must be off, auto or a number of trials per pack"),
    "pack with asha": ("name: t\npack: 4\nscheduler: {type: asha}\n", [],
                       "pack: scheduler asha pauses and stops trials one by one"),
    "pack with nothing to pack": ("name: t\npack: 4\narch: resnet_cifar\nfixed: {depth: 8}\n", [],
                                  "pack: 4: no trial of this spec can be packed"),
    "bad --set pack": (GOOD, ["--set", "pack=-3"], "pack: must be off, auto or a number"),
    "bad --set": (GOOD, ["--set", "fixed.epochs"], "expected key.path=value"),
    "unknown --set key": (GOOD, ["--set", "epochz=3"], "--set epochz: unknown key 'epochz'"),
    "bad --set value": (GOOD, ["--set", "fixed.epochs=zero"], "fixed: epochs must be an integer >= 1"),
    "out not writable": (GOOD, ["--out", "/proc/vgtune"], "--out /proc/vgtune: not a writable folder"),
    "storage is a file": (GOOD, ["--storage", "/etc/hostname"], "--storage /etc/hostname: not a writable folder"),
    "bad tracking uri": (GOOD, ["--tracking-uri", "ftp://x"], "scheme must be sqlite, http(s) or file"),
    "tracking folder missing": (GOOD, ["--tracking-uri", "sqlite:////nonexistent/m.db"], "does not exist"),
    "resume with nothing": (GOOD, ["--resume"], "--resume: no run folder of sweep 'ok'"),
} | CORPUS_USER


@pytest.mark.parametrize("case", list(CORPUS))
def test_bad_input_exits_2_with_one_line(case, tmp_path, capsys):
    text, extra, message = CORPUS[case]
    (tmp_path / "spec.yaml").write_text(text)
    (tmp_path / "badnets.py").write_text(USER_CODE)
    args = ["sweep", str(tmp_path / "spec.yaml"), "--storage", str(tmp_path / "runs"), "--out", str(tmp_path / "r"),
            "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db", *extra]
    code = cli.main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("vgtune: error: ") and message in err[0], err
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "runs").exists()
    assert not ray.is_initialized(), "Ray was started before the error"


def test_missing_spec_file(capsys):
    assert cli.main(["sweep", "/nonexistent/spec.yaml"]) == 2
    assert "spec file /nonexistent/spec.yaml does not exist" in capsys.readouterr().err


# ----------------------------------------------------------------- properties

scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 50), st.floats(-2, 2), st.just(float("nan")),
                    st.text(string.ascii_lowercase + "_", max_size=12))
values = st.one_of(scalars, st.lists(scalars, max_size=3), st.dictionaries(st.sampled_from(
    ["loguniform", "uniform", "choice", "randint", "x"]), st.lists(scalars, max_size=3), max_size=2))
fields = st.sampled_from(list(spec_mod.TRAIN_KEYS) + ["bogus"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(parameters=st.dictionaries(fields, values, max_size=3), fixed=st.dictionaries(fields, scalars, max_size=3),
       top=st.dictionaries(st.sampled_from(["samples", "seed", "max_failures", "metric", "mode", "resources",
                                            "scheduler", "stop", "pack", "junk"]), values, max_size=2))
def test_any_spec_either_expands_or_raises_spec_error(parameters, fixed, top):
    raw = {"name": "p", "parameters": parameters, "fixed": fixed, **top}
    try:
        spec = spec_mod.parse(raw)
    except SpecError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert spec.trials and all(set(t) == set(spec_mod.TRAIN_KEYS) for t in spec.trials)


@settings(max_examples=60, deadline=None)
@given(axes=st.dictionaries(st.sampled_from(["depth", "width", "seed", "epochs"]),
                            st.lists(st.integers(1, 6), min_size=1, max_size=3), min_size=1, max_size=3),
       samples=st.integers(1, 3))
def test_grid_size_is_the_product_of_axes_times_samples(axes, samples):
    spec = spec_mod.parse({"name": "p", "parameters": axes, "samples": samples})
    expected = samples
    for axis in axes.values():
        expected *= len(axis)
    assert len(spec.trials) == expected
