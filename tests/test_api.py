"""`vgtune.sweep | report | probe`, the Python API, as a notebook or a script uses it."""

import json
import textwrap

import pytest

import vgtune
from tests.helpers import REPO
from vgtune import api

SPEC = """
name: api
parameters: {depth: [2]}
variants: [{}, {norm: batch}]
fixed: {width: 4, epochs: 3, activation: tanh}
"""

SCRIPT = """
import json, sys
from pathlib import Path

import vgtune

tmp = Path(sys.argv[1])
uri = f"sqlite:///{tmp}/mlflow.db"
r = vgtune.sweep(tmp / "spec.yaml", overrides={"fixed.width": 3}, epochs=1, tracking_uri=uri,
                 storage=tmp / "runs", out=tmp / "reports", num_cpus=2, verbose=0)
again = vgtune.report(tracking_uri=uri, out=tmp / "again")
one = vgtune.report(r.outcome.sweep_id, tracking_uri=uri, out=tmp / "one")
flow = vgtune.probe(depth=3, activation="relu", width=4)
print(json.dumps({
    "trials": len(r.trials), "epochs": sorted(r.trials["epochs_run"].unique().tolist()),
    "widths": sorted(r.trials["width"].unique().tolist()), "verdict_columns": list(r.verdicts.columns),
    "mitigations": r.verdicts["mitigation"].tolist(), "verdicts": r.verdicts["verdict"].tolist(),
    "report_dir": str(r.report_dir), "files": sorted(p.name for p in r.report_dir.iterdir()),
    "again": [again.experiment, len(again.trials), str(again.report_dir)], "one": len(one.trials),
    "probe": [flow.diagnosis, flow.blocks["block"].tolist()], "repr": repr(r),
}))
"""


