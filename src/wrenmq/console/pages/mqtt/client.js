// One connection's MQTT.js client: connect (with the page's reconnect rules), subscribe,
// unsubscribe, publish. The cards call these; the client's events come back to the connection
// object `conn` (conn.setState from the status bar, conn.drawSubs, conn.onMessage from the cards).

export function connect(conn) {
  if (conn.client) { conn.client.removeAllListeners(); conn.client.on("error", () => {}); conn.client.end(true); }
  conn.stopping = false;
  conn.everConnected = false;
  conn.setState("connecting", "");
  let client;
  try {
    client = mqtt.connect(conn.url, conn.options);
  } catch (err) {
    conn.setState("closed", "Could not start: " + err.message);
    return;
  }
  conn.client = client;
  const fresh = { value: true };
  client.on("connect", (connack) => {
    conn.everConnected = true;
    conn.setState("connected", "");
    // A new client (re)subscribes all the tab lists; MQTT.js resubscribes on its own reconnects, so
    // after those only what was asked for while offline is sent.
    for (const sub of conn.subs.values()) {
      if (fresh.value || sub.granted === undefined) subscribe(conn, sub.filter, sub.qos);
    }
    fresh.value = false;
    if (connack && connack.properties && connack.properties.assignedClientIdentifier) {
      conn.assignedId = connack.properties.assignedClientIdentifier;
    }
  });
  client.on("reconnect", () => conn.setState("reconnecting"));
  client.on("offline", () => { if (!conn.stopping) conn.setState("reconnecting"); });
  client.on("close", () => {
    if (conn.stopping || client.disconnecting) conn.setState("closed");
    else conn.setState("reconnecting", conn.error || (conn.everConnected ? "The connection closed."
                                                                           : `Could not reach ${conn.url}.`));
  });
  client.on("disconnect", (packet) => {
    const code = packet && packet.reasonCode;
    const reason = packet && packet.properties && packet.properties.reasonString;
    conn.error = `The broker disconnected this client (reason 0x${(code || 0).toString(16).padStart(2, "0")}` +
                 (reason ? ": " + reason : "") + ").";
  });
  client.on("error", (err) => {
    conn.error = err.message || String(err);
    // A refused CONNECT (bad credentials, not authorized, bad client id) will not get better by retrying.
    if (err.code !== undefined && typeof err.code === "number" && !conn.everConnected) {
      conn.stopping = true;
      client.end(true);
      const why = conn.error.replace(/^Connection refused:\s*/i, "");
      conn.setState("closed", `The broker refused the connection: ${why} (0x${err.code.toString(16).padStart(2, "0")}).`);
    } else {
      conn.setState(conn.state === "connected" ? "connected" : conn.state, conn.error);
    }
  });
  client.on("end", () => conn.setState("closed"));
  client.on("message", conn.onMessage);
}

// A normal DISCONNECT (no will): the tab was closed on purpose.
export function disconnect(conn) {
  conn.stopping = true;
  if (conn.client) { conn.client.removeAllListeners(); conn.client.on("error", () => {}); conn.client.end(); conn.client = null; }
}

export function subscribe(conn, filter, qos) {
  conn.subs.set(filter, { filter, qos, granted: undefined });
  conn.drawSubs();
  if (!conn.client || conn.state !== "connected") {
    conn.ctx.toast(`Not connected: ${filter} is subscribed once the connection is up.`);
    return;
  }
  conn.client.subscribe(filter, { qos }, (err, granted) => {
    const sub = conn.subs.get(filter);
    if (!sub) return;
    if (err) {
      const code = (err.packet && err.packet.granted && err.packet.granted[0]) ?? err.code;
      sub.granted = typeof code === "number" && code >= 0x80 ? code : 0x80;
      conn.ctx.toast(`Subscribe to ${filter} failed: ${err.message}`, "error");
    } else {
      sub.granted = granted && granted[0] ? granted[0].qos : qos;
    }
    conn.drawSubs();
  });
}

export function unsubscribe(conn, filter) {
  conn.subs.delete(filter);
  conn.drawSubs();
  if (conn.client && conn.state === "connected") {
    conn.client.unsubscribe(filter, (err) => {
      if (err) conn.ctx.toast(`Unsubscribe from ${filter} failed: ${err.message}`, "error");
    });
  }
}

export function publish(conn, message) {
  if (!conn.client || conn.state !== "connected") {
    conn.ctx.toast("Not connected: nothing was published.", "error");
    return;
  }
  conn.client.publish(message.topic, message.payload, message.options, (err) => {
    if (err) conn.ctx.toast(`Publish to ${message.topic} failed: ${err.message}`, "error");
    else conn.ctx.toast(`Published to ${message.topic} (QoS ${message.options.qos}).`, "ok");
  });
}
