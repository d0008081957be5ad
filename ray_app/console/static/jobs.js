// The jobs list: newest first, filtered by state, project and framework, searched by id prefix,
// a page of 50 at a time (GET /v1/jobs with its cursor), kept live by the job-list stream
// (GET /v1/stream/jobs): a row changes in place, a new job that matches appears on top. The
// project is the header's picker (app.js puts it in the query); the API lists, and streams, the
// jobs of the user's own projects only.

import { ApiError, follow, get } from "./api.js";
import { clear, put, fmtTime, h, progressBar, setProgress, stateBadge, toast } from "./dom.js";
import * as session from "./session.js";

export const STATES = ["PENDING", "QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"];
const PAGE = 50;

function matches(job, filters) {
  return (!filters.state || job.state === filters.state)
    && (!filters.project_id || job.project_id === filters.project_id)
    && (!filters.framework || job.framework === filters.framework)
    && (!filters.id_prefix || job.id.startsWith(filters.id_prefix));
}

function epochText(job) {
  return job.epoch ? `${job.epoch}/${job.total_epochs ?? job.epochs}` : "";
}

function row(job, selected, onSelect) {
  const box = h("input", { type: "checkbox", "aria-label": `select ${job.id}`, checked: selected.has(job.id),
                           onchange: (ev) => onSelect(job.id, ev.target.checked) });
  // the column classes say what a phone keeps (console.css): state, id, progress and model
  return h("tr", { dataset: { id: job.id } },
    h("td", { class: "c-pick" }, box),
    h("td", { class: "c-id" }, h("a", { href: `#/jobs/${encodeURIComponent(job.id)}`, class: "mono" }, job.id)),
    h("td", { class: "c-state" }, stateBadge(job.state)),
    h("td", { class: "c-progress" }, progressBar(job.progress), h("span", { class: "muted small epoch" }, epochText(job))),
    h("td", { class: "c-model" }, job.model_name),
    h("td", { class: "c-trainer" }, `${job.framework} · ${job.task_type}`),
    h("td", { class: "c-project" }, job.project_id),
    h("td", { class: "c-dataset" }, job.dataset_id),
    h("td", { class: "c-created muted small" }, fmtTime(job.created_at)));
}

function update(tr, job) {
  const state = tr.querySelector(".c-state");
  if (state.textContent !== job.state) put(state, stateBadge(job.state));
  setProgress(tr.querySelector(".progress"), job.progress);
  tr.querySelector(".epoch").textContent = epochText(job);
}

