// The MQTT client console: connect with MQTT.js (global `mqtt`) over WebSocket to this wrenmq or any
// broker, one tab per connection; subscribe, publish (with MQTT 5 properties) and watch messages live.
//
// A flood must never freeze the page: messages are only queued as they arrive (bounded), and drawn
// once per animation frame (ctx.batch), keeping the newest MAX_ROWS rows in the DOM.
//
// The connections outlive the page: leaving it only detaches its elements (kept below, in `kept`),
// and coming back puts them back with every connection, subscription and message as it was, as a
// desktop MQTT client would. Signing out (app.js calls forget()) closes them.

import { FORMATS, FORMAT_NAMES, encodePayload, propertyText, showPayload } from "../payload.js";

export const title = "MQTT client";

export const MAX_ROWS = 500;           // message rows kept in the DOM per connection
const RECONNECT_MS = 2000;
// Saved connections (as MQTTX keeps them): the form's fields by connection name, in localStorage,
// without the password (a browser's storage is no place for it: it is asked again).
const SAVED = "wrenmq.console.mqtt.saved";
const MAX_SAVED = 50;

function savedConnections() {
  try {
    const list = JSON.parse(localStorage.getItem(SAVED) || "[]");
    return Array.isArray(list) ? list.filter((one) => one && typeof one.name === "string") : [];
  } catch (e) { return []; }
}

const SUBACK_REASONS = {
  0x80: "Unspecified error", 0x83: "Implementation specific error", 0x87: "Not authorized",
  0x8f: "Topic filter invalid", 0x91: "Packet identifier in use", 0x97: "Quota exceeded",
  0x9e: "Shared subscriptions not supported", 0xa1: "Subscription identifiers not supported",
  0xa2: "Wildcard subscriptions not supported",
};

// -- validation (each returns an error text, or "" when the value is fine) ---------------------------

const utf8 = new TextEncoder();

export function topicNameError(topic) {
  if (!topic) return "A topic is required.";
  if (/[+#]/.test(topic)) return "A topic name cannot contain the wildcards + or #.";
  if (topic.includes("\u0000")) return "A topic cannot contain the null character.";
  if (utf8.encode(topic).length > 65535) return "A topic is at most 65,535 bytes.";
  return "";
}

export function topicFilterError(filter) {
  if (!filter) return "A topic filter is required.";
  if (filter.includes("\u0000")) return "A topic filter cannot contain the null character.";
  if (utf8.encode(filter).length > 65535) return "A topic filter is at most 65,535 bytes.";
  const levels = filter.split("/");
  for (let i = 0; i < levels.length; i++) {
    const level = levels[i];
    if (level.includes("#") && (level !== "#" || i !== levels.length - 1)) {
      return "# must be a whole level and the last one (as in sensors/#).";
    }
    if (level.includes("+") && level !== "+") return "+ must be a whole level (as in sensors/+/temperature).";
  }
  return "";
}

function integerError(text, min, max, what) {
  if (!/^\d+$/.test(text.trim())) return `${what} must be a whole number from ${min} to ${max}.`;
  const value = Number(text);
  if (value < min || value > max) return `${what} must be from ${min} to ${max}.`;
  return "";
}

// "key=value" lines -> {key: value | [values]}; a bad line is reported by its number.
export function parseUserProperties(text) {
  const properties = {};
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].trim();
    if (!line) continue;
    const at = line.indexOf("=");
    if (at <= 0) return { error: `Line ${i + 1}: expected key=value, got "${line.slice(0, 40)}".` };
    const key = line.slice(0, at).trim();
    const value = line.slice(at + 1).trim();
    if (key in properties) properties[key] = [].concat(properties[key], value);
    else properties[key] = value;
  }
  return { properties };
}

function clock(date) {
  return date.toLocaleTimeString("en-GB", { hour12: false }) + "." + String(date.getMilliseconds()).padStart(3, "0");
}

