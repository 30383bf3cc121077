"""Charts of what the recorder captured, with the intervals it was not listening shaded as gaps.

    data = chart_data(dataset, "evt-1", start="2026-12-01T22:00:00Z")   # the numbers (ChartData)
    render(data, Path("evt-1.png"))   # or .html: format by suffix

`data.py` computes the numbers from the named queries; `png.py` draws them with matplotlib;
`html.py` writes one self-contained interactive file with the vendored TradingView Lightweight
Charts and `assets/chart.js`, the drawing code the live page shares (see `page.py`).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import QueryError
from .data import ChartData, Gap, Series, chart_data

__all__ = ["FORMATS", "ChartData", "Gap", "Series", "chart_data", "check_output", "render"]

FORMATS = (".png", ".html")


def check_output(path: Path) -> None:
    """Refuse an output file whose suffix names no format, before any query runs."""
    if path.suffix.lower() not in FORMATS:
        raise QueryError(f"output {str(path)!r}: the suffix picks the format; use .png or .html")
    if not path.parent.is_dir():
        raise QueryError(f"output {str(path)!r}: directory {str(path.parent)!r} does not exist")


def render(data: ChartData, path: Path) -> None:
    check_output(path)
    if path.suffix.lower() == ".png":
        from .png import render_png

        render_png(data, path)
    else:
        from .html import write_html

        write_html(data, path)
