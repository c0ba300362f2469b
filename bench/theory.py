"""Mean-field theory against measurement: how far the predicted init attenuation lies from the probe's.

    python -m bench theory     # ~2 min on 2 cores

Probes (no training) every plain configuration of `sweeps/default.yaml` (its seeds; the learning
rate does not matter at init) and of `sweeps/phase.yaml`, at width 8 (as the sweeps run) and 64,
and prints the mean and worst absolute error in decades per sweep and width. At width 8 the
measurement fluctuates from seed to seed around the infinite-width value the theory gives.
"""

from __future__ import annotations

import math
from pathlib import Path

from vgtune.analysis import phase
from vgtune.core.train import TrainConfig, probe
from vgtune.driver import spec

SWEEPS = ("default", "phase")
WIDTHS = (8, 64)
ROOT = Path(__file__).resolve().parent.parent


def plain_configs(name: str, width: int) -> list[dict]:
    """The sweep's distinct plain configurations at `width` (learning rates merged: a probe does not train)."""
    loaded = spec.load(ROOT / "sweeps" / f"{name}.yaml", [f"fixed.width={width}"])
    seen, out = set(), []
    for t in loaded.trials:
        cfg = t | {"lr": 0.01, "device": "cpu"}
        key = repr(sorted(cfg.items()))
        plain = t["norm"] == t["residual"] == "none" and t["pool"] == "none" and not t["dropout"]
        if plain and key not in seen:
            seen.add(key)
            out.append(cfg)
    return out


def errors(name: str, width: int) -> list[tuple[float, float, dict]]:
    """(measured - predicted in decades, its tolerance, the configuration) per plain configuration."""
    rows = []
    for cfg in plain_configs(name, width):
        summary = probe(TrainConfig.from_dict(cfg))["summary"]
        predicted = summary["grad_attenuation_predicted"]
        rows.append((summary["grad_attenuation"] - predicted, phase.tolerance(predicted, cfg["depth"], width), cfg))
    return rows


def summary_row(name: str, width: int, gaps: list[tuple[float, float, dict]]) -> dict:
    """Mean and worst |error|, the mean signed error (bias) beside them; ok when every one is within tolerance."""
    size = [abs(g) if math.isfinite(g) else math.inf for g, _, _ in gaps]
    k = max(range(len(size)), key=size.__getitem__)
    cfg = gaps[k][2]
    mean = sum(size) / len(size)
    bias = sum(g for g, _, _ in gaps) / len(gaps)
    where = f"depth {cfg['depth']} {cfg['activation']} {cfg['init']} x{cfg['init_scale']:g} seed {cfg['seed']}"
    return {"name": f"theory {name} width {width}: mean |error| (decades)", "value": mean,
            "target": "tolerance", "ok": all(abs(g) <= tol for g, tol, _ in gaps),
            "note": f"{len(gaps)} configurations; worst {size[k]:.2f} ({where}); mean signed {bias:+.2f}"}


def run() -> list[dict]:
    return [summary_row(name, width, errors(name, width)) for name in SWEEPS for width in WIDTHS]
