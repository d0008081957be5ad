// A job's page: live progress, metric charts per attempt, events, the log tail, attempts, its
// configuration, artifacts (plots inline, checkpoints to download), the MLflow run link, cancel,
// "run again", "new sweep" (its configuration as a sweep's base job), its sweep when it is a trial,
// and "try the model"; for a gang, its workers, where each rank runs (and ran, per
// attempt) and the log per rank. Live by the job's stream (GET /v1/jobs/{id}/stream): `job`
// messages carry the state and each heartbeat's metrics, `event` and `log` messages the rest.

import { ApiError, api, follow, get } from "./api.js";
import { ChartPanel, groupOf } from "./charts.js";
import {
  clear, put, fmtBytes, fmtClock, fmtDuration, fmtNumber, fmtTime, h, progressBar, section, setProgress, showValue,
  stateBadge, toast,
} from "./dom.js";
import { predictPanel } from "./predict.js";
import { priorityBadge, priorityName } from "./queue.js";
import * as session from "./session.js";
import { tail } from "./tail.js";

const TERMINAL = new Set(["SUCCEEDED", "FAILED", "CANCELLED"]);
const MAX_LOG_LINES = 5000;
const IMAGE = /\.(png|jpe?g|gif|webp|svg)$/i;
export const HYPERPARAMETERS = ["framework", "task_type", "model_name", "dataset_id", "dataset_version", "project_id",
  "epochs", "batch_size", "learning_rate", "image_size", "workers", "placement_strategy", "num_gpus", "num_cpus", "memory_mb",
  "max_attempts", "register_as"];

let infoPromise = null;
export function platformInfo() {
  infoPromise = infoPromise || get("/v1/info").catch(() => ({}));
  return infoPromise;
}

let trainersPromise = null;
export function trainers() {
  trainersPromise = trainersPromise || get("/v1/trainers").catch(() => []);
  return trainersPromise;
}

export function seriesKey(attempt, metric) { return `${attempt}\u0000${metric}`; }

function kv(rows) {
  return h("table", { class: "kv" }, h("tbody", {}, rows.map(([k, v]) => h("tr", {}, h("th", {}, k), h("td", {}, v)))));
}

function metricsTable(metrics) {
  const entries = Object.entries(metrics || {});
  return entries.length ? kv(entries.map(([k, v]) => [k, showValue(v)])) : h("p", { class: "muted" }, "none yet");
}

async function openArtifact(jobId, name) {
  const { url } = await get(`/v1/jobs/${encodeURIComponent(jobId)}/artifacts/${name.split("/").map(encodeURIComponent).join("/")}`, { redirect: "false" });
  return url;
}

function artifactsView(jobId) {
  const list = h("div", { class: "artifacts", id: "artifacts" }, h("p", { class: "muted" }, "Loading…"));
  async function load() {
    try {
      const page = await get(`/v1/jobs/${encodeURIComponent(jobId)}/artifacts`);
      clear(list);
      if (!page.items.length) { list.append(h("p", { class: "muted" }, "No files yet.")); return; }
      const gallery = h("div", { class: "gallery" });
      const rows = page.items.map((a) => {
        const download = h("button", { type: "button", class: "small", onclick: async () => {
          try { location.assign(await openArtifact(jobId, a.name)); } catch (err) { toast(err.message, "error"); }
        } }, "Download");
        if (IMAGE.test(a.name)) {
          const fig = h("figure", { class: "plot" }, h("figcaption", {}, a.name));
          gallery.append(fig);
          openArtifact(jobId, a.name).then((url) => fig.prepend(h("img", { src: url, alt: a.name, loading: "lazy" })))
            .catch((err) => fig.append(h("p", { class: "error" }, err.message)));
        }
        return h("tr", {}, h("td", { class: "mono" }, a.name), h("td", { class: "c-kind" }, a.kind), h("td", {}, fmtBytes(a.size_bytes)),
          h("td", { class: "c-modified muted small" }, fmtTime(a.last_modified)), h("td", {}, download));
      });
      list.append(gallery, h("div", { class: "table-wrap" }, h("table", { class: "files" }, h("tbody", {}, rows))));
    } catch (err) {
      put(list, h("p", { class: "error" }, err.message));
    }
  }
  load();
  return { el: list, reload: load };
}

function eventItem(e) {
  const data = e.data && Object.keys(e.data).length ? h("code", { class: "small" }, JSON.stringify(e.data)) : null;
  return h("li", { class: `event level-${String(e.level).toLowerCase()}`, dataset: { seq: e.seq, type: e.event_type } },
    h("span", { class: "muted small" }, fmtClock(e.created_at)), " ",
    h("span", { class: "tag" }, e.event_type), " ",
    e.attempt > 1 ? h("span", { class: "muted small" }, `attempt ${e.attempt} `) : null,
    h("span", { class: "message" }, e.message), " ", data);
}

