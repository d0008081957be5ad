// Compare 2-5 runs: one chart per metric with a line per job (a job retried: its later attempt's
// values win at an epoch), then final metrics and hyperparameters side by side, the rows whose
// values differ highlighted. Each run keeps one colour in every chart and in the table's header,
// whichever metrics it has. #/compare?ids=a,b,c; without two ids, a picker of recent jobs.

import { get } from "./api.js";
import { ChartPanel, seriesColor } from "./charts.js";
import { put, h, section, showValue, stateBadge } from "./dom.js";
import { HYPERPARAMETERS } from "./job.js";

const MAX = 5;

function flatten(prefix, obj, out) {
  for (const [k, v] of Object.entries(obj || {})) {
    if (v && typeof v === "object" && !Array.isArray(v)) flatten(`${prefix}${k}.`, v, out);
    else out[`${prefix}${k}`] = v;
  }
  return out;
}

function picker(view, preselected) {
  const chosen = new Set(preselected);
  const go = h("button", { type: "button", class: "primary", id: "compare-go", disabled: chosen.size < 2 }, "Compare");
  const list = h("tbody", {});
  go.addEventListener("click", () => { location.hash = `#/compare?ids=${[...chosen].map(encodeURIComponent).join(",")}`; });
  view.append(h("h1", {}, "Compare runs"), h("p", { class: "muted" }, `Pick 2 to ${MAX} jobs.`),
    h("table", { class: "jobs" }, list), go);
  get("/v1/jobs", { limit: 100 }).then((page) => {
    for (const job of page.items) {
      const box = h("input", { type: "checkbox", checked: chosen.has(job.id), "aria-label": `select ${job.id}` });
      box.addEventListener("change", () => {
        if (box.checked) chosen.add(job.id); else chosen.delete(job.id);
        go.disabled = chosen.size < 2 || chosen.size > MAX;
      });
      list.append(h("tr", {}, h("td", { class: "c-pick" }, box), h("td", { class: "c-id mono" }, job.id),
        h("td", { class: "c-state" }, stateBadge(job.state)), h("td", { class: "c-model" }, job.model_name),
        h("td", { class: "c-project" }, job.project_id)));
    }
  });
}

export function render(view, query) {
  const ids = [...new Set((query.get("ids") || "").split(",").map((s) => s.trim()).filter(Boolean))].slice(0, MAX);
  if (ids.length < 2) { picker(view, ids); return null; }
  const chartBox = h("div", { class: "charts", id: "compare-charts" });
  const table = h("div", { id: "compare-table" });
  view.append(h("h1", {}, `Comparing ${ids.length} runs`), section("Curves", chartBox), section("Side by side", table));
  const charts = new ChartPanel(chartBox);
  (async () => {
    let runs;
    try {
      runs = await Promise.all(ids.map(async (id) => {
        const enc = encodeURIComponent(id);
        const [job, metrics] = await Promise.all([get(`/v1/jobs/${enc}`), get(`/v1/jobs/${enc}/metrics`)]);
        return { job, history: metrics.items };
      }));
    } catch (err) {
      put(table, h("p", { class: "error", role: "alert" }, err.message));
      return;
    }
    const last = {};
    runs.forEach(({ job, history }, i) => {
      const label = `${job.id.slice(0, 8)} ${job.model_name}`;
      last[job.id] = {};
      for (const row of [...history].sort((a, b) => a.attempt - b.attempt || a.epoch - b.epoch)) {
        for (const [name, value] of Object.entries(row.metrics)) {
          charts.add(`${job.id}\u0000${name}`, label, name, row.epoch, value, seriesColor(i));
          last[job.id][name] = value;
        }
      }
    });
    charts.draw();
    const columns = runs.map(({ job }) => ({
      job, values: {
        state: job.state, ...Object.fromEntries(HYPERPARAMETERS.map((k) => [k, job[k]])),
        ...flatten("config.", job.config, {}), ...flatten("advanced_config.", job.advanced_config, {}),
        ...flatten("metric.", Object.keys(job.final_metrics).length ? job.final_metrics : last[job.id], {}),
      },
    }));
    const keys = [...new Set(columns.flatMap((c) => Object.keys(c.values)))];
    const rows = keys.map((k) => {
      const shown = columns.map((c) => showValue(c.values[k]));
      const differs = new Set(shown).size > 1;
      return h("tr", { class: differs ? "diff" : "", dataset: { key: k } }, h("th", {}, k), shown.map((v) => h("td", {}, v)));
    });
    const heads = columns.map(({ job }, i) => {
      const swatch = h("span", { class: "swatch", "aria-hidden": "true" });
      swatch.style.background = seriesColor(i);  // CSSOM, allowed under the CSP
      return h("th", { dataset: { id: job.id } }, swatch, h("a", { href: `#/jobs/${encodeURIComponent(job.id)}`, class: "mono" }, job.id));
    });
    put(table, h("div", { class: "table-wrap" }, h("table", { class: "compare" },
      h("thead", {}, h("tr", {}, h("th", {}), heads)), h("tbody", {}, rows))));
  })();
  return () => charts.destroy();
}
