// Users and ACL: the broker's password file and ACL file (GET/POST/DELETE /api/v1/users and
// /api/v1/acl). The API rewrites the file and reloads it, so a user added here can CONNECT at once
// and a rule applies to the next PUBLISH or SUBSCRIBE. Only for callers that manage (app.js leaves
// the page out of the menu otherwise); the forms and delete buttons only for those that may write.
// A file that is not configured (ctx.caller.password_file / acl_file false) is said so, with the
// setting to add, and not asked for (its 409 would be a console error).

export const title = "Users and ACL";

const ACCESS = ["readwrite", "read", "write", "deny"];

export function render(root, ctx) {
  const { h, api, toast } = ctx;
  let closed = false;

  const field = (id, label, input) => h("div", { class: "us-field" }, h("label", { for: id }, label), input);

  // -- users -----------------------------------------------------------------------------------
  const userName = h("input", { id: "user-name", autocomplete: "off", placeholder: "sensor-01" });
  const userPassword = h("input", { id: "user-password", type: "password", autocomplete: "new-password" });
  const userError = h("p", { class: "error", role: "alert" });
  const userForm = h("form", { class: "row us-form needs-write", id: "user-form", onsubmit: addUser },
    field("user-name", "User name", userName), field("user-password", "Password", userPassword),
    h("button", { type: "submit", class: "primary" }, "Add or set password"));
  const userFile = h("p", { class: "muted us-file" });
  const userList = h("tbody", {});
  const userTable = h("div", { class: "table-wrap" }, h("table", { id: "user-table" },
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "User"),
      h("th", { scope: "col", class: "needs-write" }, h("span", { class: "res-sr" }, "Actions")))), userList));
  const userEmpty = h("p", { class: "muted", hidden: true }, "No users yet.");
  const usersCard = h("div", { class: "card stack", id: "users-card" },
    h("h2", {}, "Users"), userFile, userForm, userError, userTable, userEmpty);

  // -- ACL ------------------------------------------------------------------------------------
  const ruleKind = h("select", { id: "acl-kind" }, h("option", { value: "topic" }, "topic (one user)"),
    h("option", { value: "pattern" }, "pattern (every client)"));
  const ruleUser = h("input", { id: "acl-user", autocomplete: "off", placeholder: "empty: anonymous clients" });
  const ruleAccess = h("select", { id: "acl-access" }, ...ACCESS.map((a) => h("option", { value: a }, a)));
  const ruleTopic = h("input", { id: "acl-topic", autocomplete: "off", placeholder: "sensors/%u/#" });
  const ruleError = h("p", { class: "error", role: "alert" });
  const userField = field("acl-user", "User", ruleUser);
  ruleKind.addEventListener("change", () => { userField.hidden = ruleKind.value === "pattern"; });
  const ruleForm = h("form", { class: "row us-form needs-write", id: "acl-form", onsubmit: addRule },
    field("acl-kind", "Kind", ruleKind), userField, field("acl-access", "Access", ruleAccess),
    field("acl-topic", "Topic filter", ruleTopic), h("button", { type: "submit", class: "primary" }, "Add rule"));
  const aclFile = h("p", { class: "muted us-file" });
  const ruleList = h("tbody", {});
  const ruleTable = h("div", { class: "table-wrap" }, h("table", { id: "acl-table" },
    h("thead", {}, h("tr", {}, ...["Applies to", "Access", "Topic filter", "Line"].map((t) => h("th", { scope: "col", class: t === "Line" ? "us-opt" : null }, t)),
      h("th", { scope: "col", class: "needs-write" }, h("span", { class: "res-sr" }, "Actions")))), ruleList));
  const ruleEmpty = h("p", { class: "muted", hidden: true }, "No rules: with an empty ACL file every topic is denied.");
  const aclCard = h("div", { class: "card stack", id: "acl-card" },
    h("h2", {}, "Access control (ACL)"), aclFile, ruleForm, ruleError, ruleTable, ruleEmpty);

  root.append(h("h1", {}, "Users and ACL"), h("div", { class: "stack us-columns" }, usersCard, aclCard));

  // -- loading ---------------------------------------------------------------------------------
  // 409 not-configured: the file is not set up; show why instead of the form and the list.
  function unavailable(err, card, setting, parts) {
    for (const part of parts) part.hidden = true;
    const text = err.status === 409 && /not configured|nothing to manage/.test(err.detail || "")
      ? `No ${setting} is configured: set ${setting} in the broker's config to manage it here.`
      : `Could not read the ${setting}: ${err.detail || err.message}`;
    card.querySelector(".us-file").textContent = text;
  }

  async function loadUsers() {
    try {
      const answer = await api("users");
      if (closed) return;
      userFile.textContent = "From " + answer.password_file;
      userList.replaceChildren(...answer.users.map((name) => h("tr", { dataset: { user: name } },
        h("td", { class: "mono" }, name),
        h("td", { class: "res-actions needs-write" }, h("button", { type: "button", class: "link res-delete",
          "aria-label": "Delete user " + name, onclick: () => removeUser(name) }, "Delete")))));
      userTable.hidden = answer.users.length === 0;
      userEmpty.hidden = answer.users.length !== 0;
    } catch (err) {
      if (!closed && err.status !== 401) unavailable(err, usersCard, "password_file", [userForm, userTable, userEmpty]);
    }
  }

  async function loadRules() {
    try {
      const answer = await api("acl");
      if (closed) return;
      aclFile.textContent = "From " + answer.acl_file + " (rules apply in file order; the first that matches decides)";
      ruleList.replaceChildren(...answer.rules.map((rule) => h("tr", { dataset: { rule: rule.id } },
        h("td", {}, rule.kind === "pattern" ? h("em", {}, "every client (pattern)")
          : rule.user === null ? h("em", {}, "anonymous clients") : h("span", { class: "mono" }, rule.user)),
        h("td", {}, h("span", { class: "badge" + (rule.access === "deny" ? " bad" : "") }, rule.access)),
        h("td", { class: "mono" }, rule.topic),
        h("td", { class: "muted us-opt" }, String(rule.line)),
        h("td", { class: "res-actions needs-write" }, h("button", { type: "button", class: "link res-delete",
          "aria-label": `Delete rule ${rule.access} ${rule.topic}`, onclick: () => removeRule(rule) }, "Delete")))));
      ruleTable.hidden = answer.rules.length === 0;
      ruleEmpty.hidden = answer.rules.length !== 0;
    } catch (err) {
      if (!closed && err.status !== 401) unavailable(err, aclCard, "acl_file", [ruleForm, ruleTable, ruleEmpty]);
    }
  }

  // -- changes ---------------------------------------------------------------------------------
  async function addUser(event) {
    event.preventDefault();
    userError.textContent = "";
    const username = userName.value.trim();
    if (!username) { userError.textContent = "A user name is required."; userName.focus(); return; }
    if (!userPassword.value) { userError.textContent = "A password is required."; userPassword.focus(); return; }
    try {
      const answer = await api("users", { method: "POST", body: { username, password: userPassword.value } });
      toast(answer.created ? `User ${username} added.` : `Password of ${username} changed.`);
      userName.value = "";
      userPassword.value = "";
    } catch (err) {
      userError.textContent = "Not saved: " + (err.detail || err.message);
    }
    loadUsers();
  }

  async function removeUser(name) {
    if (!window.confirm(`Delete the user ${name}? Its connections stay until they end; it cannot connect again.`)) return;
    try {
      await api("users/" + encodeURIComponent(name), { method: "DELETE" });
      toast(`User ${name} deleted.`);
    } catch (err) {
      toast(`Could not delete ${name}: ${err.detail || err.message}`, "error");
    }
    loadUsers();
  }

  async function addRule(event) {
    event.preventDefault();
    ruleError.textContent = "";
    const topic = ruleTopic.value.trim();
    if (!topic) { ruleError.textContent = "A topic filter is required."; ruleTopic.focus(); return; }
    const pattern = ruleKind.value === "pattern";
    const body = { kind: ruleKind.value, access: ruleAccess.value, topic,
                   user: pattern || !ruleUser.value.trim() ? null : ruleUser.value.trim() };
    try {
      await api("acl", { method: "POST", body });
      toast(`Rule added: ${body.access} ${topic}.`);
      ruleTopic.value = "";
    } catch (err) {
      ruleError.textContent = "Not added: " + (err.detail || err.message);
    }
    loadRules();
  }

  async function removeRule(rule) {
    if (!window.confirm(`Delete the rule "${rule.access} ${rule.topic}"?`)) return;
    try {
      await api("acl/" + encodeURIComponent(rule.id), { method: "DELETE" });
      toast("Rule deleted.");
    } catch (err) {
      toast("Could not delete the rule: " + (err.detail || err.message), "error");
    }
    loadRules();
  }

  if (ctx.caller.password_file) loadUsers();
  else unavailable({ status: 409, detail: "not configured" }, usersCard, "password_file", [userForm, userTable, userEmpty]);
  if (ctx.caller.acl_file) loadRules();
  else unavailable({ status: 409, detail: "not configured" }, aclCard, "acl_file", [ruleForm, ruleTable, ruleEmpty]);
  return () => { closed = true; };
}
