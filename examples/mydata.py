"""A user's own data for vgtune (`dataset: mydata:load` in mynet.yaml): 12x12 images of a bar in one of
four orientations under noise. A loader returns three map-style Datasets (train, val, test) of
(image C x H x W, label) pairs, or six tensors; vgtune materializes, checks and normalizes them.
"""

import torch
from torch.utils.data import TensorDataset

SIDE = 12


def _bars(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    y = torch.randint(0, 4, (n,), generator=generator)
    x = 0.5 * torch.randn(n, 1, SIDE, SIDE, generator=generator)
    offset = torch.randint(2, SIDE - 2, (n,), generator=generator)
    i = torch.arange(SIDE)
    for k in range(n):
        o = int(offset[k])
        if y[k] == 0:
            x[k, 0, o, :] += 1.5  # horizontal
        elif y[k] == 1:
            x[k, 0, :, o] += 1.5  # vertical
        elif y[k] == 2:
            x[k, 0, i, i] += 1.5  # diagonal
        else:
            x[k, 0, i, SIDE - 1 - i] += 1.5  # anti-diagonal
    return x, y


def load(split_seed: int = 0) -> tuple[TensorDataset, TensorDataset, TensorDataset]:
    g = torch.Generator().manual_seed(1000 + split_seed)
    return tuple(TensorDataset(*_bars(n, g)) for n in (600, 200, 200))
