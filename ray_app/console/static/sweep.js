// A sweep's page (#/sweeps/<id>): its header (state, error, search, scheduler, trial counts,
// cancel where the user's role allows it), the best trial, the trials table (sortable by the
// sweep's metric, each trial linking its job, a stop by the scheduler shown apart), one chart of
// every trial's metric against epoch (a trial stopped early drawn dashed, so its line visibly ends
// short), a scatter of each hyperparameter against the trials' best metric (a log axis for a
// loguniform domain, one column per value for a choice; the best trial ringed and linked), then the
// search space and the base job. Read again every few seconds while the sweep is live.

import { ApiError, api, get } from "./api.js";
import { ChartPanel, seriesColor } from "./charts.js";
import { fmtNumber, fmtTime, h, put, section, showValue, stateBadge, svg, toast } from "./dom.js";
import * as session from "./session.js";
import { LIVE, POLL_MS, countsText, statusBadge, trialsDone } from "./sweeps.js";

const STOPPED_DASH = [6, 4];
const num = (v) => (typeof v === "number" && Number.isFinite(v) ? v : null);
// a value as given (0.001, not fmtNumber's 0.0010), numbers to 4 significant digits
const exact = (v) => (typeof v === "number" ? String(Number(v.toPrecision(4))) : showValue(v));

function kv(rows) {
  return h("table", { class: "kv" }, h("tbody", {}, rows.map(([k, v]) => h("tr", {}, h("th", {}, k), h("td", {}, v)))));
}

// {"choice": [...]} -> ["choice", [...]]
export function domainOf(spec) {
  if (!spec || typeof spec !== "object" || Array.isArray(spec)) return [null, null];
  const [kind] = Object.keys(spec);
  return [kind, spec[kind]];
}

export function schedulerText(s) {
  if (!s) return "none (every trial runs its epochs)";
  const parts = [`grace period ${s.grace_period ?? 1}`];
  if (s.type === "asha") parts.push(`reduction factor ${fmtNumber(s.reduction_factor ?? 3)}`);
  return `${s.type} (${parts.join(", ")})`;
}

function spaceTable(space) {
  const rows = Object.entries(space || {}).map(([path, spec]) => {
    const [kind, values] = domainOf(spec);
    const shown = Array.isArray(values)
      ? (kind === "choice" ? values.map((v, i) => [i ? ", " : null, h("span", { class: "value" }, exact(v))]) : `${exact(values[0])} … ${exact(values[1])}`)
      : showValue(spec);
    return h("tr", { dataset: { path } }, h("th", { class: "mono" }, path), h("td", { class: "c-kind" }, kind || ""), h("td", { class: "c-values" }, shown));
  });
  return h("table", { class: "kv space", id: "sweep-space" }, h("tbody", {}, rows));
}

// ------------------------------------------------------------------ hyperparameter vs metric
const W = 320, H = 220, ML = 54, MR = 14, MT = 10, MB = 44;

function ticksLinear(lo, hi) {
  if (lo === hi) return [lo];
  return [lo, lo + (hi - lo) / 2, hi];
}

function ticksLog(lo, hi) {
  const out = [];
  for (let e = Math.ceil(Math.log10(lo) - 1e-9); e <= Math.floor(Math.log10(hi) + 1e-9); e += 1) out.push(10 ** e);
  return out.length >= 2 ? out : [lo, hi];
}

function padded(lo, hi) {
  if (lo === hi) { const d = Math.abs(lo) * 0.1 || 1; return [lo - d, hi + d]; }
  const d = (hi - lo) * 0.08;
  return [lo - d, hi + d];
}

