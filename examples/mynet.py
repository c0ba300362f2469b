"""A user's own CNN, swept by vgtune (`model: mynet:build` in mynet.yaml).

vgtune calls `build` with the trial's model factors as keywords and anything
under `model_args:` in the spec; the names of activations, norms and residual
schemes go through vgtune's own tables (`vgtune.layers`), so `activation`,
`norm` and `residual` stay factors of the sweep. The network exposes the blocks
to probe as `blocks`.
"""

import torch
import torch.nn as nn

from vgtune.layers import add_branch_scale, get_activation, get_norm


class Block(nn.Module):
    """conv -> norm -> activation, with a shortcut h = x + alpha * f(x) where `residual` asks for one."""

    def __init__(self, channels: int, activation: str, norm: str, residual: str):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, bias=norm == "none")
        self.norm = get_norm(norm, channels)
        self.act = get_activation(activation)
        self.skip = add_branch_scale(self, residual)  # none: False; standard: alpha = 1; rezero: learned from 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.norm(self.conv(x)))
        return x + self.alpha * out if self.skip else out


class SmallNet(nn.Module):
    """A stem to `width` channels, `depth` blocks, global average pooling and a linear head."""

    def __init__(self, depth: int, width: int, activation: str, norm: str, residual: str, in_channels: int,
                 num_classes: int, head_dropout: float):
        super().__init__()
        self.stem = nn.Conv2d(in_channels, width, 3, padding=1)
        self.blocks = nn.ModuleList(Block(width, activation, norm, residual) for _ in range(depth))
        self.head = nn.Sequential(nn.Dropout(head_dropout), nn.Linear(width, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)  # (B, width, H, W)
        for block in self.blocks:
            x = block(x)
        return self.head(x.mean(dim=(2, 3)))  # (B, num_classes)


def build(depth: int, width: int, activation: str, norm: str, residual: str, num_classes: int,
          in_channels: int, image_size: int, head_dropout: float = 0.0) -> nn.Module:
    return SmallNet(depth, width, activation, norm, residual, in_channels, num_classes, head_dropout)
