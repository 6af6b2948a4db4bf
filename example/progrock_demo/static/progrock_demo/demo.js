// The ProgRock demo page: start several tasks, watch them, cancel them, and
// survive reloads and web-server restarts. Everything server-provided is
// written with textContent, never innerHTML.
import { ProgRock } from "../progrock/progrock.js";

const $ = (selector, root = document) => root.querySelector(selector);

const CONNECTION_LABELS = {
  connecting: "Connecting…",
  open: "Live",
  reconnecting: "Reconnecting…",
  fallback: "Live over HTTP",
  closed: "Offline",
};
const STATUS_LABELS = {
  queued: "queued",
  running: "running",
  succeeded: "complete",
  failed: "failed",
  cancelled: "cancelled",
};
const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);

const connection = $("#connection");
const taskList = $("#task-list");
const emptyNote = $("#tasks-empty");
const taskCount = $("#task-count");
const template = $("#task-template");
const toast = $("#toast");
const form = $("#start-form");
const progVal = $("#prog-val");

const cards = new Map(); // task id -> <li>

const client = new ProgRock({
  onConnectionChange(state) {
    connection.dataset.state = state;
    $(".conn-label", connection).textContent = CONNECTION_LABELS[state] || state;
  },
});
client.on("error", (error) => showToast(error.detail || error.message));

// ----- rendering -----

function formatPercent(value) {
  const n = Number(value) || 0;
  return `${n >= 100 || Number.isInteger(n) ? Math.round(n) : n.toFixed(1)}%`;
}

function formatEta(seconds) {
  if (typeof seconds !== "number" || !Number.isFinite(seconds)) return "";
  const s = Math.max(0, Math.ceil(seconds));
  if (s < 60) return `${s} s left`;
  const m = Math.floor(s / 60);
  return `${m} min ${String(s % 60).padStart(2, "0")} s left`;
}

function formatValue(value) {
  if (value === null || value === undefined) return "";
  return typeof value === "string" ? value : JSON.stringify(value);
}

function cardFor(id) {
  let card = cards.get(id);
  if (card) return card;
  card = template.content.firstElementChild.cloneNode(true);
  card.dataset.taskId = id;
  $(".task-id", card).textContent = id.slice(0, 8);
  $(".task-id", card).title = id;
  $(".cancel", card).addEventListener("click", () => {
    $(".cancel", card).disabled = true;
    client.cancel(id);
  });
  $(".dismiss", card).addEventListener("click", () => removeCard(id));
  cards.set(id, card);
  return card;
}

function addCard(card, { atTop }) {
  if (!card.isConnected) {
    if (atTop) taskList.prepend(card);
    else taskList.append(card);
  }
  updateCounts();
}

function removeCard(id) {
  const card = cards.get(id);
  if (!card) return;
  cards.delete(id);
  card.remove();
  updateCounts();
}

function updateCounts() {
  const running = [...cards.values()].filter((c) => !TERMINAL.has(c.dataset.status)).length;
  taskCount.textContent = running > 0 ? `${running} running` : String(cards.size);
  emptyNote.hidden = cards.size > 0;
  emptyNote.textContent = "No tasks yet — press Rock Out or Start.";
}

/** Render a task's state (a TaskHandle or a snapshot object) into its card. */
function render(card, state) {
  const status = state.status || "queued";
  const progress = typeof state.progress === "number" ? state.progress : 0;
  const eta = "etaS" in state ? state.etaS : state.eta_s;
  card.dataset.status = status;
  $(".kind-tag", card).textContent = state.kind || "task";
  $(".status", card).textContent = STATUS_LABELS[status] || status;
  const bar = $(".bar", card);
  bar.setAttribute("aria-valuenow", String(Math.round(progress)));
  bar.setAttribute("aria-valuetext", formatPercent(progress));
  $(".bar-fill", card).style.width = `${Math.min(100, Math.max(0, progress))}%`;
  $(".pct", card).textContent = formatPercent(progress);
  $(".eta", card).textContent = TERMINAL.has(status) ? "" : formatEta(eta);
  $(".message", card).textContent = state.message || "";
  $(".message", card).hidden = TERMINAL.has(status); // the outcome replaces it

  const outcome = $(".outcome", card);
  outcome.replaceChildren();
  if (status === "succeeded") {
    outcome.className = "outcome outcome-ok";
    const result = state.result;
    if (result && typeof result === "object" && !Array.isArray(result)) {
      const dl = document.createElement("dl");
      for (const [key, value] of Object.entries(result)) {
        const dt = document.createElement("dt");
        dt.textContent = key;
        const dd = document.createElement("dd");
        dd.textContent = formatValue(value);
        dl.append(dt, dd);
      }
      outcome.append(dl);
    } else {
      outcome.textContent = result === null || result === undefined ? "Done." : formatValue(result);
    }
  } else if (status === "failed") {
    outcome.className = "outcome outcome-error";
    const error = state.error || {};
    const code = document.createElement("strong");
    code.textContent = error.code || "failed";
    outcome.append(code, document.createTextNode(error.detail ? ` — ${error.detail}` : ""));
  } else if (status === "cancelled") {
    outcome.className = "outcome outcome-muted";
    outcome.textContent = `Cancelled at ${formatPercent(progress)}.`;
  }
  outcome.hidden = !TERMINAL.has(status);
  $(".cancel", card).hidden = TERMINAL.has(status);
  $(".dismiss", card).hidden = !TERMINAL.has(status);
  updateCounts();
}

