"""Trial packing: M trials of one shape trained as one fused network against the same M trained one by one.

Each member is a default-sweep-like trial (width 8, digits, 2 epochs, probes on) with its
own seed and learning rate; the pack and the solo runs train the same configurations in
this process at one intra-op thread (what a one-CPU Ray trial gets). Reported per depth
and pack size: solo seconds / packed seconds, for whole trials (set-up, training,
evaluation) and for the training loops alone, and the largest test-accuracy difference
between a member and its solo run.
"""

from __future__ import annotations

import time

import torch

from vgtune.core.train import TrainConfig, train, train_pack

DEPTHS = (12, 24)
SIZES = (4, 16)
LRS = (0.005, 0.02, 0.08)


def _configs(depth: int, size: int, **kw) -> list[TrainConfig]:
    base = dict(depth=depth, width=8, activation="relu", init="kaiming_normal", epochs=2, threads=1) | kw
    return [TrainConfig(**base, seed=k, lr=LRS[k % len(LRS)]) for k in range(size)]


def measure(depth: int, size: int, **kw) -> dict[str, float]:
    """Packed against solo for `size` trials at `depth`; `kw` overrides the TrainConfig (device, dataset)."""
    cfgs = _configs(depth, size, **kw)
    train(cfgs[0])  # warm caches and allocator once
    t0 = time.perf_counter()
    packed = train_pack(cfgs)
    t_pack = time.perf_counter() - t0
    t0 = time.perf_counter()
    solo = [train(c) for c in cfgs]
    t_solo = time.perf_counter() - t0
    loops = [sum(r.summary["train_seconds"] for r in rs) for rs in (solo, packed)]
    init_gap = max(abs(a - b) / abs(b) for p, s in zip(packed, solo)
                   for a, b in zip(p.layers[0]["series"]["grad_norm"], s.layers[0]["series"]["grad_norm"]))
    return {"whole": t_solo / t_pack, "loop": loops[0] / loops[1], "solo_s": t_solo, "pack_s": t_pack,
            "acc_diff": max(abs(p.summary["test_acc"] - s.summary["test_acc"]) for p, s in zip(packed, solo)),
            "init_rel": init_gap}


def run() -> list[dict]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    rows = []
    try:
        for depth in DEPTHS:
            for size in SIZES:
                m = measure(depth, size)
                rows.append({"name": f"packing: depth {depth}, {size} trials, solo s / packed s", "value": m["whole"],
                             "target": "report", "note": f"solo {m['solo_s']:.1f}s, packed {m['pack_s']:.1f}s; "
                             f"training loops alone {m['loop']:.2f}x; largest member-vs-solo test_acc "
                             f"difference {m['acc_diff']:.3f}; init probe relative gap {m['init_rel']:.1e}"})
    finally:
        torch.set_num_threads(threads)
    return rows
