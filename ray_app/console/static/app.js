// The console's shell: sign-in, navigation and the hash router (#/jobs, #/jobs/<id>, #/submit,
// #/compare, #/datasets). Each page module's render(main, params) returns a cleanup function
// that closes its streams when the user leaves the page.

import { ApiError, get, onUnauthorized, token } from "./api.js";
import { clear, put, h } from "./dom.js";
import * as compare from "./compare.js";
import * as datasets from "./datasets.js";
import * as job from "./job.js";
import * as jobs from "./jobs.js";
import * as submit from "./submit.js";

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const signout = document.getElementById("signout");
let cleanup = null;

export function parseHash() {
  const [path, search] = (location.hash.replace(/^#/, "") || "/jobs").split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  return { parts, query: new URLSearchParams(search || "") };
}

function signInPage(reason) {
  nav.hidden = true;
  signout.hidden = true;
  const input = h("input", { id: "token", type: "password", autocomplete: "off", required: true, placeholder: "API token" });
  const error = h("p", { class: "error", role: "alert" }, reason || "");
  const form = h("form", { class: "card signin", id: "signin" },
    h("h1", {}, "Sign in"),
    h("p", { class: "muted" }, "Paste an API token of this platform. It stays in this tab only (session storage)."),
    h("label", { for: "token" }, "API token"), input,
    h("button", { type: "submit", class: "primary" }, "Sign in"), error);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    token.set(input.value.trim());
    try {
      await get("/v1/info");
      route();
    } catch (err) {
      token.clear();
      error.textContent = err instanceof ApiError && err.status === 401 ? "That token was refused." : `Cannot reach the API: ${err.message}`;
    }
  });
  put(main, form);
  input.focus();
}

function route() {
  if (cleanup) { cleanup(); cleanup = null; }
  if (!token.get()) { signInPage(); return; }
  nav.hidden = false;
  signout.hidden = false;
  const { parts, query } = parseHash();
  const page = parts[0] || "jobs";
  for (const a of nav.querySelectorAll("a")) a.classList.toggle("active", a.dataset.nav === page);
  clear(main);
  const view = h("div", { class: "page", id: `page-${page}` });
  main.append(view);
  let render;
  if (page === "jobs" && parts[1]) render = () => job.render(view, parts[1]);
  else if (page === "jobs") render = () => jobs.render(view, query);
  else if (page === "submit") render = () => submit.render(view, query);
  else if (page === "compare") render = () => compare.render(view, query);
  else if (page === "datasets") render = () => datasets.render(view, parts[1]);
  else render = () => { view.append(h("p", {}, "No such page. "), h("a", { href: "#/jobs" }, "Jobs")); };
  cleanup = render() || null;
}

onUnauthorized(() => {
  if (document.getElementById("signin")) return;  // the sign-in form answers its own attempt
  token.clear();
  if (cleanup) { cleanup(); cleanup = null; }
  signInPage("Your token was refused: sign in again.");
});
signout.addEventListener("click", () => { token.clear(); route(); });
window.addEventListener("hashchange", route);
route();
