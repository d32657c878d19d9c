// Resources: the change-event service (README "Resource change events"), live.
//
// Choose a kind; its resources are listed (GET /api/v1/resources/{kind}, paged) and kept current by
// the events on `<events_prefix>/<kind>/+` (ctx.realtime; the prefix the broker is configured with,
// from ctx.caller.topics): created rows appear, deleted rows go, updated rows
// change in place with the fields of the last update marked `.changed` (the highlight fades; the
// mark stays until the row's next update). `seq` counts a kind's changes without gaps: an event
// past the next seq means some were missed, and they are fetched from
// GET /api/v1/resources/{kind}/events?since=<last seq>. `<events_prefix>/all` shows which kinds are active.

export const title = "Resources";

export const PAGE_SIZE = 100;          // resources per page
export const MAX_ROWS = 500;           // rows in the table at most (live creations included)
export const MAX_LOG = 100;            // events kept in the log
const MAX_KINDS = 30;                  // kinds remembered from live events
const FIELDS_SHOWN = 12;               // fields of a resource shown in its row
const FADE_MS = 1000;                  // a highlight starts to fade after this
const STORE = "wrenmq.console.resources.kind";
const RESERVED = new Set(["event", "diff", "timestamp", "seq", "id"]);
const LATEST = 9007199254740991;       // ?since= past any seq: the answer's last_seq is the kind's latest

// The kind an event is about: the key k with a k + "_id" beside it (README: `flow` and `flow_id`).
function kindOf(event) {
  if (!event || typeof event !== "object") return null;
  for (const key of Object.keys(event)) {
    if (RESERVED.has(key) || typeof event[key] !== "object" || event[key] === null) continue;
    if (typeof event[key + "_id"] === "string") return key;
  }
  return null;
}

// A resource as dotted field paths (nested objects flattened, lists whole: as the diff names them).
function flatten(value, prefix = "", out = []) {
  for (const [key, inner] of Object.entries(value)) {
    const path = prefix ? prefix + "." + key : key;
    if (inner && typeof inner === "object" && !Array.isArray(inner) && Object.keys(inner).length) flatten(inner, path, out);
    else out.push([path, inner]);
  }
  return out;
}

const show = (value) => (typeof value === "string" ? value : JSON.stringify(value));

