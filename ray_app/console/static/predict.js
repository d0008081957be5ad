// "Try the model": an image dropped (or chosen) on a finished job goes to POST
// /v1/jobs/{id}/predict; its boxes and masks are drawn over the image (draw.js: SVG in the image's
// pixel coordinates), classification's top-k listed with bars. The image is scaled to the panel
// (a 160 px image is not left at 160 px), its labels kept readable at that scale (labels.js), and
// every detection listed in a table beside it (under it on a phone): number, class, confidence,
// box. The image is shown from a blob: URL, never uploaded anywhere else.

import { ApiError, api } from "./api.js";
import { put, fmtNumber, h } from "./dom.js";
import { boxColor, drawBoxes, fmtConfidence } from "./draw.js";
import { keepLabelsReadable } from "./labels.js";

function swatch(color) {
  const el = h("span", { class: "swatch", "aria-hidden": "true" });
  el.style.background = color;  // CSSOM, allowed under the CSP
  return el;
}

// one row per box, numbered as its label; a row hovered or focused marks its box
function detectionsTable(boxes, stage) {
  const rows = boxes.map((box, i) => {
    const marked = stage.querySelectorAll(`.det[data-index="${i}"], .label[data-index="${i}"]`);
    const tr = h("tr", { tabindex: "0", dataset: { index: i } },
      h("td", { class: "num" }, swatch(boxColor(box, i)), String(i + 1)), h("td", {}, box.class_name),
      h("td", { class: "num" }, fmtConfidence(box.confidence)),
      h("td", { class: "muted small box-xyxy", title: "x1, y1, x2, y2" }, Array.isArray(box.xyxy) ? box.xyxy.map((v) => Math.round(v)).join(", ") : ""));
    const mark = (on) => () => { for (const el of [tr, ...marked]) el.classList.toggle("active", on); };
    for (const [type, on] of [["mouseenter", true], ["mouseleave", false], ["focus", true], ["blur", false]]) tr.addEventListener(type, mark(on));
    return tr;
  });
  return h("table", { class: "detections-table" },
    h("thead", {}, h("tr", {}, ["#", "class", "confidence", "box (px)"].map((t) => h("th", {}, t)))),
    h("tbody", {}, rows));
}

export function drawPrediction(prediction, imageUrl) {
  const boxes = prediction.boxes || [];
  const stage = drawBoxes(prediction, imageUrl, { alt: prediction.image || "image", imgClass: "predict-image", numbered: true });
  const img = stage.querySelector("img");
  // the stage's width follows the image's proportions (console.css: as wide as the panel, at most 560 px high)
  const aspect = (w, hh) => { if (w && hh) stage.style.setProperty("--aspect", String(w / hh)); };
  aspect(prediction.width, prediction.height);
  img.addEventListener("load", () => aspect(img.naturalWidth, img.naturalHeight));
  keepLabelsReadable(stage);
  const side = h("div", { class: "detections" });
  if (boxes.length) {
    const note = h("p", { class: "muted small crowded-note" });
    stage.addEventListener("labels", (ev) => {
      note.textContent = ev.detail.left ? `${ev.detail.left} of ${boxes.length} labels left out where boxes pile up: point at or tap a row to see its label.` : "";
    });
    side.append(note, detectionsTable(boxes, stage));
  }
  if (prediction.top_k) {
    const list = h("ul", { class: "topk-list" });
    for (const c of prediction.top_k) {
      const bar = h("span", { class: "bar" });
      bar.style.width = `${Math.round(c.probability * 100)}%`;
      list.append(h("li", { class: "topk" }, h("span", { class: "label" }, c.class_name),
        h("span", { class: "progress" }, bar), h("span", { class: "small" }, fmtNumber(c.probability))));
    }
    side.append(list);
  }
  if (prediction.boxes && !boxes.length) side.append(h("p", { class: "muted" }, "nothing detected"));
  return h("figure", { class: "prediction" }, stage,
    h("figcaption", {}, h("p", { class: "image-name" }, prediction.image || ""), side));
}

export function predictPanel(job) {
  const result = h("div", { class: "predict-result", id: "predict-result" });
  const conf = h("input", { type: "number", min: "0", max: "1", step: "0.05", value: "0.25", id: "predict-conf", "aria-label": "confidence" });
  const input = h("input", { type: "file", accept: "image/*", id: "predict-file", multiple: true });
  const drop = h("div", { class: "dropzone", id: "predict-drop", tabindex: "0" },
    "Drop an image here, or ", h("label", { for: "predict-file", class: "link" }, "choose one"), input);

  async function run(files) {
    const images = [...files].filter((f) => f.type.startsWith("image/") || /\.(png|jpe?g|bmp|webp|tiff?)$/i.test(f.name));
    if (!images.length) return;
    put(result, h("p", { class: "muted" }, "Predicting… (the first call loads the model)"));
    const body = new FormData();
    for (const f of images) body.append("files", f, f.name);
    body.append("conf", conf.value || "0.25");
    try {
      const answer = await api("POST", `/v1/jobs/${encodeURIComponent(job.id)}/predict`, { body });
      put(result, h("p", { class: "muted small" }, `checkpoint ${answer.checkpoint} · ${fmtNumber(answer.inference_seconds)} s`));
      answer.predictions.forEach((p, i) => result.append(drawPrediction(p, URL.createObjectURL(images[i]))));
    } catch (err) {
      put(result, h("p", { class: "error", role: "alert" }, err instanceof ApiError ? err.message : String(err)));
    }
  }
  input.addEventListener("change", () => run(input.files));
  drop.addEventListener("dragover", (ev) => { ev.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (ev) => { ev.preventDefault(); drop.classList.remove("over"); run(ev.dataTransfer.files); });
  return h("div", { class: "predict" }, h("div", { class: "row" }, drop, h("label", {}, "confidence ", conf)), result);
}
