/* Forms built from a task's JSON Schema (GET /api/tasks): the argument fields of "Run a task"
 * and of the job form (jobform.js), read back into kwargs and filled from a job's kwargs, and
 * the problems the API names (kwargs.seconds, trigger.minute) shown under their fields. */
import { $, $$, url, el, api, busy, reportError } from "./core.js";

// -- forms from a task's JSON Schema ---------------------------------------------------
let tasksPromise = null;
function loadTasks() {
  if (!tasksPromise) {
    tasksPromise = api("GET", "/api/tasks").then((data) => new Map(data.items.map((t) => [t.name, t])));
  }
  return tasksPromise;
}

function resolveRef(schema, root) {
  if (schema && schema.$ref) {
    const name = schema.$ref.split("/").pop();
    return ((root.$defs || root.definitions || {})[name]) || {};
  }
  return schema || {};
}

/* What input a property gets: string, number, integer, boolean, enum, or JSON text. */
function describeProperty(raw, root) {
  let prop = resolveRef(raw, root);
  let nullable = false;
  if (Array.isArray(prop.anyOf)) {
    const options = prop.anyOf.map((o) => resolveRef(o, root));
    const concrete = options.filter((o) => o.type !== "null");
    nullable = concrete.length < options.length;
    if (concrete.length !== 1) return { kind: "json", prop, nullable };
    prop = { ...concrete[0], title: prop.title, description: prop.description, default: prop.default };
  }
  if (Array.isArray(prop.enum)) return { kind: "enum", prop, nullable };
  if (prop.const !== undefined) return { kind: "enum", prop: { ...prop, enum: [prop.const] }, nullable };
  const kinds = { string: "string", number: "number", integer: "integer", boolean: "boolean" };
  return { kind: kinds[prop.type] || "json", prop, nullable };
}

function helpText(name, info, required) {
  const { kind, prop } = info;
  const parts = [];
  if (prop.description) parts.push(prop.description);
  parts.push(kind === "json" ? "JSON value" : kind === "enum" ? "one of the choices" : kind);
  if (prop.minimum !== undefined && prop.maximum !== undefined) parts.push(`${prop.minimum} to ${prop.maximum}`);
  else if (prop.minimum !== undefined) parts.push(`at least ${prop.minimum}`);
  else if (prop.maximum !== undefined) parts.push(`at most ${prop.maximum}`);
  if (prop.exclusiveMinimum !== undefined) parts.push(`more than ${prop.exclusiveMinimum}`);
  if (prop.exclusiveMaximum !== undefined) parts.push(`less than ${prop.exclusiveMaximum}`);
  if (prop.minLength !== undefined) parts.push(`at least ${prop.minLength} characters`);
  if (prop.maxLength !== undefined) parts.push(`at most ${prop.maxLength} characters`);
  if (!required && prop.default !== undefined) parts.push(`default ${JSON.stringify(prop.default)}`);
  if (required) parts.push("required");
  return parts.join(" · ");
}

function buildArgumentField(name, info, required) {
  const { kind, prop } = info;
  const id = `arg-${name}`;
  const field = `kwargs.${name}`;
  const describedBy = `${id}-help ${id}-error`;
  const common = { id, "data-arg": name, "data-field": field, "data-kind": kind, "aria-describedby": describedBy };
  let input;
  if (kind === "boolean") {
    input = el("input", { ...common, type: "checkbox" });
    input.checked = prop.default === true;
  } else if (kind === "enum") {
    input = el("select", common);
    if (!required) input.append(el("option", { value: "", text: prop.default !== undefined ? `default (${prop.default})` : "not set" }));
    prop.enum.forEach((value, index) => input.append(el("option", { value: String(index), text: String(value) })));
  } else if (kind === "json") {
    input = el("textarea", { ...common, class: "mono", rows: 3, spellcheck: "false",
      placeholder: prop.default !== undefined ? JSON.stringify(prop.default) : '"text", 42, [1, 2] or {"a": 1}' });
  } else {
    const numeric = kind === "number" || kind === "integer";
    input = el("input", {
      ...common,
      type: numeric ? "number" : "text",
      step: kind === "integer" ? "1" : numeric ? "any" : null,
      inputmode: kind === "integer" ? "numeric" : numeric ? "decimal" : null,
      min: prop.minimum, max: prop.maximum, minlength: prop.minLength, maxlength: prop.maxLength,
      placeholder: prop.default !== undefined && prop.default !== null ? `default: ${prop.default}` : null,
      required: required || null,
    });
  }
  const label = el("label", { for: id }, el("span", { class: "mono", text: name }),
    required ? null : el("span", { class: "optional", text: "optional" }));
  const help = el("p", { id: `${id}-help`, class: "help", text: helpText(name, info, required) });
  const error = el("p", { id: `${id}-error`, class: "field-error", "data-error-for": field });
  if (kind === "boolean") {
    return el("div", { class: "field field-check" }, input, label, help, error);
  }
  return el("div", { class: "field" }, label, input, help, error);
}

