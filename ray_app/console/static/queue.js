// The shared cluster's queue (#/queue, GET /v1/queue): the jobs waiting, in the order the
// controller offers them to the cluster, each with why it waits; then the projects' use against
// their quotas (CPUs, GPUs, running jobs), their fair-share weight and share, and the cluster's
// free capacity. The API shows the projects the user can see; it is the controller's last
// decision, read again every few seconds. Without a controller the API answers 503: the page says
// so and keeps asking.

import { ApiError, get } from "./api.js";
import { fmtClock, fmtDuration, fmtTime, h, put, section, stateBadge } from "./dom.js";
import { POLL_MS } from "./sweeps.js";

// scheduling/priority.py: the named levels, and a number between them as "normal+10"
export const PRIORITY_LEVELS = [["low", 20], ["normal", 50], ["high", 80]];

export function priorityName(priority) {
  if (typeof priority !== "number") return "normal";
  const below = PRIORITY_LEVELS.filter(([, v]) => v <= priority);
  if (!below.length) return String(priority);
  const [name, value] = below[below.length - 1];
  return value === priority ? name : `${name}+${priority - value}`;
}

export function priorityBadge(name, priority) {
  const level = String(name).split("+")[0];
  return h("span", { class: `prio prio-${PRIORITY_LEVELS.some(([n]) => n === level) ? level : "other"}`,
                     "data-priority": priority, title: `priority ${priority}` }, name);
}

const num = (v) => (typeof v === "number" && Number.isFinite(v) ? v : 0);
// an amount of CPUs, GPUs or jobs as Python's %g writes it (4.2, not 4.20; 0.1 + 0.2 as 0.3)
export const amount = (v) => String(Number(num(v).toPrecision(6)));
const plural = (n, word) => `${amount(n)} ${word}${n === 1 ? "" : "s"}`;

// what a job asks for, all its workers together: "2 × 1.5 CPUs", "4.8 CPUs, 1 GPU"
function asks(j) {
  const workers = j.workers || 1;
  const each = [j.num_gpus > 0 ? plural(j.num_gpus, "GPU") : null,
    j.num_cpus !== null && j.num_cpus !== undefined ? plural(j.num_cpus, "CPU") : "the trainer's CPUs"].filter(Boolean).join(", ");
  return workers > 1 ? `${workers} × ${each}` : each;
}

// "2 / 4 CPUs" and a bar when there is a limit, "2 CPUs" and "no quota" when not
function meter(used, limit, unit, cls) {
  const text = limit === null || limit === undefined ? plural(num(used), unit) : `${amount(used)} / ${plural(limit, unit)}`;
  const out = [h("span", { class: "meter-text" }, text)];
  if (limit === null || limit === undefined) out.push(" ", h("span", { class: "muted small no-quota" }, "no quota"));
  else {
    const p = limit > 0 ? Math.min(100, (100 * num(used)) / limit) : (num(used) > 0 ? 100 : 0);
    const bar = h("span", { class: "bar" });
    bar.style.width = `${p}%`;  // CSSOM, allowed under the CSP
    out.push(h("span", { class: `meter${num(used) >= limit && limit !== null ? " full" : ""}`, role: "meter",
                         "aria-valuenow": amount(used), "aria-valuemin": "0", "aria-valuemax": amount(limit),
                         "aria-label": `${unit}s in use of the quota` }, bar));
  }
  return h("td", { class: cls }, out);
}

