/* The dashboard's script: plain JavaScript modules, no build step, no dependency.
 *
 * The pages arrive rendered by the server; this script
 * - formats every <time class="js-time"> in the viewer's time zone (Intl),
 * - keeps runs, one run (with its log) and jobs live by polling the JSON API,
 * - builds argument forms from each task's JSON Schema (GET /api/tasks),
 * - creates and edits jobs with any trigger, previewing its next fire times
 *   (POST /api/triggers/preview),
 * - sends every change to the JSON API with the session's CSRF token (X-CSRF-Token).
 * The server decides who may do what; the buttons are only rendered for admins.
 */
import {
  $, $$, url, localizeTime, localizeTimes, csrfToken, goToLogin, api, flashAfterNavigation,
  showPendingFlash, busy, poll,
} from "./core.js";
import { initRunPage, initRunsPage } from "./runs.js";
import { initJobsPage } from "./jobs.js";
import { initRunForm } from "./forms.js";
import { initJobForm } from "./jobform.js";

// -- overview ---------------------------------------------------------------------------
function initOverview() {
  const live = $("#overview-live");
  if (!live) return;
  poll(async () => {
    if (live.contains(document.activeElement)) return; // never pull the focus from under a keyboard user
    const response = await fetch(location.href, {
      headers: { "X-Dashboard-Fragment": "1", Accept: "text/html" }, credentials: "same-origin", cache: "no-store",
    });
    if (response.redirected || response.status === 401) { goToLogin(); return; }
    if (!response.ok) return;
    live.innerHTML = await response.text();
    localizeTimes(live);
  }, Number(live.dataset.refreshMs) || 5000);
}

// -- log in and out ---------------------------------------------------------------------
function initLogin() {
  const form = $("#login-form");
  if (!form) return;
  const error = $("#token-error", form);
  const input = $("#token", form);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    input.removeAttribute("aria-invalid");
    const submit = $('button[type="submit"]', form);
    await busy(submit, async () => {
      const response = await fetch(form.action, {
        method: "POST",
        headers: { Accept: "application/json", "X-CSRF-Token": csrfToken() },
        body: new URLSearchParams(new FormData(form)),
        credentials: "same-origin",
      });
      if (response.ok) {
        const { role } = await response.json();
        flashAfterNavigation(`Logged in as ${role === "admin" ? "an admin" : "a viewer"}.`, "success");
        location.assign(form.dataset.next || url("/"));
        return;
      }
      error.textContent = response.status === 401 ? "This token is not one the server knows."
        : response.status === 400 ? "Enter a token." : `The server answered ${response.status}.`;
      input.setAttribute("aria-invalid", "true");
      input.focus();
    });
  });
}

function initLogout() {
  $$('[data-action="logout"]').forEach((button) => button.addEventListener("click", () => busy(button, async () => {
    try {
      await api("POST", "/auth/logout");
    } finally {
      location.assign(url("/login"));
    }
  })));
}

function start() {
  localizeTimes();
  setInterval(() => $$("time.js-relative").forEach(localizeTime), 15000);
  showPendingFlash();
  initLogout();
  const pages = {
    overview: initOverview, runs: initRunsPage, run: initRunPage, jobs: initJobsPage,
    "job-new": initJobForm, job: initJobForm, "run-new": initRunForm, login: initLogin,
  };
  const init = pages[document.body.dataset.page];
  if (init) init();
  // The page's controls have their handlers from here on (what a test waits for before it
  // clicks one: a click before it would do nothing).
  document.body.dataset.started = "";
}

start();  // a module runs once the document is parsed