/* Reads the generated fields back into kwargs; problems are {field, message}. */
function collectArguments(container, schema) {
  const kwargs = {};
  const problems = [];
  const required = new Set(schema.required || []);
  for (const [name, raw] of Object.entries(schema.properties || {})) {
    const info = describeProperty(raw, schema);
    const input = container.querySelector(`[data-arg="${CSS.escape(name)}"]`);
    if (!input) continue;
    const field = `kwargs.${name}`;
    const value = input.value;
    switch (info.kind) {
      case "boolean":
        kwargs[name] = input.checked;
        break;
      case "enum":
        if (value !== "") kwargs[name] = info.prop.enum[Number(value)];
        break;
      case "number":
      case "integer": {
        if (value.trim() === "") {
          if (input.validity && input.validity.badInput) problems.push({ field, message: "must be a number" });
          break;
        }
        const number = Number(value);
        if (!Number.isFinite(number)) problems.push({ field, message: "must be a number" });
        else if (info.kind === "integer" && !Number.isInteger(number)) problems.push({ field, message: "must be a whole number" });
        else kwargs[name] = number;
        break;
      }
      case "string":
        if (value !== "" || required.has(name)) kwargs[name] = value;
        break;
      default:
        if (value.trim() === "") break;
        try { kwargs[name] = JSON.parse(value); } catch (_) {
          problems.push({ field, message: "is not valid JSON (text needs double quotes)" });
        }
    }
  }
  return { kwargs, problems };
}

/* Puts a job's kwargs into the generated fields: the inverse of collectArguments. */
function fillArguments(container, schema, kwargs) {
  for (const [name, raw] of Object.entries(schema.properties || {})) {
    const input = container.querySelector(`[data-arg="${CSS.escape(name)}"]`);
    if (!input || !(name in kwargs)) continue;
    const value = kwargs[name];
    const info = describeProperty(raw, schema);
    if (info.kind === "boolean") input.checked = value === true;
    else if (info.kind === "enum") {
      const index = info.prop.enum.findIndex((choice) => JSON.stringify(choice) === JSON.stringify(value));
      input.value = index >= 0 ? String(index) : "";
    } else if (info.kind === "json") input.value = JSON.stringify(value);
    else input.value = value === null ? "" : String(value);
  }
}

export function clearErrors(form) {
  $$("[data-error-for]", form).forEach((node) => { node.textContent = ""; });
  $$("[aria-invalid]", form).forEach((node) => node.removeAttribute("aria-invalid"));
  const summary = $(".form-errors", form);
  if (summary) { summary.hidden = true; summary.replaceChildren(); }
}

