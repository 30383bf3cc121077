"""The interactive chart: one self-contained HTML file (library, drawing code and data inlined).

The page template, TradingView Lightweight Charts (vendored, see assets/VENDORED.md) and
`assets/chart.js` (the drawing code the live page uses too) are read from the package with
importlib.resources, so the file opens with no internet and no server.
"""

from __future__ import annotations

import html
import json
import re
from importlib import resources
from pathlib import Path

from .data import ChartData

ASSETS = "recorder.charts"
LIBRARY = "lightweight-charts.standalone.production.js"


def asset(name: str) -> str:
    """The text of one file in recorder/charts/assets/."""
    return resources.files(ASSETS).joinpath("assets", name).read_text(encoding="utf-8")


def _script_safe(text: str) -> str:
    """Text that cannot end the <script> element it is inlined in."""
    return text.replace("</", "<\\/")


def render_html(data: ChartData) -> str:
    parts = {
        "TITLE": html.escape(data.title),
        "LIBRARY": _script_safe(asset(LIBRARY)),
        "CHART_JS": _script_safe(asset("chart.js")),
        "DATA": _script_safe(json.dumps(data.to_json(), separators=(",", ":"), allow_nan=False)),
    }
    # One pass over the template: the inlined text is never scanned for placeholders itself.
    return re.sub(r"\{\{([A-Z_]+)\}\}", lambda m: parts[m.group(1)], asset("chart.html"))


def write_html(data: ChartData, path: Path) -> None:
    path.write_text(render_html(data), encoding="utf-8")
