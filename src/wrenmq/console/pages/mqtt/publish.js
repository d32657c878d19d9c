// A connection's "Publish" card: topic, QoS, retain, the payload in a chosen format (text, JSON,
// Base64, Hex) and, on MQTT 5, the message properties. Nothing is sent until every field checks.

import { FORMATS, FORMAT_NAMES, encodePayload } from "../../payload.js";
import { publish } from "./client.js";
import { integerError, labelled, parseUserProperties, qosSelect, topicNameError } from "./fields.js";

export function publishCard(ctx, conn) {
  const { h } = ctx;
  const { n, v5 } = conn;
  const pubTopic = h("input", { id: `mqtt-pub-topic-${n}`, placeholder: "sensors/kitchen/temperature", autocomplete: "off" });
  const pubPayload = h("textarea", { id: `mqtt-pub-payload-${n}`, rows: 3, placeholder: '{"celsius": 21.5}' });
  const pubQos = qosSelect(h, `mqtt-pub-qos-${n}`);
  const pubRetain = h("input", { type: "checkbox", id: `mqtt-pub-retain-${n}` });
  const pubFormat = h("select", { id: `mqtt-pub-format-${n}` },
    ...FORMATS.map((f) => h("option", { value: f }, FORMAT_NAMES[f])));
  const propContentType = h("input", { id: `mqtt-pub-content-type-${n}`, placeholder: "application/json", autocomplete: "off" });
  const propResponseTopic = h("input", { id: `mqtt-pub-response-topic-${n}`, autocomplete: "off" });
  const propCorrelation = h("input", { id: `mqtt-pub-correlation-${n}`, autocomplete: "off" });
  const propExpiry = h("input", { id: `mqtt-pub-expiry-${n}`, inputmode: "numeric", placeholder: "seconds", autocomplete: "off" });
  const propUser = h("textarea", { id: `mqtt-pub-user-props-${n}`, rows: 2, placeholder: "key=value, one a line" });
  const pubError = h("p", { class: "error", role: "alert" });
  const card = h("form", { class: "card stack mqtt-publish", novalidate: true, onsubmit: (event) => {
      event.preventDefault();
      const message = readPublish();
      if (message) publish(conn, message);
    } },
    h("h2", {}, "Publish"),
    h("div", { class: "row mqtt-inline" }, labelled(h, pubTopic, "Topic", "mqtt-grow"), labelled(h, pubQos, "QoS"),
      h("div", { class: "mqtt-check" }, pubRetain, h("label", { for: pubRetain.id }, "Retain"))),
    h("div", { class: "row mqtt-inline" }, labelled(h, pubPayload, "Payload", "mqtt-grow"), labelled(h, pubFormat, "Format")),
    v5 ? h("details", { class: "mqtt-props" }, h("summary", {}, "MQTT 5 properties"),
      h("div", { class: "mqtt-form-grid" }, labelled(h, propContentType, "Content type"),
        labelled(h, propResponseTopic, "Response topic"), labelled(h, propCorrelation, "Correlation data"),
        labelled(h, propExpiry, "Message expiry (s)")),
      labelled(h, propUser, "User properties (key=value lines)")) : null,
    pubError,
    h("div", { class: "row" }, h("button", { type: "submit", class: "primary" }, "Publish")));

  function readPublish() {
    pubError.textContent = "";
    const topic = pubTopic.value;
    const problems = [];
    const topicError = topicNameError(topic);
    if (topicError) problems.push(topicError);
    const options = { qos: Number(pubQos.value), retain: pubRetain.checked };
    if (v5) {
      const properties = {};
      if (propContentType.value) properties.contentType = propContentType.value;
      if (propResponseTopic.value) {
        const error = topicNameError(propResponseTopic.value);
        if (error) problems.push("Response topic: " + error);
        properties.responseTopic = propResponseTopic.value;
      }
      if (propCorrelation.value) properties.correlationData = propCorrelation.value;
      if (propExpiry.value.trim()) {
        const error = integerError(propExpiry.value, 0, 4294967295, "Message expiry");
        if (error) problems.push(error);
        else properties.messageExpiryInterval = Number(propExpiry.value);
      }
      const user = parseUserProperties(propUser.value);
      if (user.error) problems.push("User properties: " + user.error);
      else if (Object.keys(user.properties).length) properties.userProperties = user.properties;
      if (Object.keys(properties).length) options.properties = properties;
    }
    const encoded = encodePayload(pubPayload.value, pubFormat.value);
    if (encoded.error) problems.push(encoded.error);
    if (problems.length) { pubError.textContent = problems.join(" "); return null; }
    // Text goes as the string (MQTT.js encodes it as UTF-8); other formats as their bytes.
    return { topic, payload: pubFormat.value === "text" ? pubPayload.value : encoded.bytes, options };
  }
  return card;
}