// a Ray node id, short (as `ray status` shows them), the whole id in its title
const NODE_CHARS = 12;
function node(id) {
  return id ? h("span", { class: "mono node", title: id }, id.slice(0, NODE_CHARS)) : h("span", { class: "muted" }, "?");
}

// where a gang's ranks run: rank, node, process
function ranksTable(ranks) {
  return h("div", { class: "table-wrap" }, h("table", { class: "ranks", id: "ranks" },
    h("thead", {}, h("tr", {}, h("th", {}, "rank"), h("th", {}, "node"), h("th", {}, "pid"))),
    h("tbody", {}, ranks.map((r) => h("tr", { dataset: { rank: r.rank } },
      h("td", { class: "c-rank" }, r.rank), h("td", { class: "c-node" }, node(r.node_id)), h("td", { class: "c-pid mono" }, r.pid ?? ""))))));
}

// an attempt's nodes, compact: each node once, with its ranks when there are several
function attemptNodes(a) {
  const ranks = a.ranks?.length ? a.ranks : a.node_id ? [{ rank: 0, node_id: a.node_id }] : [];
  const byNode = new Map();
  for (const r of ranks) byNode.set(r.node_id, [...(byNode.get(r.node_id) || []), r.rank]);
  return [...byNode].map(([id, of], i) => [i ? ", " : null, node(id),
    ranks.length > 1 ? h("span", { class: "muted small" }, ` (rank${of.length > 1 ? "s" : ""} ${of.join(", ")})`) : null]);
}

function attemptsTable(job) {
  if (!job.attempts.length) return h("p", { class: "muted" }, `attempt ${job.attempt} of ${job.max_attempts}, running or waiting`);
  const head = [["#", "c-num"], ["outcome", "c-outcome"], ["started", "c-started"], ["ended", "c-ended"], ["exit", "c-exit"],
    ["nodes", "c-nodes"], ["reason", "c-reason"]];
  return h("div", { class: "table-wrap" }, h("table", { class: "attempts" },
    h("thead", {}, h("tr", {}, head.map(([t, c]) => h("th", { class: c }, t)))),
    h("tbody", {}, job.attempts.map((a) => h("tr", {}, h("td", { class: "c-num" }, a.attempt), h("td", { class: "c-outcome" }, a.outcome),
      h("td", { class: "c-started" }, fmtTime(a.started_at)),
      h("td", { class: "c-ended" }, fmtTime(a.ended_at)), h("td", { class: "c-exit" }, a.exit_code ?? ""),
      h("td", { class: "c-nodes" }, attemptNodes(a)),
      h("td", { class: "c-reason" }, [a.error_type, a.reason].filter(Boolean).join(": ")))))));
}

