/*
 * wrenmq-realtime.js: one realtime API for browsers over three transports, best first:
 * MQTT over WebSocket (MQTT.js), then Socket.IO, then HTTP long polling of wrenmq's API.
 *
 *   const rt = WrenmqRealtime.connect({ url: "http://broker:8080", mqttUrl: "ws://broker:9001/mqtt",
 *                                       presence: { id: "alice", name: "Alice" } });
 *   const off = rt.subscribe("events/#", (msg) => console.log(msg.topic, msg.json ?? msg.payload));
 *   await rt.publish("chat/room1", { text: "hi" }, { qos: 1 });
 *   rt.on("status", (s) => console.log(s.state, s.transport));   // connecting | connected | disconnected
 *   rt.onPresence((user, everyone) => console.log(user.id, user.status));
 *
 * How it moves between transports:
 * - It opens the first transport that works, in the order of `transports`. When the one in use
 *   fails it tries them again from the top; when none works it waits (exponential backoff with
 *   jitter) and tries again.
 * - While on a fallback it keeps probing the better ones (same backoff); one that works is
 *   subscribed before the fallback is closed (make before break).
 * - Nothing is lost across a switch: the MQTT session is persistent (clean start off, a session
 *   expiry), so the broker keeps what arrives while the browser is elsewhere; Socket.IO and
 *   polling ask the server to replay the messages of the seconds since the last transport was
 *   last heard from (wrenmq keeps a journal of recent messages).
 * - Nothing is shown twice: wrenmq gives every message it routes an id (`<boot>-<number>`), the
 *   same on every transport (the MQTT 5 user property `wrenmq-message-id`, which this client asks
 *   for in CONNECT, or `message_id` on Socket.IO and polling); the client remembers the last
 *   `dedupSize` ids it delivered, across transports and outages of any length, and drops a message
 *   it has seen. A message with an application event id (user property `event-id`, which wrenmq's
 *   change events and this client's publishes carry, or an `eventId` field of a JSON payload) is
 *   also delivered once per event id.
 *
 * Works as a plain <script> after /static/vendor/mqtt.min.js and /static/vendor/socket.io.min.js
 * (globals `mqtt` and `io`), or as a CommonJS/npm module that requires them.
 */
