// Topics: the live topic tree.
//
// Topics come from GET /api/v1/topics (subscribed topic names and retained topics, every
// TOPICS_POLL_MS) and from the messages themselves (ctx.realtime.subscribe("#")), which also give
// each topic its rate: the live handler only counts; once a second the rates are smoothed and the
// tree is drawn (ctx.batch), with rows kept by path and updated in place. At most MAX_TOPICS
// topics are tracked and MAX_ROWS rows drawn; the page says when either bound is reached.
// Selecting a topic shows its retained message (GET /api/v1/retained/{topic}), which can be
// cleared (DELETE, after a confirmation); the publish card sends POST /api/v1/publish.

export const title = "Topics";

export const MAX_TOPICS = 2000;         // topics tracked at most (the first ones seen)
export const MAX_ROWS = 500;            // rows drawn at most
const TICK_MS = 1000;                   // rates are recomputed and the tree redrawn this often
const TOPICS_POLL_MS = 5000;
const TOPICS_PAGE = 1000;               // the API's largest page
const SMOOTHING = 0.5;                  // weight of the last second in the shown rate

const levelPath = (topic) => topic.split("/").map(encodeURIComponent).join("/");

export function render(root, ctx) {
  const { h, api, fmt, toast } = ctx;
  let closed = false;
  let capped = false;
  let selected = null;                  // the selected topic (a string), or null
  let lastTick = performance.now();
  const timers = [];
  const entries = new Map();            // topic -> { count, last, rate, retained, subscribers, node }
  const tree = { name: "", path: "", children: new Map(), entry: null };
  const expanded = new Set();           // paths of expanded nodes
  const rows = new Map();               // path -> the row's elements

  // -- the tree's data ---------------------------------------------------------------------------
  function track(topic) {
    let entry = entries.get(topic);
    if (entry) return entry;
    if (entries.size >= MAX_TOPICS) { capped = true; return null; }
    entry = { count: 0, last: 0, rate: 0, retained: false, subscribers: 0 };
    entries.set(topic, entry);
    let node = tree;
    for (const level of topic.split("/")) {
      let child = node.children.get(level);
      if (!child) {
        child = { name: level, path: node === tree ? level : node.path + "/" + level, children: new Map(), entry: null };
        node.children.set(level, child);
      }
      node = child;
    }
    node.entry = entry;
    return entry;
  }

  // -- layout --------------------------------------------------------------------------------------
  const filter = h("input", { id: "topic-filter", type: "search", placeholder: "part of a topic", autocomplete: "off" });
  const counts = h("p", { class: "muted", id: "topic-counts", "aria-live": "polite" }, "Loading topics…");
  const notice = h("p", { class: "muted tp-notice", id: "topic-notice", hidden: true });
  const live = h("p", { class: "muted tp-live" });
  const list = h("ul", { class: "tp-tree", id: "topic-tree", "aria-label": "Topic tree" });
  const empty = h("p", { class: "muted", hidden: true });
  const detail = h("div", { class: "card stack tp-detail", id: "topic-detail", hidden: true, "aria-live": "polite" });

  const pubTopic = h("input", { id: "publish-topic", placeholder: "plant/line1/cmd", autocomplete: "off" });
  const pubPayload = h("textarea", { id: "publish-payload", rows: "3", placeholder: '{"on": true}' });
  const pubQos = h("select", { id: "publish-qos" }, ...[0, 1, 2].map((q) => h("option", { value: String(q) }, String(q))));
  const pubRetain = h("input", { id: "publish-retain", type: "checkbox" });
  const pubButton = h("button", { type: "submit", class: "primary" }, "Publish");
  const publishForm = h("form", { class: "card stack tp-publish needs-write", id: "publish-form", onsubmit: (e) => { e.preventDefault(); publish(); } },
    h("h2", {}, "Publish"),
    h("div", {}, h("label", { for: "publish-topic" }, "Topic"), pubTopic),
    h("div", {}, h("label", { for: "publish-payload" }, "Payload (text)"), pubPayload),
    h("div", { class: "row tp-options" },
      h("div", {}, h("label", { for: "publish-qos" }, "QoS"), pubQos),
      h("div", { class: "tp-check" }, pubRetain, h("label", { for: "publish-retain" }, "Retain")),
      pubButton));

  root.append(h("div", { class: "stack" },
    h("h1", {}, "Topics"),
    h("div", { class: "tp-columns" },
      h("div", { class: "card stack tp-tree-card" },
        h("div", { class: "row tp-head" },
          h("div", { class: "tp-filter" }, h("label", { for: "topic-filter" }, "Filter topics"), filter),
          h("div", { class: "stack tp-meta" }, counts, live)),
        notice, empty, list),
      h("div", { class: "stack" }, detail, publishForm))));

  // -- drawing -------------------------------------------------------------------------------------
  function aggregate(node, needle) {
    let rate = node.entry ? node.entry.rate : 0;
    let topics = node.entry ? 1 : 0;
    let match = needle === "" || (node !== tree && node.path.toLowerCase().includes(needle));
    for (const child of node.children.values()) {
      aggregate(child, needle);
      rate += child.rate;
      topics += child.topics;
      match = match || child.match;
    }
    node.rate = rate;
    node.topics = topics;
    node.match = match;
  }

  function makeRow(node) {
    const toggle = h("button", { type: "button", class: "tp-toggle", onclick: () => {
      if (expanded.has(node.path)) expanded.delete(node.path); else expanded.add(node.path);
      draw();
    } });
    const name = h("button", { type: "button", class: "link tp-name", title: node.path,
      onclick: () => select(node.path) }, node.name === "" ? "(empty level)" : node.name);
    const rate = h("span", { class: "tp-rate" });
    const badge = h("span", { class: "badge ok tp-retained", hidden: true }, "retained");
    const below = h("span", { class: "muted tp-below" });
    const li = h("li", { class: "tp-row", dataset: { topic: node.path } }, toggle, name, badge, below, rate);
    return { li, toggle, name, rate, badge, below, state: "" };
  }

  function updateRow(row, node, depth, open) {
    const hasChildren = node.children.size > 0;
    const state = [depth, open, hasChildren, fmt.rate(node.rate), node.entry && node.entry.retained, node.topics,
                   node.path === selected].join("|");
    if (state === row.state) return;
    row.state = state;
    row.li.style.setProperty("--depth", depth);
    row.toggle.textContent = hasChildren ? (open ? "▾" : "▸") : "";
    row.toggle.disabled = !hasChildren;
    row.toggle.setAttribute("aria-label", (open ? "Collapse " : "Expand ") + node.path);
    if (hasChildren) row.toggle.setAttribute("aria-expanded", String(open)); else row.toggle.removeAttribute("aria-expanded");
    row.badge.hidden = !(node.entry && node.entry.retained);
    const under = node.topics - (node.entry ? 1 : 0);
    row.below.textContent = hasChildren && !open ? under + (under === 1 ? " topic" : " topics") : "";
    row.rate.textContent = node.rate >= 0.05 ? fmt.rate(node.rate) + " msg/s" : "";
    row.li.classList.toggle("selected", node.path === selected);
  }

  const draw = ctx.batch(() => {
    if (closed) return;
    const needle = filter.value.trim().toLowerCase();
    aggregate(tree, needle);
    const order = [];
    let hidden = 0;
    const visit = (node, depth) => {
      const names = [...node.children.keys()].sort();
      for (const key of names) {
        const child = node.children.get(key);
        if (!child.match) continue;
        if (order.length >= MAX_ROWS) { hidden += 1; continue; }
        const open = child.children.size > 0 && (needle !== "" || expanded.has(child.path));
        let row = rows.get(child.path);
        if (!row) { row = makeRow(child); rows.set(child.path, row); }
        updateRow(row, child, depth, open);
        order.push(row.li);
        if (open) visit(child, depth + 1);
      }
    };
    visit(tree, 0);
    const current = list.children;
    let same = current.length === order.length;
    for (let i = 0; same && i < order.length; i++) same = current[i] === order[i];
    if (!same) list.replaceChildren(...order);
    if (rows.size > 4 * MAX_ROWS) {     // forget rows long out of view
      const shown = new Set(order);
      for (const [path, row] of rows) if (!shown.has(row.li)) rows.delete(path);
    }
    const retained = [...entries.values()].filter((e) => e.retained).length;
    counts.textContent = `${fmt.number(entries.size)} topics · ${fmt.number(retained)} retained · ${fmt.rate(tree.rate)} msg/s`;
    const notes = [];
    if (capped) notes.push(`Tracking the first ${fmt.number(MAX_TOPICS)} topics: topics seen after that are not shown.`);
    if (hidden) notes.push(`${fmt.number(hidden)} more rows are not drawn (at most ${MAX_ROWS}): filter or collapse to see them.`);
    notice.textContent = notes.join(" ");
    notice.hidden = notes.length === 0;
    empty.hidden = order.length > 0;
    empty.textContent = entries.size ? "No topic matches this filter." : "No topics yet: publish a message or subscribe to a topic.";
    if (selected && entries.has(selected)) showRate();
  });
  filter.addEventListener("input", draw);

  function tick() {
    const now = performance.now();
    const dt = (now - lastTick) / 1000;
    lastTick = now;
    if (dt <= 0) return;
    for (const entry of entries.values()) {
      const recent = (entry.count - entry.last) / dt;
      entry.last = entry.count;
      entry.rate = entry.rate * (1 - SMOOTHING) + recent * SMOOTHING;
      if (entry.rate < 0.01) entry.rate = 0;
    }
    draw();
  }

  // -- sources ---------------------------------------------------------------------------------------
  let unsubscribe = null;
  if (ctx.realtime) {
    unsubscribe = ctx.realtime.subscribe("#", (message) => {
      if (closed) return;
      const known = entries.has(message.topic);
      const entry = track(message.topic);
      if (!entry) { if (!known) draw(); return; }
      entry.count += 1;
      if (message.retain && message.payload && message.payload.length) entry.retained = true;
      if (!known) draw();
    });
    live.textContent = "Rates from live messages since this page opened.";
  } else {
    live.textContent = "No live connection: rates are not shown.";
  }

  async function loadTopics() {
    try {
      const seen = new Map();
      for (let offset = 0; offset < MAX_TOPICS; offset += TOPICS_PAGE) {
        const page = await api("topics", { query: { limit: TOPICS_PAGE, offset } });
        for (const item of page.items) if (!item.wildcard) seen.set(item.topic, item);
        if (closed || offset + page.items.length >= page.total) break;
      }
      if (closed) return;
      for (const [topic, item] of seen) {
        const entry = track(topic);
        if (!entry) continue;
        entry.retained = item.retained;
        entry.subscribers = item.subscribers + item.shared_subscribers;
      }
      for (const [topic, entry] of entries) if (!seen.has(topic)) entry.retained = false;
      draw();
    } catch (err) {
      if (!closed && err.status !== 401) counts.textContent = "The topics could not be listed: " + (err.detail || err.message);
    }
  }

  // -- the selected topic ------------------------------------------------------------------------------
  const rateLine = h("p", { class: "muted", id: "topic-rate" });
  function showRate() {
    const entry = entries.get(selected);
    rateLine.textContent = entry
      ? `${fmt.rate(entry.rate)} msg/s · ${fmt.number(entry.count)} ${entry.count === 1 ? "message" : "messages"} seen here` +
        (entry.subscribers ? ` · ${fmt.number(entry.subscribers)} subscribed to exactly this topic` : "")
      : "";
  }

  async function select(topic) {
    selected = topic;
    pubTopic.value = topic;
    draw();
    detail.hidden = false;
    const retainedBox = h("div", { class: "stack", id: "retained-view" }, h("p", { class: "muted" }, "Loading the retained message…"));
    detail.replaceChildren(
      h("div", { class: "row" }, h("h2", { class: "mono tp-selected" }, topic),
        h("button", { type: "button", class: "link tp-close", onclick: () => {
          selected = null; detail.hidden = true; detail.replaceChildren(); draw();
        } }, "Close")),
      rateLine, retainedBox);
    showRate();
    await showRetained(topic, retainedBox);
  }

  async function showRetained(topic, box) {
    let message = null;
    try {
      // Ask the list first (a topic name is a filter matching only itself), so that a topic with
      // no retained message costs no 404 (which the browser would log as an error).
      const found = await api("retained", { query: { filter: topic, limit: 1 } });
      if (found.total > 0) message = await api("retained/" + levelPath(topic));
    } catch (err) {
      if (closed || selected !== topic) return;
      if (err.status !== 404) {
        box.replaceChildren(h("p", { class: "error" }, "The retained message could not be read: " + (err.detail || err.message)));
        return;
      }
    }
    if (closed || selected !== topic) return;
    const entry = entries.get(topic);
    if (entry) { entry.retained = message !== null; draw(); }
    if (!message) {
      box.replaceChildren(h("h3", {}, "Retained message"), h("p", { class: "muted", id: "retained-none" }, "No retained message on this topic."));
      return;
    }
    const payload = message.payload === null
      ? h("pre", { class: "tp-payload muted", id: "retained-payload" }, `binary, ${fmt.bytes(message.payload_size)} (base64: ${message.payload_base64.slice(0, 200)}${message.payload_base64.length > 200 ? "…" : ""})`)
      : h("pre", { class: "tp-payload", id: "retained-payload" }, message.payload === "" ? "(empty)" : fmt.json(message.payload));
    const props = message.properties;
    const facts = [`QoS ${message.qos}`, fmt.bytes(message.payload_size)];
    if (props.content_type) facts.push(props.content_type);
    if (props.message_expiry_interval !== null) facts.push(`expires in ${props.message_expiry_interval} s`);
    box.replaceChildren(
      h("div", { class: "row" }, h("h3", {}, "Retained message"), h("span", { class: "muted" }, facts.join(" · "))),
      payload,
      h("div", { class: "row needs-write" }, h("button", { type: "button", class: "danger", id: "clear-retained",
        onclick: () => clearRetained(topic, box) }, "Clear retained message")));
  }

  async function clearRetained(topic, box) {
    if (!window.confirm(`Clear the retained message on ${topic}? New subscribers will no longer receive it.`)) return;
    try {
      await api("retained/" + levelPath(topic), { method: "DELETE" });
      toast(`Retained message on ${topic} cleared.`);
    } catch (err) {
      toast(`Could not clear the retained message on ${topic}: ${err.detail || err.message}`, "error");
    }
    if (selected === topic) await showRetained(topic, box);
    loadTopics();
  }

  async function publish() {
    const topic = pubTopic.value;
    const retain = pubRetain.checked;
    pubButton.disabled = true;
    try {
      const result = await api("publish", { method: "POST",
        body: { topic, payload: pubPayload.value, qos: Number(pubQos.value), retain } });
      toast(`Published to ${result.topic}: ${result.matched} ${result.matched === 1 ? "subscription" : "subscriptions"} matched.`);
      track(topic);
      draw();
      if (retain) {
        if (selected === topic) {
          const box = document.getElementById("retained-view");
          if (box) await showRetained(topic, box);
        }
        loadTopics();
      }
    } catch (err) {
      toast(`Could not publish to ${topic || "(no topic)"}: ${err.detail || err.message}`, "error");
    } finally {
      pubButton.disabled = false;
    }
  }

  loadTopics();
  timers.push(setInterval(tick, TICK_MS), setInterval(loadTopics, TOPICS_POLL_MS));
  return () => {
    closed = true;
    for (const timer of timers) clearInterval(timer);
    if (unsubscribe) unsubscribe();
  };
}
