/* The jobs list: pause, resume, run now and delete (after a confirmation), and next run times
 * kept current. */
import {
  $, $$, url, el, timeNode, api, flash, confirmAction, busy, reportError, poll,
} from "./core.js";

// -- jobs -------------------------------------------------------------------------------
/* `focusToggle`: the pause/resume button just pressed had the focus; give it to the other. */
function renderJobRow(row, job, focusToggle = false) {
  row.dataset.paused = job.paused ? "true" : "false";
  $(".badge-paused", row).hidden = !job.paused;
  const next = $(".next-time", row);
  next.replaceChildren();
  if (!job.paused && job.next_run_time) {
    next.append(timeNode(job.next_run_time, "short"),
      el("span", { class: "muted small next-relative" }, timeNode(job.next_run_time, "relative")));
  }
  const last = $(".cell-last", row);
  if (job.last_run) {
    const badge = el("span", { class: `badge state-${job.last_run.state}`, "data-state": job.last_run.state, text: job.last_run.state });
    last.replaceChildren(
      el("a", { href: url(`/runs/${job.last_run.id}`) }, badge),
      " ",
      el("a", { class: "small all-runs", href: url(`/runs?job_id=${encodeURIComponent(job.id)}`), text: "all runs" }));
  }
  const pause = $('[data-action="pause-job"]', row);
  const resume = $('[data-action="resume-job"]', row);
  if (pause && resume) {
    pause.hidden = job.paused;
    resume.hidden = !job.paused;
    if (focusToggle) (job.paused ? resume : pause).focus();
  }
}

export function initJobsPage() {
  const table = $("#jobs-table");
  if (!table) return;
  const body = $("tbody", table);
  const jobName = (row) => $(".job-name", row).textContent;

  body.addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-action]");
    if (!button) return;
    const row = button.closest("tr[data-job-id]");
    const id = row.dataset.jobId;
    const path = `/api/jobs/${encodeURIComponent(id)}`;
    const name = jobName(row);
    switch (button.dataset.action) {
      case "pause-job":
      case "resume-job": {
        const verb = button.dataset.action === "pause-job" ? "pause" : "resume";
        const hadFocus = document.activeElement === button;
        await busy(button, async () => {
          try {
            renderJobRow(row, await api("POST", `${path}/${verb}`), hadFocus);
            flash(verb === "pause" ? `Paused ${name}.` : `Resumed ${name}.`, "success");
          } catch (error) { reportError(error, `Could not ${verb} ${name}`); }
        });
        break;
      }
      case "run-job":
        await busy(button, async () => {
          try {
            const run = await api("POST", `${path}/run`);
            flash(`Started run #${run.id} of ${name}.`, "success", { href: url(`/runs/${run.id}`), text: "Watch it" });
          } catch (error) { reportError(error, `Could not run ${name}`); }
        });
        break;
      case "delete-job": {
        if (!(await confirmAction(`Delete the job ${name}? Its future runs will not happen; runs already started go on.`, "Delete job"))) return;
        await busy(button, async () => {
          try {
            await api("DELETE", path);
            const next = row.nextElementSibling || row.previousElementSibling;
            row.remove();
            flash(`Deleted ${name}.`, "success");
            const focusTarget = next ? $("button:not([hidden])", next) : $("h1");
            if (focusTarget) focusTarget.focus();
            const empty = $(".empty", table.parentElement);
            if (empty) empty.hidden = $$("tr[data-job-id]", body).length > 0;
          } catch (error) { reportError(error, `Could not delete ${name}`); }
        });
        break;
      }
      default:
    }
  });

  const created = table.dataset.created && $(`tr[data-job-id="${CSS.escape(table.dataset.created)}"]`, body);
  if (created) created.scrollIntoView({ block: "center" });

  const query = new URLSearchParams({ limit: table.dataset.limit || "100" });
  if (table.dataset.cursor) query.set("cursor", table.dataset.cursor);
  poll(async () => {
    const page = await api("GET", `/api/jobs?${query}`);
    for (const job of page.items) {
      const row = $(`tr[data-job-id="${CSS.escape(job.id)}"]`, body);
      if (row) renderJobRow(row, job);
    }
  }, 5000);
}
