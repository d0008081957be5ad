// The console's shell: sign-in, the header (who is signed in, the project picker, navigation) and
// the hash router (#/jobs, #/jobs/<id>, #/submit, #/compare, #/datasets, #/projects,
// #/projects/<id>, #/tokens, #/sweeps, #/sweeps/<id>, #/sweeps/new?from=<job>, #/queue). Each navigation reads the user's roles again (session.js) before the
// page draws, so it offers only what they may do. Each page module's render(main, params) returns a
// cleanup function that closes its streams when the user leaves the page.

import { ApiError, get, onUnauthorized, token } from "./api.js";
import { clear, put, h } from "./dom.js";
import * as compare from "./compare.js";
import * as datasets from "./datasets.js";
import * as job from "./job.js";
import * as jobs from "./jobs.js";
import * as projects from "./projects.js";
import * as queue from "./queue.js";
import * as session from "./session.js";
import * as submit from "./submit.js";
import * as sweep from "./sweep.js";
import * as sweepform from "./sweepform.js";
import * as sweeps from "./sweeps.js";
import * as tokens from "./tokens.js";

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const signout = document.getElementById("signout");
const projectBar = document.getElementById("project-bar");
const picker = document.getElementById("project-picker");
const membersLink = document.getElementById("members-link");
const account = document.getElementById("account");
const whoami = document.getElementById("whoami");
const tokensLink = document.getElementById("tokens-link");
const submitLink = nav.querySelector('a[data-nav="submit"]');
let cleanup = null;
let generation = 0;  // a navigation that started later wins over one still waiting for the user's roles

export function parseHash() {
  const [path, search] = (location.hash.replace(/^#/, "") || "/jobs").split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  return { parts, query: new URLSearchParams(search || "") };
}

function signedOut() {
  for (const el of [nav, signout, projectBar, account]) el.hidden = true;
}

// the project a page is about, shown by the picker: a jobs list's filter, a project's page
function pageProject(page, parts, query) {
  if ((page === "jobs" || page === "sweeps") && !parts[1] && query.has("project_id")) return query.get("project_id");
  if (page === "projects" && parts[1]) return parts[1];
  return null;
}

function drawHeader(page, parts, query) {
  const me = session.user();
  for (const el of [nav, signout, projectBar, account]) el.hidden = false;
  submitLink.hidden = !session.canSubmitSomewhere();
  tokensLink.classList.toggle("active", page === "tokens");
  // the display name (the user id when there is none), the id and the token's name in its title
  put(whoami, h("span", { class: "user", id: "whoami-user", title: `${me.user_id}, signed in with the token ${me.token_name}` },
    me.display_name || me.user_id),
  me.platform_admin ? [" ", h("span", { class: "tag", id: "platform-admin" }, "platform admin")] : null);

  const list = session.projectList();
  const listed = (id) => list.some((p) => p.id === id);
  if (session.chosen.get() && !listed(session.chosen.get())) session.chosen.set("");  // not theirs (any more)
  const own = pageProject(page, parts, query);
  if (own !== null && (own === "" || listed(own))) session.chosen.set(own);
  const shown = own ?? session.chosen.get();
  put(picker, h("option", { value: "" }, "all my projects"),
    list.map((p) => h("option", { value: p.id, selected: p.id === shown }, p.your_role ? `${p.id} (${p.your_role})` : p.id)),
    shown && !listed(shown) ? h("option", { value: shown, selected: true }, shown) : null);
  picker.value = shown;
  if (shown) {
    membersLink.href = `#/projects/${encodeURIComponent(shown)}`;
    membersLink.textContent = session.can("manage_members", shown) ? "Manage members" : "Members";
  } else {
    membersLink.href = "#/projects";
    membersLink.textContent = "Projects";
  }
}

// the picker: the jobs list shows the chosen project's jobs, a project's page the chosen project,
// the forms offer it first; other pages keep what they show (a new token's secret among them)
picker.addEventListener("change", () => {
  const value = picker.value;
  session.chosen.set(value);
  const { parts, query } = parseHash();
  const page = parts[0] || "jobs";
  if (page === "jobs" || (page === "sweeps" && parts[1] !== "new")) {
    const q = parts[1] ? new URLSearchParams() : query;
    q.delete("cursor");
    if (value) q.set("project_id", value); else q.delete("project_id");
    location.hash = `#/${page}${q.toString() ? `?${q}` : ""}`;
  } else if (page === "projects") {
    location.hash = value ? `#/projects/${encodeURIComponent(value)}` : "#/projects";
  } else if (page === "submit" || (page === "datasets" && !parts[1]) || (page === "sweeps" && parts[1] === "new")) {
    route();
  } else {
    drawHeader(page, parts, query);
  }
});

function signInPage(reason) {
  signedOut();
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

async function route() {
  const gen = ++generation;
  if (cleanup) { cleanup(); cleanup = null; }
  if (!token.get()) { signInPage(); return; }
  const { parts, query } = parseHash();
  const page = parts[0] || "jobs";
  for (const a of nav.querySelectorAll("a")) a.classList.toggle("active", a.dataset.nav === page);
  clear(main);
  try {
    await session.load();
  } catch (err) {
    if (gen !== generation || (err instanceof ApiError && err.status === 401)) return;  // 401: the sign-in page
    put(main, h("p", { class: "error", role: "alert" }, `Cannot reach the API: ${err.message}`),
      h("button", { type: "button", onclick: () => route() }, "Try again"));
    return;
  }
  if (gen !== generation) return;
  drawHeader(page, parts, query);
  const view = h("div", { class: "page", id: `page-${page}` });
  main.append(view);
  let render;
  if (page === "jobs" && parts[1]) render = () => job.render(view, parts[1]);
  else if (page === "jobs") {
    if (!query.has("project_id") && session.chosen.get()) query.set("project_id", session.chosen.get());
    render = () => jobs.render(view, query);
  } else if (page === "submit") render = () => submit.render(view, query);
  else if (page === "compare") render = () => compare.render(view, query);
  else if (page === "datasets") render = () => datasets.render(view, parts[1]);
  else if (page === "projects") render = () => projects.render(view, parts[1]);
  else if (page === "tokens") render = () => tokens.render(view);
  else if (page === "queue") render = () => queue.render(view);
  else if (page === "sweeps" && parts[1] === "new") render = () => sweepform.render(view, query);
  else if (page === "sweeps" && parts[1]) render = () => sweep.render(view, parts[1]);
  else if (page === "sweeps") {
    if (!query.has("project_id") && session.chosen.get()) query.set("project_id", session.chosen.get());
    render = () => sweeps.render(view, query);
  }
  else render = () => { view.append(h("p", {}, "No such page. "), h("a", { href: "#/jobs" }, "Jobs")); };
  cleanup = render() || null;
}

onUnauthorized(() => {
  if (document.getElementById("signin")) return;  // the sign-in form answers its own attempt
  token.clear();
  session.forget();
  generation += 1;  // a navigation waiting for the roles of the refused token draws nothing
  if (cleanup) { cleanup(); cleanup = null; }
  signInPage("Your token was refused: sign in again.");
});
signout.addEventListener("click", () => { token.clear(); session.forget(); route(); });
window.addEventListener("hashchange", () => route());
route();
