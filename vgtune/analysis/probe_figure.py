"""The figure of `vgtune probe`: each configuration's gradient-flow profile at initialization.

    profiles(table, per_block, factors).savefig("reports/<name>/probe_profiles.png")

One panel per depth (and per activation, where the spec varies it beside other
factors), one line per configuration: ||dL/dh_l|| against the block l on a log
scale shared by every panel, so a straight line rising to the last block is a
constant loss of decades per block (vanishing) and a flat one is healthy.
Configurations that differ only in options outside `factors` draw one line. A
bare `matplotlib.figure.Figure`, as in `vgtune.analysis.plots`.
"""

from __future__ import annotations

import math

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

MAX_LEGEND = 16  # lines per panel that get a legend entry; more are named in probe_blocks.csv
MAX_COLUMNS = 3  # panels per row


def profiles(table: pd.DataFrame, per_block: pd.DataFrame, factors: list[str]) -> Figure:
    """table: one row per configuration (`config`, its factors, `diagnosis`); per_block: one row per configuration
    and block (`config`, `block`, `grad_norm`); factors: the columns that tell configurations' probes apart."""
    varied = [f for f in factors if f in table.columns and table[f].astype(str).nunique() > 1]
    panel_keys = ["depth"] + (["activation"] if "activation" in varied and len(set(varied) - {"depth"}) > 1 else [])
    line_keys = [f for f in varied if f not in panel_keys]
    table = table.sort_values("config").drop_duplicates(panel_keys + line_keys)
    panels = list(table.groupby(panel_keys, sort=True))
    cols = min(MAX_COLUMNS, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(4.4 * cols, 3.4 * rows), dpi=90)
    axes = fig.subplots(rows, cols, squeeze=False, sharey=True).ravel()
    norms = per_block.groupby("config")
    for ax, (values, configs) in zip(axes, panels):
        values = values if isinstance(values, tuple) else (values,)
        colours = _colours(len(configs))
        for colour, (_, cfg) in zip(colours, configs.iterrows()):
            g = norms.get_group(cfg["config"])
            label = ", ".join(f"{k}={cfg[k]}" for k in line_keys) or f"config {cfg['config']}"
            ax.plot(g["block"], g["grad_norm"].where(g["grad_norm"] > 0), marker="o", ms=2.5, color=colour,
                    label=f"{label} [{cfg['diagnosis']}]")
        ax.set_yscale("log")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("block l")
        ax.set_ylabel("||dL/dh_l|| at init")
        ax.set_title(", ".join(f"{k}={v}" for k, v in zip(panel_keys, values)), fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        if len(configs) <= MAX_LEGEND:
            ax.legend(fontsize=6)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    fig.suptitle("gradient norm per block at initialization (log scale)", fontsize=10)
    fig.tight_layout()
    return fig


def _colours(n: int) -> list:
    """Distinct colours for n lines: the tab10 cycle, or evenly spaced viridis beyond ten."""
    from matplotlib import colormaps

    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    return [colormaps["viridis"](i / (n - 1)) for i in range(n)]
