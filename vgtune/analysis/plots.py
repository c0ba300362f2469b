"""Gradient-flow figures.

Every figure is a bare `matplotlib.figure.Figure` (no pyplot, so no global
backend or figure registry): it renders with `fig.savefig(path)` in any
thread and is freed when dropped.
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure


def _figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), dpi=90)


# ------------------------------------------------------------------ report figures

DIAGNOSIS_COLOURS = {"healthy": "#4c9a2a", "vanishing": "#3b6fb6", "exploding": "#d1495b", "dead": "#555555",
                     "saturated": "#edae49", "diverged": "#8e44ad"}


def accuracy_heatmap(eff, baseline_acc) -> Figure:
    """Test accuracy, mitigation x depth; the baseline row on top."""
    eff = eff.groupby(["mitigation", "depth"], sort=False, as_index=False)["mitigated_acc"].mean()  # over cells
    depths = sorted(eff["depth"].unique())
    names = ["baseline"] + list(dict.fromkeys(eff["mitigation"]))
    grid = np.full((len(names), len(depths)), np.nan)
    for j, d in enumerate(depths):
        grid[0, j] = baseline_acc.get(d, np.nan)
    for _, r in eff.iterrows():
        grid[names.index(r["mitigation"]), depths.index(r["depth"])] = r["mitigated_acc"]
    fig = _figure(2.2 + 0.9 * len(depths), 0.9 + 0.32 * len(names))
    ax = fig.subplots()
    im = ax.imshow(grid, cmap="RdYlGn", vmin=0, vmax=1, aspect="auto")
    for i in range(len(names)):
        for j in range(len(depths)):
            if np.isfinite(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=7)
    ax.set_xticks(range(len(depths)), [str(d) for d in depths])
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_xlabel("depth (blocks)")
    fig.suptitle("test accuracy (fraction): baseline and one change\nfrom it, mean over cells", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.04)
    fig.tight_layout()
    return fig


VERDICT_COLOURS = {"helps": "#4c9a2a", "hurts": "#d1495b", "negligible": "#3b6fb6", "neither trains": "#888888",
                   "inconclusive": "#edae49", "": "#bbbbbb"}


def forest(eff, margin: float | None, cells: list[str]) -> Figure:
    """Each comparison's effect on test accuracy (points) with the interval its verdict rests on, one row per
    comparison (labelled by depth, its `cells` values and the mitigation), coloured by verdict; the grey band is
    +-margin (inside it an effect is negligible)."""
    rows = eff.reset_index(drop=True)
    labels = [f"d{r['depth']} " + " ".join(str(r[c]) for c in cells if str(r[c]) not in ("", "nan"))
              + f" {r['mitigation']} ({int(r['seeds']) if r['seeds'] == r['seeds'] else 0})"
              for _, r in rows.iterrows()]
    fig = _figure(8.5, 1.0 + 0.26 * len(rows))
    ax = fig.subplots()
    if margin:
        ax.axvspan(-100 * margin, 100 * margin, color="#dddddd", zorder=0, label=f"+-{100 * margin:g} points")
    ax.axvline(0, color="#444444", lw=0.8)
    verdicts = rows["verdict"].where(rows["verdict"].map(lambda v: isinstance(v, str)), "")
    y = np.arange(len(rows))
    for verdict, colour in VERDICT_COLOURS.items():  # one call per verdict: a line per interval, a dot per effect
        sel = (verdicts == verdict).to_numpy()
        if sel.any():
            low, high = (100 * np.clip(rows.loc[sel, c].to_numpy(float), -1.0, 1.0) for c in ("ci_low", "ci_high"))
            ax.hlines(y[sel], low, high, colors=colour, lw=2)
            ax.plot(100 * rows.loc[sel, "delta_test_acc"].to_numpy(float), y[sel], "o", color=colour, ms=4,
                    label=verdict or "not judged")
    ax.set_yticks(range(len(rows)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("effect on test accuracy (points; seeds in brackets)")
    ax.set_title("effects and the intervals their verdicts rest on", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


def attenuation_vs_depth(df, factors=("activation", "init", "norm"), vanishing: float = -2.0) -> Figure:
    """Mean grad_attenuation_init (log10 units) against depth, one panel per factor.

    The dashed line is the diagnosis threshold `vanishing`. Trials whose first block got
    no gradient at all (-inf) cannot enter a mean: they are counted in the legend.
    """
    present = [f for f in factors if f in df.columns and df[f].nunique() > 0]
    fig = _figure(4.2 * len(present), 3.4)
    axes = fig.subplots(1, len(present), squeeze=False)
    for ax, f in zip(axes[0], present):
        for value, g in df.groupby(f):
            finite = g[np.isfinite(g["grad_attenuation_init"].to_numpy(dtype=float))]
            m = finite.groupby("depth")["grad_attenuation_init"].mean()
            zero = int((g["grad_attenuation_init"] == -math.inf).sum())
            ax.plot(m.index, m.values, marker="o", label=str(value) + (f" ({zero} with no gradient)" if zero else ""))
        ax.axhline(0, color="grey", lw=0.8)
        ax.axhline(vanishing, color="grey", lw=0.8, ls="--")
        ax.set_xlabel("depth (blocks)")
        ax.set_ylabel("log10 ||dL/dh_1|| / ||dL/dh_L||")
        ax.set_title(f"attenuation at init by {f}", fontsize=9)
        ax.legend(fontsize=7)
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return fig


def layer_profiles(rows) -> Figure:
    """Final per-block gradient norms of representative trials (log scale)."""
    fig = _figure(6.5, 3.8)
    ax = fig.subplots()
    for label, norms, diagnosis in rows:
        blocks = range(1, len(norms) + 1)
        drawn = [n if n > 0 else float("nan") for n in norms]
        if all(math.isnan(n) for n in drawn):  # a log axis has no place for a zero gradient
            label += " (zero gradient at every block: no line on a log scale)"
        ax.plot(blocks, drawn, marker="o", ms=2.5, color=DIAGNOSIS_COLOURS.get(diagnosis),
                label=f"{label} [{diagnosis}]")
    ax.set_yscale("log")
    ax.set_xlabel("block l")
    ax.set_ylabel("||dL/dh_l|| (last probe)")
    ax.set_title("per-block gradient of representative trials", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=6)
    fig.tight_layout()
    return fig


def diagnosis_counts(df) -> Figure:
    """Trials per diagnosis at each depth (stacked)."""
    table = df.groupby(["depth", "diagnosis"]).size().unstack(fill_value=0)
    fig = _figure(5.5, 3.4)
    ax = fig.subplots()
    bottom = None
    for diag in [d for d in DIAGNOSIS_COLOURS if d in table.columns]:
        vals = table[diag].values
        ax.bar([str(d) for d in table.index], vals, bottom=bottom, label=diag, color=DIAGNOSIS_COLOURS[diag])
        bottom = vals if bottom is None else bottom + vals
    ax.set_xlabel("depth (blocks)")
    ax.set_ylabel("trials")
    ax.set_ylim(0, 1.08 * float(table.sum(axis=1).max()))  # the tallest bar whole, with room above it
    ax.set_title("diagnoses by depth", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------ theory

def phase_diagram(df, value: str, label: str, critical_scale: float, trainable: dict | None = None,
                  cmap: str = "viridis", vmin: float | None = None, vmax: float | None = None) -> Figure:
    """`value` over init_scale (x) x depth (y) as a heatmap, with the predicted chi_1 = 1 line.

    `trainable` maps init_scale -> 6 xi, the depth up to which theory expects a plain net to train.
    """
    grid = df.pivot_table(index="depth", columns="init_scale", values=value, aggfunc="mean").sort_index()
    scales, depths = list(grid.columns), list(grid.index)
    fig = _figure(1.8 + 0.55 * len(scales), 1.2 + 0.32 * len(depths))
    ax = fig.subplots()
    shown = grid.to_numpy(dtype=float)
    im = ax.imshow(np.where(np.isfinite(shown), shown, np.nan), origin="lower", aspect="auto", cmap=cmap,
                   vmin=vmin, vmax=vmax)
    x_of = lambda s: float(np.interp(math.log(s), [math.log(v) for v in scales], range(len(scales))))  # noqa: E731
    if math.isfinite(critical_scale) and scales[0] <= critical_scale <= scales[-1]:
        ax.axvline(x_of(critical_scale), color="white", lw=2, ls="--",
                   label=f"chi_1 = 1 (init_scale {critical_scale:.2f})")
    if trainable:
        pts = sorted((s, d) for s, d in trainable.items() if scales[0] <= s <= scales[-1] and math.isfinite(d))
        ys = [float(np.interp(d, depths, range(len(depths)), right=len(depths) - 0.5)) for _, d in pts]
        ax.plot([x_of(s) for s, _ in pts], ys, color="red", lw=2, label="6 xi (trainable depth)")
    ax.set_xticks(range(len(scales)), [f"{s:g}" for s in scales], fontsize=7)
    ax.set_yticks(range(len(depths)), [str(d) for d in depths], fontsize=7)
    ax.set_xlabel("init_scale (sigma_w^2 x init_scale^2)")
    ax.set_ylabel("depth (blocks)")
    ax.set_title(label, fontsize=9)
    ax.set_ylim(-0.5, len(depths) - 0.5)
    fig.colorbar(im, ax=ax, fraction=0.04)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig


def measured_vs_predicted(df) -> Figure:
    """Measured init attenuation against mean-field theory's, one colour per activation."""
    fig = _figure(4.6, 4.2)
    ax = fig.subplots()
    for act, g in df.groupby("activation"):
        ax.scatter(g["grad_attenuation_predicted"], g["grad_attenuation_init"], s=14, label=str(act))
    low = min(df["grad_attenuation_predicted"].min(), df["grad_attenuation_init"].min())
    high = max(df["grad_attenuation_predicted"].max(), df["grad_attenuation_init"].max())
    ax.plot([low, high], [low, high], color="grey", lw=0.8, ls="--", label="measured = predicted")
    ax.set_xlabel("predicted log10 ||dL/dh_1|| / ||dL/dh_L|| (mean field)")
    ax.set_ylabel("measured at initialization")
    ax.set_title("gradient flow at init: theory and probe", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
