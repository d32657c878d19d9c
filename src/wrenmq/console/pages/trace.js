// Trace: follow one client id or one topic filter live (GET /api/v1/trace, Server-Sent Events read
// with fetch, so the key goes in the Authorization header and not in the URL): its connects,
// disconnects (MQTT and browser realtime clients), subscriptions, messages and what the broker drops
// (with the reason), as the broker's hooks see them. For callers that manage
// (app.js leaves the page out of the menu otherwise). Leaving the page ends the trace.
// #/trace/<client id> (the Clients page's "Trace" link) starts following that client at once.
//
// A flood must never freeze the page: events are only queued as they arrive (bounded), and drawn
// once per animation frame (ctx.batch), keeping the newest MAX_ROWS rows in the DOM.

export const title = "Trace";

export const MAX_ROWS = 500;

function clock(seconds) {
  const date = new Date(seconds * 1000);
  return date.toLocaleTimeString("en-GB", { hour12: false }) + "." + String(date.getMilliseconds()).padStart(3, "0");
}

// Why the broker dropped something (hooks.DropReason), in words.
export const DROP_REASONS = {
  queue_full: "queue full",
  expired: "message expired",
  offline: "QoS 0 while the client is away",
  congested: "QoS 0 to a congested client",
  too_large: "over the client's maximum packet size",
  publish_denied: "publish denied",
  topic_limits: "topic beyond the broker's limits",
  rejected: "refused by a hook",
  subscribe_denied: "subscription denied",
  subscribe_quota: "too many subscriptions",
  slow_consumer: "disconnected as a slow consumer",
};

const TRANSPORTS = { socketio: "Socket.IO", poll: "long polling" };

function detail(e) {
  const via = TRANSPORTS[e.transport];
  switch (e.event) {
    case "connect":
      if (via) return [via, e.username ? "user " + e.username : "no user name", e.peer].join(" · ");
      return [e.username ? "user " + e.username : "no user name", e.peer, "MQTT " + ({ 3: "3.1", 4: "3.1.1", 5: "5" }[e.protocol] || e.protocol),
        e.clean_start ? "clean start" : "session kept", "keep alive " + e.keep_alive + " s"].join(" · ");
    case "disconnect":
      return (via ? via + " · " : "") + (e.expected ? "normal disconnect" : "unexpected") + (e.reason ? " · " + e.reason : "");
    case "drop":
      return [DROP_REASONS[e.reason] || e.reason, e.topic, e.detail, e.qos === undefined ? null : "QoS " + e.qos,
        e.bytes === undefined ? null : e.bytes + " bytes"].filter((part) => part !== null && part !== undefined && part !== "").join(" · ");
    case "subscribe": return e.topic_filter + " · QoS " + e.qos;
    case "unsubscribe": return e.topic_filter;
    case "publish": return e.topic + " · QoS " + e.qos + (e.retain ? " · retained" : "") + " · " + e.bytes + " bytes";
    case "deliver": return e.topic + " · QoS " + e.qos + " · " + e.bytes + " bytes";
    default: return "";
  }
}

// SSE text -> events ({event, data}); returns what is left over (an event not yet complete).
function parse(text, each) {
  const blocks = text.split("\n\n");
  const rest = blocks.pop();
  for (const block of blocks) {
    const event = { event: "message", data: "" };
    for (const line of block.split("\n")) {
      const at = line.indexOf(":");
      if (at <= 0) continue;  // a comment (keep-alive), or nothing
      const field = line.slice(0, at), value = line.slice(at + 1).replace(/^ /, "");
      if (field === "event") event.event = value;
      else if (field === "data") event.data += value;
    }
    if (event.data) each(event);
  }
  return rest;
}

