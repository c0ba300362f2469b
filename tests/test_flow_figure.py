"""The per-trial gradient-flow SVG: valid, one line per probe, on a log axis that spans the norms."""

import math
import xml.etree.ElementTree as ET

from vgtune.tracking.flow_figure import colour, gradient_flow

NS = "{http://www.w3.org/2000/svg}"


def _parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)


def test_one_line_per_probe_and_a_decade_per_tick():
    probes = [(0, [1e-6, 1e-4, 1e-2, 1.0]), (1, [1e-3, 1e-2, 1e-1, 1.0]), (2, [0.5, 0.5, 0.5, 0.5])]
    root = _parse(gradient_flow(probes, title="depth=4 <tanh> & co"))
    assert len(root.findall(f"{NS}polyline")) == 3
    assert len(root.findall(f"{NS}circle")) == 12
    labels = [t.text for t in root.findall(f"{NS}text")]
    assert "depth=4 <tanh> & co" in labels  # escaped in the file, intact when read
    assert {"1e-6", "1e0"} <= set(labels) and {"init", "epoch 1", "epoch 2"} <= set(labels)
    first = root.findall(f"{NS}polyline")[0].get("points").split()
    ys = [float(p.split(",")[1]) for p in first]
    assert ys == sorted(ys, reverse=True)  # larger norms sit higher (smaller y)


def test_zero_and_non_finite_norms_break_the_line():
    root = _parse(gradient_flow([(0, [1e-3, 0.0, 1e-2, math.nan, math.inf, 1.0, 2.0])]))
    assert [len(p.get("points").split()) for p in root.findall(f"{NS}polyline")] == [1, 1, 2]


def test_nothing_drawable_still_gives_a_valid_plot():
    root = _parse(gradient_flow([(0, [0.0, 0.0])]))
    assert not root.findall(f"{NS}polyline") and root.tag == f"{NS}svg"
    assert _parse(gradient_flow([])).tag == f"{NS}svg"


def test_colours_run_from_viridis_dark_to_yellow():
    assert colour(0) == "#440154" and colour(1) == "#fde725" and colour(0.5) == "#21918c"
