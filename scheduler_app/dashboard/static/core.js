/* What every page of the dashboard shares: building elements, formatting times in the
 * viewer's time zone (Intl), calling the JSON API with the session's CSRF token, messages and
 * confirmations, and polling while the page is visible. */

export const $ = (selector, root = document) => root.querySelector(selector);
export const $$ = (selector, root = document) => Array.from(root.querySelectorAll(selector));
export const ACTIVE = new Set(["queued", "running"]);
export const POLL_MS = 1000;
const ROOT = document.body.dataset.root || "";
export const url = (path) => ROOT + path;

// -- elements ---------------------------------------------------------------------------
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child !== null && child !== undefined && child !== false) node.append(child);
  }
  return node;
}

// -- times ------------------------------------------------------------------------------
export const viewerZone = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
const dateTimeFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });
const minuteFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const clockFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" });
const relativeFormat = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });
const UNITS = [["year", 31536000], ["month", 2592000], ["week", 604800], ["day", 86400],
  ["hour", 3600], ["minute", 60], ["second", 1]];

export function formatTime(iso, timeZone) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return iso;
  if (!timeZone) return dateTimeFormat.format(date);
  return new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short", timeZone }).format(date);
}

function formatRelative(iso) {
  const seconds = (new Date(iso).getTime() - Date.now()) / 1000;
  const size = Math.abs(seconds);
  if (size < 5) return seconds >= 0 ? "in a moment" : "just now";
  for (const [unit, length] of UNITS) {
    if (size >= length || unit === "second") return relativeFormat.format(Math.round(seconds / length), unit);
  }
  return "";
}

/* "Wed 26 Nov, 02:00": a near time at a glance (the year only when it is not this one). */
function formatShort(date) {
  const options = { weekday: "short", day: "numeric", month: "short", hour: "2-digit", minute: "2-digit" };
  if (date.getSeconds()) options.second = "2-digit";
  if (date.getFullYear() !== new Date().getFullYear()) options.year = "numeric";
  return new Intl.DateTimeFormat(undefined, options).format(date);
}

export function localizeTime(node) {
  const iso = node.getAttribute("datetime");
  if (!iso) return;
  const absolute = formatTime(iso);
  if (node.classList.contains("js-relative")) {
    node.textContent = formatRelative(iso);
    node.title = absolute;
  } else if (node.classList.contains("js-short")) {
    node.textContent = formatShort(new Date(iso));
    node.title = absolute;
  } else if (node.classList.contains("js-clock")) {
    node.textContent = clockFormat.format(new Date(iso));
    node.title = absolute;
  } else {
    node.textContent = absolute;
    node.title = `${iso} (UTC)`;
  }
}

export function localizeTimes(root = document) {
  $$("time.js-time", root).forEach(localizeTime);
  $$(".js-tz", root).forEach((node) => { node.textContent = `your time zone, ${viewerZone}`; });
  $$(".chart-bar[data-start]", root).forEach((bar) => {
    const title = $("title", bar);
    if (!title) return;
    if (!bar.dataset.summary) bar.dataset.summary = title.textContent;
    title.textContent = `${minuteFormat.format(new Date(bar.dataset.start))}: ${bar.dataset.summary}`;
  });
}

/* A <time> for `iso`: style "absolute" (date and time), "short" (weekday, day and time),
 * "relative" (in 5 minutes) or "clock" (time of day). */
export function timeNode(iso, style = "absolute") {
  if (!iso) return el("span", { class: "muted", text: "–" });
  const node = el("time", { class: style === "absolute" ? "js-time" : `js-time js-${style}`, datetime: iso });
  localizeTime(node);
  return node;
}

export function formatDuration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 60) return seconds < 10 ? `${seconds.toFixed(1)} s` : `${Math.round(seconds)} s`;
  let minutes = Math.floor(seconds / 60);
  const secs = Math.floor(seconds % 60);
  if (minutes < 60) return `${minutes} min ${secs} s`;
  const hours = Math.floor(minutes / 60);
  minutes %= 60;
  return `${hours} h ${minutes} min`;
}

// -- the JSON API -----------------------------------------------------------------------
class ApiError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || `the server answered ${status}`);
    this.status = status;
    this.code = error.code || "http_error";
    this.details = Array.isArray(error.details) ? error.details : [];
  }
}

export function csrfToken() {
  const meta = $('meta[name="csrf-token"]');
  return meta ? meta.content : "";
}

export function goToLogin() {
  const next = location.pathname + location.search;
  location.assign(url(`/login?next=${encodeURIComponent(next)}`));
}

export async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (method !== "GET") headers["X-CSRF-Token"] = csrfToken();
  const init = { method, headers, credentials: "same-origin", cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(url(path), init);
  let data = null;
  const text = response.status === 204 ? "" : await response.text();
  if (text) {
    try { data = JSON.parse(text); } catch (_) { data = null; }
  }
  if (response.status === 401) {
    goToLogin();
  }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

// -- feedback ---------------------------------------------------------------------------
const FLASH_KEY = "scheduler.flash";

export function flash(message, kind = "info", link = null) {
  const box = $("#flash");
  if (!box) return;
  const content = [el("span", { text: message })];
  if (link) content.push(" ", el("a", { href: link.href, text: link.text }));
  const close = el("button", { type: "button", class: "flash-close", "aria-label": "Dismiss", text: "×" });
  close.addEventListener("click", () => box.replaceChildren());
  box.replaceChildren(el("div", { class: `flash-message flash-${kind}` }, ...content, close));
}

export function flashAfterNavigation(message, kind = "info") {
  try { sessionStorage.setItem(FLASH_KEY, JSON.stringify({ message, kind })); } catch (_) { /* private mode */ }
}

export function showPendingFlash() {
  try {
    const pending = sessionStorage.getItem(FLASH_KEY);
    if (!pending) return;
    sessionStorage.removeItem(FLASH_KEY);
    const { message, kind } = JSON.parse(pending);
    flash(message, kind);
  } catch (_) { /* nothing to show */ }
}

export function confirmAction(message, confirmLabel) {
  const dialog = $("#confirm-dialog");
  if (!dialog || typeof dialog.showModal !== "function") return Promise.resolve(window.confirm(message));
  $("#confirm-message", dialog).textContent = message;
  $("#confirm-ok", dialog).textContent = confirmLabel;
  dialog.returnValue = "";
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "confirm"), { once: true });
  });
}

export async function busy(button, work) {
  if (button.disabled) return undefined;
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  try {
    return await work();
  } finally {
    button.disabled = false;
    button.removeAttribute("aria-busy");
  }
}

export function reportError(error, what) {
  if (error instanceof ApiError && error.status === 401) return;
  flash(`${what}: ${error.message}`, "error");
}

// -- polling ----------------------------------------------------------------------------
/* Calls `work` every `interval` ms while the page is visible, one call at a time; stops
 * for good when `work` returns false. */
export function poll(work, interval) {
  let timer = null;
  let running = false;
  let stopped = false;
  async function tick() {
    clearTimeout(timer);
    if (stopped || running) return;
    if (document.visibilityState === "visible") {
      running = true;
      try {
        if ((await work()) === false) stopped = true;
      } catch (error) {
        if (!(error instanceof ApiError)) console.warn("dashboard poll failed", error);
      } finally {
        running = false;
      }
    }
    if (!stopped) timer = setTimeout(tick, interval);
  }
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible") tick();
  });
  timer = setTimeout(tick, interval);
  return { now: tick, stop() { stopped = true; clearTimeout(timer); } };
}
