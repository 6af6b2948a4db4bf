/**
 * ProgRock drop-in bars: wires the `[data-progrock-bar]` elements that
 * {% progrock_bar %} renders to the page's one shared ProgRock client, so any
 * number of bars share one socket (see docs/template-tag.md).
 *
 * The tag loads this module once per page. It wires the bars present when it
 * runs and those added later (htmx swaps, a fragment inserted by your code),
 * and lets go of bars removed from the page.
 *
 * Each bar dispatches bubbling CustomEvents, whose `detail` is the message:
 *   progrock:update     any change; detail is the task's state, shaped like a snapshot
 *   progrock:complete   the terminal message, once
 *   progrock:failed     the terminal message, once
 *   progrock:cancelled  the terminal message, once
 *   progrock:error      {code, detail, task_id?}: a refused start, an unknown task, …
 */
import { sharedClient } from "./progrock.js";

const STATUS_LABELS = {
  loading: "Loading…",
  idle: "Not started",
  queued: "Queued",
  running: "Running",
  succeeded: "Complete",
  failed: "Failed",
  cancelled: "Cancelled",
  invalid: "Unavailable",
};
const ACTIVE = new Set(["loading", "queued", "running"]);
const SELECTOR = "[data-progrock-bar]";

const bars = new Map(); // element -> {handle, listeners} for bars showing a task
const started = new WeakSet(); // bars whose start form is wired

// ----- texts: the same as progrock/web/bar.py writes on the server -----

export function formatPercent(progress, status) {
  if (status === "succeeded") return "100%";
  return `${Math.floor(Number(progress) || 0)}%`;
}

export function formatEta(etaS) {
  if (typeof etaS !== "number" || !Number.isFinite(etaS) || etaS < 0) return "";
  let seconds = Math.ceil(etaS);
  if (seconds < 60) return `${seconds} s left`;
  let minutes = Math.floor(seconds / 60);
  seconds %= 60;
  if (minutes < 60) return seconds ? `${minutes} min ${seconds} s left` : `${minutes} min left`;
  const hours = Math.floor(minutes / 60);
  minutes %= 60;
  return minutes ? `${hours} h ${minutes} min left` : `${hours} h left`;
}

export function outcomeText(status, result, error) {
  if (status === "succeeded") {
    if (result === null || result === undefined) return "Done";
    return typeof result === "string" ? result : JSON.stringify(result);
  }
  if (status === "failed") return error?.detail || error?.code || "The task failed";
  if (status === "cancelled") return "The task was cancelled";
  return "";
}

// ----- rendering -----

function part(el, name) {
  return el.querySelector(`[data-progrock-${name}]`);
}

function setText(node, text) {
  // Unchanged text is not rewritten: the status line is a live region.
  if (node && node.textContent !== text) node.textContent = text;
}

/** The task's state as a plain object shaped like a `snapshot` message. */
function stateOf(handle) {
  return {
    type: "snapshot",
    task_id: handle.id,
    seq: handle.seq,
    status: handle.status,
    kind: handle.kind,
    progress: handle.progress,
    message: handle.message,
    eta_s: handle.etaS,
    rate: handle.rate,
    result: handle.result,
    error: handle.error,
  };
}

function render(el, state) {
  const { status } = state;
  el.dataset.status = status;
  setText(part(el, "status"), STATUS_LABELS[status] || status);
  const progress = part(el, "progress");
  const percent = formatPercent(state.progress, status);
  if (progress) {
    if (status === "queued" || status === "loading") progress.removeAttribute("value");
    else progress.value = status === "succeeded" ? 100 : Number(state.progress) || 0;
    setText(progress, percent);
  }
  setText(part(el, "percent"), percent);
  setText(part(el, "eta"), status === "running" ? formatEta(state.eta_s) : "");
  setText(part(el, "message"), ACTIVE.has(status) ? state.message || "" : "");
  showOutcome(el, outcomeText(status, state.result, state.error));
  const cancel = part(el, "cancel");
  if (cancel) {
    cancel.hidden = !ACTIVE.has(status);
    if (!ACTIVE.has(status)) cancel.disabled = false;
  }
  const button = el.querySelector("[data-progrock-start] button");
  if (button) button.disabled = ACTIVE.has(status);
}

