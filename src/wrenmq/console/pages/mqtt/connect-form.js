// The MQTT client page's "New connection" form: where to connect (this wrenmq's WebSocket
// listeners, read from the broker status, or a custom ws:// / wss:// address), who to be, the will.
// Every field is checked before anything connects; a bad one is marked and focused.

import { byteLength, integerError, newClientId, qosSelect, topicNameError } from "./fields.js";
import { savedRow } from "./saved.js";

export const RECONNECT_MS = 2000;

// `open(settings)` is called with {name, url, options (for mqtt.connect)} on a valid submit, and
// returns the name the next connection is offered; `isLeft()` says the console signed out.
export function connectForm(ctx, { open, isLeft }) {
  const { h } = ctx;
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
  const willQos = field("mqtt-will-qos", "Will QoS", qosSelect(h));
  const willRetain = check("mqtt-will-retain", "Retain the will", false);
  const formError = h("p", { class: "error", role: "alert" });

  const custom = h("div", { class: "mqtt-form-grid" }, host.el, port.el, path.el, tls.el);
  const will = h("details", { class: "mqtt-will" }, h("summary", {}, "Last will"),
    h("div", { class: "mqtt-form-grid" }, willTopic.el, willQos.el, willRetain.el), willPayload.el);
  const fields = [name, broker, host, port, path, version, username, password, clientId, keepalive, willTopic,
                  willPayload, willQos];
  let presets = [];

  broker.input.addEventListener("change", () => { custom.hidden = broker.input.value !== "custom"; });

  const saved = savedRow(ctx, {
    texts: { name, host, port, path, username, clientId, keepalive, willTopic, willPayload },
    choices: { version, willQos }, checks: { tls, clean, willRetain },
    broker, presets: () => presets, custom, password, will,
  });

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
    if (byteLength(id) > 65535) bad(clientId, "A client id is at most 65,535 bytes.");
    const protocolVersion = Number(version.input.value);
    if (!id && !clean.input.checked && protocolVersion === 4) {
      bad(clientId, "MQTT 3.1.1 needs a client id when clean start is off.");
    }
    let willMessage;
    if (willTopic.input.value) {
      const willError = topicNameError(willTopic.input.value);
      if (willError) bad(willTopic, willError);
      willMessage = { topic: willTopic.input.value, payload: willPayload.input.value, qos: Number(willQos.input.value),
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
    if (willMessage) options.will = willMessage;
    return { name: name.input.value.trim(), url, options };
  }

  const el = h("form", { class: "card stack mqtt-connect", id: "mqtt-new", role: "tabpanel", "aria-labelledby": "mqtt-tab-new",
                         novalidate: true, onsubmit: (event) => {
      event.preventDefault();
      const settings = read();
      if (!settings) return;
      saved.remember();
      name.input.value = open(settings);
      clientId.input.value = newClientId();
    } },
    h("h2", {}, "New connection"),
    saved.el,
    h("p", { class: "muted mqtt-ws-note" }, "Browsers speak MQTT only over WebSocket (ws:// or wss://). To reach a broker that ",
      "listens on TCP only, add it to wrenmq as an external broker connection (a bridge) and connect here to wrenmq."),
    h("div", { class: "mqtt-form-grid" }, name.el, broker.el, version.el),
    custom,
    h("div", { class: "mqtt-form-grid" }, username.el, password.el, clientId.el, keepalive.el, clean.el),
    will,
    formError,
    h("div", { class: "row" }, h("button", { type: "submit", class: "primary" }, "Connect")));

  // "this wrenmq": its WebSocket listeners, from the broker status.
  ctx.api("broker/status").then((status) => {
    if (isLeft()) return;
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
    if (!isLeft()) ctx.toast("Could not read the broker's listeners: " + (err.detail || err.message), "error");
  });

  return { el };
}