export function render(root, ctx) {
  const { h, api, fmt, toast } = ctx;
  const PREFIX = ctx.caller.topics.events_prefix;
  let kind = sessionStorage.getItem(STORE) || "";
  let offset = 0;
  let total = 0;
  let lastSeq = null;                  // the kind's last seq applied (null: still loading)
  let generation = 0;                  // bumps when the kind changes: late answers are dropped
  let closed = false;
  let unsubscribe = null;
  const rows = new Map();              // id -> {resource, changed: Set, fresh}
  let order = [];                      // ids in table order
  const elements = new Map();          // id -> <tr>
  const dirty = new Set();
  let orderDirty = true;
  const log = [];
  const kinds = new Map();             // kind -> events seen live
  const timers = new Set();
  const cleanups = [];

  // -- layout ----------------------------------------------------------------------------------
  const kindInput = h("input", { id: "res-kind", list: "res-kinds", placeholder: "flow", autocomplete: "off", value: kind });
  const kindList = h("datalist", { id: "res-kinds" });
  const seen = h("div", { class: "row res-seen", id: "res-seen" });
  const kindForm = h("form", { class: "row res-kind-form", onsubmit: (e) => { e.preventDefault(); choose(kindInput.value.trim()); } },
    h("div", {}, h("label", { for: "res-kind" }, "Kind"), kindInput, kindList),
    h("button", { type: "submit", class: "primary" }, "Show"));
  const status = h("p", { class: "muted", id: "res-status", "aria-live": "polite" });
  const heading = h("h2", { id: "res-title" }, "Resources");
  const tbody = h("tbody", {});
  const table = h("div", { class: "table-wrap" }, h("table", { id: "resource-table" },
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Id"), h("th", { scope: "col" }, "Fields"),
      h("th", { scope: "col", class: "needs-write" }, h("span", { class: "res-sr" }, "Actions")))), tbody));
  const empty = h("p", { class: "muted" });
  const prev = h("button", { type: "button", onclick: () => page(offset - PAGE_SIZE) }, "Previous");
  const next = h("button", { type: "button", onclick: () => page(offset + PAGE_SIZE) }, "Next");
  const pager = h("div", { class: "row" }, prev, next);
  const logList = h("ol", { class: "res-log", id: "res-log", reversed: true });
  const logEmpty = h("p", { class: "muted" }, "No events yet: changes appear here as they happen.");

  const editId = h("input", { id: "res-id", placeholder: "f1", autocomplete: "off" });
  const editBody = h("textarea", { id: "res-body", rows: "6", placeholder: '{"label": "cam 1"}' });
  const saveButton = h("button", { type: "submit", class: "primary" }, "Save");
  const editForm = h("form", { class: "card stack needs-write", id: "res-edit", onsubmit: save },
    h("h2", {}, "Create or replace"),
    h("div", {}, h("label", { for: "res-id" }, "Id"), editId),
    h("div", {}, h("label", { for: "res-body" }, "Resource (a JSON object; PUT replaces it whole)"), editBody),
    h("div", { class: "row" }, saveButton,
      h("button", { type: "button", onclick: () => { editId.value = ""; editBody.value = ""; editId.focus(); } }, "Clear")));

  root.append(
    h("h1", {}, "Resources"),
    h("div", { class: "stack" },
      h("div", { class: "card stack" }, kindForm, seen),
      h("div", { class: "card stack" }, heading, status, table, empty, pager),
      h("div", { class: "res-lower" },
        h("div", { class: "card stack" }, h("h2", {}, "Events"), logEmpty, logList),
        editForm)));

  // -- rendering -------------------------------------------------------------------------------
  function rowElement(id) {
    const entry = rows.get(id);
    const fields = flatten(entry.resource);
    const shown = fields.slice(0, FIELDS_SHOWN).map(([path, value]) =>
      h("span", { class: "res-field" + (entry.changed.has(path) ? " changed" : ""), dataset: { path } },
        h("span", { class: "muted" }, path), " ", h("span", { class: "mono" }, show(value))));
    if (fields.length > FIELDS_SHOWN) shown.push(h("span", { class: "muted" }, `+${fields.length - FIELDS_SHOWN} more`));
    if (!fields.length) shown.push(h("span", { class: "muted" }, "{}"));
    return h("tr", { class: "res-row" + (entry.fresh ? " res-new" : ""), dataset: { id } },
      h("td", { class: "mono res-id" }, id),
      h("td", {}, h("div", { class: "res-fields" }, shown)),
      h("td", { class: "res-actions needs-write" },
        h("button", { type: "button", class: "link", "aria-label": "Edit " + id, onclick: () => edit(id) }, "Edit"),
        h("button", { type: "button", class: "link res-delete", "aria-label": "Delete " + id, onclick: () => remove(id) }, "Delete")));
  }

  const draw = ctx.batch(() => {
    if (closed) return;
    const faded = [];
    for (const id of dirty) {
      const old = elements.get(id);
      if (!rows.has(id)) { if (old) old.remove(); elements.delete(id); continue; }
      const tr = rowElement(id);
      if (old) old.replaceWith(tr);
      elements.set(id, tr);
      if (tr.querySelector(".changed, .res-new") || tr.classList.contains("res-new")) faded.push(tr);
    }
    dirty.clear();
    if (orderDirty) {
      tbody.replaceChildren(...order.map((id) => elements.get(id)).filter(Boolean));
      orderDirty = false;
    }
    if (faded.length) {
      const timer = setTimeout(() => {
        timers.delete(timer);
        for (const tr of faded) {
          tr.classList.add("res-fade");
        }
      }, FADE_MS);
      timers.add(timer);
    }
    const loading = kind && lastSeq === null;
    table.hidden = !order.length;
    empty.hidden = !!order.length || loading;
    empty.textContent = kind ? `No ${kind} resources yet: create one below, or with PUT /api/v1/resources/${kind}/{id}.`
                             : "Choose a kind to see its resources.";
    pager.hidden = total <= PAGE_SIZE;
    prev.disabled = offset === 0;
    next.disabled = offset + PAGE_SIZE >= total;
    if (kind && !loading) {
      status.textContent = total ? `${fmt.number(offset + 1)}–${fmt.number(Math.min(total, offset + PAGE_SIZE))} of ` +
        `${fmt.number(total)} · last seq ${fmt.number(lastSeq)}` : `last seq ${fmt.number(lastSeq)}`;
    }
  });

  function drawKinds() {
    const names = [...kinds.keys()].sort();
    kindList.replaceChildren(...names.map((k) => h("option", { value: k })));
    seen.replaceChildren(...(names.length ? [h("span", { class: "muted" }, "Seen live:")] : []),
      ...names.map((k) => h("button", { type: "button", class: "link" + (k === kind ? " res-current" : ""),
        "aria-label": `Show ${k} (${kinds.get(k)} events)`, onclick: () => { kindInput.value = k; choose(k); } },
        `${k} (${kinds.get(k)})`)));
  }
  const drawKindsBatched = ctx.batch(drawKinds);

  function addLog(event) {
    log.unshift(event);
    if (log.length > MAX_LOG) log.length = MAX_LOG;
    logEmpty.hidden = true;
    const id = event[kind + "_id"];
    const fields = Object.keys(event.diff || {});
    logList.prepend(h("li", { class: "res-log-item" },
      h("span", { class: "muted mono" }, "#" + event.seq), " ",
      h("span", { class: "badge " + (event.event === "deleted" ? "bad" : event.event === "created" ? "ok" : "") }, event.event),
      " ", h("code", {}, String(id)),
      fields.length && event.event === "updated" ? h("span", { class: "muted" }, " · " + fields.join(", ")) : null,
      h("span", { class: "muted res-when" }, fmt.time(event.timestamp))));
    while (logList.children.length > MAX_LOG) logList.lastElementChild.remove();
  }

  // -- applying events -------------------------------------------------------------------------
  function apply(event) {
    const id = event[kind + "_id"];
    const resource = event[kind];
    if (typeof id !== "string") return;
    lastSeq = event.seq;
    addLog(event);
    if (event.event === "deleted") {
      if (rows.delete(id)) {
        order = order.filter((x) => x !== id);
        total = Math.max(0, total - 1);
        dirty.add(id);
        orderDirty = true;
      }
    } else if (resource && typeof resource === "object") {
      const known = rows.get(id);
      const changed = new Set(event.event === "updated" ? Object.keys(event.diff || {}) : []);
      if (known) {
        rows.set(id, { resource, changed, fresh: false });
        dirty.add(id);
      } else if (event.event === "created" || (offset === 0 && total <= PAGE_SIZE)) {
        rows.set(id, { resource, changed, fresh: true });
        order.unshift(id);
        if (event.event === "created") total += 1;
        while (order.length > MAX_ROWS) { const gone = order.pop(); rows.delete(gone); dirty.add(gone); }
        dirty.add(id);
        orderDirty = true;
      }
    }
    draw();
  }

  let catching = false;
  let again = false;
  // Events after lastSeq from the API, applied in order: after a gap, and once after loading.
  async function catchUp() {
    if (catching) { again = true; return; }
    catching = true;
    const mine = generation;
    try {
      do {
        again = false;
        for (;;) {
          const answer = await api(`resources/${encodeURIComponent(kind)}/events`, { query: { since: lastSeq, limit: 1000 } });
          if (closed || mine !== generation) return;
          for (const event of answer.items) if (event.seq > lastSeq) apply(event);
          if (!answer.more) break;
        }
      } while (again);
    } catch (err) {
      if (!closed && mine === generation) toast("Could not fetch missed events: " + err.message, "error");
    } finally {
      if (mine === generation) catching = false;
    }
  }

  function onEvent(msg, fromAll) {
    const event = msg.json;
    const eventKind = fromAll ? kindOf(event) : msg.topic.split("/")[1];
    if (!eventKind) return;
    kinds.set(eventKind, (kinds.get(eventKind) || 0) + 1);
    if (kinds.size > MAX_KINDS) kinds.delete(kinds.keys().next().value);
    drawKindsBatched();
    if (eventKind !== kind || typeof event.seq !== "number") return;
    if (lastSeq === null || event.seq <= lastSeq) return;        // loading, or already applied
    if (event.seq === lastSeq + 1 && !catching) apply(event);
    else catchUp();                                               // a gap: fetch what was missed
  }

  // An event reaches the browser once per event id, on whichever subscription matched first
  // (events/all or events/<kind>/<id>); both handlers apply it, and seq drops the second.
  cleanups.push(ctx.realtime ? ctx.realtime.subscribe(PREFIX + "/all", (msg) => onEvent(msg, true)) : () => {});

  // -- loading ---------------------------------------------------------------------------------
  async function load() {
    const mine = ++generation;
    catching = false;
    lastSeq = null;
    rows.clear();
    order = [];
    for (const tr of elements.values()) tr.remove();
    elements.clear();
    dirty.clear();
    orderDirty = true;
    status.textContent = kind ? "Loading…" : "";
    status.className = "muted";
    draw();
    if (!kind) return;
    try {
      const path = `resources/${encodeURIComponent(kind)}`;
      const latest = await api(path + "/events", { query: { since: LATEST, limit: 1 } });
      const listing = await api(path, { query: { limit: PAGE_SIZE, offset } });
      if (closed || mine !== generation) return;
      total = listing.total;
      for (const item of listing.items) {
        rows.set(item.id, { resource: item.resource, changed: new Set(), fresh: false });
        order.push(item.id);
        dirty.add(item.id);
      }
      orderDirty = true;             // the draw load() asked for may have run already, with no rows
      lastSeq = latest.last_seq;
      draw();
      catchUp();                     // anything that changed between the two answers
    } catch (err) {
      if (closed || mine !== generation) return;
      status.className = "error";
      status.textContent = `Could not list ${kind}: ` + (err.detail || err.message);
      table.hidden = true;
    }
  }

  function choose(next) {
    if (next === kind && lastSeq !== null) return;
    if (/[/+#]/.test(next) || next.length > 128) {
      toast("A kind is one topic level: no '/', '+' or '#', at most 128 characters.", "error");
      kindInput.focus();
      return;
    }
    kind = next;
    offset = 0;
    if (kind) sessionStorage.setItem(STORE, kind); else sessionStorage.removeItem(STORE);
    heading.textContent = kind ? `Resources of kind ${kind}` : "Resources";
    log.length = 0;
    logList.replaceChildren();
    logEmpty.hidden = false;
    if (unsubscribe) unsubscribe();
    unsubscribe = kind && ctx.realtime ? ctx.realtime.subscribe(`${PREFIX}/${kind}/+`, (msg) => onEvent(msg, false)) : null;
    drawKinds();
    load();
  }

  function page(to) {
    offset = Math.max(0, to);
    load();
  }

  // -- editing ---------------------------------------------------------------------------------
  function edit(id) {
    editId.value = id;
    editBody.value = JSON.stringify(rows.get(id)?.resource ?? {}, null, 2);
    editBody.focus();
  }

  async function save(event) {
    event.preventDefault();
    const id = editId.value.trim();
    if (!kind) { toast("Choose a kind first.", "error"); kindInput.focus(); return; }
    if (!id) { toast("Give the resource an id.", "error"); editId.focus(); return; }
    let body;
    try { body = JSON.parse(editBody.value || "{}"); } catch (err) {
      toast("Not JSON: " + err.message, "error"); editBody.focus(); return;
    }
    if (!body || typeof body !== "object" || Array.isArray(body)) { toast("The resource must be a JSON object.", "error"); return; }
    saveButton.disabled = true;
    try {
      const answer = await api(`resources/${encodeURIComponent(kind)}/${encodeURIComponent(id)}`, { method: "PUT", body });
      toast(answer.event ? `${kind} ${id} ${answer.event.event}` : `${kind} ${id} unchanged`);
    } catch (err) {
      toast("Not saved: " + (err.detail || err.message), "error");
    } finally {
      saveButton.disabled = false;
    }
  }

  async function remove(id) {
    if (!confirm(`Delete ${kind} ${id}? Subscribers get a deleted event.`)) return;
    try {
      await api(`resources/${encodeURIComponent(kind)}/${encodeURIComponent(id)}`, { method: "DELETE" });
      toast(`${kind} ${id} deleted`);
    } catch (err) {
      toast("Not deleted: " + (err.detail || err.message), "error");
    }
  }

  if (kind) { kind = ""; choose(kindInput.value.trim()); } else { drawKinds(); draw(); }

  return () => {
    closed = true;
    generation++;
    if (unsubscribe) unsubscribe();
    for (const undo of cleanups) undo();
    for (const timer of timers) clearTimeout(timer);
    timers.clear();
  };
}
