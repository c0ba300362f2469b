"""Single behaviours, in memory: the stopper, the trial schema, de-duplication, the bootstrap interval."""

import math

import pandas as pd
import pytest

from vgtune.core import schema
from vgtune.core.columns import CONTRACT_FACTORS
from vgtune.core.schema import FACTORS, FIELDS, TrainConfig, param_text, parse_param
from vgtune.driver.stopper import GradientCollapseStopper
from vgtune.tracking.reader import dedupe

# ----------------------------------------------------------------- stopper

def test_stopper_stops_after_patience_collapsed_epochs():
    stop = GradientCollapseStopper(floor=-6, patience=2)
    assert not stop("t", {"grad_attenuation": -7.0, "status": "running"})
    assert stop("t", {"grad_attenuation": -7.0, "status": "running"})
    assert "attenuation -7.0 <= -6" in stop.reasons["t"]


def test_stopper_streak_resets_on_a_healthy_epoch():
    stop = GradientCollapseStopper(floor=-6, patience=2)
    assert not stop("t", {"grad_attenuation": -7.0, "status": "running"})
    assert not stop("t", {"grad_attenuation": -1.0, "status": "running"})
    assert not stop("t", {"grad_attenuation": -7.0, "status": "running"})


def test_stopper_counts_a_zero_gradient_as_collapsed_but_not_nan():
    stop = GradientCollapseStopper(floor=-6, patience=1)
    assert stop("a", {"grad_attenuation": -math.inf, "status": "running"})
    assert not stop("b", {"grad_attenuation": math.nan, "status": "running"})


def test_stopper_leaves_a_finished_trial_alone():
    stop = GradientCollapseStopper(floor=-6, patience=1)
    assert not stop("t", {"grad_attenuation": -9.0, "status": "completed"})


@pytest.mark.parametrize("kw,message", [({"floor": 1.0}, "floor must be a number < 0, got 1.0"),
                                        ({"patience": 0}, "patience must be an integer >= 1, got 0"),
                                        ({"patience": True}, "patience must be an integer >= 1, got True")])
def test_stopper_rejects_bad_arguments(kw, message):
    with pytest.raises(ValueError, match=message):
        GradientCollapseStopper(**kw)


# ----------------------------------------------------------------- schema

def test_every_train_config_field_is_a_factor_column_contract_first():
    assert set(FACTORS) == set(FIELDS) and len(FACTORS) == len(FIELDS)
    assert FACTORS[:len(CONTRACT_FACTORS)] == CONTRACT_FACTORS


def test_schema_module_imports_neither_torch_nor_mlflow():
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(schema))
    top = {a.name.split(".")[0] for n in tree.body if isinstance(n, ast.Import) for a in n.names}
    top |= {n.module.split(".")[0] for n in tree.body if isinstance(n, ast.ImportFrom) and n.module}
    assert not top & {"torch", "mlflow", "ray"}, top


@pytest.mark.parametrize("name,value", [("depth", 24), ("lr", 0.02), ("bf16", True), ("probes", False),
                                        ("limit", None), ("root", None), ("activation", "tanh"),
                                        ("diverge_loss", 1e4), ("probe_every", 5)])
def test_params_read_back_as_the_value_that_was_logged(name, value):
    assert parse_param(name, str(value)) == value
    assert type(parse_param(name, str(value))) is type(value)


def test_true_is_not_a_depth():
    with pytest.raises(ValueError, match="depth must be an integer >= 1, got True"):
        TrainConfig(depth=True).validate()


# ----------------------------------------------------------------- dedupe

def _row(**kw):
    params = {k: parse_param(k, param_text(v)) for k, v in TrainConfig(device="cpu").to_dict().items()}
    base = params | {"status": "completed", "end_time": 1, "test_acc": 0.5}  # as read back from MLflow
    return base | kw


def test_dedupe_keeps_trials_that_differ_in_any_option():
    df = pd.DataFrame([_row(probe_every=0), _row(probe_every=5), _row(diverge_loss=10.0), _row(bf16=True)])
    assert len(dedupe(df)) == 4


def test_dedupe_merges_one_configuration_newest_finished_wins():
    df = pd.DataFrame([_row(end_time=5, test_acc=0.1), _row(end_time=9, test_acc=0.9),
                       _row(status="running", end_time=None, test_acc=0.3)])
    kept = dedupe(df)
    assert len(kept) == 1 and kept["test_acc"].item() == 0.9




def test_a_registry_creates_by_name_and_lists_the_valid_names():
    from vgtune.core.checks import OptionError
    from vgtune.core.registry import Registry

    shapes = Registry("shape", hint="(or module:function)")
    shapes.register("square", lambda side: side * side)

    @shapes.register("circle")
    def circle(r):
        return 3 * r * r

    assert shapes.names() == ["square", "circle"] and "circle" in shapes and list(shapes) == shapes.names()
    assert shapes.create("square", 3) == 9 and shapes.get("circle") is circle
    with pytest.raises(OptionError) as err:
        shapes.get("hexagon")
    assert (err.value.option, err.value.valid) == ("shape", ("square", "circle"))
    assert str(err.value) == "unknown shape 'hexagon'; valid: square, circle (or module:function)"
    with pytest.raises(ValueError, match="registered twice"):
        shapes.register("square", None)


def test_fields_under_their_former_names_still_read():
    from vgtune.tracking.reader import _param

    old = {"probe_modules": '["blocks.0"]', "data_root": "/data", "data_max_gb": "2.0"}
    assert TrainConfig.from_dict(old | {"data_max_gb": 2.0}).max_gb == 2.0
    assert [_param(old, f) for f in ("probe", "root", "max_gb")] == ['["blocks.0"]', "/data", "2.0"]
    assert _param({"max_gb": "3.0", "data_max_gb": "2.0"}, "max_gb") == "3.0"
