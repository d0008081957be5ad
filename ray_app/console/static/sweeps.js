// The sweeps list (#/sweeps): newest first, filtered by state and by the header's project picker
// (app.js puts it in the query), a page of 50 at a time (GET /v1/sweeps with its cursor). While
// any sweep shown is live (PENDING, RUNNING) the page is read again every few seconds.

import { ApiError, get } from "./api.js";
import { clear, fmtNumber, fmtTime, h, put, stateBadge } from "./dom.js";
import * as session from "./session.js";

export const SWEEP_STATES = ["PENDING", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"];
export const LIVE = new Set(["PENDING", "RUNNING"]);
export const POLL_MS = 3000;
const PAGE = 50;
// the order trial counts are shown in
export const STATUSES = ["pending", "running", "succeeded", "failed", "stopped_early", "cancelled"];

export function statusText(status) {
  return String(status).replace("_", " ");
}

// a trial's status, a stop by the scheduler visibly apart from a cancel or a failure
export function statusBadge(status) {
  return h("span", { class: `trial-status ts-${status}`, "data-status": status }, statusText(status));
}

// "3 succeeded · 1 stopped early · 1 running"
export function countsText(counts) {
  const known = STATUSES.filter((s) => counts?.[s]);
  const other = Object.keys(counts || {}).filter((s) => !STATUSES.includes(s) && counts[s]);
  return [...known, ...other].map((s) => `${counts[s]} ${statusText(s)}`).join(" · ");
}

export function trialsDone(sweep) {
  const counts = sweep.counts || {};
  return Object.values(counts).reduce((a, n) => a + n, 0);
}

function row(s) {
  return h("tr", { dataset: { id: s.id } },
    h("td", { class: "c-name" }, h("a", { href: `#/sweeps/${encodeURIComponent(s.id)}` }, s.name)),
    h("td", { class: "c-state" }, stateBadge(s.state)),
    h("td", { class: "c-project" }, s.project_id),
    h("td", { class: "c-metric" }, h("span", { class: "mono" }, s.metric), " ", h("span", { class: "muted small" }, s.mode)),
    h("td", { class: "c-trials" }, h("span", { class: "trials-total" }, `${trialsDone(s)}/${s.num_trials}`), " ",
      h("span", { class: "muted small counts" }, countsText(s.counts))),
    h("td", { class: "c-best" }, s.best_job_id
      ? h("a", { href: `#/jobs/${encodeURIComponent(s.best_job_id)}`, title: `job ${s.best_job_id}` }, fmtNumber(s.best_metric))
      : h("span", { class: "muted" }, "–")),
    h("td", { class: "c-created muted small" }, fmtTime(s.created_at)));
}

export function render(view, query) {
  const filters = { state: query.get("state") || "", project_id: query.get("project_id") || "" };
  const cursor = query.get("cursor") || "";
  const stateSel = h("select", { name: "state", "aria-label": "state", id: "sweep-state-filter" }, h("option", { value: "" }, "any state"),
    SWEEP_STATES.map((s) => h("option", { value: s, selected: s === filters.state }, s)));
  const form = h("form", { class: "filters", id: "sweep-filters" }, stateSel, h("button", { type: "submit" }, "Filter"));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const q = new URLSearchParams();
    if (filters.project_id) q.set("project_id", filters.project_id);
    if (stateSel.value) q.set("state", stateSel.value);
    location.hash = `#/sweeps?${q}`;
  });
  const tbody = h("tbody", { id: "sweeps-body" });
  const status = h("p", { class: "muted", id: "sweeps-status" }, "Loading…");
  const pager = h("div", { class: "pager" });
  const scope = filters.project_id ? ["project ", h("span", { class: "mono" }, filters.project_id)]
    : session.isPlatformAdmin() ? "every project" : "all your projects";
  view.append(h("h1", {}, "Sweeps"),
    h("p", { class: "muted small", id: "sweeps-scope" }, scope, " · a new sweep starts from a job's page (", h("em", {}, "New sweep"), ")"),
    form,
    h("div", { class: "table-wrap" }, h("table", { class: "sweeps" },
      h("thead", {}, h("tr", {}, h("th", {}, "Sweep"), h("th", {}, "State"), h("th", { class: "c-project" }, "Project"), h("th", {}, "Metric"),
        h("th", {}, "Trials"), h("th", {}, "Best"), h("th", { class: "c-created" }, "Created"))),
      tbody)), status, pager);

  let timer = null;
  let stopped = false;
  async function load() {
    timer = null;
    try {
      const page = await get("/v1/sweeps", { ...filters, cursor, limit: PAGE });
      if (stopped) return;
      put(tbody, page.items.map(row));
      status.textContent = page.items.length ? "" : "No sweeps match.";
      status.className = "muted";
      clear(pager);
      const base = Object.fromEntries(Object.entries(filters).filter(([, v]) => v));
      if (cursor) pager.append(h("a", { class: "button", href: `#/sweeps?${new URLSearchParams(base)}` }, "⇤ Newest"));
      if (page.next_cursor) {
        pager.append(h("a", { class: "button", id: "sweeps-next", href: `#/sweeps?${new URLSearchParams({ ...base, cursor: page.next_cursor })}` }, "Older →"));
      }
      view.dataset.live = String(page.items.some((s) => LIVE.has(s.state)));
      if (page.items.some((s) => LIVE.has(s.state))) timer = setTimeout(load, POLL_MS);
    } catch (err) {
      if (stopped) return;
      status.textContent = err instanceof ApiError ? err.message : `Cannot load sweeps: ${err.message}`;
      status.className = "error";
      timer = setTimeout(load, POLL_MS * 3);
    }
  }
  load();
  return () => { stopped = true; if (timer) clearTimeout(timer); };
}