/* Shows each problem under its field (kwargs.seconds, trigger.expr…), the rest on top. */
export function showErrors(form, problems, fallback) {
  clearErrors(form);
  const unplaced = [];
  const placed = [];
  let first = null;
  for (const problem of problems) {
    let field = String(problem.field || "");
    let target = null;
    while (field && !(target = form.querySelector(`[data-error-for="${CSS.escape(field)}"]`))) {
      field = field.includes(".") ? field.slice(0, field.lastIndexOf(".")) : "";
    }
    if (!target) { unplaced.push(problem); continue; }
    target.textContent = target.textContent ? `${target.textContent}; ${problem.message}` : problem.message;
    const input = form.querySelector(`[data-field="${CSS.escape(field)}"]`);
    placed.push({ ...problem, input });
    if (input) {
      input.setAttribute("aria-invalid", "true");
      const folded = input.closest("details");
      if (folded) folded.open = true;  // an error inside "Advanced" is never hidden
      if (!first && input.matches("input, select, textarea")) first = input;
    }
  }
  const summary = $(".form-errors", form);
  const items = placed.map((p) => {
    const text = `${p.field}: ${p.message}`;
    if (!p.input || !p.input.id) return el("li", { text });
    const link = el("a", { href: `#${p.input.id}`, text });
    link.addEventListener("click", (event) => { event.preventDefault(); p.input.focus(); });
    return el("li", {}, link);
  });
  items.push(...unplaced.map((p) => el("li", { text: p.field ? `${p.field}: ${p.message}` : p.message })));
  if (!items.length && fallback) items.push(el("li", { text: fallback }));
  if (summary && items.length) {
    summary.replaceChildren(el("p", { text: items.length === 1 ? "Please fix this problem:" : `Please fix these ${items.length} problems:` }),
      el("ul", {}, ...items));
    summary.hidden = false;
  }
  (first || summary || form).focus();
}

/* Text with `backticked` parts as <code>, as task docstrings write them. */
function withCode(text) {
  return String(text || "").split("`").map((part, i) => (i % 2 ? el("code", { text: part }) : part));
}

/* Wires a task <select> to the argument fields of the chosen task: `ready` resolves once the
   fields are built, `collect()` reads them ({kwargs, problems}), `fill(kwargs)` sets them,
   `known()` resolves to whether the chosen task is registered here. */
export function taskForm(form) {
  const select = $("#task", form);
  const fieldset = $("#kwargs-fields", form);
  const bodyNode = $(".kwargs-body", fieldset);
  const placeholder = $(".kwargs-placeholder", fieldset);
  const description = $("#task-description", form);
  let schema = { properties: {} };

  async function showTask() {
    const tasks = await loadTasks();
    const task = tasks.get(select.value);
    bodyNode.replaceChildren();
    schema = (task && task.parameters) || { properties: {} };
    description.replaceChildren(...withCode(task ? task.description : ""));
    if (!task) {
      placeholder.textContent = select.value
        ? `${select.value} is not registered in this deployment: its arguments have no fields here.`
        : "Choose a task to see its arguments.";
      placeholder.hidden = false;
      return;
    }
    const properties = Object.entries(schema.properties || {});
    placeholder.hidden = properties.length > 0;
    placeholder.textContent = "This task takes no arguments.";
    const required = new Set(schema.required || []);
    for (const [name, raw] of properties) {
      bodyNode.append(buildArgumentField(name, describeProperty(raw, schema), required.has(name)));
    }
  }

  select.addEventListener("change", () => {
    clearErrors(form);
    showTask().catch((error) => reportError(error, "Could not load the tasks"));
  });
  const ready = showTask().catch((error) => reportError(error, "Could not load the tasks"));
  return {
    ready,
    collect() { return collectArguments(bodyNode, schema); },
    known() { return loadTasks().then((tasks) => tasks.has(select.value)); },
    fill(kwargs) { fillArguments(bodyNode, schema, kwargs || {}); },
  };
}

export function initRunForm() {
  const form = $("#run-form");
  if (!form) return;
  const task = taskForm(form);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const submit = $('button[type="submit"]', form);
    await busy(submit, async () => {
      const taskName = $("#task", form).value;
      if (!taskName) { showErrors(form, [{ field: "task", message: "choose a task" }]); return; }
      const { kwargs, problems } = task.collect();
      if (problems.length) { showErrors(form, problems); return; }
      try {
        const run = await api("POST", "/api/runs", { task: taskName, kwargs });
        location.assign(url(`/runs/${run.id}`));
      } catch (error) {
        showErrors(form, error.details || [], error.message);
      }
    });
  });
}