export function render(root, ctx) {
  const { h, toast, fmt } = ctx;
  let controller = null;     // the open trace's AbortController
  let pending = [];          // events waiting to be drawn
  let received = 0, lost = 0, paused = false, held = 0;

  const kind = h("select", { id: "trace-kind" }, h("option", { value: "client_id" }, "client id"),
    h("option", { value: "filter" }, "topic filter"));
  const target = h("input", { id: "trace-target", autocomplete: "off", placeholder: "sensor-01" });
  kind.addEventListener("change", () => { target.placeholder = kind.value === "filter" ? "sensors/#" : "sensor-01"; });
  const startButton = h("button", { type: "submit", class: "primary", id: "trace-start" }, "Start");
  const stopButton = h("button", { type: "button", id: "trace-stop", hidden: true, onclick: stop }, "Stop");
  const error = h("p", { class: "error", role: "alert" });
  const state = h("span", { class: "badge", id: "trace-state", role: "status" }, "stopped");
  const form = h("form", { class: "card stack", id: "trace-form", onsubmit: (event) => { event.preventDefault(); start(); } },
    h("div", { class: "row us-form" },
      h("div", { class: "us-field tr-kind" }, h("label", { for: "trace-kind" }, "Follow"), kind),
      h("div", { class: "us-field" }, h("label", { for: "trace-target" }, "Client id or topic filter"), target),
      startButton, stopButton, state),
    h("p", { class: "muted" }, "Connects (MQTT, Socket.IO, long polling), disconnects, subscriptions, publishes, deliveries and drops with their reason, as they happen; never payloads."),
    error);
  const counter = h("span", { class: "muted", id: "trace-counter", role: "status" });
  const pauseButton = h("button", { type: "button", id: "trace-pause", onclick: () => setPaused(!paused) }, "Pause");
  const list = h("ol", { class: "tr-events", id: "trace-events", "aria-label": "Trace events" });
  const empty = h("p", { class: "muted" }, "No events yet.");
  root.append(h("h1", {}, "Trace"), h("div", { class: "stack" }, form,
    h("div", { class: "card stack" }, h("div", { class: "row tr-head" }, h("h2", {}, "Events"), counter, pauseButton,
      h("button", { type: "button", id: "trace-clear", onclick: () => { pending = []; list.replaceChildren(); received = lost = held = 0; draw(); } }, "Clear")),
    empty, list)));

  function row(e) {
    return h("li", { class: "tr-event", dataset: { event: e.event } },
      h("time", { class: "muted mono" }, clock(e.at)),
      h("span", { class: "badge tr-kind-" + e.event }, e.event),
      h("code", { class: "tr-client" }, e.client_id === null ? "(broker)" : e.client_id),
      h("span", { class: "tr-detail" }, detail(e)));
  }

  const draw = ctx.batch(() => {
    if (!paused && pending.length) {
      if (pending.length > MAX_ROWS) pending = pending.slice(-MAX_ROWS);
      const fragment = document.createDocumentFragment();
      for (let i = pending.length - 1; i >= 0; i--) fragment.append(row(pending[i]));
      pending = [];
      list.prepend(fragment);
      while (list.childElementCount > MAX_ROWS) list.lastElementChild.remove();
    }
    empty.hidden = list.childElementCount > 0;
    let text = `${fmt.number(received)} events · ${fmt.number(list.childElementCount)} shown (newest ${MAX_ROWS} kept)`;
    if (lost) text += ` · ${fmt.number(lost)} lost by a slow reader`;
    if (paused) text += ` · paused: ${fmt.number(held)} waiting`;
    counter.textContent = text;
    counter.dataset.received = String(received);
  });

  function setPaused(value) {
    paused = value;
    held = 0;
    pauseButton.textContent = paused ? "Resume" : "Pause";
    pauseButton.setAttribute("aria-pressed", String(paused));
    draw();
  }

  function onEvent(event) {
    if (event.event === "tracing") { state.textContent = "tracing"; state.className = "badge ok"; return; }
    if (event.event === "dropped") { lost += JSON.parse(event.data).dropped; draw(); return; }
    if (event.event !== "trace") return;
    received += 1;
    pending.push(JSON.parse(event.data));
    if (pending.length > 2 * MAX_ROWS) pending.splice(0, pending.length - MAX_ROWS);  // bounded while paused
    if (paused) held += 1;
    draw();
  }

  async function start() {
    error.textContent = "";
    const value = target.value.trim();
    if (!value) { error.textContent = "Say which client id or topic filter to follow."; target.focus(); return; }
    stop();
    const mine = controller = new AbortController();
    const url = new URL("/api/v1/trace", location.origin);
    url.searchParams.set(kind.value, value);
    state.textContent = "starting";
    state.className = "badge";
    startButton.hidden = true;
    stopButton.hidden = false;
    try {
      const response = await fetch(url, { headers: { Authorization: "Bearer " + sessionStorage.getItem("wrenmq.console.key") },
                                         signal: mine.signal });
      if (!response.ok) {
        const body = await response.json().catch(() => ({}));
        throw new Error(body.detail || response.statusText);
      }
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffered = "";
      for (;;) {
        const { value: chunk, done } = await reader.read();
        if (done) break;
        buffered = parse(buffered + decoder.decode(chunk, { stream: true }), onEvent);
      }
      if (controller === mine) { error.textContent = "The broker ended the trace."; }
    } catch (err) {
      if (err.name !== "AbortError" && controller === mine) error.textContent = "The trace stopped: " + err.message;
    }
    if (controller === mine) finish();
  }

  function finish() {
    controller = null;
    state.textContent = "stopped";
    state.className = "badge";
    startButton.hidden = false;
    stopButton.hidden = true;
  }

  function stop() {
    if (controller) { const open = controller; controller = null; open.abort(); finish(); }
  }

  draw();
  const asked = location.hash.replace(/^#\/?trace\/?/, "");
  if (asked) {
    try { target.value = decodeURIComponent(asked); } catch (e) { target.value = asked; }
    start();
  } else {
    target.focus();
  }
  return stop;
}