function jobRow(j) {
  return h("tr", { dataset: { id: j.job_id, project: j.project_id } },
    h("td", { class: "c-pos" }, j.position ?? h("span", { class: "muted", title: "in its retry backoff" }, "–")),
    h("td", { class: "c-id" }, h("a", { href: `#/jobs/${encodeURIComponent(j.job_id)}`, class: "mono" }, j.job_id),
      h("span", { class: "muted small c-model" }, `${j.framework} · ${j.model_name}`)),
    h("td", { class: "c-project" }, j.project_id),
    h("td", { class: "c-priority" }, priorityBadge(j.priority_name, j.priority)),
    h("td", { class: "c-state" }, stateBadge(j.state),
      j.preemptions > 0 ? h("span", { class: "muted small preempted" }, ` preempted ${j.preemptions}×`) : null),
    h("td", { class: "c-reason" }, j.waiting_for),
    h("td", { class: "c-asks" }, asks(j)),
    h("td", { class: "c-sweep" }, j.sweep_id
      ? h("a", { href: `#/sweeps/${encodeURIComponent(j.sweep_id)}`, class: "mono", title: `sweep ${j.sweep_id}` }, j.sweep_id)
      : null),
    h("td", { class: "c-created muted small" }, j.created_by ? [h("span", { class: "user" }, j.created_by), h("br")] : null,
      fmtTime(j.created_at)));
}

// nothing held, nothing waiting, no limit, the default weight: listed only on demand
function idle(p) {
  const q = p.quota || {};
  return !num(p.in_use?.cpus) && !num(p.in_use?.gpus) && !num(p.in_use?.running_jobs) && !p.waiting
    && [q.max_cpus, q.max_gpus, q.max_running_jobs].every((v) => v === null || v === undefined)
    && p.weight === 1 && p.preemptible !== false;
}

function projectRow(p) {
  const q = p.quota || {};
  return h("tr", { dataset: { project: p.project_id }, class: idle(p) ? "idle" : null },
    h("td", { class: "c-project" }, h("a", { href: `#/projects/${encodeURIComponent(p.project_id)}` }, p.project_id)),
    meter(p.in_use?.cpus, q.max_cpus, "CPU", "c-cpus"),
    meter(p.in_use?.gpus, q.max_gpus, "GPU", "c-gpus"),
    meter(p.in_use?.running_jobs, q.max_running_jobs, "job", "c-jobs"),
    h("td", { class: "c-weight" }, amount(p.weight)),
    h("td", { class: "c-share", title: "weighted dominant share: what it holds and used lately, of the scarcer resource, over its weight (the lowest goes next)" },
      `${(100 * num(p.share)).toFixed(1)}%`),
    h("td", { class: "c-waiting" }, String(p.waiting ?? 0)),
    h("td", { class: "c-preemptible" }, p.preemptible === false ? h("span", { class: "tag" }, "never preempted") : "yes"));
}

function capacityView(q) {
  const cap = q.capacity;
  const stat = (id, label, ...value) => h("div", { class: "stat", id }, h("span", { class: "muted small" }, label), h("strong", {}, value));
  const free = (kind, unit) => {
    if (!cap) return "unknown";
    const total = num(cap.total?.[kind]), left = num(cap.free?.[kind]);
    if (!total) return `no ${unit}s`;
    const bar = h("span", { class: "bar" });
    bar.style.width = `${Math.min(100, (100 * (total - left)) / total)}%`;
    return [`${amount(left)} of ${plural(total, unit)} free`, " ",
      h("span", { class: "meter", role: "meter", "aria-label": `${unit}s in use`, "aria-valuenow": amount(total - left),
                  "aria-valuemin": "0", "aria-valuemax": amount(total) }, bar)];
  };
  return h("div", { class: "stats", id: "queue-capacity" },
    stat("capacity-cpus", "CPUs", free("cpus", "CPU")),
    stat("capacity-gpus", "GPUs", free("gpus", "GPU")),
    stat("queue-preemption", "Preemption", q.preemption === false ? "off" : "on"),
    stat("queue-waiting", "Waiting", String((q.jobs || []).length)),
    q.fair_share_half_life_s ? stat("queue-half-life", "Fair-share half-life", fmtDuration(q.fair_share_half_life_s)) : null);
}

