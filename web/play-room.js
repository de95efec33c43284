// Control room, two-way play: each team's answer and outcome per inject that asks
// for one (a column per team), what waits for a condition, a timeline of answers,
// posts, decisions and scores, and the forms to decide, score and post as a
// persona. control.js hands over the exercise and its deliveries as events
// (`scip:exercise`, `scip:deliveries`, `scip:delivery`, `scip:play`).
"use strict";
(() => {
  const { el, api, enc, fmtT } = SCIP;
  const $ = (id) => document.getElementById(id);
  const panel = $("play");
  const parts = SCIP.pathParts();
  if (!panel || parts[0] !== "exercises" || !parts[1]) return;
  const base = `/api/v1/exercises/${enc(parts[1])}`;
  let teams = [];            // team ids, scenario order
  let objectives = [];       // [{id, title}]
  let channels = [];         // [{id, name}]
  const deliveries = new Map(); // "team\ninject" -> delivery
  const timeline = [];       // {at, text, kind}, oldest first
  let loadedRun = null;      // the run whose stored history the timeline shows

  const key = (d) => `${d.team_id}\n${d.inject_id}`;
  const isPlay = (d) => d.outcome !== undefined || d.condition !== undefined;

  function show() {
    const any = [...deliveries.values()].some(isPlay) || channels.length || objectives.length || timeline.length;
    panel.hidden = !any;
  }

  function options(select, items, keep) {
    const was = select.value;
    select.replaceChildren(...items.map(([value, text]) => el("option", { value, text })));
    if (keep && items.some(([v]) => v === was)) select.value = was;
  }

  // One row per inject that expects an answer or waits on a condition; a column per team.
  function renderGrid() {
    const head = $("play-head");
    head.replaceChildren(el("th", { scope: "col", text: "Inject" }),
      ...teams.map((t) => el("th", { scope: "col", text: t })));
    const injects = [];
    for (const d of deliveries.values()) if (isPlay(d) && !injects.includes(d.inject_id)) injects.push(d.inject_id);
    $("play-body").replaceChildren(...injects.map((inject) => el("tr", { "data-inject": inject },
      el("th", { scope: "row", text: inject }),
      ...teams.map((team) => cell(deliveries.get(`${team}\n${inject}`))))));
  }

  function cell(d) {
    if (!d) return el("td", { class: "muted", text: "—" });
    const bits = [];
    if (d.outcome) bits.push(el("span", { class: "outcome", "data-outcome": d.outcome, text: d.outcome }));
    if (d.choice) bits.push(el("strong", { text: ` ${d.choice}` }));
    if (d.answered_at !== undefined) bits.push(el("span", { class: "muted", text: ` at ${fmtT(d.answered_at)}` }));
    if (d.condition === "held") bits.push(el("span", { class: "condition", title: d.waits_for || "", text: `waits: ${d.waits_for || "condition"}` }));
    if (d.condition === "released") bits.push(el("span", { class: "condition", text: `due ${fmtT(d.due_exercise_time)}` }));
    if (d.condition === "skipped") bits.push(el("span", { class: "condition skipped", title: d.skip_reason || "", text: `skipped: ${d.skip_reason || ""}` }));
    return el("td", { "data-team": d.team_id }, ...bits);
  }

  function renderDecisions() {
    const names = [];
    for (const d of deliveries.values()) if (d.decision && d.condition === "held" && !names.includes(d.decision)) names.push(d.decision);
    $("decide-form").hidden = !names.length;
    options($("decide-name"), names.map((n) => [n, n]), true);
  }

  function renderTargets() {
    const team = $("score-team").value;
    const injects = [...deliveries.values()].filter((d) => d.team_id === team && isPlay(d)).map((d) => d.inject_id);
    options($("score-target"), [
      ...objectives.map((o) => [`objective:${o.id}`, `objective: ${o.title}`]),
      ...injects.map((i) => [`inject:${i}`, `inject: ${i}`]),
    ], true);
  }

  function renderTimeline() {
    $("play-timeline").replaceChildren(...timeline.slice().reverse().slice(0, 200).map((e) =>
      el("li", { "data-kind": e.kind }, el("span", { class: "mono", text: fmtT(e.at) }), " ", e.text)));
  }

  function describe(kind, m) {
    switch (kind) {
      case "response": return `${m.team_id} answered ${m.inject_id}${m.choice ? `: ${m.choice}` : ""}${m.text ? ` “${m.text}”` : ""}${m.by ? ` (${m.by})` : ""}${m.outcome ? ` → ${m.outcome}` : ""}${m.edit ? " (edit)" : ""}`;
      case "post": return `${m.author_team || m.persona || "?"} posted on ${m.channel}: “${m.text}” → ${(m.reached || []).join(", ")}`;
      case "score": return `${m.by || "evaluator"} scored ${m.team_id} on ${m.target} ${m.target_id}: ${m.score}${m.note ? ` “${m.note}”` : ""}`;
      case "decision": return `decision ${m.subject}${m.body && m.body.teams ? ` for ${m.body.teams.join(", ")}` : " for every team"}`;
      default: return JSON.stringify(m);
    }
  }

  // The stored history (GET responses), then live events on top.
  async function load() {
    try {
      const rows = await api("GET", `${base}/responses`);
      timeline.length = 0;
      for (const r of rows || []) {
        const b = r.body || {};
        const m = r.kind === "score"
          ? { team_id: r.team_id, target: (r.subject || "").split(":")[0], target_id: (r.subject || "").split(":").slice(1).join(":"), score: b.score, note: b.note, by: r.by }
          : r.kind === "post" ? { author_team: r.team_id, persona: b.persona, channel: r.subject, text: b.text, reached: [] }
          : r.kind === "decision" ? { subject: r.subject, body: b }
          : { team_id: r.team_id, inject_id: r.subject, choice: b.choice, text: b.text, by: r.by, outcome: b.outcome, edit: b.edit };
        timeline.push({ at: r.exercise_time, kind: r.kind, text: describe(r.kind, m) });
      }
      renderTimeline();
      show();
    } catch (err) {
      console.warn("responses not loaded", err.message);
    }
  }

  document.addEventListener("scip:exercise", (ev) => {
    const e = ev.detail;
    const ids = (e.teams || []).map((t) => t.id);
    const changed = JSON.stringify([ids, e.objectives, e.channels]) !== JSON.stringify([teams, objectives, channels]);
    teams = ids;
    objectives = e.objectives || [];
    channels = e.channels || [];
    if (changed) {
      options($("score-team"), teams.map((t) => [t, t]), true);
      options($("decide-team"), [["", "every team"], ...teams.map((t) => [t, t])], true);
      options($("persona-channel"), channels.map((c) => [c.id, c.name || c.id]), true);
      $("persona-form").hidden = !channels.length;
      renderTargets();
      renderGrid();
      show();
    }
    if (loadedRun !== e.run) { loadedRun = e.run; load(); } // a reset starts a new history
  });
  document.addEventListener("scip:deliveries", (ev) => {
    deliveries.clear();
    for (const d of ev.detail) deliveries.set(key(d), d);
    renderGrid();
    renderDecisions();
    renderTargets();
    show();
  });
  document.addEventListener("scip:delivery", (ev) => {
    const d = ev.detail;
    deliveries.set(key(d), d);
    if (isPlay(d)) { renderGrid(); renderDecisions(); renderTargets(); show(); }
  });
  document.addEventListener("scip:play", (ev) => {
    const { kind, data } = ev.detail;
    timeline.push({ at: data.exerciseTime, kind, text: describe(kind, data) });
    renderTimeline();
    show();
  });
  $("score-team").addEventListener("change", renderTargets);

  async function submit(form, result, run) {
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      result.textContent = await run();
    } catch (err) {
      result.textContent = `Refused: ${err.message}`;
    } finally {
      button.disabled = false;
    }
  }

  $("decide-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const team = $("decide-team").value;
    submit(ev.target, $("decide-result"), async () => {
      const r = await api("POST", `${base}/decisions`, { decision: $("decide-name").value, teams: team ? [team] : undefined });
      timeline.push({ at: r.exercise_time, kind: "decision", text: describe("decision", { subject: r.decision, body: { teams: r.teams } }) });
      renderTimeline();
      return `Decided ${r.decision}: ${r.released} released`;
    });
  });
  $("score-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const [target, ...rest] = $("score-target").value.split(":");
    const body = { team: $("score-team").value, score: Number($("score-value").value), note: $("score-note").value.trim() || undefined };
    body[target] = rest.join(":");
    submit(ev.target, $("score-result"), async () => {
      const r = await api("POST", `${base}/scores`, body);
      $("score-note").value = "";
      return `Scored ${r.team} ${r.score} on ${r.target_id}`;
    });
  });
  $("persona-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    submit(ev.target, $("persona-result"), async () => {
      const r = await api("POST", `${base}/posts`, { channel: $("persona-channel").value, as: $("persona-name").value.trim(), text: $("persona-text").value.trim() });
      $("persona-text").value = "";
      return `Posted to ${r.reached.join(", ")}`;
    });
  });
})();
