// A connection's "Subscriptions" card: subscribe to a checked filter, see what each SUBACK granted
// (or why it refused), unsubscribe.

import { subscribe, unsubscribe } from "./client.js";
import { qosSelect, topicFilterError } from "./fields.js";

const SUBACK_REASONS = {
  0x80: "Unspecified error", 0x83: "Implementation specific error", 0x87: "Not authorized",
  0x8f: "Topic filter invalid", 0x91: "Packet identifier in use", 0x97: "Quota exceeded",
  0x9e: "Shared subscriptions not supported", 0xa1: "Subscription identifiers not supported",
  0xa2: "Wildcard subscriptions not supported",
};

export function subscriptionsCard(ctx, conn) {
  const { h } = ctx;
  const n = conn.n;
  const subFilter = h("input", { id: `mqtt-sub-filter-${n}`, placeholder: "sensors/#", autocomplete: "off" });
  const subQos = qosSelect(h, `mqtt-sub-qos-${n}`);
  const subError = h("p", { class: "error", role: "alert" });
  const subList = h("ul", { class: "mqtt-subs" });
  const subEmpty = h("p", { class: "muted" }, "No subscriptions yet.");
  const card = h("form", { class: "card stack mqtt-subscribe", novalidate: true, onsubmit: (event) => {
      event.preventDefault();
      const filter = subFilter.value.trim();
      const error = topicFilterError(filter);
      subError.textContent = error;
      if (error) return;
      subscribe(conn, filter, Number(subQos.value));
      subFilter.value = "";
    } },
    h("h2", {}, "Subscriptions"),
    h("div", { class: "row mqtt-inline" },
      h("div", { class: "mqtt-grow" }, h("label", { for: subFilter.id }, "Topic filter"), subFilter),
      h("div", {}, h("label", { for: subQos.id }, "QoS"), subQos),
      h("button", { type: "submit", class: "primary" }, "Subscribe")),
    subError, subEmpty, subList);
  conn.drawSubs = () => {
    subEmpty.hidden = conn.subs.size > 0;
    subList.replaceChildren(...[...conn.subs.values()].map((sub) => h("li", { class: "row" },
      h("code", {}, sub.filter),
      h("span", { class: "muted" }, "asked QoS " + sub.qos),
      sub.granted === undefined ? h("span", { class: "badge" }, "waiting for SUBACK")
        : sub.granted >= 0x80 ? h("span", { class: "badge bad" }, "refused: " + (SUBACK_REASONS[sub.granted] || "failure") +
                                  ` (0x${sub.granted.toString(16)})`)
        : h("span", { class: "badge ok" }, "granted QoS " + sub.granted),
      h("button", { type: "button", class: "link", "aria-label": "Unsubscribe from " + sub.filter,
                    onclick: () => unsubscribe(conn, sub.filter) }, "Unsubscribe"))));
  };
  return card;
}
