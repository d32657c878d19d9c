// The wrenmq console: a shell (sign-in, navigation, live status) and one module per page.
//
// A page module (pages/<name>.js) exports `title` and `render(root, ctx)`; render fills `root` and
// returns a function that undoes everything it started (timers, subscriptions), called when the
// user leaves the page. `ctx` is what pages share:
//   ctx.api(path, {method, body, query}) -> parsed JSON (throws ApiError with .status and .detail)
//   ctx.realtime  the signed-in WrenmqRealtime client (Socket.IO, then polling; the API key signs in)
//   ctx.toast(text, kind)          a short notice ("ok" | "error")
//   ctx.h(tag, attrs, ...children) builds DOM without innerHTML (no injection from message data)
//   ctx.batch(fn)                  runs fn once per animation frame at most, however often it is asked
//   ctx.fmt                        number, bytes, time and JSON formatting
//   ctx.reveal(el)                 scrolls el into view when its top is off screen (a detail opened
//                                  below a long list), and moves the focus there
//   ctx.caller                     GET /api/v1/session: who is signed in ({name, read_only, manages})
//                                  and the broker's topic prefixes ({topics: {events_prefix, ...}})
//   ctx.canWrite, ctx.canManage    what the signed-in caller may do: pages leave out what it may not
//
// Pages that need the management routes (MANAGED) are left out of the menu for callers that do
// not manage (console_users sessions), so nobody is shown a page that can only answer 403.

const PAGES = ["dashboard", "clients", "subscriptions", "topics", "retained", "mqtt", "devices", "resources", "brokers", "nodes", "trace", "users", "keys"];
const MANAGED = new Set(["clients", "subscriptions", "trace", "users", "keys"]);  // pages that need a caller that manages
const KEY = "wrenmq.console.key";
const THEME = "wrenmq.console.theme";  // "light" | "dark"; absent: follow the system
// What a caller that could not be read is assumed to be: the broker's defaults, changing nothing.
const DEFAULT_CALLER = { kind: "key", name: "", read_only: true, manages: false,
  topics: { events_prefix: "events", presence: true, presence_devices_root: "devices", presence_admin_root: "admin",
            presence_sessions_root: "sessions", realtime_presence_prefix: "presence" } };

export class ApiError extends Error {
  constructor(status, detail) {
    super(detail || "HTTP " + status);
    this.status = status;
    this.detail = detail;
  }
}

function token() { return sessionStorage.getItem(KEY); }

export async function api(path, options = {}) {
  const url = new URL(path.startsWith("/") ? path : "/api/v1/" + path, location.origin);
  for (const [k, v] of Object.entries(options.query || {})) {
    if (v === undefined || v === null || v === "") continue;
    for (const one of Array.isArray(v) ? v : [v]) url.searchParams.append(k, one);
  }
  const headers = { Authorization: "Bearer " + token() };
  let body;
  if (options.body !== undefined) {
    headers["Content-Type"] = options.contentType || "application/json";
    body = typeof options.body === "string" ? options.body : JSON.stringify(options.body);
  }
  const response = await fetch(url, { method: options.method || "GET", headers, body });
  if (response.status === 401) {
    signOut("Your sign-in is no longer valid: sign in again.");
    throw new ApiError(401, "signed out");
  }
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (!response.ok) throw new ApiError(response.status, (data && (data.detail || data.title)) || response.statusText);
  return data;
}

export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, v);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

export function batch(fn) {
  let queued = false;
  return () => {
    if (queued) return;
    queued = true;
    requestAnimationFrame(() => { queued = false; fn(); });
  };
}

