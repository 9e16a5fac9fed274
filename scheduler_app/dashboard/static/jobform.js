/* The job form, for a new job and for an existing one (the page's form carries it in data-job):
 * a task and its generated argument fields, a cron, interval or one-off date trigger with its
 * next fire times previewed as it is typed (POST /api/triggers/preview), and the job's options.
 *
 * A new job is POSTed to /api/jobs. An existing one gets a PATCH of only the fields that differ
 * from what the form showed when it was filled, so saving a new name does not reschedule an
 * untouched trigger. Interval and date times are typed in the viewer's time zone and sent with
 * its offset; cron hours are read in the trigger's own time zone. A viewer gets the same form
 * disabled (the server renders it so) and the job's next run instead of a preview, which is an
 * admin's POST. Problems the API names (trigger.minutes, max_instances, kwargs.x) are shown
 * under their fields. */
import {
  $, $$, url, el, viewerZone, formatTime, timeNode, api, flash, flashAfterNavigation, busy,
} from "./core.js";
import { clearErrors, showErrors, taskForm } from "./forms.js";

const CRONTAB_FIELDS = ["minute", "hour", "day", "month", "day_of_week"];
const INTERVAL_UNITS = ["weeks", "days", "hours", "minutes", "seconds"];
const EDITABLE = ["name", "kwargs", "trigger", "max_instances", "coalesce", "misfire_grace_time"];
const PROMPTS = {
  cron: "Type a cron expression to see when it fires.",
  interval: "Give an interval to see when it fires.",
  date: "Pick a date and time to see when it fires.",
};

/* The API names a bad crontab field (trigger.minute: "99 is out of range 0-59"); the form has
   one input for the expression, so each is shown there as "minute: 99 is out of range 0-59". */
function onCronInput(problems, usesExpression) {
  return problems.map((problem) => {
    const name = String(problem.field || "").replace(/^trigger\./, "");
    if (!usesExpression || !CRONTAB_FIELDS.includes(name) || problem.field === name) return problem;
    return { field: "trigger.expr", message: `${name}: ${problem.message}` };
  });
}

// -- datetime-local inputs, read in the viewer's time zone --------------------------------
const pad = (n, width = 2) => String(n).padStart(width, "0");

function localParts(date) {
  return `${pad(date.getFullYear(), 4)}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}`
    + `T${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
}

/* "2026-12-24T17:00:00+00:00" → "2026-12-24T18:00:00" for a viewer in Paris. */
function toLocalInput(iso) {
  const date = iso ? new Date(iso) : null;
  return date && !Number.isNaN(date.getTime()) ? localParts(date) : "";
}

/* A datetime-local value (no offset: local time) → ISO 8601 with the viewer's offset. */
function fromLocalInput(value) {
  const date = new Date(value);
  if (Number.isNaN(date.getTime())) return null;
  const offset = -date.getTimezoneOffset();
  const sign = offset < 0 ? "-" : "+";
  return `${localParts(date)}${sign}${pad(Math.floor(Math.abs(offset) / 60))}:${pad(Math.abs(offset) % 60)}`;
}

// -- reading the form ---------------------------------------------------------------------
/* A number input's value, undefined when blank; a problem is added when it is not a number. */
function readNumber(input, field, problems, integer = false) {
  const text = input.value.trim();
  if (text === "") {
    if (input.validity && input.validity.badInput) problems.push({ field, message: "must be a number" });
    return undefined;
  }
  const value = Number(text);
  if (!Number.isFinite(value) || (integer && !Number.isInteger(value))) {
    problems.push({ field, message: integer ? "must be a whole number" : "must be a number" });
    return undefined;
  }
  return value;
}

function readTime(input, field, problems) {
  if (input.value === "") {
    if (input.validity && input.validity.badInput) problems.push({ field, message: "is not a complete date and time" });
    return undefined;
  }
  const value = fromLocalInput(input.value);
  if (value === null) problems.push({ field, message: "is not a date and time" });
  return value === null ? undefined : value;
}

function triggerFields(form) {
  return {
    types: $$('input[name="trigger_type"]', form),
    panels: $$(".trigger-panel", form),
    expr: $("#cron-expr", form),
    zone: $("#cron-tz", form),
    fieldsNote: $("#cron-fields-note", form),
    units: Object.fromEntries(INTERVAL_UNITS.map((unit) => [unit, $(`#iv-${unit}`, form)])),
    start: $("#iv-start", form),
    end: $("#iv-end", form),
    runDate: $("#run-date", form),
  };
}