// the x axis of one parameter: {scale, pos(value) -> 0..1 or null, ticks: [[pos, label, title]]}
export function xAxis(spec, values) {
  const [kind, dom] = domainOf(spec);
  const numbers = values.map(num).filter((v) => v !== null);
  const categorical = kind === "choice" || (kind === null && numbers.length < values.length);
  if (categorical) {
    const cats = [];
    for (const v of [...(kind === "choice" && Array.isArray(dom) ? dom : []), ...values]) {
      const key = JSON.stringify(v);
      if (!cats.includes(key)) cats.push(key);
    }
    const pos = (v) => { const i = cats.indexOf(JSON.stringify(v)); return i < 0 ? null : (i + 0.5) / cats.length; };
    return { scale: "category", pos, ticks: cats.map((key, i) => { const v = JSON.parse(key); return [(i + 0.5) / cats.length, exact(v), showValue(v)]; }) };
  }
  let lo = Math.min(...numbers, ...(Array.isArray(dom) ? dom.map(num).filter((v) => v !== null) : []));
  let hi = Math.max(...numbers, ...(Array.isArray(dom) ? dom.map(num).filter((v) => v !== null) : []));
  if (kind === "loguniform" && lo > 0) {
    const [a, b] = [Math.log10(lo), Math.log10(hi)];
    const [pa, pb] = padded(a, b);
    const pos = (v) => (num(v) !== null && v > 0 ? (Math.log10(v) - pa) / (pb - pa) : null);
    return { scale: "log", pos, ticks: ticksLog(lo, hi).map((t) => [pos(t), exact(t), String(t)]) };
  }
  if (!Number.isFinite(lo)) { lo = 0; hi = 1; }
  const [pa, pb] = padded(lo, hi);
  const pos = (v) => (num(v) !== null ? (v - pa) / (pb - pa) : null);
  return { scale: "linear", pos, ticks: ticksLinear(lo, hi).map((t) => [pos(t), exact(kind === "int" ? Math.round(t) : t), String(t)]) };
}

function clip(text, n = 12) {
  return text.length > n ? `${text.slice(0, n - 1)}…` : text;
}

function scatter(path, spec, trials, sweep) {
  const points = trials.filter((t) => num(t.best_metric) !== null && path in (t.params || {}));
  const axis = xAxis(spec, points.map((t) => t.params[path]));
  const ys = points.map((t) => t.best_metric);
  const [y0, y1] = ys.length ? padded(Math.min(...ys), Math.max(...ys)) : [0, 1];
  const pw = W - ML - MR, ph = H - MT - MB;
  const X = (p) => ML + p * pw, Y = (v) => MT + (1 - (v - y0) / (y1 - y0)) * ph;
  const plot = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "scatter-plot", role: "img", "aria-label": `${path} against ${sweep.metric}` },
    svg("line", { class: "axis", x1: ML, y1: MT + ph, x2: ML + pw, y2: MT + ph }),
    svg("line", { class: "axis", x1: ML, y1: MT, x2: ML, y2: MT + ph }));
  for (const [p, label, title] of axis.ticks) {
    if (p === null) continue;
    plot.append(svg("line", { class: "tick", x1: X(p), y1: MT + ph, x2: X(p), y2: MT + ph + 4 }),
      svg("text", { class: "tick-label x", x: X(p), y: MT + ph + 16, "text-anchor": "middle" }, svg("title", {}, title), clip(label)));
  }
  if (ys.length) {
    for (const v of ticksLinear(Math.min(...ys), Math.max(...ys))) {
      plot.append(svg("line", { class: "tick", x1: ML - 4, y1: Y(v), x2: ML, y2: Y(v) }),
        svg("text", { class: "tick-label y", x: ML - 6, y: Y(v) + 4, "text-anchor": "end" }, exact(v)));
    }
  }
  plot.append(svg("text", { class: "axis-label", x: ML + pw / 2, y: H - 6, "text-anchor": "middle" },
    axis.scale === "log" ? `${clip(path, 30)} (log)` : clip(path, 36)));
  const bestId = sweep.best?.job_id;
  // the best last, on top of the others
  for (const t of [...points].sort((a, b) => (a.job_id === bestId) - (b.job_id === bestId))) {
    const p = axis.pos(t.params[path]);
    if (p === null) continue;
    const best = t.job_id === bestId;
    const title = `trial ${t.trial} (${t.status}): ${path} = ${showValue(t.params[path])}, best ${sweep.metric} ${fmtNumber(t.best_metric)}`;
    plot.append(svg("a", { href: `#/jobs/${encodeURIComponent(t.job_id)}`, class: best ? "pt-link best" : "pt-link" },
      svg("title", {}, best ? `best: ${title}` : title),
      svg("circle", { class: `pt ts-${t.status}${best ? " best" : ""}`, cx: X(p), cy: Y(t.best_metric), r: best ? 7 : 4.5,
                      dataset: { trial: t.trial } })));
  }
  return h("figure", { class: "scatter", dataset: { param: path, scale: axis.scale, points: points.length } },
    h("figcaption", {}, h("span", { class: "mono" }, path), axis.scale === "log" ? h("span", { class: "muted" }, " · log scale") : null), plot);
}

