// Clients: every session, connected or not (GET /api/v1/clients, paged and filtered on the
// server). Rows are kept by client id and updated in place every REFRESH_MS while the tab is
// visible, so the search, the scroll position and the focus survive a refresh. Disconnect (and
// "discard session") is DELETE /api/v1/clients/{id}; a click on a client id opens its session
// (GET /api/v1/clients/{id}) beside the list.

export const title = "Clients";

export const PAGE_SIZE = 50;            // rows per page (the API allows up to 1000)
export const REFRESH_MS = 3000;
const SEARCH_DELAY_MS = 250;

const clientPath = (id) => "clients/" + id.split("/").map(encodeURIComponent).join("/");

export function render(root, ctx) {
  const { h, api, fmt, toast } = ctx;
  let closed = false;
  let offset = 0;
  let total = 0;
  let selected = null;                  // client id whose session is open
  let searchTimer = null;
  let loading = false;
  let again = false;                    // a refresh was asked for while one was running
  const rows = new Map();               // client id -> { tr, cells..., item }

  // -- search ------------------------------------------------------------------------------------
  const prefix = h("input", { id: "client-prefix", type: "search", placeholder: "sensor-", autocomplete: "off" });
  const username = h("input", { id: "client-username", type: "search", placeholder: "any", autocomplete: "off" });
  const connected = h("select", { id: "client-connected" },
    h("option", { value: "" }, "any"), h("option", { value: "true" }, "connected"),
    h("option", { value: "false" }, "offline"));
  const field = (id, label, input) => h("div", { class: "cl-field" }, h("label", { for: id }, label), input);
  const onSearch = () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => { offset = 0; refresh(); }, SEARCH_DELAY_MS);
  };
  prefix.addEventListener("input", onSearch);
  username.addEventListener("input", onSearch);
  connected.addEventListener("change", () => { offset = 0; refresh(); });

  // -- list --------------------------------------------------------------------------------------
  const summary = h("p", { class: "muted", id: "client-summary", "aria-live": "polite" }, "Loading clients…");
  const problem = h("p", { class: "error", role: "alert", hidden: true });
  const tbody = h("tbody", {});
  const empty = h("p", { class: "muted cl-empty", hidden: true });
  const table = h("div", { class: "table-wrap" }, h("table", { id: "client-table" },
    h("thead", {}, h("tr", {}, ...["Client id", "Protocol", "Address", "Status", "Subscriptions", "Queued", ""].map(
      (t, i) => h("th", { scope: "col", class: i === 2 || i === 1 ? "cl-opt" : i === 6 ? "needs-write" : null }, t)))),
    tbody));
  const previousButton = h("button", { type: "button", onclick: () => { offset = Math.max(0, offset - PAGE_SIZE); refresh(); } }, "Previous");
  const nextButton = h("button", { type: "button", onclick: () => { offset += PAGE_SIZE; refresh(); } }, "Next");
  const pager = h("div", { class: "row cl-pager" }, previousButton, nextButton);
  const detail = h("div", { class: "card stack cl-detail", id: "client-detail", hidden: true, "aria-live": "polite" });

  root.append(h("div", { class: "stack" },
    h("h1", {}, "Clients"),
    h("div", { class: "card row cl-search", role: "search" },
      field("client-prefix", "Client id starts with", prefix),
      field("client-username", "User name", username),
      field("client-connected", "Status", connected)),
    h("div", { class: "cl-columns" },
      h("div", { class: "stack cl-list" }, summary, problem, table, empty, pager),
      detail)));

  // -- actions -----------------------------------------------------------------------------------
  async function disconnect(id, discard) {
    const question = discard
      ? `Disconnect ${id} (if connected) and discard its session: its subscriptions and queued messages?`
      : `Disconnect ${id}? Its session stays; the client may reconnect.`;
    if (!window.confirm(question)) return;
    try {
      await api(clientPath(id), { method: "DELETE", query: { discard_session: discard ? "true" : undefined } });
      toast(discard ? `Session of ${id} discarded.` : `${id} disconnected.`);
    } catch (err) {
      toast(`Could not ${discard ? "discard the session of" : "disconnect"} ${id}: ${err.detail || err.message}`, "error");
    }
    refresh();
  }

  function makeRow(id) {
    const open = h("button", { type: "button", class: "link cl-id", title: "Show the session",
      onclick: async () => { selected = id; markSelected(); await showDetail(); if (selected === id) ctx.reveal(detail); } }, id);
    const cells = {
      protocol: h("td", { class: "cl-opt" }), address: h("td", { class: "mono cl-opt" }),
      status: h("td", { class: "cl-status" }),
      // data-label: on a phone each row is a card and the cells name themselves (console.css)
      subs: h("td", { class: "num", dataset: { label: "Subscriptions" } }),
      queued: h("td", { class: "num", dataset: { label: "Queued" } }),
    };
    const disconnectButton = h("button", { type: "button", class: "danger cl-disconnect",
      "aria-label": "Disconnect " + id, onclick: () => disconnect(id, false) }, "Disconnect");
    const discardButton = h("button", { type: "button", class: "link cl-discard",
      "aria-label": "Discard the session of " + id, onclick: () => disconnect(id, true) }, "Discard session");
    const tr = h("tr", { dataset: { client: id } },
      h("td", { class: "cl-idcell" }, open), cells.protocol, cells.address, cells.status, cells.subs, cells.queued,
      h("td", { class: "cl-actions needs-write" }, disconnectButton, discardButton));
    return { tr, cells, disconnectButton, item: null };
  }

  function update(row, item) {
    if (row.item && JSON.stringify(row.item) === JSON.stringify(item)) return;
    row.item = item;
    row.cells.protocol.textContent = item.protocol;
    row.cells.address.textContent = item.address || "–";
    const badge = h("span", { class: "badge " + (item.connected ? "online" : "offline") },
      item.connected ? "connected" : "offline");
    if (item.username) row.cells.status.replaceChildren(badge, h("div", { class: "muted" }, item.username));
    else row.cells.status.replaceChildren(badge);
    row.cells.subs.textContent = fmt.number(item.subscription_count);
    row.cells.queued.textContent = fmt.number(item.queued) + (item.inflight ? ` (+${item.inflight} in flight)` : "");
    row.disconnectButton.hidden = !item.connected;
  }

  function markSelected() {
    for (const [id, row] of rows) row.tr.classList.toggle("selected", id === selected);
  }

  function showList(page) {
    total = page.total;
    const seen = new Set();
    const order = page.items.map((item) => {
      seen.add(item.client_id);
      let row = rows.get(item.client_id);
      if (!row) { row = makeRow(item.client_id); rows.set(item.client_id, row); }
      update(row, item);
      return row.tr;
    });
    for (const id of [...rows.keys()]) if (!seen.has(id)) rows.delete(id);
    const current = [...tbody.children];
    if (current.length !== order.length || current.some((tr, i) => tr !== order[i])) tbody.replaceChildren(...order);
    markSelected();
    const filtered = prefix.value || username.value || connected.value;
    empty.hidden = page.items.length > 0;
    table.hidden = page.items.length === 0;
    empty.textContent = filtered ? "No client matches this search." : "No clients yet: connect one with any MQTT client.";
    summary.textContent = total
      ? `${fmt.number(page.offset + 1)}–${fmt.number(page.offset + page.items.length)} of ${fmt.number(total)} clients`
      : "";
    pager.hidden = total <= PAGE_SIZE;
    previousButton.disabled = offset === 0;
    nextButton.disabled = offset + PAGE_SIZE >= total;
  }

  async function refresh() {
    if (loading) { again = true; return; }
    loading = true;
    again = false;
    try {
      const page = await api("clients", { query: {
        limit: PAGE_SIZE, offset, prefix: prefix.value, username: username.value.trim(), connected: connected.value } });
      if (closed) return;
      problem.hidden = true;
      if (page.items.length === 0 && offset > 0 && page.total > 0) {  // the last page emptied: step back
        offset = Math.max(0, Math.floor((page.total - 1) / PAGE_SIZE) * PAGE_SIZE);
        again = true;
      } else {
        showList(page);
      }
    } catch (err) {
      if (closed || err.status === 401) return;
      problem.hidden = false;
      problem.textContent = "The clients could not be listed: " + (err.detail || err.message);
    } finally {
      loading = false;
    }
    if (again && !closed) return refresh();
    if (selected) showDetail();
  }

  // -- session detail ----------------------------------------------------------------------------
  async function showDetail() {
    const id = selected;
    if (id === null) return;
    detail.hidden = false;
    let client = null;
    try {
      // The list first: a session that ended costs no 404 (which the browser would log as an error).
      const found = await api("clients", { query: { prefix: id, limit: 1 } });
      if (found.items.length && found.items[0].client_id === id) client = await api(clientPath(id));
      else throw Object.assign(new Error("gone"), { status: 404 });
    } catch (err) {
      if (closed || selected !== id) return;
      const gone = err.status === 404;
      detail.replaceChildren(detailHead(id), h("p", { class: gone ? "muted" : "error" },
        gone ? "This session has ended." : "The session could not be read: " + (err.detail || err.message)));
      return;
    }
    if (closed || selected !== id) return;
    const fact = (label, value) => [h("dt", {}, label), h("dd", {}, value)];
    const expiry = client.session_expiry_interval === 4294967295 ? "never ends"
      : client.session_expiry_interval + " s after disconnect";
    const subs = client.subscriptions.length
      ? h("div", { class: "table-wrap" }, h("table", { id: "client-subscriptions" },
          h("thead", {}, h("tr", {}, ...["Topic filter", "QoS", "Options"].map((t) => h("th", { scope: "col" }, t)))),
          h("tbody", {}, ...client.subscriptions.map((s) => h("tr", {},
            h("td", { class: "mono" }, s.topic_filter),
            h("td", {}, String(s.qos)),
            h("td", { class: "muted" }, [
              s.no_local && "no local", s.retain_as_published && "retain as published",
              s.retain_handling ? "retain handling " + s.retain_handling : null,
              s.subscription_identifier ? "id " + s.subscription_identifier : null,
            ].filter(Boolean).join(", ") || "–"))))))
      : h("p", { class: "muted" }, "No subscriptions.");
    detail.replaceChildren(
      detailHead(id),
      h("dl", { class: "cl-facts" },
        fact("Status", h("span", { class: "badge " + (client.connected ? "online" : "offline") },
          client.connected ? "connected" : "offline")),
        fact("Protocol", "MQTT " + client.protocol),
        fact("Address", client.address || "–"),
        fact("Listener", client.listener || "–"),
        fact("User name", client.username || "–"),
        fact("Connected since", client.connected_since ? fmt.time(client.connected_since) : "–"),
        fact("Keep alive", client.keep_alive === null ? "–" : client.keep_alive + " s"),
        fact("Session", expiry),
        fact("In flight", fmt.number(client.inflight)),
        fact("Queued", fmt.number(client.queued)),
        fact("Dropped", fmt.number(client.dropped))),
      h("h3", {}, "Subscriptions"), subs);
  }

  function detailHead(id) {
    return h("div", { class: "row" }, h("h2", { class: "mono cl-detail-id" }, id),
      h("a", { class: "cl-trace", href: "#/trace/" + encodeURIComponent(id) }, "Trace"),
      h("button", { type: "button", class: "link cl-close", onclick: () => {
        selected = null; detail.hidden = true; detail.replaceChildren(); markSelected();
      } }, "Close"));
  }

  refresh();
  const timer = setInterval(() => { if (document.visibilityState === "visible") refresh(); }, REFRESH_MS);
  return () => {
    closed = true;
    clearInterval(timer);
    clearTimeout(searchTimer);
  };
}
