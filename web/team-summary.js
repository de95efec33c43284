// Control room: "Which team is behind?" — one row per team with what reached it
// (delivered), what its dashboards showed (shown, unread), when one was last
// seen, and what went wrong (late, failed); a team that needs attention is
// flagged and listed first. control.js hands each exercise update over as a
// `scip:exercise` event; this file only draws the panel.
"use strict";
(() => {
  const { el, fmtWall, fmtMs } = SCIP;
  const panel = document.getElementById("team-summary");
  if (!panel) return;
  const body = panel.querySelector("tbody");
  const note = document.getElementById("not-watched");
  let last = "";

  // "open now", "12:03:41 (2 min ago)", or "never".
  function seen(t, now) {
    if (t.dashboards > 0) return "open now";
    const at = t.summary.last_seen_at;
    if (!at) return "never";
    const mins = Math.floor((now - Date.parse(at)) / 60000);
    return mins >= 1 ? `${fmtWall(at)} (${mins} min ago)` : fmtWall(at);
  }

  function render(e) {
    const teams = (e.teams || []).filter((t) => t.summary);
    const now = Date.now();
    const key = JSON.stringify([teams, Math.floor(now / 60000)]);
    if (key === last) return;
    last = key;
    // Teams that need attention first, keeping the scenario's order otherwise.
    const ordered = teams
      .map((t, i) => ({ t, i }))
      .sort((a, b) => (b.t.summary.attention.length > 0) - (a.t.summary.attention.length > 0) || a.i - b.i);
    body.replaceChildren(...ordered.map(({ t }) => {
      const s = t.summary;
      const flagged = s.attention.length > 0;
      const num = (k, v) => el("td", { class: "num", "data-field": k, "data-nonzero": String(!!v), text: String(v) });
      return el("tr", { "data-team": t.id, "data-attention": String(flagged), class: flagged ? "attention" : null },
        el("th", { scope: "row" }, t.name || t.id, el("div", { class: "muted", text: t.id })),
        num("delivered", s.delivered),
        num("shown", s.shown),
        num("unread", s.unread),
        el("td", { "data-field": "last_seen", text: seen(t, now) }),
        num("late", s.late),
        num("failed", s.failed),
        num("not_watched", s.not_watched),
        el("td", { class: "num", "data-field": "receipt_latency", text: s.average_receipt_latency_ms == null ? "—" : fmtMs(s.average_receipt_latency_ms) }),
        el("td", { "data-field": "attention" }, flagged ? el("strong", { text: `⚠ ${s.attention.join("; ")}` }) : "OK"));
    }));
    const c = e.counts || {};
    note.textContent = c.not_watched
      ? `${c.not_watched} inject${c.not_watched > 1 ? "s" : ""} went out with no dashboard of the team open: not watched, so not counted in the receipt latency.`
      : "";
  }

  document.addEventListener("scip:exercise", (ev) => render(ev.detail));
})();
