// The MQTT client console: connect with MQTT.js (global `mqtt`) over WebSocket to this wrenmq or any
// broker, one tab per connection; subscribe, publish (with MQTT 5 properties) and watch messages live.
// This module is the page's shell (the tabs, one panel per connection with its status bar); each
// card is a module of its own under mqtt/: the connection form (connect-form.js, with saved.js),
// subscriptions.js, publish.js, messages.js, and client.js for the MQTT.js client they share.
//
// The connections outlive the page: leaving it only detaches its elements (kept below, in `kept`),
// and coming back puts them back with every connection, subscription and message as it was, as a
// desktop MQTT client would. Signing out (app.js calls forget()) closes them.

import { connect, disconnect } from "./mqtt/client.js";
import { connectForm } from "./mqtt/connect-form.js";
import { messagesCard } from "./mqtt/messages.js";
import { publishCard } from "./mqtt/publish.js";
import { subscriptionsCard } from "./mqtt/subscriptions.js";

export { parseUserProperties, topicFilterError, topicNameError } from "./mqtt/fields.js";
export { MAX_ROWS } from "./mqtt/messages.js";

export const title = "MQTT client";

let kept = null;  // {el, shown, close}: the page while the console is signed in

export function render(root, ctx) {
  if (!kept) kept = build(ctx);
  root.append(kept.el);
  kept.shown();
  return () => kept && kept.el.remove();  // the connections stay up, and keep receiving
}

// Close every connection (a normal DISCONNECT) and drop the kept page: on sign-out.
export function forget() {
  if (kept) { kept.close(); kept.el.remove(); kept = null; }
}

function build(ctx) {
  const { h } = ctx;
  const root = h("div", { class: "mqtt-page" });
  const connections = [];
  let active = null;          // the shown connection, or null for the "new connection" form
  let serial = 0;
  let left = false;

  const tabBar = h("div", { class: "tabs mqtt-tabs", role: "tablist", "aria-label": "MQTT connections" });
  const newTab = h("button", { type: "button", role: "tab", id: "mqtt-tab-new", "aria-controls": "mqtt-new",
                               onclick: () => show(null) }, "+ New connection");
  tabBar.append(newTab);
  const panels = h("div", { class: "mqtt-panels" });
  const form = connectForm(ctx, {
    open: (settings) => { openConnection(settings); return "connection " + (serial + 1); },
    isLeft: () => left,
  });
  panels.append(form.el);
  root.append(h("h1", {}, "MQTT client"), tabBar, panels);
  show(null);

  function show(conn) {
    active = conn;
    newTab.setAttribute("aria-selected", String(conn === null));
    form.el.hidden = conn !== null;
    for (const one of connections) {
      one.tab.setAttribute("aria-selected", String(one === conn));
      one.panel.hidden = one !== conn;
    }
    if (conn) conn.draw();
  }

  function openConnection(settings) {
    serial += 1;
    const n = serial;
    const v5 = settings.options.protocolVersion === 5;
    const conn = {
      ctx, n, name: settings.name, url: settings.url, options: settings.options, v5, client: null,
      state: "connecting", error: "", subs: new Map(), pending: [], held: [], paused: false, heldCount: 0,
      received: 0, dropped: 0, filter: "", view: "auto",
    };

    const dot = h("span", { class: "mqtt-dot", "aria-hidden": "true" });
    conn.tab = h("button", { type: "button", role: "tab", id: `mqtt-tab-${n}`, "aria-controls": `mqtt-conn-${n}`,
                             class: "mqtt-tab", dataset: { state: "connecting" }, onclick: () => show(conn) },
      dot, settings.name, h("span", { class: "mqtt-version" }, v5 ? " · MQTT 5" : " · MQTT 3.1.1"));
    tabBar.insertBefore(conn.tab, newTab);

    conn.panel = h("section", { class: "stack mqtt-connection", id: `mqtt-conn-${n}`, role: "tabpanel",
                                "aria-labelledby": conn.tab.id, dataset: { connection: String(n) } },
      statusBar(conn),
      h("div", { class: "mqtt-columns" },
        h("div", { class: "stack" }, subscriptionsCard(ctx, conn), publishCard(ctx, conn)),
        messagesCard(ctx, conn)));
    panels.append(conn.panel);
    connections.push(conn);
    conn.drawSubs();
    conn.draw();
    show(conn);
    connect(conn);
  }

  // The connection's state, always visible at the top of its tab.
  function statusBar(conn) {
    const statusBadge = h("span", { class: "badge mqtt-state", role: "status", "aria-live": "polite" });
    const statusError = h("span", { class: "error mqtt-status-error" });
    const reconnectButton = h("button", { type: "button", onclick: () => connect(conn) }, "Connect again");
    const disconnectButton = h("button", { type: "button", onclick: () => { conn.stopping = true; conn.client?.end(); } },
      "Disconnect");
    const bar = h("div", { class: "card row mqtt-status" },
      h("strong", {}, conn.name), statusBadge,
      h("code", { class: "muted mqtt-url" }, conn.url + " · " + (conn.options.clientId || "(id from broker)")),
      statusError,
      h("span", { class: "mqtt-status-actions row" }, disconnectButton, reconnectButton,
        h("button", { type: "button", class: "danger", onclick: () => closeConnection(conn) }, "Close tab")));
    conn.setState = (state, error) => {
      conn.state = state;
      if (error !== undefined) conn.error = error;
      statusBadge.textContent = state;
      statusBadge.className = "badge mqtt-state " + ({ connected: "ok", closed: "bad" }[state] || "");
      statusError.textContent = conn.error && state !== "connected" ? conn.error : "";
      conn.tab.dataset.state = state;
      disconnectButton.hidden = state === "closed";
      reconnectButton.hidden = state !== "closed";
    };
    return bar;
  }

  function closeConnection(conn) {
    disconnect(conn);
    conn.tab.remove();
    conn.panel.remove();
    const at = connections.indexOf(conn);
    if (at >= 0) connections.splice(at, 1);
    if (active === conn) show(connections[Math.max(0, at - 1)] || null);
  }

  return {
    el: root,
    shown: () => { if (active) active.draw(); },
    close: () => {
      left = true;
      for (const conn of [...connections]) closeConnection(conn);
    },
  };
}
