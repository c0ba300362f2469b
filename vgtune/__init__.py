"""vgtune: sweeps that show why deep CNNs stop training (Ray Tune + MLflow + PyTorch).

    import vgtune
    result = vgtune.sweep("sweeps/default.yaml", epochs=2)
    result.trials, result.verdicts, result.report_dir
    vgtune.report()                                # the most recent sweep's experiment again, from MLflow
    vgtune.probe(depth=24, activation="sigmoid")   # gradient flow at initialization, no training

Every bad value given to them raises `vgtune.InputError` (with its `path`,
`problem` and `valid` values), every error vgtune raises on purpose is a
`vgtune.VgtuneError`; an unknown keyword is a TypeError. A user's own network
takes its building blocks by name from `vgtune.layers`.

The functions live in `vgtune.api`, imported on first use: `import vgtune` (and
`vgtune.driver.spec`) loads neither torch nor Ray.
"""

from vgtune.exceptions import InputError, VgtuneError

__all__ = ["sweep", "report", "probe", "SweepResult", "ProbeResult", "SweepInterrupted", "VgtuneError", "InputError",
           "SpecError", "UnknownExperiment", "TrackingError"]
_ERRORS = {"SpecError": "vgtune.driver.spec", "UnknownExperiment": "vgtune.tracking.reader",
           "TrackingError": "vgtune.tracking.store"}  # the InputError and VgtuneError subclasses the API raises


def _version() -> str:
    """The installed package's version (pyproject.toml's `version`)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("vgtune")
    except PackageNotFoundError:  # the source tree on sys.path, never installed
        return "0+unknown"


def __getattr__(name: str):
    if name == "__version__":
        globals()["__version__"] = _version()
        return globals()["__version__"]
    if name in _ERRORS:
        import importlib

        return getattr(importlib.import_module(_ERRORS[name]), name)
    if name in __all__:
        from vgtune import api

        return getattr(api, name)
    raise AttributeError(f"module 'vgtune' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__) | {"__version__"})
