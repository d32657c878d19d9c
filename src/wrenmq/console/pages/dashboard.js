// Dashboard: the broker at a glance, live.
//
// GET /api/v1/broker/status every POLL_MS gives the counters; the "per second" cards are the
// differences between two polls (a counter that went down, after a restart, counts as 0). The
// charts (uPlot, global `uPlot`) show the history the broker keeps itself (GET
// /api/v1/metrics/history: a sample every 10 s for 24 h by default), so they open on the last hour
// (or 5 minutes, or 24 hours: the range picker) even after a reload; the range is fetched again
// each time a new point is due. External broker connections come from GET /api/v1/brokers.

export const title = "Dashboard";

export const POLL_MS = 2000;
export const RANGES = { "5 min": 300, "1 h": 3600, "24 h": 86400 };  // what the charts can show
const RANGE = "wrenmq.console.dashboard.range";
const MAX_POINTS = 720;                                  // per chart: wider ranges are averaged by the broker
const CHART_HEIGHT = 200;
const MIN_SPAN_S = 30;

function duration(seconds) {
  const s = Math.floor(seconds);
  const d = Math.floor(s / 86400), hh = Math.floor((s % 86400) / 3600), mm = Math.floor((s % 3600) / 60);
  if (d) return d + " d " + hh + " h";
  if (hh) return hh + " h " + mm + " min";
  if (mm) return mm + " min " + (s % 60) + " s";
  return s + " s";
}

