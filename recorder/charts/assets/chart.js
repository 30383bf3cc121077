/* recorder chart drawing code: shared by `recorder chart -o x.html` and the live page.
 *
 *   const chart = RecorderChart.draw(element, data);   // data: ChartData.to_json() (recorder/charts/data.py)
 *   chart.addPoint({venue, origin, outcome, t, p});    // live page: a streamed chance point (t in µs)
 *   chart.applyGap({feed, start, end});                  // live page: a feed went down (end null) or came back
 *   chart.stats();                                       // what is drawn (tests read it)
 *
 * Times arrive as integer microseconds since the epoch (UTC) and are given to lightweight-charts
 * as seconds. lightweight-charts spaces bars by index, not by time, so an invisible series holds
 * one empty slot per bucket of the whole range: the time axis stays uniform and a gap is as wide
 * on screen as it was in time. Gaps are drawn as shaded areas by a series primitive; a line
 * already carries a break (a null value) where a gap lies between two of its buckets.
 * Requires TradingView Lightweight Charts 5 (window.LightweightCharts); keep its attribution logo.
 */
(function () {
  "use strict";
  const LWC = window.LightweightCharts;
  // matplotlib's tab10, so the PNG and the HTML chart colour a series alike
  const COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf"];
  const GAP_FILL = "rgba(158, 158, 158, 0.35)";
  const MAX_GRID = 200000;

  const sec = (us) => us / 1e6;

  function isoTime(seconds, withMs) {
    const text = new Date(seconds * 1000).toISOString().replace("T", " ");
    return withMs ? text.slice(0, 23) : text.slice(0, 19);
  }

  function duration(s) {
    if (s < 1) return (s * 1000).toFixed(0) + " ms";
    if (s < 120) return s.toPrecision(3) + " s";
    if (s < 7200) return (s / 60).toPrecision(3) + " min";
    return (s / 3600).toPrecision(3) + " h";
  }

  function withAlpha(hex, alpha) {
    const n = parseInt(hex.slice(1), 16);
    return `rgba(${(n >> 16) & 255}, ${(n >> 8) & 255}, ${n & 255}, ${alpha})`;
  }

  // Overlapping gaps as one (an open gap, end null, reaches past everything), labelled as
  // data.py's Gap.label: "gap 2.4 s (op-book, op-chance)", "gap (still down) (4 feeds)".
  function mergeGaps(gaps) {
    const open = (g) => (g.end === null ? Infinity : g.end);
    const merged = [];
    for (const g of [...gaps].sort((a, b) => a.start - b.start)) {
      const last = merged[merged.length - 1];
      if (last && g.start <= open(last)) {
        last.end = last.end === null || g.end === null ? null : Math.max(last.end, g.end);
        last.feeds = [...new Set([...last.feeds, ...g.feeds])].sort();
        last.reasons = [...new Set([...last.reasons, ...(g.reasons || [])])].sort();
      } else {
        merged.push({ start: g.start, end: g.end, feeds: [...g.feeds], reasons: [...(g.reasons || [])] });
      }
    }
    for (const g of merged) {
      const who = g.feeds.length <= 3 ? g.feeds.join(", ") : g.feeds.length + " feeds";
      g.label = "gap " + (g.end === null ? "(still down)" : duration((g.end - g.start) / 1e6)) + " (" + who + ")";
    }
    return merged;
  }

  // One empty slot per bucket from the bucket holding `start` to `end`.
  function gridTimes(data) {
    const out = [];
    const count = Math.min(MAX_GRID, Math.ceil((data.end - data.grid_start) / data.interval));
    for (let k = 0; k < count; k++) out.push({ time: sec(data.grid_start + k * data.interval) });
    return out;
  }

  // A null value is a break. lightweight-charts joins a line across empty slots, so the segment
  // that would cross the break is drawn transparent (a point's colour paints the segment after it).
  const BREAK = "rgba(0, 0, 0, 0)";

  function lineData(times, values) {
    const out = [];
    times.forEach((t, i) => {
      if (values[i] !== null) out.push({ time: sec(t), value: values[i] });
      else if (out.length) out[out.length - 1].color = BREAK;
    });
    return out;
  }

  // Draws the gaps (and, in the main pane, the bid/ask bands and gap labels) behind the series.
  class Overlay {
    constructor(owner, withBands) {
      this.owner = owner;
      this.withBands = withBands;
      this.views = [{ zOrder: () => "bottom", renderer: () => ({ draw: (target) => this.draw(target) }) }];
    }
    attached(param) { this.param = param; }
    detached() { this.param = null; }
    updateAllViews() {}
    paneViews() { return this.views; }

    draw(target) {
      const self = this;
      target.useMediaCoordinateSpace(({ context: ctx, mediaSize }) => {
        if (self.withBands) self.drawBands(ctx);
        for (const g of self.owner.gaps) {
          const x0 = self.owner.x(g.start), x1 = self.owner.x(self.owner.gapEnd(g));
          if (x0 === null || x1 === null) continue;
          const w = Math.max(3, x1 - x0), left = x1 - x0 < 3 ? (x0 + x1) / 2 - 1.5 : x0;
          ctx.fillStyle = GAP_FILL;
          ctx.fillRect(left, 0, w, mediaSize.height);
          if (self.withBands) {
            ctx.fillStyle = "#555";
            ctx.font = "11px sans-serif";
            ctx.fillText(g.label, left + w + 3, 12);
          }
        }
      });
    }

    drawBands(ctx) {
      const series = this.owner.priceSeries();
      if (!series) return;
      for (const b of this.owner.data.bands) {
        ctx.fillStyle = withAlpha(COLOURS[b.colour % COLOURS.length], 0.2);
        for (let i = 0; i < b.times.length; i++) {  // a state holds until the next one (the last: one bucket)
          if (b.bids[i] === null || b.asks[i] === null) continue;
          const next = i + 1 < b.times.length ? b.times[i + 1] : b.times[i] + this.owner.data.interval;
          const x0 = this.owner.x(b.times[i]), x1 = this.owner.x(next);
          const y0 = series.priceToCoordinate(b.bids[i]), y1 = series.priceToCoordinate(b.asks[i]);
          if (x0 === null || x1 === null || y0 === null || y1 === null) continue;
          ctx.fillRect(x0, Math.min(y0, y1), x1 - x0, Math.max(1, Math.abs(y1 - y0)));
        }
      }
    }
  }

  class Chart {
    constructor(element, data) {
      this.element = element;
      this.data = data;
      this.gaps = data.gaps;
      this.historyGaps = data.gaps;
      this.liveGaps = {};
      this.lines = {};
      this.withMs = data.interval < 1e6;
      this.chart = LWC.createChart(element, {
        autoSize: true,
        layout: { attributionLogo: true, fontSize: 11, background: { color: "#ffffff" }, textColor: "#333" },
        grid: { vertLines: { color: "#eee" }, horzLines: { color: "#eee" } },
        crosshair: { mode: LWC.CrosshairMode.Normal },
        localization: { timeFormatter: (t) => isoTime(t, this.withMs) + " UTC" },
        timeScale: { timeVisible: true, secondsVisible: true },
        rightPriceScale: { scaleMargins: { top: 0.08, bottom: 0.08 } },
      });
      this.grid = this.chart.addSeries(LWC.LineSeries, { lastValueVisible: false, priceLineVisible: false,
        crosshairMarkerVisible: false });
      const grid = gridTimes(data);
      this.gridCount = grid.length;
      this.gridEnd = data.grid_start + grid.length * data.interval;
      this.grid.setData(grid);
      this.byKey = {};
      this.received = 0;
      this.overlay = new Overlay(this, true);
      this.grid.attachPrimitive(this.overlay);
      this.addLines();
      this.addVolume();
      this.chart.timeScale().fitContent();
      this.follow = "all";
      this.watchUser(element);
      this.tooltip = this.makeTooltip();
      this.chart.subscribeCrosshairMove((p) => this.showTooltip(p));
    }

    // The series whose price scale the bands are drawn on (the empty grid series has no prices).
    priceSeries() {
      const lines = Object.values(this.lines);
      return lines.length ? lines[0] : null;
    }

    addLines() {
      this.data.series.forEach((s, i) => {
        const colour = COLOURS[i % COLOURS.length];
        const line = this.chart.addSeries(LWC.LineSeries, { color: colour, lineWidth: 2, title: s.label,
          priceFormat: { type: "price", precision: 4, minMove: 0.0001 } });
        line.setData(lineData(s.times, s.values));
        this.lines[s.label] = line;
        let last = null;
        s.times.forEach((t, k) => { if (s.values[k] !== null) last = { bucket: t, value: s.values[k] }; });
        this.byKey[s.venue + "\u0000" + s.origin + "\u0000" + s.outcome] = { series: line, last: last };
      });
    }

    addVolume() {
      const v = this.data.volume;
      if (!v) return;
      this.volume = this.chart.addSeries(LWC.HistogramSeries, { color: "#5c6bc0", title: v.unit === "size" ?
        "traded size" : "trades", priceFormat: { type: "volume" }, lastValueVisible: false, priceLineVisible: false }, 1);
      this.volume.setData(v.times.map((t, i) => ({ time: sec(t), value: v.values[i] })));
      this.volume.attachPrimitive(new Overlay(this, false));
      const panes = this.chart.panes();
      if (panes.length > 1) panes[1].setHeight(Math.round(this.element.clientHeight * 0.22));
    }

    // x pixel of a time in µs: the bucket's slot plus the fraction of the bucket.
    x(us) {
      const iv = this.data.interval, k = Math.floor((us - this.data.grid_start) / iv);
      const ts = this.chart.timeScale(), t0 = this.data.grid_start + k * iv;
      const a = ts.timeToCoordinate(sec(t0));
      if (a === null) {  // the end of the last slot (an open gap reaches it): one slot after the last
        const before = ts.timeToCoordinate(sec(t0 - iv));
        return before === null ? null : before + ts.options().barSpacing * (1 + (us - t0) / iv);
      }
      const b = ts.timeToCoordinate(sec(t0 + iv));
      const width = b === null ? ts.options().barSpacing : b - a;
      return a + ((us - t0) / iv) * width;
    }

    makeTooltip() {
      const tip = document.createElement("div");
      tip.className = "recorder-tooltip";
      tip.style.cssText = "position:absolute;display:none;pointer-events:none;z-index:10;background:rgba(255,255,255,.95);" +
        "border:1px solid #ccc;border-radius:4px;padding:6px 8px;font:12px sans-serif;white-space:nowrap;";
      this.element.style.position = "relative";
      this.element.appendChild(tip);
      return tip;
    }

    showTooltip(p) {
      if (!p.time || !p.point || p.point.x < 0 || p.point.y < 0) { this.tooltip.style.display = "none"; return; }
      const rows = [`<b>${isoTime(p.time, this.withMs)} UTC</b>`];
      for (const [label, line] of Object.entries(this.lines)) {
        const d = p.seriesData.get(line);
        if (d && d.value !== undefined) rows.push(`<span style="color:${line.options().color}">●</span> ${label}: ${d.value.toFixed(4)}`);
      }
      const vol = this.volume && p.seriesData.get(this.volume);
      if (vol && vol.value !== undefined) rows.push(`volume: ${vol.value}`);
      const us = p.time * 1e6;
      for (const g of this.gaps) {
        if (us + this.data.interval > g.start && us <= this.gapEnd(g)) rows.push(`<span style="color:#777">▨ ${g.label}</span>`);
      }
      this.tooltip.innerHTML = rows.join("<br>");
      this.tooltip.style.display = "block";
      const left = Math.min(p.point.x + 16, this.element.clientWidth - this.tooltip.offsetWidth - 4);
      this.tooltip.style.left = Math.max(0, left) + "px";
      this.tooltip.style.top = Math.max(0, p.point.y - this.tooltip.offsetHeight - 8) + "px";
    }

    // --- live updates (the live page) ---

    // A chance point as the daemon streams it: {venue, origin, outcome, t (µs), p}. It goes into
    // its bucket (the last point of a bucket is its close); the time axis grows with the points.
    // Returns false for a series the chart does not have (the page reloads the history then).
    addPoint(p) {
      const key = p.venue + "\u0000" + p.origin + "\u0000" + p.outcome, line = this.byKey[key];
      if (!line) return false;
      const iv = this.data.interval, bucket = this.bucketOf(p.t);
      if (line.last !== null && bucket < line.last.bucket) return true;  // older than what is drawn: in the history already
      this.extendGrid(bucket);
      if (line.last !== null && bucket > line.last.bucket + iv && this.gapBetween(line.last.bucket + iv, bucket)) {
        line.series.update({ time: sec(line.last.bucket), value: line.last.value, color: BREAK });
      }
      line.series.update({ time: sec(bucket), value: p.p });
      line.last = { bucket: bucket, value: p.p };
      this.received += 1;
      return true;
    }

    bucketOf(us) {
      const iv = this.data.interval;
      return this.data.grid_start + Math.floor((us - this.data.grid_start) / iv) * iv;
    }

    // Grow the time axis to the bucket, and the view with it as `follow` says: "all" (the whole
    // range squeezed in, as on opening), "edge" (scrolled to the newest bucket, zoom kept) or null
    // (the user moved away from the newest bucket: the view stays put).
    extendGrid(bucket) {
      if (this.gridEnd > bucket) return;
      while (this.gridEnd <= bucket) {
        this.grid.update({ time: sec(this.gridEnd) });
        this.gridEnd += this.data.interval;
        this.gridCount += 1;
      }
      this.data.end = Math.max(this.data.end, this.gridEnd);
      if (this.follow === "all") this.chart.timeScale().fitContent();
      else if (this.follow === "edge") this.chart.timeScale().scrollToRealTime();
    }

    // Only the user changes how the view follows. A change of the visible range within a second of
    // the user's wheel, pointer, touch or key input is theirs: showing the newest bucket means
    // follow ("all" when it shows everything), else stay put. The chart's own changes (a fit or a
    // scroll it applies when it next draws, late on a loaded machine) are never read as intent.
    watchUser(element) {
      this.userAt = -Infinity;
      const mark = () => { this.userAt = performance.now(); };
      for (const kind of ["wheel", "pointerdown", "touchstart", "keydown"]) {
        element.addEventListener(kind, mark, { capture: true, passive: true });
      }
      this.chart.timeScale().subscribeVisibleLogicalRangeChange((r) => {
        if (r === null || performance.now() - this.userAt > 1000) return;
        this.follow = r.to < this.gridCount - 2 ? null : (r.from <= 0.5 ? "all" : "edge");
      });
    }

    gapBetween(a, b) {
      return this.gaps.some((g) => g.start < b && this.gapEnd(g) > a);
    }

    gapEnd(g) {
      return g.end === null ? Math.min(Date.now() * 1000, this.gridEnd) : g.end;
    }

    // A gap event: {feed, start, end|null}; end null while the feed is still down. Gaps of
    // several feeds that overlap (and the history's) are merged, as data.py's merge_gaps does.
    applyGap(e) {
      this.liveGaps[e.feed + "\u0000" + e.start] = { start: e.start, end: e.end, feeds: [e.feed], reasons: [] };
      this.extendGrid(this.bucketOf(e.end === null ? e.start : e.end));  // the time axis reaches the gap
      this.gaps = mergeGaps([...this.historyGaps, ...Object.values(this.liveGaps)]);
      this.chart.applyOptions({});  // redraw
    }

    setGaps(gaps) {
      this.historyGaps = gaps;
      this.gaps = mergeGaps([...gaps, ...Object.values(this.liveGaps)]);
      this.chart.applyOptions({});  // redraw
    }

    remove() {
      this.chart.remove();
    }

    stats() {
      const series = Object.entries(this.lines).map(([label, line]) => ({
        label: label, points: line.data().filter((d) => d.value !== undefined).length,
        breaks: line.data().filter((d) => d.color === BREAK).length,
      }));
      const gaps = this.gaps.map((g) => ({ start: g.start, end: g.end, label: g.label, x0: this.x(g.start),
        x1: this.x(this.gapEnd(g)) }));
      return { series: series, gaps: gaps, grid: this.gridCount, follow: this.follow,
        volume: this.volume ? this.volume.data().length : 0, width: this.chart.timeScale().width(),
        received: this.received };
    }
  }

  window.RecorderChart = { draw: (element, data) => new Chart(element, data), duration: duration };
})();
