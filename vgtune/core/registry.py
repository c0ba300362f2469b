"""Name -> object tables for everything a spec names: activations, norms, inits, architectures, datasets.

Modelled on timm's `register_model` / `create_model`: one `Registry` per kind,
filled where the objects are defined, read through one `get` / `create`.

    ACTIVATIONS = Registry("activation")
    ACTIVATIONS.register("relu", nn.ReLU)       # an object as is

    @DATASETS.register("digits")                  # or as a decorator
    def _digits(cfg): ...

    ACTIVATIONS.create("relu")                    # nn.ReLU()
    ACTIVATIONS.get("swish")   # OptionError: unknown activation 'swish'; valid: relu, ...

An unknown name raises `vgtune.core.checks.OptionError` (a ValueError) that
carries the kind as `option` and the registered names as `valid`. This module
imports no torch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from vgtune.core.checks import OptionError

T = TypeVar("T")
_MISSING: Any = object()  # `register(name)` without an object: used as a decorator


class Registry(Generic[T]):
    """The objects of one kind, by name, in registration order."""

    def __init__(self, kind: str, hint: str = ""):
        self.kind = kind  # what the names are names of: the option an unknown name is reported under
        self.hint = hint  # appended to the unknown-name error, e.g. "(or module:function)"
        self._entries: dict[str, T] = {}

    def register(self, name: str, obj: T = _MISSING) -> Any:
        """Add `obj` under `name` and return it; without `obj`, a decorator that adds what it decorates."""
        if obj is not _MISSING:
            self._add(name, obj)
            return obj

        def decorate(fn: T) -> T:
            self._add(name, fn)
            return fn
        return decorate

    def _add(self, name: str, obj: T) -> None:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = obj

    def get(self, name: str) -> T:
        """The object registered as `name`; OptionError listing the valid names if there is none."""
        if not isinstance(name, str) or name not in self._entries:
            raise OptionError(self.kind, f"unknown {self.kind} {name!r}", self.names(), self.hint)
        return self._entries[name]

    def create(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Call the object registered as `name` with the arguments (a class: an instance)."""
        fn: Callable[..., Any] = self.get(name)  # type: ignore[assignment]
        return fn(*args, **kwargs)

    def names(self) -> list[str]:
        """The registered names, in registration order."""
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._entries)})"


__all__ = ["Registry"]