export function render(view, query) {
  const filters = {
    state: query.get("state") || "", project_id: query.get("project_id") || "",
    framework: query.get("framework") || "", id_prefix: query.get("id_prefix") || "",
  };
  const cursor = query.get("cursor") || "";
  const limit = Math.min(Math.max(Number(query.get("limit")) || PAGE, 1), 500);
  const selected = new Set();
  const compareBtn = h("button", { type: "button", disabled: true, id: "compare-selected" }, "Compare selected");
  const onSelect = (id, on) => {
    if (on) selected.add(id); else selected.delete(id);
    compareBtn.disabled = selected.size < 2 || selected.size > 5;
    compareBtn.textContent = `Compare selected (${selected.size})`;
  };
  compareBtn.addEventListener("click", () => { location.hash = `#/compare?ids=${[...selected].map(encodeURIComponent).join(",")}`; });

  const stateSel = h("select", { name: "state", "aria-label": "state" }, h("option", { value: "" }, "any state"),
    STATES.map((s) => h("option", { value: s, selected: s === filters.state }, s)));
  const frameworkSel = h("select", { name: "framework", "aria-label": "framework" }, h("option", { value: "" }, "any framework"));
  if (filters.framework) frameworkSel.append(h("option", { value: filters.framework, selected: true }, filters.framework));
  const search = h("input", { name: "id_prefix", placeholder: "job id starts with…", value: filters.id_prefix,
                              "aria-label": "job id", pattern: "[A-Za-z0-9_\\-]{1,64}" });
  // a new job: only where the user may submit (the project shown, or any when all are)
  const canSubmit = filters.project_id ? session.can("submit", filters.project_id) : session.canSubmitSomewhere();
  const form = h("form", { class: "filters", id: "job-filters" }, stateSel, frameworkSel, search,
    h("button", { type: "submit" }, "Filter"), h("span", { class: "spacer" }), compareBtn,
    canSubmit ? h("a", { class: "button primary", href: "#/submit", id: "new-job" }, "New job") : null);
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const q = new URLSearchParams();
    if (filters.project_id) q.set("project_id", filters.project_id);  // the picker's
    for (const el of [stateSel, frameworkSel, search]) if (el.value.trim()) q.set(el.name, el.value.trim());
    location.hash = `#/jobs?${q}`;
  });
  get("/v1/trainers").then((trainers) => {
    for (const t of trainers) if (t.name !== filters.framework) frameworkSel.append(h("option", { value: t.name }, t.name));
  }).catch(() => {});

  const tbody = h("tbody", { id: "jobs-body" });
  const status = h("p", { class: "muted", id: "jobs-status" }, "Loading…");
  const pager = h("div", { class: "pager" });
  const scope = filters.project_id ? ["project ", h("span", { class: "mono" }, filters.project_id)]
    : session.isPlatformAdmin() ? "every project" : "all your projects";
  view.append(h("h1", {}, "Jobs"), h("p", { class: "muted small", id: "jobs-scope" }, scope), form,
    h("div", { class: "table-wrap" }, h("table", { class: "jobs" },
      h("thead", {}, h("tr", {}, h("th", {}), h("th", {}, "Job"), h("th", {}, "State"), h("th", {}, "Progress"),
        h("th", {}, "Model"), h("th", {}, "Trainer"), h("th", {}, "Project"), h("th", {}, "Dataset"), h("th", {}, "Created"))),
      tbody)), status, pager);

  const rows = new Map();
  const apiQuery = { ...filters, limit, cursor };
  let loaded = false;
  const pending = [];

  function apply(job) {
    const tr = rows.get(job.id);
    if (tr) {
      if (!matches(job, filters)) { tr.remove(); rows.delete(job.id); return; }
      update(tr, job);
    } else if (!cursor && matches(job, filters)) {
      const fresh = row(job, selected, onSelect);
      rows.set(job.id, fresh);
      tbody.prepend(fresh);
      while (tbody.children.length > limit) { const last = tbody.lastElementChild; rows.delete(last.dataset.id); last.remove(); }
      status.textContent = "";
    }
  }

  async function load() {
    try {
      const page = await get("/v1/jobs", apiQuery);
      for (const job of page.items) {
        const tr = row(job, selected, onSelect);
        rows.set(job.id, tr);
        tbody.append(tr);
      }
      status.textContent = page.items.length ? "" : "No jobs match.";
      clear(pager);
      if (cursor) pager.append(h("a", { class: "button", href: `#/jobs?${new URLSearchParams(strip({ ...filters, limit }))}` }, "⇤ Newest"));
      if (page.next_cursor) {
        pager.append(h("a", { class: "button", id: "next-page",
                              href: `#/jobs?${new URLSearchParams({ ...strip({ ...filters, limit }), cursor: page.next_cursor })}` }, "Older →"));
      }
      loaded = true;
      pending.splice(0).forEach(apply);
    } catch (err) {
      status.textContent = err instanceof ApiError ? err.message : `Cannot load jobs: ${err.message}`;
      status.className = "error";
    }
  }

  // the stream first: changes from its start on are applied over the page loaded after `ready`
  let started = false;
  const stop = follow("/v1/stream/jobs", {
    ready: () => { if (!started) { started = true; load(); } },
    job: (job) => { if (loaded) apply(job); else pending.push(job); },
    error: (err) => { if (!started) { started = true; load(); } toast(`Live updates unavailable: ${err.message}`, "error"); },
  });
  // a stream that cannot open at all (an older API) must not keep the list from loading
  const fallback = setTimeout(() => { if (!started) { started = true; load(); } }, 3000);
  return () => { clearTimeout(fallback); stop(); };
}

function strip(filters) {
  return Object.fromEntries(Object.entries(filters).filter(([, v]) => v !== "" && v !== PAGE));
}
