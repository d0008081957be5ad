// Datasets: the list, one dataset's versions with their validation reports and a grid of sample
// images with their labels drawn (draw.js, as predictions are), and an upload from
// the browser: the archive's SHA-256 (its version), POST /v1/datasets for presigned part URLs,
// each part PUT straight to S3 with a progress bar, then .../complete and the report once
// validation has run. The hash needs the Web Crypto API, which browsers offer on https:// or
// localhost pages only, and reads the archive into memory: past BROWSER_MAX, use `vtp datasets upload`.
// A new dataset goes to a project where the user's role is member or admin (the header's picker's
// first); a new version of a dataset to that dataset's project. Users who are members nowhere get
// no upload form.

import { ApiError, get, pages, post } from "./api.js";
import { put, fmtBytes, fmtTime, h, labelled, section } from "./dom.js";
import { COLORS, drawBoxes } from "./draw.js";
import * as session from "./session.js";

const BROWSER_MAX = 2 * 1024 ** 3;

function versionState(state) {
  return h("span", { class: `state vstate-${state}`, "data-state": state }, state);
}

function report(v) {
  const r = v.report;
  if (!r) return h("p", { class: "muted" }, v.state === "validating" ? "Validation is running…" : "No report yet.");
  return h("div", { class: "report" },
    h("p", {}, `${r.format || "unknown format"} · ${r.task_type || "unknown task"} · ${r.images} images · ${r.annotations} annotations · validated in ${r.seconds.toFixed(1)} s`),
    h("p", {}, "splits: ", Object.entries(r.splits).map(([k, n]) => `${k} ${n}`).join(", ") || "none"),
    h("p", {}, "classes: ", r.classes.length ? h("span", { class: "classes" }, r.classes.map((c) => h("span", { class: "tag" }, c))) : "none"),
    r.problems_total
      ? h("div", {}, h("p", { class: "error" }, `${r.problems_total} problem(s)${r.problems_total > r.problems.length ? `, the first ${r.problems.length}:` : ":"}`),
          h("ul", { class: "problems" }, r.problems.map((p) => h("li", {}, p.file ? h("code", {}, p.file) : null, p.file ? " " : null, p.problem))))
      : h("p", { class: "ok" }, "No problems found."));
}

// one sample: the thumbnail with its boxes and masks (coloured by class), the class of a
// classification image as its caption, and the file it came from
function sample(s, classes) {
  const boxes = s.labels.filter((l) => Array.isArray(l.xyxy));
  const named = s.labels.filter((l) => !Array.isArray(l.xyxy)).map((l) => l.class_name);
  const colorOf = (box, i) => COLORS[(classes.includes(box.class_name) ? classes.indexOf(box.class_name) : i) % COLORS.length];
  const stage = drawBoxes({ width: s.width, height: s.height, boxes }, s.url, { alt: s.file, colorOf });
  // labels in the thumbnail's units: about 1/14 of its width reads the same in every cell
  for (const t of stage.querySelectorAll(".box-label")) {
    t.style.fontSize = `${Math.max(5, Math.round(s.width / 14))}px`;
    t.style.strokeWidth = `${Math.max(0.5, s.width / 100)}px`;  // the dark halo (console.css)
  }
  return h("figure", { class: "sample", title: s.file }, stage,
    h("figcaption", {}, named.length ? h("span", { class: "sample-class" }, named.join(", ")) : null,
      h("span", { class: "sample-file" }, s.file)));
}

// GET .../versions/{version}/samples as a grid (up to 12 thumbnails made by validation)
function samples(datasetId, v) {
  const grid = h("div", { class: "samples", "data-version": v.version }, h("p", { class: "muted small" }, "Loading samples…"));
  (async () => {
    try {
      const page = await get(`/v1/datasets/${encodeURIComponent(datasetId)}/versions/${encodeURIComponent(v.version)}/samples`);
      put(grid, page.items.length ? page.items.map((s) => sample(s, v.classes || []))
        : h("p", { class: "muted small" }, "No sample images."));
    } catch (err) {
      put(grid, h("p", { class: "error" }, `Samples: ${err.message}`));
    }
  })();
  return grid;
}

function detail(view, id) {
  const box = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  view.append(h("p", {}, h("a", { href: "#/datasets" }, "← all datasets")), box);
  let timer = null;
  const grids = new Map();  // version -> its samples grid: fetched once, kept across reloads
  const grid = (v) => {
    if (v.state !== "valid" && v.state !== "invalid") return null;
    if (!grids.has(v.version)) grids.set(v.version, samples(id, v));
    return grids.get(v.version);
  };
  async function load() {
    try {
      const d = await get(`/v1/datasets/${encodeURIComponent(id)}`);
      put(box, h("h1", {}, d.id), d.description ? h("p", {}, d.description) : null,
        h("p", { class: "muted" }, `project ${d.project_id} · newest valid version: ${d.latest_valid_version || "none"} · created ${fmtTime(d.created_at)}`),
        ...d.versions.map((v) => section(h("span", {}, h("span", { class: "mono" }, v.version.slice(0, 12)), " ", versionState(v.state)),
          h("p", { class: "muted small" }, `${v.filename} · ${fmtBytes(v.size_bytes)} · uploaded ${fmtTime(v.created_at)} · ${v.uri}`),
          report(v), grid(v))));
      if (d.versions.some((v) => v.state === "validating" || v.state === "uploading")) timer = setTimeout(load, 2000);
    } catch (err) {
      put(box, h("p", { class: "error", role: "alert" }, err instanceof ApiError && err.status === 404 ? `No dataset ${id}.` : err.message));
    }
  }
  load();
  return () => clearTimeout(timer);
}

