"""Trial packing: trials that share a network shape train together as one horizontally fused model.

    results = train_pack([TrainConfig(depth=12, seed=s, lr=lr) for s, lr in ...])

HFTA (Wang et al., MLSys 2021): M networks of one shape become one network
whose convolutions are grouped (group k is member k's conv), whose norms run
over M x C channels and whose classifier is one batched matmul. Member k's
batch enters as channels [k C_in, (k+1) C_in) of the input, so each member sees
its own batch order, and the loss is the sum of the members' losses, so each
member's gradient is its own. One step of the pack is one forward and one
backward pass for all M members.

Every member stays a trial of its own: it is built, seeded and initialized by
`vgtune.train.setup` exactly as it would be alone (same weights), keeps its own
parameters and optimizer (its own lr, momentum, weight decay), its own probe,
divergence check and history. A member that diverges or is stopped leaves the
pack; the others continue as a pack without it (bit for bit, at one intra-op
thread: at more, a grouped conv's weight gradient may be summed in another
order when the group count changes). Only the fused forward is new; dropout
draws from the shared RNG, so a member with dropout is not bit-equal to its
solo run.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from vgtune.core import train as train_mod
from vgtune.core.diagnosis import Thresholds
from vgtune.core.models import CNN
from vgtune.core.packing import PER_MEMBER, shape_key, why_unpackable
from vgtune.core.schema import TrainConfig

# ------------------------------------------------------------------ the fused network

class FusedCNN:
    """The members' `vgtune.models.CNN`s (one shape) run as one network; members keep their own parameters.

    `forward` concatenates the members' weights per layer (their gradients flow back to
    each member's own tensors). BatchNorm running statistics live in one buffer per layer,
    of which each member's buffers are views, so `F.batch_norm` updates them in place.
    """

    def __init__(self, members: list[CNN]):
        self.members: list[CNN] = []
        self.stats: list[tuple[torch.Tensor, torch.Tensor] | None] = []  # fused BN running mean, var per block
        # probe, when capturing: (block, its output, its activation's input)
        self.observe: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None
        self.set_members(members)

    def set_members(self, members: list[CNN]) -> None:
        """Fuse these members (the live ones: a member that leaves keeps its weights and statistics)."""
        self.members = list(members)
        self.stats = [self._fuse_stats([m.blocks[i].norm for m in members])
                      for i in range(len(members[0].blocks))]

    @staticmethod
    def _fuse_stats(norms: list[nn.Module]) -> tuple[torch.Tensor, torch.Tensor] | None:
        if not isinstance(norms[0], nn.BatchNorm2d):
            return None
        fused = torch.cat([n.running_mean for n in norms]), torch.cat([n.running_var for n in norms])
        c = norms[0].num_features
        for k, n in enumerate(norms):
            n.running_mean, n.running_var = fused[0][k * c:(k + 1) * c], fused[1][k * c:(k + 1) * c]
        return fused

    def count_steps(self, steps: int) -> None:
        """Advance the members' BatchNorm step counters as their solo training would have."""
        for m in self.members:
            for block in m.blocks:
                if isinstance(block.norm, nn.BatchNorm2d):
                    block.norm.num_batches_tracked.add_(steps)

    def __call__(self, x: torch.Tensor, training: bool = True) -> torch.Tensor:
        """x (B, M*C_in, H, W), member k's batch in channels k*C_in.. -> logits (M, B, classes)."""
        m = len(self.members)
        for i in range(len(self.members[0].blocks)):
            blocks = [net.blocks[i] for net in self.members]
            x = self._block(i, blocks, x, training)
        feats = x.reshape(x.shape[0], m, -1).transpose(0, 1)  # (M, B, C*H'*W'), each member's flatten(1)
        weight = torch.stack([net.head.weight for net in self.members])  # (M, classes, features)
        bias = torch.stack([net.head.bias for net in self.members]).unsqueeze(1)
        return torch.baddbmm(bias, feats, weight.transpose(1, 2))

    def _block(self, i: int, blocks: list[nn.Module], x: torch.Tensor, training: bool) -> torch.Tensor:
        first, m = blocks[0], len(blocks)
        conv = first.conv
        bias = torch.cat([b.conv.bias for b in blocks]) if conv.bias is not None else None
        out = F.conv2d(x, torch.cat([b.conv.weight for b in blocks]), bias, conv.stride, conv.padding,
                       conv.dilation, conv.groups * m)
        pre = self._norm(i, blocks, out, training)
        act = first.act(pre)
        out = F.dropout(act, first.drop.p, training) if isinstance(first.drop, nn.Dropout) else act
        if first.skip:
            alpha = torch.stack([b.alpha for b in blocks]).repeat_interleave(out.shape[1] // m)
            out = x + alpha.view(1, -1, 1, 1) * out
        out = first.pool(out)
        if self.observe is not None:
            self.observe(i, out, pre)
        return out

    def _norm(self, i: int, blocks: list[nn.Module], out: torch.Tensor, training: bool) -> torch.Tensor:
        norm = blocks[0].norm
        if isinstance(norm, nn.BatchNorm2d):
            mean, var = self.stats[i]
            return F.batch_norm(out, mean, var, torch.cat([b.norm.weight for b in blocks]),
                                torch.cat([b.norm.bias for b in blocks]), training, norm.momentum, norm.eps)
        if isinstance(norm, nn.GroupNorm):
            return F.group_norm(out, norm.num_groups * len(blocks), torch.cat([b.norm.weight for b in blocks]),
                                torch.cat([b.norm.bias for b in blocks]), norm.eps)
        return norm(out)


@contextlib.contextmanager
def capture(fused: FusedCNN, members: list[_Member]) -> Iterator[None]:
    """One probed step of the pack: each member's `GradFlowProbe` sees its own channels of every block."""
    for m in members:
        m.s.probe.begin()

    def observe(i: int, out: torch.Tensor, pre: torch.Tensor) -> None:
        c = out.shape[1] // len(members)
        def grad_hook(g: torch.Tensor) -> None:
            for k, m in enumerate(members):
                m.s.probe.observe_grad(i, g[:, k * c:(k + 1) * c])
        if out.requires_grad:
            out.register_hook(grad_hook)
        ca = pre.shape[1] // len(members)
        for k, m in enumerate(members):
            m.s.probe.observe_output(i, out[:, k * c:(k + 1) * c])
            m.s.probe.observe_activation(i, pre[:, k * ca:(k + 1) * ca])
    fused.observe = observe
    try:
        yield
    finally:
        fused.observe = None


# ------------------------------------------------------------------ training

@dataclass
class _Member:
    index: int  # position in the pack
    s: train_mod.Setup  # its own model, optimizer, generators and probe
    run: train_mod.Run
    ended: bool = False


def _check(cfgs: list[TrainConfig]) -> None:
    dicts = [c.to_dict() for c in cfgs]
    for d in dicts:
        reason = why_unpackable(d)
        if reason:
            raise ValueError(f"cannot pack this trial: {reason}")
    if len({shape_key(d) for d in dicts}) > 1:
        raise ValueError(f"a pack's members may differ only in {', '.join(PER_MEMBER)}")


def _train_epoch(fused: FusedCNN, live: list[_Member], epoch: int, steps: int,
                 probe_every: int) -> dict[int, train_mod.EpochPass]:
    """One pass of the pack; a member whose probed loss diverges leaves it for the rest of the epoch."""
    cfg, t0 = live[0].s.cfg, time.perf_counter()
    for m in live:
        train_mod.set_lr(m.s, epoch)
    active = list(live)
    device = live[0].s.device
    loss_sum = torch.zeros(len(active), device=device)
    correct = torch.zeros(len(active), device=device)
    done: dict[int, tuple[float, float]] = {}  # members that left: (loss sum, correct)
    series: dict[int, dict[str, list[float]]] = {}
    streams = {m.index: train_mod.epoch_batches(m.s) for m in live}
    for i in range(steps):
        step = (epoch - 1) * steps + i + 1
        batches = [next(streams[m.index]) for m in active]
        x = torch.cat([xb for xb, _ in batches], dim=1)
        y = torch.stack([yb for _, yb in batches])  # (M, B)
        pending = any(m.run.init_records is not None for m in active)
        probing = cfg.probes and (step % probe_every == 0 or pending)
        with capture(fused, active) if probing else contextlib.nullcontext():
            with live[0].s.autocast():
                logits = fused(x)
            losses = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), reduction="none")
            losses = losses.view(len(active), -1).mean(dim=1)  # each member's mean over its batch
            for m in active:
                m.s.optimizer.zero_grad(set_to_none=True)
            losses.sum().backward()
        if probing:
            for m in active:
                m.s.probe.snapshot()
        for m in active:
            m.s.optimizer.step()
        loss_sum += losses.detach()
        correct += (logits.detach().argmax(dim=2) == y).sum(dim=1)
        if not probing:
            continue
        series |= _read_probes(active, step, epoch, probe_every)
        values = losses.tolist()  # a probed step syncs anyway
        keep = [k for k, (m, v) in enumerate(zip(active, values))
                if math.isfinite(v) and v <= m.s.cfg.diverge_loss]
        if len(keep) < len(active):
            sums, hits = loss_sum.tolist(), correct.tolist()
            done |= {m.index: (sums[k], hits[k]) for k, m in enumerate(active) if k not in keep}
            active = [active[k] for k in keep]
            if not active:
                break
            idx = torch.tensor(keep, device=device)
            loss_sum, correct = loss_sum[idx], correct[idx]
            fused.set_members([m.s.model for m in active])
    seconds = (time.perf_counter() - t0) / len(live)  # each member's share of the pack's loop
    sums, hits = loss_sum.tolist(), correct.tolist()
    done |= {m.index: (sums[k], hits[k]) for k, m in enumerate(active)}
    fused.count_steps(steps)
    return {m.index: train_mod.EpochPass(done[m.index][0] / steps, done[m.index][1] / (steps * cfg.batch_size),
                                      series.get(m.index), seconds) for m in live}


