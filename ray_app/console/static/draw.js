// Labels drawn over an image: boxes (rect.box), masks (polygon.mask) and a text label per box, in
// an SVG overlay whose viewBox is the image's pixel size, so the coordinates are the image's own.
// Used by "Try the model" (predictions, with a confidence: each label numbered as its row in the
// detections table, on a background of its box's colour, laid out by labels.js) and the dataset
// page (sample images with their ground truth, without one). Class names reach the SVG as text nodes.

import { h, svg } from "./dom.js";

export const COLORS = ["#ff3b30", "#34c759", "#007aff", "#ff9500", "#af52de", "#5ac8fa", "#ffcc00", "#ff2d55"];

export function boxColor(box, i) {
  return COLORS[(box.class_id ?? i) % COLORS.length];
}

// the text of a box's label: its class, and its confidence when it has one
export function boxText(box) {
  return typeof box.confidence === "number" ? `${box.class_name} ${fmtConfidence(box.confidence)}` : String(box.class_name ?? "");
}

export function fmtConfidence(value) {
  return typeof value === "number" ? value.toFixed(2) : "";
}

// black or white, whichever reads better on this colour (#rrggbb)
export function textOn(color) {
  const [r, g, b] = [1, 3, 5].map((i) => parseInt(color.slice(i, i + 2), 16) / 255)
    .map((c) => (c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4));
  const luminance = 0.2126 * r + 0.7152 * g + 0.0722 * b;
  return (luminance + 0.05) / 0.05 > 1.05 / (luminance + 0.05) ? "#000" : "#fff";
}

// {width, height, boxes: [{xyxy, class_name, class_id?, polygon?, confidence?}]} over the image at
// imageUrl: a <div class="stage"> holding the <img> and the overlay. Without width/height the
// overlay takes the image's natural size once it has loaded. colorOf(box, i) picks each box's colour;
// `numbered` labels box i "i+1 class confidence" in a g.label with its background (rect.label-bg),
// all in a layer over every box, so that no box's outline crosses a label.
export function drawBoxes({ width, height, boxes }, imageUrl, { alt, imgClass, colorOf = boxColor, numbered = false } = {}) {
  const img = h("img", { src: imageUrl, alt: alt || "image", class: imgClass });
  const overlay = svg("svg", { class: "overlay", preserveAspectRatio: "none" });
  const labels = svg("g", { class: "labels" });
  if (width && height) overlay.setAttribute("viewBox", `0 0 ${width} ${height}`);
  img.addEventListener("load", () => {
    const w = width || img.naturalWidth, hgt = height || img.naturalHeight;
    overlay.setAttribute("viewBox", `0 0 ${w} ${hgt}`);
  });
  (boxes || []).forEach((box, i) => {
    if (!Array.isArray(box.xyxy) || box.xyxy.length !== 4) return;
    const color = colorOf(box, i);
    const [x1, y1, x2, y2] = box.xyxy;
    const g = svg("g", { class: "det", dataset: { index: i } });
    if (Array.isArray(box.polygon) && box.polygon.length) {
      g.append(svg("polygon", { class: "mask", points: box.polygon.map(([x, y]) => `${x},${y}`).join(" "), fill: color, stroke: color }));
    }
    g.append(svg("rect", { class: "box", x: x1, y: y1, width: Math.max(0, x2 - x1), height: Math.max(0, y2 - y1), stroke: color }));
    if (numbered) {
      const long = `${i + 1} ${boxText(box)}`;
      labels.append(svg("g", { class: "label", dataset: { index: i, xyxy: box.xyxy.join(","), long, short: String(i + 1) } },
        svg("rect", { class: "label-bg", fill: color }), svg("text", { x: x1, y: y1, fill: textOn(color), class: "box-label" }, long)));
    } else {
      g.append(svg("text", { x: x1 + 2, y: Math.max(y1 - 3, 10), fill: color, class: "box-label" }, boxText(box)));
    }
    overlay.append(g);
  });
  if (numbered) overlay.append(labels);
  return h("div", { class: "stage" }, img, overlay);
}
