// The submit form: trainer, task and model from GET /v1/trainers, the dataset from the datasets
// API (or any id placed in S3), the usual hyperparameters, the workers (a gang placed all or
// nothing) and the resources of each worker, the priority in the queue, and config as JSON.
// #/submit?from=<job> pre-fills it from that job ("run again"). The API's 422 details are shown
// at the field each one names. The project: one where the user's role is member or admin (a
// platform admin may type any), the header's picker's first.

import { ApiError, get, pages, post } from "./api.js";
import { put, h } from "./dom.js";
import { field, readJsonObjects, showErrors } from "./forms.js";
import { trainers } from "./job.js";
import { PRIORITY_LEVELS, priorityName } from "./queue.js";
import * as session from "./session.js";

const NUMBERS = {
  epochs: { min: 1, step: 1, value: 10, int: true }, batch_size: { min: 1, step: 1, value: 16, int: true },
  image_size: { min: 8, step: 32, value: 640, int: true }, learning_rate: { min: 0, step: "any", value: 0.01 },
  workers: { min: 1, max: 64, step: 1, value: 1, int: true },
  num_gpus: { min: 0, step: "any", value: 0 }, num_cpus: { min: 0, step: "any", value: "" },
  memory_mb: { min: 1, step: 1, value: "", int: true }, max_attempts: { min: 1, step: 1, value: "", int: true },
};
// a gang's workers are placed as one Ray placement group (the API's placement_strategy)
const STRATEGIES = [["PACK", "PACK: as few nodes as fit them"], ["SPREAD", "SPREAD: as many nodes as there are"]];

