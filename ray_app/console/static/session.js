// Who is signed in and what their roles let them do (issue 29): GET /v1/whoami and GET
// /v1/projects, read again on every navigation (a role changed or a project made meanwhile shows
// at once), and the project chosen in the header's picker (kept in the tab's session storage,
// beside the token, and forgotten on sign-out). The console offers only what the API will allow
// (ray_app/teams/policy.py is the one table of it; the server still refuses the rest).

import { get } from "./api.js";
import { h } from "./dom.js";

const PROJECT_KEY = "vtp.project";
export const ROLES = ["viewer", "member", "admin"];
const RANK = { viewer: 1, member: 2, admin: 3 };
// the lowest role that may take each action in a project (teams/policy.py REQUIRED)
const REQUIRED = { read: "viewer", submit: "member", predict: "member", export: "member", cancel: "member",
                   delete_dataset: "admin", manage_members: "admin" };
// a role below admin may take these on what it created only (teams/policy.py OWN_ONLY)
const OWN_ONLY = new Set(["cancel"]);
// the user the bootstrap tokens of VTP_API_TOKENS act as: it has no personal tokens
export const BOOTSTRAP_USER = "admin";

let me = null;        // GET /v1/whoami
let projects = [];    // GET /v1/projects: the caller's (every one, for a platform admin)

export async function load() {
  const [who, page] = await Promise.all([get("/v1/whoami"), get("/v1/projects")]);
  me = who;
  projects = page.items;
  return me;
}

export function forget() {
  me = null;
  projects = [];
  sessionStorage.removeItem(PROJECT_KEY);
}

export const user = () => me;
export const isPlatformAdmin = () => Boolean(me?.platform_admin);
export const projectList = () => projects;

export function role(projectId) {
  return me?.projects.find((p) => p.project_id === projectId)?.role || null;
}

// may the signed-in user take `action` in `projectId` (on something `owner` created)?
export function can(action, projectId, owner) {
  if (!me) return false;
  if (me.platform_admin) return true;
  const held = role(projectId);
  if (!held || RANK[held] < RANK[REQUIRED[action]]) return false;
  return !(OWN_ONLY.has(action) && held !== "admin" && owner !== me.user_id);
}

// the projects a job or a dataset may go to (a platform admin may also name any other)
export function submittable() {
  return (me?.projects || []).filter((p) => RANK[p.role] >= RANK.member).map((p) => p.project_id);
}

export function canSubmitSomewhere() {
  return isPlatformAdmin() || submittable().length > 0;
}

// the project the header's picker shows ("": all of the user's projects)
export const chosen = {
  get: () => sessionStorage.getItem(PROJECT_KEY) || "",
  set: (projectId) => (projectId ? sessionStorage.setItem(PROJECT_KEY, projectId) : sessionStorage.removeItem(PROJECT_KEY)),
};

// the project a new job or dataset goes to by default: the chosen one when the user may submit
// there, else `default` when they may, else the first they may
export function defaultTarget() {
  const pick = chosen.get();
  if (pick && can("submit", pick)) return pick;
  if (can("submit", "default")) return "default";
  return submittable()[0] || "";
}

// the form control naming the project a new job or dataset goes to: for a platform admin a text
// box (any name: a new project is made), suggesting the projects there are; for anyone else a
// select of the projects where their role is member or admin
export function projectControl(id, value) {
  if (isPlatformAdmin()) {
    const target = value || defaultTarget();
    const list = h("datalist", { id: `${id}-options` }, projects.map((p) => h("option", { value: p.id })));
    return { control: h("input", { id, value: target || "default", list: list.id, autocomplete: "off" }), extra: list };
  }
  const ids = submittable();
  const target = value && ids.includes(value) ? value : defaultTarget();
  return { control: h("select", { id, required: true }, ids.map((p) => h("option", { value: p, selected: p === target }, p))), extra: null };
}
