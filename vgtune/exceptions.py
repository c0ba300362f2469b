"""The errors vgtune raises on purpose, under one base.

    try:
        vgtune.probe(depth=0)
    except vgtune.InputError as exc:
        exc.path, exc.problem, exc.valid   # ("depth", "depth must be an integer >= 1, got 0", ())

`InputError` is every bad value given to `vgtune.sweep`, `vgtune.report` and
`vgtune.probe` (a spec key, an option, an experiment name, a dataset): the
subclasses `SpecError` (vgtune.driver.spec), `OptionError` (vgtune.core.checks),
`DataError` (vgtune.core.data) and `UnknownExperiment` (vgtune.tracking.reader)
say where it came from. `TrackingError` (vgtune.tracking.store) is a
`VgtuneError` too. An unknown keyword argument stays a TypeError, as Python
raises it, and `vgtune.api.SweepInterrupted` is a KeyboardInterrupt, so that
`except Exception` never swallows the user's Ctrl-C.

This module imports nothing of vgtune: every layer may import it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar


class VgtuneError(Exception):
    """The base of every error vgtune raises on purpose: `except vgtune.VgtuneError` catches them all."""


class InputError(VgtuneError, ValueError):
    """A value given to vgtune is not allowed (a ValueError).

    Carries where and what as data: `path` (the key path or argument: `parameters.depth[1]`, `depth`,
    `thresholds.vanishing`; "" for none), `problem` (what is wrong), `valid` (the allowed values, where they
    are a list) and `hint` (said after them). str() is one line, `path: problem; valid: a, b hint`.
    `InputError(message)` alone has no path.
    """

    prefix_path: ClassVar[bool] = True  # str() starts with `path: `; False where the problem names it already

    def __init__(self, path: str, problem: str | None = None, valid: Iterable[str] = (), hint: str = ""):
        if problem is None:
            path, problem = "", path
        self.path = path  # the key path or argument name ("" for none)
        self.problem = problem  # what is wrong there
        self.valid = tuple(valid)  # the allowed values, where they are a list
        self.hint = hint  # said after the valid values, e.g. "(or module:function)"
        super().__init__(self.message())

    def message(self) -> str:
        """The one line str() gives."""
        text = f"{self.path}: {self.problem}" if self.path and self.prefix_path else self.problem
        return text + (f"; valid: {', '.join(self.valid)}" if self.valid else "") + (f" {self.hint}" if self.hint
                                                                                       else "")

    def __reduce__(self):
        """Pickled with its fields, not through __init__ (Ray and multiprocessing send errors between processes)."""
        return type(self).__new__, (type(self), *self.args), self.__dict__


__all__ = ["VgtuneError", "InputError"]
