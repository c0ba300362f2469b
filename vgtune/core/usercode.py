"""A user's own code named in a spec: `model: mypkg.nets:build`, `dataset: mypkg.data:load`.

A reference is `module:function`. The module is imported from the spec's
folder (put on `sys.path` by `vgtune.driver.spec.load`) or from `PYTHONPATH`; every
failure is a ValueError of one line that names the reference and what is
wrong with it (an `OptionError` whose option is `model` or `dataset`).
`shipped` lists the modules a Ray job must carry to its workers
(`runtime_env={"py_modules": ...}`): those that are not installed packages.
"""

from __future__ import annotations

import importlib
import inspect
import sys
import sysconfig
from collections.abc import Callable, Iterable
from pathlib import Path
from types import ModuleType

from vgtune.core.checks import keyed


def is_reference(name: object) -> bool:
    """True for `module:function` (a built-in name never holds a colon)."""
    return isinstance(name, str) and ":" in name


def add_path(folder: str | Path) -> None:
    """Make modules in `folder` importable in this process (first on the path, once)."""
    folder = str(Path(folder).resolve())
    if folder not in sys.path:
        sys.path.insert(0, folder)


def _split(ref: str, what: str) -> tuple[str, str]:
    module, _, attr = ref.partition(":")
    if not module or not attr or ":" in attr:
        raise keyed(what, f"{ref!r} is not module:function (e.g. mypkg.nets:build)")
    return module, attr


def _module(ref: str, what: str) -> ModuleType:
    name, _ = _split(ref, what)
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and name.startswith(exc.name):
            raise keyed(what, f"cannot import {name!r} from {ref!r}: no such module in the spec's "
                              "folder or on PYTHONPATH") from None
        raise keyed(what, f"importing {name!r} failed: {exc}") from None
    except Exception as exc:  # the user's module raised while importing
        raise keyed(what, f"importing {name!r} failed: {type(exc).__name__}: {exc}") from None


def load(ref: str, what: str) -> Callable:
    """The callable `module:function` names; ValueError saying why there is none."""
    module = _module(ref, what)
    _, attr = _split(ref, what)
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = sorted(n for n, v in vars(module).items() if not n.startswith("_") and callable(v)
                           and getattr(v, "__module__", None) == module.__name__)
            raise keyed(what, f"{module.__name__!r} has no {attr!r}; callables there: "
                              f"{', '.join(names) or 'none'}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise keyed(what, f"{ref} is a {type(obj).__name__}, not a function")
    return obj


def check_call(fn: Callable, ref: str, what: str, kwargs: dict, hint: str) -> None:
    """ValueError if `fn(**kwargs)` would not bind to fn's signature."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # a builtin without a signature: the call itself will tell
    try:
        sig.bind(**kwargs)
    except TypeError as exc:
        raise keyed(what, f"{ref}{sig} cannot be called with {', '.join(kwargs)}: {exc}; {hint}") from None


def accepted(fn: Callable, offered: dict) -> dict:
    """The keyword arguments of `offered` that `fn` declares (all of them if it takes **kwargs)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return {}
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return dict(offered)
    return {k: v for k, v in offered.items() if k in params}


def _installed() -> list[Path]:
    roots = {sysconfig.get_paths()[k] for k in ("purelib", "platlib", "stdlib", "platstdlib")}
    return [Path(r).resolve() for r in roots]


def shipped(refs: Iterable[str]) -> list[str]:
    """Files or package folders of the referenced modules that are not installed: what a job ships."""
    installed = _installed()
    found: list[str] = []
    for ref in refs:
        top = importlib.import_module(ref.partition(":")[0].split(".")[0])
        path = Path(top.__path__[0] if hasattr(top, "__path__") else top.__file__).resolve()
        if any(path.is_relative_to(root) for root in installed) or str(path) in found:
            continue
        found.append(str(path))
    return found