def test_import_vgtune_loads_neither_torch_nor_ray(python):
    code = ("import sys, vgtune, vgtune.driver.spec\n"
            "assert 'torch' not in sys.modules and 'ray' not in sys.modules, 'heavy import'\n"
            "assert callable(vgtune.sweep) and callable(vgtune.report) and callable(vgtune.probe)\n"
            "assert vgtune.__version__ and vgtune.InputError and vgtune.VgtuneError and vgtune.ProbeResult\n"
            "assert 'torch' not in sys.modules and 'ray' not in sys.modules, 'heavy api import'\n")
    proc = python.run("-c", code, timeout=60, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert vgtune.__all__[:4] == ["sweep", "report", "probe", "SweepResult"]


def test_vgtune_exports_the_errors_its_api_raises():
    from vgtune.api import SweepInterrupted
    from vgtune.core.checks import OptionError
    from vgtune.core.data import DataError
    from vgtune.driver.spec import SpecError
    from vgtune.tracking.reader import UnknownExperiment
    from vgtune.tracking.store import TrackingError

    assert (vgtune.SweepInterrupted, vgtune.SpecError, vgtune.UnknownExperiment, vgtune.TrackingError) == \
        (SweepInterrupted, SpecError, UnknownExperiment, TrackingError)
    assert all(issubclass(e, vgtune.InputError) and issubclass(e, ValueError)
               for e in (SpecError, OptionError, DataError, UnknownExperiment))
    assert issubclass(TrackingError, vgtune.VgtuneError) and issubclass(vgtune.InputError, vgtune.VgtuneError)
    assert not issubclass(SweepInterrupted, Exception)  # `except Exception` never swallows Ctrl-C
    assert all(hasattr(vgtune, name) for name in vgtune.__all__)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        vgtune.nope  # noqa: B018


BAD_VALUES = [  # (call, the error's path, its valid values (a prefix), its one line)
    (lambda spec: vgtune.probe(depth=0), "depth", (), "depth must be an integer >= 1, got 0"),
    (lambda spec: vgtune.probe(activation="swish"), "activation", ("relu", "leaky_relu"),
     "unknown activation 'swish'; valid: relu, leaky_relu, elu, selu, gelu, silu, tanh, sigmoid, identity"),
    (lambda spec: vgtune.probe({"depht": 3}), "depht", ("depth", "width"), "unknown training option(s) depht; valid: "),
    (lambda spec: vgtune.probe(thresholds={"vanish": -1}), "thresholds.vanish", ("exploding", "vanishing"),
     "thresholds.vanish: unknown threshold; valid: exploding, vanishing, dead, saturated, saturation_eps"),
    (lambda spec: vgtune.probe(thresholds={"vanishing": 1}), "thresholds.vanishing", (),
     "thresholds.vanishing: must be a number < 0, got 1"),
    (lambda spec: vgtune.probe(dataset="mnist"), "dataset", (), "dataset 'mnist' needs a data root"),
    (lambda spec: vgtune.sweep(spec, verbose=5), "verbose", (), "verbose must be 0, 1 or 2, got 5"),
    (lambda spec: vgtune.sweep(spec, num_cpus=0), "num_cpus", (), "num_cpus: must be an integer >= 1, got 0"),
    (lambda spec: vgtune.sweep(spec, overrides={"fixed.epochs": 0}), "fixed.epochs", (),
     "fixed.epochs: must be an integer >= 1, got 0"),
    (lambda spec: vgtune.sweep(spec.parent / "none.yaml"), "", (), "spec file "),
    (lambda spec: vgtune.report(tracking_uri="bogus://store"), "tracking_uri", (),
     "tracking_uri: tracking URI 'bogus://store': scheme must be sqlite or http(s)"),
]


@pytest.mark.parametrize("call, path, valid, line", BAD_VALUES)
def test_every_bad_value_raises_one_error_class_with_its_path(spec, call, path, valid, line):
    """Whatever the function and the layer that finds it, a bad value is a vgtune.InputError (a ValueError) that
    carries its key path, its problem and the valid values, before Ray starts."""
    with pytest.raises(vgtune.InputError) as err:
        call(spec)
    assert (err.value.path, err.value.valid[:len(valid)]) == (path, valid) and err.value.problem
    assert str(err.value).startswith(line) and isinstance(err.value, ValueError)


def test_an_unknown_keyword_is_a_type_error_and_errors_pickle_with_their_fields(spec):
    import pickle

    with pytest.raises(TypeError, match=r"unexpected keyword argument 'depht'; valid: config, thresholds or a "
                                        r"training option \(depth, "):
        vgtune.probe(depht=3)
    with pytest.raises(TypeError, match="unknown keyword 'epoch'"):
        vgtune.sweep(spec, epoch=1)
    from vgtune.core.checks import OptionError
    from vgtune.tracking.reader import UnknownExperiment

    for exc in (vgtune.SpecError("a.b", "bad", ["x"]), OptionError("depth", "depth is bad", ["1"], rule="is bad"),
                UnknownExperiment("sweep", "no sweep 's'", ["e1", "e2"], "its sweeps")):
        back = pickle.loads(pickle.dumps(exc))
        assert (type(back), str(back), back.__dict__) == (type(exc), str(exc), exc.__dict__)
    assert str(UnknownExperiment("experiment", "no experiment 'x' in m.db", [])) == \
        "no experiment 'x' in m.db; existing: (none)"


@pytest.fixture
def spec(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(textwrap.dedent("""
        name: kw
        parameters: {depth: [2, 4]}
        nuisance: {lr: [0.01, 0.1]}
        fixed: {width: 4, epochs: 3}
    """))
    return path


def test_a_keyword_sets_a_top_level_key_or_the_option_where_the_spec_varies_it(spec):
    assert api.overrides_for(spec, {"fixed.epochs": 2}, {"pack": "off", "seed": 7, "epochs": 1, "depth": 8,
                                                         "lr": 0.05, "width": [4, 8], "norm": "batch"}) == [
        "fixed.epochs=2", "pack='off'", "seed=7", "fixed.epochs=1", "parameters.depth=[8]", "nuisance.lr=[0.05]",
        "parameters.width=[4, 8]", "fixed.norm=batch"]
    loaded = api.load_spec(spec, epochs=1, depth=8, lr=0.05)
    assert [(t["depth"], t["lr"], t["epochs"]) for t in loaded.trials] == [(8, 0.05, 1)]


def test_dotted_overrides_and_set_strings_mean_the_same(spec):
    as_mapping = api.load_spec(spec, {"fixed.epochs": 2, "parameters.depth": [3]})
    as_strings = api.load_spec(spec, ["fixed.epochs=2", "parameters.depth=[3]"])
    assert as_mapping.trials == as_strings.trials
    assert {(t["depth"], t["epochs"]) for t in as_mapping.trials} == {(3, 2)}


def test_an_unknown_keyword_names_the_valid_ones(spec):
    with pytest.raises(TypeError, match=r"unknown keyword 'epoch'; valid: a sweep option \(tracking_uri, .*"
                                        r"a top-level spec key \(name, .*a training option \(depth, "):
        api.load_spec(spec, epoch=1)
    with pytest.raises(TypeError, match="got the string"):
        api.load_spec(spec, "fixed.epochs=1")


def test_probe_one_configuration_without_training():
    """A typed result: the options that shape the probe, the summary in stated units, integer blocks, no series
    that cannot be measured at initialization, a one-line repr."""
    flow = vgtune.probe(depth=12, activation="sigmoid", width=4, lr=0.3, epochs=9)
    assert isinstance(flow, vgtune.ProbeResult) and flow.diagnosis == "vanishing" and flow.grad_attenuation < -5
    assert flow.config == {"depth": 12, "width": 4, "kernel_size": 3, "activation": "sigmoid", "init": "default",
                           "init_scale": 1.0, "norm": "none", "residual": "none", "pool": "none", "dropout": 0.0,
                           "arch": "cnn", "dataset": "digits", "batch_size": 64, "seed": 0, "init_probe_batches": 2}
    assert flow.blocks["block"].tolist() == list(range(1, 13)) and flow.blocks["block"].dtype.kind == "i"
    assert list(flow.blocks.columns) == ["block", "grad_norm", "weight_grad_norm", "act_mean", "act_std", "dead_frac",
                                         "saturated_frac"]  # update_ratio: no update was made
    assert isinstance(flow.worst_drop_block, int) and 2 <= flow.worst_drop_block <= 12
    assert flow.units()["grad_attenuation"] == flow.units()["grad_attenuation_predicted"] == "decades"
    assert set(flow.units()) == {k for k, v in flow.summary().items() if not isinstance(v, str)}
    assert flow.summary()["grad_norm_first"] == flow.blocks["grad_norm"].iloc[0]
    assert repr(flow).startswith("ProbeResult(depth=12, width=4, activation='sigmoid', init='default', norm='none', "
                                 "residual='none': vanishing; grad_attenuation -") and len(repr(flow)) < 300
    from vgtune.core.schema import TrainConfig

    one = vgtune.probe(TrainConfig(depth=1, model_args={}), seed=3)  # a TrainConfig too; keywords win
    assert one.worst_drop_block is None and one.config["seed"] == 3 and "model_args" not in one.config


def test_a_loaded_sweep_result_reprs_in_one_line(tmp_path):
    import pandas as pd

    folder = tmp_path / "exp"
    folder.mkdir()
    pd.DataFrame({"depth": [4] * 40, "test_acc": [0.5] * 40}).to_csv(folder / "trials.csv", index=False)
    pd.DataFrame({"depth": [4, 4, 4], "verdict": ["helps", "inconclusive", "helps"]}).to_csv(
        folder / "mitigations.csv", index=False)
    result = api.SweepResult.load(folder)
    assert repr(result) == (f"SweepResult(experiment='exp', trials=40, verdicts: 2 helps, 1 inconclusive, "
                            f"report_dir={str(folder)!r})")


def test_a_script_sweeps_reports_and_probes(tmp_path, python):
    """The API as a script runs it: its own process, its own local Ray, a SQLite store under tmp_path."""
    (tmp_path / "spec.yaml").write_text(SPEC)
    (tmp_path / "script.py").write_text(SCRIPT)
    proc = python.run(tmp_path / "script.py", tmp_path, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["trials"] == 2 and got["epochs"] == [1] and got["widths"] == [3]
    assert {"mitigation", "depth", "delta_test_acc", "ci_low", "ci_high", "p_adjusted", "verdict"} <= set(
        got["verdict_columns"])
    # One comparison (BatchNorm against the plain net at depth 2) on one seed: no interval, no verdict.
    assert got["mitigations"] == ["norm=batch"] and got["verdicts"] == ["inconclusive"]
    assert got["report_dir"] == str(tmp_path / "reports" / "api")
    assert {"trials.csv", "ranking.csv", "mitigations.csv", "report.md", "report.html"} <= set(got["files"])
    assert got["again"] == ["api", 2, str(tmp_path / "again" / "api")] and got["one"] == 2
    assert got["probe"] == ["healthy", [1, 2, 3]]
    assert got["repr"] == ("SweepResult(experiment='api', trials=2, verdicts: 1 inconclusive, "
                           f"report_dir={got['report_dir']!r})")
