// The platform's HTTP API as the console uses it: the API token from the tab's session storage,
// sent as a bearer header (never in a URL), errors as ApiError with the API's `detail`, and
// Server-Sent Events read with fetch (EventSource cannot send a header), resumed after a drop
// with Last-Event-ID like EventSource does.

const TOKEN_KEY = "vtp.token";

export const token = {
  get: () => sessionStorage.getItem(TOKEN_KEY),
  set: (value) => sessionStorage.setItem(TOKEN_KEY, value),
  clear: () => sessionStorage.removeItem(TOKEN_KEY),
};

export class ApiError extends Error {
  constructor(status, detail) {
    super(ApiError.describe(status, detail));
    this.status = status;
    this.detail = detail;
  }

  // the API's 422: [{loc: ["body", "epochs"], msg}], others: a string
  static describe(status, detail) {
    if (Array.isArray(detail)) return detail.map((e) => `${(e.loc || []).slice(1).join(".") || "request"}: ${e.msg}`).join("; ");
    return typeof detail === "string" ? detail : `HTTP ${status}`;
  }

  // field name -> message, for a form (loc ["body", name, ...])
  fieldErrors() {
    const out = {};
    if (!Array.isArray(this.detail)) return out;
    for (const e of this.detail) {
      const loc = e.loc || [];
      const field = loc[0] === "body" ? loc[1] : loc[loc.length - 1];
      if (field !== undefined) out[field] = out[field] ? `${out[field]}; ${e.msg}` : e.msg;
    }
    return out;
  }
}

const listeners = new Set();
export function onUnauthorized(fn) { listeners.add(fn); }

function headers(extra) {
  const out = { Accept: "application/json", ...extra };
  const t = token.get();
  if (t) out.Authorization = `Bearer ${t}`;
  return out;
}

async function failure(resp) {
  let detail = null;
  try { detail = (await resp.json()).detail; } catch { detail = resp.statusText; }
  if (resp.status === 401) listeners.forEach((fn) => fn());
  return new ApiError(resp.status, detail);
}

export async function api(method, path, { json, body, query, signal } = {}) {
  const url = new URL(path, location.origin);
  for (const [k, v] of Object.entries(query || {})) if (v !== undefined && v !== null && v !== "") url.searchParams.set(k, v);
  const init = { method, headers: headers(json !== undefined ? { "Content-Type": "application/json" } : {}), signal };
  if (json !== undefined) init.body = JSON.stringify(json);
  else if (body !== undefined) init.body = body;
  const resp = await fetch(url, init);
  if (!resp.ok) throw await failure(resp);
  return resp.status === 204 ? null : resp.json();
}

export const get = (path, query, signal) => api("GET", path, { query, signal });
export const post = (path, json) => api("POST", path, { json });

// all pages of a cursor-paged list
export async function* pages(path, query) {
  let cursor = null;
  do {
    const page = await get(path, { ...query, cursor });
    yield page.items;
    cursor = page.next_cursor;
  } while (cursor);
}

// ------------------------------------------------------------------ Server-Sent Events

async function* messages(resp) {
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let msg = { event: "message", data: [], id: null };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    for (;;) {
      const nl = buffer.search(/\r\n|\r|\n/);
      if (nl < 0 || (buffer[nl] === "\r" && nl === buffer.length - 1)) break;  // "\r" may precede "\n" in the next chunk
      const line = buffer.slice(0, nl);
      buffer = buffer.slice(nl + (buffer.startsWith("\r\n", nl) ? 2 : 1));
      if (line === "") {
        if (msg.data.length) yield { event: msg.event, id: msg.id, data: msg.data.join("\n") };
        msg = { event: "message", data: [], id: null };
        continue;
      }
      if (line.startsWith(":")) continue;  // a ping
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let val = colon < 0 ? "" : line.slice(colon + 1);
      if (val.startsWith(" ")) val = val.slice(1);
      if (field === "data") msg.data.push(val);
      else if (field === "event") msg.event = val;
      else if (field === "id") msg.id = val;
    }
  }
}

// Follows a stream until stop() or an `end` message: handlers[event](parsed data, id). After a
// dropped connection it reconnects with the last id seen (1 s, then up to 10 s apart).
export function follow(path, handlers, { query } = {}) {
  const ctrl = new AbortController();
  let lastId = null;
  let wait = 1000;
  let stopped = false;
  (async () => {
    while (!stopped) {
      try {
        const url = new URL(path, location.origin);
        for (const [k, v] of Object.entries(query || {})) url.searchParams.set(k, v);
        const resp = await fetch(url, { headers: headers({ Accept: "text/event-stream", ...(lastId ? { "Last-Event-ID": lastId } : {}) }),
                                        signal: ctrl.signal, cache: "no-store" });
        if (!resp.ok) {
          const err = await failure(resp);
          if (resp.status === 401 || resp.status === 404) { handlers.error?.(err); return; }
          throw err;
        }
        handlers.open?.();
        for await (const m of messages(resp)) {
          if (m.id) lastId = m.id;
          wait = 1000;
          handlers[m.event]?.(JSON.parse(m.data), m.id);
          if (m.event === "end") { stopped = true; return; }
        }
      } catch (err) {
        if (stopped || ctrl.signal.aborted) return;
        handlers.drop?.(err);
      }
      if (stopped) return;
      await new Promise((resolve) => setTimeout(resolve, wait));
      wait = Math.min(wait * 2, 10000);
    }
  })();
  return () => { stopped = true; ctrl.abort(); };
}
