"""Gradient-flow figures (matplotlib, headless)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def gradient_flow(probes: list[tuple[int, list[float]]], title: str = "") -> Figure:
    """||dL/dh_l|| against block l, one line per epoch (epoch 0 = initialization), log scale."""
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=90)
    cmap = plt.get_cmap("viridis")
    last = max((e for e, _ in probes), default=1) or 1
    for epoch, norms in probes:
        blocks = range(1, len(norms) + 1)
        safe = [n if n > 0 else float("nan") for n in norms]
        ax.plot(blocks, safe, marker="o", ms=2.5, lw=1.2, color=cmap(epoch / last),
                label="init" if epoch == 0 else f"epoch {epoch}")
    ax.set_yscale("log")
    ax.set_xlabel("block l (input side -> output side)")
    ax.set_ylabel("||dL/dh_l||")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    if len(probes) <= 12:
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def close(fig: Figure) -> None:
    plt.close(fig)
