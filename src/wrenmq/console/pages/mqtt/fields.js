// The MQTT client page's field checks and small form helpers, shared by its cards. Each check
// returns an error text, or "" when the value is fine: the page shows it beside the field.

const utf8 = new TextEncoder();

export function byteLength(text) { return utf8.encode(text).length; }

export function topicNameError(topic) {
  if (!topic) return "A topic is required.";
  if (/[+#]/.test(topic)) return "A topic name cannot contain the wildcards + or #.";
  if (topic.includes("\u0000")) return "A topic cannot contain the null character.";
  if (byteLength(topic) > 65535) return "A topic is at most 65,535 bytes.";
  return "";
}

export function topicFilterError(filter) {
  if (!filter) return "A topic filter is required.";
  if (filter.includes("\u0000")) return "A topic filter cannot contain the null character.";
  if (byteLength(filter) > 65535) return "A topic filter is at most 65,535 bytes.";
  const levels = filter.split("/");
  for (let i = 0; i < levels.length; i++) {
    const level = levels[i];
    if (level.includes("#") && (level !== "#" || i !== levels.length - 1)) {
      return "# must be a whole level and the last one (as in sensors/#).";
    }
    if (level.includes("+") && level !== "+") return "+ must be a whole level (as in sensors/+/temperature).";
  }
  return "";
}

export function integerError(text, min, max, what) {
  if (!/^\d+$/.test(text.trim())) return `${what} must be a whole number from ${min} to ${max}.`;
  const value = Number(text);
  if (value < min || value > max) return `${what} must be from ${min} to ${max}.`;
  return "";
}

// "key=value" lines -> {key: value | [values]}; a bad line is reported by its number.
export function parseUserProperties(text) {
  const properties = {};
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].trim();
    if (!line) continue;
    const at = line.indexOf("=");
    if (at <= 0) return { error: `Line ${i + 1}: expected key=value, got "${line.slice(0, 40)}".` };
    const key = line.slice(0, at).trim();
    const value = line.slice(at + 1).trim();
    if (key in properties) properties[key] = [].concat(properties[key], value);
    else properties[key] = value;
  }
  return { properties };
}

export function qosSelect(h, id) {
  return h("select", { id }, h("option", { value: "0" }, "0"), h("option", { value: "1" }, "1"),
           h("option", { value: "2" }, "2"));
}

export function labelled(h, input, text, cls) {
  return h("div", { class: cls || "" }, h("label", { for: input.id }, text), input);
}

export function newClientId() {
  const bytes = crypto.getRandomValues(new Uint8Array(4));
  return "wrenmq-console-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}