export function render(view, jobId) {
  const stops = [];
  let charts = null;
  let current = null;
  const header = h("div", { class: "job-header" });
  const summary = h("div", { class: "summary", id: "summary" });
  const chartBox = h("div", { class: "charts", id: "charts" });
  const events = h("ol", { class: "events", id: "events" });
  const logs = h("pre", { class: "logs", id: "logs", tabindex: "0" });
  // the log of a gang: every rank's lines in the order they came, or one rank's (client-side)
  const rankFilter = h("select", { id: "log-rank" }, h("option", { value: "" }, "all ranks"));
  const logTools = h("div", { class: "row log-tools", hidden: true }, h("label", { for: "log-rank" }, "Show"), rankFilter);
  const attempts = h("div", { id: "attempts" });
  const config = h("div", { id: "config" });
  const predictBox = h("div", { id: "predict" });
  const artifacts = artifactsView(jobId);
  view.append(header, h("div", { class: "grid" },
    section("Progress", summary), section("Metrics", chartBox)),
  section("Try the model", predictBox),
  section("Artifacts", artifacts.el),
  h("div", { class: "grid" }, section("Events", events), section("Log", logTools, logs)),
  h("div", { class: "grid" }, section("Attempts", attempts), section("Configuration", config)));

  function drawHeader(job) {
    // offered only to whom the API allows it: a project's admins, and a member on their own job
    const cancel = session.can("cancel", job.project_id, job.created_by)
      ? h("button", { type: "button", id: "cancel", class: "danger", disabled: TERMINAL.has(job.state) || job.cancel_requested },
        job.cancel_requested && !TERMINAL.has(job.state) ? "Cancelling…" : "Cancel")
      : null;
    let armed = false;
    cancel?.addEventListener("click", async () => {
      if (!armed) { armed = true; cancel.textContent = "Confirm cancel"; setTimeout(() => { armed = false; if (!cancel.disabled) cancel.textContent = "Cancel"; }, 5000); return; }
      cancel.disabled = true;
      try { await api("POST", `/v1/jobs/${encodeURIComponent(job.id)}/cancel`); toast("Cancellation requested"); } catch (err) { toast(err.message, "error"); cancel.disabled = false; }
    });
    const mlflow = h("span", { id: "mlflow" });
    const model = job.mlflow_model;
    if (model?.registered_name) mlflow.append(h("span", { class: "tag", id: "registered" }, `model ${model.registered_name} v${model.registered_version}`), " ");
    else if (model?.error) mlflow.append(h("span", { class: "tag error", title: model.error }, "model not logged"), " ");
    if (job.mlflow_run_id) {
      platformInfo().then((info) => {
        mlflow.append(info.mlflow_ui_url
          ? h("a", { href: `${info.mlflow_ui_url}/#/runs/${encodeURIComponent(job.mlflow_run_id)}`, target: "_blank", rel: "noopener noreferrer" }, "MLflow run ↗")
          : h("span", { class: "muted small" }, `MLflow run ${job.mlflow_run_id}`));
      });
    }
    put(header, 
      h("div", {}, h("h1", {}, h("span", { class: "mono" }, job.id), " ", stateBadge(job.state)),
        h("p", { class: "muted" }, `${job.model_name} · ${job.framework} · ${job.task_type} · project ${job.project_id} · dataset ${job.dataset_id}`),
        h("p", { class: "muted small people" },
          job.created_by ? h("span", { id: "created-by" }, "created by ", h("span", { class: "user" }, job.created_by)) : null,
          job.created_by && job.cancelled_by ? " · " : null,
          job.cancelled_by ? h("span", { id: "cancelled-by" }, "cancelled by ", h("span", { class: "user" }, job.cancelled_by)) : null)),
      h("div", { class: "actions" }, mlflow,
        session.can("submit", job.project_id)  // a viewer of the job's project: no form to send it from
          ? h("a", { class: "button", href: `#/submit?from=${encodeURIComponent(job.id)}`, id: "run-again" }, "Run again") : null,
        session.can("submit", job.project_id)  // a sweep whose base job is this one's configuration
          ? h("a", { class: "button", href: `#/sweeps/new?from=${encodeURIComponent(job.id)}`, id: "new-sweep" }, "New sweep") : null,
        job.sweep_id ? h("a", { class: "button", href: `#/sweeps/${encodeURIComponent(job.sweep_id)}`, id: "job-sweep" },
          `Sweep${job.sweep_trial ? ` · trial ${job.sweep_trial}` : ""}`) : null,
        h("a", { class: "button", href: `#/compare?ids=${encodeURIComponent(job.id)}` }, "Compare…"), cancel));
  }

  function drawSummary(job) {
    const epoch = job.epoch ? `epoch ${job.epoch} of ${job.total_epochs ?? job.epochs}` : "not started";
    const duration = job.training_time_seconds ?? (job.started_at ? ((job.finished_at ? new Date(job.finished_at) : new Date()) - new Date(job.started_at)) / 1000 : null);
    put(summary, 
      h("div", { class: "row" }, progressBar(job.progress), h("span", { id: "progress-text" }, `${fmtNumber(job.progress)}% · ${epoch}`)),
      job.error ? h("p", { class: "error", id: "job-error" }, [job.error_type, job.error].filter(Boolean).join(": ")) : null,
      job.wait_reason ? h("p", { class: "muted", id: "job-waiting" }, `Waiting: ${job.wait_reason}`) : null,
      kv([["state", stateBadge(job.state)], ["attempt", `${job.attempt} of ${job.max_attempts}`], ["created", fmtTime(job.created_at)],
        ["started", fmtTime(job.started_at)], ["finished", fmtTime(job.finished_at)], ["duration", fmtDuration(duration)],
        ["last heartbeat", fmtTime(job.last_heartbeat_at)], ["last checkpoint", job.last_checkpoint || ""],
        ["workers", `${job.workers ?? 1} · ${job.placement_strategy || "PACK"}`],
        ["priority", h("span", { id: "job-priority" }, priorityBadge(priorityName(job.priority), job.priority ?? 50))],
        job.preemptions > 0 ? ["preemptions", h("span", { id: "job-preemptions", title: "attempts stopped for a job of higher priority" }, String(job.preemptions))] : null,
      ].filter(Boolean)),
      job.ranks?.length ? [h("h3", {}, "Ranks"), ranksTable(job.ranks)] : null,
      h("h3", {}, TERMINAL.has(job.state) ? "Final metrics" : "Latest metrics"),
      metricsTable(TERMINAL.has(job.state) && Object.keys(job.final_metrics).length ? job.final_metrics : job.latest_metrics));
  }

  function drawConfig(job) {
    put(config, kv(HYPERPARAMETERS.map((k) => [k, showValue(job[k])])),
      h("h3", {}, "config"), h("pre", { class: "json" }, JSON.stringify(job.config, null, 2)),
      h("h3", {}, "advanced_config"), h("pre", { class: "json" }, JSON.stringify(job.advanced_config, null, 2)));
  }

  async function drawPredict(job) {
    const trainer = (await trainers()).find((t) => t.name === job.framework);
    const can = Boolean(trainer?.entrypoints?.predict);
    clear(predictBox);
    if (!can) predictBox.append(h("p", { class: "muted" }, `The ${job.framework} trainer has no predict entrypoint.`));
    else if (!session.can("predict", job.project_id)) {
      predictBox.append(h("p", { class: "muted", id: "predict-role" },
        `Trying the model takes a member's role in project ${job.project_id}; yours is ${session.role(job.project_id) || "none"}.`));
    }
    else if (job.state !== "SUCCEEDED") predictBox.append(h("p", { class: "muted" }, "Available once the job has succeeded."));
    else predictBox.append(predictPanel(job));
  }

  function addMetrics(attempt, epoch, metrics) {
    for (const [name, value] of Object.entries(metrics || {})) {
      charts.add(seriesKey(attempt, name), attempt > 1 ? `${name} (attempt ${attempt})` : name, groupOf(name), epoch, value);
    }
  }

  function apply(job) {
    const before = current;
    current = job;
    offerRanks(Math.max(job.workers ?? 1, job.ranks?.length ?? 0, ...(job.ranks || []).map((r) => r.rank + 1)));
    if (!before || before.state !== job.state || before.cancel_requested !== job.cancel_requested || before.mlflow_run_id !== job.mlflow_run_id
        || before.cancelled_by !== job.cancelled_by
        || JSON.stringify(before.mlflow_model) !== JSON.stringify(job.mlflow_model)) drawHeader(job);
    if (!before || before.state !== job.state) { drawPredict(job); drawConfig(job); }
    if (!before || before.attempts.length !== job.attempts.length || before.attempt !== job.attempt) put(attempts, attemptsTable(job));
    if (before && !TERMINAL.has(before.state) && TERMINAL.has(job.state)) artifacts.reload();
    drawSummary(job);
    if (job.epoch && Object.keys(job.latest_metrics || {}).length) addMetrics(job.attempt, job.epoch, job.latest_metrics);
  }

  const eventTail = tail(events);
  const logTail = tail(logs, { max: MAX_LOG_LINES });
  let rankOptions = 1;  // the filter offers ranks 0 .. rankOptions - 1 (the job's ranks, its workers, the lines seen)
  function offerRanks(n) {
    if (n <= rankOptions) return;
    rankOptions = n;
    rankFilter.append(...Array.from({ length: n }, (_, i) => i).filter((i) => !rankFilter.querySelector(`option[value="${i}"]`))
      .map((i) => h("option", { value: String(i) }, `rank ${i}`)));
    logTools.hidden = false;
  }
  const hiddenByFilter = (rank) => rankFilter.value !== "" && String(rank) !== rankFilter.value;
  rankFilter.addEventListener("change", () => {
    for (const el of logs.children) el.hidden = hiddenByFilter(el.dataset.rank);
    logTail.end();
  });
  const appendLog = (line) => {
    const rank = line.rank ?? 0;
    offerRanks(rank + 1);
    logTail.append(h("div", { class: `line ${line.stream}`, dataset: { seq: line.seq, rank }, hidden: hiddenByFilter(rank) },
      rank > 0 ? h("span", { class: "rank" }, `[rank ${rank}] `) : null, line.line));
  };

  (async () => {
    try {
      const [job, history] = await Promise.all([get(`/v1/jobs/${encodeURIComponent(jobId)}`), get(`/v1/jobs/${encodeURIComponent(jobId)}/metrics`)]);
      charts = new ChartPanel(chartBox);
      stops.push(() => charts.destroy());
      for (const m of history.items) addMetrics(m.attempt, m.epoch, m.metrics);
      charts.draw();
      apply(job);
      stops.push(follow(`/v1/jobs/${encodeURIComponent(jobId)}/stream`, {
        job: apply,
        end: apply,
        event: (e) => eventTail.append(eventItem(e)),
        log: appendLog,
        error: (err) => toast(`Live updates stopped: ${err.message}`, "error"),
      }));
    } catch (err) {
      const missing = err instanceof ApiError && err.status === 404;  // none, or one of a project the user is not in
      put(view, h("p", { class: "error", role: "alert", id: missing ? "job-missing" : "job-unavailable" }, missing ? `No job ${jobId}.` : err.message),
        h("a", { href: "#/jobs" }, "All jobs"));
    }
  })();
  return () => stops.forEach((stop) => stop());
}
