"""The server-drawn SVG plots (gateway/plot.py)."""

import re
import xml.etree.ElementTree as ET

from gateway.plot import line_plot, thin

SVG = "{http://www.w3.org/2000/svg}"


def test_thin_keeps_at_most_that_many_points_and_the_last_one():
    points = [(float(t), float(t % 7)) for t in range(1000)]
    thinned = thin(points, 320)
    assert len(thinned) <= 320 and thinned[-1] == points[-1]
    assert thin(points[:10], 320) == points[:10]


def test_stage_lines_stay_inside_the_plot_even_far_from_the_data():
    svg = line_plot({"water_level": [(0.0, 0.40), (3600.0, 0.45)]}, start=0, end=3600, unit="m",
                    lines=[("standby", 1.5), ("danger", 3.0)])
    root = ET.fromstring(svg)  # well-formed XML: browsers draw it inline
    top, height = 22, 220 - 22 - 26
    for g in root.iter(f"{SVG}g"):
        if g.get("class") == "stage":
            y = float(g.find(f"{SVG}line").get("y1"))
            assert top <= y <= top + height, g.get("data-stage")
    assert re.search(r'data-series="water_level" data-last="0.45"', svg)


def test_no_readings_says_so():
    assert "no readings in the last 24 h yet" in line_plot({}, start=0, end=1)
