// The numbered labels of a prediction (draw.js) kept readable at the size the image is shown: the
// overlay's units are the image's own pixels, so a label sized in them is huge over a 160 px image
// scaled up to the panel and unreadable over a 4000 px photo scaled down. Each layout sizes the
// text in screen pixels, puts each label above its box (inside its top edge at the image's top),
// and where boxes pile up, a label that would cover one already placed shrinks to the box's
// number, or is left out: the detections table beside the image lists every box, and a row
// hovered or focused shows its box's label (console.css, .label.active). Laid out again on resize.

const LABEL_PX = 12;  // the text's size on screen
const PAD_PX = 2;

const overlaps = (a, b) => a[0] < b[2] && b[0] < a[2] && a[1] < b[3] && b[1] < a[3];

function layout(stage) {
  const img = stage.querySelector("img");
  const overlay = stage.querySelector("svg.overlay");
  const view = overlay.viewBox.baseVal;
  if (!view || !view.width || !img.clientWidth) return;  // not shown yet, or its size not known yet
  const unit = view.width / img.clientWidth;  // image pixels per screen pixel
  const font = LABEL_PX * unit, pad = PAD_PX * unit, height = font + 2 * pad;
  const placed = [];
  let left = 0;
  for (const label of overlay.querySelectorAll(".labels .label")) {
    const text = label.querySelector("text"), bg = label.querySelector("rect"), words = label.dataset;
    const [x1, y1] = words.xyxy.split(",").map(Number);
    label.classList.remove("crowded");  // measured while displayed
    text.style.fontSize = `${font}px`;
    let spot = null, fallback = null;
    for (const shown of [words.long, words.short]) {
      text.textContent = shown;
      const width = text.getComputedTextLength() + 2 * pad;
      const x = Math.max(0, Math.min(x1, view.width - width));
      const y = y1 - height >= 0 ? y1 - height : Math.max(0, y1);
      const rect = [x, y, x + width, y + height];
      fallback = fallback || rect;
      if (!placed.some((p) => overlaps(p, rect))) { spot = rect; break; }
    }
    if (!spot) {  // left out, but placed in full for when its row is hovered
      text.textContent = words.long;
      spot = fallback;
      label.classList.add("crowded");
      left += 1;
    } else {
      placed.push(spot);
    }
    const [x, y, x2, y2] = spot;
    for (const [k, v] of Object.entries({ x, y, width: x2 - x, height: y2 - y })) bg.setAttribute(k, String(v));
    text.setAttribute("x", String(x + pad));
    text.setAttribute("y", String(y + pad + 0.82 * font));  // the baseline: most of the font's height below the top
  }
  stage.dataset.labelsLeftOut = String(left);
  stage.dispatchEvent(new CustomEvent("labels", { detail: { left } }));
}

export function keepLabelsReadable(stage) {
  new ResizeObserver(() => layout(stage)).observe(stage);
  stage.querySelector("img").addEventListener("load", () => layout(stage));
}