// ------------------------------------------------------------------ the trials table
function trialsTable(sweep, params, sort, onSort) {
  const bestId = sweep.best?.job_id;
  const better = sweep.mode === "min" ? 1 : -1;  // best first
  const metricKey = (t) => num(t.best_metric);
  const rows = [...sweep.trials];
  if (sort.by === "metric") {
    rows.sort((a, b) => {
      const x = metricKey(a), y = metricKey(b);
      if (x === null || y === null) return (x === null) - (y === null) || a.trial - b.trial;  // no metric: last
      return ((x - y) * better || a.trial - b.trial) * sort.dir;  // the other way: the exact reverse, ties too
    });
  } else {
    rows.sort((a, b) => (a.trial - b.trial) * sort.dir);
  }
  const arrow = (by) => (sort.by === by ? (sort.dir === 1 ? " ▲" : " ▼") : "");
  const metricArrow = sort.by === "metric" ? (sort.dir === 1 ? " (best first)" : " (worst first)") : "";
  const head = h("tr", {},
    h("th", { class: "c-num", "aria-sort": sort.by === "trial" ? (sort.dir === 1 ? "ascending" : "descending") : "none" },
      h("button", { type: "button", class: "link sort", id: "sort-trial", onclick: () => onSort("trial") }, `#${arrow("trial")}`)),
    h("th", {}, "Job"), h("th", {}, "Status"),
    params.map((p) => h("th", { class: "mono c-param" }, p)),
    h("th", {}, "Epochs"),
    h("th", { class: "c-best-metric", "aria-sort": sort.by === "metric" ? ((sort.dir === 1) === (sweep.mode === "min") ? "ascending" : "descending") : "none" },
      h("button", { type: "button", class: "link sort", id: "sort-metric", title: `sort by the best ${sweep.metric}`, onclick: () => onSort("metric") },
        `best ${sweep.metric}${metricArrow}`)),
    h("th", {}, `last ${sweep.metric}`), h("th", { class: "c-reason" }, "Why it stopped"));
  const body = rows.map((t) => h("tr", { class: [t.job_id === bestId ? "best" : "", t.status === "stopped_early" ? "stopped-early" : ""].join(" ").trim(),
                                         dataset: { trial: t.trial, job: t.job_id, status: t.status } },
    h("td", { class: "c-num" }, t.trial),
    h("td", { class: "c-job" }, h("a", { href: `#/jobs/${encodeURIComponent(t.job_id)}`, class: "mono" }, t.job_id.slice(0, 8)),
      t.job_id === bestId ? [" ", h("span", { class: "tag best-tag" }, "best")] : null),
    h("td", { class: "c-status" }, statusBadge(t.status)),
    params.map((p) => h("td", { class: "c-param" }, exact(t.params?.[p]))),
    h("td", { class: "c-epochs" }, t.epochs_run),
    h("td", { class: "c-metric" }, fmtNumber(t.best_metric)),
    h("td", { class: "c-last" }, fmtNumber(t.last_metric)),
    h("td", { class: "c-reason muted small" }, t.stop_reason || "")));
  return h("div", { class: "table-wrap" }, h("table", { class: "trials", id: "trials" }, h("thead", {}, head), h("tbody", { id: "trials-body" }, body)));
}

