// API keys: the management API's keys (GET/POST/DELETE /api/v1/keys), as `wrenmq apikey` manages
// them. Only for callers that manage (app.js leaves the page out of the menu otherwise); the form
// and the Revoke buttons only for those that may write. A new key is shown once, right after it is
// created, in a box of its own with a Copy button: the broker keeps only its hash, and the page
// forgets it when the box is closed or the page left. Revoking the key this console signed in with
// says so first (the console is signed out at its next request).

export const title = "API keys";

export function render(root, ctx) {
  const { h, api, toast, fmt } = ctx;
  let closed = false;
  const mine = ctx.caller.kind === "key" ? ctx.caller.name : null;

  const field = (id, label, input) => h("div", { class: "us-field" }, h("label", { for: id }, label), input);
  const name = h("input", { id: "key-name", autocomplete: "off", placeholder: "dashboard", maxlength: "64" });
  const readOnly = h("input", { type: "checkbox", id: "key-read-only" });
  const error = h("p", { class: "error", role: "alert" });
  const form = h("form", { class: "row us-form needs-write", id: "key-form", onsubmit: create },
    field("key-name", "Name", name),
    h("div", { class: "mqtt-check" }, readOnly, h("label", { for: "key-read-only" }, "Read-only")),
    h("button", { type: "submit", class: "primary" }, "Create key"));
  const help = h("p", { class: "muted" }, "A key acts as the user of its name: with an ACL file, give that name its rules. ",
    "A read-only key may read (under the ACL) and change nothing.");

  // The new key, shown once.
  const secret = h("input", { id: "key-secret", readonly: true, autocomplete: "off", spellcheck: "false", class: "mono" });
  const secretTitle = h("strong", {});
  const secretBox = h("div", { class: "card stack key-secret", id: "key-secret-box", role: "alert", hidden: true },
    secretTitle,
    h("p", {}, "Copy it now: it is not shown again (the broker keeps only its hash)."),
    h("div", { class: "row" }, h("div", { class: "mqtt-grow" }, h("label", { for: "key-secret" }, "Key"), secret),
      h("button", { type: "button", id: "key-copy", onclick: copy }, "Copy"),
      h("button", { type: "button", id: "key-done", onclick: () => { secret.value = ""; secretBox.hidden = true; } }, "Done")));

  const file = h("p", { class: "muted us-file" });
  const list = h("tbody", {});
  const table = h("div", { class: "table-wrap" }, h("table", { id: "key-table" },
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Name"), h("th", { scope: "col" }, "Access"),
      h("th", { scope: "col", class: "us-opt" }, "Created"),
      h("th", { scope: "col", class: "needs-write" }, h("span", { class: "res-sr" }, "Actions")))), list));
  const empty = h("p", { class: "muted", hidden: true }, "No API keys.");
  root.append(h("h1", {}, "API keys"),
    h("div", { class: "card stack", id: "keys-card" }, file, help, form, error, secretBox, table, empty));

  async function load() {
    try {
      const answer = await api("keys");
      if (closed) return;
      file.textContent = "From " + answer.api_keys_file;
      list.replaceChildren(...answer.keys.map((key) => h("tr", { dataset: { key: key.name } },
        h("td", { class: "mono" }, key.name, key.name === mine ? h("span", { class: "badge key-mine" }, "this console") : null),
        h("td", {}, h("span", { class: "badge" + (key.read_only ? "" : " ok") }, key.read_only ? "read-only" : "read-write")),
        h("td", { class: "muted us-opt", title: new Date(key.created * 1000).toISOString() }, fmt.ago(key.created)),
        h("td", { class: "res-actions needs-write" }, h("button", { type: "button", class: "link res-delete",
          "aria-label": "Revoke key " + key.name, onclick: () => revoke(key.name) }, "Revoke")))));
      table.hidden = answer.keys.length === 0;
      empty.hidden = answer.keys.length !== 0;
    } catch (err) {
      if (!closed && err.status !== 401) file.textContent = "Could not read the API keys: " + (err.detail || err.message);
    }
  }

  async function create(event) {
    event.preventDefault();
    error.textContent = "";
    const wanted = name.value.trim();
    if (!/^[A-Za-z0-9._-]{1,64}$/.test(wanted)) {
      error.textContent = "A name is 1 to 64 letters, digits, '-', '_' or '.'.";
      name.focus();
      return;
    }
    try {
      const made = await api("keys", { method: "POST", body: { name: wanted, read_only: readOnly.checked } });
      if (closed) return;
      secretTitle.textContent = `The ${made.read_only ? "read-only " : ""}key ${made.name}:`;
      secret.value = made.key;
      secretBox.hidden = false;
      secret.focus();
      secret.select();
      name.value = "";
      readOnly.checked = false;
    } catch (err) {
      error.textContent = "Not created: " + (err.detail || err.message);
    }
    load();
  }

  async function copy() {
    try {
      await navigator.clipboard.writeText(secret.value);
      toast("Key copied.");
    } catch (e) {  // no clipboard (http:// other than localhost): leave it selected to copy by hand
      secret.focus();
      secret.select();
      toast("Select and copy the key by hand.");
    }
  }

  async function revoke(keyName) {
    const warning = keyName === mine ? " This console signed in with it and will be signed out." : "";
    if (!window.confirm(`Revoke the API key ${keyName}? Requests made with it are refused from now on.${warning}`)) return;
    try {
      await api("keys/" + encodeURIComponent(keyName), { method: "DELETE" });
      toast(`Key ${keyName} revoked.`);
    } catch (err) {
      if (err.status !== 401) toast(`Could not revoke ${keyName}: ${err.detail || err.message}`, "error");
    }
    if (keyName !== mine) load();
    else api("keys").catch(() => {});  // its 401 signs this console out
  }

  load();
  return () => { closed = true; secret.value = ""; };
}