function showOutcome(el, text) {
  const outcome = part(el, "outcome");
  if (!outcome) return;
  setText(outcome, text);
  outcome.hidden = !text;
}

function emit(el, name, detail) {
  el.dispatchEvent(new CustomEvent(`progrock:${name}`, { bubbles: true, detail }));
}

// ----- wiring -----

function attach(el, handle) {
  detach(el);
  el.dataset.taskId = handle.id;
  const listeners = {
    update: (h) => {
      render(el, stateOf(h));
      emit(el, "update", stateOf(h));
    },
    end: (msg) => emit(el, msg.type, msg),
    error: (err) => {
      if (err.code === "forbidden") {
        render(el, { status: "invalid", progress: 0 });
        showOutcome(el, err.detail);
      }
      emit(el, "error", { code: err.code, detail: err.detail, task_id: handle.id });
    },
  };
  for (const [event, fn] of Object.entries(listeners)) handle.on(event, fn);
  bars.set(el, { handle, listeners });
  if (handle._synced) listeners.update(handle); // a started task has state already
}

function detach(el) {
  const entry = bars.get(el);
  if (!entry) return;
  bars.delete(el);
  const { handle, listeners } = entry;
  for (const [event, fn] of Object.entries(listeners)) handle.off(event, fn);
  const shown = [...bars.values()].some((other) => other.handle === handle);
  const heard = [...handle._listeners.values()].some((set) => set.size > 0);
  // Nobody else on the page watches the task: stop following it.
  if (!shown && !heard && !handle.done) handle.unsubscribe();
}

function wireStart(el) {
  if (started.has(el)) return;
  const form = el.querySelector("[data-progrock-start]");
  if (!form) return;
  started.add(el);
  let params;
  try {
    params = JSON.parse(el.dataset.params || "{}");
  } catch (err) {
    showOutcome(el, `data-params is not JSON: ${err.message}`);
    return;
  }
  const button = form.querySelector("button");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (button) button.disabled = true;
    showOutcome(el, "");
    try {
      const handle = await sharedClient().start(el.dataset.kind || undefined, params);
      attach(el, handle);
    } catch (err) {
      if (button) button.disabled = false;
      showOutcome(el, err.detail || err.message);
      emit(el, "error", { code: err.code || "error", detail: err.detail || err.message });
    }
  });
  if (button) button.disabled = false;
}

function cancelOnClick(event) {
  const button = event.target.closest?.("[data-progrock-cancel]");
  const el = button?.closest(SELECTOR);
  const entry = el && bars.get(el);
  if (!entry || entry.handle.done) return;
  button.disabled = true;
  setText(part(el, "status"), "Cancelling…");
  entry.handle.cancel();
}

/** Wire every bar under `root` (the document by default) not wired yet. */
export function wireBars(root = document) {
  const found = root.matches?.(SELECTOR) ? [root] : [];
  found.push(...root.querySelectorAll(SELECTOR));
  for (const el of found) {
    if (el.dataset.kind !== undefined) wireStart(el);
    else if (el.dataset.taskId && !bars.has(el)) attach(el, sharedClient().subscribe(el.dataset.taskId));
  }
}

function unwireGone() {
  for (const el of [...bars.keys()]) if (!el.isConnected) detach(el);
}

if (typeof document !== "undefined") {
  document.addEventListener("click", cancelOnClick);
  wireBars();
  new MutationObserver((records) => {
    let removed = false;
    for (const record of records) {
      for (const node of record.addedNodes) if (node.nodeType === 1) wireBars(node);
      removed ||= record.removedNodes.length > 0;
    }
    if (removed) unwireGone();
  }).observe(document.documentElement, { childList: true, subtree: true });
}
