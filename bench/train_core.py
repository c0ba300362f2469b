"""Training-core benchmarks: probe overhead and loop throughput against hand-written loops."""

from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F

from vgtune.core.train import TrainConfig, setup, train

CONFIG = dict(depth=8, width=32, activation="relu", init="kaiming_normal", lr=0.01, epochs=6, batch_size=64)
REPEATS = 5


def _timed_train(cfg: TrainConfig) -> tuple[float, float]:
    """(wall seconds of the whole trial, seconds inside the epoch loops)."""
    t0 = time.perf_counter()
    result = train(cfg)
    return time.perf_counter() - t0, result.summary["train_seconds"]


def _hand_loop(cfg: TrainConfig) -> float:
    """The minimal PyTorch loop on the same model and device tensors."""
    s = setup(cfg)
    x, y, model, opt = s.data.x_train, s.data.y_train, s.model, s.optimizer
    n, bs = x.shape[0], cfg.batch_size
    g = torch.Generator().manual_seed(cfg.seed)
    t0 = time.perf_counter()
    for _ in range(cfg.epochs):
        perm = torch.randperm(n, generator=g)
        for i in range(n // bs):
            idx = perm[i * bs:(i + 1) * bs]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    loss.item()
    return time.perf_counter() - t0


def _dataloader_loop(cfg: TrainConfig) -> float:
    """The same training through torch.utils.data.DataLoader (the usual tutorial loop)."""
    s = setup(cfg)
    ds = torch.utils.data.TensorDataset(s.data.x_train, s.data.y_train)
    loader = torch.utils.data.DataLoader(ds, batch_size=cfg.batch_size, shuffle=True, drop_last=True,
                                         generator=torch.Generator().manual_seed(cfg.seed))
    model, opt = s.model, s.optimizer
    t0 = time.perf_counter()
    for _ in range(cfg.epochs):
        for xb, yb in loader:
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    loss.item()
    return time.perf_counter() - t0


def run() -> list[dict]:
    on, off = TrainConfig(**CONFIG), TrainConfig(**CONFIG, probes=False)
    train(off)  # warm-up: data cache, allocator, kernels
    walls_on, walls_off, loops_off, hand, loader = [], [], [], [], []
    for _ in range(REPEATS):  # interleaved so drift hits every variant alike
        walls_on.append(_timed_train(on)[0])
        wall, loop = _timed_train(off)
        walls_off.append(wall)
        loops_off.append(loop)
        hand.append(_hand_loop(off))
        loader.append(_dataloader_loop(off))
    med = statistics.median
    overhead = med(walls_on) / med(walls_off)
    throughput = med(hand) / med(loops_off)
    vs_loader = med(loader) / med(loops_off)
    note = (f"{CONFIG['depth']} blocks x {CONFIG['width']} ch, digits, {CONFIG['epochs']} epochs; median of "
            f"{REPEATS}: probes on {med(walls_on):.2f}s, off {med(walls_off):.2f}s; loop {med(loops_off):.2f}s, "
            f"hand-written {med(hand):.2f}s, DataLoader {med(loader):.2f}s")
    return [
        {"name": "probe overhead (train time probes on / off)", "value": overhead, "target": "<= 1.05",
         "ok": overhead <= 1.05, "note": note},
        {"name": "loop throughput vs hand-written loop", "value": throughput, "target": ">= 0.95",
         "ok": throughput >= 0.95},
        {"name": "loop throughput vs DataLoader loop", "value": vs_loader, "target": "report"},
    ]
