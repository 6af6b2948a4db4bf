/**
 * ProgRock browser client: real-time progress of long-running tasks over the
 * WebSocket at /prog/ (see docs/protocol.md and docs/client-js.md).
 *
 * One dependency-free ES module, no build step:
 *
 *   import { ProgRock } from "/static/progrock/progrock.js";
 *   const client = new ProgRock();
 *   const task = await client.start("rock", { step: 5 });
 *   task.on("progress", (m) => console.log(m.progress))
 *       .on("complete", (m) => console.log("done", m.result));
 *
 * The client reconnects by itself (capped, jittered exponential backoff),
 * re-subscribes the unfinished tasks it watches, applies their snapshots,
 * drops duplicate messages and re-syncs when it sees a gap in `seq`.
 */

const TERMINAL_TYPES = new Set(["complete", "failed", "cancelled"]);
const TERMINAL_STATUSES = new Set(["succeeded", "failed", "cancelled"]);
const STATUS_OF_TYPE = { complete: "succeeded", failed: "failed", cancelled: "cancelled" };
const TASK_TYPES = new Set(["started", "progress", "complete", "failed", "cancelled", "snapshot"]);
const DEFAULT_BACKOFF = { initial: 0.5, max: 30, factor: 1.618, jitter: 1 };

/** An error the client raises or rejects a promise with. */
export class ProgRockError extends Error {
  /**
   * @param {string} code  a protocol error code (docs/protocol.md 3.3) or
   *   "connection_lost" / "closed" for the client's own failures.
   * @param {string} detail human-readable explanation.
   * @param {object} [message] the server's `error` message, if any.
   */
  constructor(code, detail, message = null) {
    super(`${code}: ${detail}`);
    this.name = "ProgRockError";
    this.code = code;
    this.detail = detail;
    this.serverMessage = message;
  }
}

/** Tiny event emitter shared by the client and its task handles. */
class Emitter {
  constructor() {
    this._listeners = new Map();
  }

  /** Call `fn(payload)` on every `event`; returns `this` for chaining. */
  on(event, fn) {
    if (typeof fn !== "function") {
      throw new TypeError(`expected a function listener for "${event}", got ${typeof fn}`);
    }
    if (!this._listeners.has(event)) this._listeners.set(event, new Set());
    this._listeners.get(event).add(fn);
    return this;
  }

  /** Remove a listener added with `on`; returns `this`. */
  off(event, fn) {
    const set = this._listeners.get(event);
    if (set) set.delete(fn);
    return this;
  }

  _emit(event, payload) {
    const set = this._listeners.get(event);
    if (!set || set.size === 0) return false;
    for (const fn of [...set]) {
      try {
        fn(payload);
      } catch (err) {
        // A broken listener must not break message handling; report it.
        setTimeout(() => {
          throw err;
        });
      }
    }
    return true;
  }
}

/**
 * One task the client watches. Its fields mirror the latest known state:
 * `id`, `kind`, `status`, `progress`, `message`, `etaS`, `rate`, `result`,
 * `error`, `seq`, `createdAt`, `startedAt`, `finishedAt`, and `done`.
 *
 * Events: "started", "progress", "complete", "failed", "cancelled",
 * "snapshot", "error" (a server error about this task), "update" (any state
 * change, with the handle) and "end" (the terminal message, once).
 */
export class TaskHandle extends Emitter {
  constructor(client, id) {
    super();
    this.client = client;
    this.id = id;
    this.kind = null;
    this.status = "queued";
    this.progress = 0;
    this.message = null;
    this.etaS = null;
    this.rate = null;
    this.result = null;
    this.error = null;
    this.seq = 0;
    this.createdAt = null;
    this.startedAt = null;
    this.finishedAt = null;
    this.done = false;
    this._lastWasSnapshot = false;
    this._terminalMessage = null;
  }

  /**
   * Like Emitter.on, but a listener for the terminal event (or "end") added
   * after the task ended is still called, once, with the terminal message.
   */
  on(event, fn) {
    super.on(event, fn);
    const last = this._terminalMessage;
    if (last && (event === "end" || event === last.type)) {
      queueMicrotask(() => {
        if (this._listeners.get(event)?.has(fn)) fn(last);
      });
    }
    return this;
  }

  /** Ask the server to cancel the task (every watcher gets "cancelled"). */
  cancel() {
    this.client.cancel(this.id);
    return this;
  }

