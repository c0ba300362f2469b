"""Old import paths (the flat modules before the layers) keep working, with one warning a user sees."""

import importlib
import re
import sys
import textwrap
import warnings

import pytest

import vgtune
from tests.helpers import REPO
from vgtune import _compat

OLDNET = """
import torch.nn as nn

from vgtune.models import get_activation, get_norm


def build(depth, width, activation, norm, residual, num_classes, in_channels, image_size):
    layers = [nn.Conv2d(in_channels, width, 3, padding=1)]
    for _ in range(depth):
        layers += [nn.Conv2d(width, width, 3, padding=1), get_norm(norm, width), get_activation(activation)]
    net = nn.Sequential(*layers, nn.Flatten(), nn.Linear(width * image_size ** 2, num_classes))
    net.blocks = [net[3 * i + 3] for i in range(depth)]
    return net
"""


@pytest.fixture
def fresh():
    """Forget the old modules a test imports (and the package attributes the import binds), before and after."""
    names = []

    def drop(name: str) -> None:
        sys.modules.pop(name, None)
        vars(vgtune).pop(name.rpartition(".")[2], None)

    def forget(name: str) -> str:
        names.append(name)
        drop(name)
        return name
    yield forget
    for name in names:
        drop(name)


def _future(record) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, FutureWarning)]


def test_every_moved_module_has_a_shim_that_names_its_new_path():
    shims = {f"vgtune.{p.stem}" for p in (REPO / "vgtune").glob("*.py") if "forward(__name__" in p.read_text()}
    assert shims == set(_compat.MOVED)
    for old, new in _compat.MOVED.items():
        assert f"`{new}`" in (REPO / "vgtune" / f"{old.split('.')[1]}.py").read_text(), old
        assert importlib.util.find_spec(new) is not None, new


@pytest.mark.parametrize("old", sorted(_compat.MOVED))
def test_an_old_path_warns_once_naming_the_new_one_and_reads_its_names(fresh, old):
    new = _compat.MOVED[old]
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        __import__(fresh(old))  # as `import vgtune.x` does
        module = sys.modules[old]
        assert importlib.import_module(old) is module  # a second import: no second warning
    (message,) = _future(record)
    assert message.startswith(f"{old} is deprecated and will be removed in a future release; import {new} instead")
    assert record[0].filename == __file__  # shown at the user's import line, not inside vgtune
    target = importlib.import_module(new)
    names = [n for n in vars(target) if not n.startswith("__")]
    assert names and all(getattr(module, n) is getattr(target, n) for n in names)
    assert module.__all__ == list(getattr(target, "__all__", module.__all__))
    with pytest.raises(AttributeError, match=f"module '{old}' \\(now '{new}'\\) has no attribute 'nope'"):
        module.nope  # noqa: B018


def test_models_points_user_code_to_the_public_layers(fresh):
    with pytest.warns(FutureWarning, match=re.escape("import them from vgtune.layers")):
        importlib.import_module(fresh("vgtune.models"))


def test_the_api_functions_stay_functions_after_their_old_modules_are_imported(fresh, tmp_path):
    """`vgtune.sweep` and `vgtune.report` were modules before they were functions: importing the old modules
    binds those names of the package to them, and calling them still calls the API."""
    fresh("vgtune.sweep"), fresh("vgtune.report")
    with pytest.warns(FutureWarning, match=r"the function vgtune.sweep\(\) stays"):
        from vgtune.sweep import run_sweep
    with pytest.warns(FutureWarning, match="import vgtune.analysis.report instead"):
        import vgtune.report  # noqa: F401
    assert vgtune.sweep is sys.modules["vgtune.sweep"] and vgtune.sweep.run_sweep is run_sweep
    with pytest.raises(vgtune.SpecError, match="does not exist"):
        vgtune.sweep(tmp_path / "none.yaml")
    with pytest.raises(vgtune.InputError, match="tracking_uri: "):
        vgtune.report(tracking_uri="bogus://store")


def test_the_old_tracking_module_names_read_from_the_package(monkeypatch):
    """`vgtune.tracking` was a module before it was a package: its names read from where they went."""
    monkeypatch.setattr(_compat, "_warned", set())
    from vgtune.driver.mlflow_callback import MLflowTracker

    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        from vgtune.tracking import MLflowTracker as old
        again = vgtune.tracking.MLflowTracker
    assert old is again is MLflowTracker
    assert _future(record) == ["vgtune.tracking.MLflowTracker is deprecated and will be removed in a future release; "
                               "import vgtune.driver.mlflow_callback.MLflowTracker instead"]
    with pytest.raises(AttributeError, match="module 'vgtune.tracking' has no attribute 'nope'"):
        vgtune.tracking.nope  # noqa: B018


def test_a_user_model_on_the_old_path_builds_and_trains_with_one_warning(fresh, tmp_path, monkeypatch):
    (tmp_path / "oldnet.py").write_text(textwrap.dedent(OLDNET))
    monkeypatch.syspath_prepend(str(tmp_path))
    fresh("vgtune.models"), fresh("oldnet")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        flow = vgtune.probe(model="oldnet:build", depth=3, width=4, activation="tanh", norm="batch")
    assert flow.diagnosis == "healthy" and flow.blocks["block"].tolist() == [1, 2, 3]
    (message,) = _future(record)
    assert "vgtune.models is deprecated" in message and "vgtune.layers" in message
    assert record[0].filename == str(tmp_path / "oldnet.py")


def test_a_user_sees_the_warning_with_pythons_default_filters(tmp_path, python):
    """What a user's script prints: one FutureWarning at their import line, then the script's own output."""
    (tmp_path / "oldnet.py").write_text(textwrap.dedent(OLDNET))
    code = ("import vgtune\n"
            "print(vgtune.probe(model='oldnet:build', depth=2, width=4).diagnosis)\n")
    proc = python.run("-c", code, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0 and proc.stdout == "healthy\n", proc.stderr[-2000:]
    assert proc.stderr.count("FutureWarning") == 1, proc.stderr
    assert re.search(r"oldnet\.py:4: FutureWarning: vgtune\.models is deprecated .* import vgtune\.core\.models "
                     r"instead \(building blocks for your own model: import them from vgtune\.layers\)", proc.stderr)


def test_python_m_on_an_old_path_runs_the_new_module(python):
    proc = python.run("-m", "vgtune.cluster", "--help", timeout=120)
    assert proc.returncode == 0 and proc.stdout.startswith("usage: python -m vgtune.driver.cluster"), proc.stderr
    assert "FutureWarning: python -m vgtune.cluster is deprecated" in proc.stderr and "run python -m " \
        "vgtune.driver.cluster" in proc.stderr
