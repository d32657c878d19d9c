// External brokers: the connections to other MQTT brokers and their bridges (GET/POST/PUT/DELETE
// /api/v1/brokers), with their state live (polled every POLL_MS; rows are updated in place, so a
// button is never swapped under the pointer). Anyone signed in sees the list (the dashboard's
// data); the add, edit and remove controls are for callers that may write (management routes).
//
// Editing sends the whole [[brokers]] table back (PUT): the connection restarts with it. The
// status never holds the password: the form's password field left empty keeps the current one
// (the API's keep_password), and "Connect without a password" drops it.

export const title = "External brokers";

export const POLL_MS = 2000;
const SYNTAX = "topic <pattern> [in|out|both [<qos> [<local-prefix> <remote-prefix>]]]";

export function render(root, ctx) {
  const { h, api, toast, fmt } = ctx;
  let closed = false;
  let editing = null;  // the name of the connection the form edits, or null: a new one
  const rows = new Map();  // name -> {tr, cells}

  // -- the form ---------------------------------------------------------------------------------
  const input = (id, attrs) => h("input", { id, autocomplete: "off", ...attrs });
  const f = {
    name: input("broker-name", { placeholder: "cloud", maxlength: "64" }),
    url: input("broker-url", { placeholder: "mqtts://mqtt.example.com:8883" }),
    username: input("broker-username"),
    password: input("broker-password", { type: "password", autocomplete: "new-password" }),
    clientId: input("broker-client-id", { placeholder: "default: <hostname>.<name>" }),
    version: h("select", { id: "broker-version" }, h("option", { value: "5" }, "MQTT 5"), h("option", { value: "4" }, "MQTT 3.1.1")),
    cafile: input("broker-cafile", { placeholder: "default: the system's CAs" }),
    queueSize: input("broker-queue-size", { value: "10000", inputmode: "numeric" }),
    reconnectMax: input("broker-reconnect-max", { value: "30", inputmode: "decimal" }),
    bridges: h("textarea", { id: "broker-bridges", rows: 4, spellcheck: "false", placeholder: "topic sensors/# out 1 plant/ plant-7/" }),
  };
  const dropPassword = h("input", { type: "checkbox", id: "broker-drop-password" });
  const dropRow = h("div", { class: "mqtt-check", hidden: true }, dropPassword,
    h("label", { for: "broker-drop-password" }, "Connect without a password"));
  const field = (el, label, hint) => h("div", { class: "us-field" }, h("label", { for: el.id }, label), el,
    hint ? h("p", { class: "muted br-hint" }, hint) : null);
  const formTitle = h("h2", {}, "Add a connection");
  const formError = h("p", { class: "error", role: "alert" });
  const submit = h("button", { type: "submit", class: "primary" }, "Add");
  const form = h("form", { class: "card stack needs-write br-form", id: "broker-form", novalidate: true, hidden: true, onsubmit: save },
    formTitle,
    h("div", { class: "mqtt-form-grid" }, field(f.name, "Name"), field(f.url, "URL", "mqtt://, mqtts://, ws:// or wss://"),
      field(f.version, "Protocol"), field(f.username, "User name"), field(f.password, "Password"), field(f.clientId, "Client id")),
    dropRow,
    h("details", { class: "br-more" }, h("summary", {}, "TLS, queue and reconnection"),
      h("div", { class: "mqtt-form-grid" }, field(f.cafile, "CA file (on the broker's machine)"),
        field(f.queueSize, "Queue size (messages)"), field(f.reconnectMax, "Longest reconnect wait (s)"))),
    field(f.bridges, "Bridges, one a line", SYNTAX),
    formError,
    h("div", { class: "row" }, submit, h("button", { type: "button", onclick: closeForm }, "Cancel")));
  const addButton = h("button", { type: "button", class: "primary needs-write", id: "broker-add", onclick: () => openForm(null) },
    "Add a connection");

  // -- the list ---------------------------------------------------------------------------------
  const list = h("tbody", {});
  const table = h("div", { class: "table-wrap" }, h("table", { id: "brokers-table" },
    h("thead", {}, h("tr", {}, ...["Connection", "State", "Bridges", "In", "Out", "Queued"].map((t) =>
      h("th", { scope: "col", class: ["Bridges", "In", "Out"].includes(t) ? "br-opt" : null }, t)),
      h("th", { scope: "col", class: "needs-write" }, h("span", { class: "res-sr" }, "Actions")))), list));
  const empty = h("p", { class: "muted", hidden: true }, "No external broker connections. Add one here, or in the config file ([[brokers]]).");
  const problem = h("p", { class: "error", role: "alert", hidden: true });
  root.append(h("div", { class: "stack" },
    h("div", { class: "row dash-head" }, h("h1", {}, "External brokers"), addButton),
    h("p", { class: "muted" }, "Connections made here last until the broker stops; those of the config file come back with its settings when it restarts."),
    problem, form, h("div", { class: "card stack" }, table, empty)));

  function row(b) {
    const cells = {
      name: h("td", {}), state: h("td", {}), bridges: h("td", { class: "mono br-opt br-bridges" }),
      in: h("td", { class: "num br-opt" }), out: h("td", { class: "num br-opt" }), queued: h("td", { class: "num" }),
    };
    const tr = h("tr", { dataset: { broker: b.name } }, cells.name, cells.state, cells.bridges, cells.in, cells.out, cells.queued,
      h("td", { class: "res-actions needs-write" },
        h("button", { type: "button", class: "link br-edit", "aria-label": "Edit " + b.name, onclick: () => openForm(rows.get(b.name).data) }, "Edit"),
        h("button", { type: "button", class: "link res-delete", "aria-label": "Remove " + b.name, onclick: () => remove(b.name) }, "Remove")));
    return { tr, cells, data: b };
  }

  // replaceChildren would write a left-out part (null) as the text "null".
  const put = (el, ...parts) => el.replaceChildren(...parts.filter((part) => part !== null && part !== undefined));

  function fill(entry, b) {
    const { cells } = entry;
    entry.data = b;
    entry.tr.dataset.state = b.state;
    put(cells.name, h("div", {}, b.name, b.source === "config" ? h("span", { class: "badge br-source" }, "config") : null),
      h("div", { class: "muted mono br-url" }, b.url));
    put(cells.state, h("span", { class: "badge br-state " + (b.connected ? "ok" : b.state === "stopped" ? "bad" : "") }, b.state),
      b.state === "reconnecting" && b.next_attempt_at ? h("div", { class: "muted" }, "next " + fmt.time(b.next_attempt_at)) : null,
      b.last_error || b.subscribe_error ? h("div", { class: "dash-error br-error" }, b.last_error || b.subscribe_error) : null);
    cells.bridges.replaceChildren(...(b.bridges.length ? b.bridges.map((line) => h("div", {}, line)) : [h("span", { class: "muted" }, "none")]));
    cells.in.textContent = fmt.number(b.messages_in);
    cells.out.textContent = fmt.number(b.messages_out);
    put(cells.queued, fmt.number(b.queued), b.dropped ? h("div", { class: "muted" }, fmt.number(b.dropped) + " dropped") : null);
  }

  function show(brokers) {
    const seen = new Set();
    for (const b of brokers) {
      seen.add(b.name);
      let entry = rows.get(b.name);
      if (!entry) { entry = row(b); rows.set(b.name, entry); }
      fill(entry, b);
    }
    for (const [name, entry] of rows) if (!seen.has(name)) { entry.tr.remove(); rows.delete(name); }
    const order = brokers.map((b) => rows.get(b.name).tr);  // sorted by name (the API's order)
    if (order.some((tr, i) => list.children[i] !== tr)) list.replaceChildren(...order);
    table.hidden = brokers.length === 0;
    empty.hidden = brokers.length !== 0;
  }

  async function poll() {
    try {
      const answer = await api("brokers");
      if (closed) return;
      problem.hidden = true;
      show(answer.brokers);
    } catch (err) {
      if (closed || err.status === 401) return;
      problem.hidden = false;
      problem.textContent = "The connections could not be read: " + (err.detail || err.message);
    }
  }

  // -- add, edit, remove -------------------------------------------------------------------------
  function openForm(b) {
    editing = b ? b.name : null;
    formError.textContent = "";
    formTitle.textContent = b ? "Edit " + b.name : "Add a connection";
    submit.textContent = b ? "Save and reconnect" : "Add";
    f.name.value = b ? b.name : "";
    f.name.disabled = Boolean(b);
    f.url.value = b ? b.url.replace(/\/\/[^/@]*@/, "//") : "";  // user and (masked) password are fields of their own
    f.username.value = b && b.username ? b.username : "";
    f.password.value = "";
    f.password.placeholder = b && b.has_password ? "unchanged" : "";
    dropPassword.checked = false;
    dropRow.hidden = !(b && b.has_password);
    f.clientId.value = b ? b.client_id : "";
    f.version.value = b ? String(b.version) : "5";
    f.cafile.value = b && b.cafile ? b.cafile : "";
    f.queueSize.value = b ? String(b.queue_size) : "10000";
    f.reconnectMax.value = b ? String(b.reconnect_max) : "30";
    f.bridges.value = b ? b.bridges.join("\n") : "";
    form.hidden = false;
    ctx.reveal(form);
    (b ? f.url : f.name).focus();
  }

  function closeForm() {
    form.hidden = true;
    editing = null;
    f.password.value = "";
  }

  function body() {
    const settings = {
      name: editing || f.name.value.trim(), url: f.url.value.trim(), version: Number(f.version.value),
      bridges: f.bridges.value.split("\n").map((line) => line.trim()).filter(Boolean),
    };
    if (f.username.value.trim()) settings.username = f.username.value.trim();
    if (f.password.value) settings.password = f.password.value;
    if (f.clientId.value.trim()) settings.client_id = f.clientId.value.trim();
    if (f.cafile.value.trim()) settings.cafile = f.cafile.value.trim();
    const size = f.queueSize.value.trim(), wait = f.reconnectMax.value.trim();
    if (!/^\d+$/.test(size) || Number(size) < 1) return { error: "The queue size is a whole number of messages, at least 1." };
    if (!(Number(wait) > 0)) return { error: "The longest reconnect wait is a number of seconds above 0." };
    settings.queue_size = Number(size);
    settings.reconnect_max = Number(wait);
    if (editing) settings.keep_password = !dropPassword.checked;
    if (!settings.name) return { error: "Give the connection a name." };
    if (!settings.url) return { error: "A URL is required." };
    return { settings };
  }

  async function save(event) {
    event.preventDefault();
    formError.textContent = "";
    const { settings, error } = body();
    if (error) { formError.textContent = error; return; }
    const name = settings.name;
    try {
      if (editing) await api("brokers/" + encodeURIComponent(name), { method: "PUT", body: settings });
      else await api("brokers", { method: "POST", body: settings });
      if (closed) return;
      toast(editing ? `${name} saved: reconnecting with the new settings.` : `${name} added: connecting.`);
      closeForm();
    } catch (err) {
      formError.textContent = (editing ? "Not saved: " : "Not added: ") + (err.detail || err.message);
      return;
    }
    poll();
  }

  async function remove(name) {
    if (!window.confirm(`Remove the connection ${name}? It disconnects, and what its queue holds is dropped.`)) return;
    try {
      await api("brokers/" + encodeURIComponent(name), { method: "DELETE" });
      toast(`${name} removed.`);
      if (editing === name) closeForm();
    } catch (err) {
      toast(`Could not remove ${name}: ${err.detail || err.message}`, "error");
    }
    poll();
  }

  poll();
  const timer = setInterval(poll, POLL_MS);
  return () => { closed = true; clearInterval(timer); };
}
