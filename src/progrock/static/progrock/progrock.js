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
 * drops duplicate messages and re-syncs when it sees a gap in `seq`. When
 * sockets keep failing before their first message (a proxy that drops
 * upgrades) and the HTTP API answers, it follows its tasks over HTTP long-polls
 * instead, and goes back to the socket as soon as one works.
 *
 * With a `token` (a string, or a function giving one, maybe as a promise),
 * it authenticates each socket with an `auth` first message and each HTTP
 * request with an `Authorization: Bearer` header instead of the session
 * cookie (docs/howto-tokens.md). A refused token closes the socket with 4401.
 */

const TERMINAL_TYPES = new Set(["complete", "failed", "cancelled"]);
const TERMINAL_STATUSES = new Set(["succeeded", "failed", "cancelled"]);
const STATUS_OF_TYPE = { complete: "succeeded", failed: "failed", cancelled: "cancelled" };
const TASK_TYPES = new Set(["started", "progress", "complete", "failed", "cancelled", "snapshot"]);
const DEFAULT_BACKOFF = { initial: 0.5, max: 30, factor: 1.618, jitter: 1 };
// Close code of a server restarting on purpose (IANA's WebSocket registry): it
// never counts toward the HTTP fallback; a socket that worked reconnects after
// the first backoff step (0-0.5 s, full jitter: a whole server's clients spread).
const CLOSE_SERVICE_RESTART = 1012;
const DEFAULT_FALLBACK_AFTER = 2; // sockets dead before their first message
const DEFAULT_FIRST_MESSAGE_TIMEOUT = 10; // seconds an open socket may stay silent
const DEFAULT_FOLLOW_WAIT = 25; // seconds the server holds a long-poll
const DEFAULT_FOLLOW_PACE = 0.5; // seconds between the starts of two long-polls
const DEFAULT_STREAM_TIMEOUT = 5; // seconds for a stream's first bytes, else it is buffered
const STREAM_IDLE = 45; // seconds without bytes (the server sends one each 15 s): dead
const SHARED_CLIENT = Symbol.for("progrock.sharedClient");
const BUFFERED = Symbol("a follow stream buffered by the network");
const CLOSE_UNAUTHENTICATED = 4401; // the server refused the socket's token

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
    this._synced = false; // some state came from the server
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
    this._synced = true;
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
    // `typeof` checks, not truthiness: progress 0 is a value (the 2017 demo's bug).
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

/**
 * Read defaults from `<script data-progrock-url=... data-progrock-api=...
 * data-progrock-csrf=... data-progrock-token=...>` ({% progrock_script %},
 * {% progrock_bar %}).
 */
function scriptConfig() {
  if (typeof document === "undefined") return {};
  const config = {};
  const url = document.querySelector("script[data-progrock-url]");
  if (url) config.url = url.dataset.progrockUrl;
  const api = document.querySelector("script[data-progrock-api]");
  if (api) config.api = api.dataset.progrockApi;
  const csrf = document.querySelector("script[data-progrock-csrf]");
  if (csrf) config.csrfFromPage = csrf.dataset.progrockCsrf;
  const token = document.querySelector("script[data-progrock-token]");
  if (token) config.token = token.dataset.progrockToken;
  return config;
}

/** The value of cookie `name`, or null. */
function cookie(name) {
  if (typeof document === "undefined" || !document.cookie) return null;
  for (const part of document.cookie.split(";")) {
    const [key, ...rest] = part.trim().split("=");
    if (key === name) return decodeURIComponent(rest.join("="));
  }
  return null;
}