def _read_probes(active: list[_Member], step: int, epoch: int, probe_every: int) -> dict[int, dict]:
    """Each member's probe of this step: completes its init probe, and is its epoch series on a regular one."""
    series = {}
    for m in active:
        probed = m.s.probe.read()
        if m.run.init_records is not None:
            train_mod.record_init(m.run.result, m.run.init_records + [probed])
            m.run.init_records = None
        if step % probe_every == 0:
            series[m.index] = probed
            m.run.result.layers.append({"step": step, "epoch": epoch, "series": probed})
    return series


def train_pack(cfgs: list[TrainConfig],
               on_epoch: Callable[[dict[int, train_mod.EpochReport]], set[int] | None] | None = None,
               resume: list[dict[str, Any]] | None = None,
               thresholds: Thresholds | None = None) -> list[train_mod.TrialResult]:
    """Train `cfgs` (one shape; see PER_MEMBER) as one fused network; one TrialResult per member, in order.

    `on_epoch` gets each epoch's reports of the members that trained in it (by index) and may
    return the indices of members to stop (status 'stopped'); `resume` is one `train` checkpoint
    per member. As `vgtune.train.train`, it never raises for a diverging member.
    """
    _check(cfgs)
    thresholds = thresholds or Thresholds()
    members = []
    for k, cfg in enumerate(cfgs):
        t0 = time.perf_counter()
        s = train_mod.setup(cfg, thresholds)
        run = train_mod.begin(s, resume[k] if resume else None, t0)
        ended = run.result.status != "completed" or run.start >= cfg.epochs
        members.append(_Member(k, s, run, ended=bool(resume) and ended))
    live = [m for m in members if not m.ended]
    if not live:
        return [train_mod.finish(m.run.result, thresholds) for m in members]
    fused = FusedCNN([m.s.model for m in live])
    cfg = live[0].s.cfg
    steps = max(1, live[0].s.data.x_train.shape[0] // cfg.batch_size)
    probe_every = cfg.probe_every or steps
    for epoch in range(live[0].run.start + 1, cfg.epochs + 1):
        fused.set_members([m.s.model for m in live])
        passes = _train_epoch(fused, live, epoch, steps, probe_every)
        # Evaluation (and the last epoch's final probe) runs member by member, on each member's own
        # modules: on CPU one fused pass over large evaluation batches is slower than M separate ones.
        accs = {m.index: train_mod.evaluate_epoch(m.s, m.run.result, epoch, passes[m.index]) for m in live}
        reports = {m.index: train_mod.record_epoch(m.s, m.run, epoch, passes[m.index], accs[m.index], thresholds)
                   for m in live}
        stops = (on_epoch(reports) if on_epoch is not None else None) or set()
        for m in live:
            m.ended = train_mod.ends(m.run, reports[m.index], m.index in stops)
        live = [m for m in live if not m.ended]
        if not live:
            break
    return [train_mod.finish(m.run.result, thresholds) for m in members]


__all__ = ["FusedCNN", "train_pack", "capture"]