/* The trigger the form describes: {spec, problems, blank} (blank: nothing typed yet).
   `kept` is the job's stored trigger, when the form was filled from one. */
function readTrigger(f, kept) {
  const problems = [];
  const type = (f.types.find((input) => input.checked) || f.types[0]).value;
  const same = kept && kept.type === type ? kept : null;
  if (type === "cron") {
    const expr = f.expr.value.trim();
    if (!expr && same && !same.expr) {
      // Given field by field through the API: kept as it is until an expression replaces it.
      const { description, ...fields } = same;
      return { spec: fields, problems, blank: false };
    }
    const spec = { type, expr };
    if (f.zone.value.trim()) spec.timezone = f.zone.value.trim();
    if (!expr) problems.push({ field: "trigger.expr", message: "a cron expression is required" });
    return { spec, problems, blank: !expr };
  }
  if (type === "interval") {
    const spec = { type };
    for (const unit of INTERVAL_UNITS) {
      const value = readNumber(f.units[unit], `trigger.${unit}`, problems);
      if (value !== undefined) spec[unit] = value;
    }
    const start = readTime(f.start, "trigger.start_date", problems);
    const end = readTime(f.end, "trigger.end_date", problems);
    if (start) spec.start_date = start;
    if (end) spec.end_date = end;
    if (same && same.timezone) spec.timezone = same.timezone;
    const blank = INTERVAL_UNITS.every((unit) => f.units[unit].value.trim() === "") && !problems.length;
    return { spec, problems, blank };
  }
  const spec = { type };
  const runDate = readTime(f.runDate, "trigger.run_date", problems);
  if (runDate) spec.run_date = runDate;
  else if (!problems.length) problems.push({ field: "trigger.run_date", message: "pick a date and time" });
  if (same && same.timezone) spec.timezone = same.timezone;
  return { spec, problems, blank: !runDate && f.runDate.value === "" };
}

function fillTrigger(f, trigger) {
  const type = ["cron", "interval", "date"].includes(trigger.type) ? trigger.type : "cron";
  f.types.forEach((input) => { input.checked = input.value === type; });
  if (type === "cron") {
    f.expr.value = trigger.expr || "";
    f.zone.value = trigger.timezone || "";
    if (!trigger.expr) {
      const given = Object.entries(trigger).filter(([k]) => !["type", "description", "timezone"].includes(k));
      f.fieldsNote.replaceChildren("Given field by field: ",
        el("code", { text: given.map(([k, v]) => `${k}=${v}`).join(" ") }),
        ". Type an expression to replace them.");
      f.fieldsNote.hidden = false;
    }
  } else if (type === "interval") {
    for (const unit of INTERVAL_UNITS) f.units[unit].value = trigger[unit] !== undefined ? String(trigger[unit]) : "";
    f.start.value = toLocalInput(trigger.start_date);
    f.end.value = toLocalInput(trigger.end_date);
  } else {
    f.runDate.value = toLocalInput(trigger.run_date);
  }
}

function showPanel(f) {
  const type = (f.types.find((input) => input.checked) || f.types[0]).value;
  f.panels.forEach((panel) => { panel.hidden = panel.dataset.trigger !== type; });
  return type;
}

