"""Which trials may train together as one fused network (`vgtune.core.fused`), and how a sweep groups them.

Members of one pack may differ only in PER_MEMBER options; every other TrainConfig
field is the pack's shape. This module imports no torch: the spec checks `pack:`
with it before anything is built.
"""

from __future__ import annotations

from typing import Any

# Options in which the members of one pack may differ; every other TrainConfig field is the pack's shape.
PER_MEMBER = ("init", "init_scale", "optimizer", "lr", "lr_schedule", "momentum", "weight_decay", "seed",
              "diverge_loss")
MAX_AUTO = 16  # `pack: auto` packs at most this many trials together


def member_id(trial_id: str, index: int) -> str:
    """The trial id of a pack's member (its MLflow run's `vgtune.trial_id`)."""
    return f"{trial_id}-m{index}"


def left(row: dict[str, Any]) -> bool:
    """Whether a member's latest epoch row (`vgtune.trial.run_pack`) ended its training."""
    return bool(row) and (row.get("status") != "running" or "stop_reason" in row)


def why_unpackable(cfg: dict[str, Any]) -> str | None:
    """Why a trial (a TrainConfig dict) cannot be packed, or None if it can."""
    if cfg.get("model"):
        return "a user model (model:) trains alone"
    if cfg.get("arch", "cnn") != "cnn":
        return f"arch {cfg['arch']!r} trains alone; packing fuses vgtune's cnn"
    return None


def shape_key(cfg: dict[str, Any]) -> str:
    """What members of one pack share: every option but PER_MEMBER (as text, so lists and dicts compare)."""
    return repr(sorted((k, repr(v)) for k, v in cfg.items() if k not in PER_MEMBER))


def parse_size(value: Any) -> int | str:
    """`pack:` of a spec: off | auto | N >= 2 trials per pack (1 = off); ValueError names the allowed values.

    YAML reads an unquoted `off` as false, which means off here too."""
    if value is False:
        return "off"
    if value in ("off", "auto"):
        return value
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return "off" if value == 1 else value
    raise ValueError(f"must be off, auto or a number of trials per pack (an integer >= 2), got {value!r}")


def _chunks(group: list, size: int) -> list[list]:
    """`group` split into ceil(n / size) near-equal parts, in order."""
    parts = -(-len(group) // size)
    bounds = [round(i * len(group) / parts) for i in range(parts + 1)]
    return [group[a:b] for a, b in zip(bounds, bounds[1:])]


def plan(items: list[dict[str, Any]], size: int | str, slots: int) -> list[dict[str, Any]]:
    """Tune's trials for `items` (`{"train": TrainConfig dict, "meta": ...}`): trials that share a shape
    packed `size` at a time, the rest as they are.

    A pack is `{"train": its first member's, "meta": ..., "members": [items]}`. `auto` packs at
    most MAX_AUTO, and smaller packs where that leaves fewer than two packs per trial slot.
    """
    if size == "off":
        return list(items)
    groups: dict[str, list[dict[str, Any]]] = {}
    out = []
    for item in items:
        if why_unpackable(item["train"]) is None:
            groups.setdefault(shape_key(item["train"]), []).append(item)
        else:
            out.append(item)
    if size == "auto":
        packable = sum(len(g) for g in groups.values())
        size = max(2, min(MAX_AUTO, packable // max(1, 2 * slots)))
    for group in groups.values():
        for chunk in _chunks(group, size):
            out.append(chunk[0] if len(chunk) == 1 else
                       {"train": chunk[0]["train"], "meta": chunk[0]["meta"], "members": chunk})
    return out


__all__ = ["plan", "parse_size", "PER_MEMBER", "MAX_AUTO", "why_unpackable", "shape_key", "member_id", "left"]
