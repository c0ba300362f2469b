"""The fused network of a pack: trials that share a network shape train as one horizontally fused model.

HFTA (Wang et al., MLSys 2021): M networks of one shape become one network
whose convolutions are grouped (group k is member k's conv), whose norms run
over M x C channels and whose classifier is one batched matmul. Member k's
batch enters as channels [k C_in, (k+1) C_in) of the input, so each member sees
its own batch order, and the loss is the sum of the members' losses, so each
member's gradient is its own. One step of the pack is one forward and one
backward pass for all M members.

Every member stays a trial of its own: `vgtune.core.train.train_pack` builds,
seeds and initializes it exactly as it would be alone (same weights), and it
keeps its own parameters and optimizer (its own lr, momentum, weight decay), its
own probe, divergence check and history. A member that diverges or is stopped
leaves the pack; the others continue as a pack without it (bit for bit, at one
intra-op thread: at more, a grouped conv's weight gradient may be summed in
another order when the group count changes). Only the fused forward is new;
dropout draws from the shared RNG, so a member with dropout is not bit-equal to
its solo run.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from vgtune.core.gradflow import GradFlowProbe
from vgtune.core.models import CNN
from vgtune.core.packing import PER_MEMBER, shape_key, why_unpackable
from vgtune.core.schema import TrainConfig


class FusedCNN:
    """The members' `vgtune.core.models.CNN`s (one shape) run as one network; members keep their own parameters.

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
    def capture(self, probes: list[GradFlowProbe]) -> Iterator[None]:
        """One probed step: member k's `GradFlowProbe` (probes[k]) sees its own channels of every block."""
        for probe in probes:
            probe.begin()

        def observe(i: int, out: torch.Tensor, pre: torch.Tensor) -> None:
            c, ca = out.shape[1] // len(probes), pre.shape[1] // len(probes)

            def grad_hook(g: torch.Tensor) -> None:
                for k, probe in enumerate(probes):
                    probe.observe_grad(i, g[:, k * c:(k + 1) * c])
            if out.requires_grad:
                out.register_hook(grad_hook)
            for k, probe in enumerate(probes):
                probe.observe_output(i, out[:, k * c:(k + 1) * c])
                probe.observe_activation(i, pre[:, k * ca:(k + 1) * ca])
        self.observe = observe
        try:
            yield
        finally:
            self.observe = None


def check(cfgs: list[TrainConfig]) -> None:
    """Raise ValueError unless these trials can train as one pack (vgtune.core.packing)."""
    dicts = [c.to_dict() for c in cfgs]
    for d in dicts:
        reason = why_unpackable(d)
        if reason:
            raise ValueError(f"cannot pack this trial: {reason}")
    if len({shape_key(d) for d in dicts}) > 1:
        raise ValueError(f"a pack's members may differ only in {', '.join(PER_MEMBER)}")


__all__ = ["FusedCNN", "check"]
