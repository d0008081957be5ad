// "Try the model": an image dropped (or chosen) on a finished job goes to POST
// /v1/jobs/{id}/predict; its boxes and masks are drawn over the image (draw.js: SVG in the image's
// pixel coordinates), classification's top-k listed with bars. The image is shown from a blob: URL,
// never uploaded anywhere else.

import { ApiError, api } from "./api.js";
import { put, fmtNumber, h } from "./dom.js";
import { boxColor, drawBoxes } from "./draw.js";

export function drawPrediction(prediction, imageUrl) {
  const figure = h("figure", { class: "prediction" },
    drawBoxes(prediction, imageUrl, { alt: prediction.image || "image", imgClass: "predict-image" }));
  const legend = h("ul", { class: "detections" });
  (prediction.boxes || []).forEach((box, i) => {
    const color = boxColor(box, i);
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
