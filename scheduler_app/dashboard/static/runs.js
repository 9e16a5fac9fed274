/* Runs, live: the runs list and one run's page (its state, progress and log) follow the JSON
 * API every second while a run is queued or running; Cancel and Retry. */
import {
  $, $$, ACTIVE, POLL_MS, url, el, timeNode, formatDuration, api, flash, flashAfterNavigation,
  confirmAction, busy, reportError, poll,
} from "./core.js";

// -- runs -------------------------------------------------------------------------------
function renderBadge(badge, state, cancelRequested) {
  badge.className = `badge state-${state}`;
  badge.dataset.state = state;
  badge.textContent = state + (cancelRequested && ACTIVE.has(state) ? " · cancelling" : "");
}

function renderProgress(cell, run) {
  const bar = $("progress", cell);
  const progress = run.progress;
  const percent = progress && progress.percent !== null && progress.percent !== undefined ? progress.percent : null;
  bar.className = `bar state-${run.state}`;
  cell.classList.toggle("no-progress", percent === null && (run.state === "failed" || run.state === "cancelled"));
  if (percent !== null) bar.value = percent;
  else if (run.state === "succeeded") bar.value = 100;
  else if (!ACTIVE.has(run.state)) bar.value = 0;
  else bar.removeAttribute("value");
  let label = "";
  if (percent !== null) label = `${Math.round(percent)} %`;
  else if (progress && progress.done !== null && progress.done !== undefined) label = `${Math.round(progress.done)} done`;
  $(".progress-percent", cell).textContent = label;
  $(".progress-message", cell).textContent = (progress && progress.message) || "";
}

function renderRunRow(row, run) {
  row.dataset.runId = run.id;
  row.dataset.state = run.state;
  const link = $(".run-link", row);
  link.href = url(`/runs/${run.id}`);
  link.textContent = `#${run.id}`;
  const task = $(".cell-task", row);
  task.replaceChildren(el("code", { text: run.task }));
  if (run.job_id) task.append(el("div", { class: "muted small", text: `job ${run.job_id}` }));
  renderBadge($(".cell-state .badge", row), run.state, run.cancel_requested);
  renderProgress($(".cell-progress", row), run);
  $(".cell-attempt", row).textContent = `${run.attempt}/${run.max_attempts}`;
  $(".cell-node .node-name", row).textContent = run.node || "–";
  $(".cell-created", row).replaceChildren(timeNode(run.created_at));
  $(".cell-duration", row).textContent = formatDuration(run.duration_s);
}

export function initRunsPage() {
  const table = $("#runs-table");
  if (!table) return;
  const body = $("tbody", table);
  const template = $("#run-row-template");
  const limit = Number(table.dataset.limit) || 50;
  const firstPage = table.dataset.firstPage === "true";
  const query = new URLSearchParams({ limit: String(limit) });
  for (const [key, name] of [["state", "state"], ["task", "task"], ["jobId", "job_id"], ["cursor", "cursor"]]) {
    if (table.dataset[key]) query.set(name, table.dataset[key]);
  }
  const rows = () => $$("tr[data-run-id]", body);

  function insertRow(run) {
    const row = template.content.querySelector("tr").cloneNode(true);
    const older = rows().find((r) => Number(r.dataset.runId) < run.id);
    body.insertBefore(row, older || null);
    row.classList.add("row-new");
    return row;
  }

  poll(async () => {
    if (!firstPage && !rows().some((r) => ACTIVE.has(r.dataset.state))) return false;
    const page = await api("GET", `/api/runs?${query}`);
    const byId = new Map(rows().map((r) => [r.dataset.runId, r]));
    const seen = new Set();
    for (const run of page.items) {
      let row = byId.get(String(run.id));
      if (!row) {
        if (!firstPage) continue;
        row = insertRow(run);
      }
      renderRunRow(row, run);
      seen.add(String(run.id));
    }
    // A row whose run left this page's filter (running -> succeeded under state=running).
    for (const [id, row] of byId) {
      if (!seen.has(id) && ACTIVE.has(row.dataset.state)) {
        try { renderRunRow(row, await api("GET", `/api/runs/${id}`)); } catch (_) { /* pruned */ }
      }
    }
    const all = rows();
    if (firstPage && all.length > limit) {
      all.slice(limit).forEach((r) => r.remove());
      const older = $("#older-link");
      if (older) {
        const next = new URLSearchParams(query);
        next.delete("limit");
        next.set("cursor", all[limit - 1].dataset.runId);
        older.href = `${location.pathname}?${next}`;
        older.hidden = false;
      }
    }
    const empty = $(".empty", table.parentElement);
    if (empty) empty.hidden = rows().length > 0;
    return undefined;
  }, POLL_MS);
}

