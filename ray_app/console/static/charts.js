// Metric charts (uPlot, vendored): one chart per group of metrics (losses, quality, learning
// rate, the rest), x = epoch, one line per series (a metric of an attempt on a job page, a metric
// of a job on the compare page). Charts grow as points arrive: add() then a redraw on the next
// animation frame, however many points came in between. A series may bring its own colour (the
// compare page gives each run one colour in every chart); otherwise it takes its place in its chart.

import uPlot from "./vendor/uPlot.esm.js";
import { h, put } from "./dom.js";

const COLORS = ["#1f6feb", "#d9480f", "#2f9e44", "#9c36b5", "#e8590c", "#0c8599", "#c2255c", "#5c940d", "#364fc7", "#868e96"];

export function seriesColor(i) {
  return COLORS[i % COLORS.length];
}

// the decimals that write a tick step exactly: 0.0002 -> 4, 0.00025 -> 5, 50 -> 0
function decimalsOf(step) {
  for (let d = 0; d < 20; d += 1) if (Math.abs(Number(step.toFixed(d)) - step) <= step * 1e-9) return d;
  return 20;
}

// Tick labels as distinct as the ticks: the step's own decimals (uPlot's default keeps three, so a
// learning rate from 0.00048 to 0.0011 read "0.001" at every tick), or past 6 digits either way a
// mantissa with the step's significant digits and an exponent ("2.5e-5").
export function tickLabels(splits, step) {
  const finite = splits.filter((v) => Number.isFinite(v));
  if (!(step > 0)) step = Math.min(...finite.slice(1).map((v, i) => Math.abs(v - finite[i])).filter((d) => d > 0), 1);
  const top = Math.max(0, ...finite.map(Math.abs));
  if (top < 1e6 && top >= 1e-4) return splits.map((v) => (Number.isFinite(v) ? v.toFixed(decimalsOf(step)) : ""));
  const stepExp = Math.floor(Math.log10(step));
  const mantissa = decimalsOf(Number((step / 10 ** stepExp).toPrecision(12)));
  return splits.map((v) => {
    if (!Number.isFinite(v)) return "";
    if (v === 0) return "0";
    return v.toExponential(Math.min(20, Math.max(0, Math.floor(Math.log10(Math.abs(v))) - stepExp + mantissa))).replace("e+", "e");
  });
}

// a value under the pointer, with four significant digits (not the three decimals of uPlot's default)
export function fmtSignificant(v) {
  return Math.abs(v) >= 1e4 ? v.toFixed(0) : String(Number(v.toPrecision(4)));
}

// a value axis as wide as its longest label (uPlot's fixed 50 px cut "0.00048" short)
function axisSize(u, values, axisIdx, cycleNum) {
  const axis = u.axes[axisIdx];
  if (cycleNum > 1) return axis._size;  // settled: uPlot asks again while the layout converges
  let size = axis.ticks.size + axis.gap;
  const longest = (values || []).reduce((a, v) => (String(v).length > a.length ? String(v) : a), "");
  if (longest) {
    u.ctx.font = axis.font[0];
    size += u.ctx.measureText(longest).width / uPlot.pxRatio;
  }
  return Math.max(40, Math.ceil(size));
}

export function groupOf(metric) {
  const m = metric.toLowerCase();
  if (m.includes("loss")) return "Losses";
  if (/^lr|learning_rate/.test(m)) return "Learning rate";
  if (/map|top1|top5|top_1|top_5|acc|precision|recall|fitness|f1|iou|dice/.test(m)) return "Quality";
  return "Other";
}

const GROUP_ORDER = ["Losses", "Quality", "Learning rate", "Other"];

// series: key -> {label, group, points: Map(epoch -> value)}
export class ChartPanel {
  constructor(container) {
    this.container = container;
    this.series = new Map();
    this.charts = new Map();  // group -> {el, plot, keys}
    this.frame = null;
    this.resize = new ResizeObserver(() => this.fit());
    this.resize.observe(container);
  }

