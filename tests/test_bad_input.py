"""A corpus of bad specs and options: each exits 2 with one clear line, before Ray or MLflow start.

Runs `vgtune.cli.main` in-process (no Ray fixture in this module), so it can also
check that Ray never started. Property-based tests cover the spec fields.
"""

import string
from pathlib import Path

import pytest
import ray
import yaml
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
GOOD = "name: ok\nparameters: {depth: [2]}\nfixed: {width: 4, epochs: 1}\n"


def _corpus(file: str) -> dict[str, dict]:
    """A YAML file of cases beside this test: name -> {spec, args (optional), error}."""
    return yaml.safe_load((Path(__file__).parent / file).read_text())


# The corpus: case -> (spec text, command-line arguments, the error line it must print). The user-code
# cases (user_code_cases.yaml) import the BADNETS module above.
CORPUS = {name: (GOOD if case["spec"] == "GOOD" else case["spec"], case.get("args", []), case["error"])
          for name, case in _corpus("spec_cases.yaml").items()}
CORPUS |= {name: (f"name: t\n{case['spec']}", [], case["error"])
           for name, case in _corpus("user_code_cases.yaml").items()}


def _args(tmp_path, extra):
    return ["sweep", str(tmp_path / "spec.yaml"), "--storage", str(tmp_path / "runs"), "--out", str(tmp_path / "r"),
            "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db", *extra]


# --dry-run makes the checks a real run makes before Ray starts: it refuses every case with the same line.
@pytest.mark.parametrize("dry_run", [False, True], ids=["run", "dry-run"])
@pytest.mark.parametrize("case", list(CORPUS))
def test_bad_input_exits_2_with_one_line(case, dry_run, tmp_path, capsys):
    text, extra, message = CORPUS[case]
    (tmp_path / "spec.yaml").write_text(text)
    (tmp_path / "badnets.py").write_text(USER_CODE)
    code = cli.main(_args(tmp_path, extra + ["--dry-run"] * dry_run))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("vgtune: error: ") and message in err[0], err
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "runs").exists()
    assert not ray.is_initialized(), "Ray was started before the error"


def test_a_dry_run_of_a_good_spec_passes_and_writes_nothing(tmp_path, capsys):
    (tmp_path / "spec.yaml").write_text(GOOD)
    assert cli.main(_args(tmp_path, ["--dry-run", "--num-cpus", "1"])) == 0
    assert capsys.readouterr().out.startswith("ok: at most 1 trials")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.yaml"]
    assert not ray.is_initialized()


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