// -- the form -----------------------------------------------------------------------------
export function initJobForm() {
  const form = $("#job-form");
  if (!form) return;
  const job = form.dataset.job ? JSON.parse(form.dataset.job) : null;
  const editable = form.dataset.editable === "true";
  const task = taskForm(form);
  const f = triggerFields(form);
  const serverZone = form.dataset.serverTimezone;
  const list = $("#preview-times", form);
  const status = $("#preview-status", form);
  const description = $("#preview-description", form);
  const useMine = $("#use-my-tz", form);
  const input = (id) => $(`#${id}`, form);

  try {
    const zones = Intl.supportedValuesOf ? Intl.supportedValuesOf("timeZone") : [];
    $("#tz-list", form).replaceChildren(...zones.map((z) => el("option", { value: z })));
  } catch (_) { /* an old browser: the field is plain text */ }
  if (editable && viewerZone && viewerZone !== serverZone) {
    useMine.hidden = false;
    useMine.textContent = `Use mine (${viewerZone})`;
    useMine.addEventListener("click", () => { f.zone.value = viewerZone; schedulePreview(); });
  }
  $$(".chip[data-cron]", form).forEach((chip) => chip.addEventListener("click", () => {
    f.expr.value = chip.dataset.cron;
    schedulePreview();
    f.expr.focus();
  }));

  /* Everything the form says, as the API takes it: {body, problems}. */
  function read() {
    const problems = [];
    const body = { task: input("task").value };
    if (!body.task) problems.push({ field: "task", message: "choose a task" });
    const args = task.collect();
    body.kwargs = args.kwargs;
    problems.push(...args.problems);
    const trigger = readTrigger(f, job && job.trigger);
    body.trigger = trigger.spec;
    problems.push(...trigger.problems);
    const name = input("job-name").value.trim();
    if (name) body.name = name;
    else if (job) body.name = job.id;  // a job without a name shows its id
    if (!job && input("job-id").value.trim()) body.id = input("job-id").value.trim();
    const maxInstances = readNumber(input("job-max-instances"), "max_instances", problems, true);
    if (maxInstances !== undefined) body.max_instances = maxInstances;
    const grace = readNumber(input("job-grace"), "misfire_grace_time", problems);
    if (grace !== undefined) body.misfire_grace_time = grace;
    if (input("job-coalesce").value) body.coalesce = input("job-coalesce").value === "true";
    if (!job && input("job-paused").checked) body.paused = true;
    return { body, problems };
  }

  // -- preview ----------------------------------------------------------------------------
  let sequence = 0;
  let timer = null;
  function schedulePreview() {
    clearTimeout(timer);
    timer = setTimeout(() => { timer = null; preview(); }, 250);
  }
  /* A preview still waiting for the typing to stop is shown now, never after a save. */
  function previewNow() {
    if (timer === null) return;
    clearTimeout(timer);
    timer = null;
    preview();
  }

  function clearTriggerErrors() {
    $$('[data-error-for^="trigger"]', form).forEach((node) => { node.textContent = ""; });
    $$('[data-field^="trigger"][aria-invalid]', form).forEach((node) => node.removeAttribute("aria-invalid"));
  }

  function markTriggerErrors(problems, usesExpression) {
    for (const problem of onCronInput(problems, usesExpression)) {
      const node = form.querySelector(`[data-error-for="${CSS.escape(problem.field)}"]`)
        || form.querySelector('[data-error-for="trigger"]');
      const shown = node.textContent ? node.textContent.split("; ") : [];
      if (!shown.includes(problem.message)) node.textContent = [...shown, problem.message].join("; ");
      const field = form.querySelector(`[data-field="${CSS.escape(problem.field)}"]`);
      if (field) field.setAttribute("aria-invalid", "true");
    }
  }

  function showTimes(times, zone) {
    list.replaceChildren(...times.map((iso) => el("li", {},
      timeNode(iso),
      zone !== viewerZone ? el("div", { class: "muted small", text: `${formatTime(iso, zone)} in ${zone}` }) : null)));
  }

  async function preview() {
    const mine = ++sequence;
    const type = showPanel(f);
    const { spec, problems, blank } = readTrigger(f, job && job.trigger);
    clearTriggerErrors();
    if (blank || problems.length) {
      list.replaceChildren();
      description.textContent = "";
      status.textContent = blank ? PROMPTS[type] : "Fix the schedule to see when it fires.";
      if (!blank) markTriggerErrors(problems, Boolean(spec.expr));
      return;
    }
    status.textContent = "Working it out…";
    try {
      const data = await api("POST", "/api/triggers/preview", { trigger: spec, count: 5 });
      if (mine !== sequence) return;
      description.textContent = data.description || "";
      showTimes(data.fire_times, type === "cron" ? spec.timezone || serverZone : viewerZone);
      status.textContent = data.fire_times.length ? `Shown in your time zone, ${viewerZone}.`
        : type === "date" ? "This time has passed: it would never fire." : "This schedule never fires.";
    } catch (error) {
      if (mine !== sequence) return;
      list.replaceChildren();
      description.textContent = "";
      status.textContent = "Fix the schedule to see when it fires.";
      markTriggerErrors(error.details || [], Boolean(spec.expr));
      if (!(error.details || []).length) status.textContent = error.message;
    }
  }

  /* A viewer may not POST a preview: the job's own next run is what there is to show. */
  function showNextRun() {
    description.textContent = job.trigger.description || "";
    $(".preview h3", form).textContent = "Next run";
    showTimes(job.next_run_time ? [job.next_run_time] : [], viewerZone);
    status.textContent = job.paused ? "Paused: it does not run until it is resumed."
      : job.next_run_time ? `Shown in your time zone, ${viewerZone}.` : "It will not run again.";
  }

  f.types.forEach((radio) => radio.addEventListener("change", schedulePreview));
  for (const node of [f.expr, f.zone, f.start, f.end, f.runDate, ...Object.values(f.units)]) {
    node.addEventListener("input", schedulePreview);
    node.addEventListener("change", schedulePreview);
  }

  // -- filling an existing job, then saving -----------------------------------------------
  let baseline = null;
  const snapshot = (body) => Object.fromEntries(EDITABLE.map((key) => [key, JSON.stringify(body[key])]));
  const loaded = (async () => {
    if (job) {
      input("job-name").value = job.name === job.id ? "" : job.name;
      input("job-id").value = job.id;
      fillTrigger(f, job.trigger);
      if (job.max_instances !== null) input("job-max-instances").value = String(job.max_instances);
      if (job.misfire_grace_time !== null) input("job-grace").value = String(job.misfire_grace_time);
      input("job-coalesce").value = job.coalesce === true ? "true" : job.coalesce === false ? "false" : "";
      await task.ready;
      task.fill(job.kwargs);
      if (!(await task.known()) && Object.keys(job.kwargs || {}).length) {
        // No schema to build fields from: the stored arguments are shown as they are, and kept.
        $(".kwargs-body", form).append(el("pre", { class: "code", text: JSON.stringify(job.kwargs, null, 2) }));
      }
      baseline = snapshot(read().body);
    }
    showPanel(f);
    if (editable) await preview();
    else if (job) showNextRun();
    form.dataset.ready = "true";  // for the browser tests: filled and previewed
  })();

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!editable) return;
    previewNow();
    const submit = $('button[type="submit"]', form);
    await busy(submit, async () => {
      await loaded;
      const { body, problems } = read();
      if (problems.length) { showErrors(form, onCronInput(problems, Boolean(body.trigger.expr))); return; }
      try {
        if (!job) {
          const created = await api("POST", "/api/jobs", body);
          flashAfterNavigation(`Created the job ${created.name}: ${created.trigger.description}.`, "success");
          location.assign(url(`/jobs?created=${encodeURIComponent(created.id)}`));
          return;
        }
        const now = snapshot(body);
        const changes = Object.fromEntries(EDITABLE.filter((key) => body[key] !== undefined && now[key] !== baseline[key])
          .map((key) => [key, body[key]]));
        if (!Object.keys(changes).length) {
          clearErrors(form);
          flash("Nothing to save: no field was changed.", "info");
          return;
        }
        const saved = await api("PATCH", `/api/jobs/${encodeURIComponent(job.id)}`, changes);
        flashAfterNavigation(`Saved ${saved.name}: ${saved.trigger.description}.`, "success");
        location.assign(url(`/jobs/${encodeURIComponent(saved.id)}/edit`));
      } catch (error) {
        showErrors(form, onCronInput(error.details || [], Boolean(body.trigger.expr)), error.message);
      }
    });
  });
}
