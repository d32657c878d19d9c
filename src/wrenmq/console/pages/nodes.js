// Nodes: the cluster on Redis as the node answering sees it (GET /api/v1/cluster), refreshed every
// REFRESH_MS while the tab is visible (nodes heartbeat every second, so a node that stops shows as
// dead within a few). Each node's state, connections, sessions, subscriptions, what it forwarded
// to other nodes and received from them, and its last heartbeat; above, the totals over the alive
// nodes and this node's link to Redis (a node that cannot reach Redis keeps serving its own clients
// and queues its forwards). A broker without cluster_url is a single node, and the page says so.

export const title = "Nodes";

const REFRESH_MS = 2000;

export function render(root, ctx) {
  const { h, api, fmt } = ctx;
  let closed = false;

  const summary = h("div", { class: "card stack", id: "nodes-summary", "aria-live": "polite" }, "Loading…");
  const problem = h("p", { class: "error", role: "alert", hidden: true });
  const tbody = h("tbody", {});
  const columns = [["Node"], ["State"], ["Connections", "num"], ["Sessions", "num nd-opt"], ["Subscriptions", "num nd-opt"],
                   ["Forwarded", "num nd-opt"], ["Received", "num nd-opt"], ["Last heartbeat"]];
  const table = h("div", { class: "table-wrap", hidden: true }, h("table", { id: "nodes-table" },
    h("thead", {}, h("tr", {}, ...columns.map(([t, c]) => h("th", { scope: "col", class: c || null }, t)))), tbody));
  root.append(h("div", { class: "stack" }, h("h1", {}, "Nodes"), summary, problem, table));

  const fact = (label, value, id) => h("div", { class: "nd-fact" }, h("span", { class: "label" }, label), " ",
    h("strong", { id }, value));

  function show(status) {
    if (!status.enabled) {
      summary.replaceChildren(h("p", { id: "nodes-single" }, h("strong", {}, "Single node"),
        ": this broker is not in a cluster (no ", h("code", {}, "cluster_url"), ")."));
      table.hidden = true;
      return;
    }
    summary.replaceChildren(h("div", { class: "row nd-facts" },
      fact("Answered by", status.node, "nodes-self"),
      fact("Redis", `${status.redis} (${status.redis_version})`, "nodes-redis"),
      h("span", { id: "nodes-link", class: "badge " + (status.connected ? "ok" : "bad") },
        status.connected ? "connected to Redis" : "Redis unreachable: forwards queued"),
      fact("Nodes alive", `${status.nodes.filter((n) => n.state === "alive").length} of ${status.nodes.length}`, "nodes-alive"),
      status.totals ? fact("Connections, all nodes", fmt.number(status.totals.connections), "nodes-total-connections") : null,
      status.totals ? fact("Sessions, all nodes", fmt.number(status.totals.sessions), "nodes-total-sessions") : null,
      fact("Routes of other nodes", fmt.number(status.routes)),
      fact("Forwards queued", fmt.number(status.forward_queue), "nodes-queue"),
      status.dropped ? fact("Forwards dropped", fmt.number(status.dropped), "nodes-dropped") : null));
    tbody.replaceChildren(...status.nodes.map((n) => h("tr", { dataset: { node: n.name, state: n.state } },
      h("td", { class: "mono" }, n.name, n.self ? h("span", { class: "badge nd-self" }, "this node") : null),
      h("td", {}, h("span", { class: "badge " + (n.state === "alive" ? "ok" : "bad") }, n.state)),
      h("td", { class: "num nd-connections" }, fmt.number(n.connections)),
      h("td", { class: "num nd-opt" }, fmt.number(n.sessions)),
      h("td", { class: "num nd-opt" }, fmt.number(n.subscriptions)),
      h("td", { class: "num nd-opt" }, fmt.number(n.forwarded)),
      h("td", { class: "num nd-opt" }, fmt.number(n.received_from_nodes)),
      h("td", { class: "muted", title: new Date(n.last_heartbeat * 1000).toISOString() },
        n.self ? "now" : fmt.ago(n.last_heartbeat)))));
    table.hidden = false;
  }

  async function load() {
    try {
      const status = await api("cluster");
      if (closed) return;
      problem.hidden = true;
      show(status);
    } catch (err) {
      if (closed || err.status === 401) return;
      problem.hidden = false;
      problem.textContent = "Could not read the cluster's state: " + (err.detail || err.message);
    }
  }

  load();
  const refresh = setInterval(() => { if (document.visibilityState === "visible") load(); }, REFRESH_MS);
  return () => { closed = true; clearInterval(refresh); };
}