/** Turn an API prefix ("/prog/api/") into an absolute http(s) URL ending in "/". */
export function apiUrl(url, location = globalThis.location) {
  const absolute = new URL(url, location.href);
  if (!absolute.pathname.endsWith("/")) absolute.pathname += "/";
  return absolute.href;
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

function checkPositive(name, value) {
  if (typeof value !== "number" || !(value > 0)) {
    throw new TypeError(`${name} must be a positive number, got ${value}`);
  }
  return value;
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
   * @param {string|null} [options.api] prefix of the HTTP API
   *   (`include("progrock.urls")`), e.g. "/prog/api/"; default the tag's
   *   data-progrock-api. null: no fallback.
   * @param {number} [options.fallbackAfter] sockets in a row that die before
   *   their first message before following over HTTP; default 2.
   * @param {number} [options.firstMessageTimeout] seconds an open socket may
   *   stay silent before it counts as dead; default 10.
   * @param {number} [options.followWait] seconds the server may hold a
   *   long-poll; default 25.
   * @param {number} [options.followPace] least seconds between the starts
   *   of two long-polls (news in between arrives together); default 0.5.
   *   0: ask again at once.
   * @param {boolean} [options.followStream] follow over a Server-Sent Events
   *   stream (default true), or long-poll only (false).
   * @param {number} [options.streamTimeout] seconds for a stream's first
   *   bytes; later than that a proxy buffers it: long-poll; default 5.
   * @param {string|(() => string)} [options.csrfToken] for HTTP starts and
   *   cancels; default the csrftoken cookie, else the tag's data-progrock-csrf
   *   (the cookie is read at each request: it is current even on a cached page).
   * @param {typeof fetch} [options.fetch] fetch function to use.
   * @param {string|(() => string|Promise<string>)|null} [options.token] a
   *   token to authenticate with instead of the session cookie: sent as each
   *   socket's first message and as `Authorization: Bearer` over HTTP. A
   *   function is called for each socket and request (return a fresh
   *   short-lived token); with a string, a refused token (close 4401) closes
   *   the client. Default the tag's data-progrock-token, else none.
   */
  constructor(options = {}) {
    super();
    const config = { ...scriptConfig(), ...options };
    this.url = websocketUrl(config.url || "/prog/");
    this.backoff = checkBackoff(config.backoff);
    this.api = config.api ? apiUrl(config.api) : null;
    this.fallbackAfter = Math.ceil(
      checkPositive("fallbackAfter", config.fallbackAfter ?? DEFAULT_FALLBACK_AFTER),
    );
    this.firstMessageTimeout = checkPositive(
      "firstMessageTimeout",
      config.firstMessageTimeout ?? DEFAULT_FIRST_MESSAGE_TIMEOUT,
    );
    this.followWait = checkPositive("followWait", config.followWait ?? DEFAULT_FOLLOW_WAIT);
    this.followStream = config.followStream ?? true;
    this.streamTimeout = checkPositive(
      "streamTimeout",
      config.streamTimeout ?? DEFAULT_STREAM_TIMEOUT,
    );
    this.followPace = config.followPace ?? DEFAULT_FOLLOW_PACE;
    if (typeof this.followPace !== "number" || !(this.followPace >= 0)) {
      throw new TypeError(`followPace must be a number >= 0, got ${this.followPace}`);
    }
    this.state = "closed";
    this.transport = null; // "websocket" | "http" | null
    this.tasks = new Map(); // task id -> TaskHandle, every handle we know
    this._WebSocket = config.WebSocket || globalThis.WebSocket;
    this._fetch = config.fetch || globalThis.fetch?.bind(globalThis);
    this._csrfToken = config.csrfToken ?? null;
    this._csrfFromPage = config.csrfFromPage ?? null;
    this._token = config.token || null;
    if (this._token !== null && !["string", "function"].includes(typeof this._token)) {
      throw new TypeError(`token must be a string or a function, got ${typeof this._token}`);
    }
    this._failures = 0; // sockets in a row closed before their first message
    this._silenceTimer = null;
    this._http = null; // the HTTP follower while sockets fail, see _startHttp
    this._httpGeneration = 0;
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
    clearTimeout(this._silenceTimer);
    this._listen(false);
    this._stopHttp();
    this.transport = null;
    const socket = this._socket;
    this._socket = null;
    if (socket) socket.close(1000);
    this._failPending(new ProgRockError("closed", "the client was closed"), true);
    this._setState("closed");
  }

  /**
   * Start a task. Resolves with its TaskHandle on "started" (or on "failed"
   * for a task the backend refused, the handle then done; or, for a kind a
   * task queue runs whose job waits in its queue, on its "queued" snapshot:
   * "started" follows when a worker begins it); rejects with a
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
      if (this._http?.live) {
        this._httpStart(frame, pending);
        return;
      }
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
      if (this._http) this._refollow();
      else this._send({ action: "subscribe", task_id: taskId });
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
    if (this._http?.live) this._httpCancel(taskId);
    else if (!this._send(frame)) this._outbox.push({ frame, pending: null });
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
      if (this._pendingLists.length !== 1) return;
      if (this._http?.live) this._httpList();
      else this._send({ action: "list" });
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
    if (!this._http?.live) this._setState(state); // probing the socket keeps "fallback"
    let socket;
    try {
      socket = new this._WebSocket(this.url);
    } catch (err) {
      this._reportError(new ProgRockError("connection_failed", String(err)));
      this._failures += 1;
      this._scheduleReconnect();
      this._maybeFallBack();
      return;
    }
    this._socket = socket;
    let heard = false; // a first message arrived: this socket works
    let authed = this._token === null; // its auth message went out (or none is needed)
    const useSocket = () => {
      this._stopHttp();
      this.transport = "websocket";
      this._setState("open");
      this._flush();
    };
    const ready = () => {
      authed = true;
      // Following over HTTP: switch once the socket speaks.
      if (!this._http || heard) useSocket();
    };
    socket.onopen = () => {
      if (this._socket !== socket) return;
      // A proxy may accept the upgrade and pass nothing: silence counts as death.
      clearTimeout(this._silenceTimer);
      this._silenceTimer = setTimeout(() => {
        if (this._socket !== socket || heard) return;
        this._socket = null;
        socket.onopen = socket.onmessage = socket.onclose = null;
        socket.close();
        this._failures += 1;
        this._lost();
      }, this.firstMessageTimeout * 1000);
      if (authed) {
        ready();
        return;
      }
      // The auth message goes first: nothing is sent before the token is known.
      this._tokenValue().then(
        (token) => {
          if (this._socket !== socket) return;
          socket.send(JSON.stringify({ action: "auth", token }));
          ready();
        },
        (err) => {
          if (this._socket !== socket) return;
          this._reportError(new ProgRockError("unauthenticated", `no token to send: ${err}`));
          socket.close(); // as a lost socket: try again after a backoff
        },
      );
    };
    socket.onmessage = (event) => {
      if (this._socket !== socket) return;
      if (!heard) {
        heard = true;
        clearTimeout(this._silenceTimer);
        this._failures = 0;
        this._attempt = 0;
        if (this._http && authed) useSocket();
      }
      this._receive(event.data);
    };
    socket.onclose = (event) => {
      if (this._socket !== socket) return;
      this._socket = null;
      clearTimeout(this._silenceTimer);
      // 1012 (service restart): a web process going away on purpose, not a
      // socket that fails to get through; it never leads to the HTTP fallback.
      if (!heard && event?.code !== CLOSE_SERVICE_RESTART) this._failures += 1;
      if (event?.code === CLOSE_UNAUTHENTICATED) {
        // The server said why in an error message just before (reported).
        const why = event.reason || "the server refused the token";
        const error = new ProgRockError("unauthenticated", why);
        if (typeof this._token !== "function") {
          // The same token would be refused again: stop here.
          this._failPending(error, true);
          this.close();
          return;
        }
        this._failPending(error, false); // a function may give a fresh token next time
      }
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
    if (this.transport === "websocket") this.transport = null;
    if (this._closed) {
      this._setState("closed");
      return;
    }
    this._scheduleReconnect();
    this._maybeFallBack();
  }

  _scheduleReconnect() {
    if (!this._http?.live) this._setState("reconnecting");
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

  // ----- fallback delivery over the HTTP API -----
  //
  // After `fallbackAfter` sockets in a row died before their first message,
  // the client asks the HTTP API (GET follow/, docs/client-js.md). While that
  // fails too (the server is down) nothing changes: state "reconnecting",
  // starts and cancels wait in the outbox. Once it answers, the state is
  // "fallback": requests go over HTTP and one request at a time follows
  // every watched task: a Server-Sent Events stream, or, once a stream's
  // first bytes came late (a buffering proxy), paced long-polls. Socket
  // attempts continue meanwhile; the first socket that speaks ends the
  // fallback and re-subscribes everything.

  _maybeFallBack() {
    if (this._http || this._closed || !this.api || typeof this._fetch !== "function") return;
    if (this._failures < this.fallbackAfter) return;
    this._http = {
      live: false, attempt: 0, failing: false, controller: null, timer: null,
      buffered: !this.followStream, // streams do not get through: long-poll
    };
    this._refollow();
  }

  _stopHttp() {
    const http = this._http;
    if (!http) return;
    this._http = null;
    this._httpGeneration += 1;
    clearTimeout(http.timer);
    http.controller?.abort();
  }

  /** (Re)start the follow loop soon: the request in flight has an outdated task list. */
  _refollow() {
    const http = this._http;
    if (!http || http.scheduled) return;
    http.scheduled = true;
    queueMicrotask(() => {
      http.scheduled = false;
      if (this._http !== http) return;
      clearTimeout(http.timer);
      http.controller?.abort();
      this._follow(http, ++this._httpGeneration);
    });
  }

  _followQuery(wait) {
    const query = new URLSearchParams();
    for (const id of this._watched) {
      const handle = this.tasks.get(id);
      // A task we know nothing of, or whose end we have not seen: ask for a snapshot.
      const known = handle && handle._synced && !TERMINAL_STATUSES.has(handle.status);
      query.append("task", known ? `${id}:${handle.seq}` : id);
    }
    query.set("wait", String(wait));
    return query.toString();
  }

  async _follow(http, generation) {
    const current = () => this._http === http && this._httpGeneration === generation;
    const sleep = (seconds) =>
      new Promise((resolve) => {
        http.timer = setTimeout(resolve, seconds * 1000);
      });
    const pause = () => sleep(backoffDelay(http.attempt++, this.backoff));
    let lastStart = null;
    while (current()) {
      if (http.live && this._watched.size === 0) return; // idle until subscribe or start
      // Each request costs the server about as much as a page view: pace them.
      const since = lastStart === null ? Infinity : (performance.now() - lastStart) / 1000;
      if (http.live && since < this.followPace) {
        await sleep(this.followPace - since);
        if (!current()) return;
      }
      lastStart = performance.now();
      if (http.live && !http.buffered && typeof ReadableStream !== "undefined") {
        let delivered;
        try {
          delivered = await this._stream(http, current);
        } catch (err) {
          if (!current()) return;
          if (err === BUFFERED) {
            http.buffered = true;
            continue;
          }
          this._httpFailed(http, err);
          await pause();
          continue;
        }
        // The server closed the stream: every task ended, or its time was up.
        if (delivered === 0 && current()) await pause(); // never spin
        continue;
      }
      // Probing (not live yet) must not hold a request: wait=0.
      const query = this._followQuery(http.live ? this.followWait : 0);
      const controller = new AbortController();
      http.controller = controller;
      let body;
      try {
        body = await this._request(`follow/?${query}`, { signal: controller.signal });
      } catch (err) {
        if (!current()) return;
        this._httpFailed(http, err);
        await pause();
        continue;
      }
      if (!current()) return;
      this._httpAnswered(http);
      const messages = Array.isArray(body.messages) ? body.messages : [];
      for (const msg of messages) this._dispatch(msg);
      // Never spin: news that moved no cursor is odd, so back off before asking again.
      if (messages.length > 0 && this._followQuery(this.followWait) === query) await pause();
    }
  }

  /**
   * Follow the watched tasks over one Server-Sent Events stream until the
   * server ends it; resolves with the number of messages it delivered.
   * Rejects with BUFFERED when its first bytes come later than streamTimeout.
   */
  async _stream(http, current) {
    const controller = new AbortController();
    http.controller = controller;
    let heard = false;
    let watchdog = null;
    let buffered = false;
    const arm = (seconds) => {
      clearTimeout(watchdog);
      watchdog = setTimeout(() => {
        buffered = !heard;
        controller.abort();
      }, seconds * 1000);
    };
    arm(this.streamTimeout);
    let delivered = 0;
    try {
      const query = this._followQuery(this.followWait);
      const response = await this._fetchOk(`follow/?${query}&stream=1`, {
        signal: controller.signal,
        accept: "text/event-stream",
      });
      if (typeof response.body?.getReader !== "function") throw BUFFERED; // cannot stream
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done || !current()) break;
        if (!heard) {
          heard = true;
          this._httpAnswered(http);
        }
        arm(STREAM_IDLE);
        buffer += decoder.decode(value, { stream: true });
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const event = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const data = event
            .split("\n")
            .filter((line) => line.startsWith("data:"))
            .map((line) => line.slice(5).replace(/^ /, ""))
            .join("\n");
          if (!data || !current()) continue;
          delivered += 1;
          this._receive(data);
        }
      }
    } catch (err) {
      if (buffered) throw BUFFERED;
      if (err?.name === "AbortError" && current()) {
        throw new ProgRockError("connection_failed", "the follow stream went silent");
      }
      throw err;
    } finally {
      clearTimeout(watchdog);
    }
    return delivered;
  }

  _httpAnswered(http) {
    const recovered = http.failing;
    const becameLive = !http.live;
    http.attempt = 0;
    http.failing = false;
    if (becameLive) {
      http.live = true;
      this.transport = "http";
      this._setState("fallback");
      const outbox = this._outbox;
      this._outbox = [];
      for (const { frame, pending } of outbox) {
        if (frame.action === "cancel") this._httpCancel(frame.task_id);
        else if (this._pendingStarts.get(String(frame.ref)) === pending) {
          this._httpStart(frame, pending);
        }
      }
      if (this._pendingLists.length > 0) this._httpList();
    }
    // The server answers: maybe it was down, not the socket blocked. Try one now.
    if (recovered || becameLive) this._reconnectNow();
  }

  _httpFailed(http, err) {
    if (http.live) {
      http.live = false;
      this.transport = null;
      this._setState("reconnecting");
    }
    // A server that is down is what reconnecting means; an HTTP error is news.
    if (!http.failing && err.code !== "connection_failed") this._reportError(err);
    http.failing = true;
  }

  _httpStart(frame, pending) {
    // Answered by the response, not matched by ref: no longer a pending socket start.
    this._pendingStarts.delete(String(frame.ref));
    const body = {};
    if (frame.kind !== undefined) body.kind = frame.kind;
    if (frame.params !== undefined) body.params = frame.params;
    this._request("tasks/", { method: "POST", body: JSON.stringify(body) }).then(
      (snapshot) => {
        if (typeof snapshot.task_id !== "string") {
          pending.reject(new ProgRockError("bad_json", "the start answer has no task_id", snapshot));
          return;
        }
        const handle = this._handle(snapshot.task_id);
        this._watched.add(handle.id);
        handle._apply(snapshot);
        pending.resolve(handle);
        if (this._http) this._refollow();
        else this._send({ action: "subscribe", task_id: handle.id });
      },
      (err) => {
        if (err.code === "connection_failed") {
          err = new ProgRockError("connection_lost", "the start request failed: the task may or may not exist");
        }
        pending.reject(err);
      },
    );
  }

  _httpCancel(taskId) {
    this._request(`tasks/${encodeURIComponent(taskId)}/cancel/`, { method: "POST" }).catch((err) => {
      const message = err.serverMessage || { type: "error", code: err.code, detail: err.detail };
      this._receiveError({ ...message, action: "cancel", task_id: taskId });
    });
  }

  _httpList() {
    this._request("tasks/").then(
      (body) => this._receiveTasks(body),
      (err) => {
        if (err.code === "connection_failed") return; // still pending: re-sent on the next open
        const lists = this._pendingLists;
        this._pendingLists = [];
        for (const p of lists) p.reject(err);
      },
    );
  }

  /** The token to send now (a string), from the option; rejects if there is none. */
  async _tokenValue() {
    const token = typeof this._token === "function" ? await this._token() : this._token;
    if (typeof token !== "string" || !token) {
      throw new TypeError(`the token option gave ${token === "" ? "an empty string" : typeof token}`);
    }
    return token;
  }

  _csrf() {
    const token = typeof this._csrfToken === "function" ? this._csrfToken() : this._csrfToken;
    return token || cookie("csrftoken") || this._csrfFromPage;
  }

  /** One HTTP API request; resolves with its Response if it is a 2xx, else rejects
   * with a ProgRockError (the server's error, or http_error, or connection_failed). */
  async _fetchOk(path, { method = "GET", body = undefined, signal = undefined, accept } = {}) {
    const url = this.api + path;
    const headers = { Accept: accept || "application/json" };
    if (this._token !== null) {
      // A token request is not cookie-authenticated: it needs no CSRF token.
      let token;
      try {
        token = await this._tokenValue();
      } catch (err) {
        throw new ProgRockError("unauthenticated", `no token to send: ${err}`);
      }
      headers.Authorization = `Bearer ${token}`;
    }
    if (method !== "GET") {
      headers["Content-Type"] = "application/json";
      const csrf = this._token === null ? this._csrf() : null;
      if (csrf) headers["X-CSRFToken"] = csrf;
    }
    let response;
    try {
      response = await this._fetch(url, {
        method, headers, body, signal, credentials: "same-origin", cache: "no-store",
      });
    } catch (err) {
      if (err?.name === "AbortError") throw err;
      throw new ProgRockError("connection_failed", `${method} ${url} failed: ${err}`);
    }
    if (response.ok) return response;
    let data = null;
    try {
      data = await response.json();
    } catch {
      data = null;
    }
    if (data && data.type === "error") throw new ProgRockError(data.code, data.detail, data);
    throw new ProgRockError("http_error", `${method} ${url} answered HTTP ${response.status}`);
  }

  /** One HTTP API request; resolves with its JSON object, rejects with a ProgRockError. */
  async _request(path, options = {}) {
    const response = await this._fetchOk(path, options);
    const url = this.api + path;
    const method = options.method || "GET";
    let data = null;
    try {
      data = await response.json();
    } catch {
      data = null;
    }
    if (!data || typeof data !== "object") {
      throw new ProgRockError("bad_json", `${method} ${url} did not answer a JSON object`);
    }
    return data;
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
    this._dispatch(msg);
  }

  _dispatch(msg) {
    if (!msg || typeof msg !== "object") return;
    this._emit("message", msg);
    if (msg.type === "error") this._receiveError(msg);
    else if (msg.type === "tasks") this._receiveTasks(msg);
    else if (msg.type === "started") this._receiveStarted(msg);
    else if (TERMINAL_TYPES.has(msg.type) && typeof msg.task_id === "string" && this._pendingStarts.has(String(msg.ref))) {
      // The first message of a task the backend refused or never reached
      // (backend_rejected, backend_unreachable): it has no "started" at all.
      this._receiveStarted(msg);
    } else if (msg.type === "snapshot" && msg.ref !== undefined && msg.ref !== null
      && this._pendingStarts.has(String(msg.ref))) {
      this._receiveStarted(msg); // a task queue's job not begun yet: its "queued" snapshot
    } else if (TASK_TYPES.has(msg.type) && typeof msg.task_id === "string") {
      if (msg.type === "snapshot") this._resyncing.delete(msg.task_id);
      const handle = this.tasks.get(msg.task_id);
      if (handle) handle._apply(msg);
    }
    // {"accept": true}, "unsubscribed" and unknown types need nothing.
  }

  /** The first message of a start: "started", or the terminal one of a refused task. */
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
    // Over HTTP every message carries the full state: a gap needs nothing.
    if (this._http || this._resyncing.has(taskId) || !this._watched.has(taskId)) return;
    if (this._send({ action: "subscribe", task_id: taskId })) this._resyncing.add(taskId);
  }

  _finished(taskId) {
    this._watched.delete(taskId);
    this._resyncing.delete(taskId);
  }
}

/**
 * The page's one shared client, created on the first call (with `options`;
 * later calls return it as it is). The bars of {% progrock_bar %} use it, so
 * page code that calls it too shares their socket.
 */
export function sharedClient(options = undefined) {
  if (!globalThis[SHARED_CLIENT]) globalThis[SHARED_CLIENT] = new ProgRock(options);
  return globalThis[SHARED_CLIENT];
}

if (typeof window !== "undefined" && !window.ProgRock) {
  window.ProgRock = ProgRock;
}

export default ProgRock;
