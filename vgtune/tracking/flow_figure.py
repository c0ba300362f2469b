"""The per-trial gradient-flow plot as SVG text: ||dL/dh_l|| against block l, one line per probe, log scale.

    svg = gradient_flow([(0, init_norms), (1, epoch1_norms)], title="depth=24 activation=tanh")

Drawn once per trial in the tracker's writer process, so it is plain string
formatting (well under a millisecond; a matplotlib PNG took ~50-90 ms, most of a
small trial's MLflow cost). MLflow's artifact viewer and every browser show SVG.
A norm that is 0 or not finite cannot sit on a log axis: the line breaks there.
"""

from __future__ import annotations

import math
from xml.sax.saxutils import escape

WIDTH, HEIGHT = 540, 324  # pixels
LEFT, RIGHT, TOP, BOTTOM = 70, 14, 30, 44  # margins around the plot area
MAX_TICKS = 7  # decade labels on the y axis at most
MAX_LEGEND = 12  # probes beyond this many get no legend
# matplotlib's viridis at 0, 0.25, 0.5, 0.75 and 1: early probes dark blue, late ones yellow.
VIRIDIS = ((68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37))


def colour(x: float) -> str:
    """viridis(x) for x in [0, 1], linearly between its five anchors."""
    x = min(1.0, max(0.0, x)) * (len(VIRIDIS) - 1)
    i = min(int(x), len(VIRIDIS) - 2)
    a, b = VIRIDIS[i], VIRIDIS[i + 1]
    return "#" + "".join(f"{round(u + (v - u) * (x - i)):02x}" for u, v in zip(a, b))


def _decades(values: list[float]) -> tuple[int, int]:
    """The y range in whole decades around the finite positive values (one decade if there are none)."""
    logs = [math.log10(v) for v in values if v > 0 and math.isfinite(v)]
    if not logs:
        return 0, 1
    low, high = math.floor(min(logs)), math.ceil(max(logs))
    return low, max(high, low + 1)


def _segments(points: list[tuple[float, float | None]]) -> list[list[tuple[float, float]]]:
    """Runs of consecutive drawable points (y None breaks the line)."""
    runs: list[list[tuple[float, float]]] = [[]]
    for x, y in points:
        if y is None:
            runs.append([])
        else:
            runs[-1].append((x, y))
    return [r for r in runs if r]


def gradient_flow(probes: list[tuple[int, list[float]]], title: str = "") -> str:
    """SVG of per-block gradient norms, one line per (epoch, norms) probe (epoch 0 = initialization)."""
    w, h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    blocks = max((len(n) for _, n in probes), default=1)
    low, high = _decades([v for _, n in probes for v in n])
    last = max((e for e, _ in probes), default=1) or 1

    def px(block: int) -> float:
        return LEFT + (w * (block - 1) / (blocks - 1) if blocks > 1 else w / 2)

    def py(value: float) -> float | None:
        if not (value > 0 and math.isfinite(value)):
            return None
        return TOP + h * (high - math.log10(value)) / (high - low)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
           f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="11">',
           f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
           f'<text x="{WIDTH / 2:.0f}" y="18" text-anchor="middle" font-size="12">{escape(title)}</text>']
    step = max(1, math.ceil((high - low) / (MAX_TICKS - 1)))
    for d in range(low, high + 1, step):
        y = TOP + h * (high - d) / (high - low)
        out.append(f'<line x1="{LEFT}" x2="{LEFT + w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>'
                   f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">1e{d}</text>')
    xstep = max(1, math.ceil(blocks / 12))
    for b in range(1, blocks + 1, xstep):
        out.append(f'<text x="{px(b):.1f}" y="{TOP + h + 16}" text-anchor="middle">{b}</text>')
    out += [f'<rect x="{LEFT}" y="{TOP}" width="{w}" height="{h}" fill="none" stroke="#333"/>',
            f'<text x="{LEFT + w / 2:.0f}" y="{HEIGHT - 8}" text-anchor="middle">'
            'block l (input side -&gt; output side)</text>',
            f'<text transform="translate(16 {TOP + h / 2:.0f}) rotate(-90)" text-anchor="middle">||dL/dh_l||</text>']
    lines, legend = [], []  # the data, then the legend on top of it
    for i, (epoch, norms) in enumerate(probes):
        stroke = colour(epoch / last)
        for run in _segments([(px(b + 1), py(v)) for b, v in enumerate(norms)]):
            coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in run)
            lines.append(f'<polyline points="{coords}" fill="none" stroke="{stroke}" stroke-width="1.4"/>')
            lines += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2" fill="{stroke}"/>' for x, y in run]
        ly = TOP + 14 + 13 * i
        label = "init" if epoch == 0 else f"epoch {epoch}"
        legend.append(f'<line x1="{LEFT + w - 74}" x2="{LEFT + w - 58}" y1="{ly - 4}" y2="{ly - 4}" stroke="{stroke}" '
                      f'stroke-width="2"/><text x="{LEFT + w - 54}" y="{ly}">{label}</text>')
    if probes and len(probes) <= MAX_LEGEND:
        lines.append(f'<rect x="{LEFT + w - 80}" y="{TOP + 2}" width="78" height="{13 * len(probes) + 6}" '
                     'fill="white" fill-opacity="0.85" stroke="#ccc"/>')
        lines += legend
    return "\n".join(out + lines + ["</svg>"])