export function initRunPage() {
  const root = $("#run");
  if (!root) return;
  const id = root.dataset.runId;
  let run = JSON.parse($("#run-data").textContent);
  let lastLogId = root.dataset.lastLogId ? Number(root.dataset.lastLogId) : null;
  const log = $("#log");
  const cancelButton = $('[data-action="cancel-run"]');
  const retryButton = $('[data-action="retry-run"]');

  function render() {
    root.dataset.state = run.state;
    renderBadge($(".cell-state .badge", root), run.state, run.cancel_requested);
    renderProgress($(".cell-progress", root), run);
    $(".cell-attempt", root).textContent = `${run.attempt} of ${run.max_attempts}`;
    $(".cell-node .node-name", root).textContent = run.node || "–";
    $(".cell-duration", root).textContent = formatDuration(run.duration_s);
    $(".cell-started", root).replaceChildren(timeNode(run.started_at));
    $(".cell-finished", root).replaceChildren(timeNode(run.finished_at));
    const overdue = $(".run-overdue", root);
    overdue.hidden = !run.overdue;
    overdue.textContent = run.overdue || "";
    const errorBox = $(".run-error", root);
    errorBox.hidden = !run.error;
    if (run.error) {
      $("#error-title").textContent = run.state === "failed" ? "Error" : "Error of the last attempt";
      $(".error-type", errorBox).textContent = run.error.type || "Error";
      $(".error-message", errorBox).textContent = run.error.message || "";
      $(".traceback", errorBox).textContent = run.error.traceback || "";
    }
    const result = $(".run-result .result", root);
    const none = $(".run-result .result-none", root);
    result.hidden = run.state !== "succeeded";
    none.hidden = run.state === "succeeded";
    if (run.state === "succeeded") result.textContent = JSON.stringify(run.result, null, 2);
    else none.textContent = ACTIVE.has(run.state) ? "Not finished yet." : `No result: the run ${run.state}.`;
    $(".log-status", root).textContent = ACTIVE.has(run.state) ? "following live" : "";
    if (cancelButton) {
      cancelButton.hidden = !ACTIVE.has(run.state);
      cancelButton.disabled = run.cancel_requested;
      cancelButton.textContent = run.cancel_requested ? "Cancelling…" : "Cancel";
    }
    if (retryButton) {
      const wasHidden = retryButton.hidden;
      retryButton.hidden = ACTIVE.has(run.state);
      if (wasHidden && !retryButton.hidden && document.activeElement === document.body && cancelButton && cancelButton.hidden) {
        retryButton.focus();
      }
    }
  }

  async function fetchLogs() {
    for (let page = 0; page < 10; page += 1) {
      const query = new URLSearchParams({ limit: "500" });
      if (lastLogId !== null) query.set("cursor", String(lastLogId));
      const data = await api("GET", `/api/runs/${id}/logs?${query}`);
      if (data.items.length) {
        const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 24;
        for (const line of data.items) {
          log.append(el("li", { class: `log-line level-${String(line.level).toLowerCase()}`, "data-log-id": line.id },
            el("span", { class: "log-at" }, timeNode(line.at, "clock")), " ",
            el("span", { class: "log-level", text: line.level }), " ",
            el("span", { class: "log-message", text: line.message })));
          lastLogId = line.id;
        }
        log.hidden = false;
        if (atBottom) log.scrollTop = log.scrollHeight;
        $(".log-empty", root).hidden = true;
      }
      if (!data.next_cursor) return;
    }
  }

  if (ACTIVE.has(run.state)) {
    poll(async () => {
      run = await api("GET", `/api/runs/${id}`);
      render();
      await fetchLogs();
      return ACTIVE.has(run.state) ? undefined : false;
    }, POLL_MS);
  } else if (root.dataset.logsMore === "true") {
    fetchLogs().catch((error) => reportError(error, "Could not load the log"));
  }

  if (cancelButton) {
    cancelButton.addEventListener("click", async () => {
      if (!(await confirmAction(`Cancel run #${id} (${run.task})? A running task stops the next time it checks.`, "Cancel run"))) return;
      await busy(cancelButton, async () => {
        try {
          run = await api("POST", `/api/runs/${id}/cancel`);
          render();
          flash(run.state === "cancelled" ? `Run #${id} cancelled.` : `Cancel requested: run #${id} stops the next time its task checks.`);
        } catch (error) {
          if (error.code === "already_finished") {
            run = await api("GET", `/api/runs/${id}`);
            render();
          }
          reportError(error, "Could not cancel");
        }
      });
      render();
    });
  }
  if (retryButton) {
    retryButton.addEventListener("click", () => busy(retryButton, async () => {
      try {
        // The retry keeps the run's concurrency controls (its unique key, concurrency key and
        // rate limit), so it waits its turn like the run did; a held unique key is a 409
        // whose message names the run holding it.
        const body = { task: run.task, kwargs: run.kwargs };
        for (const name of ["unique_key", "concurrency_key", "concurrency_limit", "rate_limit", "rate_key"]) {
          if (run[name] !== null && run[name] !== undefined) body[name] = run[name];
        }
        const created = await api("POST", "/api/runs", body);
        flashAfterNavigation(`Run #${created.id} started: a retry of run #${id}.`, "success");
        location.assign(url(`/runs/${created.id}`));
      } catch (error) {
        reportError(error, "Could not retry");
      }
    }));
  }
}