(function (root, factory) {
  if (typeof module === "object" && module.exports) {
    let mqttLib = null;
    let ioLib = null;
    try { mqttLib = require("mqtt"); } catch (e) { /* MQTT transport unavailable */ }
    try { ioLib = require("socket.io-client"); } catch (e) { /* Socket.IO transport unavailable */ }
    module.exports = factory(mqttLib, ioLib && (ioLib.io || ioLib));
  } else {
    root.WrenmqRealtime = factory(root.mqtt || null, root.io || null);
  }
})(typeof globalThis !== "undefined" ? globalThis : this, function (mqttLib, ioLib) {
  "use strict";

  const DEFAULTS = {
    url: null, // the API (Socket.IO and polling); default: this page's origin
    mqttUrl: null, // MQTT over WebSocket, e.g. ws://host:9001/mqtt; null: no MQTT transport
    transports: ["mqtt", "socketio", "polling"],
    token: null, // an API key; or username + password (the broker's users)
    username: null,
    password: null,
    clientId: null,
    presence: null, // { id, name }: be shown online to others while connected
    presencePrefix: "presence",
    presenceWillDelay: 10, // MQTT: seconds the broker waits before the offline will, time to fall back
    qos: 1,
    connectTimeout: 5000,
    backoffInitial: 500,
    backoffMax: 15000,
    probeInterval: 3000, // first wait before trying a better transport again
    replayMargin: 3, // seconds of replay added before the last sign of life of the old transport
    sessionExpiry: 600, // MQTT: seconds the broker keeps the session (and queues) while away
    keepalive: 10, // MQTT keep alive, seconds
    pollTimeout: 20, // seconds a long poll waits
    dedupSize: 50000, // message ids (and event ids) remembered to drop repeats: a count, not a time
    maxQueued: 1000, // publishes held while no transport is connected
    log: null, // function (line) for a trace of what the client does
  };

  function randomId(prefix) {
    const bytes = new Uint8Array(8);
    globalThis.crypto.getRandomValues(bytes);
    return prefix + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function uuid() {
    const c = globalThis.crypto;
    if (c.randomUUID) return c.randomUUID();
    return randomId("") + randomId("");
  }

  function jitter(ms) {
    return ms / 2 + Math.random() * ms / 2; // "equal jitter": between half and all of it
  }

  function textOf(payload) {
    if (typeof payload === "string") return payload;
    try { return new TextDecoder("utf-8", { fatal: true }).decode(payload); } catch (e) { return null; }
  }

  function parseJson(text) {
    if (text === null || text === "") return undefined;
    const c = text.charCodeAt(0);
    if (c !== 123 && c !== 91) return undefined; // only objects and arrays: "1" stays a string
    try { return JSON.parse(text); } catch (e) { return undefined; }
  }

  function topicMatches(filter, topic) {
    if (filter.startsWith("$share/")) filter = filter.split("/").slice(2).join("/");
    const f = filter.split("/");
    const t = topic.split("/");
    if (topic.startsWith("$") && (f[0] === "+" || f[0] === "#")) return false;
    for (let i = 0; i < f.length; i++) {
      if (f[i] === "#") return true;
      if (i >= t.length) return false;
      if (f[i] !== "+" && f[i] !== t[i]) return false;
    }
    return f.length === t.length;
  }

  function encodePayload(payload) {
    if (payload === undefined || payload === null) return "";
    if (typeof payload === "string" || payload instanceof Uint8Array) return payload;
    return JSON.stringify(payload);
  }

  function base64(bytes) {
    let s = "";
    for (let i = 0; i < bytes.length; i++) s += String.fromCharCode(bytes[i]);
    return btoa(s);
  }

  function fromBase64(text) {
    const s = atob(text);
    const out = new Uint8Array(s.length);
    for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
    return out;
  }

  // A message from Socket.IO or polling (the server's stream format) as handlers get it.
  function fromServer(data, transport) {
    const payload = data.encoding === "base64" ? fromBase64(data.payload) : data.payload;
    const props = data.properties || {};
    const user = {};
    for (const [k, v] of props.user_properties || []) user[k] = v;
    return {
      topic: data.topic, payload, qos: data.qos, retain: !!data.retain, transport, messageId: data.message_id || null,
      properties: { contentType: props.content_type, responseTopic: props.response_topic, userProperties: user },
    };
  }

  // ---------------------------------------------------------------------------------------------
  // Transports. Each: open(filters, replaySeconds) -> Promise (resolves once subscribed),
  // subscribe(filters), unsubscribe(filters), publish(topic, payload, opts) -> Promise, close().
  // They call rt._deliver(msg) for messages and rt._lost(transport, reason) when they fail.

  class MqttTransport {
    constructor(rt) { this.rt = rt; this.name = "mqtt"; this.client = null; this.lastAlive = 0; }

    open(filters) {
      const rt = this.rt;
      const o = rt.options;
      if (!mqttLib || !o.mqttUrl) return Promise.reject(new Error("MQTT is not configured"));
      return new Promise((resolve, reject) => {
        const presence = o.presence;
        const options = {
          protocolVersion: 5, clientId: rt.clientId, clean: false, keepalive: o.keepalive,
          reconnectPeriod: 0, connectTimeout: o.connectTimeout, resubscribe: false,
          // wrenmq-message-ids: the broker adds its id for each message (wrenmq-message-id), so
          // what the session replays after a fallback is known for what Socket.IO already showed.
          properties: { sessionExpiryInterval: o.sessionExpiry, userProperties: { "wrenmq-message-ids": "1" } },
        };
        if (o.username) { options.username = o.username; options.password = o.password || ""; }
        if (presence) {
          options.will = {
            topic: rt.presenceTopic(presence.id), qos: 1, retain: true,
            payload: JSON.stringify(rt.presenceBody("offline", "mqtt")),
            // Make before break for presence: a connection that dies leaves this long for the
            // fallback to attach, and wrenmq drops the will of a user still attached elsewhere.
            properties: { willDelayInterval: o.presenceWillDelay },
          };
        }
        let settled = false;
        const client = mqttLib.connect(o.mqttUrl, options);
        this.client = client;
        const fail = (err) => {
          if (!settled) { settled = true; client.end(true); reject(err); return; }
          if (this.client === client) { this.client = null; client.end(true); rt._lost(this, err); }
        };
        const timer = setTimeout(() => fail(new Error("MQTT connect timed out")), o.connectTimeout);
        client.on("packetreceive", () => { this.lastAlive = Date.now(); });
        client.on("error", (err) => { clearTimeout(timer); fail(err); });
        client.on("close", () => { clearTimeout(timer); fail(new Error("MQTT connection closed")); });
        client.on("message", (topic, payload, packet) => {
          const props = packet.properties || {};
          const user = Object.assign({}, props.userProperties || {});
          let messageId = user["wrenmq-message-id"];
          delete user["wrenmq-message-id"];
          if (Array.isArray(messageId)) messageId = messageId[messageId.length - 1]; // ours is the last
          rt._deliver({
            topic, payload: new Uint8Array(payload), qos: packet.qos, retain: !!packet.retain, transport: "mqtt",
            messageId: messageId || null,
            properties: { contentType: props.contentType, responseTopic: props.responseTopic, userProperties: user },
          });
        });
        client.on("connect", (connack) => {
          this.lastAlive = Date.now();
          // Even with the session present: filters added while away are not in it yet (and
          // Retain Handling 1 keeps the broker from resending retained messages for the others).
          this.subscribe(filters).then(() => {
            if (settled) return;
            if (!presence) { clearTimeout(timer); settled = true; resolve(); return; }
            // Resolve (and so let the fallback go) only once the broker has the online message:
            // the fallback's end must find this connection already attached, or it says offline.
            client.publish(rt.presenceTopic(presence.id), JSON.stringify(rt.presenceBody("online", "mqtt")),
                           { qos: 1, retain: true }, () => {
                             clearTimeout(timer);
                             if (!settled) { settled = true; resolve(); }
                           });
          }, (err) => { clearTimeout(timer); fail(err); });
        });
      });
    }

    subscribe(filters) {
      const client = this.client;
      if (!client || !filters.length) return Promise.resolve();
      const map = {};
      for (const f of filters) map[f] = { qos: this.rt.options.qos, rh: 1 }; // retained only when new
      return new Promise((resolve, reject) => {
        client.subscribe(map, (err, granted) => {
          if (err) return reject(err);
          const refused = (granted || []).filter((g) => g.qos >= 128);
          if (refused.length) return reject(new Error("subscription refused: " + refused.map((g) => g.topic)));
          resolve();
        });
      });
    }

    unsubscribe(filters) {
      if (this.client && filters.length) this.client.unsubscribe(filters);
      return Promise.resolve();
    }

    publish(topic, payload, opts) {
      const client = this.client;
      return new Promise((resolve, reject) => {
        if (!client) return reject(new Error("not connected"));
        const properties = { userProperties: opts.userProperties || {} };
        if (opts.contentType) properties.contentType = opts.contentType;
        client.publish(topic, payload, { qos: opts.qos, retain: !!opts.retain, properties }, (err, packet) => {
          if (err) return reject(err);
          if (packet && packet.reasonCode >= 128) return reject(new Error("refused: reason code " + packet.reasonCode));
          resolve();
        });
      });
    }

    // graceful: DISCONNECT (no will); goodbye: the user is leaving, not moving to another transport.
    close(graceful, goodbye) {
      const client = this.client;
      this.client = null;
      if (!client) return;
      const presence = this.rt.options.presence;
      if (graceful && goodbye && presence) {
        client.publish(this.rt.presenceTopic(presence.id), JSON.stringify(this.rt.presenceBody("offline", "mqtt")),
                       { qos: 1, retain: true });
      }
      client.end(!graceful);
    }
  }

  class SocketIOTransport {
    constructor(rt) { this.rt = rt; this.name = "socketio"; this.socket = null; this.lastAlive = 0; }

    open(filters, replay) {
      const rt = this.rt;
      const o = rt.options;
      if (!ioLib) return Promise.reject(new Error("Socket.IO is not loaded"));
      return new Promise((resolve, reject) => {
        const auth = { clientId: rt.clientId + "-sio" };
        if (o.token) auth.token = o.token;
        if (o.username) { auth.username = o.username; auth.password = o.password || ""; }
        if (o.presence) auth.presence = o.presence;
        const socket = ioLib(rt.apiUrl, {
          auth, reconnection: false, timeout: o.connectTimeout, transports: ["websocket", "polling"],
          forceNew: true,
        });
        this.socket = socket;
        let settled = false;
        const fail = (err) => {
          if (!settled) { settled = true; socket.disconnect(); reject(err); return; }
          if (this.socket === socket) { this.socket = null; socket.disconnect(); rt._lost(this, err); }
        };
        const timer = setTimeout(() => fail(new Error("Socket.IO connect timed out")), o.connectTimeout);
        socket.on("connect_error", (err) => { clearTimeout(timer); fail(err); });
        socket.on("disconnect", (reason) => { clearTimeout(timer); fail(new Error("Socket.IO: " + reason)); });
        socket.io.on("ping", () => { this.lastAlive = Date.now(); });
        socket.on("message", (data, ack) => {
          this.lastAlive = Date.now();
          rt._deliver(fromServer(data, "socketio"));
          if (typeof ack === "function") ack();
        });
        socket.on("welcome", () => {
          this.lastAlive = Date.now();
          const subscribed = filters.length ? this.request("subscribe", { filters, qos: o.qos, replay }) : Promise.resolve();
          subscribed.then(() => {
            clearTimeout(timer);
            if (!settled) { settled = true; resolve(); }
          }, (err) => { clearTimeout(timer); fail(err); });
        });
      });
    }

    request(event, data) {
      const socket = this.socket;
      if (!socket) return Promise.reject(new Error("not connected"));
      return socket.timeout(this.rt.options.connectTimeout).emitWithAck(event, data).then((answer) => {
        if (!answer || !answer.ok) throw new Error((answer && answer.error) || event + " failed");
        return answer;
      });
    }

    subscribe(filters) { return filters.length ? this.request("subscribe", { filters, qos: this.rt.options.qos }) : Promise.resolve(); }

    unsubscribe(filters) { return filters.length ? this.request("unsubscribe", { filters }) : Promise.resolve(); }

    publish(topic, payload, opts) { return this.request("publish", serverPublishBody(topic, payload, opts)); }

    close(graceful, goodbye) {
      const socket = this.socket;
      this.socket = null;
      if (!socket) return;
      if (!socket.connected) { socket.disconnect(); return; }
      // "leave" first: the server then knows the user is leaving. "handover" on a switch to
      // another transport: the user stays online for a grace period, so a switch followed at once
      // by the new transport's failure does not show them offline.
      const done = () => socket.disconnect();
      socket.timeout(1000).emitWithAck(goodbye ? "leave" : "handover", {}).then(done, done);
    }
  }

  function serverPublishBody(topic, payload, opts) {
    const body = { topic, qos: opts.qos, retain: !!opts.retain };
    if (payload instanceof Uint8Array) body.payload_base64 = base64(payload);
    else body.payload = payload;
    const user = Object.entries(opts.userProperties || {}).map(([name, value]) => ({ name, value: String(value) }));
    body.properties = { user_properties: user };
    if (opts.contentType) body.properties.content_type = opts.contentType;
    return body;
  }

  class PollingTransport {
    constructor(rt) { this.rt = rt; this.name = "polling"; this.id = null; this.lastAlive = 0; this.abort = null; }

    headers() {
      const o = this.rt.options;
      const headers = { "Content-Type": "application/json" };
      if (o.token) headers.Authorization = "Bearer " + o.token;
      else if (o.username) headers.Authorization = "Basic " + btoa(o.username + ":" + (o.password || ""));
      return headers;
    }

    async call(method, path, body, timeoutMs) {
      const controller = new AbortController();
      this.abort = controller;
      const timer = setTimeout(() => controller.abort(), timeoutMs || this.rt.options.connectTimeout);
      try {
        const response = await fetch(this.rt.apiUrl + "/api/v1/realtime/poll" + path, {
          method, headers: this.headers(), body: body === undefined ? undefined : JSON.stringify(body),
          signal: controller.signal, cache: "no-store",
        });
        const answer = response.status === 204 ? null : await response.json();
        if (!response.ok) throw new Error((answer && answer.detail) || "HTTP " + response.status);
        this.lastAlive = Date.now();
        return answer;
      } finally {
        clearTimeout(timer);
      }
    }

    async open(filters, replay) {
      const o = this.rt.options;
      const body = { filters, qos: o.qos, client_id: this.rt.clientId + "-poll" };
      if (replay !== null && replay !== undefined) body.replay = replay;
      if (o.presence) body.presence = o.presence;
      const session = await this.call("POST", "", body);
      this.id = session.id;
      this.loop(session.id);
    }

    async loop(id) {
      const rt = this.rt;
      while (this.id === id) {
        try {
          const batch = await this.call("GET", "/" + id + "?timeout=" + rt.options.pollTimeout, undefined,
                                        (rt.options.pollTimeout + 10) * 1000);
          if (this.id !== id) return;
          for (const data of batch.messages) rt._deliver(fromServer(data, "polling"));
        } catch (err) {
          if (this.id === id) { this.id = null; rt._lost(this, err); }
          return;
        }
      }
    }

    subscribe(filters) { return filters.length && this.id ? this.call("POST", "/" + this.id + "/subscribe", { filters, qos: this.rt.options.qos }) : Promise.resolve(); }

    unsubscribe(filters) { return filters.length && this.id ? this.call("POST", "/" + this.id + "/unsubscribe", { filters }) : Promise.resolve(); }

    publish(topic, payload, opts) {
      if (!this.id) return Promise.reject(new Error("not connected"));
      return this.call("POST", "/" + this.id + "/publish", serverPublishBody(topic, payload, opts));
    }

    close(graceful, goodbye) {
      const id = this.id;
      this.id = null;
      if (this.abort) this.abort.abort();
      if (id) {
        // goodbye=false on a switch: the user keeps the grace should the new transport fail at once.
        const url = this.rt.apiUrl + "/api/v1/realtime/poll/" + id + (goodbye === false ? "?goodbye=false" : "");
        fetch(url, { method: "DELETE", keepalive: true }).catch(() => {});
      }
    }
  }

  const TRANSPORTS = { mqtt: MqttTransport, socketio: SocketIOTransport, polling: PollingTransport };

  // ---------------------------------------------------------------------------------------------

  class Realtime {
    constructor(options) {
      this.options = Object.assign({}, DEFAULTS, options || {});
      const o = this.options;
      this.apiUrl = (o.url || (typeof location !== "undefined" ? location.origin : "")).replace(/\/$/, "");
      this.clientId = o.clientId || randomId("wrt-");
      this.handlers = new Map(); // filter -> Set of handlers
      this.listeners = { status: new Set(), presence: new Set(), message: new Set(), error: new Set() };
      this.transport = null; // the transport in use
      this.state = "connecting";
      this.closed = false;
      this.seen = new Set(); // message ids ("m:") and event ids ("e:") delivered, oldest first (bounded)
      this.queue = [];
      this.present = new Map(); // presence id -> last presence message
      this.stats = { delivered: 0, duplicates: 0, switches: 0 };
      this.backoff = o.backoffInitial;
      this.probeDelay = o.probeInterval;
      this.timer = null;
      this.probeTimer = null;
      this.probing = false;
      this.lastAliveAt = 0;
      // Start once the caller's first subscribe() calls are in, so the first transport opens with them.
      setTimeout(() => this._connectLoop(), 0);
    }

    trace(line) { if (this.options.log) this.options.log(line); }

    // -- public API -------------------------------------------------------------------------------

    subscribe(filter, handler) {
      let set = this.handlers.get(filter);
      const fresh = !set;
      if (fresh) { set = new Set(); this.handlers.set(filter, set); }
      set.add(handler);
      if (fresh && this.transport) {
        this.transport.subscribe([filter]).catch((err) => this._emit("error", err));
      }
      return () => this.unsubscribe(filter, handler);
    }

    unsubscribe(filter, handler) {
      const set = this.handlers.get(filter);
      if (!set) return;
      if (handler) set.delete(handler); else set.clear();
      if (!set.size) {
        this.handlers.delete(filter);
        if (this.transport) this.transport.unsubscribe([filter]).catch(() => {});
      }
    }

    publish(topic, payload, opts) {
      opts = Object.assign({ qos: 0, retain: false }, opts || {});
      opts.userProperties = Object.assign({}, opts.userProperties || {});
      if (opts.eventId !== false && !opts.userProperties["event-id"]) {
        opts.userProperties["event-id"] = typeof opts.eventId === "string" ? opts.eventId : uuid();
      }
      const body = encodePayload(payload);
      if (typeof payload === "object" && !(payload instanceof Uint8Array) && !opts.contentType) {
        opts.contentType = "application/json";
      }
      if (this.transport) return this.transport.publish(topic, body, opts);
      return new Promise((resolve, reject) => {
        if (this.queue.length >= this.options.maxQueued) return reject(new Error("offline and the queue is full"));
        this.queue.push({ topic, body, opts, resolve, reject });
      });
    }

    on(event, listener) {
      this.listeners[event].add(listener);
      return () => this.listeners[event].delete(listener);
    }

    onPresence(listener) {
      if (!this.handlers.has(this.options.presencePrefix + "/+")) {
        this.subscribe(this.options.presencePrefix + "/+", (msg) => this._presenceMessage(msg));
      }
      return this.on("presence", listener);
    }

    get status() { return { state: this.state, transport: this.transport ? this.transport.name : null }; }

    close() {
      this.closed = true;
      clearTimeout(this.timer);
      clearTimeout(this.probeTimer);
      if (this.transport) this.transport.close(true, true);
      this.transport = null;
      this._setState("disconnected", null);
    }

    // -- presence ---------------------------------------------------------------------------------

    presenceTopic(id) { return this.options.presencePrefix + "/" + id; }

    presenceBody(status, transport) {
      const p = this.options.presence || {};
      return Object.assign({}, p, { status, transport, timestamp: new Date().toISOString() });
    }

    _presenceMessage(msg) {
      const id = msg.topic.slice(this.options.presencePrefix.length + 1);
      if (msg.payload.length === 0) { this.present.delete(id); return; }
      const body = msg.json;
      if (!body || typeof body !== "object") return;
      const user = Object.assign({ id }, body);
      this.present.set(id, user);
      this._emit("presence", user, this.present);
    }

    // -- delivery and dedup -----------------------------------------------------------------------

    _deliver(msg) {
      const text = textOf(msg.payload);
      msg.text = text;
      msg.json = parseJson(text);
      const now = Date.now();
      this.lastAliveAt = now;
      const props = msg.properties || {};
      let id = props.userProperties && props.userProperties["event-id"];
      if (Array.isArray(id)) id = id[0];
      if (!id && msg.json && typeof msg.json === "object" && typeof msg.json.eventId === "string") id = msg.json.eventId;
      msg.eventId = id || null;
      msg.messageId = msg.messageId || null;
      const keys = [];
      if (msg.messageId) keys.push("m:" + msg.messageId);
      if (id) keys.push("e:" + id);
      const seen = this.seen;
      if (keys.some((key) => seen.has(key))) { this.stats.duplicates++; return; }
      for (const key of keys) seen.add(key);
      if (seen.size > this.options.dedupSize) {
        let drop = seen.size - this.options.dedupSize;
        for (const key of seen) { if (drop-- <= 0) break; seen.delete(key); }
      }
      this.stats.delivered++;
      for (const [filter, set] of this.handlers) {
        if (!topicMatches(filter, msg.topic)) continue;
        for (const handler of set) {
          try { handler(msg); } catch (err) { this._emit("error", err); }
        }
      }
      this._emit("message", msg);
    }

    _emit(event, ...args) {
      for (const listener of this.listeners[event]) {
        try { listener(...args); } catch (err) { if (event !== "error") this._emit("error", err); }
      }
    }

    _setState(state, transport) {
      this.state = state;
      this._emit("status", { state, transport });
    }

    // -- moving between transports ----------------------------------------------------------------

    _replaySeconds() {
      // What the new transport should replay: everything since the old one was last heard from.
      if (!this.lastAliveAt) return null;
      return (Date.now() - this.lastAliveAt) / 1000 + this.options.replayMargin;
    }

    async _tryOpen(index) {
      const name = this.options.transports[index];
      const Transport = TRANSPORTS[name];
      if (!Transport) throw new Error("unknown transport " + name);
      const transport = new Transport(this);
      transport.index = index;
      transport.filters = Array.from(this.handlers.keys());
      await transport.open(transport.filters, this._replaySeconds());
      return transport;
    }

    async _connectLoop() {
      if (this.closed) return;
      this._setState("connecting", null);
      const names = this.options.transports;
      for (let i = 0; i < names.length && !this.closed; i++) {
        try {
          const transport = await this._tryOpen(i);
          if (this.closed) { transport.close(true, true); return; }
          this._use(transport);
          return;
        } catch (err) {
          this.trace(names[i] + " failed: " + (err && err.message));
        }
      }
      if (this.closed) return;
      const wait = jitter(this.backoff);
      this.backoff = Math.min(this.backoff * 2, this.options.backoffMax);
      this.trace("no transport works; retrying in " + Math.round(wait) + " ms");
      this.timer = setTimeout(() => this._connectLoop(), wait);
    }

    _use(transport) {
      const previous = this.transport;
      this.transport = transport;
      this.lastAliveAt = Date.now();
      this.backoff = this.options.backoffInitial;
      if (previous && previous !== transport) { this.stats.switches++; previous.close(true, false); }
      // Filters subscribed to while it was opening.
      const missing = Array.from(this.handlers.keys()).filter((f) => !transport.filters.includes(f));
      if (missing.length) transport.subscribe(missing).catch((err) => this._emit("error", err));
      this.trace("using " + transport.name);
      this._setState("connected", transport.name);
      this._flushQueue();
      clearTimeout(this.probeTimer);
      this.probeDelay = this.options.probeInterval;
      if (transport.index > 0) this._scheduleProbe();
    }

    _lost(transport, err) {
      if (transport !== this.transport || this.closed) return;
      this.trace(transport.name + " lost: " + (err && err.message));
      this.lastAliveAt = Math.max(this.lastAliveAt, transport.lastAlive || 0);
      this.transport = null;
      clearTimeout(this.probeTimer);
      this._connectLoop();
    }

    _scheduleProbe() {
      const wait = jitter(this.probeDelay);
      this.probeDelay = Math.min(this.probeDelay * 2, this.options.backoffMax);
      this.probeTimer = setTimeout(() => this._probe(), wait);
    }

    async _probe() {
      const current = this.transport;
      if (this.closed || !current || current.index === 0 || this.probing) return;
      this.probing = true;
      try {
        for (let i = 0; i < current.index; i++) {
          let candidate = null;
          try {
            candidate = await this._tryOpen(i);
          } catch (err) {
            this.trace("probe " + this.options.transports[i] + " failed: " + (err && err.message));
            continue;
          }
          if (this.closed || this.transport !== current) { candidate.close(true, this.closed); return; }
          this._use(candidate); // subscribed before the fallback closes: make before break
          return;
        }
        if (this.transport === current) this._scheduleProbe();
      } finally {
        this.probing = false;
      }
    }

    _flushQueue() {
      const queued = this.queue;
      this.queue = [];
      for (const item of queued) {
        this.transport.publish(item.topic, item.body, item.opts).then(item.resolve, item.reject);
      }
    }
  }

  return {
    connect(options) { return new Realtime(options); },
    Realtime,
    topicMatches,
    version: "0.1.0",
  };
});
