// Building the page. Every string from users or trainers (ids, names, config values, event
// messages, log lines, class names) reaches the DOM as a text node or an attribute value set
// through the DOM API: nothing is ever parsed as HTML (no innerHTML anywhere in the console).

const SVG_NS = "http://www.w3.org/2000/svg";

// h("div", {class: "x", onclick: fn, dataset: {id: 1}}, "text", child, [more, children])
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  return fill(el, attrs, children);
}

export function svg(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  return fill(el, attrs, children);
}

function fill(el, attrs, children) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key === "value" && "value" in el) el.value = value;
    else if (key === "checked" || key === "disabled" || key === "selected" || key === "hidden") el[key] = Boolean(value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

export function fmtTime(value) {
  if (!value) return "";
  const d = new Date(value);
  return Number.isNaN(d.getTime()) ? String(value) : d.toLocaleString();
}

export function fmtClock(value) {
  if (!value) return "";
  const d = new Date(value);
  return Number.isNaN(d.getTime()) ? String(value) : d.toLocaleTimeString();
}

export function fmtNumber(value) {
  if (typeof value !== "number") return value === undefined || value === null ? "" : String(value);
  if (Number.isInteger(value)) return String(value);
  if (Math.abs(value) < 0.001) return String(Number(value.toPrecision(4)));  // 0.00048, not 0.0004800
  return Math.abs(value) >= 1000 ? value.toPrecision(4) : value.toFixed(4).replace(/0+$/, "0");
}

export function fmtBytes(n) {
  if (typeof n !== "number") return "";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

export function fmtDuration(seconds) {
  if (typeof seconds !== "number" || !Number.isFinite(seconds)) return "";
  const s = Math.round(seconds);
  const m = Math.floor(s / 60), hh = Math.floor(m / 60);
  return hh ? `${hh}h ${m % 60}m` : m ? `${m}m ${s % 60}s` : `${s}s`;
}

export function stateBadge(state) {
  return h("span", { class: `state state-${String(state).toLowerCase()}`, "data-state": state }, state);
}

export function progressBar(percent) {
  const p = Math.max(0, Math.min(100, Number(percent) || 0));
  const bar = h("span", { class: "bar" });
  bar.style.width = `${p}%`;  // CSSOM, allowed under the CSP (no style attribute is parsed)
  return h("span", { class: "progress", role: "progressbar", "aria-valuenow": p.toFixed(0),
                     "aria-valuemin": "0", "aria-valuemax": "100", title: `${p.toFixed(1)}%` }, bar);
}

export function setProgress(el, percent) {
  const p = Math.max(0, Math.min(100, Number(percent) || 0));
  el.querySelector(".bar").style.width = `${p}%`;
  el.setAttribute("aria-valuenow", p.toFixed(0));
  el.title = `${p.toFixed(1)}%`;
}

let toastTimer = null;
export function toast(message, kind = "info") {
  const box = document.getElementById("toast");
  box.textContent = message;
  box.className = `show ${kind}`;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { box.className = ""; }, 5000);
}

// a form control with its visible label (every input labelled: a placeholder is no label), then
// whatever follows it (a hint, an error line)
export function labelled(label, control, ...after) {
  return h("div", { class: "field" }, h("label", { for: control.id }, label), control, after);
}

export function section(title, ...children) {
  return h("section", { class: "card" }, h("h2", {}, title), ...children);
}

// a value of a job's config, shown as text (objects as JSON)
export function showValue(value) {
  if (value === null || value === undefined) return "";
  if (typeof value === "object") return JSON.stringify(value);
  return typeof value === "number" ? fmtNumber(value) : String(value);
}

// replaces el's children (null, undefined and false are skipped, arrays flattened)
export function put(el, ...children) {
  return append(clear(el), children);
}