  /** Stop watching the task. */
  unsubscribe() {
    this.client.unsubscribe(this.id);
    return this;
  }

  /** A promise settled when the task ends: resolved on "complete", rejected otherwise. */
  finished() {
    return new Promise((resolve, reject) => {
      this.on("end", (msg) => {
        if (msg.type === "complete") resolve(msg);
        else {
          const code = msg.type === "failed" ? msg.error?.code || "failed" : "cancelled";
          const detail = msg.type === "failed" ? msg.error?.detail || "" : "the task was cancelled";
          reject(new ProgRockError(code, detail, msg));
        }
      });
    });
  }

  /** Apply one server message; returns false when it was a duplicate. */
  _apply(msg) {
    const seq = typeof msg.seq === "number" ? msg.seq : null;
    const terminal = TERMINAL_TYPES.has(msg.type);
    if (msg.type === "snapshot") {
      if (seq !== null && seq < this.seq) return false; // stale
      this._applyState(msg);
      if (typeof msg.status === "string") this.status = msg.status;
      if (seq !== null) this.seq = seq;
      this._lastWasSnapshot = true;
      // A finished task we already reported: do not re-subscribe it after reconnects.
      if (this.done && TERMINAL_STATUSES.has(this.status)) this.client._finished(this.id);
      this._emit("snapshot", msg);
      this._emit("update", this);
      return true;
    }
    if (this.done) return false; // nothing follows a terminal message
    if (seq !== null) {
      // Protocol 4.1: a terminal message may repeat the seq of the snapshot before it.
      const afterSnapshot = terminal && this._lastWasSnapshot && seq === this.seq;
      if (seq <= this.seq && !afterSnapshot) return false; // duplicate
      if (this.seq > 0 && seq > this.seq + 1 && !terminal) this.client._resync(this.id);
      this.seq = seq;
    }
    this._lastWasSnapshot = false;
    this._applyState(msg);
    if (msg.type === "started") this.status = msg.status || "running";
    else if (msg.type === "progress") {
      if (!TERMINAL_STATUSES.has(this.status)) this.status = "running";
    } else if (terminal) {
      this.status = STATUS_OF_TYPE[msg.type];
      this.done = true;
      this.etaS = null;
    }
    this._emit(msg.type, msg);
    this._emit("update", this);
    if (terminal) {
      this._emit("end", msg);
      this._terminalMessage = msg; // later "end" listeners are called at once
      this.client._finished(this.id);
    }
    return true;
  }

  _applyState(msg) {
    // `typeof` checks, not truthiness: progress 0 is a value (the seed's bug).
    if (typeof msg.progress === "number" && Number.isFinite(msg.progress)) {
      this.progress = msg.progress;
    }
    if (typeof msg.kind === "string") this.kind = msg.kind;
    if ("message" in msg) this.message = msg.message;
    if ("eta_s" in msg) this.etaS = msg.eta_s;
    if ("rate" in msg) this.rate = msg.rate;
    if ("result" in msg) this.result = msg.result;
    if ("error" in msg) this.error = msg.error;
    if ("created_at" in msg) this.createdAt = msg.created_at;
    if ("started_at" in msg) this.startedAt = msg.started_at;
    if ("finished_at" in msg) this.finishedAt = msg.finished_at;
  }
}

/** Read defaults from `<script data-progrock-url=...>` ({% progrock_script %}). */
function scriptConfig() {
  if (typeof document === "undefined") return {};
  const el = document.querySelector("script[data-progrock-url]");
  return el ? { url: el.dataset.progrockUrl } : {};
}

