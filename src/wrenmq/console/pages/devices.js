// Devices: the presence registry (README "Device presence"), live.
//
// Live data: the retained `<presence_admin_root>/devices/snapshot` (the root the broker is configured
// with, from ctx.caller.topics; the whole fleet, as an object or a bare array, republished after every
// registry change) through ctx.realtime, and GET /api/v1/devices every POLL_MS as a fallback. The
// list is filtered here (status, type, session, text), so filtering is instant and needs no request.
// A click on a device opens its detail (GET /api/v1/devices/{id}); the command card sends a command
// to a device or to a whole session and shows the API's answer.

export const title = "Devices";

export const MAX_ROWS = 500;           // devices shown in the table at most (the rest: "n more")
const MAX_DEVICES = 5000;              // devices fetched by the fallback poll at most
const POLL_MS = 5000;                  // fallback refresh of GET /api/v1/devices
const TICK_MS = 1000;                  // "12 s ago" is recomputed this often
const OPTIONAL = new Set(["Type", "Session", "Position"]);  // columns left out on a phone (the detail has them)
const COMMANDS = ["play", "pause", "stop", "seek", "join", "leave"];

export function render(root, ctx) {
  const { h, api, fmt, toast } = ctx;
  const SNAPSHOT_TOPIC = ctx.caller.topics.presence_admin_root + "/devices/snapshot";
  const devices = new Map();           // deviceId -> registry entry (as the API gives it)
  let selected = null;                 // deviceId whose detail is open
  let detailSeen = null;               // last_seen of the selected device when its detail was fetched
  let lastLive = 0;                    // when a snapshot last arrived
  let closed = false;
  const cleanups = [];

  // -- filters ---------------------------------------------------------------------------------
  const status = h("select", { id: "dev-status" },
    h("option", { value: "" }, "any"), h("option", { value: "online" }, "online"),
    h("option", { value: "offline" }, "offline"));
  const type = h("select", { id: "dev-type" }, h("option", { value: "" }, "any"));
  const session = h("select", { id: "dev-session" }, h("option", { value: "" }, "any"));
  const search = h("input", { id: "dev-search", type: "search", placeholder: "id or name" });
  const field = (id, label, input) => h("div", { class: "dev-field" }, h("label", { for: id }, label), input);
  const counts = h("p", { class: "muted", id: "dev-counts", "aria-live": "polite" }, "Loading devices…");
  const tbody = h("tbody", {});
  const empty = h("p", { class: "muted dev-empty" });
  const more = h("p", { class: "muted" });
  const table = h("div", { class: "table-wrap" }, h("table", { id: "device-table" },
    h("thead", {}, h("tr", {}, ...["", "Device", "Type", "Status", "Session", "Position", "Last seen"].map(
      (t) => h("th", { scope: "col", class: OPTIONAL.has(t) ? "dev-opt" : null }, t)))),
    tbody));

  const detail = h("div", { class: "card stack dev-detail", id: "device-detail", hidden: true });

  // -- command card ----------------------------------------------------------------------------
  const target = h("select", { id: "cmd-target" },
    h("option", { value: "device" }, "a device"), h("option", { value: "session" }, "a session"));
  const targetId = h("input", { id: "cmd-target-id", placeholder: "device id", autocomplete: "off" });
  const command = h("select", { id: "cmd-name" }, ...COMMANDS.map((c) => h("option", { value: c }, c)),
    h("option", { value: "" }, "custom…"));
  const custom = h("input", { id: "cmd-custom", placeholder: "command name", autocomplete: "off" });
  const position = h("input", { id: "cmd-position", type: "number", min: "0", step: "1000", placeholder: "90000" });
  const joinSession = h("input", { id: "cmd-session", placeholder: "session id", autocomplete: "off" });
  const params = h("textarea", { id: "cmd-params", placeholder: '{"volume": 0.5}', rows: "2" });
  const result = h("div", { class: "dev-result", id: "cmd-result", "aria-live": "polite" });
  const customField = field("cmd-custom", "Command name", custom);
  const positionField = field("cmd-position", "positionMs", position);
  const sessionField = field("cmd-session", "sessionId", joinSession);
  const sendButton = h("button", { type: "submit", class: "primary" }, "Send command");
  const commandForm = h("form", { class: "card stack needs-write", id: "command-form", onsubmit: send },
    h("h2", {}, "Send a command"),
    h("div", { class: "row dev-fields" }, field("cmd-target", "To", target), field("cmd-target-id", "Id", targetId),
      field("cmd-name", "Command", command), customField, positionField, sessionField),
    h("div", {}, h("label", { for: "cmd-params" }, "Params (optional JSON object)"), params),
    h("div", { class: "row" }, sendButton), result);

  function showCommandFields() {
    customField.hidden = command.value !== "";
    positionField.hidden = command.value !== "seek";
    sessionField.hidden = command.value !== "join";
    targetId.placeholder = target.value === "device" ? "device id" : "session id";
  }
  command.addEventListener("change", showCommandFields);
  target.addEventListener("change", showCommandFields);
  showCommandFields();

  root.append(
    h("h1", {}, "Devices"),
    h("div", { class: "stack" },
      h("div", { class: "card stack" },
        h("div", { class: "row dev-fields" }, field("dev-status", "Online", status), field("dev-type", "Type", type),
          field("dev-session", "Session", session), field("dev-search", "Search", search)),
        counts, table, empty, more),
      h("div", { class: "dev-lower" }, detail, commandForm)));

  // -- rendering -------------------------------------------------------------------------------
  const since = (entry) => fmt.ago(entry.last_seen);
  const position_ = (ms) => {
    if (ms === null || ms === undefined) return "–";
    const s = Math.floor(ms / 1000);
    return Math.floor(s / 60) + ":" + String(s % 60).padStart(2, "0");
  };

  function matches(entry) {
    if (status.value && entry.online !== (status.value === "online")) return false;
    if (type.value && entry.type !== type.value) return false;
    if (session.value && entry.sessionId !== session.value) return false;
    const needle = search.value.trim().toLowerCase();
    if (needle && !entry.deviceId.toLowerCase().includes(needle)
        && !String(entry.name || "").toLowerCase().includes(needle)) return false;
    return true;
  }

  function fillOptions(select, values) {
    const current = select.value;
    const wanted = ["", ...[...values].sort()];
    const have = [...select.options].map((o) => o.value);
    if (wanted.length === have.length && wanted.every((v, i) => v === have[i])) return;
    if (current && !values.has(current)) wanted.push(current);
    select.replaceChildren(...wanted.map((v) => h("option", { value: v }, v === "" ? "any" : v)));
    select.value = current;
  }

  function row(entry) {
    const tr = h("tr", { class: "dev-row" + (entry.deviceId === selected ? " selected" : ""),
                         dataset: { id: entry.deviceId }, tabindex: "0",
                         "aria-label": "Device " + entry.deviceId,
                         onclick: () => open(entry.deviceId),
                         onkeydown: (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); open(entry.deviceId); } } },
      h("td", {}, h("span", { class: "badge " + (entry.online ? "online" : "offline") }, entry.online ? "online" : "offline")),
      h("td", {}, h("div", { class: "dev-name" }, entry.name || entry.deviceId),
        h("div", { class: "muted mono" }, entry.deviceId)),
      h("td", { class: "dev-opt" }, entry.type || "–"),
      h("td", { class: "dev-status" }, entry.status || "–"),
      h("td", { class: "dev-opt" }, entry.sessionId || "–"),
      h("td", { class: "mono dev-opt" }, position_(entry.positionMs)),
      h("td", { class: "dev-seen", dataset: { seen: entry.last_seen || "" }, title: entry.last_seen || "" }, since(entry)));
    return tr;
  }

  const draw = ctx.batch(() => {
    if (closed) return;
    const all = [...devices.values()];
    fillOptions(type, new Set(all.map((e) => e.type).filter(Boolean)));
    fillOptions(session, new Set(all.map((e) => e.sessionId).filter(Boolean)));
    const shown = all.filter(matches).sort((a, b) => a.deviceId.localeCompare(b.deviceId));
    const online = all.filter((e) => e.online).length;
    counts.textContent = `${fmt.number(all.length)} device${all.length === 1 ? "" : "s"} · ${fmt.number(online)} online` +
      (shown.length !== all.length ? ` · ${fmt.number(shown.length)} match the filter` : "");
    tbody.replaceChildren(...shown.slice(0, MAX_ROWS).map(row));
    table.hidden = shown.length === 0;
    empty.hidden = shown.length !== 0;
    empty.textContent = all.length ? "No device matches the filter." :
      "No devices yet: a device appears when it announces itself on devices/discovery/announce or publishes its status.";
    more.hidden = shown.length <= MAX_ROWS;
    more.textContent = `${fmt.number(shown.length - MAX_ROWS)} more not shown: narrow the filter.`;
    if (selected && devices.has(selected) && devices.get(selected).last_seen !== detailSeen) loadDetail();
  });
  for (const input of [status, type, session]) input.addEventListener("change", draw);
  search.addEventListener("input", draw);

  function tick() {
    for (const cell of tbody.querySelectorAll("td.dev-seen")) {
      cell.textContent = fmt.ago(cell.dataset.seen || null);
    }
    for (const cell of detail.querySelectorAll("[data-seen]")) cell.textContent = fmt.ago(cell.dataset.seen || null);
  }
  const ticker = setInterval(tick, TICK_MS);
  cleanups.push(() => clearInterval(ticker));

  function replaceAll(entries) {
    devices.clear();
    for (const entry of entries) if (entry && typeof entry.deviceId === "string") devices.set(entry.deviceId, entry);
    draw();
  }

  // -- live: the retained snapshot -------------------------------------------------------------
  if (ctx.realtime) {
    cleanups.push(ctx.realtime.subscribe(SNAPSHOT_TOPIC, (msg) => {
      const body = msg.json;
      const list = Array.isArray(body) ? body : body && body.devices;
      if (!Array.isArray(list)) return;
      lastLive = Date.now();
      replaceAll(list);
    }));
  }

  // -- fallback: poll the API ------------------------------------------------------------------
  let polling = false;
  async function poll() {
    if (polling || closed) return;
    polling = true;
    const started = Date.now();
    try {
      const entries = [];
      for (let offset = 0; offset < MAX_DEVICES;) {
        const page = await api("devices", { query: { limit: 1000, offset } });
        entries.push(...page.items);
        offset += page.items.length;
        if (!page.items.length || offset >= page.total) break;
      }
      if (!closed && lastLive < started) replaceAll(entries);  // a snapshot since then is newer
    } catch (err) {
      if (closed) return;
      counts.textContent = "";
      empty.hidden = false;
      table.hidden = devices.size === 0;
      empty.className = "error dev-empty";
      empty.textContent = "The device list could not be read: " + err.message;
      return;
    } finally {
      polling = false;
    }
    empty.className = "muted dev-empty";
  }
  poll();
  const poller = setInterval(() => { if (Date.now() - lastLive > POLL_MS / 2) poll(); }, POLL_MS);
  cleanups.push(() => clearInterval(poller));

  // -- detail ----------------------------------------------------------------------------------
  async function open(id) {
    selected = id;
    detailSeen = null;
    target.value = "device";
    targetId.value = id;
    showCommandFields();
    for (const tr of tbody.querySelectorAll("tr.dev-row")) tr.classList.toggle("selected", tr.dataset.id === id);
    await loadDetail();
    if (!closed && selected === id) ctx.reveal(detail);  // it opens below the list: bring it into view
  }

  let loading = null;
  async function loadDetail() {
    const id = selected;
    if (!id || loading === id) return;
    loading = id;
    detailSeen = devices.has(id) ? devices.get(id).last_seen : null;
    try {
      const entry = await api("devices/" + encodeURIComponent(id));
      if (closed || selected !== id) return;
      detailSeen = entry.last_seen;
      showDetail(entry);
    } catch (err) {
      if (closed || selected !== id) return;
      detail.hidden = false;
      detail.replaceChildren(h("h2", {}, id), h("p", { class: "error" }, "Could not read this device: " + err.message));
    } finally {
      loading = null;
    }
  }

  function showDetail(entry) {
    const dl = h("dl", { class: "dev-facts" });
    const fact = (term, value) => dl.append(h("dt", {}, term), h("dd", {}, value));
    fact("Status", h("span", {}, h("span", { class: "badge " + (entry.online ? "online" : "offline") },
      entry.online ? "online" : "offline"), " ", entry.status || "–"));
    fact("Type", entry.type || "–");
    fact("Session", entry.sessionId || "–");
    fact("Position", position_(entry.positionMs));
    fact("Last seen", h("span", { dataset: { seen: entry.last_seen || "" }, title: entry.last_seen }, fmt.ago(entry.last_seen)));
    fact("First seen", fmt.time(entry.first_seen));
    fact("Client id", h("code", {}, entry.client_id || "–"));
    const events = (entry.events || []).slice(0, 50);
    const sessionButton = entry.sessionId ? h("button", { type: "button", onclick: () => {
      target.value = "session"; targetId.value = entry.sessionId; showCommandFields(); command.focus();
    } }, "Command its session") : null;
    detail.hidden = false;
    detail.replaceChildren(
      h("div", { class: "row" }, h("h2", {}, entry.name || entry.deviceId),
        h("code", { class: "muted" }, entry.deviceId),
        h("button", { type: "button", class: "link dev-close", onclick: () => {
          selected = null; detail.hidden = true;
          for (const tr of tbody.querySelectorAll("tr.selected")) tr.classList.remove("selected");
        } }, "Close")),
      dl,
      h("div", { class: "row needs-write" }, h("button", { type: "button", onclick: () => command.focus() }, "Command this device"),
        sessionButton),
      h("div", {}, h("h3", {}, "Last status"),
        h("pre", { class: "dev-json", id: "device-last-status" },
          entry.last_status ? JSON.stringify(entry.last_status, null, 2) : "none yet")),
      h("div", {}, h("h3", {}, "Recent events"),
        events.length ? h("ul", { class: "dev-events" }, ...events.map((e) => h("li", {},
          h("span", { class: "muted" }, fmt.time(e.timestamp)), " ", h("strong", {}, String(e.event ?? "event")), " ",
          h("code", {}, compact(e)))))
          : h("p", { class: "muted" }, "No events from this device yet.")));
  }

  function compact(event) {
    const rest = Object.fromEntries(Object.entries(event).filter(([k]) => !["deviceId", "event", "timestamp"].includes(k)));
    const text = JSON.stringify(rest);
    return text === "{}" ? "" : text.length > 200 ? text.slice(0, 200) + "…" : text;
  }

  // -- commands --------------------------------------------------------------------------------
  async function send(event) {
    event.preventDefault();
    const id = targetId.value.trim();
    const name = command.value || custom.value.trim();
    if (!id) { toast("Choose a " + target.value + " first (its id).", "error"); targetId.focus(); return; }
    if (!name) { toast("Name the command.", "error"); custom.focus(); return; }
    let body = {};
    if (params.value.trim()) {
      try { body = JSON.parse(params.value); } catch (err) {
        toast("Params are not JSON: " + err.message, "error"); params.focus(); return;
      }
      if (!body || typeof body !== "object" || Array.isArray(body)) {
        toast("Params must be a JSON object.", "error"); params.focus(); return;
      }
    }
    if (name === "seek" && command.value === "seek") {
      if (position.value === "") { toast("seek needs positionMs.", "error"); position.focus(); return; }
      body.positionMs = Number(position.value);
    }
    if (name === "join" && command.value === "join") {
      if (!joinSession.value.trim()) { toast("join needs a sessionId.", "error"); joinSession.focus(); return; }
      body.sessionId = joinSession.value.trim();
    }
    const path = (target.value === "device" ? "devices/" : "sessions/") + encodeURIComponent(id) +
      "/commands/" + encodeURIComponent(name);
    sendButton.disabled = true;
    try {
      const answer = await api(path, { method: "POST", body });
      if (closed) return;
      const online = target.value === "device" ? (answer.online ? "online" : "offline")
                                                : answer.online + " online in the session";
      result.replaceChildren(h("dl", { class: "dev-facts" },
        h("dt", {}, "Topic"), h("dd", {}, h("code", {}, answer.topic)),
        h("dt", {}, "Command id"), h("dd", {}, h("code", {}, answer.commandId)),
        h("dt", {}, "Matched"), h("dd", { id: "cmd-matched" }, fmt.number(answer.matched) + " subscription" + (answer.matched === 1 ? "" : "s")),
        h("dt", {}, "Target"), h("dd", {}, online)));
      toast(`${name} sent to ${id}` + (answer.matched ? "" : " (no subscriber yet)"));
    } catch (err) {
      if (closed) return;
      result.replaceChildren(h("p", { class: "error" }, "Not sent: " + (err.detail || err.message)));
      toast("Command not sent: " + (err.detail || err.message), "error");
    } finally {
      sendButton.disabled = false;
    }
  }

  return () => {
    closed = true;
    for (const undo of cleanups) { try { undo(); } catch (err) { /* already gone */ } }
  };
}
