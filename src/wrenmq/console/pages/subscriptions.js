// Subscriptions: every subscription of every session (GET /api/v1/subscriptions, management),
// paged in topic filter order and narrowed by client id and topic filter prefix, refreshed every
// REFRESH_MS while the tab is visible. Shared subscriptions show their group.

export const title = "Subscriptions";

export const PAGE_SIZE = 100;
const REFRESH_MS = 3000;
const SEARCH_DELAY_MS = 250;

export function render(root, ctx) {
  const { h, api, fmt } = ctx;
  let closed = false;
  let offset = 0;
  let timer = null;
  let asked = 0;

  const clientId = h("input", { id: "sub-client", type: "search", autocomplete: "off", placeholder: "exact client id" });
  const prefix = h("input", { id: "sub-prefix", type: "search", autocomplete: "off", placeholder: "sensors/" });
  const field = (id, label, input) => h("div", { class: "ret-field ret-grow" }, h("label", { for: id }, label), input);
  const summary = h("p", { class: "muted", id: "sub-summary", "aria-live": "polite" }, "Loading…");
  const problem = h("p", { class: "error", role: "alert", hidden: true });
  const tbody = h("tbody", {});
  const table = h("div", { class: "table-wrap" }, h("table", { id: "subscription-table" },
    h("thead", {}, h("tr", {}, ...["Topic filter", "Client", "QoS", "Options"].map(
      (t) => h("th", { scope: "col", class: t === "Options" ? "ret-opt" : null }, t)))), tbody));
  const previous = h("button", { type: "button", onclick: () => { offset = Math.max(0, offset - PAGE_SIZE); load(); } }, "Previous");
  const next = h("button", { type: "button", onclick: () => { offset += PAGE_SIZE; load(); } }, "Next");
  const pager = h("div", { class: "row cl-pager" }, previous, next);

  root.append(h("div", { class: "stack" }, h("h1", {}, "Subscriptions"),
    h("form", { class: "card row ret-search", role: "search", onsubmit: (e) => { e.preventDefault(); offset = 0; load(); } },
      field("sub-client", "Client id", clientId), field("sub-prefix", "Topic filter starts with", prefix)),
    summary, problem, table, pager));

  const onInput = () => { clearTimeout(timer); timer = setTimeout(() => { offset = 0; load(); }, SEARCH_DELAY_MS); };
  clientId.addEventListener("input", onInput);
  prefix.addEventListener("input", onInput);

  async function load() {
    const mine = ++asked;
    try {
      const page = await api("subscriptions", { query: { client_id: clientId.value.trim(), prefix: prefix.value,
                                                         limit: PAGE_SIZE, offset } });
      if (closed || mine !== asked) return;
      problem.hidden = true;
      tbody.replaceChildren(...page.items.map((s) => h("tr", { dataset: { client: s.client_id, filter: s.topic_filter } },
        h("td", { class: "mono" }, s.topic_filter, s.share_group ? h("div", { class: "muted" }, "shared: " + s.share_group) : null),
        h("td", {}, h("span", { class: "mono" }, s.client_id), " ",
          h("span", { class: "badge " + (s.connected ? "online" : "offline") }, s.connected ? "connected" : "offline")),
        h("td", {}, String(s.qos)),
        h("td", { class: "muted ret-opt" }, [
          s.no_local && "no local", s.retain_as_published && "retain as published",
          s.retain_handling ? "retain handling " + s.retain_handling : null,
          s.subscription_identifier ? "id " + s.subscription_identifier : null,
        ].filter(Boolean).join(", ") || "–"))));
      table.hidden = page.items.length === 0;
      const narrowed = clientId.value.trim() || prefix.value;
      summary.textContent = page.total
        ? `${fmt.number(page.offset + 1)}–${fmt.number(page.offset + page.items.length)} of ${fmt.number(page.total)} subscription${page.total === 1 ? "" : "s"}`
        : narrowed ? "No subscription matches." : "No subscriptions yet.";
      pager.hidden = page.total <= PAGE_SIZE;
      previous.disabled = offset === 0;
      next.disabled = offset + PAGE_SIZE >= page.total;
    } catch (err) {
      if (closed || mine !== asked || err.status === 401) return;
      problem.hidden = false;
      problem.textContent = "Could not list the subscriptions: " + (err.detail || err.message);
    }
  }

  load();
  const refresh = setInterval(() => { if (document.visibilityState === "visible") load(); }, REFRESH_MS);
  return () => { closed = true; clearTimeout(timer); clearInterval(refresh); };
}