/** Turn "/prog/", "http(s)://…" or "ws(s)://…" into a ws(s):// URL. */
export function websocketUrl(url, location = globalThis.location) {
  if (/^wss?:\/\//i.test(url)) return url;
  const absolute = new URL(url, location.href);
  absolute.protocol = absolute.protocol === "https:" ? "wss:" : "ws:";
  return absolute.href;
}

/**
 * Delay in seconds before reconnect attempt number `attempt` (0-based):
 * `min(max, initial * factor ** attempt)`, reduced by up to `jitter` of
 * itself at random (jitter 1 is "full jitter").
 */
export function backoffDelay(attempt, { initial, max, factor, jitter }, random = Math.random) {
  const ceiling = Math.min(max, initial * factor ** attempt);
  return ceiling * (1 - jitter * random());
}

function checkBackoff(backoff) {
  const merged = { ...DEFAULT_BACKOFF, ...(backoff || {}) };
  for (const name of ["initial", "max", "factor"]) {
    if (typeof merged[name] !== "number" || !(merged[name] > 0)) {
      throw new TypeError(`backoff.${name} must be a positive number, got ${merged[name]}`);
    }
  }
  if (typeof merged.jitter !== "number" || merged.jitter < 0 || merged.jitter > 1) {
    throw new TypeError(`backoff.jitter must be a number within 0..1, got ${merged.jitter}`);
  }
  return merged;
}

/**
 * A connection to a ProgRock server. Connects at once (unless
 * `autoConnect: false`) and keeps reconnecting until `close()`.
 *
 * Client events: "connection" (the new state), "error" (server errors not
 * claimed by a task handle or a pending promise, and listener-less task
 * errors), "message" (every parsed server message).
 */
export class ProgRock extends Emitter {
  /**
   * @param {object} [options]
   * @param {string} [options.url] socket URL or path; default the tag's
   *   data-progrock-url, else "/prog/" (ws:// or wss:// by page scheme).
   * @param {(state: string) => void} [options.onConnectionChange]
   *   "connecting" | "open" | "reconnecting" | "closed".
   * @param {{initial?: number, max?: number, factor?: number, jitter?: number}} [options.backoff]
   *   reconnect delays in seconds; defaults 0.5, 30, 1.618, 1 (full jitter).
   * @param {boolean} [options.autoConnect] default true.
   * @param {typeof WebSocket} [options.WebSocket] constructor to use.
   */
  constructor(options = {}) {
    super();
    const config = { ...scriptConfig(), ...options };
    this.url = websocketUrl(config.url || "/prog/");
    this.backoff = checkBackoff(config.backoff);
    this.state = "closed";
    this.tasks = new Map(); // task id -> TaskHandle, every handle we know
    this._WebSocket = config.WebSocket || globalThis.WebSocket;
    this._watched = new Set(); // ids to (re)subscribe on every connection
    this._outbox = []; // frames waiting for an open socket
    this._pendingStarts = new Map(); // ref -> {resolve, reject, frame, sent}
    this._pendingLists = []; // {resolve, reject}
    this._resyncing = new Set();
    this._socket = null;
    this._attempt = 0;
    this._timer = null;
    this._closed = false;
    this._listening = false;
    this._refCounter = 0;
    this._refPrefix = Math.random().toString(36).slice(2, 10);
    if (typeof config.onConnectionChange === "function") {
      this.on("connection", config.onConnectionChange);
    }
    // Back online, or a sleeping tab shown again: skip the rest of the backoff.
    this._onOnline = () => this._reconnectNow();
    this._onVisible = () => {
      if (document.visibilityState === "visible") this._reconnectNow();
    };
    if (config.autoConnect !== false) this.connect();
  }

  /** Open the socket (no-op when already open or connecting). */
  connect() {
    if (!this._listening) this._listen(true);
    this._closed = false;
    if (this._socket) return this;
    clearTimeout(this._timer);
    this._timer = null;
    this._open(this.state === "closed" ? "connecting" : "reconnecting");
    return this;
  }

  /** Close the socket for good: no reconnect; pending promises reject. */
  close() {
    this._closed = true;
    clearTimeout(this._timer);
    this._timer = null;
    this._listen(false);
    const socket = this._socket;
    this._socket = null;
    if (socket) socket.close(1000);
    this._failPending(new ProgRockError("closed", "the client was closed"), true);
    this._setState("closed");
  }

  /**
   * Start a task. Resolves with its TaskHandle on "started"; rejects with a
   * ProgRockError on a server error (e.g. unknown_kind, too_many_tasks) or
   * when the connection drops after the request was sent.
   */
  start(kind = undefined, params = undefined, { ref = undefined } = {}) {
    const frame = { action: "start" };
    if (kind !== undefined && kind !== null) frame.kind = kind;
    if (params !== undefined && params !== null) frame.params = params;
    frame.ref = ref !== undefined ? ref : `${this._refPrefix}-${++this._refCounter}`;
    return new Promise((resolve, reject) => {
      if (this._closed) {
        reject(new ProgRockError("closed", "the client was closed"));
        return;
      }
      const key = String(frame.ref);
      if (this._pendingStarts.has(key)) {
        reject(new ProgRockError("invalid_field", `ref ${JSON.stringify(frame.ref)} is in use`));
        return;
      }
      const pending = { resolve, reject, sent: false };
      this._pendingStarts.set(key, pending);
      pending.sent = this._send(frame);
      if (!pending.sent) this._outbox.push({ frame, pending });
    });
  }

  /** Watch a task (e.g. one from `list()`); returns its TaskHandle at once. */
  subscribe(taskId) {
    if (typeof taskId !== "string" || !taskId) {
      throw new TypeError(`expected a task id string, got ${JSON.stringify(taskId)}`);
    }
    const handle = this._handle(taskId);
    if (!this._watched.has(taskId)) {
      this._watched.add(taskId);
      this._send({ action: "subscribe", task_id: taskId });
    }
    return handle;
  }

  /** Stop watching a task; its handle gets no further events. */
  unsubscribe(taskId) {
    const wasWatched = this._watched.delete(taskId);
    this.tasks.delete(taskId);
    if (wasWatched) this._send({ action: "unsubscribe", task_id: taskId });
  }

  /** Ask the server to cancel a task; watchers then get "cancelled". */
  cancel(taskId) {
    if (typeof taskId !== "string" || !taskId) {
      throw new TypeError(`expected a task id string, got ${JSON.stringify(taskId)}`);
    }
    const frame = { action: "cancel", task_id: taskId };
    if (!this._send(frame)) this._outbox.push({ frame, pending: null });
  }

  /** Resolve with the owner's running and recent tasks (snapshot objects, newest first). */
  list() {
    return new Promise((resolve, reject) => {
      if (this._closed) {
        reject(new ProgRockError("closed", "the client was closed"));
        return;
      }
      this._pendingLists.push({ resolve, reject });
      // One request answers every waiting list(); it is re-sent after a reconnect.
      if (this._pendingLists.length === 1) this._send({ action: "list" });
    });
  }

  // ----- connection management -----

  _listen(on) {
    this._listening = on;
    const method = on ? "addEventListener" : "removeEventListener";
    if (typeof globalThis[method] === "function") globalThis[method]("online", this._onOnline);
    if (typeof document !== "undefined") document[method]("visibilitychange", this._onVisible);
  }

  _setState(state) {
    if (this.state === state) return;
    this.state = state;
    this._emit("connection", state);
  }

  _open(state) {
    this._setState(state);
    let socket;
    try {
      socket = new this._WebSocket(this.url);
    } catch (err) {
      this._reportError(new ProgRockError("connection_failed", String(err)));
      this._scheduleReconnect();
      return;
    }
    this._socket = socket;
    socket.onopen = () => {
      if (this._socket !== socket) return;
      this._attempt = 0;
      this._setState("open");
      this._flush();
    };
    socket.onmessage = (event) => {
      if (this._socket === socket) this._receive(event.data);
    };
    socket.onclose = () => {
      if (this._socket !== socket) return;
      this._socket = null;
      this._lost();
    };
    socket.onerror = () => {
      // A "close" event always follows; reconnecting is handled there.
    };
  }

  _lost() {
    // Requests already sent on the dead socket: a start may or may not have
    // happened, so it fails (list() shows it if it did); list is re-sent.
    for (const [ref, pending] of this._pendingStarts) {
      if (pending.sent) {
        this._pendingStarts.delete(ref);
        pending.reject(
          new ProgRockError("connection_lost", "the connection dropped before the task started"),
        );
      }
    }
    this._resyncing.clear();
    if (this._closed) {
      this._setState("closed");
      return;
    }
    this._scheduleReconnect();
  }

  _scheduleReconnect() {
    this._setState("reconnecting");
    clearTimeout(this._timer);
    const delay = backoffDelay(this._attempt, this.backoff);
    this._attempt += 1;
    this._timer = setTimeout(() => {
      this._timer = null;
      if (!this._closed && !this._socket) this._open("reconnecting");
    }, delay * 1000);
  }

  _reconnectNow() {
    if (this._closed || this._socket || this._timer === null) return;
    clearTimeout(this._timer);
    this._timer = null;
    this._open("reconnecting");
  }

  _flush() {
    for (const id of this._watched) this._sendNow({ action: "subscribe", task_id: id });
    if (this._pendingLists.length > 0) this._sendNow({ action: "list" });
    const outbox = this._outbox;
    this._outbox = [];
    for (const { frame, pending } of outbox) {
      if (pending) {
        if (!this._pendingStarts.has(String(frame.ref))) continue; // settled meanwhile
        pending.sent = true;
      }
      this._sendNow(frame);
    }
  }

  /** Send now if open; returns whether it was sent. Subscriptions and lists
   * are state re-sent by `_flush`, so callers queue only starts and cancels. */
  _send(frame) {
    if (this.state !== "open" || !this._socket) return false;
    return this._sendNow(frame);
  }

  _sendNow(frame) {
    try {
      this._socket.send(JSON.stringify(frame));
      return true;
    } catch (err) {
      return false;
    }
  }

  _failPending(error, includeQueued) {
    for (const [ref, pending] of this._pendingStarts) {
      if (includeQueued || pending.sent) {
        this._pendingStarts.delete(ref);
        pending.reject(error);
      }
    }
    if (includeQueued) {
      this._outbox = [];
      const lists = this._pendingLists;
      this._pendingLists = [];
      for (const p of lists) p.reject(error);
    }
  }

  // ----- incoming messages -----

  _receive(text) {
    let msg;
    try {
      msg = JSON.parse(text);
    } catch (err) {
      this._reportError(new ProgRockError("bad_json", `unparsable server frame: ${text}`));
      return;
    }
    if (!msg || typeof msg !== "object") return;
    this._emit("message", msg);
    if (msg.type === "error") this._receiveError(msg);
    else if (msg.type === "tasks") this._receiveTasks(msg);
    else if (msg.type === "started") this._receiveStarted(msg);
    else if (TASK_TYPES.has(msg.type) && typeof msg.task_id === "string") {
      if (msg.type === "snapshot") this._resyncing.delete(msg.task_id);
      const handle = this.tasks.get(msg.task_id);
      if (handle) handle._apply(msg);
    }
    // {"accept": true}, "unsubscribed" and unknown types need nothing.
  }

  _receiveStarted(msg) {
    const pending = msg.ref !== undefined ? this._pendingStarts.get(String(msg.ref)) : undefined;
    if (pending) this._pendingStarts.delete(String(msg.ref));
    let handle = this.tasks.get(msg.task_id);
    if (!handle && !pending) return; // not ours to watch
    if (!handle) handle = this._handle(msg.task_id);
    this._watched.add(msg.task_id); // the starting socket is subscribed
    handle._apply(msg);
    if (pending) pending.resolve(handle);
  }

  _receiveTasks(msg) {
    const tasks = Array.isArray(msg.tasks) ? msg.tasks : [];
    const lists = this._pendingLists;
    this._pendingLists = [];
    for (const p of lists) p.resolve(tasks);
  }

  _receiveError(msg) {
    const error = new ProgRockError(msg.code || "error", msg.detail || "", msg);
    if (msg.ref !== undefined && msg.ref !== null) {
      const pending = this._pendingStarts.get(String(msg.ref));
      if (pending) {
        this._pendingStarts.delete(String(msg.ref));
        pending.reject(error);
        return;
      }
    }
    if (msg.action === "list" && this._pendingLists.length > 0) {
      const lists = this._pendingLists;
      this._pendingLists = [];
      for (const p of lists) p.reject(error);
      return;
    }
    const handle = typeof msg.task_id === "string" ? this.tasks.get(msg.task_id) : undefined;
    if (handle) {
      if (msg.action === "subscribe" && msg.code === "forbidden") {
        // No such task for us: stop re-subscribing it after each reconnect.
        this._watched.delete(msg.task_id);
        this._resyncing.delete(msg.task_id);
      }
      if (handle._emit("error", error)) return;
    }
    this._reportError(error);
  }

  _reportError(error) {
    // Never drop an error silently: without a listener it goes to the console.
    if (!this._emit("error", error)) console.warn("ProgRock:", error.message);
  }

  // ----- helpers used by TaskHandle -----

  _handle(taskId) {
    let handle = this.tasks.get(taskId);
    if (!handle) {
      handle = new TaskHandle(this, taskId);
      this.tasks.set(taskId, handle);
    }
    return handle;
  }

  _resync(taskId) {
    if (this._resyncing.has(taskId) || !this._watched.has(taskId)) return;
    if (this._send({ action: "subscribe", task_id: taskId })) this._resyncing.add(taskId);
  }

  _finished(taskId) {
    this._watched.delete(taskId);
    this._resyncing.delete(taskId);
  }
}

if (typeof window !== "undefined" && !window.ProgRock) {
  window.ProgRock = ProgRock;
}

export default ProgRock;
