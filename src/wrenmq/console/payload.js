// Payloads as people read and write them (the MQTT client and Retained pages): shown as text, JSON,
// Base64 or hex (or "auto": JSON pretty-printed, text, else hex), and read from a text box in one
// of those formats. Shown text is clipped, so a 1 MB payload never lands in the DOM whole.

const MAX_SHOWN_CHARS = 8192;          // payload characters shown per message
const MAX_HEX_BYTES = 512;             // bytes of a binary payload shown as hex
const utf8 = new TextEncoder();

const strictUtf8 = new TextDecoder("utf-8", { fatal: true });

export function hex(bytes, limit) {
  const shown = bytes.subarray(0, limit);
  let out = "";
  for (let i = 0; i < shown.length; i++) out += (i && i % 16 === 0 ? "\n" : i ? " " : "") + shown[i].toString(16).padStart(2, "0");
  return bytes.length > limit ? out + " …" : out;
}

// -> {kind: "json" | "text" | "binary" | "empty", text}
export function describePayload(bytes) {
  if (!bytes || bytes.length === 0) return { kind: "empty", text: "(empty payload)" };
  let text;
  try { text = strictUtf8.decode(bytes); } catch (e) { return { kind: "binary", text: hex(bytes, MAX_HEX_BYTES) }; }
  const start = text.trimStart()[0];
  if ((start === "{" || start === "[") && text.length <= 1_000_000) {
    try { return { kind: "json", text: clip(JSON.stringify(JSON.parse(text), null, 2)) }; } catch (e) { /* not JSON */ }
  }
  return { kind: "text", text: clip(text) };
}

// Payload formats (as MQTTX offers them): what the publish box holds is read in the chosen format,
// and received payloads can be shown in one. Base64 and hex cover any bytes; JSON is checked.
export const FORMATS = ["text", "json", "base64", "hex"];
export const FORMAT_NAMES = { auto: "auto", text: "text", json: "JSON", base64: "Base64", hex: "hex" };

// text in `format` -> {bytes: Uint8Array} or {error}
export function encodePayload(text, format) {
  if (format === "json") {
    try { JSON.parse(text); } catch (err) { return { error: "The payload is not JSON: " + err.message }; }
    return { bytes: utf8.encode(text) };
  }
  if (format === "base64") {
    const clean = text.replace(/\s+/g, "");
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(clean) || clean.length % 4 === 1) return { error: "The payload is not Base64." };
    let binary;
    try { binary = atob(clean); } catch (err) { return { error: "The payload is not Base64." }; }
    return { bytes: Uint8Array.from(binary, (c) => c.charCodeAt(0)) };
  }
  if (format === "hex") {
    const clean = text.replace(/(0x|\s|:)/gi, "");
    if (!/^([0-9a-fA-F]{2})*$/.test(clean)) return { error: "The payload is not hex: pairs of 0-9 a-f, spaces allowed." };
    return { bytes: Uint8Array.from(clean.match(/../g) || [], (pair) => parseInt(pair, 16)) };
  }
  return { bytes: utf8.encode(text) };
}

function base64(bytes) {
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(binary);
}

// bytes shown in `format` ("auto": describePayload's guess) -> {kind, text}
export function showPayload(bytes, format) {
  if (format === "auto" || !bytes || bytes.length === 0) return describePayload(bytes);
  if (format === "hex") return { kind: "hex", text: hex(bytes, MAX_HEX_BYTES) };
  if (format === "base64") {
    const more = bytes.length > MAX_SHOWN_CHARS ? `\n… (${bytes.length} bytes)` : "";
    return { kind: "base64", text: base64(bytes.subarray(0, MAX_SHOWN_CHARS)) + more };
  }
  let text;
  try { text = strictUtf8.decode(bytes); } catch (e) { return { kind: "binary", text: "(not UTF-8: show it as hex or Base64)" }; }
  if (format === "json") {
    try { return { kind: "json", text: clip(JSON.stringify(JSON.parse(text), null, 2)) }; } catch (e) {
      return { kind: "text", text: clip(text) + "\n(not JSON)" };
    }
  }
  return { kind: "text", text: clip(text) };
}

function clip(text) {
  return text.length > MAX_SHOWN_CHARS ? text.slice(0, MAX_SHOWN_CHARS) + "\n… (" + text.length + " characters)" : text;
}

export function propertyText(value) {
  if (value instanceof Uint8Array) {
    try { return strictUtf8.decode(value); } catch (e) { return "0x" + hex(value, 64).replace(/\s/g, ""); }
  }
  if (Array.isArray(value)) return value.map(propertyText).join(", ");
  if (value && typeof value === "object") {
    return Object.entries(value).map(([k, v]) => `${k}=${Array.isArray(v) ? v.join(`, ${k}=`) : v}`).join(", ");
  }
  return String(value);
}
