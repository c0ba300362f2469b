"""He et al. 2016's CIFAR networks (Sec. 4.2): `arch: resnet_cifar`.

A 3x3 conv to `width` channels, then three stages of n basic blocks with
width, 2*width and 4*width channels (16/32/64 in the paper); the first block
of stages 2 and 3 halves the feature map with stride 2. Global average pooling
and a linear classifier close it: 6n + 2 weighted layers (`depth` 20, 32, 44,
56, 110 for n = 3, 5, 7, 9, 18).

    x (B, C, H, W) -> stem -> stage1 (n blocks, w, H) -> stage2 (2w, H/2) -> stage3 (4w, H/4)
      -> global average pool -> linear -> logits (B, num_classes)

Each basic block is conv-norm-act-conv-norm, plus the shortcut, then act.
Shortcuts are the paper's option A: the identity, and where the shape changes
a stride-2 subsample with zero channels appended, so a ResNet has exactly the
parameters of its plain counterpart (`residual: none`: no shortcut at all).
`residual: rezero` scales the branch by a learned alpha that starts at 0.
`norm`, `activation` and the init remain factors; the 3n blocks are what
`vgtune.core.gradflow` probes.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from vgtune.core.checks import invalid
from vgtune.core.models import ModelConfig, add_branch_scale, get_activation, get_norm


def check_depth(depth: int) -> None:
    if depth < 8 or (depth - 2) % 6:
        raise invalid("depth", "for resnet_cifar must be 6n+2 with n >= 1 (8, 14, 20, 32, 44, 56, 110), "
                               f"got {depth}")


class ShortcutA(nn.Module):
    """Option A: subsample by `stride` and pad the new channels with zeros (no parameters)."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.stride, self.pad = stride, cout - cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, ::self.stride, ::self.stride]  # (B, cin, H/s, W/s)
        return F.pad(x, (0, 0, 0, 0, 0, self.pad)) if self.pad else x  # (B, cout, H/s, W/s)


class BasicBlock(nn.Module):
    """act(norm(conv(act(norm(conv(x))))) * alpha + shortcut(x)); no shortcut for `residual: none`."""

    def __init__(self, cin: int, cout: int, stride: int, cfg: ModelConfig):
        super().__init__()
        bias = cfg.norm == "none"
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=bias)
        self.norm1 = get_norm(cfg.norm, cout)
        self.act1 = get_activation(cfg.activation)
        self.drop = nn.Dropout(cfg.dropout) if cfg.dropout > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=bias)
        self.norm2 = get_norm(cfg.norm, cout)
        self.act = get_activation(cfg.activation)  # after the addition: the block's output
        self.shortcut = ShortcutA(cin, cout, stride) if add_branch_scale(self, cfg.residual) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.norm1(self.conv1(x))
        out = self.norm2(self.conv2(self.drop(self.act1(out))))
        if self.shortcut is not None:
            out = self.shortcut(x) + self.alpha * out
        return self.act(out)


class ResNetCIFAR(nn.Module):
    """He et al. 2016, Sec. 4.2; `blocks` holds the 3n basic blocks in order."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        check_depth(cfg.depth)
        n, w = (cfg.depth - 2) // 6, cfg.width
        self.config = cfg
        self.stem = nn.Sequential(nn.Conv2d(cfg.in_channels, w, 3, padding=1, bias=cfg.norm == "none"),
                                  get_norm(cfg.norm, w), get_activation(cfg.activation))
        blocks, cin = [], w
        for stage, cout in enumerate((w, 2 * w, 4 * w)):
            for i in range(n):
                blocks.append(BasicBlock(cin, cout, 2 if (stage > 0 and i == 0) else 1, cfg))
                cin = cout
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Linear(4 * w, cfg.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)  # (B, w, H, W)
        for block in self.blocks:  # -> (B, 4w, H/4, W/4)
            x = block(x)
        return self.head(x.mean(dim=(2, 3)))  # global average pool -> (B, num_classes)