export function render(view) {
  const status = h("p", { class: "muted", id: "queue-status" }, "Loading…");
  const decided = h("p", { class: "muted small", id: "queue-decided" });
  const capacity = h("div", { id: "queue-capacity-box" });
  const jobsBody = h("tbody", { id: "queue-body" });
  const jobsEmpty = h("p", { class: "muted", id: "queue-empty", hidden: true }, "No jobs are waiting: every job asked for is running.");
  const projectsBody = h("tbody", { id: "queue-projects-body" });
  let showIdle = false;
  const idleToggle = h("button", { type: "button", class: "link small", id: "queue-show-idle", hidden: true });
  idleToggle.addEventListener("click", () => {
    showIdle = !showIdle;
    projectsBody.classList.toggle("show-idle", showIdle);
    idleText();
  });
  let idleCount = 0;
  function idleText() {
    idleToggle.textContent = showIdle ? "Hide idle projects" : `Show ${idleCount} idle project${idleCount === 1 ? "" : "s"} (nothing held or waiting, no quota)`;
  }
  const content = h("div", { id: "queue-content", hidden: true },
    capacity,
    section("Waiting jobs",
      h("p", { class: "muted small" }, "In the order they are offered to the cluster: higher priority first, then the project with the lowest fair share."),
      h("div", { class: "table-wrap" }, h("table", { class: "queue" },
        h("thead", {}, h("tr", {}, h("th", { class: "c-pos" }, "#"), h("th", {}, "Job"), h("th", { class: "c-project" }, "Project"),
          h("th", {}, "Priority"), h("th", { class: "c-state" }, "State"), h("th", {}, "Waiting for"), h("th", { class: "c-asks" }, "Asks for"),
          h("th", { class: "c-sweep" }, "Sweep"), h("th", { class: "c-created" }, "Created"))),
        jobsBody)), jobsEmpty),
    section("Projects",
      h("div", { class: "table-wrap" }, h("table", { class: "queue-projects" },
        h("thead", {}, h("tr", {}, h("th", {}, "Project"), h("th", {}, "CPUs"), h("th", {}, "GPUs"), h("th", {}, "Running jobs"),
          h("th", { class: "c-weight" }, "Weight"), h("th", { class: "c-share" }, "Share"), h("th", { class: "c-waiting" }, "Waiting"),
          h("th", { class: "c-preemptible" }, "Preemptible"))),
        projectsBody)), idleToggle));
  view.append(h("h1", {}, "Queue"), decided, status, content);

  let timer = null;
  let stopped = false;
  async function load() {
    timer = null;
    try {
      const q = await get("/v1/queue");
      if (stopped) return;
      status.textContent = "";
      status.className = "muted";
      status.hidden = true;
      content.hidden = false;
      put(capacity, capacityView(q));
      put(jobsBody, (q.jobs || []).map(jobRow));
      jobsEmpty.hidden = Boolean(q.jobs?.length);
      const projects = q.projects || [];
      put(projectsBody, projects.map(projectRow));
      idleCount = projects.filter(idle).length;
      idleToggle.hidden = idleCount === 0;
      idleText();
      put(decided, q.decided_at ? [`Decided at ${fmtClock(q.decided_at)}`, q.pass_ms !== null && q.pass_ms !== undefined ? ` in ${Number(num(q.pass_ms).toPrecision(2))} ms` : "",
        " · read again every few seconds"] : "The controller has not decided yet.");
      view.dataset.updated = q.decided_at || "";
      timer = setTimeout(load, POLL_MS);
    } catch (err) {
      if (stopped) return;
      status.hidden = false;
      status.className = "error";
      status.setAttribute("role", "alert");
      status.textContent = err instanceof ApiError && err.status === 503
        ? `The queue cannot be shown right now (${err.message}). Jobs submitted meanwhile are kept; this page tries again every few seconds.`
        : `Cannot load the queue: ${err.message}`;
      content.hidden = true;
      put(decided);
      timer = setTimeout(load, POLL_MS * 3);
    }
  }
  load();
  return () => { stopped = true; if (timer) clearTimeout(timer); };
}
