// "New sweep" (#/sweeps/new?from=<job>): a hyperparameter sweep whose base job is that job's
// configuration (as "run again" pre-fills the submit form), a search space as JSON (pre-filled
// with the job's learning rate, a decade either way, log-uniform), the metric (offered from the
// job's metrics), mode, trials, concurrency, search and early stopping. POST /v1/sweeps; the API's
// 422 is shown next to the form (at the field it names, and whole under it); on success the
// sweep's page.

import { ApiError, get, post } from "./api.js";
import { groupOf } from "./charts.js";
import { h } from "./dom.js";
import { field as formField, readJsonObjects, showErrors } from "./forms.js";
import * as session from "./session.js";

// the job fields a sweep's base job carries (JobCreate's, less project_id, register_as, resume_from)
const BASE_FIELDS = ["framework", "task_type", "model_name", "dataset_id", "dataset_version", "epochs", "batch_size",
  "learning_rate", "image_size", "workers", "placement_strategy", "num_gpus", "num_cpus", "memory_mb", "max_attempts",
  "config", "advanced_config"];

export function baseJob(job) {
  const out = {};
  for (const k of BASE_FIELDS) if (job[k] !== null && job[k] !== undefined) out[k] = job[k];
  return out;
}

const round = (v) => Number(v.toPrecision(3));

export function exampleSpace(job) {
  const lr = typeof job.learning_rate === "number" && job.learning_rate > 0 ? job.learning_rate : 0.01;
  return { learning_rate: { loguniform: [round(lr / 10), round(Math.min(lr * 10, 10))] } };
}

// the job's metric names, the quality ones first (a sweep maximizes accuracy rather than a loss)
export function metricNames(job) {
  const names = [...new Set([...Object.keys(job.final_metrics || {}), ...Object.keys(job.latest_metrics || {})])];
  const rank = (n) => ({ Quality: 0, Other: 1, Losses: 2, "Learning rate": 3 })[groupOf(n)] ?? 1;
  return names.sort((a, b) => rank(a) - rank(b));
}

export const modeFor = (metric) => (/loss|error|err$/i.test(metric) ? "min" : "max");

const field = (name, label, control, hint) => formField(name, label, control, hint, "s");

