// Control room: "/" lists exercises and creates new ones; "/exercises/{id}" runs one.
"use strict";
(() => {
  const { el, enc, fmtT, parseT, fmtWall, fmtMs } = SCIP;
  const $ = (id) => document.getElementById(id);
  const parts = SCIP.pathParts();

  // ---- sign-in ------------------------------------------------------------
  // A token in the address (#token=..., as `demo` prints it) is kept and removed
  // from the address. Without one the page asks for one and asks the API nothing;
  // a 401 (the token unknown or revoked) forgets it, stops the polling and the
  // stream and asks again; a 403 asks for a token that may do what was refused.
  const fromHash = location.hash.match(/(?:^#|&)token=([^&]+)/);
  if (fromHash) {
    SCIP.setApiToken(decodeURIComponent(fromHash[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
  const stops = []; // what polls the API, stopped once the token is refused
  function needLogin(err) {
    const form = $("login-form");
    form.hidden = false;
    $("login-why").textContent = err && err.status === 403
      ? `${err.message}. Sign in with a token that may do this.`
      : "This control room needs an API token (ask your administrator).";
    if (err && err.status === 401) {
      SCIP.setApiToken("");
      for (const stop of stops.splice(0)) stop();
    }
  }
  $("login-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    SCIP.setApiToken(new FormData(ev.target).get("token").trim());
    location.reload();
  });
  async function api(...args) {
    try {
      return await SCIP.api(...args);
    } catch (err) {
      if (err.status === 401 || err.status === 403) needLogin(err);
      throw err;
    }
  }

  // ---- messages ---------------------------------------------------------
  let staleTimer = null;
  // Shows the last success or error; an ApiError's details become a list.
  function say(text, kind = "ok", details = []) {
    const box = $("message");
    box.dataset.kind = kind;
    box.classList.remove("stale");
    box.replaceChildren(el("span", { text }));
    if (details.length) box.append(el("ul", {}, details.map((d) => el("li", { text: SCIP.detailText(d) }))));
    clearTimeout(staleTimer);
    if (kind === "ok") staleTimer = setTimeout(() => box.classList.add("stale"), 8000);
  }
  const sayError = (err, prefix = "") => say(prefix + err.message, "error", err.details || []);
  $("message").addEventListener("click", () => $("message").classList.add("stale"));

  function fatal(title, text) {
    document.querySelectorAll("#list-view, #room-view").forEach((s) => (s.hidden = true));
    const box = $("fatal");
    box.replaceChildren(el("h2", { text: title }), el("p", { text }), el("a", { href: "/", text: "← All exercises" }));
    box.hidden = false;
  }

  // Only touch the DOM when a value changes (the control stream sends ~4 updates a second).
  function setText(node, text) {
    if (node.textContent !== text) node.textContent = text;
  }

  // ======================================================================
  // "/" : exercises and create form
  // ======================================================================
  function listPage() {
    $("list-view").hidden = false;
    document.title = "Exercises · SCIP";
    // Here the only messages are about creating: show them in the form, not as a toast.
    $("create-form").querySelector(".form-actions").before($("message"));
    $("message").classList.add("inline");

    async function refresh() {
      try {
        const list = await api("GET", "/api/v1/exercises");
        list.sort((a, b) => String(b.created_at || "").localeCompare(String(a.created_at || "")));
        $("exercises").replaceChildren(...list.map(card));
        $("no-exercises").hidden = list.length > 0;
        setText($("list-status"), "");
      } catch (err) {
        setText($("list-status"), `Cannot load exercises: ${err.message}`);
      }
    }

    // A progress bar's fill, set through the DOM: the page's
    // Content-Security-Policy refuses style attributes.
    function progressBar(percent) {
      const bar = el("div");
      bar.style.width = `${percent}%`;
      return bar;
    }

    function progressOf(ex) {
      const percent = Math.round(ex.total ? Math.min(100, (100 * ex.exercise_time) / ex.total) : 0);
      return el("div", { class: "progress", role: "progressbar", "aria-label": "Exercise progress",
        "aria-valuemin": 0, "aria-valuemax": 100, "aria-valuenow": percent,
        "aria-valuetext": `${ex.formatted || fmtT(ex.exercise_time)} of ${fmtT(ex.total).slice(2)} (${percent}%)` }, progressBar(percent));
    }

    function card(ex) {
      const teams = ex.teams || [];
      const c = ex.counts || {};
      return el("a", { class: "ex-card", href: `/exercises/${enc(ex.id)}`, "data-exercise-id": ex.id },
        el("div", { class: "ex-card-head" },
          el("div", {}, el("div", { class: "ex-name", text: ex.name || ex.id }), el("div", { class: "muted mono", text: ex.id })),
          el("span", { class: "state-badge", "data-state": ex.state, text: ex.state })),
        el("div", { class: "ex-clock" }, el("span", { class: "clock", text: ex.formatted || fmtT(ex.exercise_time) }),
          el("span", { class: "muted", text: ` / ${fmtT(ex.total).slice(2)}${ex.speed && ex.speed !== 1 ? ` · ×${ex.speed}` : ""}` })),
        progressOf(ex),
        el("div", { class: "ex-meta" },
          el("span", { text: `${ex.teams_connected ?? 0} of ${teams.length} teams connected` }),
          el("span", { text: `${c.delivered ?? 0} delivered · ${c.received ?? 0} received` }),
          c.failed ? el("span", { class: "bad", text: `${c.failed} failed` }) : null),
        el("div", { class: "ex-teams muted", text: teams.map((t) => t.name || t.id).join(" · ") }),
        // Stored but not restored at start: say why instead of a clock.
        ex.restore_error ? el("div", { class: "bad", text: `Not restored: ${ex.restore_error}` }) : null);
    }

    refresh();
    const poll = setInterval(refresh, 2000);
    stops.push(() => clearInterval(poll));
    createForm();
  }

  function createForm() {
    const form = $("create-form");
    const select = form.elements.scenario;

    api("GET", "/api/v1/scenarios").then((list) => {
      const bad = [];
      for (const s of list) {
        const label = s.error
          ? `${s.name} — invalid`
          : `${s.title ? `${s.title} (${s.name})` : s.name} — ${s.teams} teams, ${s.injects} injects, ${fmtT(s.duration).slice(2)}`;
        select.append(el("option", { value: s.name, disabled: !!s.error, title: s.error || "", text: label }));
        if (s.error) bad.push(s);
      }
      if (!list.length) select.append(el("option", { value: "", disabled: true, text: "(no scenario folders on the server)" }));
      $("scenario-errors").replaceChildren(...bad.map((s) =>
        el("div", { class: "scenario-error" }, el("strong", { text: s.name }), `: ${s.error}`)));
    }).catch((err) => sayError(err, "Cannot list scenarios: "));

    // A scenario folder and a package exclude each other: choosing one clears the other.
    select.addEventListener("change", () => {
      if (select.value) { form.elements.package.value = ""; form.elements.package_text.value = ""; }
    });
    form.elements.package.addEventListener("change", () => { select.value = ""; });
    form.elements.package_text.addEventListener("input", () => { select.value = ""; });

    const readFile = (file) => new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => resolve(reader.result);
      reader.onerror = () => reject(reader.error);
      reader.readAsText(file);
    });

    // A spreadsheet MSEL is read by the server into a package (not stored);
    // its problems, each naming sheet, row and column, show next to the form.
    const isMsel = (file) => /\.(xlsx|csv)$/i.test(file.name);
    async function importMsel(file) {
      const format = /\.csv$/i.test(file.name) ? "csv" : "xlsx";
      const headers = { "Content-Type": "application/octet-stream", Accept: "application/json" };
      const token = SCIP.apiToken();
      if (token) headers.Authorization = `Bearer ${token}`;
      const path = `/api/v1/msel/import?format=${format}&file=${encodeURIComponent(file.name)}`;
      const res = await fetch(path, { method: "POST", headers, body: file });
      const raw = await res.text();
      let data = null;
      try { data = raw ? JSON.parse(raw) : null; } catch (_) { /* not JSON */ }
      if (!res.ok) throw new SCIP.ApiError(res.status, data, raw.trim().slice(0, 200));
      return data;
    }
    const clearMselErrors = () => document.querySelectorAll("#scenario-errors .msel-error").forEach((e) => e.remove());
    function showMselErrors(file, err) {
      const problems = err.details && err.details.length ? err.details : [err.message];
      $("scenario-errors").append(el("div", { class: "scenario-error msel-error" },
        el("strong", { text: file.name }), ": not imported",
        el("ul", {}, problems.map((p) => el("li", { text: SCIP.detailText(p) })))));
    }

    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const f = form.elements;
      const body = {};
      // An error about one field is shown under it, as well as above the button.
      SCIP.clearFieldErrors(form);
      const wrong = (field, text) => { SCIP.fieldError(field, text); say(text, "error"); };
      try {
        const file = f.package.files[0];
        clearMselErrors();
        if (file && isMsel(file)) {
          try {
            body.package = await importMsel(file);
          } catch (err) {
            if (err.status === 401 || err.status === 403) needLogin(err);
            showMselErrors(file, err);
            return sayError(err, "Not created: ");
          }
        }
        const text = body.package ? "" : file ? await readFile(file) : f.package_text.value.trim();
        if (body.package) {
          // Read from the MSEL.
        } else if (text) {
          try { body.package = JSON.parse(text); } catch (e) {
            return wrong(file ? f.package : f.package_text, `The package is not valid JSON: ${e.message}`);
          }
        } else if (f.scenario.value) body.scenario = f.scenario.value;
        else return wrong(f.scenario, "Pick a scenario folder or load a package first.");
      } catch (err) {
        return wrong(f.package, `Cannot read the file: ${err.message}`);
      }
      if (f.exercise_id.value.trim()) body.exercise_id = f.exercise_id.value.trim();
      if (f.speed.value.trim()) body.speed = Number(f.speed.value);
      const button = form.querySelector("button[type=submit]");
      button.disabled = true;
      say("Creating…", "info");
      try {
        const ex = await api("POST", "/api/v1/exercises", body);
        location.href = `/exercises/${enc(ex.id)}`;
      } catch (err) {
        sayError(err, "Not created: ");
      } finally {
        button.disabled = false;
      }
    });
  }

  // ======================================================================
  // "/exercises/{id}" : control room
  // ======================================================================
  function roomPage(exId) {
    $("room-view").hidden = false;
    const base = `/api/v1/exercises/${enc(exId)}`;
    // After-action report of the current run, as it stands when clicked: fetched with
    // the API token in its header and saved as a file (the HTML one opens on its own,
    // with its own styles: as a blob of this page it would take this page's policy).
    for (const a of document.querySelectorAll("#report-links a[data-report]")) {
      a.href = `${base}/${a.dataset.report}`;
      a.addEventListener("click", async (ev) => {
        ev.preventDefault();
        try {
          const name = await SCIP.download(a.href, `${exId}-${a.dataset.report.replace("/", "-")}.json`);
          say(`Saved ${name}`);
        } catch (err) {
          if (err.status === 401 || err.status === 403) needLogin(err);
          sayError(err, "Report not saved: ");
        }
      });
    }
    let ex = null; // last Exercise from the stream
    let busy = false; // a command is in flight
    const ALLOWED = {
      initialized: ["start", "reset"], running: ["pause", "stop", "reset"],
      paused: ["resume", "stop", "reset"], stopped: ["reset"], completed: ["reset"],
    };
    // Turn-based exercises move on by turns: next_turn from a pause (the server
    // refuses it mid-turn, with the reason) or to start turn 1.
    const TURN_ALLOWED = { initialized: ["next_turn"], paused: ["next_turn"] };

    // ---- exercise header, buttons, teams, counts ----
    function onExercise(e) {
      ex = e;
      setText($("ex-title"), e.name && e.name !== e.id ? `${e.name}` : e.id);
      setText($("clock"), e.formatted || fmtT(e.exercise_time));
      setText($("state"), ($("state").dataset.state = e.state));
      const percent = Math.round(e.total ? Math.min(100, (100 * e.exercise_time) / e.total) : 0);
      $("progress-bar").style.width = `${percent}%`;
      $("progress").setAttribute("aria-valuenow", String(percent));
      $("progress").setAttribute("aria-valuetext", `${e.formatted || fmtT(e.exercise_time)} of ${fmtT(e.total).slice(2)} (${percent}%)`);
      const turn = e.total_turns ? ` · turn ${e.turn || 0} of ${e.total_turns}` : "";
      setText($("clock-sub"), `${e.id} · of ${fmtT(e.total).slice(2)} · speed ×${e.speed} · run ${e.run}${turn}`);
      document.querySelector("button[data-command=next_turn]").hidden = !e.total_turns;
      $("broker").dataset.ok = String(!!e.connected);
      setText($("broker"), e.connected ? "Broker connected" : "Broker disconnected");
      document.title = `${e.formatted || ""} ${e.state} · ${e.name || e.id}`;
      updateButtons();
      renderTeams(e.teams || []);
      renderCounts(e.counts || {});
      refreshDueRows();
      document.dispatchEvent(new CustomEvent("scip:exercise", { detail: e })); // team-summary.js
    }

    function allowedCommands() {
      const allowed = [...((ex && ALLOWED[ex.state]) || [])];
      if (ex && ex.total_turns && (ex.turn || 0) < ex.total_turns) allowed.push(...(TURN_ALLOWED[ex.state] || []));
      return allowed;
    }

    function updateButtons() {
      const allowed = allowedCommands();
      for (const b of document.querySelectorAll("button[data-command]")) {
        b.disabled = busy || !allowed.includes(b.dataset.command);
      }
      renderPreview(allowed);
    }

    // ---- reason and "Teams will see" ----
    // The state each command leads to (the server's State::apply), whose banner
    // the team dashboards then show. Only pause and stop carry the reason: the
    // server hands the dashboards a reason only while paused or stopped.
    const LEADS_TO = { start: "running", pause: "paused", resume: "running", stop: "stopped",
                       reset: "initialized", next_turn: "running" };
    const TAKES_REASON = ["pause", "stop"];
    const reasonOf = (cmd) => (TAKES_REASON.includes(cmd) ? $("pause-reason").value.trim() : "");
    // The banner as one line of text, for the confirmation dialogs.
    function bannerText(cmd) {
      const title = SCIP.bannerTitle(LEADS_TO[cmd]);
      const reason = reasonOf(cmd);
      return reason ? `${title}: ${reason}` : title;
    }

    // Per command the state allows, the banner it leaves on the team dashboards,
    // drawn as team.js draws it: the title, then the reason.
    let previewKey = "";
    function renderPreview(allowed = allowedCommands()) {
      const rows = allowed.map((cmd) => [cmd, LEADS_TO[cmd], reasonOf(cmd)]);
      const key = JSON.stringify(rows);
      if (key === previewKey) return;
      previewKey = key;
      $("preview").replaceChildren(...rows.map(([cmd, state, reason]) => {
        const title = SCIP.bannerTitle(state);
        const label = document.querySelector(`button[data-command=${cmd}]`).textContent;
        return el("li", { "data-command": cmd },
          el("span", { class: "preview-command", text: label }),
          title
            ? el("span", { class: "banner mini", "data-state": state },
              el("strong", { class: "banner-title", text: title }),
              reason ? el("span", { class: "banner-reason", text: reason }) : null)
            : el("span", { class: "muted no-banner", text: "no banner: the clock runs" }),
          cmd === "reset" ? el("span", { class: "muted", text: "and an empty feed" }) : null);
      }));
    }
    $("pause-reason").addEventListener("input", () => renderPreview());

    const CONFIRM = {
      stop: () => `Stop the exercise? The teams see “${bannerText("stop")}” and nothing more is delivered until a reset.`,
      reset: () => "Reset the exercise to T+00:00? Every team's feed is cleared and a new run starts.",
    };

    async function command(cmd) {
      if (CONFIRM[cmd] && !window.confirm(CONFIRM[cmd]())) return;
      const typed = $("pause-reason").value;
      const reason = reasonOf(cmd);
      busy = true;
      updateButtons();
      try {
        const r = await api("POST", `${base}/${cmd}`, reason ? { reason } : {});
        say(`${cmd}: ${r.from} → ${r.to} at ${fmtT(r.exercise_time)}${r.reason ? ` (${r.reason})` : ""}`);
        // A reason belongs to the moment it was typed for: once a command is
        // carried out, the next one starts without it (unless retyped meanwhile).
        if ($("pause-reason").value === typed) $("pause-reason").value = "";
        if (ex) ex.state = r.to; // the stream confirms shortly; enable the right buttons now
      } catch (err) {
        sayError(err, `${cmd} refused: `);
      } finally {
        busy = false;
        updateButtons();
      }
    }
    document.querySelectorAll("button[data-command]").forEach((b) =>
      b.addEventListener("click", () => command(b.dataset.command)));

    let teamsKey = "";
    let teamIds = "";
    function renderTeams(teams) {
      setText($("teams-connected"), `${ex.teams_connected ?? teams.filter((t) => t.dashboards > 0).length} of ${teams.length}`);
      const key = JSON.stringify(teams);
      if (key === teamsKey) return;
      teamsKey = key;
      $("teams").replaceChildren(...teams.map((t) => {
        // null for observers: team links are handed out by controllers.
        const url = t.dashboard_url;
        const controller = typeof url === "string";
        const open = t.dashboards > 0;
        return el("li", { "data-team": t.id, "data-open": String(open) },
          el("span", { class: "dot", title: open ? "dashboard open" : "no dashboard open" }),
          el("div", { class: "team-info" },
            el("div", { class: "team-name", text: t.name && t.name !== t.id ? t.name : t.id }),
            el("div", { class: "muted", text: `${t.id} · ${open ? `${t.dashboards} dashboard${t.dashboards > 1 ? "s" : ""} open` : "no dashboard open"}` })),
          !controller
            ? el("span", { class: "muted link-hidden", text: "link: for controllers" })
            : t.link_revoked
              ? el("span", { class: "muted", text: "link revoked" })
              : el("a", { class: "button small", href: url, target: "_blank", rel: "noopener", text: "Open ↗" }),
          !controller || t.link_revoked ? null
            : el("button", { type: "button", class: "small", onclick: () => copy(new URL(url, location.href).href), text: "Copy link" }),
          // A new link stops every earlier one (a leaked or forwarded link); revoke stops all.
          !controller ? null
            : el("button", { type: "button", class: "small link-new", "data-team": t.id, onclick: () => moveLink(t.id, "POST"), text: "New link" }),
          !controller || t.link_revoked ? null
            : el("button", { type: "button", class: "small link-revoke", "data-team": t.id, onclick: () => moveLink(t.id, "DELETE"), text: "Revoke" }));
      }));
      const ids = teams.map((t) => t.id).join("\n");
      if (ids !== teamIds) { teamIds = ids; renderTeamTabs(teams); renderSendTeams(teams); }
    }

    async function moveLink(team, method) {
      const what = method === "POST" ? "Issue a new link" : "Revoke the link";
      if (!window.confirm(`${what} of team ${team}? Dashboards opened with the current link stop working.`)) return;
      try {
        await api(method, `${base}/teams/${enc(team)}/link`);
        onExercise(await api("GET", base)); // the stream sends it on its next change only
        say(method === "POST" ? `New link for team ${team}` : `Link of team ${team} revoked`);
      } catch (err) {
        sayError(err, "link: ");
      }
    }

    async function copy(text) {
      try {
        await navigator.clipboard.writeText(text);
        say(`Copied ${text}`);
      } catch (_) { // no clipboard API (plain http on another host): let the user copy it
        window.prompt("Copy this dashboard address:", text);
      }
    }

    const COUNTS = [
      ["delivered", "Delivered"], ["late", "Late"], ["failed", "Failed"], ["received", "Received"],
      ["average_latency_ms", "Avg latency"], ["average_receipt_latency_ms", "Avg receipt latency"],
      ["scheduled", "Scheduled"], ["pending", "Pending"], ["retrying", "Retrying"],
      ["cancelled", "Cancelled"], ["skipped", "Skipped"],
    ];
    const countNodes = {};
    $("counts").replaceChildren(...COUNTS.map(([k, label], i) => {
      countNodes[k] = el("div", { class: "stat-value", text: "—" });
      return el("div", { class: `stat ${i < 6 ? "major" : "minor"}`, "data-count": k }, countNodes[k], el("div", { class: "stat-label", text: label }));
    }));
    function renderCounts(c) {
      for (const [k] of COUNTS) {
        const v = c[k];
        setText(countNodes[k], k.startsWith("average") ? fmtMs(v) : String(v ?? 0));
        countNodes[k].parentNode.dataset.nonzero = String(!!v);
      }
    }

    // ---- deliveries table ----
    const rows = new Map(); // "team\ninject" -> {d, tr}
    const table = $("deliveries");
    const groups = new Map(); // team id -> its <tbody>
    const filter = { team: "", status: "" };
    const keyOf = (d) => `${d.team_id}\n${d.inject_id}`;
    const compare = (a, b) => (a.due_exercise_time - b.due_exercise_time) || a.inject_id.localeCompare(b.inject_id);

    function groupOf(team) {
      let g = groups.get(team);
      if (!g) {
        g = el("tbody", { "data-team": team });
        groups.set(team, g);
        placeGroups();
      }
      return g;
    }
    // Groups in the exercise's team order; teams it does not list go last.
    function placeGroups() {
      const order = ex ? ex.teams.map((t) => t.id) : [];
      const rank = (id) => (order.includes(id) ? order.indexOf(id) : order.length);
      table.append(...[...groups.keys()].sort((a, b) => rank(a) - rank(b) || a.localeCompare(b)).map((id) => groups.get(id)));
    }
    const notYetDue = (d) => d.status === "pending" && (!ex || d.due_exercise_time > ex.exercise_time);

    function badges(d) {
      const out = [];
      if (d.status === "delivered" && d.late) out.push(el("span", { class: "badge late", title: "delivered late", text: "late" }));
      else out.push(el("span", { class: `badge ${d.status}`, text: d.status }));
      if (d.received_at) out.push(el("span", { class: "badge received", text: "received" }));
      if (d.live) out.push(el("span", { class: "badge live", title: "sent live from the control room", text: "live" }));
      return out;
    }

    function buildRow(d) {
      const tr = el("tr", {
          "data-team": d.team_id, "data-inject": d.inject_id, "data-status": d.status,
          "data-received": String(!!d.received_at),
        },
        el("td", { class: "mono", text: d.team_id }),
        el("td", { class: "mono", text: fmtT(d.due_exercise_time) }),
        el("td", { class: "mono", text: d.inject_id }),
        el("td", { text: d.type || "" }),
        el("td", {}, badges(d)),
        el("td", { class: "num", text: d.attempts ?? 0 }),
        el("td", { class: "num", text: fmtMs(d.latency_ms) }),
        el("td", { class: "mono", title: d.received_at || "", text: fmtWall(d.received_at) }),
        el("td", { class: "num", text: d.received_at && d.watched === false ? "not watched" : fmtMs(d.receipt_latency_ms) }),
        el("td", { class: "error-cell", title: d.last_error || "", text: d.last_error || "" }),
        el("td", { class: "row-actions" },
          d.status === "failed" ? el("button", { type: "button", class: "retry small warn", text: "Retry" }) : null,
          notYetDue(d) ? [el("button", { type: "button", class: "small", "data-action": "reschedule", text: "Reschedule" }),
                          el("button", { type: "button", class: "small", "data-action": "cancel", text: "Cancel" })] : null));
      tr.hidden = !matches(d);
      tr.dataset.due = String(notYetDue(d));
      return tr;
    }

    function matches(d) {
      if (filter.team && d.team_id !== filter.team) return false;
      switch (filter.status) {
        case "": return true;
        case "late": return d.status === "delivered" && !!d.late;
        case "received": return !!d.received_at;
        case "unreceived": return d.status === "delivered" && !d.received_at;
        default: return d.status === filter.status;
      }
    }

    function onDeliveries(list) {
      rows.clear();
      const frags = new Map();
      for (const d of list.slice().sort(compare)) {
        const tr = buildRow(d);
        rows.set(keyOf(d), { d, tr });
        if (!frags.has(d.team_id)) frags.set(d.team_id, document.createDocumentFragment());
        frags.get(d.team_id).append(tr);
      }
      for (const g of groups.values()) g.replaceChildren();
      for (const [team, frag] of frags) groupOf(team).append(frag);
      afterRowsChanged();
      document.dispatchEvent(new CustomEvent("scip:deliveries", { detail: list })); // play-room.js
    }

    function onDelivery(d) {
      const key = keyOf(d);
      const tr = buildRow(d);
      const old = rows.get(key);
      if (old) old.tr.replaceWith(tr);
      else {
        // Insert in order within its team (new records are rare: live injects).
        const g = groupOf(d.team_id);
        const before = [...g.children].find((n) => compare(rows.get(`${n.dataset.team}\n${n.dataset.inject}`).d, d) > 0);
        g.insertBefore(tr, before || null);
      }
      rows.set(key, { d, tr });
      soon();
      document.dispatchEvent(new CustomEvent("scip:delivery", { detail: d })); // play-room.js
    }

    // Two-way play (play-room.js draws it): answers, posts and scores as they happen.
    const playEvent = (kind) => (data) =>
      document.dispatchEvent(new CustomEvent("scip:play", { detail: { kind, data } }));

    // Bursts of `delivery` events: recount once per frame, not once per event.
    let recount = 0;
    const soon = () => { if (!recount) recount = setTimeout(() => { recount = 0; afterRowsChanged(); }, 100); };

    // Pending rows whose due time has passed lose their Cancel/Reschedule buttons.
    function refreshDueRows() {
      for (const [key, r] of rows) {
        if (r.tr.dataset.due === "true" && !notYetDue(r.d)) {
          const tr = buildRow(r.d);
          r.tr.replaceWith(tr);
          rows.set(key, { d: r.d, tr });
        }
      }
    }

    function afterRowsChanged() {
      let shown = 0;
      const perTeam = new Map();
      for (const { d, tr } of rows.values()) {
        if (!tr.hidden) shown++;
        perTeam.set(d.team_id, (perTeam.get(d.team_id) || 0) + 1);
      }
      for (const tab of $("team-tabs").children) {
        const n = tab.dataset.team ? perTeam.get(tab.dataset.team) || 0 : rows.size;
        setText(tab.querySelector(".n"), String(n));
      }
      setText($("shown-count"), `${shown} of ${rows.size}`);
      $("no-deliveries").hidden = shown > 0;
      let failed = 0;
      for (const r of rows.values()) if (r.d.status === "failed") failed++;
      $("retry-all").disabled = !failed;
      setText($("retry-all"), failed ? `Retry all failed (${failed})` : "Retry all failed");
    }

    function applyFilter() {
      for (const { d, tr } of rows.values()) tr.hidden = !matches(d);
      for (const tab of $("team-tabs").children) tab.setAttribute("aria-selected", String(tab.dataset.team === filter.team));
      afterRowsChanged();
    }
    $("status-filter").addEventListener("change", (e) => { filter.status = e.target.value; applyFilter(); });

    function renderTeamTabs(teams) {
      const tab = (id, label) => el("button", { type: "button", role: "tab", class: "tab", "data-team": id,
        onclick: () => { filter.team = id; applyFilter(); } }, label, " ", el("span", { class: "n", text: "0" }));
      $("team-tabs").replaceChildren(tab("", "All"), ...teams.map((t) => tab(t.id, t.id)));
      teams.forEach((t) => groupOf(t.id));
      placeGroups();
      applyFilter();
    }

    // Row buttons (one listener for the whole table).
    table.addEventListener("click", async (ev) => {
      const b = ev.target.closest("button");
      if (!b) return;
      const tr = b.closest("tr");
      const { team, inject } = tr.dataset;
      const path = `${base}/teams/${enc(team)}/injects/${enc(inject)}`;
      const label = `${team} / ${inject}`;
      try {
        if (b.classList.contains("retry")) {
          await api("POST", `${path}/retry`, {});
          say(`Retrying ${label}`);
        } else if (b.dataset.action === "cancel") {
          await api("POST", `${path}/cancel`, {});
          say(`Cancelled ${label}`);
        } else if (b.dataset.action === "reschedule") {
          const cur = rows.get(`${team}\n${inject}`);
          const answer = window.prompt(`New time for ${label} (T+ mm:ss or seconds):`,
            cur ? fmtT(cur.d.due_exercise_time).slice(2) : "");
          if (answer === null) return;
          const at = parseT(answer);
          if (at === null) return say(`“${answer}” is not a time: use mm:ss or seconds`, "error");
          await api("POST", `${path}/reschedule`, { at });
          say(`Rescheduled ${label} to ${fmtT(at)}`);
        }
      } catch (err) {
        sayError(err, `${label}: `);
      }
    });

    $("retry-all").addEventListener("click", async () => {
      try {
        const r = await api("POST", `${base}/deliveries/retry`, {});
        say(`Retrying ${r && r.retried !== undefined ? r.retried : "all"} failed deliveries`);
      } catch (err) {
        sayError(err, "Retry all: ");
      }
    });

    // ---- send form ----
    const form = $("send-form");
    const FIELDS = {
      news: [["outlet", "Outlet"], ["headline", "Headline"], ["body", "Body", "textarea"], ["image", "Image (media path)"], ["url", "Link"]],
      social: [["display_name", "Display name"], ["username", "Username (@handle)"], ["platform", "Platform"],
               ["verified", "Verified account", "checkbox"], ["text", "Text", "textarea"], ["likes", "Likes", "number"], ["reposts", "Reposts", "number"]],
      email: [["from", "From"], ["to", "To (comma-separated)"], ["cc", "Cc (comma-separated)"], ["subject", "Subject"], ["body", "Body", "textarea"]],
      sms: [["from", "From (number)"], ["sender_name", "Sender name"], ["text", "Text", "textarea"]],
      intel: [["title", "Title"], ["classification", "Classification"], ["source", "Source"], ["body", "Body", "textarea"]],
      video: [["title", "Title"], ["url", "Video (media path or URL)"], ["caption", "Caption", "textarea"], ["duration_seconds", "Duration (seconds)", "number"]],
      image: [["title", "Title"], ["url", "Image (media path or URL)"], ["caption", "Caption", "textarea"]],
      other: [["title", "Title"], ["body", "Body", "textarea"]],
    };
    FIELDS.briefing = FIELDS.intel;
    const LISTS = ["to", "cc"]; // comma-separated -> array
    const draft = {}; // values typed so far, kept across type changes

    const currentType = () => (form.elements.type.value === "__other" ? form.elements.type_other.value.trim() : form.elements.type.value);

    function renderContentFields() {
      for (const input of $("content-fields").querySelectorAll("[name]")) {
        draft[input.name] = input.type === "checkbox" ? input.checked : input.value;
      }
      const other = form.elements.type.value === "__other";
      form.elements.type_other.hidden = !other;
      const fields = FIELDS[other ? "other" : form.elements.type.value] || FIELDS.other;
      $("content-fields").replaceChildren(...fields.map(([name, label, kind]) => {
        const v = draft[name];
        if (kind === "checkbox") return el("label", { class: "check" }, el("input", { type: "checkbox", name, checked: !!v }), ` ${label}`);
        const input = kind === "textarea"
          ? el("textarea", { name, rows: 4 }, v || "")
          : el("input", { name, type: kind || "text", value: v || "", autocomplete: "off", placeholder: name === "classification" ? "RESTRICTED - EXERCISE" : null });
        return el("label", { class: kind === "textarea" ? "wide" : null }, label, input);
      }));
    }
    form.elements.type.addEventListener("change", renderContentFields);
    renderContentFields();

    // "live-HHMMSS" (wall clock); a second one within the same second gets a suffix.
    let lastStem = "";
    let serial = 1;
    function freshId() {
      const t = new Date();
      const stem = `live-${[t.getHours(), t.getMinutes(), t.getSeconds()].map((n) => String(n).padStart(2, "0")).join("")}`;
      serial = stem === lastStem ? serial + 1 : 1;
      lastStem = stem;
      form.elements.id.value = serial > 1 ? `${stem}-${serial}` : stem;
    }
    freshId();

    function renderSendTeams(teams) {
      const checked = new Set([...form.querySelectorAll("input[name=team]:checked")].map((i) => i.value));
      $("send-teams").replaceChildren(...teams.map((t) =>
        el("label", { class: "check" }, el("input", { type: "checkbox", name: "team", value: t.id, checked: checked.has(t.id) }), ` ${t.id}`)));
      syncAll();
    }
    // "All teams" mirrors the team boxes: checked when all are, half when some are.
    function syncAll() {
      const boxes = [...form.querySelectorAll("input[name=team]")];
      const n = boxes.filter((b) => b.checked).length;
      $("team-all").checked = boxes.length > 0 && n === boxes.length;
      $("team-all").indeterminate = n > 0 && n < boxes.length;
    }
    $("team-all").addEventListener("change", (e) => {
      form.querySelectorAll("input[name=team]").forEach((b) => (b.checked = e.target.checked));
    });
    $("send-teams").addEventListener("change", syncAll);

    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const f = form.elements;
      const teams = [...form.querySelectorAll("input[name=team]:checked")].map((i) => i.value);
      const type = currentType();
      // Each problem is shown under its field, and all of them in the message.
      SCIP.clearFieldErrors(form);
      const problems = [];
      const problem = (field, text) => { problems.push(text); SCIP.fieldError(field, text); };
      if (!teams.length) problem(form.querySelector(".team-picks"), "choose at least one team");
      if (!f.id.value.trim()) problem(f.id, "the inject needs an id");
      if (!type) problem(form.elements.type.value === "__other" ? f.type_other : f.type, "the inject needs a type");
      const atText = f.at.value.trim();
      const at = atText && atText.toLowerCase() !== "now" ? parseT(atText) : null;
      if (atText && atText.toLowerCase() !== "now" && at === null) problem(f.at, `“${atText}” is not a time: use mm:ss or seconds`);

      let content = {};
      for (const input of $("content-fields").querySelectorAll("[name]")) {
        const { name } = input;
        if (input.type === "checkbox") { if (input.checked) content[name] = true; continue; }
        const v = input.value.trim();
        if (!v) continue;
        if (input.type === "number") content[name] = Number(v);
        else if (LISTS.includes(name)) content[name] = v.split(",").map((s) => s.trim()).filter(Boolean);
        else content[name] = input.value;
      }
      if (f.content_json.value.trim()) {
        try {
          const raw = JSON.parse(f.content_json.value);
          if (!raw || typeof raw !== "object" || Array.isArray(raw)) throw new Error("it must be a JSON object");
          content = Object.assign(content, raw);
        } catch (e) {
          problem(f.content_json, `raw JSON content: ${e.message}`);
        }
      }
      if (problems.length) return say("Not sent:", "error", problems);

      const inject = { id: f.id.value.trim(), type, content };
      if (f.priority.value) inject.priority = f.priority.value;
      if (f.action.value.trim()) inject.action = f.action.value.trim();
      const media = f.media.value.split(",").map((s) => s.trim()).filter(Boolean);
      if (media.length) inject.media = media;
      const body = { teams, inject };
      if (at !== null) body.at = at;

      const button = form.querySelector("button[type=submit]");
      button.disabled = true;
      try {
        const r = await api("POST", `${base}/injects`, body);
        const text = `Sent ${inject.id} to ${teams.join(", ")} ${at === null ? "now" : `at ${fmtT(at)}`}: ${r && r.scheduled !== undefined ? `${r.scheduled} scheduled` : "ok"}`;
        say(text);
        setText($("send-result"), text);
        freshId();
      } catch (err) {
        sayError(err, "Not sent: ");
        setText($("send-result"), `Not sent: ${err.message}`);
        // A team has that id already: the error goes under the id too.
        if (/already has an inject/.test(err.message)) SCIP.fieldError(f.id, err.message);
      } finally {
        button.disabled = false;
      }
    });

    // ---- stream ----
    let checking = false;
    const token = SCIP.apiToken();
    const es = SCIP.stream(`${base}/events${token ? `?access_token=${encodeURIComponent(token)}` : ""}`,
      { exercise: onExercise, deliveries: onDeliveries, delivery: onDelivery,
        response: playEvent("response"), post: playEvent("post"), score: playEvent("score") },
      (status) => { $("connection").hidden = false; SCIP.setConnection($("connection"), status); },
      async () => { // is it gone for good (404), the token refused (401) or just a blip?
        if (checking || !stops.length) return;
        checking = true;
        try { await api("GET", base); } catch (err) {
          if (err.status === 404) {
            es.close();
            SCIP.setConnection($("connection"), "error");
            fatal("Exercise not found", `There is no exercise “${exId}”.`);
          }
        } finally { checking = false; }
      });
    stops.push(() => {
      es.close();
      SCIP.setConnection($("connection"), "error");
    });
  }

  if (!SCIP.apiToken()) needLogin();
  else if (parts[0] === "exercises" && parts[1] && parts.length === 2) roomPage(parts[1]);
  else listPage();
})();
