// What the console's forms share (a new job, a new sweep): a labelled field with its error slot,
// errors shown at their fields, and textareas that must hold a JSON object.
import { h, labelled } from "./dom.js";

// `prefix`: the control's id is `<prefix>-<name>` unless it has one already
export function field(name, label, control, hint, prefix = "f") {
  control.id = control.id || `${prefix}-${name}`;
  control.name = name;
  const el = labelled(label, control, hint ? h("small", { class: "muted" }, hint) : null, h("small", { class: "field-error", role: "alert" }));
  el.dataset.field = name;
  return el;
}

// errors: field name -> message; every other field of the form is cleared
export function showErrors(form, errors) {
  for (const el of form.querySelectorAll(".field")) {
    const msg = errors[el.dataset.field] || "";
    el.querySelector(".field-error").textContent = msg;
    el.classList.toggle("invalid", Boolean(msg));
  }
}

// each [key, textarea]: its JSON object into body[key] (empty: {}), or why not into errors[key]
export function readJsonObjects(pairs, body, errors) {
  for (const [k, el] of pairs) {
    try {
      const value = JSON.parse(el.value.trim() || "{}");
      if (value === null || typeof value !== "object" || Array.isArray(value)) errors[k] = "must be a JSON object";
      else body[k] = value;
    } catch (err) { errors[k] = `not valid JSON: ${err.message}`; }
  }
}