export function render(root, ctx) {
  const { h, api, fmt } = ctx;
  let closed = false;
  const timers = [];
  const charts = [];

  // -- stat cards --------------------------------------------------------------------------------
  const stats = {};
  const stat = (key, label) => {
    const value = h("div", { class: "value", id: "stat-" + key }, "–");
    const note = h("div", { class: "label dash-note" });
    stats[key] = { value, note };
    return h("div", { class: "card stat" }, h("div", { class: "label" }, label), value, note);
  };
  const cards = h("div", { class: "grid dash-stats" },
    stat("connections", "Connections now"), stat("sessions", "Sessions"), stat("subscriptions", "Subscriptions"),
    stat("retained", "Retained messages"), stat("queued", "Queued messages"), stat("dropped", "Dropped messages"),
    stat("in", "Messages in / s"), stat("out", "Messages out / s"), stat("uptime", "Uptime"));
  const problem = h("p", { class: "error", role: "alert", hidden: true });
  const meta = h("p", { class: "muted dash-meta" }, "Loading…");

  // -- charts ------------------------------------------------------------------------------------
  let windowS = RANGES[localStorage.getItem(RANGE)] || RANGES["1 h"];
  const rangeSelect = h("select", { id: "dash-range", "aria-label": "Chart range",
    onchange: () => { localStorage.setItem(RANGE, rangeSelect.value); windowS = RANGES[rangeSelect.value]; loadHistory(); } },
    ...Object.entries(RANGES).map(([label, seconds]) => h("option", { value: label, selected: seconds === windowS }, "last " + label)));
  const historyNote = h("p", { class: "muted dash-history-note" });
  const chartBox = (id, heading) => {
    const box = h("div", { class: "dash-chart", id });
    return [box, h("div", { class: "card dash-chart-card" }, h("h2", {}, heading), box)];
  };
  const [msgBox, msgCard] = chartBox("chart-messages", "Messages per second");
  const [byteBox, byteCard] = chartBox("chart-bytes", "Bytes per second");

  function makeChart(box, names, format, floor) {
    if (typeof uPlot !== "function") {
      box.append(h("p", { class: "error" }, "The chart library (uPlot) did not load."));
      return null;
    }
    const style = getComputedStyle(document.documentElement);
    // Axis colours are read at each redraw, so a theme switch (app.js: "wrenmq:theme") applies.
    const themed = (name) => () => getComputedStyle(document.documentElement).getPropertyValue(name).trim();
    const colors = [style.getPropertyValue("--accent").trim() || "#2f6f8f", style.getPropertyValue("--ok").trim() || "#2e7d4f"];
    const chart = new uPlot({
      width: Math.max(200, box.clientWidth),
      height: CHART_HEIGHT,
      scales: {
        // The newest point at the right edge; the span grows with the data to the chosen range (at least MIN_SPAN_S).
        // (From the data itself: for a single point uPlot offers a span of 1000 days.)
        x: { time: true, range: (u) => {
          const t = u.data[0];
          const end = t && t.length ? t[t.length - 1] : Date.now() / 1000;
          const start = t && t.length ? t[0] : end;
          return [Math.max(end - windowS, Math.min(start, end - MIN_SPAN_S)), end];
        } },
        y: { range: (u, min, max) => [0, Math.max(floor, (max || 0) * 1.15)] },
      },
      axes: [
        { stroke: themed("--chart-axis"), grid: { stroke: themed("--chart-grid") }, space: 70, values: (u, ticks) => ticks.map((t) => fmt.time(t)) },
        { stroke: themed("--chart-axis"), grid: { stroke: themed("--chart-grid") }, size: 60, values: (u, ticks) => ticks.map(format) },
      ],
      series: [
        {},
        { label: names[0], stroke: colors[0], width: 2, fill: colors[0] + "14", value: (u, v) => (v == null ? "–" : format(v)) },
        { label: names[1], stroke: colors[1], width: 2, value: (u, v) => (v == null ? "–" : format(v)) },
      ],
      legend: { live: true },
      cursor: { drag: { x: false, y: false } },
    }, [[], [], []], box);
    charts.push({ chart, box });
    return chart;
  }

  const resize = () => {
    for (const { chart, box } of charts) {
      const width = Math.max(200, box.clientWidth);
      if (Math.abs(width - chart.width) > 1) chart.setSize({ width, height: CHART_HEIGHT });
    }
  };
  const observer = typeof ResizeObserver === "function" ? new ResizeObserver(ctx.batch(resize)) : null;

  // -- listeners and external brokers -------------------------------------------------------------
  const listenerRows = h("tbody", {});
  const listeners = h("div", { class: "card stack" }, h("h2", {}, "Listeners"),
    h("div", { class: "table-wrap" }, h("table", { id: "listener-table" },
      h("thead", {}, h("tr", {}, ...["Listener", "Type", "Address", "State", "Connections", "Accepted"].map(
        (t) => h("th", { scope: "col" }, t)))),
      listenerRows)));
  const brokerRows = h("tbody", {});
  const brokerEmpty = h("p", { class: "muted", hidden: true },
    "No external broker connections. Add one on the External brokers page, or in the config file ([[brokers]]).");
  const brokerTable = h("div", { class: "table-wrap" }, h("table", { id: "broker-table" },
    h("thead", {}, h("tr", {}, ...["Broker", "State", "In", "Out", "Queued", "Last error"].map(
      (t) => h("th", { scope: "col" }, t)))),
    brokerRows));
  const brokers = h("div", { class: "card stack" }, h("h2", {}, "External brokers"), brokerEmpty, brokerTable);

  root.append(h("div", { class: "stack" },
    h("div", { class: "row dash-head" }, h("h1", {}, "Dashboard"), meta),
    problem, cards,
    h("div", { class: "row dash-range" }, h("label", { for: "dash-range" }, "Charts"), rangeSelect, historyNote),
    h("div", { class: "dash-charts" }, msgCard, byteCard),
    h("div", { class: "dash-tables" }, listeners, brokers)));

  const msgChart = makeChart(msgBox, ["in", "out"], (v) => fmt.rate(v), 5);
  const byteChart = makeChart(byteBox, ["in", "out"], (v) => fmt.bytes(Math.round(v)), 1024);
  if (observer) for (const { box } of charts) observer.observe(box);
  window.addEventListener("resize", resize);

  // -- history (the charts) -----------------------------------------------------------------------
  let nextHistory = 0;   // when (ms) a new point is due and the range is fetched again
  let loading = false;

  async function loadHistory() {
    if (loading) return;
    loading = true;
    try {
      const step = windowS / MAX_POINTS;  // the broker rounds it up to whole samples
      const found = await api("metrics/history", { query: { seconds: windowS, step } });
      if (closed) return;
      nextHistory = Date.now() + Math.max(found.step, 1) * 1000;
      if (msgChart) msgChart.setData([found.t, found.messages_in, found.messages_out]);
      if (byteChart) byteChart.setData([found.t, found.bytes_in, found.bytes_out]);
      for (const box of [msgBox, byteBox]) {
        box.dataset.points = String(found.t.length);
        box.dataset.first = found.t.length ? String(found.t[0]) : "";
      }
      msgBox.dataset.peak = String(Math.max(0, ...found.messages_in));
      const kept = found.retention >= 3600 ? Math.round(found.retention / 3600) + " h" : Math.round(found.retention / 60) + " min";
      historyNote.textContent = `kept by the broker: a sample every ${found.interval} s for ${kept}` +
        (found.step > found.interval ? `; ${Math.round(found.step)} s averages shown` : "");
    } catch (err) {
      if (!closed && err.status !== 401) historyNote.textContent = "The history could not be read: " + (err.detail || err.message);
      nextHistory = Date.now() + 10_000;
    } finally {
      loading = false;
    }
  }

  // -- polling ------------------------------------------------------------------------------------
  let previous = null;  // { at (ms), counts }

  function push(at, counts) {
    if (previous) {
      const dt = (at - previous.at) / 1000;
      const rate = (key) => Math.max(0, counts[key] - previous.counts[key]) / dt;
      if (dt > 0) {
        stats.in.value.textContent = fmt.rate(rate("messages_received"));
        stats.out.value.textContent = fmt.rate(rate("messages_sent"));
      }
    }
    previous = { at, counts };
    if (Date.now() >= nextHistory) loadHistory();
  }

  function showStatus(status) {
    const c = status.counts;
    for (const key of ["connections", "sessions", "subscriptions", "retained", "queued"]) {
      stats[key].value.textContent = fmt.number(c[key]);
    }
    stats.dropped.value.textContent = fmt.number(c.messages_dropped);
    stats.dropped.note.textContent = c.messages_expired ? fmt.number(c.messages_expired) + " expired" : "";
    stats.uptime.value.textContent = duration(status.uptime);
    stats.connections.note.textContent = fmt.number(c.clients_total) + " since start";
    meta.textContent = "wrenmq " + status.version + " · " + (status.running ? "running" : "stopped") +
      " · hot path " + status.hot_path + " · updated " + fmt.time(Date.now() / 1000);
    const rows = status.listeners.map((l) => h("tr", {},
      h("td", {}, l.name), h("td", {}, l.type), h("td", { class: "mono" }, l.url),
      h("td", {}, h("span", { class: "badge " + (l.listening ? "ok" : "bad") }, l.listening ? "listening" : "stopped")),
      h("td", {}, fmt.number(l.connections)), h("td", {}, fmt.number(l.connections_total))));
    listenerRows.replaceChildren(...(rows.length ? rows
      : [h("tr", {}, h("td", { colspan: "6", class: "muted" }, "No listeners are bound."))]));
  }

  function showBrokers(list) {
    brokerEmpty.hidden = list.length > 0;
    brokerTable.hidden = list.length === 0;
    brokerRows.replaceChildren(...list.map((b) => h("tr", {},
      h("td", {}, h("div", {}, b.name), h("div", { class: "muted mono" }, b.url)),
      h("td", {}, h("span", { class: "badge " + (b.connected ? "ok" : b.state === "stopped" ? "bad" : "") }, b.state),
        b.state === "reconnecting" && b.next_attempt_at ? h("div", { class: "muted" }, "next " + fmt.time(b.next_attempt_at)) : null),
      h("td", {}, fmt.number(b.messages_in)), h("td", {}, fmt.number(b.messages_out)),
      h("td", {}, fmt.number(b.queued), b.dropped ? h("div", { class: "muted" }, fmt.number(b.dropped) + " dropped") : null),
      h("td", { class: "dash-error" }, b.last_error || b.subscribe_error || "–"))));
  }

  async function poll() {
    try {
      const [status, external] = await Promise.all([api("broker/status"), api("brokers")]);
      if (closed) return;
      problem.hidden = true;
      showStatus(status);
      push(Date.now(), status.counts);
      showBrokers(external.brokers);
    } catch (err) {
      if (closed || err.status === 401) return;
      problem.hidden = false;
      problem.textContent = "The broker's status could not be read: " + err.message;
    }
  }

  poll();
  timers.push(setInterval(poll, POLL_MS));
  const retheme = () => { for (const { chart } of charts) chart.redraw(false, true); };
  window.addEventListener("wrenmq:theme", retheme);

  return () => {
    closed = true;
    window.removeEventListener("wrenmq:theme", retheme);
    for (const timer of timers) clearInterval(timer);
    window.removeEventListener("resize", resize);
    if (observer) observer.disconnect();
    for (const { chart } of charts) chart.destroy();
  };
}
