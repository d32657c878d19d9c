// A connection's "Messages" card. A flood must never freeze the page: messages are only queued as
// they arrive (bounded), and drawn once per animation frame (ctx.batch), keeping the newest
// MAX_ROWS rows in the DOM. Filter, pause (messages held, bounded, drawn on resume), show as.

import { FORMATS, FORMAT_NAMES, propertyText, showPayload } from "../../payload.js";
import { labelled } from "./fields.js";

export const MAX_ROWS = 500;           // message rows kept in the DOM per connection

function clock(date) {
  return date.toLocaleTimeString("en-GB", { hour12: false }) + "." + String(date.getMilliseconds()).padStart(3, "0");
}

function matches(text, filter) { return !filter || text.includes(filter); }

export function messagesCard(ctx, conn) {
  const { h } = ctx;
  const n = conn.n;
  const list = h("ol", { class: "mqtt-messages", "aria-label": "Messages received" });
  const empty = h("p", { class: "muted mqtt-empty" }, "No messages yet: subscribe to a filter to see messages here.");
  const counter = h("span", { class: "muted mqtt-counter", role: "status" });
  const filterInput = h("input", { id: `mqtt-filter-${n}`, type: "search", placeholder: "topic or payload text",
                                   autocomplete: "off" });
  const pauseButton = h("button", { type: "button", class: "mqtt-pause", onclick: () => setPaused(!conn.paused) }, "Pause");
  const viewSelect = h("select", { id: `mqtt-view-${n}` },
    ...["auto", ...FORMATS].map((f) => h("option", { value: f }, FORMAT_NAMES[f])));
  viewSelect.addEventListener("change", () => {  // redraw the payloads shown, in the new format
    conn.view = viewSelect.value;
    for (const row of list.children) {
      const shown = showPayload(row._message.payload, conn.view);
      const pre = row.querySelector(".mqtt-payload");
      pre.textContent = shown.text;
      pre.dataset.kind = shown.kind;
      row._search = (row._message.topic + "\n" + shown.text).toLowerCase();
      row.hidden = !matches(row._search, conn.filter);
    }
  });
  filterInput.addEventListener("input", () => {
    conn.filter = filterInput.value.toLowerCase();
    for (const row of list.children) row.hidden = !matches(row._search, conn.filter);
    draw();
  });
  const card = h("div", { class: "card stack mqtt-messages-card" },
    h("div", { class: "row mqtt-messages-head" }, h("h2", {}, "Messages"), counter),
    h("div", { class: "row mqtt-inline" }, labelled(h, filterInput, "Filter", "mqtt-grow"), labelled(h, viewSelect, "Show as"),
      pauseButton,
      h("button", { type: "button", class: "mqtt-clear", onclick: () => {
        conn.pending = []; conn.held = []; conn.heldCount = 0; conn.dropped = 0; conn.received = 0;
        list.replaceChildren(); draw();
      } }, "Clear")),
    empty, list);

  function setPaused(paused) {
    conn.paused = paused;
    pauseButton.textContent = paused ? "Resume" : "Pause";
    pauseButton.setAttribute("aria-pressed", String(paused));
    if (!paused) {
      for (const m of conn.held) conn.pending.push(m);
      conn.held = [];
      conn.heldCount = 0;
      trim(conn.pending);
    }
    draw();
  }

  function trim(queue) {  // keep only what could still be shown
    if (queue.length > MAX_ROWS) conn.dropped += queue.splice(0, queue.length - MAX_ROWS).length;
  }

  conn.onMessage = (topic, payload, packet) => {
    conn.received += 1;
    const message = { topic, payload, qos: packet.qos, retain: packet.retain, properties: packet.properties, at: new Date() };
    if (conn.paused) {
      conn.heldCount += 1;
      conn.held.push(message);
      if (conn.held.length > 2 * MAX_ROWS) trim(conn.held);
    } else {
      conn.pending.push(message);
      if (conn.pending.length > 2 * MAX_ROWS) trim(conn.pending);
    }
    draw();
  };

  const draw = ctx.batch(() => {
    // A tab in the background (or the page, while another is open) only counts; its rows are
    // drawn when it is shown.
    if (!conn.paused && conn.pending.length && !conn.panel.hidden && conn.panel.isConnected) {
      trim(conn.pending);
      const fragment = document.createDocumentFragment();
      for (let i = conn.pending.length - 1; i >= 0; i--) fragment.append(messageRow(h, conn.pending[i], conn.filter, conn.view));
      conn.pending = [];
      list.prepend(fragment);
      while (list.childElementCount > MAX_ROWS) { list.lastElementChild.remove(); conn.dropped += 1; }
    }
    const rows = list.childElementCount;
    empty.hidden = rows > 0;
    let text = `${ctx.fmt.number(conn.received)} received · ${ctx.fmt.number(rows)} shown`;
    if (conn.pending.length && !conn.paused) text += ` · ${ctx.fmt.number(conn.pending.length)} to draw`;
    if (conn.dropped) text += ` · ${ctx.fmt.number(conn.dropped)} older dropped from the list (newest ${MAX_ROWS} kept)`;
    if (conn.paused) text += ` · paused: ${ctx.fmt.number(conn.heldCount)} waiting`;
    if (conn.filter) text += " · filtered";
    counter.textContent = text;
    counter.dataset.received = String(conn.received);
    counter.dataset.dropped = String(conn.dropped);
    counter.dataset.held = String(conn.heldCount);
  });
  conn.draw = draw;
  return card;
}

function messageRow(h, m, filter, view) {
  const shown = showPayload(m.payload, view);
  const row = h("li", { class: "mqtt-message" },
    h("div", { class: "row mqtt-message-head" },
      h("code", { class: "mqtt-topic" }, m.topic),
      h("span", { class: "badge mqtt-qos" }, "QoS " + m.qos),
      m.retain ? h("span", { class: "badge mqtt-retain" }, "retained") : null,
      shown.kind === "binary" || view === "hex" || view === "base64"
        ? h("span", { class: "badge" }, (shown.kind === "binary" ? "binary · " : "") + m.payload.length + " bytes") : null,
      h("time", { class: "muted", datetime: m.at.toISOString() }, clock(m.at))),
    h("pre", { class: "mqtt-payload", dataset: { kind: shown.kind } }, shown.text),
    m.properties && Object.keys(m.properties).length
      ? h("dl", { class: "mqtt-properties" }, Object.entries(m.properties).flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, propertyText(v))]))
      : null);
  row._search = (m.topic + "\n" + shown.text).toLowerCase();
  row._message = m;
  if (filter && !matches(row._search, filter)) row.hidden = true;
  return row;
}
