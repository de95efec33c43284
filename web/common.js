// Shared helpers for the team dashboard and the control room.
// Plain script (no modules): everything hangs off the global `SCIP`.
"use strict";

const SCIP = (() => {
  // Path segments of the current page, each decoded ("/exercises/a%20b" -> ["exercises", "a b"]).
  function pathParts() {
    return location.pathname.split("/").filter(Boolean).map(decodeURIComponent);
  }

  const enc = encodeURIComponent;

  // Build an element. attrs: plain attributes, plus `class`, `text` (textContent),
  // `hidden` (boolean) and `on<event>` handlers. Children: nodes or strings
  // (strings become text nodes: server data never goes through innerHTML).
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "text") node.textContent = String(v);
      else if (k === "class") node.className = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat(Infinity)) {
      if (c === undefined || c === null || c === false) continue;
      node.append(c instanceof Node ? c : String(c));
    }
    return node;
  }

  // An API error: the server's {"error":{"code","message","details"}} or a network failure.
  class ApiError extends Error {
    constructor(status, body, fallback) {
      const e = (body && body.error) || {};
      super(e.message || fallback || `HTTP ${status}`);
      this.status = status;
      this.code = e.code || null;
      this.details = Array.isArray(e.details) ? e.details : [];
    }
  }

  // The API token of this browser (the control room's sign-in), kept in localStorage.
  const TOKEN_KEY = "scip.apiToken";
  function apiToken() {
    try { return localStorage.getItem(TOKEN_KEY) || ""; } catch (_) { return ""; }
  }
  function setApiToken(token) {
    try {
      if (token) localStorage.setItem(TOKEN_KEY, token); else localStorage.removeItem(TOKEN_KEY);
    } catch (_) { /* storage disabled: the token lasts for this page only */ }
  }

  // The API token goes in a header, never in the address (which history and logs
  // keep); only what a browser fetches by itself (EventSource, <img>) takes it there.
  async function request(path, init) {
    const token = apiToken();
    if (token) init.headers.Authorization = `Bearer ${token}`;
    let res;
    try {
      res = await fetch(path, init);
    } catch (err) {
      throw new ApiError(0, null, `Network error: ${err.message}`);
    }
    if (!res.ok) throw await errorOf(res);
    return res;
  }
  async function errorOf(res) {
    const raw = await res.text();
    let data = null;
    try { data = raw ? JSON.parse(raw) : null; } catch (_) { /* not JSON: the text is the message */ }
    return new ApiError(res.status, data, raw.trim().slice(0, 200) || `HTTP ${res.status}`);
  }

  // fetch + JSON both ways. Resolves with the parsed body (null when empty), rejects with ApiError.
  async function api(method, path, body) {
    const init = { method, headers: { Accept: "application/json" } };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const raw = await (await request(path, init)).text();
    try { return raw ? JSON.parse(raw) : null; } catch (_) { return null; }
  }

  // GETs `path` with the API token and saves it as a file, named as the server's
  // Content-Disposition says, else `fallback`.
  async function download(path, fallback) {
    const res = await request(path, { headers: {} });
    const disposition = res.headers.get("Content-Disposition") || "";
    const name = (disposition.match(/filename="([^"]+)"/) || [])[1] || fallback;
    const url = URL.createObjectURL(await res.blob());
    const link = el("a", { href: url, download: name, hidden: true });
    document.body.append(link);
    link.click();
    link.remove();
    // Revoked once the browser has taken it (a click starts the download at once).
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
    return name;
  }

  // Why a GET of `path` (an event stream) is refused: its ApiError, or null when it
  // is not (the answer's body is then dropped unread). An EventSource does not say.
  async function refusal(path) {
    const abort = new AbortController();
    let res;
    try {
      res = await fetch(path, { headers: { Accept: "text/event-stream" }, signal: abort.signal });
    } catch (err) {
      return null; // the network, not the server: the stream retries by itself
    }
    if (res.ok) {
      abort.abort();
      return null;
    }
    return errorOf(res);
  }

  // The server's details are strings; anything else is shown as JSON.
  const detailText = (d) => (typeof d === "string" ? d : JSON.stringify(d));

  // Seconds -> "T+mm:ss" (minutes unbounded, as the server formats it).
  function fmtT(secs) {
    const s = Math.max(0, Math.floor(Number(secs) || 0));
    return `T+${String(Math.floor(s / 60)).padStart(2, "0")}:${String(s % 60).padStart(2, "0")}`;
  }

  // "90", "1:30", "01:30", "T+01:30", "1:02:03" -> seconds; null when unreadable.
  function parseT(text) {
    const t = String(text || "").trim().replace(/^T\s*\+\s*/i, "");
    if (/^\d+(\.\d+)?$/.test(t)) return Math.round(Number(t));
    if (!/^\d+(:\d{1,2}){1,2}$/.test(t)) return null;
    return t.split(":").reduce((acc, p) => acc * 60 + Number(p), 0);
  }

  // ISO timestamp -> local wall clock "HH:MM:SS"; "—" when absent.
  function fmtWall(iso) {
    if (!iso) return "—";
    const d = new Date(iso);
    return isNaN(d) ? String(iso) : d.toLocaleTimeString([], { hour12: false });
  }

  const fmtMs = (ms) => (ms === null || ms === undefined ? "—" : `${Math.round(ms)} ms`);

  // Media references: "http..." is used as is; "/media/x" and "x" are media files of the
  // exercise's package, at /exercises/{id}/media/x. That route needs credentials: a team
  // dashboard uses the URLs its stream hands out with each inject (media_urls), the
  // control room appends its API token (?access_token=).
  function mediaUrl(ref, exId, accessToken) {
    const r = String(ref || "");
    if (/^https?:/i.test(r)) return r;
    const rest = r.replace(/^\/+/, "").replace(/^media\//, "").split("/").map(encodeURIComponent).join("/");
    const query = accessToken ? `?access_token=${encodeURIComponent(accessToken)}` : "";
    return `/exercises/${encodeURIComponent(exId || "")}/media/${rest}${query}`;
  }
  const ext = (u) => (String(u).split(/[?#]/)[0].match(/\.([a-z0-9]+)$/i) || [])[1]?.toLowerCase() || "";
  const isImage = (u) => ["png", "jpg", "jpeg", "gif", "webp", "svg"].includes(ext(u));
  const isVideo = (u) => ["mp4", "webm", "ogg", "mov"].includes(ext(u));

  // EventSource with a status callback ("live" on open, "reconnecting" on error).
  // EventSource retries network errors by itself, but an HTTP error (404, 502 from a
  // proxy...) closes it for good: then open a new one after 2 s. onError(refused) lets
  // the page check whether the URL is gone for good (404) and close() the stream;
  // `refused` is true when the server answered with an error rather than dropping.
  function stream(url, handlers, onStatus, onError) {
    let es = null;
    let closed = false;
    const open = () => {
      es = new EventSource(url);
      es.onopen = () => onStatus("live");
      es.onerror = () => {
        onStatus("reconnecting");
        const refused = es.readyState === EventSource.CLOSED;
        if (refused) setTimeout(() => closed || open(), 2000);
        if (onError) onError(refused);
      };
      for (const [name, fn] of Object.entries(handlers)) {
        es.addEventListener(name, (ev) => {
          let data;
          try { data = JSON.parse(ev.data); } catch (err) { return console.error(`bad ${name} event`, err); }
          fn(data);
        });
      }
    };
    open();
    return { close() { closed = true; es.close(); } };
  }

  // The banner a team dashboard shows in each state (none while running). Its
  // reason, the one given with the last pause or stop, follows the title.
  // The control room previews the same banner before a command is sent.
  const BANNERS = { initialized: "Waiting for the exercise to start", paused: "Exercise paused",
                    stopped: "Exercise stopped", completed: "Exercise completed" };
  const bannerTitle = (state) => BANNERS[state] || "";

  // A form's error shown under the field it is about (`node`: a control, or a
  // fieldset), tied to it with aria-describedby and aria-invalid; a label
  // holding the control gets the message after it.
  function fieldError(node, message) {
    const id = `${node.id || node.name || "field"}-error`;
    let box = document.getElementById(id);
    if (!box) {
      box = el("p", { id, class: "field-error" });
      const holder = node.closest("label") || node;
      if (holder.tagName === "FIELDSET") holder.append(box); else holder.after(box);
    }
    box.textContent = message;
    node.setAttribute("aria-invalid", "true");
    const ids = (node.getAttribute("aria-describedby") || "").split(" ").filter((x) => x && x !== id);
    node.setAttribute("aria-describedby", [...ids, id].join(" "));
  }
  // Removes the errors fieldError put in `form`.
  function clearFieldErrors(form) {
    for (const node of form.querySelectorAll("[aria-invalid=true]")) {
      const ids = (node.getAttribute("aria-describedby") || "").split(" ").filter((x) => x && !x.endsWith("-error"));
      if (ids.length) node.setAttribute("aria-describedby", ids.join(" ")); else node.removeAttribute("aria-describedby");
      node.removeAttribute("aria-invalid");
    }
    for (const box of form.querySelectorAll(".field-error")) box.remove();
  }

  // Sets a connection indicator element (data-status drives its colour).
  function setConnection(node, status) {
    node.dataset.status = status;
    node.textContent = { live: "live", reconnecting: "reconnecting…", error: "offline" }[status] || status;
  }

  return { pathParts, enc, el, api, download, refusal, ApiError, detailText, fmtT, parseT, fmtWall, fmtMs,
           mediaUrl, isImage, isVideo, stream, setConnection, apiToken, setApiToken, bannerTitle,
           fieldError, clearFieldErrors };
})();