export function render(view, query) {
  const from = query.get("from");
  if (!session.canSubmitSomewhere()) {
    view.append(h("div", { class: "card", id: "sweep-form-none" }, h("h1", {}, "New sweep"),
      h("p", {}, "Your role lets you start sweeps in no project: a viewer reads only.")));
    return null;
  }
  const name = h("input", { required: true, maxlength: 128, autocomplete: "off" });
  const { control: project, extra: projects } = session.projectControl("s-project_id");
  const metric = h("input", { required: true, list: "sweep-metric-options", autocomplete: "off", placeholder: "e.g. mAP50" });
  const metrics = h("datalist", { id: "sweep-metric-options" });
  const mode = h("select", {}, h("option", { value: "max" }, "max (higher is better)"), h("option", { value: "min" }, "min (lower is better)"));
  const numTrials = h("input", { type: "number", min: 1, max: 1000, step: 1, value: 8 });
  const maxConcurrent = h("input", { type: "number", min: 1, max: 64, step: 1, value: 2 });
  const search = h("select", {}, [["random", "random"], ["grid", "grid (every combination of the choices)"], ["optuna", "optuna (TPE)"]]
    .map(([v, t]) => h("option", { value: v }, t)));
  const scheduler = h("select", {}, [["", "none: every trial runs its epochs"], ["asha", "ASHA (successive halving)"], ["median", "median stopping"]]
    .map(([v, t]) => h("option", { value: v }, t)));
  const grace = h("input", { type: "number", min: 1, step: 1, value: 1 });
  const registerBest = h("input", { placeholder: "none", pattern: "[A-Za-z0-9][A-Za-z0-9._\\-]{0,127}", autocomplete: "off" });
  const space = h("textarea", { rows: 6, spellcheck: false });
  const job = h("textarea", { rows: 12, spellcheck: false });
  const formError = h("p", { class: "error", role: "alert", id: "sweep-form-error" });
  const submit = h("button", { type: "submit", class: "primary", id: "submit-sweep" }, "Start sweep");
  const form = h("form", { class: "card submit", id: "sweep-form", novalidate: true },
    h("h1", {}, "New sweep"),
    from ? h("p", { class: "muted" }, "Its base job is job ", h("a", { href: `#/jobs/${encodeURIComponent(from)}`, class: "mono" }, from),
      "; every trial is that job with the values the search picks from the space.") : null,
    h("div", { class: "fields" },
      field("name", "Name", name), field("project_id", "Project", project), projects,
      field("metric", "Metric", metric, "reported by the trainer every epoch"), metrics, field("mode", "Mode", mode),
      field("search", "Search", search), field("num_trials", "Trials", numTrials, "random and optuna; grid runs every combination once"),
      field("max_concurrent", "Trials at once", maxConcurrent),
      field("scheduler", "Early stopping", scheduler), field("grace_period", "Grace period (epochs)", grace, "epochs every trial runs before it may be stopped"),
      field("register_best_as", "Register the best model as", registerBest, "a name in the MLflow Model Registry")),
    field("space", "Search space (JSON: path → {\"choice\": [...]}, {\"uniform\": [lo, hi]}, {\"loguniform\": [lo, hi]} or {\"int\": [lo, hi]})", space,
      "paths: a job field (learning_rate, batch_size, …), config.<key>, advanced_config.<key>"),
    field("job", "Base job (JSON)", job),
    formError, submit);
  view.append(form);
  const syncGrace = () => { grace.disabled = !scheduler.value; };
  scheduler.addEventListener("change", syncGrace);
  syncGrace();
  let modeTouched = false;
  mode.addEventListener("change", () => { modeTouched = true; });
  metric.addEventListener("change", () => { if (!modeTouched) mode.value = modeFor(metric.value); });
  space.value = JSON.stringify(exampleSpace({}), null, 2);
  job.value = "{}";

  (async () => {
    if (!from) return;
    let source;
    try { source = await get(`/v1/jobs/${encodeURIComponent(from)}`); } catch (err) { formError.textContent = err.message; return; }
    name.value = `${source.model_name}-sweep`.slice(0, 128);
    if (session.isPlatformAdmin() || session.can("submit", source.project_id)) project.value = source.project_id;
    job.value = JSON.stringify(baseJob(source), null, 2);
    space.value = JSON.stringify(exampleSpace(source), null, 2);
    const names = metricNames(source);
    metrics.append(...names.map((n) => h("option", { value: n })));
    if (names.length) { metric.value = names[0]; mode.value = modeFor(names[0]); }
    if ((source.epochs ?? 1) > 2) scheduler.value = "asha";
    syncGrace();
  })();

  function intOf(el, key, errors) {
    const n = Number(el.value.trim());
    if (el.value.trim() === "" || !Number.isInteger(n)) { errors[key] = "must be a whole number"; return undefined; }
    return n;
  }

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    formError.textContent = "";
    const errors = {};
    const body = {
      name: name.value.trim(), project_id: project.value.trim() || "default", metric: metric.value.trim(), mode: mode.value,
      search: search.value, num_trials: intOf(numTrials, "num_trials", errors), max_concurrent: intOf(maxConcurrent, "max_concurrent", errors),
      scheduler: scheduler.value ? { type: scheduler.value, grace_period: intOf(grace, "grace_period", errors) } : null,
    };
    if (registerBest.value.trim()) body.register_best_as = registerBest.value.trim();
    if (!body.name) errors.name = "a sweep needs a name";
    if (!body.metric) errors.metric = "the metric the search optimizes";
    readJsonObjects([["space", space], ["job", job]], body, errors);
    showErrors(form, errors);
    if (Object.keys(errors).length) return;
    submit.disabled = true;
    try {
      const sweep = await post("/v1/sweeps", body);
      location.hash = `#/sweeps/${encodeURIComponent(sweep.id)}`;
    } catch (err) {
      if (err instanceof ApiError && err.status === 422) {
        // at the field: loc ["body", "space", "learning_rate"] -> space; "scheduler.grace_period" -> grace_period
        const placed = {};
        for (const e of Array.isArray(err.detail) ? err.detail : []) {
          const loc = (e.loc || []).slice(1).map(String);
          const path = loc.join(".");
          const key = path.startsWith("scheduler.grace_period") ? "grace_period" : String(loc[0] || "").split(".")[0];
          const msg = loc.length > 1 || path.includes(".") ? `${path}: ${e.msg}` : e.msg;
          placed[key] = placed[key] ? `${placed[key]}; ${msg}` : msg;
        }
        showErrors(form, placed);
      }
      formError.textContent = err.message;  // the API's whole answer, under the form
    } finally {
      submit.disabled = false;
    }
  });
  return null;
}
