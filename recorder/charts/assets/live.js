/* The live page: the feeds and their state, and a chart of one market that extends as points
 * arrive. The daemon's side of the contract is documented in recorder/charts/page.py:
 * GET /api/feeds, GET /api/chart?market=..&venue=.., GET /api/stream?market=..&venue=.. (SSE:
 * point, gap, feeds). Drawing is RecorderChart (chart.js), the same code as `recorder chart`.
 */
(function () {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const state = { market: null, venue: null, chart: null, source: null, opened: false, feedsAt: 0, reloads: 0 };

  function query(params) {
    return Object.entries(params).filter(([, v]) => v !== null && v !== undefined)
      .map(([k, v]) => encodeURIComponent(k) + "=" + encodeURIComponent(v)).join("&");
  }

  function age(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    return seconds < 10 ? seconds.toFixed(1) + " s ago" : Math.round(seconds) + " s ago";
  }

  function renderFeeds(doc) {
    state.feedsAt = Date.now();
    const body = $("feeds");
    body.textContent = "";
    for (const f of doc.feeds) {
      const tr = document.createElement("tr");
      const cells = [f.name, f.venue, f.state, age(f.last_frame_age), String(f.frames)];
      cells.forEach((text, i) => {
        const td = document.createElement("td");
        td.textContent = text;
        if (i === 2) td.className = "state-" + String(f.state).replace(/\s+/g, "-");
        tr.appendChild(td);
      });
      const td = document.createElement("td");
      for (const m of f.markets || []) {
        const b = document.createElement("button");
        b.className = "market" + (m === state.market && f.venue === state.venue ? " current" : "");
        b.textContent = m;
        b.addEventListener("click", () => openMarket(m, f.venue));
        td.appendChild(b);
      }
      tr.appendChild(td);
      body.appendChild(tr);
    }
    $("status").textContent = doc.feeds.length + " feeds · updated " + new Date(doc.now / 1000).toISOString().slice(11, 19) + " UTC";
    if (state.market === null) {
      const first = doc.feeds.find((f) => (f.markets || []).length);
      if (first) openMarket(first.markets[0], first.venue);
    }
  }

  async function loadFeeds() {
    try {
      const r = await fetch("/api/feeds");
      if (r.ok) renderFeeds(await r.json());
    } catch (e) {
      $("status").textContent = "daemon unreachable: " + e.message;
    }
  }

  async function loadChart() {
    const r = await fetch("/api/chart?" + query({ market: state.market, venue: state.venue }));
    const doc = await r.json();
    if (!r.ok) {  // e.g. nothing recorded yet: the first streamed point reloads
      $("error").textContent = doc.error || ("HTTP " + r.status);
      if (state.chart) { state.chart.remove(); state.chart = null; }
      return;
    }
    $("error").textContent = "";
    if (state.chart) state.chart.remove();
    state.chart = RecorderChart.draw($("chart"), doc);
    window.recorderChart = state.chart;
    $("title").textContent = doc.title;
  }

  function openStream() {
    if (state.source) state.source.close();
    state.opened = false;
    const source = new EventSource("/api/stream?" + query({ market: state.market, venue: state.venue }));
    source.addEventListener("open", () => {
      if (state.opened) loadChart();  // a reconnect: fetch the history again, nothing is missed
      state.opened = true;
    });
    source.addEventListener("point", (e) => {
      if (!state.chart || !state.chart.addPoint(JSON.parse(e.data))) reloadSoon();  // no chart yet, or a new series
    });
    source.addEventListener("gap", (e) => { if (state.chart) state.chart.applyGap(JSON.parse(e.data)); });
    source.addEventListener("feeds", (e) => renderFeeds(JSON.parse(e.data)));
    state.source = source;
  }

  let reloadTimer = null;
  function reloadSoon() {  // a series the chart does not have yet: redraw from the history once
    if (reloadTimer !== null) return;
    reloadTimer = setTimeout(() => { reloadTimer = null; state.reloads += 1; loadChart(); }, 1000);
  }

  async function openMarket(market, venue) {
    state.market = market;
    state.venue = venue || null;
    history.replaceState(null, "", "#" + query({ market: market, venue: venue }));
    await loadChart();
    openStream();
  }

  function fromHash() {
    const params = new URLSearchParams(location.hash.slice(1));
    return params.get("market") ? { market: params.get("market"), venue: params.get("venue") } : null;
  }

  window.recorderLive = { openMarket: openMarket, state: state };
  const wanted = fromHash();
  if (wanted) openMarket(wanted.market, wanted.venue);  // sets state.market at once: the feeds do not pick one
  loadFeeds();
  setInterval(() => { if (Date.now() - state.feedsAt > 3000) loadFeeds(); }, 2000);  // when no stream brings them
})();