export const fmt = {
  number: (n) => (n === undefined || n === null ? "–" : Number(n).toLocaleString("en")),
  rate: (n) => (n >= 100 ? Math.round(n).toLocaleString("en") : (Math.round(n * 10) / 10).toString()),
  bytes(n) {
    if (n === undefined || n === null) return "–";
    const units = ["B", "KiB", "MiB", "GiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : n) + " " + units[i];
  },
  time(value) {
    if (!value) return "–";
    const date = typeof value === "number" ? new Date(value * 1000) : new Date(value);
    return date.toLocaleTimeString("en-GB", { hour12: false });
  },
  ago(value) {
    if (!value) return "never";
    const date = typeof value === "number" ? new Date(value * 1000) : new Date(value);
    const s = Math.max(0, Math.round((Date.now() - date.getTime()) / 1000));
    if (s < 60) return s + " s ago";
    if (s < 3600) return Math.round(s / 60) + " min ago";
    return Math.round(s / 3600) + " h ago";
  },
  json(text) {
    try { return JSON.stringify(JSON.parse(text), null, 2); } catch (e) { return text; }
  },
};

export function reveal(el) {
  if (!el || el.hidden) return;
  const top = el.getBoundingClientRect().top;
  const bar = document.querySelector(".topbar").getBoundingClientRect().bottom;
  if (top < bar || top > window.innerHeight - 80) el.scrollIntoView({ block: "start" });  // scroll-margin-top: the bar
  if (!el.hasAttribute("tabindex")) el.setAttribute("tabindex", "-1");
  el.focus({ preventScroll: true });
}

export function toast(text, kind = "ok") {
  const box = document.getElementById("toasts");
  const item = h("div", { class: "toast " + kind }, text);
  box.append(item);
  setTimeout(() => item.remove(), kind === "error" ? 6000 : 3000);
}

// -- sign-in -----------------------------------------------------------------------------------

let realtime = null;
function signOut(reason) {
  const current = token();
  if (current && current.startsWith("wms_")) {  // a user's session: end it on the server too
    fetch("/api/v1/session", { method: "DELETE", headers: { Authorization: "Bearer " + current } }).catch(() => {});
  }
  sessionStorage.removeItem(KEY);
  if (realtime) { realtime.close(); realtime = null; ctx.realtime = null; }
  if (leave) { try { leave(); } catch (err) { console.warn(err); } leave = null; }
  for (const module of Object.values(loaded)) if (module.forget) module.forget();  // pages kept alive
  ctx.caller = null;
  document.getElementById("who").textContent = "";
  document.getElementById("sign-out").hidden = true;
  showSignIn(reason);
}

function showSignIn(reason) {
  const view = document.getElementById("view");
  document.body.classList.add("signed-out");
  const error = h("p", { class: "error", role: "alert" }, reason || "");
  const key = h("input", { id: "api-key", type: "password", autocomplete: "off", placeholder: "wmq_…",
                           "aria-describedby": "key-help" });
  const username = h("input", { id: "username", autocomplete: "username" });
  const password = h("input", { id: "password", type: "password", autocomplete: "current-password" });
  const byKey = h("div", { class: "stack", id: "by-key" },
    h("div", {}, h("label", { for: "api-key" }, "API key"), key),
    h("p", { id: "key-help", class: "muted" }, "Create one on the broker with ",
      h("code", {}, "wrenmq apikey create NAME"), ". It stays in this tab only."));
  const byUser = h("div", { class: "stack", id: "by-user", hidden: true },
    h("div", {}, h("label", { for: "username" }, "User name"), username),
    h("div", {}, h("label", { for: "password" }, "Password"), password),
    h("p", { class: "muted" }, "A broker user listed in console_users (read-only) or console_admins."));
  let mode = "key";
  const tab = (name, label) => h("button", { type: "button", role: "tab", "aria-selected": String(name === mode),
    onclick: (event) => {
      mode = name;
      byKey.hidden = name !== "key";
      byUser.hidden = name !== "user";
      for (const b of event.currentTarget.parentElement.children) b.setAttribute("aria-selected", String(b === event.currentTarget));
      (name === "key" ? key : username).focus();
    } }, label);
  const form = h("form", { class: "card sign-in", onsubmit: async (event) => {
      event.preventDefault();
      error.textContent = "";
      try {
        if (mode === "user") {
          const response = await fetch("/api/v1/session", { method: "POST", headers: { "Content-Type": "application/json" },
            body: JSON.stringify({ username: username.value, password: password.value }) });
          const data = await response.json();
          if (!response.ok) { error.textContent = data.detail || "Sign-in failed."; return; }
          sessionStorage.setItem(KEY, data.token);
        } else {
          sessionStorage.setItem(KEY, key.value.trim());
        }
        const check = await fetch("/api/v1/broker/status", { headers: { Authorization: "Bearer " + token() } });
        if (!check.ok) throw new ApiError(check.status, check.statusText);
      } catch (err) {
        sessionStorage.removeItem(KEY);
        error.textContent = err.status === 401 ? "That API key was not accepted." : "The API did not answer: " + err.message;
        return;
      }
      start();
    } },
    h("h1", {}, "Sign in to wrenmq"),
    h("div", { class: "tabs", role: "tablist" }, tab("key", "API key"), tab("user", "User")),
    byKey, byUser, error,
    h("button", { type: "submit", class: "primary" }, "Sign in"));
  view.replaceChildren(form);
  key.focus();
}

// -- the shell ---------------------------------------------------------------------------------

const ctx = { api, h, batch, fmt, toast, reveal, realtime: null, caller: null,
              get canWrite() { return Boolean(this.caller && !this.caller.read_only); },
              get canManage() { return Boolean(this.caller && this.caller.manages); } };
let leave = null;
const loaded = {};  // page name -> its module, once imported

async function loadCaller() {
  try {
    ctx.caller = await api("session");
  } catch (err) {
    if (err.status === 401) throw err;
    console.warn("GET /api/v1/session failed; assuming a read-only caller", err);
    ctx.caller = DEFAULT_CALLER;
  }
  document.body.dataset.write = ctx.caller.read_only ? "no" : "yes";    // console.css: .needs-write
  document.body.dataset.manage = ctx.caller.manages ? "yes" : "no";
  for (const link of document.querySelectorAll("#sidebar a")) {
    const name = (link.getAttribute("href") || "").replace(/^#\//, "");
    link.hidden = MANAGED.has(name) && !ctx.caller.manages;
  }
  const who = document.getElementById("who");
  who.textContent = (ctx.caller.name || "") + (ctx.caller.read_only ? " · read-only" : "");
  who.title = ctx.caller.kind === "console" ? "Signed in as a broker user" : "Signed in with an API key";
  document.getElementById("sign-out").title = "Sign out " + who.textContent;
}

async function route() {
  if (!token()) return showSignIn();
  if (!ctx.caller) return;  // start() routes once the caller is known
  const name = (location.hash.replace(/^#\/?/, "").split("/")[0]) || "dashboard";
  const allowed = PAGES.includes(name) && (!MANAGED.has(name) || ctx.canManage);
  const page = allowed ? name : "dashboard";
  for (const link of document.querySelectorAll("#sidebar a")) {
    link.toggleAttribute("aria-current", link.getAttribute("href") === "#/" + page);
  }
  document.getElementById("sidebar").classList.remove("open");
  if (leave) { try { leave(); } catch (err) { console.warn(err); } leave = null; }
  const view = document.getElementById("view");
  const root = h("section", { class: "page page-" + page });
  view.replaceChildren(root);
  try {
    const module = loaded[page] = await import("./pages/" + page + ".js");
    document.title = module.title + " · wrenmq";
    leave = module.render(root, ctx) || null;
  } catch (err) {
    console.error(err);
    root.replaceChildren(h("p", { class: "error" }, "This page could not load: " + err.message));
  }
  view.focus({ preventScroll: true });
}

async function start() {
  document.body.classList.remove("signed-out");
  document.getElementById("sign-out").hidden = false;
  try { await loadCaller(); } catch (err) { return; }  // 401: signed out already
  if (!realtime) {
    realtime = WrenmqRealtime.connect({ token: token(), transports: ["socketio", "polling"] });
    const live = document.getElementById("live");
    realtime.on("status", ({ state, transport }) => {
      if (state === "connected") {  // the transport is left out on a phone (console.css)
        live.replaceChildren("live", h("span", { class: "live-transport" },
          " · " + (transport === "socketio" ? "Socket.IO" : "polling")));
      } else {
        live.textContent = state;
      }
      live.dataset.state = state;
    });
    ctx.realtime = realtime;
  }
  route();
}

window.addEventListener("hashchange", route);
document.getElementById("sign-out").addEventListener("click", () => signOut("Signed out."));
document.getElementById("menu-toggle").addEventListener("click", (event) => {
  const open = document.getElementById("sidebar").classList.toggle("open");
  event.currentTarget.setAttribute("aria-expanded", String(open));
});
// -- theme: the system's (prefers-color-scheme) until the toggle picks one, remembered ----------

function applyTheme() {
  const chosen = localStorage.getItem(THEME);
  if (chosen) document.documentElement.dataset.theme = chosen;
  else delete document.documentElement.dataset.theme;
  const dark = chosen ? chosen === "dark" : matchMedia("(prefers-color-scheme: dark)").matches;
  const button = document.getElementById("theme-toggle");
  button.setAttribute("aria-pressed", String(dark));
  button.replaceChildren(dark ? "\u263C" : "\u263E", h("span", { class: "theme-name" }, dark ? " Light" : " Dark"));
  button.title = dark ? "Use the light theme" : "Use the dark theme";
  button.setAttribute("aria-label", "Dark theme");  // a toggle: aria-pressed says whether it is on
}
document.getElementById("theme-toggle").addEventListener("click", () => {
  const dark = document.getElementById("theme-toggle").getAttribute("aria-pressed") === "true";
  localStorage.setItem(THEME, dark ? "light" : "dark");
  applyTheme();
  window.dispatchEvent(new Event("wrenmq:theme"));
});
matchMedia("(prefers-color-scheme: dark)").addEventListener("change", () => {
  applyTheme();
  window.dispatchEvent(new Event("wrenmq:theme"));
});
applyTheme();

if (token()) start(); else showSignIn();
