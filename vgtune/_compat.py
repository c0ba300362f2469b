"""Module paths that moved when vgtune's flat modules became layers, kept importable for a deprecation period.

Each old path is a three-line module (`vgtune/models.py`, ...) that calls `forward`:
importing it warns once with a FutureWarning that names the new path, then every
name of the new module reads through it, so code written against the old path
runs unchanged. A FutureWarning, as timm did for `timm.models.layers`: Python
shows it to users, where a DeprecationWarning raised inside a library is hidden
outside `__main__`. `python -m <old path>` runs the new module.

The old module `vgtune.tracking` became the package of that name; its names
(`MLflowTracker`, `flush_all`) are forwarded by that package's `__getattr__`
through `forward_attribute`, with the same warning.

Importing vgtune imports none of this: only an old path does.
"""

from __future__ import annotations

import importlib
import runpy
import sys
import types
import warnings
from importlib.machinery import ModuleSpec
from typing import Any

# old module -> where it went (git log -M: the commit that made the layers)
MOVED = {
    "vgtune.ranking": "vgtune.analysis.effects",
    "vgtune.fair": "vgtune.analysis.fairness",
    "vgtune.phase": "vgtune.analysis.phase",
    "vgtune.plots": "vgtune.analysis.plots",
    "vgtune.report": "vgtune.analysis.report",
    "vgtune.stats": "vgtune.analysis.stats",
    "vgtune.checks": "vgtune.core.checks",
    "vgtune.data": "vgtune.core.data",
    "vgtune.models": "vgtune.core.models",
    "vgtune.resnet": "vgtune.core.resnet",
    "vgtune.theory": "vgtune.core.theory",
    "vgtune.train": "vgtune.core.train",
    "vgtune.usercode": "vgtune.core.usercode",
    "vgtune.gradflow": "vgtune.core.gradflow",
    "vgtune.pack": "vgtune.core.fused",
    "vgtune.build": "vgtune.core.networks",
    "vgtune.config": "vgtune.core.schema",
    "vgtune.cluster": "vgtune.driver.cluster",
    "vgtune.progress": "vgtune.driver.progress",
    "vgtune.spec": "vgtune.driver.spec",
    "vgtune.stopper": "vgtune.driver.stopper",
    "vgtune.sweep": "vgtune.driver.runner",
    "vgtune.trial": "vgtune.driver.trainable",
    "vgtune.flowplot": "vgtune.tracking.flow_figure",
    "vgtune.runlog": "vgtune.tracking.logger",
    "vgtune.runs": "vgtune.tracking.reader",
    "vgtune.store": "vgtune.tracking.store",
    "vgtune.writer": "vgtune.tracking.writer_process",
}
# old module -> (where its names went, the names); the old module's name is a package now
MOVED_NAMES = {"vgtune.tracking": ("vgtune.driver.mlflow_callback", ("MLflowTracker", "flush_all"))}
# where user code should import from instead, where that is not the new (internal) module
PUBLIC = {"vgtune.models": "vgtune.layers"}
# old modules whose name is also a function of the public API (`vgtune.sweep(...)`, `vgtune.report(...)`)
API_FUNCTIONS = ("vgtune.sweep", "vgtune.report")
_warned: set[str] = set()  # old `package.name`s forward_attribute has warned about


def message(old: str, new: str) -> str:
    """The warning: the old path, the new one, and the public home where there is one."""
    public = f" (building blocks for your own model: import them from {PUBLIC[old]})" if old in PUBLIC else ""
    stays = f"; the function {old}() stays" if old in API_FUNCTIONS else ""
    return f"{old} is deprecated and will be removed in a future release; import {new} instead{public}{stays}"


def forward(name: str, spec: ModuleSpec | None = None, call: Any = None) -> None:
    """Make the old module `name` (its `__name__`; `spec` its `__spec__`) read every name from its new module,
    after one FutureWarning; `call`: what calling the module calls (an old module named like an API function).
    Run as `python -m` (name `__main__`), it runs the new module instead."""
    if name == "__main__" and spec is not None:
        new = MOVED[spec.name]
        warnings.warn(f"python -m {spec.name} is deprecated and will be removed in a future release; run "
                      f"python -m {new}", FutureWarning, stacklevel=2)
        runpy.run_module(new, run_name="__main__", alter_sys=True)
        return
    new = MOVED[name]
    warnings.warn(message(name, new), FutureWarning, stacklevel=3)  # at the user's import, past importlib's frames
    target = importlib.import_module(new)
    module = sys.modules[name]
    module.__getattr__ = lambda attr: _read(target, name, attr)  # PEP 562: names the shim lacks
    module.__dir__ = lambda: dir(target)
    module.__all__ = list(getattr(target, "__all__", [n for n in vars(target) if not n.startswith("_")]))
    if call is not None:
        module.__class__ = _CallableModule
        module._call = call


def _read(target: types.ModuleType, old: str, attr: str) -> Any:
    try:
        return getattr(target, attr)
    except AttributeError:
        raise AttributeError(f"module {old!r} (now {target.__name__!r}) has no attribute {attr!r}") from None


class _CallableModule(types.ModuleType):
    """An old module named like an API function: importing `vgtune.sweep` binds the package's `sweep` to the
    module, so calling the module calls the function (`vgtune.sweep(spec)` keeps working)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._call(*args, **kwargs)


def forward_attribute(package: str, attr: str) -> Any:
    """A name of the old module `package` from where it went, warning once per name (for the package's
    `__getattr__`); AttributeError for any other name."""
    new, names = MOVED_NAMES[package]
    if attr not in names:
        raise AttributeError(f"module {package!r} has no attribute {attr!r}")
    if f"{package}.{attr}" not in _warned:
        _warned.add(f"{package}.{attr}")
        warnings.warn(message(f"{package}.{attr}", f"{new}.{attr}"), FutureWarning, stacklevel=3)
    return getattr(importlib.import_module(new), attr)
