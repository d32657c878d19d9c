// Saved connections, as MQTTX keeps them: the connection form's fields by connection name, in
// localStorage, without the password (a browser's storage is no place for it: it is asked again).
// Every connection opened is saved; choosing one fills the form back in.

const SAVED = "wrenmq.console.mqtt.saved";
const MAX_SAVED = 50;

export function savedConnections() {
  try {
    const list = JSON.parse(localStorage.getItem(SAVED) || "[]");
    return Array.isArray(list) ? list.filter((one) => one && typeof one.name === "string") : [];
  } catch (e) { return []; }
}

// The "Saved connections" row of the form. `form` gives the fields to save and restore:
// {texts, choices, checks} (name -> field, by kind of input), broker (the preset select), presets()
// (the listeners it offers), custom (the host/port block), password, will (the <details>).
export function savedRow(ctx, form) {
  const { h } = ctx;
  const select = h("select", { id: "mqtt-saved" });
  const forgetButton = h("button", { type: "button", class: "link", id: "mqtt-forget",
    onclick: () => {
      const chosen = select.value;
      if (!chosen) return;
      localStorage.setItem(SAVED, JSON.stringify(savedConnections().filter((one) => one.name !== chosen)));
      draw();
      ctx.toast(`Forgot the saved connection ${chosen}.`);
    } }, "Forget");
  const el = h("div", { class: "row mqtt-inline mqtt-saved" },
    h("div", { class: "mqtt-grow" }, h("label", { for: "mqtt-saved" }, "Saved connections"), select), forgetButton);

  function draw() {
    const list = savedConnections();
    select.replaceChildren(h("option", { value: "" }, `choose one (${list.length})`),
      ...list.map((one) => h("option", { value: one.name }, one.name)));
    el.hidden = list.length === 0;
  }

  function presetKey() {
    const value = form.broker.input.value;
    return value === "custom" ? "custom" : "preset:" + JSON.stringify(form.presets()[Number(value)]);
  }

  function snapshot() {
    const saved = { broker: presetKey() };
    for (const [k, f] of Object.entries(form.texts)) saved[k] = f.input.value;
    for (const [k, f] of Object.entries(form.choices)) saved[k] = f.input.value;
    for (const [k, f] of Object.entries(form.checks)) saved[k] = f.input.checked;
    saved.name = saved.name.trim();
    return saved;
  }

  function remember() {
    const saved = snapshot();
    const list = savedConnections().filter((one) => one.name !== saved.name);
    list.unshift(saved);
    localStorage.setItem(SAVED, JSON.stringify(list.slice(0, MAX_SAVED)));
    draw();
  }

  function restore(saved) {
    for (const [k, f] of Object.entries(form.texts)) if (typeof saved[k] === "string") f.input.value = saved[k];
    for (const [k, f] of Object.entries(form.choices)) if (typeof saved[k] === "string") f.input.value = saved[k];
    for (const [k, f] of Object.entries(form.checks)) if (typeof saved[k] === "boolean") f.input.checked = saved[k];
    const preset = form.presets().findIndex((p) => "preset:" + JSON.stringify(p) === saved.broker);
    form.broker.input.value = preset >= 0 ? String(preset) : "custom";
    form.custom.hidden = form.broker.input.value !== "custom";
    form.password.input.value = "";
    if (saved.willTopic) form.will.open = true;
  }

  select.addEventListener("change", () => {
    const saved = savedConnections().find((one) => one.name === select.value);
    if (saved) restore(saved);
  });

  draw();
  return { el, remember };
}