export function render(view, query) {
  if (!session.canSubmitSomewhere()) {
    view.append(h("div", { class: "card", id: "submit-none" }, h("h1", {}, "New training job"),
      h("p", {}, "Your role lets you submit jobs in no project: a viewer reads only. A project's admin can make you a member.")));
    return;
  }
  const from = query.get("from");
  const framework = h("select", { required: true });
  const task = h("select", { required: true });
  const model = h("input", { required: true, list: "model-options", autocomplete: "off", placeholder: "e.g. yolo11n" });
  const models = h("datalist", { id: "model-options" });
  const dataset = h("input", { required: true, list: "dataset-options", autocomplete: "off", placeholder: "dataset id" });
  const datasets = h("datalist", { id: "dataset-options" });
  const version = h("input", { placeholder: "newest valid version", pattern: "[0-9a-f]{8,64}", autocomplete: "off" });
  const { control: project, extra: projects } = session.projectControl("f-project_id");
  const registerAs = h("input", { placeholder: "none", pattern: "[A-Za-z0-9][A-Za-z0-9._\\-]{0,127}", autocomplete: "off" });
  const numbers = Object.fromEntries(Object.entries(NUMBERS).map(([k, o]) => [k, h("input", { type: "number", min: o.min, max: o.max, step: o.step, value: o.value })]));
  const strategy = h("select", {}, STRATEGIES.map(([value, text]) => h("option", { value }, text)));
  const priority = h("select", {}, PRIORITY_LEVELS.map(([name, value]) => h("option", { value, selected: name === "normal" }, name)));
  const config = h("textarea", { rows: 4, spellcheck: false }, "{}");
  const advanced = h("textarea", { rows: 3, spellcheck: false }, "{}");
  const formError = h("p", { class: "error", role: "alert", id: "form-error" });
  const submit = h("button", { type: "submit", class: "primary", id: "submit-job" }, "Start training");
  const form = h("form", { class: "card submit", id: "submit-form", novalidate: true },
    h("h1", {}, from ? "Run again" : "New training job"),
    from ? h("p", { class: "muted" }, "Pre-filled from job ", h("a", { href: `#/jobs/${encodeURIComponent(from)}`, class: "mono" }, from)) : null,
    h("div", { class: "fields" },
      field("framework", "Trainer", framework), field("task_type", "Task", task), field("model_name", "Model", model), models,
      field("dataset_id", "Dataset", dataset), datasets, field("dataset_version", "Dataset version", version),
      field("project_id", "Project", project), projects,
      field("priority", "Priority", priority, "higher goes first in the queue, and may preempt lower"),
      field("register_as", "Register model as", registerAs, "a name in the MLflow Model Registry"),
      field("epochs", "Epochs", numbers.epochs), field("batch_size", "Batch size", numbers.batch_size),
      field("image_size", "Image size", numbers.image_size), field("learning_rate", "Learning rate", numbers.learning_rate),
      field("workers", "Workers", numbers.workers, "a gang placed all or nothing; the resources below are per worker"),
      field("placement_strategy", "Placement of the workers", strategy),
      field("num_gpus", "GPUs per worker", numbers.num_gpus), field("num_cpus", "CPUs per worker", numbers.num_cpus, "default: the trainer's"),
      field("memory_mb", "Memory per worker (MiB)", numbers.memory_mb, "default: the trainer's"),
      field("max_attempts", "Max attempts", numbers.max_attempts, "default: the platform's")),
    field("config", "Framework arguments (config, JSON object)", config),
    field("advanced_config", "Advanced config (JSON object)", advanced),
    formError, submit);
  view.append(form);

  let known = [];
  function fillTasks(selectedTask) {
    const t = known.find((x) => x.name === framework.value);
    put(task, ...(t?.task_types || []).map((name) => h("option", { value: name, selected: name === selectedTask }, name)));
    put(models, ...(t?.models || []).filter((m) => !/[*?[]/.test(m)).map((m) => h("option", { value: m })));
    model.placeholder = t ? `e.g. ${t.models.join(", ")}` : "";
  }
  framework.addEventListener("change", () => fillTasks());

  (async () => {
    known = await trainers();
    framework.append(...known.map((t) => h("option", { value: t.name }, t.name)));
    let job = null;
    if (from) {
      try { job = await get(`/v1/jobs/${encodeURIComponent(from)}`); } catch (err) { formError.textContent = err.message; }
    }
    if (job) {
      if (!known.some((t) => t.name === job.framework)) framework.append(h("option", { value: job.framework }, job.framework));
      framework.value = job.framework;
      fillTasks(job.task_type);
      model.value = job.model_name;
      dataset.value = job.dataset_id;
      version.value = job.dataset_version || "";
      if (session.isPlatformAdmin() || session.can("submit", job.project_id)) project.value = job.project_id;
      registerAs.value = job.register_as || "";
      for (const k of Object.keys(NUMBERS)) if (job[k] !== null && job[k] !== undefined) numbers[k].value = job[k];
      if (STRATEGIES.some(([value]) => value === job.placement_strategy)) strategy.value = job.placement_strategy;
      if (typeof job.priority === "number") {  // a number between the levels is kept as it was
        if (!PRIORITY_LEVELS.some(([, value]) => value === job.priority)) priority.append(h("option", { value: job.priority }, priorityName(job.priority)));
        priority.value = String(job.priority);
      }
      config.value = JSON.stringify(job.config, null, 2);
      advanced.value = JSON.stringify(job.advanced_config, null, 2);
    } else {
      fillTasks();
    }
    try {
      for await (const items of pages("/v1/datasets", { limit: 200 })) {
        datasets.append(...items.map((d) => h("option", { value: d.id }, d.latest_valid_version ? `valid ${d.latest_valid_version.slice(0, 8)}` : "no valid version")));
      }
    } catch { /* the datasets API is optional: any id placed in S3 still works */ }
  })();

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    formError.textContent = "";
    const errors = {};
    const body = {
      framework: framework.value, task_type: task.value, model_name: model.value.trim(), dataset_id: dataset.value.trim(),
      project_id: project.value.trim() || "default",
    };
    if (version.value.trim()) body.dataset_version = version.value.trim();
    if (registerAs.value.trim()) body.register_as = registerAs.value.trim();
    body.placement_strategy = strategy.value;
    body.priority = Number(priority.value);
    for (const [k, o] of Object.entries(NUMBERS)) {
      const raw = numbers[k].value.trim();
      if (raw === "") continue;
      const n = Number(raw);
      if (!Number.isFinite(n) || (o.int && !Number.isInteger(n))) errors[k] = o.int ? "must be a whole number" : "must be a number";
      else body[k] = n;
    }
    readJsonObjects([["config", config], ["advanced_config", advanced]], body, errors);
    showErrors(form, errors);
    if (Object.keys(errors).length) return;
    submit.disabled = true;
    try {
      const job = await post("/v1/jobs", body);
      location.hash = `#/jobs/${encodeURIComponent(job.id)}`;
    } catch (err) {
      if (err instanceof ApiError && err.status === 422) {
        const fields = err.fieldErrors();
        showErrors(form, fields);
        const unplaced = Object.keys(fields).filter((k) => !form.querySelector(`.field[data-field="${CSS.escape(k)}"]`));
        formError.textContent = unplaced.length ? unplaced.map((k) => `${k}: ${fields[k]}`).join("; ") : "Please correct the fields marked.";
      } else {
        formError.textContent = err.message;
      }
    } finally {
      submit.disabled = false;
    }
  });
}
