// Projects and their members (issue 29). #/projects: the user's projects (every one, for a platform
// admin) with their role in each; #/projects/<id>: a project's members and roles (GET
// /v1/projects/{id}, which its viewers may read). A project's admins, and platform admins, also
// add a member by user id with a role (PUT .../members/{user}), change a role and remove a member
// (DELETE, confirmed by a second click, as cancelling a job is); everyone else sees the list only.

import { ApiError, api, get } from "./api.js";
import { put, fmtTime, h, labelled, section, toast } from "./dom.js";
import * as session from "./session.js";

const href = (id) => `#/projects/${encodeURIComponent(id)}`;

function list(view) {
  const body = h("tbody", { id: "projects-body" });
  view.append(h("h1", {}, "Projects"),
    h("p", { class: "muted" }, session.isPlatformAdmin() ? "Every project of the platform (you are a platform admin)." : "The projects you belong to."),
    h("div", { class: "table-wrap" }, h("table", { class: "projects" },
      h("thead", {}, h("tr", {}, h("th", {}, "Project"), h("th", {}, "Your role"), h("th", {}, "Members"), h("th", { class: "c-description" }, "Description"))),
      body)));
  const items = session.projectList();
  put(body, items.length
    ? items.map((p) => h("tr", { dataset: { id: p.id } }, h("td", {}, h("a", { href: href(p.id), class: "mono" }, p.id)),
      h("td", {}, p.your_role || (session.isPlatformAdmin() ? "platform admin" : "")), h("td", {}, p.members.length),
      h("td", { class: "c-description" }, p.description)))
    : h("tr", {}, h("td", { colspan: "4", class: "muted" }, "You belong to no project yet: a project's admin adds you.")));
}

// a button that asks again before it acts: the first click arms it for 5 s
function confirmButton(label, confirmLabel, attrs, act) {
  const button = h("button", { type: "button", class: "danger small", ...attrs }, label);
  let armed = false;
  let timer = null;
  button.addEventListener("click", async () => {
    if (!armed) {
      armed = true;
      button.textContent = confirmLabel;
      timer = setTimeout(() => { armed = false; button.textContent = label; }, 5000);
      return;
    }
    clearTimeout(timer);
    button.disabled = true;
    try {
      await act();
    } catch (err) {
      toast(err.message, "error");
      armed = false;
      button.disabled = false;
      button.textContent = label;
    }
  });
  return button;
}

function members(view, projectId) {
  const box = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  view.append(h("p", {}, h("a", { href: "#/projects" }, "← all projects")), box);
  let stopped = false;

  function draw(project) {
    if (stopped) return;
    const manage = session.can("manage_members", project.id);
    const me = session.user();
    const rows = project.members.map((m) => {
      let role = m.role;
      if (manage) {
        role = h("select", { class: "member-role", "aria-label": `role of ${m.user_id}` },
          session.ROLES.map((r) => h("option", { value: r, selected: r === m.role }, r)));
        role.addEventListener("change", () => change(m.user_id, role.value, () => { role.value = m.role; }));
      }
      return h("tr", { dataset: { user: m.user_id } },
        h("td", { class: "c-user mono" }, m.user_id, m.user_id === me.user_id ? h("span", { class: "muted small" }, " (you)") : null),
        h("td", { class: "c-role" }, role), h("td", { class: "c-added muted small" }, fmtTime(m.added_at)),
        h("td", { class: "c-added-by" }, m.added_by || ""),
        manage ? h("td", {}, confirmButton("Remove", "Confirm remove", { class: "danger small remove" }, () => remove(m.user_id))) : null);
    });
    const table = h("div", { class: "table-wrap" }, h("table", { class: "members", id: "members" },
      h("thead", {}, h("tr", {}, h("th", {}, "User"), h("th", {}, "Role"), h("th", { class: "c-added" }, "Added"), h("th", { class: "c-added-by" }, "Added by"),
        manage ? h("th", {}, "") : null)),
      h("tbody", { id: "members-body" }, rows.length ? rows : h("tr", {}, h("td", { colspan: manage ? "5" : "4", class: "muted" }, "No members yet.")))));
    const yours = project.your_role || (session.isPlatformAdmin() ? "platform admin" : "none");
    put(box, h("h1", {}, "Project ", h("span", { class: "mono" }, project.id)),
      project.description ? h("p", {}, project.description) : null,
      h("p", { class: "muted", id: "your-role" }, `Your role: ${yours}`,
        manage ? "" : " · only the project's admins change its members"),
      h("p", {}, h("a", { href: `#/jobs?project_id=${encodeURIComponent(project.id)}` }, "Its jobs →")),
      section("Members", table), manage ? section("Add a member", addForm()) : null);
  }

  function addForm() {
    const user = h("input", { id: "add-member-user", required: true, autocomplete: "off", placeholder: "e.g. alice",
                              pattern: "[a-z][a-z0-9._\\-]{1,63}" });
    const role = h("select", { id: "add-member-role" }, session.ROLES.map((r) => h("option", { value: r, selected: r === "member" }, r)));
    const error = h("p", { class: "error", role: "alert", id: "add-member-error" });
    const button = h("button", { type: "submit", class: "primary" }, "Add member");
    const form = h("form", { class: "upload", id: "add-member" }, labelled("User id", user), labelled("Role", role), button, error);
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      error.textContent = "";
      const id = user.value.trim();
      if (!id) { error.textContent = "Name the user to add."; return; }
      button.disabled = true;
      try {
        await changed(await api("PUT", `/v1/projects/${encodeURIComponent(projectId)}/members/${encodeURIComponent(id)}`, { json: { role: role.value } }));
        toast(`${id} is a ${role.value} of ${projectId}`);
      } catch (err) {
        error.textContent = err instanceof ApiError && err.status === 422 ? Object.values(err.fieldErrors()).join("; ") || err.message : err.message;
        button.disabled = false;
      }
    });
    return form;
  }

  async function change(userId, role, undo) {
    try {
      await changed(await api("PUT", `/v1/projects/${encodeURIComponent(projectId)}/members/${encodeURIComponent(userId)}`, { json: { role } }));
      toast(`${userId} is now a ${role} of ${projectId}`);
    } catch (err) {
      undo();
      toast(err.message, "error");
    }
  }

  async function remove(userId) {
    await changed(await api("DELETE", `/v1/projects/${encodeURIComponent(projectId)}/members/${encodeURIComponent(userId)}`));
    toast(`${userId} is no longer a member of ${projectId}`);
  }

  // the project as a change left it; the user's own role may have changed with it
  async function changed(project) {
    try { await session.load(); } catch { /* the page below still shows the change */ }
    draw(project);
  }

  (async () => {
    try {
      draw(await get(`/v1/projects/${encodeURIComponent(projectId)}`));
    } catch (err) {
      if (stopped) return;
      const missing = err instanceof ApiError && err.status === 404;
      put(box, h("p", { class: "error", role: "alert", id: missing ? "project-missing" : "project-unavailable" },
        missing ? `No project ${projectId} (or you are not one of its members).` : err.message));
    }
  })();
  return () => { stopped = true; };
}

export function render(view, projectId) {
  if (projectId) return members(view, projectId);
  list(view);
  return null;
}
