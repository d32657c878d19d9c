// Retained: the retained message explorer. GET /api/v1/retained lists them (paged, in topic
// order), narrowed by an MQTT topic filter and `search` (text in the topic or the text payload,
// matched on the server, so it covers every message, not only the page shown). A click opens one
// (GET /api/v1/retained/{topic}): payload in the chosen format and properties; callers that may
// write can clear it (DELETE, after a confirmation).

import { FORMATS, FORMAT_NAMES, showPayload } from "../payload.js";

export const title = "Retained";

export const PAGE_SIZE = 50;
const SEARCH_DELAY_MS = 250;
const levelPath = (topic) => topic.split("/").map(encodeURIComponent).join("/");

export function render(root, ctx) {
  const { h, api, fmt, toast } = ctx;
  let closed = false;
  let offset = 0;
  let selected = null;
  let timer = null;
  let asked = 0;                        // answers to older searches are dropped

  const filter = h("input", { id: "ret-filter", type: "search", value: "#", autocomplete: "off", placeholder: "#" });
  const search = h("input", { id: "ret-search", type: "search", autocomplete: "off", placeholder: "topic or payload text" });
  const field = (id, label, input, cls) => h("div", { class: cls }, h("label", { for: id }, label), input);
  const summary = h("p", { class: "muted", id: "ret-summary", "aria-live": "polite" }, "Loading…");
  const problem = h("p", { class: "error", role: "alert", hidden: true });
  const tbody = h("tbody", {});
  const table = h("div", { class: "table-wrap" }, h("table", { id: "retained-table" },
    h("thead", {}, h("tr", {}, ...["Topic", "QoS", "Size", "Content type", "Expires"].map(
      (t, i) => h("th", { scope: "col", class: i >= 3 ? "ret-opt" : null }, t)))), tbody));
  const previous = h("button", { type: "button", onclick: () => { offset = Math.max(0, offset - PAGE_SIZE); load(); } }, "Previous");
  const next = h("button", { type: "button", onclick: () => { offset += PAGE_SIZE; load(); } }, "Next");
  const pager = h("div", { class: "row cl-pager" }, previous, next);
  const detail = h("div", { class: "card stack ret-detail cl-detail", id: "retained-detail", hidden: true });
  const view = h("select", { id: "ret-view" }, ...["auto", ...FORMATS].map((f) => h("option", { value: f }, FORMAT_NAMES[f])));

  root.append(h("div", { class: "stack" },
    h("h1", {}, "Retained messages"),
    h("form", { class: "card row ret-search", role: "search", onsubmit: (e) => { e.preventDefault(); offset = 0; load(); } },
      field("ret-filter", "Topic filter", filter, "ret-field"), field("ret-search", "Search", search, "ret-field ret-grow")),
    h("div", { class: "cl-columns" }, h("div", { class: "stack cl-list" }, summary, problem, table, pager), detail)));

  const onInput = () => { clearTimeout(timer); timer = setTimeout(() => { offset = 0; load(); }, SEARCH_DELAY_MS); };
  filter.addEventListener("input", onInput);
  search.addEventListener("input", onInput);

  async function load() {
    const mine = ++asked;
    const topicFilter = filter.value.trim() || "#";
    try {
      const page = await api("retained", { query: { filter: topicFilter, search: search.value.trim(), limit: PAGE_SIZE, offset } });
      if (closed || mine !== asked) return;
      problem.hidden = true;
      tbody.replaceChildren(...page.items.map((item) => h("tr", { dataset: { topic: item.topic },
          class: item.topic === selected ? "selected" : null },
        h("td", {}, h("button", { type: "button", class: "link cl-id", onclick: () => open(item.topic) }, item.topic)),
        h("td", {}, String(item.qos)),
        h("td", {}, fmt.bytes(item.payload_size)),
        h("td", { class: "ret-opt" }, item.content_type || "–"),
        h("td", { class: "ret-opt" }, item.message_expiry_interval === null ? "never" : item.message_expiry_interval + " s"))));
      table.hidden = page.items.length === 0;
      summary.textContent = page.total
        ? `${fmt.number(page.offset + 1)}–${fmt.number(page.offset + page.items.length)} of ${fmt.number(page.total)} retained messages`
        : search.value.trim() || topicFilter !== "#" ? "No retained message matches." : "No retained messages yet.";
      pager.hidden = page.total <= PAGE_SIZE;
      previous.disabled = offset === 0;
      next.disabled = offset + PAGE_SIZE >= page.total;
    } catch (err) {
      if (closed || mine !== asked || err.status === 401) return;
      problem.hidden = false;
      problem.textContent = "Could not list: " + (err.detail || err.message);
    }
  }

  async function open(topic) {
    selected = topic;
    for (const tr of tbody.children) tr.classList.toggle("selected", tr.dataset.topic === topic);
    let message;
    try {
      message = await api("retained/" + levelPath(topic));
    } catch (err) {
      if (closed || selected !== topic) return;
      detail.hidden = false;
      detail.replaceChildren(head(topic), h("p", { class: err.status === 404 ? "muted" : "error" },
        err.status === 404 ? "This retained message was cleared." : "Could not read it: " + (err.detail || err.message)));
      return;
    }
    if (closed || selected !== topic) return;
    const bytes = Uint8Array.from(atob(message.payload_base64), (c) => c.charCodeAt(0));
    const payload = h("pre", { class: "tp-payload", id: "retained-payload" });
    const draw = () => {
      const shown = showPayload(bytes, view.value);
      payload.textContent = shown.text;
      payload.dataset.kind = shown.kind;
    };
    view.onchange = draw;
    draw();
    const props = Object.entries(message.properties || {}).filter(([, v]) => v !== null && !(Array.isArray(v) && !v.length));
    detail.hidden = false;
    detail.replaceChildren(...[head(topic),
      h("p", { class: "muted" }, `QoS ${message.qos} · ${fmt.bytes(message.payload_size)}`),
      h("div", { class: "row" }, h("label", { for: "ret-view" }, "Show as"), view),
      payload,
      props.length ? h("dl", { class: "cl-facts" }, props.flatMap(([k, v]) =>
        [h("dt", {}, k.replace(/_/g, " ")), h("dd", { class: "mono" }, typeof v === "object" ? JSON.stringify(v) : String(v))])) : null,
      h("div", { class: "row needs-write" }, h("button", { type: "button", class: "danger", id: "ret-clear",
        onclick: () => clear(topic) }, "Clear retained message"))].filter(Boolean));  // (DOM, not h: no nulls)
    ctx.reveal(detail);
  }

  function head(topic) {
    return h("div", { class: "row" }, h("h2", { class: "mono cl-detail-id" }, topic),
      h("button", { type: "button", class: "link cl-close", onclick: () => {
        selected = null; detail.hidden = true;
        for (const tr of tbody.children) tr.classList.remove("selected");
      } }, "Close"));
  }

  async function clear(topic) {
    if (!window.confirm(`Clear the retained message on ${topic}? New subscribers will no longer receive it.`)) return;
    try {
      await api("retained/" + levelPath(topic), { method: "DELETE" });
      toast(`Retained message on ${topic} cleared.`);
      selected = null;
      detail.hidden = true;
    } catch (err) {
      toast(`Could not clear ${topic}: ${err.detail || err.message}`, "error");
    }
    load();
  }

  load();
  return () => { closed = true; clearTimeout(timer); };
}