/** Show a handle's card and keep it up to date. */
function watch(handle, { atTop = true, initial = null } = {}) {
  const card = cardFor(handle.id);
  // Until the subscription's snapshot arrives, show what list() said.
  render(card, handle.seq === 0 && initial ? initial : handle);
  addCard(card, { atTop });
  handle.on("update", () => {
    if (cards.get(handle.id) === card) render(card, handle);
  });
  handle.on("error", (error) => {
    $(".cancel", card).disabled = false;
    showToast(`${handle.id.slice(0, 8)}: ${error.detail || error.message}`);
  });
  return handle;
}

let toastTimer = null;
function showToast(text) {
  toast.textContent = text;
  toast.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => {
    toast.hidden = true;
  }, 6000);
}

// ----- actions -----

/** Why an input's value is out of its range (its min, max and step), or "" if it is fine. */
function rangeProblem(input) {
  const value = Number(input.value);
  const name = input.name.replace("_", " ");
  if (!Number.isFinite(value)) return `${name} must be a number, got "${input.value}"`;
  if (input.checkValidity()) return "";
  const { min, max } = input;
  if (input.step === "1" && !Number.isInteger(value)) return `${name} must be a whole number, got ${input.value}`;
  if (min !== "" && max !== "") return `${name} must be between ${min} and ${max}, got ${input.value}`;
  if (min !== "") return `${name} must be at least ${min}, got ${input.value}`;
  return `${name} must be at most ${max}, got ${input.value}`;
}

/** Show (or clear, with "") an input's problem beside it, inline. */
function markInvalid(input, problem) {
  const id = `${input.name}-error`;
  let note = document.getElementById(id);
  if (!problem) {
    input.removeAttribute("aria-invalid");
    note?.remove();
    return;
  }
  if (!note) {
    note = document.createElement("small");
    note.id = id;
    note.className = "field-error";
    input.after(note);
  }
  note.textContent = problem;
  input.setAttribute("aria-invalid", "true");
  input.setAttribute("aria-describedby", id);
}

/** The kind's params, or null when a field is out of range (each problem shown beside it). */
function readParams(kind) {
  const params = {};
  const fieldset = $(`.params[data-kind="${kind}"]`, form);
  let firstBad = null;
  for (const input of [...fieldset.querySelectorAll("input"), $("#count")]) {
    const problem = input.value.trim() === "" ? "" : rangeProblem(input);
    markInvalid(input, problem);
    if (problem) {
      firstBad ??= input;
      continue;
    }
    if (input.value.trim() === "" || input.id === "count") continue;
    const value = Number(input.value);
    params[input.name] = input.name === "mb" ? Math.round(value) : value;
  }
  if (firstBad) {
    firstBad.focus();
    return null;
  }
  return params;
}

form.addEventListener("input", (event) => {
  if (event.target.getAttribute("aria-invalid") === "true") {
    markInvalid(event.target, event.target.value.trim() === "" ? "" : rangeProblem(event.target));
  }
});

async function startTask(kind, params) {
  try {
    const handle = await client.start(kind, params);
    watch(handle);
    return handle;
  } catch (error) {
    showToast(error.detail || error.message);
    return null;
  }
}

// The 2017 demo's button: a bare start of the default kind, its progress in #prog-val.
$("#go-button").addEventListener("click", async () => {
  progVal.classList.remove("complete", "failed");
  progVal.textContent = "0%";
  const handle = await startTask(undefined, undefined);
  if (!handle) return;
  const show = () => {
    progVal.textContent = formatPercent(handle.progress);
  };
  handle.on("update", show);
  handle.on("complete", () => progVal.classList.add("complete"));
  handle.on("failed", () => progVal.classList.add("failed"));
  handle.on("cancelled", () => progVal.classList.add("failed"));
  show();
});

form.addEventListener("change", (event) => {
  if (event.target.name !== "kind") return;
  for (const fieldset of form.querySelectorAll(".params")) {
    fieldset.hidden = fieldset.dataset.kind !== event.target.value;
  }
});

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const kind = new FormData(form).get("kind");
  const params = readParams(kind);
  if (params === null) return; // out of range: said beside the field, nothing started
  const count = Math.min(10, Math.max(1, Math.round(Number($("#count").value) || 1)));
  await Promise.all(Array.from({ length: count }, () => startTask(kind, params)));
});

$("#clear-finished").addEventListener("click", () => {
  for (const [id, card] of [...cards]) {
    if (TERMINAL.has(card.dataset.status)) removeCard(id);
  }
});

// ----- on load: the visitor's running and recent tasks -----

async function restore() {
  let snapshots;
  try {
    snapshots = await client.list();
  } catch (error) {
    emptyNote.textContent = `Could not load your tasks: ${error.detail || error.message}`;
    return;
  }
  // Newest first from the server; append in that order below anything started meanwhile.
  for (const snap of snapshots) {
    if (cards.has(snap.task_id)) continue;
    if (TERMINAL.has(snap.status)) {
      const card = cardFor(snap.task_id);
      render(card, snap);
      addCard(card, { atTop: false });
    } else {
      watch(client.subscribe(snap.task_id), { atTop: false, initial: snap });
    }
  }
  updateCounts();
}

restore();

// For the browser tests and the curious.
window.progrockDemo = { client, cards };