// -- the page ----------------------------------------------------------------------------------------

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
  const form = connectForm();
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

  // -- the connection form -------------------------------------------------------------------------

  function connectForm() {
    const field = (id, label, input, hint) => {
      const error = h("p", { class: "error mqtt-field-error", id: id + "-error", role: "alert" });
      input.id = id;
      input.setAttribute("aria-describedby", id + "-error");
      return { input, error, el: h("div", { class: "mqtt-field" }, h("label", { for: id }, label), input, hint || null, error) };
    };
    const check = (id, label, checked) => {
      const input = h("input", { type: "checkbox", id, checked });
      return { input, el: h("div", { class: "mqtt-check" }, input, h("label", { for: id }, label)) };
    };
    const qosSelect = (id) => h("select", { id }, h("option", { value: "0" }, "0"), h("option", { value: "1" }, "1"),
                                h("option", { value: "2" }, "2"));

    const name = field("mqtt-name", "Name", h("input", { value: "connection 1", autocomplete: "off" }));
    const broker = field("mqtt-broker", "Broker", h("select", {}, h("option", { value: "custom" }, "custom")));
    const host = field("mqtt-host", "Host", h("input", { value: location.hostname, autocomplete: "off" }));
    const port = field("mqtt-port", "Port", h("input", { value: "9001", inputmode: "numeric", autocomplete: "off" }));
    const path = field("mqtt-path", "Path", h("input", { value: "/mqtt", autocomplete: "off" }));
    const tls = check("mqtt-tls", "TLS (wss://)", false);
    const version = field("mqtt-version", "Protocol", h("select", {}, h("option", { value: "5" }, "MQTT 5"),
                                                        h("option", { value: "4" }, "MQTT 3.1.1")));
    const username = field("mqtt-username", "User name", h("input", { autocomplete: "off" }));
    const password = field("mqtt-password", "Password", h("input", { type: "password", autocomplete: "new-password" }));
    const clientId = field("mqtt-client-id", "Client id", h("input", { value: newClientId(), autocomplete: "off" }));
    const keepalive = field("mqtt-keepalive", "Keep alive (s)", h("input", { value: "60", inputmode: "numeric" }));
    const clean = check("mqtt-clean", "Clean start", true);
    const willTopic = field("mqtt-will-topic", "Will topic", h("input", { autocomplete: "off", placeholder: "empty: no will" }));
    const willPayload = field("mqtt-will-payload", "Will payload", h("textarea", { rows: 2 }));
    const willQos = field("mqtt-will-qos", "Will QoS", qosSelect());
    const willRetain = check("mqtt-will-retain", "Retain the will", false);
    const formError = h("p", { class: "error", role: "alert" });

    const custom = h("div", { class: "mqtt-form-grid" }, host.el, port.el, path.el, tls.el);
    const fields = [name, broker, host, port, path, version, username, password, clientId, keepalive, willTopic,
                    willPayload, willQos];
    let presets = [];

    broker.input.addEventListener("change", () => { custom.hidden = broker.input.value !== "custom"; });

    function setError(f, text) {
      f.error.textContent = text;
      f.input.toggleAttribute("aria-invalid", Boolean(text));
      if (text) f.input.setAttribute("aria-invalid", "true");
    }

    function read() {
      for (const f of fields) setError(f, "");
      formError.textContent = "";
      let url;
      let firstBad = null;
      const bad = (f, text) => { setError(f, text); firstBad = firstBad || f.input; };
      if (!name.input.value.trim()) bad(name, "Give the connection a name.");
      if (broker.input.value === "custom") {
        const hostText = host.input.value.trim();
        if (!hostText) bad(host, "A host is required.");
        else if (/[\s/?#@]/.test(hostText)) bad(host, "A host name or address only, without scheme or path.");
        const portError = integerError(port.input.value, 1, 65535, "The port");
        if (portError) bad(port, portError);
        let pathText = path.input.value.trim() || "/mqtt";
        if (!pathText.startsWith("/")) pathText = "/" + pathText;
        if (/\s/.test(pathText)) bad(path, "The path cannot contain spaces.");
        const bracketed = hostText.includes(":") && !hostText.startsWith("[") ? `[${hostText}]` : hostText;
        url = `${tls.input.checked ? "wss" : "ws"}://${bracketed}:${port.input.value.trim()}${pathText}`;
      } else {
        const preset = presets[Number(broker.input.value)];
        url = `${preset.type}://${location.hostname.includes(":") ? `[${location.hostname}]` : location.hostname}:${preset.port}${preset.path}`;
      }
      const keepaliveError = integerError(keepalive.input.value, 0, 65535, "Keep alive");
      if (keepaliveError) bad(keepalive, keepaliveError);
      const id = clientId.input.value.trim();
      if (utf8.encode(id).length > 65535) bad(clientId, "A client id is at most 65,535 bytes.");
      const protocolVersion = Number(version.input.value);
      if (!id && !clean.input.checked && protocolVersion === 4) {
        bad(clientId, "MQTT 3.1.1 needs a client id when clean start is off.");
      }
      let will;
      if (willTopic.input.value) {
        const willError = topicNameError(willTopic.input.value);
        if (willError) bad(willTopic, willError);
        will = { topic: willTopic.input.value, payload: willPayload.input.value, qos: Number(willQos.input.value),
                 retain: willRetain.input.checked };
      }
      if (firstBad) {
        formError.textContent = "Fix the fields marked above; nothing was connected.";
        firstBad.focus();
        return null;
      }
      const options = {
        protocolVersion, clientId: id, clean: clean.input.checked, keepalive: Number(keepalive.input.value),
        reconnectPeriod: RECONNECT_MS, connectTimeout: 10_000, resubscribe: true,
      };
      if (username.input.value) options.username = username.input.value;
      if (password.input.value) options.password = password.input.value;
      if (will) options.will = will;
      return { name: name.input.value.trim(), url, options };
    }

    // -- saved connections: every connection opened is saved under its name (password left out)
    const savedSelect = h("select", { id: "mqtt-saved" });
    const forgetButton = h("button", { type: "button", class: "link", id: "mqtt-forget",
      onclick: () => {
        const chosen = savedSelect.value;
        if (!chosen) return;
        localStorage.setItem(SAVED, JSON.stringify(savedConnections().filter((one) => one.name !== chosen)));
        drawSaved();
        ctx.toast(`Forgot the saved connection ${chosen}.`);
      } }, "Forget");
    const savedRow = h("div", { class: "row mqtt-inline mqtt-saved" },
      h("div", { class: "mqtt-grow" }, h("label", { for: "mqtt-saved" }, "Saved connections"), savedSelect), forgetButton);
    const checks = { tls, clean, willRetain };
    const texts = { name, host, port, path, username, clientId, keepalive, willTopic, willPayload };
    const choices = { version, willQos };

    function drawSaved() {
      const list = savedConnections();
      savedSelect.replaceChildren(h("option", { value: "" }, `choose one (${list.length})`),
        ...list.map((one) => h("option", { value: one.name }, one.name)));
      savedRow.hidden = list.length === 0;
    }

    function snapshot() {
      const saved = { broker: broker.input.value === "custom" ? "custom" : "preset:" + JSON.stringify(presets[Number(broker.input.value)]) };
      for (const [k, f] of Object.entries(texts)) saved[k] = f.input.value;
      for (const [k, f] of Object.entries(choices)) saved[k] = f.input.value;
      for (const [k, f] of Object.entries(checks)) saved[k] = f.input.checked;
      saved.name = saved.name.trim();
      return saved;
    }

    function remember() {
      const saved = snapshot();
      const list = savedConnections().filter((one) => one.name !== saved.name);
      list.unshift(saved);
      localStorage.setItem(SAVED, JSON.stringify(list.slice(0, MAX_SAVED)));
      drawSaved();
    }

    function restore(saved) {
      for (const [k, f] of Object.entries(texts)) if (typeof saved[k] === "string") f.input.value = saved[k];
      for (const [k, f] of Object.entries(choices)) if (typeof saved[k] === "string") f.input.value = saved[k];
      for (const [k, f] of Object.entries(checks)) if (typeof saved[k] === "boolean") f.input.checked = saved[k];
      const preset = presets.findIndex((p) => "preset:" + JSON.stringify(p) === saved.broker);
      broker.input.value = preset >= 0 ? String(preset) : "custom";
      custom.hidden = broker.input.value !== "custom";
      password.input.value = "";
      if (saved.willTopic) el.querySelector(".mqtt-will").open = true;
    }

    savedSelect.addEventListener("change", () => {
      const saved = savedConnections().find((one) => one.name === savedSelect.value);
      if (saved) restore(saved);
    });

    const el = h("form", { class: "card stack mqtt-connect", id: "mqtt-new", role: "tabpanel", "aria-labelledby": "mqtt-tab-new",
                           novalidate: true, onsubmit: (event) => {
        event.preventDefault();
        const settings = read();
        if (!settings) return;
        remember();
        openConnection(settings);
        name.input.value = "connection " + (serial + 1);
        clientId.input.value = newClientId();
      } },
      h("h2", {}, "New connection"),
      savedRow,
      h("p", { class: "muted mqtt-ws-note" }, "Browsers speak MQTT only over WebSocket (ws:// or wss://). To reach a broker that ",
        "listens on TCP only, add it to wrenmq as an external broker connection (a bridge) and connect here to wrenmq."),
      h("div", { class: "mqtt-form-grid" }, name.el, broker.el, version.el),
      custom,
      h("div", { class: "mqtt-form-grid" }, username.el, password.el, clientId.el, keepalive.el, clean.el),
      h("details", { class: "mqtt-will" }, h("summary", {}, "Last will"),
        h("div", { class: "mqtt-form-grid" }, willTopic.el, willQos.el, willRetain.el), willPayload.el),
      formError,
      h("div", { class: "row" }, h("button", { type: "submit", class: "primary" }, "Connect")));

    // "this wrenmq": its WebSocket listeners, from the broker status.
    ctx.api("broker/status").then((status) => {
      if (left) return;
      presets = [];
      for (const listener of status.listeners || []) {
        if (listener.type !== "ws" && listener.type !== "wss") continue;
        try {
          const u = new URL(listener.url);
          presets.push({ type: listener.type, port: u.port || (listener.type === "wss" ? "443" : "80"), path: u.pathname || "/mqtt" });
        } catch (e) { /* an address we cannot read: leave it out */ }
      }
      // A page served over https can only open wss://.
      if (location.protocol === "https:") presets.sort((a, b) => (a.type === "wss" ? -1 : 1) - (b.type === "wss" ? -1 : 1));
      const options = presets.map((p, i) => h("option", { value: String(i) },
        `this wrenmq (${p.type}, port ${p.port}${p.path})`));
      broker.input.replaceChildren(...options, h("option", { value: "custom" }, "custom"));
      if (presets.length) {
        broker.input.value = "0";
        port.input.value = presets[0].port;
        path.input.value = presets[0].path;
      } else {
        broker.error.textContent = "";
        broker.el.append(h("p", { class: "muted" }, "This wrenmq has no WebSocket listener (set ws_port to enable one)."));
      }
      custom.hidden = broker.input.value !== "custom";
    }).catch((err) => {
      if (!left) ctx.toast("Could not read the broker's listeners: " + (err.detail || err.message), "error");
    });

    drawSaved();
    return { el };
  }

  // -- one connection ------------------------------------------------------------------------------

  function openConnection(settings) {
    serial += 1;
    const n = serial;
    const v5 = settings.options.protocolVersion === 5;
    const conn = {
      n, name: settings.name, url: settings.url, options: settings.options, v5, client: null,
      state: "connecting", error: "", subs: new Map(), pending: [], held: [], paused: false, heldCount: 0,
      received: 0, dropped: 0, filter: "", view: "auto",
    };

    const dot = h("span", { class: "mqtt-dot", "aria-hidden": "true" });
    conn.tab = h("button", { type: "button", role: "tab", id: `mqtt-tab-${n}`, "aria-controls": `mqtt-conn-${n}`,
                             class: "mqtt-tab", dataset: { state: "connecting" }, onclick: () => show(conn) },
      dot, settings.name, h("span", { class: "mqtt-version" }, v5 ? " · 5" : " · 3.1.1"));
    tabBar.insertBefore(conn.tab, newTab);

    conn.panel = h("section", { class: "stack mqtt-connection", id: `mqtt-conn-${n}`, role: "tabpanel",
                                "aria-labelledby": conn.tab.id, dataset: { connection: String(n) } },
      statusBar(conn),
      h("div", { class: "mqtt-columns" }, h("div", { class: "stack" }, subscriptionsCard(conn), publishCard(conn)),
        messagesCard(conn)));
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

  function subscriptionsCard(conn) {
    const n = conn.n;

    // subscriptions
    const subFilter = h("input", { id: `mqtt-sub-filter-${n}`, placeholder: "sensors/#", autocomplete: "off" });
    const subQos = h("select", { id: `mqtt-sub-qos-${n}` }, h("option", { value: "0" }, "0"), h("option", { value: "1" }, "1"),
                     h("option", { value: "2" }, "2"));
    const subError = h("p", { class: "error", role: "alert" });
    const subList = h("ul", { class: "mqtt-subs" });
    const subEmpty = h("p", { class: "muted" }, "No subscriptions yet.");
    const card = h("form", { class: "card stack mqtt-subscribe", novalidate: true, onsubmit: (event) => {
        event.preventDefault();
        const filter = subFilter.value.trim();
        const error = topicFilterError(filter);
        subError.textContent = error;
        if (error) return;
        subscribe(conn, filter, Number(subQos.value));
        subFilter.value = "";
      } },
      h("h2", {}, "Subscriptions"),
      h("div", { class: "row mqtt-inline" },
        h("div", { class: "mqtt-grow" }, h("label", { for: subFilter.id }, "Topic filter"), subFilter),
        h("div", {}, h("label", { for: subQos.id }, "QoS"), subQos),
        h("button", { type: "submit", class: "primary" }, "Subscribe")),
      subError, subEmpty, subList);
    conn.drawSubs = () => {
      subEmpty.hidden = conn.subs.size > 0;
      subList.replaceChildren(...[...conn.subs.values()].map((sub) => h("li", { class: "row" },
        h("code", {}, sub.filter),
        h("span", { class: "muted" }, "asked QoS " + sub.qos),
        sub.granted === undefined ? h("span", { class: "badge" }, "waiting for SUBACK")
          : sub.granted >= 0x80 ? h("span", { class: "badge bad" }, "refused: " + (SUBACK_REASONS[sub.granted] || "failure") +
                                    ` (0x${sub.granted.toString(16)})`)
          : h("span", { class: "badge ok" }, "granted QoS " + sub.granted),
        h("button", { type: "button", class: "link", "aria-label": "Unsubscribe from " + sub.filter,
                      onclick: () => unsubscribe(conn, sub.filter) }, "Unsubscribe"))));
    };
    return card;
  }

  function labelled(input, text, cls) {
    return h("div", { class: cls || "" }, h("label", { for: input.id }, text), input);
  }

  function publishCard(conn) {
    const { n, v5 } = conn;

    // publish
    const pubTopic = h("input", { id: `mqtt-pub-topic-${n}`, placeholder: "sensors/kitchen/temperature", autocomplete: "off" });
    const pubPayload = h("textarea", { id: `mqtt-pub-payload-${n}`, rows: 3, placeholder: '{"celsius": 21.5}' });
    const pubQos = h("select", { id: `mqtt-pub-qos-${n}` }, h("option", { value: "0" }, "0"), h("option", { value: "1" }, "1"),
                     h("option", { value: "2" }, "2"));
    const pubRetain = h("input", { type: "checkbox", id: `mqtt-pub-retain-${n}` });
    const pubFormat = h("select", { id: `mqtt-pub-format-${n}` },
      ...FORMATS.map((f) => h("option", { value: f }, FORMAT_NAMES[f])));
    const propContentType = h("input", { id: `mqtt-pub-content-type-${n}`, placeholder: "application/json", autocomplete: "off" });
    const propResponseTopic = h("input", { id: `mqtt-pub-response-topic-${n}`, autocomplete: "off" });
    const propCorrelation = h("input", { id: `mqtt-pub-correlation-${n}`, autocomplete: "off" });
    const propExpiry = h("input", { id: `mqtt-pub-expiry-${n}`, inputmode: "numeric", placeholder: "seconds", autocomplete: "off" });
    const propUser = h("textarea", { id: `mqtt-pub-user-props-${n}`, rows: 2, placeholder: "key=value, one a line" });
    const pubError = h("p", { class: "error", role: "alert" });
    const card = h("form", { class: "card stack mqtt-publish", novalidate: true, onsubmit: (event) => {
        event.preventDefault();
        const message = readPublish();
        if (message) publish(conn, message);
      } },
      h("h2", {}, "Publish"),
      h("div", { class: "row mqtt-inline" }, labelled(pubTopic, "Topic", "mqtt-grow"), labelled(pubQos, "QoS"),
        h("div", { class: "mqtt-check" }, pubRetain, h("label", { for: pubRetain.id }, "Retain"))),
      h("div", { class: "row mqtt-inline" }, labelled(pubPayload, "Payload", "mqtt-grow"), labelled(pubFormat, "Format")),
      v5 ? h("details", { class: "mqtt-props" }, h("summary", {}, "MQTT 5 properties"),
        h("div", { class: "mqtt-form-grid" }, labelled(propContentType, "Content type"),
          labelled(propResponseTopic, "Response topic"), labelled(propCorrelation, "Correlation data"),
          labelled(propExpiry, "Message expiry (s)")),
        labelled(propUser, "User properties (key=value lines)")) : null,
      pubError,
      h("div", { class: "row" }, h("button", { type: "submit", class: "primary" }, "Publish")));

    function readPublish() {
      pubError.textContent = "";
      const topic = pubTopic.value;
      const problems = [];
      const topicError = topicNameError(topic);
      if (topicError) problems.push(topicError);
      const options = { qos: Number(pubQos.value), retain: pubRetain.checked };
      if (v5) {
        const properties = {};
        if (propContentType.value) properties.contentType = propContentType.value;
        if (propResponseTopic.value) {
          const error = topicNameError(propResponseTopic.value);
          if (error) problems.push("Response topic: " + error);
          properties.responseTopic = propResponseTopic.value;
        }
        if (propCorrelation.value) properties.correlationData = propCorrelation.value;
        if (propExpiry.value.trim()) {
          const error = integerError(propExpiry.value, 0, 4294967295, "Message expiry");
          if (error) problems.push(error);
          else properties.messageExpiryInterval = Number(propExpiry.value);
        }
        const user = parseUserProperties(propUser.value);
        if (user.error) problems.push("User properties: " + user.error);
        else if (Object.keys(user.properties).length) properties.userProperties = user.properties;
        if (Object.keys(properties).length) options.properties = properties;
      }
      const encoded = encodePayload(pubPayload.value, pubFormat.value);
      if (encoded.error) problems.push(encoded.error);
      if (problems.length) { pubError.textContent = problems.join(" "); return null; }
      // Text goes as the string (MQTT.js encodes it as UTF-8); other formats as their bytes.
      return { topic, payload: pubFormat.value === "text" ? pubPayload.value : encoded.bytes, options };
    }
    return card;
  }

  // Incoming messages: queued as they arrive (bounded), drawn at most once per frame.
  function messagesCard(conn) {
    const n = conn.n;

    // messages
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
      h("div", { class: "row mqtt-inline" }, labelled(filterInput, "Filter", "mqtt-grow"), labelled(viewSelect, "Show as"),
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
        for (let i = conn.pending.length - 1; i >= 0; i--) fragment.append(messageRow(conn.pending[i], conn.filter, conn.view));
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

  function messageRow(m, filter, view) {
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

  function matches(text, filter) { return !filter || text.includes(filter); }

  function connect(conn) {
    if (conn.client) { conn.client.removeAllListeners(); conn.client.on("error", () => {}); conn.client.end(true); }
    conn.stopping = false;
    conn.everConnected = false;
    conn.setState("connecting", "");
    let client;
    try {
      client = mqtt.connect(conn.url, conn.options);
    } catch (err) {
      conn.setState("closed", "Could not start: " + err.message);
      return;
    }
    conn.client = client;
    const fresh = { value: true };
    client.on("connect", (connack) => {
      conn.everConnected = true;
      conn.setState("connected", "");
      // A new client (re)subscribes all the tab lists; MQTT.js resubscribes on its own reconnects, so
      // after those only what was asked for while offline is sent.
      for (const sub of conn.subs.values()) {
        if (fresh.value || sub.granted === undefined) subscribe(conn, sub.filter, sub.qos);
      }
      fresh.value = false;
      if (connack && connack.properties && connack.properties.assignedClientIdentifier) {
        conn.assignedId = connack.properties.assignedClientIdentifier;
      }
    });
    client.on("reconnect", () => conn.setState("reconnecting"));
    client.on("offline", () => { if (!conn.stopping) conn.setState("reconnecting"); });
    client.on("close", () => {
      if (conn.stopping || client.disconnecting) conn.setState("closed");
      else conn.setState("reconnecting", conn.error || (conn.everConnected ? "The connection closed."
                                                                             : `Could not reach ${conn.url}.`));
    });
    client.on("disconnect", (packet) => {
      const code = packet && packet.reasonCode;
      const reason = packet && packet.properties && packet.properties.reasonString;
      conn.error = `The broker disconnected this client (reason 0x${(code || 0).toString(16).padStart(2, "0")}` +
                   (reason ? ": " + reason : "") + ").";
    });
    client.on("error", (err) => {
      conn.error = err.message || String(err);
      // A refused CONNECT (bad credentials, not authorized, bad client id) will not get better by retrying.
      if (err.code !== undefined && typeof err.code === "number" && !conn.everConnected) {
        conn.stopping = true;
        client.end(true);
        const why = conn.error.replace(/^Connection refused:\s*/i, "");
        conn.setState("closed", `The broker refused the connection: ${why} (0x${err.code.toString(16).padStart(2, "0")}).`);
      } else {
        conn.setState(conn.state === "connected" ? "connected" : conn.state, conn.error);
      }
    });
    client.on("end", () => conn.setState("closed"));
    client.on("message", conn.onMessage);
  }

  function subscribe(conn, filter, qos) {
    conn.subs.set(filter, { filter, qos, granted: undefined });
    conn.drawSubs();
    if (!conn.client || conn.state !== "connected") {
      ctx.toast(`Not connected: ${filter} is subscribed once the connection is up.`);
      return;
    }
    conn.client.subscribe(filter, { qos }, (err, granted) => {
      const sub = conn.subs.get(filter);
      if (!sub) return;
      if (err) {
        const code = (err.packet && err.packet.granted && err.packet.granted[0]) ?? err.code;
        sub.granted = typeof code === "number" && code >= 0x80 ? code : 0x80;
        ctx.toast(`Subscribe to ${filter} failed: ${err.message}`, "error");
      } else {
        sub.granted = granted && granted[0] ? granted[0].qos : qos;
      }
      conn.drawSubs();
    });
  }

  function unsubscribe(conn, filter) {
    conn.subs.delete(filter);
    conn.drawSubs();
    if (conn.client && conn.state === "connected") {
      conn.client.unsubscribe(filter, (err) => { if (err) ctx.toast(`Unsubscribe from ${filter} failed: ${err.message}`, "error"); });
    }
  }

  function publish(conn, message) {
    if (!conn.client || conn.state !== "connected") {
      ctx.toast("Not connected: nothing was published.", "error");
      return;
    }
    conn.client.publish(message.topic, message.payload, message.options, (err) => {
      if (err) ctx.toast(`Publish to ${message.topic} failed: ${err.message}`, "error");
      else ctx.toast(`Published to ${message.topic} (QoS ${message.options.qos}).`, "ok");
    });
  }

  function closeConnection(conn) {
    conn.stopping = true;
    // end() sends DISCONNECT: a tab closed on purpose is a normal disconnect (no will).
    if (conn.client) { conn.client.removeAllListeners(); conn.client.on("error", () => {}); conn.client.end(); conn.client = null; }
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

function newClientId() {
  const bytes = crypto.getRandomValues(new Uint8Array(4));
  return "wrenmq-console-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}
