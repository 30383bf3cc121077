"""The static chart: a PNG drawn with matplotlib's Agg backend (no display needed).

Probability lines per outcome on top (a break where a gap lies between two buckets), the best
bid/ask band of book markets shaded in the line's colour, every gap shaded grey and labelled
with its length and feeds, and traded volume as bars in a lower panel when there are trades.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from .data import SECOND, ChartData

WIDTH_IN, HEIGHT_IN, DPI = 12.0, 6.5, 100
GAP_COLOUR = "#9e9e9e"
MIN_GAP_FRACTION = 0.004  # a gap is drawn at least this wide (of the range), so 0.1 s shows on a day


def render_png(data: ChartData, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(WIDTH_IN, HEIGHT_IN), dpi=DPI)
    # fixed margins: constrained layout draws the figure twice (measured: ~40% of the render)
    fig.subplots_adjust(left=0.065, right=0.985, top=0.945, bottom=0.085, hspace=0.07)
    if data.volume is not None:
        top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    else:
        top, bottom = fig.subplots(1, 1), None
    _draw_lines(top, data)
    _draw_bands(top, data)
    for ax in (top, bottom):
        if ax is not None:
            _shade_gaps(ax, data, labelled=ax is top)
    if bottom is not None:
        _draw_volume(bottom, data)
    _style(top, bottom, data)
    fig.savefig(path, format="png")


def _t(times) -> list[dt.datetime]:
    return [dt.datetime.fromtimestamp(t / SECOND, dt.timezone.utc) for t in times]


def _draw_lines(ax, data: ChartData) -> None:
    for i, s in enumerate(data.series):
        values = [float("nan") if v is None else v for v in s.values]
        ax.plot(_t(s.times), values, lw=1.6, label=s.label, color=f"C{i % 10}", marker="o" if s.points < 3 else None,
                ms=3)


def _draw_bands(ax, data: ChartData) -> None:
    for i, b in enumerate(data.bands):
        colour = f"C{data.band_colour(i) % 10}"
        lo = [float("nan") if v is None else min(v, a) for v, a in zip(b.bids, b.asks)]
        hi = [float("nan") if v is None else max(v, a) for v, a in zip(b.bids, b.asks)]
        ax.fill_between(_t(b.times), lo, hi, step="post", color=colour, alpha=0.2, lw=0,
                        label=f"{b.outcome} best bid–ask ({b.venue} book)")


def _shade_gaps(ax, data: ChartData, *, labelled: bool) -> None:
    min_width = (data.end - data.start) * MIN_GAP_FRACTION
    for i, g in enumerate(data.gaps):
        pad = max(0, (min_width - (g.end - g.start)) / 2)
        x0, x1 = _t((g.start - pad, g.end + pad))
        ax.axvspan(x0, x1, color=GAP_COLOUR, alpha=0.35, lw=0, hatch="///", zorder=0,
                   label="not recording" if labelled and i == 0 else None)
        if labelled:
            ax.annotate(g.label, xy=(x1, 1.0), xycoords=("data", "axes fraction"), xytext=(3, -3 - 11 * (i % 3)),
                        textcoords="offset points", fontsize=8, color="#555555", va="top")


def _draw_volume(ax, data: ChartData) -> None:
    v = data.volume
    ax.bar(_t(v.times), v.values, width=data.interval / SECOND / 86400 * 0.9, align="edge", color="#5c6bc0",
           alpha=0.8)
    ax.set_ylabel("traded size" if v.unit == "size" else "trades")


def _style(top, bottom, data: ChartData) -> None:
    import matplotlib.dates as mdates

    top.set_title(data.title, fontsize=10, loc="left")
    top.set_ylabel("probability")
    top.grid(True, alpha=0.3)
    top.legend(loc="upper left", fontsize=8, ncols=min(4, max(1, len(data.series))), framealpha=0.8)
    last = bottom if bottom is not None else top
    last.set_xlim(*_t((data.start, data.end)))
    locator = mdates.AutoDateLocator(tz=dt.timezone.utc)
    last.xaxis.set_major_locator(locator)
    last.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=dt.timezone.utc))
    last.set_xlabel("UTC")
    if bottom is not None:
        bottom.grid(True, alpha=0.3)
