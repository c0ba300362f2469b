"""Spec parsing and validation: no Ray, no MLflow."""

import sys
import textwrap

import pytest

from vgtune.driver import spec as spec_mod
from vgtune.driver.spec import SpecError

GOOD = """
name: t
dataset: digits
parameters:
  depth: [2, 4]
  activation: [relu, tanh]
  lr: {loguniform: [0.001, 0.1]}
samples: 2
configs:
  - {depth: 3, norm: batch}
variants: [{}]
fixed: {width: 4, epochs: 1}
"""


def write(tmp_path, text, name="s.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_grid_times_samples_plus_explicit_configs(tmp_path):
    spec = spec_mod.load(write(tmp_path, GOOD))
    assert len(spec.trials) == 2 * 2 * 2 + 1
    assert {t["depth"] for t in spec.trials} == {2, 3, 4}
    lrs = [t["lr"] for t in spec.trials[:8]]
    assert all(0.001 <= lr <= 0.1 for lr in lrs) and len(set(lrs)) == 8  # a draw per trial, as Tune samples
    assert spec.trials[-1]["norm"] == "batch" and spec.trials[-1]["width"] == 4
    assert set(spec.factors) >= {"depth", "activation", "lr"}


def test_expansion_is_deterministic(tmp_path):
    path = write(tmp_path, GOOD)
    assert spec_mod.load(path).trials == spec_mod.load(path).trials


def test_set_overrides(tmp_path):
    spec = spec_mod.load(write(tmp_path, GOOD), ["fixed.epochs=3", "parameters.depth=[5]", "samples=1"])
    assert {t["epochs"] for t in spec.trials} == {3}
    assert {t["depth"] for t in spec.trials} == {5, 3}
    spec = spec_mod.load(write(tmp_path, GOOD), ["dataset.limit=100"])
    assert spec.trials[0]["limit"] == 100 and spec.trials[0]["dataset"] == "digits"


def test_shipped_specs_are_valid():
    default = spec_mod.load("sweeps/default.yaml")
    assert default.total_trials >= 100 and max(t["depth"] for t in default.trials) >= 24
    assert set(default.factors) >= {"depth", "activation", "init", "norm", "residual"}
    remedies = spec_mod.load("sweeps/remedies.yaml")
    assert set(remedies.factors) >= {"pool", "dropout", "weight_decay", "optimizer", "norm", "residual", "init"}
    spec_mod.load("sweeps/tiny.yaml")
    he = spec_mod.load("sweeps/he2016.yaml")
    assert len(he.trials) == 8 and set(he.factors) == {"depth", "residual"}
    assert {(t["arch"], t["norm"], t["lr_schedule"], t["augment"], t["dataset"]) for t in he.trials} == {
        ("resnet_cifar", "batch", "step", "crop_flip", "cifar10")}
    mine = spec_mod.load("examples/mynet.yaml")
    assert mine.references == ["mydata:load", "mynet:build"] and mine.folder.endswith("examples")


def test_a_rule_across_fields_names_the_grid_value_not_fixed():
    raw = {"name": "t", "arch": "resnet_cifar", "parameters": {"depth": [20, 10]}}
    with pytest.raises(SpecError, match=r"^parameters.depth\[1\]: depth for resnet_cifar must be 6n\+2"):
        spec_mod.parse(raw)
    with pytest.raises(SpecError, match=r"^fixed.lr: must be a number > 0"):
        spec_mod.parse(raw | {"parameters": {"depth": [20]}, "fixed": {"lr": -1}})
    assert len(spec_mod.parse(raw | {"parameters": {"depth": [20, 32]}}).trials) == 2


BAD = [
    ("name: t\nparameters: {depth: [2, 4}\n", r"YAML syntax error at line 2"),
    ("name: t\nparamters: {depth: [2]}\n", r"paramters: unknown key; valid: name, dataset"),
    ("name: t\nparameters: {depht: [2]}\n", r"parameters.depht: unknown key; valid: depth"),
    ("name: t\nparameters: {depth: [2, 'x']}\n", r"parameters.depth\[1\]: depth must be an integer >= 1, got 'x'"),
    ("name: t\nparameters: {depth: [0]}\n", r"parameters.depth\[0\]: depth must be an integer >= 1, got 0"),
    ("name: t\nparameters: {activation: [relu, relux]}\n",
     r"parameters.activation\[1\]: unknown activation 'relux'; valid: relu, leaky_relu"),
    ("name: t\nparameters: {init: [he]}\n", r"parameters.init\[0\]: unknown init 'he'; valid: default"),
    ("name: t\nparameters: {norm: [bn]}\n", r"parameters.norm\[0\]: unknown norm 'bn'; valid: none, batch"),
    ("name: t\nparameters: {depth: []}\n", r"parameters.depth: empty list"),
    ("name: t\nparameters: {lr: [-1]}\n", r"parameters.lr\[0\]: lr must be a number > 0, got -1"),
    ("name: t\nparameters: {lr: {lognormal: [1, 2]}}\n", r"parameters.lr: a distribution is one of"),
    ("name: t\nparameters: {lr: {loguniform: [0.1, 0.01]}}\n", r"parameters.lr.loguniform: expected \[low, high\]"),
    ("name: t\nresources: {cpu: 0}\n", r"resources.cpu: must be a number > 0, got 0"),
    ("name: t\nresources: {gpus: 1}\n", r"resources.gpus: unknown key; valid: cpu, gpu"),
    ("name: t\nscheduler: {type: hyperband}\n", r"scheduler.type: unknown scheduler 'hyperband'; valid: fifo, asha"),
    ("name: t\ndataset: imagenet\n", r"^dataset: unknown dataset 'imagenet'; valid: digits"),
    ("name: t\ndataset: {name: digits, path: x}\n", r"dataset.path: unknown key; valid: name, root"),
    ("name: t\nmetric: loss\n", r"metric: unknown metric 'loss'; valid: val_acc"),
    ("name: t\nfixed: {epochs: 1.5}\n", r"fixed.epochs: must be an integer >= 1, got 1.5"),
    ("name: t\nfixed: {device: cuda}\n", r"fixed.device: set by the spec's top-level resources: key"),
    ("name: t\nstop: {patience: 0}\n", r"stop.patience: must be an integer >= 1, got 0"),
    ("- a\n- b\n", r"a spec is a mapping of keys"),
]


@pytest.mark.parametrize("text,message", BAD)
def test_bad_specs_name_the_key_and_the_choices(tmp_path, text, message):
    with pytest.raises(SpecError, match=message):
        spec_mod.load(write(tmp_path, text))


@pytest.mark.parametrize("raw,path,problem", [
    ({"parameters": {"activation": ["relu", "swish"]}}, "parameters.activation[1]", "unknown activation 'swish'"),
    ({"dataset": {"name": "digits", "max_gb": 0}}, "dataset.max_gb", "must be a number > 0, got 0"),
    ({"fixed": {"lr": -1}}, "fixed.lr", "must be a number > 0, got -1"),
    ({"configs": [{"lr": -1}]}, "configs[0].lr", "must be a number > 0, got -1"),
    ({"variants": [{}, {"epochs": 0}]}, "variants[1].epochs", "must be an integer >= 1, got 0"),
    ({"stop": {"patience": 0}}, "stop.patience", "must be an integer >= 1, got 0"),
])
def test_errors_carry_their_key_path_as_data(raw, path, problem):
    with pytest.raises(SpecError) as err:
        spec_mod.parse({"name": "t"} | raw)
    assert (err.value.path, err.value.problem) == (path, problem)
    assert str(err.value).startswith(f"{path}: {problem}")
    if problem.startswith("unknown"):
        assert "relu" in err.value.valid and "; valid: relu, " in str(err.value)


def test_bad_override(tmp_path):
    with pytest.raises(SpecError, match="--set fixed.epochs: cannot read|expected key.path=value"):
        spec_mod.load(write(tmp_path, GOOD), ["fixed.epochs"])
    with pytest.raises(SpecError, match="--set bogus.x: unknown key 'bogus'"):
        spec_mod.load(write(tmp_path, GOOD), ["bogus.x=1"])


def test_impossible_resources():
    spec = spec_mod.parse({"name": "t", "resources": {"cpu": 64}})
    with pytest.raises(SpecError, match="resources.cpu: 64 per trial, but only 2 CPUs"):
        spec_mod.check_resources(spec, {"CPU": 2})
    spec = spec_mod.parse({"name": "t", "resources": {"gpu": 0.5}})
    with pytest.raises(SpecError, match="resources.gpu: 0.5 per trial, but 0 GPUs"):
        spec_mod.check_resources(spec, {"CPU": 2})


def test_missing_data_root_fails_before_anything_runs(tmp_path):
    spec = spec_mod.parse({"name": "t", "dataset": {"name": "mnist", "root": str(tmp_path / "nothing")}})
    with pytest.raises(SpecError, match=r"dataset: dataset 'mnist': no usable files under .*nothing"):
        spec_mod.check_data(spec)


@pytest.mark.parametrize("text", [BAD[1][0], BAD[5][0], "name: t\nresources: {cpu: 64}\n"])
def test_cli_error_is_one_line_and_creates_nothing(tmp_path, python, text):
    path = write(tmp_path, text)
    db = tmp_path / "mlflow.db"
    proc = python.run("-m", "vgtune.cli", "sweep", path, "--tracking-uri", f"sqlite:///{db}", "--storage",
                      tmp_path / "runs", timeout=120, cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vgtune: error: ") and "Traceback" not in proc.stderr
    assert not db.exists() and not (tmp_path / "runs").exists()


def test_dry_run_prints_count(tmp_path, python):
    proc = python.run("-m", "vgtune.cli", "sweep", write(tmp_path, GOOD), "--dry-run", timeout=120)
    assert proc.returncode == 0 and "t: at most 9 trials" in proc.stdout and "pack" not in proc.stdout
    packed = python.run("-m", "vgtune.cli", "sweep", write(tmp_path, GOOD), "--dry-run", "--set", "pack=2",
                        timeout=120)
    # 2 depths x 2 activations, each with 2 sampled lrs, pack in twos; the batch-norm config trains alone
    assert "pack: 2: 8 trials in 4 packs of 2-2, 1 alone" in packed.stdout, packed.stdout + packed.stderr


def test_longest_trials_are_submitted_first():
    from vgtune.driver.searcher import longest_first

    s = spec_mod.parse({"name": "x", "parameters": {"depth": [2, 12, 6], "width": [4, 8]}, "fixed": {"epochs": 1}})
    order = [(t["train"]["depth"], t["train"]["width"]) for t in longest_first([{"train": t} for t in s.trials])]
    assert order[0] == (12, 8) and order[-1] == (2, 4) and len(order) == 6
    costs = [d * w * w for d, w in order]
    assert costs == sorted(costs, reverse=True)


def test_nuisance_and_repeats_expand_every_arm_over_settings_and_seeds():
    spec = spec_mod.parse({"name": "f", "parameters": {"depth": [2, 4]}, "variants": [{}, {"norm": "batch"}],
                           "nuisance": {"lr": [0.01, 0.1]}, "repeats": 3, "fixed": {"width": 4}})
    assert len(spec.trials) == 2 * 2 * 2 * 3 and spec.nuisance == ["lr"] and spec.repeats == 3
    arms = {}
    for t, m in zip(spec.trials, spec.meta):
        arms.setdefault(m["arm"], set()).add((m["nuisance"], t["seed"]))
        assert m["nuisance"] == f"lr={t['lr']}" and m["variant"] == ("norm=batch" if t["norm"] == "batch" else "")
    assert len(arms) == 4 and all(v == {(f"lr={lr}", s) for lr in (0.01, 0.1) for s in range(3)}
                                  for v in arms.values())


def test_arm_ids_are_stable_and_ignore_nuisance_and_seed():
    a = spec_mod.trial_meta({"depth": 4, "lr": 0.1, "seed": 0}, ["lr"])
    b = spec_mod.trial_meta({"depth": 4, "lr": 0.01, "seed": 5}, ["lr"])
    c = spec_mod.trial_meta({"depth": 8, "lr": 0.1, "seed": 0}, ["lr"])
    assert a["arm"] == b["arm"] != c["arm"]
    assert spec_mod.trial_meta({"seed": 0, "lr": 0.1, "depth": 4}, ["lr"])["arm"] == a["arm"]  # key order


def test_a_spec_without_nuisance_means_what_it_did():
    spec = spec_mod.parse({"name": "p", "parameters": {"depth": [2, 4], "seed": [0, 1]}, "samples": 1})
    assert len(spec.trials) == 4 and {m["nuisance"] for m in spec.meta} == {""}


def test_the_readme_example_spec_is_valid():
    import yaml

    from tests.helpers import REPO

    block = (REPO / "README.md").read_text().split("## Writing a sweep")[1].split("```yaml")[1].split("```")[0]
    spec = spec_mod.parse(yaml.safe_load(block))
    assert spec.nuisance == ["lr"] and spec.repeats == 2 and len(spec.trials) > 1000


def test_only_a_spec_that_names_user_code_puts_its_folder_on_the_path(tmp_path):
    (tmp_path / "plain.yaml").write_text("name: p\nfixed: {epochs: 1}\n")
    spec_mod.load(tmp_path / "plain.yaml")
    assert str(tmp_path.resolve()) not in sys.path
    (tmp_path / "nets.py").write_text("import torch.nn as nn\n\ndef build(**kw):\n    return nn.Identity()\n")
    (tmp_path / "mine.yaml").write_text("name: m\nmodel: nets:build\n")
    try:
        assert spec_mod.load(tmp_path / "mine.yaml").references == ["nets:build"]
        assert str(tmp_path.resolve()) in sys.path
    finally:
        sys.path.remove(str(tmp_path.resolve()))


@pytest.mark.parametrize("metric,mode", [("val_acc", "max"), ("train_acc", "max"), ("train_loss", "min")])
def test_a_metric_without_mode_is_optimized_in_its_own_direction(metric, mode):
    assert spec_mod.parse({"name": "t", "metric": metric}).mode == mode
    assert spec_mod.parse({"name": "t", "metric": metric, "mode": "max"}).mode == "max"  # mode: wins


def test_a_metric_with_no_better_end_needs_a_mode():
    with pytest.raises(SpecError, match="^mode: metric grad_attenuation has no better end to assume"):
        spec_mod.parse({"name": "t", "metric": "grad_attenuation"})
    assert spec_mod.parse({"name": "t", "metric": "grad_attenuation", "mode": "min"}).mode == "min"
