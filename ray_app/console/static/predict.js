// "Try the model": an image dropped (or chosen) on a finished job goes to POST
// /v1/jobs/{id}/predict; its boxes and masks are drawn over the image (SVG in the image's pixel
// coordinates), classification's top-k listed with bars. The image is shown from a blob: URL,
// never uploaded anywhere else.

import { ApiError, api } from "./api.js";
import { put, fmtNumber, h, svg } from "./dom.js";

const COLORS = ["#ff3b30", "#34c759", "#007aff", "#ff9500", "#af52de", "#5ac8fa", "#ffcc00", "#ff2d55"];

export function drawPrediction(prediction, imageUrl) {
  const img = h("img", { src: imageUrl, alt: prediction.image || "image", class: "predict-image" });
  const figure = h("figure", { class: "prediction" });
  const overlay = svg("svg", { class: "overlay", preserveAspectRatio: "none" });
  figure.append(h("div", { class: "stage" }, img, overlay));
  const legend = h("ul", { class: "detections" });
  img.addEventListener("load", () => {
    const w = prediction.width || img.naturalWidth, hgt = prediction.height || img.naturalHeight;
    overlay.setAttribute("viewBox", `0 0 ${w} ${hgt}`);
  });
  (prediction.boxes || []).forEach((box, i) => {
    const color = COLORS[(box.class_id ?? i) % COLORS.length];
    const [x1, y1, x2, y2] = box.xyxy;
    const g = svg("g", { class: "det" });
    if (Array.isArray(box.polygon) && box.polygon.length) {
      g.append(svg("polygon", { class: "mask", points: box.polygon.map(([x, y]) => `${x},${y}`).join(" "), fill: color, stroke: color }));
    }
    g.append(svg("rect", { class: "box", x: x1, y: y1, width: Math.max(0, x2 - x1), height: Math.max(0, y2 - y1), stroke: color }),
             svg("text", { x: x1 + 2, y: Math.max(y1 - 3, 10), fill: color, class: "box-label" }, `${box.class_name} ${fmtNumber(box.confidence)}`));
    overlay.append(g);
    legend.append(h("li", {}, h("span", { class: "swatch", dataset: { color } }), `${box.class_name} · ${fmtNumber(box.confidence)} · [${box.xyxy.map((v) => Math.round(v)).join(", ")}]`));
  });
  for (const sw of legend.querySelectorAll(".swatch")) sw.style.background = sw.dataset.color;
  if (prediction.top_k) {
    for (const c of prediction.top_k) {
      const bar = h("span", { class: "bar" });
      bar.style.width = `${Math.round(c.probability * 100)}%`;
      legend.append(h("li", { class: "topk" }, h("span", { class: "label" }, c.class_name),
        h("span", { class: "progress" }, bar), h("span", { class: "small" }, fmtNumber(c.probability))));
    }
  }
  if (prediction.boxes && !prediction.boxes.length) legend.append(h("li", { class: "muted" }, "nothing detected"));
  figure.append(h("figcaption", {}, prediction.image || ""), legend);
  return figure;
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
