// The user's personal API tokens (issue 29), #/tokens: the list (GET /v1/tokens: names and times,
// never secrets), a new one (POST /v1/tokens) and revoking one (DELETE, confirmed by a second
// click). A new token's secret is in the API's answer once: it is shown in this page's DOM until
// the user leaves the page, and kept nowhere else (not in storage, not in the URL, not in a module
// variable), so coming back never shows it again.

import { ApiError, api, get, post } from "./api.js";
import { put, fmtTime, h, labelled, section, toast } from "./dom.js";
import * as session from "./session.js";

const EXPIRY = "[0-9]{1,5}[hdw]";

function status(t) {
  if (t.revoked_at) return h("span", { class: "state state-cancelled" }, "revoked");
  if (t.expires_at && new Date(t.expires_at) <= new Date()) return h("span", { class: "state state-failed" }, "expired");
  return h("span", { class: "state state-succeeded" }, "active");
}

// the secret, once: a box with a copy button and the warning that it will not be shown again
function secretBox(created) {
  const code = h("code", { id: "new-token-secret", class: "secret" }, created.token);
  const copy = h("button", { type: "button", id: "copy-token" }, "Copy");
  copy.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(code.textContent);
      toast("Copied to the clipboard");
    } catch {
      getSelection().selectAllChildren(code);  // the browser refused the clipboard: select it to copy by hand
      toast("Select the token and copy it yourself: the browser did not allow copying", "error");
    }
  });
  const dismiss = h("button", { type: "button", class: "link", id: "dismiss-token" }, "Done");
  const box = h("section", { class: "card new-token", id: "new-token", role: "status" },
    h("h2", {}, "Your new token ", h("span", { class: "mono" }, created.name)),
    h("div", { class: "row" }, code, copy),
    h("p", { class: "warn" }, "Copy it now: this is the only time it is shown. It will not be shown again, here or anywhere."),
    dismiss);
  dismiss.addEventListener("click", () => box.remove());
  return box;
}

export function render(view) {
  const me = session.user();
  const shown = h("div", { id: "new-token-slot" });
  const body = h("tbody", { id: "tokens-body" });
  let stopped = false;

  async function load() {
    try {
      const page = await get("/v1/tokens");
      if (stopped) return;
      put(body, page.items.length ? page.items.map(row)
        : h("tr", {}, h("td", { colspan: "7", class: "muted" }, "No personal tokens yet.")));
    } catch (err) {
      if (!stopped) put(body, h("tr", {}, h("td", { colspan: "7", class: "error" }, err.message)));
    }
  }

  function row(t) {
    const revoke = t.revoked_at ? null : h("button", { type: "button", class: "danger small revoke" }, "Revoke");
    let armed = false;
    revoke?.addEventListener("click", async () => {
      if (!armed) {
        armed = true;
        revoke.textContent = "Confirm revoke";
        setTimeout(() => { armed = false; if (!revoke.disabled) revoke.textContent = "Revoke"; }, 5000);
        return;
      }
      revoke.disabled = true;
      try {
        await api("DELETE", `/v1/tokens/${encodeURIComponent(t.id)}`);
        toast(`Token ${t.name} revoked: it is refused from now on`);
        load();
      } catch (err) {
        toast(err.message, "error");
        revoke.disabled = false;
      }
    });
    const current = !t.revoked_at && t.name === me.token_name;
    return h("tr", { dataset: { id: t.id, name: t.name } },
      h("td", { class: "c-name" }, t.name, current ? h("span", { class: "muted small" }, " (signed in with it)") : null),
      h("td", { class: "c-created muted small" }, fmtTime(t.created_at)),
      h("td", { class: "c-used muted small" }, t.last_used_at ? fmtTime(t.last_used_at) : "never"),
      h("td", { class: "c-expires muted small" }, t.expires_at ? fmtTime(t.expires_at) : "never"),
      h("td", { class: "c-revoked muted small" }, fmtTime(t.revoked_at)),
      h("td", { class: "c-status" }, status(t)), h("td", {}, revoke));
  }

  function createForm() {
    const name = h("input", { id: "token-name", required: true, autocomplete: "off", placeholder: "e.g. laptop", maxlength: "64" });
    const expires = h("input", { id: "token-expires", autocomplete: "off", placeholder: "never", pattern: EXPIRY, list: "token-expiry-options" });
    const options = h("datalist", { id: "token-expiry-options" }, ["30d", "90d", "365d"].map((v) => h("option", { value: v })));
    const error = h("p", { class: "error", role: "alert", id: "token-error" });
    const button = h("button", { type: "submit", class: "primary" }, "Create token");
    const form = h("form", { class: "upload", id: "token-form", novalidate: true },
      labelled("Name", name, h("small", { class: "muted" }, "what it is for")),
      labelled("Expires after", expires, h("small", { class: "muted" }, "e.g. 90d, 12h, 2w; empty: until revoked")), options,
      button, error);
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      error.textContent = "";
      const body = { name: name.value.trim() };
      if (!body.name) { error.textContent = "Name the token (what it is for)."; return; }
      if (expires.value.trim()) body.expires = expires.value.trim();
      button.disabled = true;
      try {
        put(shown, secretBox(await post("/v1/tokens", body)));
        form.reset();
        load();
      } catch (err) {
        error.textContent = err instanceof ApiError && err.status === 422 ? Object.entries(err.fieldErrors()).map(([k, m]) => `${k}: ${m}`).join("; ") || err.message : err.message;
      } finally {
        button.disabled = false;
      }
    });
    return form;
  }

  const bootstrap = me.user_id === session.BOOTSTRAP_USER;
  view.append(h("h1", {}, "API tokens"),
    h("p", { class: "muted" }, "Personal tokens sign you in here, in the CLI (", h("code", {}, "vtp"), ") and in scripts, as ",
      h("span", { class: "mono" }, me.user_id), ". The platform keeps only their hashes: a token's secret is shown once, when it is made."),
    shown,
    bootstrap
      ? h("p", { class: "card muted", id: "tokens-bootstrap" }, `${me.user_id} signs in with the platform's bootstrap tokens `
        + "(VTP_API_TOKENS) and has no personal tokens: make users for people (vtp admin users create).")
      : section("New token", createForm()),
    section("Your tokens", h("div", { class: "table-wrap" }, h("table", { class: "tokens" },
      h("thead", {}, h("tr", {}, [["Name"], ["Created", "c-created"], ["Last used", "c-used"], ["Expires"], ["Revoked", "c-revoked"], ["Status"], [""]]
        .map(([t, c]) => h("th", { class: c }, t)))),
      body))));
  load();
  return () => { stopped = true; put(shown); };
}