// ------------------------------------------------------------------ the page
export function render(view, sweepId) {
  const header = h("div", { class: "job-header", id: "sweep-header" });
  const facts = h("div", { id: "sweep-facts" });
  const bestBox = h("div", { id: "sweep-best" });
  const trialsBox = h("div", { id: "sweep-trials" }, h("p", { class: "muted" }, "Loading…"));
  const chartBox = h("div", { class: "charts", id: "sweep-chart" });
  const scatterBox = h("div", { class: "scatters", id: "sweep-scatter" });
  const spaceBox = h("div", {});
  const jobBox = h("div", {});
  view.append(header, h("div", { class: "grid" }, section("Sweep", facts), section("Best trial", bestBox)),
    section("Trials", trialsBox),
    section("Metric by epoch", h("p", { class: "muted small" }, "one line per trial; a trial the scheduler stopped early is dashed and ends at its last epoch"), chartBox),
    section("Hyperparameters against the metric", h("p", { class: "muted small" }, "each trial's best value of the metric; the best trial ringed"), scatterBox),
    h("div", { class: "grid" }, section("Search space", spaceBox), section("Base job", jobBox)));

  let sweep = null;
  let headerSig = null;
  let chartSig = null;
  let charts = null;
  let timer = null;
  let stopped = false;
  const sort = { by: "trial", dir: 1 };

  function drawHeader(s) {
    const cancel = session.can("cancel", s.project_id, s.created_by)
      ? h("button", { type: "button", id: "sweep-cancel", class: "danger", disabled: !LIVE.has(s.state) }, "Cancel sweep")
      : null;
    let armed = false;
    cancel?.addEventListener("click", async () => {
      if (!armed) {
        armed = true;
        cancel.textContent = "Confirm cancel";
        setTimeout(() => { armed = false; if (!cancel.disabled) cancel.textContent = "Cancel sweep"; }, 5000);
        return;
      }
      cancel.disabled = true;
      try {
        await api("POST", `/v1/sweeps/${encodeURIComponent(s.id)}/cancel`);
        toast("Cancellation requested");
        if (timer) clearTimeout(timer);
        load();
      } catch (err) { toast(err.message, "error"); cancel.disabled = false; }
    });
    put(header,
      h("div", {}, h("h1", {}, h("span", { id: "sweep-name" }, s.name), " ", stateBadge(s.state)),
        h("p", { class: "muted" }, h("span", { class: "mono" }, s.id), ` · project ${s.project_id} · `,
          h("span", { id: "sweep-objective" }, `${s.mode} ${s.metric}`)),
        h("p", { class: "muted small people" },
          s.created_by ? h("span", { id: "sweep-created-by" }, "created by ", h("span", { class: "user" }, s.created_by)) : null,
          s.cancelled_by ? [" · ", h("span", { id: "sweep-cancelled-by" }, "cancelled by ", h("span", { class: "user" }, s.cancelled_by))] : null),
        s.error ? h("p", { class: "error", id: "sweep-error" }, s.error) : null),
      h("div", { class: "actions" }, h("a", { class: "button", href: "#/sweeps" }, "All sweeps"), cancel));
  }

  function drawFacts(s) {
    put(facts, kv([
      ["state", stateBadge(s.state)], ["search", h("span", { id: "sweep-search" }, s.search)],
      ["scheduler", h("span", { id: "sweep-scheduler" }, schedulerText(s.scheduler))],
      ["trials", h("span", { id: "sweep-counts" }, `${trialsDone(s)} of ${s.num_trials}`, countsText(s.counts) ? ` · ${countsText(s.counts)}` : "")],
      ["at once", String(s.max_concurrent)], ["created", fmtTime(s.created_at)], ["started", fmtTime(s.started_at)],
      ["finished", fmtTime(s.finished_at)],
      s.register_best_as ? ["register best as", s.register_best_as] : null,
      s.registered_model?.registered_name ? ["registered", `${s.registered_model.registered_name} v${s.registered_model.registered_version}`] : null,
    ].filter(Boolean)));
    const b = s.best;
    put(bestBox, b
      ? [h("p", { id: "best-trial" }, "Trial ", String(b.trial), ": ",
        h("a", { href: `#/jobs/${encodeURIComponent(b.job_id)}`, class: "mono", id: "best-link" }, b.job_id), " ", statusBadge(b.status)),
      kv([[`best ${s.metric}`, h("strong", { id: "best-metric" }, fmtNumber(b.best_metric))],
        ...Object.entries(b.params || {}).map(([k, v]) => [k, showValue(v)])])]
      : h("p", { class: "muted", id: "best-none" }, s.trials.length ? `No trial has reported ${s.metric} yet.` : "No trials yet."));
  }

  function drawTrials(s) {
    const params = [...new Set([...Object.keys(s.space || {}), ...s.trials.flatMap((t) => Object.keys(t.params || {}))])];
    if (!s.trials.length) {
      put(trialsBox, h("p", { class: "muted", id: "trials-none" }, LIVE.has(s.state) ? "No trials started yet." : "No trials ran."));
    } else {
      put(trialsBox, trialsTable(s, params, sort, (by) => {
        if (sort.by === by) sort.dir = -sort.dir; else { sort.by = by; sort.dir = 1; }
        drawTrials(sweep);
      }));
    }
    // hyperparameter against the metric
    const scored = s.trials.filter((t) => num(t.best_metric) !== null);
    if (!scored.length) put(scatterBox, h("p", { class: "muted" }, `Appears once trials report ${s.metric}.`));
    else put(scatterBox, params.map((p) => scatter(p, s.space?.[p], s.trials, s)));
  }

  function drawChart(s) {
    // a series keeps the label it was made with: a new best (the labels say which) draws it anew
    const sig = JSON.stringify([s.best?.job_id, s.trials.map((t) => [t.trial, t.status === "stopped_early"])]);
    if (sig !== chartSig || !charts) {
      chartSig = sig;
      charts?.destroy();
      put(chartBox);
      charts = new ChartPanel(chartBox);
    }
    const bestId = s.best?.job_id;
    s.trials.forEach((t, i) => {
      const early = t.status === "stopped_early";
      const label = `trial ${t.trial}${t.job_id === bestId ? " (best)" : ""}${early ? ` (stopped early at epoch ${t.epochs_run})` : ""}`;
      for (const [epoch, value] of t.history || []) charts.add(`trial-${t.trial}`, label, s.metric, epoch, value, seriesColor(i), early ? { dash: STOPPED_DASH } : null);
    });
    charts.draw();
  }

  function apply(s) {
    sweep = s;
    view.dataset.state = s.state;
    const sig = JSON.stringify([s.state, s.error, s.cancelled_by, s.name]);
    if (sig !== headerSig) { headerSig = sig; drawHeader(s); }
    drawFacts(s);
    drawTrials(s);
    drawChart(s);
    put(spaceBox, spaceTable(s.space));
    if (!jobBox.firstChild) put(jobBox, h("pre", { class: "json", id: "sweep-job" }, JSON.stringify(s.job, null, 2)));
  }

  async function load() {
    timer = null;
    try {
      const s = await get(`/v1/sweeps/${encodeURIComponent(sweepId)}`);
      if (stopped) return;
      apply(s);
      if (LIVE.has(s.state)) timer = setTimeout(load, POLL_MS);
    } catch (err) {
      if (stopped) return;
      if (!sweep) {
        const missing = err instanceof ApiError && err.status === 404;
        put(view, h("p", { class: "error", role: "alert", id: missing ? "sweep-missing" : "sweep-unavailable" }, missing ? `No sweep ${sweepId}.` : err.message),
          h("a", { href: "#/sweeps" }, "All sweeps"));
        return;
      }
      timer = setTimeout(load, POLL_MS * 3);  // a blip: try again, keep what is shown
    }
  }
  load();
  return () => { stopped = true; if (timer) clearTimeout(timer); charts?.destroy(); };
}