function putPart(url, blob, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("PUT", url);
    xhr.upload.addEventListener("progress", (ev) => onProgress(ev.loaded));
    xhr.addEventListener("load", () => (xhr.status >= 200 && xhr.status < 300 ? resolve() : reject(new Error(`storage answered ${xhr.status}`))));
    xhr.addEventListener("error", () => reject(new Error("the storage could not be reached (network or CORS)")));
    xhr.send(blob);
  });
}

// known: dataset id -> its project (a new version goes there: no project is sent for it)
function uploadForm(known, onDone) {
  const id = h("input", { id: "upload-id", required: true, pattern: "[A-Za-z0-9][A-Za-z0-9._\\-]{0,127}", placeholder: "e.g. parts-2024",
                           autocomplete: "off" });
  const file = h("input", { id: "upload-file", type: "file", required: true, accept: ".zip,.tar,.tar.gz,.tgz" });
  const description = h("input", { id: "upload-description", placeholder: "optional" });
  const { control: project, extra: projects } = session.projectControl("upload-project");
  const bar = h("progress", { id: "upload-progress", max: "100", value: "0", hidden: true });
  const status = h("p", { id: "upload-status", role: "status" });
  const button = h("button", { type: "submit", class: "primary" }, "Upload");
  const form = h("form", { class: "upload", id: "upload-form" }, labelled("Dataset id", id),
    labelled("Archive (.zip, .tar, .tar.gz)", file), labelled("Project (of a new dataset)", project), projects,
    labelled("Description", description), button, bar, status);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = file.files[0];
    if (!f || !id.value.trim()) { status.textContent = "Choose an archive and a dataset id."; return; }
    if (!globalThis.crypto?.subtle) { status.textContent = "This page is not https:// or localhost: the browser offers no hashing here. Use `vtp datasets upload`."; return; }
    if (f.size > BROWSER_MAX) { status.textContent = `Archives over ${fmtBytes(BROWSER_MAX)} upload with \`vtp datasets upload\`.`; return; }
    button.disabled = true;
    try {
      status.textContent = "Hashing…";
      const digest = await crypto.subtle.digest("SHA-256", await f.arrayBuffer());
      const sha256 = [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
      const body = { dataset_id: id.value.trim(), filename: f.name, size_bytes: f.size, sha256, description: description.value };
      if (!known.has(body.dataset_id) && project.value.trim()) body.project_id = project.value.trim();
      const upload = await post("/v1/datasets", body);
      if (upload.urls.length) {
        bar.hidden = false;
        const sent = new Map();
        let done = upload.parts_done.reduce((n, part) => n + Math.min(upload.part_size, f.size - (part - 1) * upload.part_size), 0);
        for (const { part_number: n, url } of upload.urls) {
          const blob = f.slice((n - 1) * upload.part_size, n * upload.part_size);
          await putPart(url, blob, (loaded) => {
            sent.set(n, loaded);
            const total = done + [...sent.values()].reduce((a, b) => a + b, 0);
            bar.value = Math.round((100 * total) / f.size);
            status.textContent = `Uploading… ${fmtBytes(total)} of ${fmtBytes(f.size)}`;
          });
          sent.delete(n);
          done += blob.size;
        }
        bar.value = 100;
      }
      if (upload.state === "uploading") await post(`/v1/datasets/${encodeURIComponent(upload.dataset_id)}/versions/${upload.version}/complete`);
      status.textContent = upload.created ? "Uploaded: validation is running." : "This content was uploaded before.";
      onDone(upload.dataset_id);
    } catch (err) {
      status.textContent = err instanceof ApiError ? err.message : `Upload failed: ${err.message}`;
      status.className = "error";
    } finally {
      button.disabled = false;
    }
  });
  return form;
}

export function render(view, id) {
  if (id) return detail(view, id);
  const body = h("tbody", { id: "datasets-body" });
  const known = new Map();
  const upload = session.canSubmitSomewhere()
    ? section("Upload", uploadForm(known, (dsId) => { location.hash = `#/datasets/${encodeURIComponent(dsId)}`; })) : null;
  view.append(h("h1", {}, "Datasets"), upload,
    h("div", { class: "table-wrap" }, h("table", { class: "datasets" },
      h("thead", {}, h("tr", {}, [["Dataset"], ["Newest version", "c-version"], ["State"], ["Images"], ["Classes", "c-classes"],
        ["Updated", "c-updated"]].map(([t, c]) => h("th", { class: c }, t)))), body)));
  (async () => {
    try {
      for await (const items of pages("/v1/datasets", { limit: 200 })) {
        for (const d of items) {
          known.set(d.id, d.project_id);
          const v = d.versions[0];
          body.append(h("tr", {}, h("td", {}, h("a", { href: `#/datasets/${encodeURIComponent(d.id)}` }, d.id)),
            h("td", { class: "c-version mono" }, v ? v.version.slice(0, 12) : ""), h("td", {}, v ? versionState(v.state) : ""),
            h("td", {}, v ? v.images : ""), h("td", { class: "c-classes" }, v ? v.classes.join(", ") : ""),
            h("td", { class: "c-updated muted small" }, fmtTime(d.updated_at))));
        }
      }
      if (!body.children.length) body.append(h("tr", {}, h("td", { colspan: "6", class: "muted" }, "No datasets yet.")));
    } catch (err) {
      body.append(h("tr", {}, h("td", { colspan: "6", class: "error" }, err.message)));
    }
  })();
  return null;
}