  // style (optional): {dash: [6, 4]} draws the series dashed (a sweep's trial stopped early)
  add(key, label, group, x, y, color, style) {
    if (typeof y !== "number" || !Number.isFinite(y) || typeof x !== "number") return;
    let s = this.series.get(key);
    if (!s) { s = { label, group, color, dash: style?.dash, points: new Map() }; this.series.set(key, s); }
    s.points.set(x, y);
    this.schedule();
  }

  schedule() {
    if (this.frame === null) this.frame = requestAnimationFrame(() => { this.frame = null; this.draw(); });
  }

  width() {
    return Math.max(280, Math.min(this.container.clientWidth || 600, 900));
  }

  draw() {
    const groups = new Map();
    for (const [key, s] of this.series) {
      if (!groups.has(s.group)) groups.set(s.group, []);
      groups.get(s.group).push([key, s]);
    }
    const order = [...groups.keys()].sort((a, b) => GROUP_ORDER.indexOf(a) - GROUP_ORDER.indexOf(b) || a.localeCompare(b));
    if (!this.series.size && !this.container.querySelector(".empty")) {
      put(this.container, h("p", { class: "muted empty" }, "No metrics yet: they appear with the trainer's heartbeats."));
    } else if (this.series.size) {
      this.container.querySelector(".empty")?.remove();
    }
    for (const group of order) this.drawGroup(group, groups.get(group));
  }

  drawGroup(group, entries) {
    const xs = [...new Set(entries.flatMap(([, s]) => [...s.points.keys()]))].sort((a, b) => a - b);
    const data = [xs, ...entries.map(([, s]) => xs.map((x) => (s.points.has(x) ? s.points.get(x) : null)))];
    const keys = entries.map(([k]) => k).join("\u0000");
    let chart = this.charts.get(group);
    if (!chart) {
      const el = h("div", { class: "chart", dataset: { group } }, h("h3", {}, group));
      chart = { el, plot: null, keys: null };
      this.charts.set(group, chart);
      const after = [...this.charts.keys()].sort((a, b) => GROUP_ORDER.indexOf(a) - GROUP_ORDER.indexOf(b));
      const next = after.slice(after.indexOf(group) + 1).map((g) => this.charts.get(g)?.el).find((e) => e && e.isConnected);
      this.container.insertBefore(el, next || null);
    }
    chart.el.dataset.points = String(data.slice(1).reduce((n, ys) => n + ys.filter((v) => v !== null).length, 0));
    chart.el.dataset.series = entries.map(([, s]) => s.label).join("|");
    if (chart.plot && chart.keys === keys) { chart.plot.setData(data); return; }
    chart.plot?.destroy();
    chart.keys = keys;
    chart.plot = new uPlot({
      width: this.width(), height: 220,
      scales: { x: { time: false } },
      // epochs are whole numbers: no tick at 1.5
      axes: [{ label: "epoch", values: (u, splits) => splits.map((v) => (Number.isInteger(v) ? String(v) : "")) },
        { values: (u, splits, axisIdx, space, step) => tickLabels(splits, step), size: axisSize }],
      series: [{ label: "epoch" }, ...entries.map(([, s], i) => ({
        label: s.label, stroke: s.color || seriesColor(i), width: 2, spanGaps: true, ...(s.dash ? { dash: s.dash } : {}),
        points: { show: xs.length < 60 },
        value: (u, v, seriesIdx, dataIdx) => (dataIdx === null || dataIdx === undefined ? "--" : v === null ? "" : fmtSignificant(v)),
      }))],
      legend: { live: true },
    }, data, chart.el);
  }

  fit() {
    const w = this.width();
    for (const chart of this.charts.values()) chart.plot?.setSize({ width: w, height: 220 });
  }

  destroy() {
    this.resize.disconnect();
    if (this.frame !== null) cancelAnimationFrame(this.frame);
    for (const chart of this.charts.values()) chart.plot?.destroy();
  }
}
