// Team dashboard: /exercises/{id}/teams/{team}. Shows the exercise clock and the
// team's feed (newest first), confirms every inject it has shown (receipts),
// answers the injects that ask for a response and posts to public channels.
"use strict";
(() => {
  const { el, api, enc, fmtT, isImage, isVideo } = SCIP;
  const $ = (id) => document.getElementById(id);
  const [, exId, , teamId] = SCIP.pathParts(); // ["exercises", id, "teams", team]
  // The media URLs the stream handed out with the inject being rendered: each opens that
  // one file while this dashboard's link is valid. A reference without one (an
  // http(s) address, or text that is no file) is used as the address it names.
  let mediaUrls = {};
  const mediaUrl = (ref) => mediaUrls[String(ref)] || SCIP.mediaUrl(ref, exId);
  const exBase = `/api/v1/exercises/${enc(exId || "")}`;
  const teamBase = `${exBase}/teams/${enc(teamId || "")}`;
  // The link's signed token: the team's stream and receipts need it.
  const token = new URLSearchParams(location.search).get("token") || "";
  const withToken = token ? `?token=${encodeURIComponent(token)}` : "";
  const streamUrl = `${teamBase}/events${withToken}`;
  const feed = $("feed");

  let run = null;             // run of the list on screen; a new run clears it
  let shown = new Map();      // message.id -> <article> on screen
  const newUntil = new Map(); // message.id -> ms timestamp until which it is highlighted
  const confirmed = new Set(); // ids this page (or an earlier one) confirmed this run
  const pending = new Set();   // ids shown but not yet confirmed
  let unread = 0;
  let historySeen = false;    // a history of `run` was shown (so the next one is a reconnect)
  let names = { exercise: exId, team: teamId };
  let es = null;

  const answers = new Map();  // message.id -> {at, choice}: this team's first answer
  let startTime = null;       // the scenario's start_time, seconds after midnight (null: none)
  let lastClock = null;

  const HIGHLIGHT_MS = 10000;
  const TYPE_LABELS = {
    social: "Social media", email: "Email", sms: "Text message", news: "News",
    intel: "Intelligence report", briefing: "Briefing", video: "Video", image: "Image", tweet: "Social media",
  };

  // ---- header -----------------------------------------------------------
  function updateTitle() {
    document.title = `${unread ? `(${unread}) ` : ""}${names.team} · ${names.exercise}`;
  }

  // The in-world time of day: the scenario's start_time plus the exercise time,
  // "HH:MM", past midnight from 00:00 again.
  function showWorldTime() {
    const box = $("world-clock");
    box.hidden = startTime === null || !lastClock;
    if (box.hidden) return;
    const secs = (startTime + Math.floor(Number(lastClock.current) || 0)) % 86400;
    const hhmm = [Math.floor(secs / 3600), Math.floor(secs / 60) % 60].map((n) => String(n).padStart(2, "0")).join(":");
    if ($("world-time").textContent !== hhmm) $("world-time").textContent = hhmm;
  }

  function onClock(c) {
    lastClock = c;
    $("clock").textContent = c.formatted || fmtT(c.current);
    const percent = Math.round(Math.min(100, Math.max(0, Number(c.percentage) || 0)));
    $("progress-bar").style.width = `${percent}%`;
    $("progress").setAttribute("aria-valuenow", String(percent));
    $("progress").setAttribute("aria-valuetext",
      `${c.formatted || fmtT(c.current)}${c.total ? ` of ${fmtT(c.total).slice(2)}` : ""} (${percent}%)`);
    showWorldTime();
    $("clock-sub").textContent = [c.total && `of ${fmtT(c.total).slice(2)}`, c.speed && c.speed !== 1 && `×${c.speed} speed`,
      c.total_turns && `turn ${c.turn || 0} of ${c.total_turns}`]
      .filter(Boolean).join(" · ");
    $("state").textContent = $("state").dataset.state = c.status;
    const title = SCIP.bannerTitle(c.status);
    $("banner").hidden = !title;
    $("banner").dataset.state = c.status;
    $("banner-title").textContent = title || "";
    $("banner-reason").textContent = c.reason || "";
  }

  function fatal(message) {
    if (es) es.close();
    SCIP.setConnection($("connection"), "error");
    $("banner").hidden = true;
    $("empty").hidden = true;
    const box = $("fatal");
    box.replaceChildren(el("h2", { text: "This dashboard cannot be shown" }), el("p", { text: message }));
    box.hidden = false;
  }

  // The header's names come with the stream (the API itself needs a token the team has not).
  function onNames(n) {
    const ex = n.exercise || {}, team = n.team || {};
    names = { exercise: ex.name || ex.id, team: team.name || team.id };
    const start = /^(\d\d):(\d\d)(?::(\d\d))?$/.exec(ex.start_time || "");
    startTime = start ? Number(start[1]) * 3600 + Number(start[2]) * 60 + Number(start[3] || 0) : null;
    showWorldTime();
    $("exercise-name").textContent = [ex.id, ex.name && ex.name !== ex.id && ex.name, team.name && `team ${team.id}`].filter(Boolean).join(" · ");
    $("team-name").textContent = team.name || team.id;
    showComposer(Array.isArray(n.channels) ? n.channels : []);
    updateTitle();
  }

  // Why the stream closed: a refused link (401/403, with the reason) or an unknown
  // exercise or team (404) ends the page, and with it the receipts; anything else
  // is a blip the stream retries. Asked of the stream itself: nothing else this
  // page may read tells, and a receipt is sent only for what was shown.
  let refused = false;
  async function checkLink() {
    const err = await SCIP.refusal(streamUrl);
    if (!err || refused) return;
    if (err.status === 404) refuse(`${err.message}. Check the address with the exercise control.`);
    else if (err.status === 401 || err.status === 403) refuse(`${err.message} This dashboard opens only with its team's current link.`);
  }
  function refuse(message) {
    refused = true;
    clearTimeout(retryTimer);
    pending.clear();
    fatal(message);
  }

  // ---- channels ---------------------------------------------------------
  // Tabs that filter the feed by channel, each with its unread count. An inject is
  // unread until it has been shown in the selected tab ("All" shows every one);
  // types no channel names appear under "All" only.
  const CHANNELS = [
    { id: "all", label: "All" },
    { id: "social", label: "Social", types: ["social", "tweet", "post"] },
    { id: "mail", label: "Mail", types: ["email", "mail"] },
    { id: "sms", label: "SMS", types: ["sms", "text"] },
    { id: "news", label: "News", types: ["news", "article", "video", "image"] },
    { id: "briefings", label: "Briefings", types: ["briefing", "intel", "report", "document"] },
  ];
  const channelOf = (type) => (CHANNELS.find((c) => c.types && c.types.includes(type)) || {}).id || null;
  const inChannel = (node, channel) => channel === "all" || node.dataset.channel === channel;
  let channel = "all";
  const unseen = new Set(); // ids of injects not yet shown in the selected tab

  function buildTabs() {
    $("channel-tabs").replaceChildren(...CHANNELS.map((c) =>
      el("button", { type: "button", role: "tab", id: `tab-${c.id}`, class: "tab", "data-channel": c.id,
          "aria-controls": "feed", "aria-selected": String(c.id === channel), tabindex: c.id === channel ? "0" : "-1",
          onclick: () => selectChannel(c.id) },
        c.label, " ",
        el("span", { class: "n", hidden: true }, el("span", { class: "count", text: "0" }), el("span", { class: "sr-only", text: " unread" })))));
    $("feed").setAttribute("aria-labelledby", `tab-${channel}`);
  }

  function selectChannel(id, focus) {
    channel = id;
    for (const tab of $("channel-tabs").children) {
      const on = tab.dataset.channel === id;
      tab.setAttribute("aria-selected", String(on));
      tab.tabIndex = on ? 0 : -1;
      if (on && focus) tab.focus();
    }
    $("feed").setAttribute("aria-labelledby", `tab-${id}`);
    applyChannel();
    afterPaint(); // what the tab shows now is on screen: its receipts go
  }

  // Arrow keys, Home and End move between the tabs (and select the one reached).
  $("channel-tabs").addEventListener("keydown", (ev) => {
    const ids = CHANNELS.map((c) => c.id);
    const at = ids.indexOf(channel);
    const to = { ArrowRight: at + 1, ArrowLeft: at - 1, Home: 0, End: ids.length - 1 }[ev.key];
    if (to === undefined) return;
    ev.preventDefault();
    selectChannel(ids[(to + ids.length) % ids.length], true);
  });

  // Shows the selected channel's injects (the rest hidden), marks them read, and
  // updates the counts.
  function applyChannel() {
    let visible = 0;
    for (const [id, node] of shown) {
      const hide = !inChannel(node, channel);
      if (node.hidden !== hide) node.hidden = hide;
      if (!hide) { visible += 1; unseen.delete(id); }
    }
    const counts = { all: 0 };
    for (const id of unseen) {
      const node = shown.get(id);
      if (!node) continue;
      counts.all += 1;
      counts[node.dataset.channel] = (counts[node.dataset.channel] || 0) + 1;
    }
    $("empty").hidden = visible > 0;
    $("empty").textContent = shown.size
      ? "No messages in this channel yet."
      : "No messages yet. New injects appear here as the exercise runs.";
    for (const tab of $("channel-tabs").children) {
      const n = counts[tab.dataset.channel] || 0;
      const badge = tab.querySelector(".n");
      badge.hidden = n === 0;
      tab.dataset.unread = String(n);
      badge.querySelector(".count").textContent = String(n);
    }
  }

  // ---- feed -------------------------------------------------------------
  // Text of a value that may be a list ("to": ["a", "b"] or "a").
  const list = (v) => (Array.isArray(v) ? v.join(", ") : v === undefined || v === null ? "" : String(v));
  const field = (cls, label, value) =>
    value ? el("div", { class: "field-row" }, el("span", { class: "label", text: label }), el("span", { class: cls, text: list(value) })) : null;

  // ---- media, and a card where one is missing ------------------------------
  // A media file that is not there (no address, or its request fails) shows a grey card
  // naming it instead of an empty frame; an attachment, a link that opens nothing.
  const fileName = (ref) => String(ref || "").split(/[?#]/)[0].split("/").filter(Boolean).pop() || "file";
  const missingCard = (what, ref) =>
    el("div", { class: "media-missing", role: "img", "aria-label": `${what} not available: ${fileName(ref)}`,
      "data-missing": fileName(ref), text: `${what} not available: ${fileName(ref)}` });
  // Hides `node` (it keeps its address) and puts the card after it.
  function showMissing(node, what, ref) {
    if (node.hidden) return;
    node.hidden = true;
    node.after(missingCard(what, ref));
  }
  const picture = (ref, attrs) =>
    el("img", { ...attrs, src: mediaUrl(ref), onerror: (e) => showMissing(e.target, "Picture", ref) });
  // A clip; its poster, when that fails to load, is dropped rather than left blank.
  function clip(ref, poster) {
    if (!ref) return missingCard("Video", "");
    const node = el("video", { src: mediaUrl(ref), controls: true, preload: "metadata",
      poster: poster ? mediaUrl(poster) : null, onerror: (e) => showMissing(e.target, "Video", ref) });
    if (poster) el("img", { src: mediaUrl(poster), onerror: () => node.removeAttribute("poster") });
    return node;
  }
  // A link to a file of the package, checked with a HEAD request: a missing one becomes a
  // disabled link saying so. Addresses elsewhere are left as they are.
  function attachment(ref, text) {
    const href = mediaUrl(ref);
    const link = el("a", { href, target: "_blank", rel: "noopener", text });
    if (href.startsWith("/")) {
      fetch(href, { method: "HEAD", credentials: "same-origin" }).then((r) => {
        if (r.ok) return;
        link.replaceWith(el("a", { class: "media-missing-link", "aria-disabled": "true",
          "data-missing": fileName(ref), text: `Attachment not available: ${fileName(ref)}` }));
      }, () => {});
    }
    return link;
  }

  function mediaNode(ref, alt) {
    const src = mediaUrl(ref);
    if (isVideo(src)) return clip(ref);
    if (isImage(src)) return picture(ref, { alt: alt || "" });
    return attachment(ref, String(ref));
  }
  // Content comes in two vocabularies (SPEC section 4): ours (`title`, `text`,
  // `username`, `caption`) and the earlier platform's (`headline`, `body`, `message`,
  // `source`, `from`, `to`, `subject`). Every card reads its words from either.
  const first = (...vs) => vs.find((v) => v !== undefined && v !== null && v !== "");
  const titleOf = (c) => first(c.title, c.headline, c.subject);
  const textOf = (c) => first(c.text, c.body, c.message, c.caption);
  const senderOf = (c) => first(c.from, c.source, c.username, c.sender_name);
  const mediaBlock = (refs, alt) => (refs.length ? el("div", { class: "media" }, refs.map((r) => mediaNode(r, alt))) : null);

  const RENDER = {
    social(c, media) {
      const name = first(c.display_name, c.username, c.source, c.from) || "Unknown";
      const handle = c.username ? (String(c.username).startsWith("@") ? c.username : `@${c.username}`) : "";
      const avatar = c.avatar
        ? el("img", { class: "avatar", src: mediaUrl(c.avatar), alt: "", onerror: (e) => { e.target.hidden = true; } })
        : el("div", { class: "avatar", text: String(name).replace(/^@/, "").charAt(0).toUpperCase() });
      const reposts = c.reposts ?? c.retweets;
      return el("div", { class: "social-card", "data-platform": c.platform || "" },
        el("div", { class: "social-head" }, avatar,
          el("div", { class: "who" },
            el("div", {}, el("span", { class: "display-name", text: name }),
              c.verified ? el("span", { class: "verified", title: "Verified account", text: "✓" }) : null),
            el("div", { class: "handle", text: handle })),
          c.platform ? el("span", { class: "platform", text: c.platform }) : null),
        titleOf(c) ? el("h3", { class: "title", text: titleOf(c) }) : null,
        el("p", { class: "text", text: textOf(c) || "" }),
        mediaBlock(media, textOf(c)),
        el("div", { class: "social-stats" },
          el("span", { class: "likes", title: "Likes", text: c.likes ?? 0 }),
          el("span", { class: "reposts", title: "Reposts", text: reposts ?? 0 })));
    },

    email(c, media) {
      const atts = Array.isArray(c.attachments) ? c.attachments : c.attachments ? [c.attachments] : [];
      return el("div", { class: "email" },
        el("h3", { class: "subject", text: first(c.subject, c.title, c.headline) || "(no subject)" }),
        el("div", { class: "email-meta" }, field("from", "From", senderOf(c)), field("to", "To", c.to), field("cc", "Cc", c.cc)),
        el("div", { class: "body", text: first(c.body, c.text, c.message) || "" }),
        atts.length ? el("ul", { class: "attachments" }, atts.map((a) => {
          const name = typeof a === "string" ? a : a.name || a.filename || a.url || "attachment";
          const url = typeof a === "string" ? a : a.url;
          const size = a && a.size_bytes ? ` (${Math.max(1, Math.round(a.size_bytes / 1024))} KB)` : "";
          return el("li", {}, url ? attachment(url, name) : name, size);
        })) : null,
        mediaBlock(media));
    },

    sms(c, media) {
      const who = first(c.sender_name, c.from, c.source, c.username) || "Unknown sender";
      return el("div", { class: "sms" },
        el("div", { class: "sms-head" }, el("strong", { class: "sender", text: who }),
          c.sender_name && c.from ? el("span", { class: "number", text: c.from }) : null,
          c.to ? el("span", { class: "to", text: `to ${list(c.to)}` }) : null),
        titleOf(c) ? el("div", { class: "title", text: titleOf(c) }) : null,
        el("div", { class: "bubble", text: first(c.text, c.message, c.body) || "" }),
        mediaBlock(media));
    },

    news(c, media) {
      return el("div", { class: "news" },
        el("div", { class: "outlet", text: first(c.outlet, c.source, c.from) || "News" }),
        el("h3", { class: "headline", text: first(c.headline, c.title, c.subject) || "" }),
        c.image ? picture(c.image, { class: "lead-image", alt: first(c.headline, c.title) || "" }) : null,
        mediaBlock(media, first(c.headline, c.title)),
        el("div", { class: "body", text: first(c.body, c.text, c.message) || "" }),
        c.url ? el("div", { class: "news-url", text: c.url }) : null);
    },

    intel(c, media, m) {
      return el("div", { class: "report" },
        c.classification ? el("div", { class: "classification", text: c.classification }) : null,
        el("div", { class: "report-kind", text: m.type === "briefing" ? "Briefing" : "Intelligence report" }),
        el("h3", { class: "title", text: titleOf(c) || "" }),
        senderOf(c) ? el("div", { class: "source", text: `Source: ${senderOf(c)}` }) : null,
        c.to ? el("div", { class: "to", text: `To: ${list(c.to)}` }) : null,
        el("div", { class: "body", text: first(c.body, c.text, c.message) || "" }),
        mediaBlock(media, titleOf(c)),
        c.classification ? el("div", { class: "classification-foot", text: c.classification }) : null);
    },

    video(c, media) {
      // A still image in `media` serves as the poster; other media are shown below.
      const poster = media.find((r) => isImage(mediaUrl(r)));
      const rest = media.filter((r) => r !== poster);
      const src = c.url ? c.url : rest.length ? rest.shift() : "";
      return el("div", { class: "video" },
        titleOf(c) ? el("h3", { class: "title", text: titleOf(c) }) : null,
        senderOf(c) ? el("div", { class: "source", text: senderOf(c) }) : null,
        clip(src, poster),
        el("div", { class: "caption" }, first(c.caption, c.body, c.text, c.message) || "",
          c.duration_seconds ? el("span", { class: "duration", text: fmtT(c.duration_seconds).slice(2) }) : null),
        mediaBlock(rest));
    },

    image(c, media) {
      return el("figure", { class: "image" },
        titleOf(c) ? el("h3", { class: "title", text: titleOf(c) }) : null,
        c.url ? picture(c.url, { alt: textOf(c) || titleOf(c) || "" }) : null,
        mediaBlock(media, titleOf(c)),
        textOf(c) ? el("figcaption", { class: "caption", text: textOf(c) }) : null);
    },

    // Unknown types: a title, a body and the rest as a key/value list.
    other(c, media) {
      const used = ["title", "headline", "body", "text", "message"];
      const rest = Object.entries(c).filter(([k]) => !used.includes(k));
      return el("div", { class: "generic" },
        el("h3", { class: "title", text: first(c.title, c.headline) || "" }),
        el("div", { class: "body", text: first(c.body, c.text, c.message) || "" }),
        mediaBlock(media),
        rest.length ? el("dl", {}, rest.map(([k, v]) =>
          [el("dt", { text: k }), el("dd", { text: typeof v === "object" ? JSON.stringify(v) : String(v) })])) : null);
    },
  };
  RENDER.briefing = RENDER.intel;
  RENDER.tweet = RENDER.social;

  function renderItem(item) {
    mediaUrls = item.media_urls && typeof item.media_urls === "object" ? item.media_urls : {};
    const m = item.message || {};
    const c = m.content && typeof m.content === "object" ? m.content : { text: m.content };
    const type = String(m.type || "message");
    const media = (Array.isArray(m.media) ? m.media : m.media ? [m.media] : []).map(String);
    const prio = m.priority ? String(m.priority).toLowerCase() : "";
    const label = type === "social" && c.platform ? c.platform : TYPE_LABELS[type] || type.replace(/[_-]+/g, " ");
    return el("article", {
        class: `inject type-${type.replace(/[^a-z0-9_-]/gi, "")}`,
        "data-inject-id": m.id, "data-type": type, "data-priority": prio, "data-channel": channelOf(type) || "",
        "data-exercise-time": m.exerciseTime ?? "",
      },
      el("header", { class: "inject-head" },
        el("span", { class: "type-label", text: label }),
        prio ? el("span", { class: "priority", "data-priority": prio, text: prio }) : null,
        el("span", { class: "new-tag", text: "new" }),
        el("time", { class: "inject-time", title: m.timestamp || "", text: fmtT(m.exerciseTime) })),
      el("div", { class: "inject-body" }, (RENDER[type] || RENDER.other)(c, media, m)),
      m.action ? el("div", { class: "action-box" }, el("span", { class: "action-label", text: "Action" }),
        el("span", { class: "action", text: m.action })) : null,
      responseBox(m));
  }

  // ---- two-way play: answers and posts ------------------------------------
  // Who answers and posts, as the team wants to be named; kept in this browser.
  const byName = () => ($("by-name").value || "").trim() || undefined;
  const PROMPTS = { acknowledge: "Acknowledge receipt", choice: "Your decision", text: "Your answer" };

  // An inject that asks for a response gets a form: the options of a choice, a text
  // box, or an acknowledge button. Once answered it says so; answering again
  // changes the answer (the first one still counts for the exercise control).
  function responseBox(m) {
    const r = m.response;
    if (!r || typeof r !== "object" || !PROMPTS[r.kind]) return null;
    const id = String(m.id);
    const promptId = `prompt-${id}`;
    const form = el("form", { class: "response-box", "data-kind": r.kind, "aria-labelledby": promptId });
    form.append(el("div", { class: "response-prompt", id: promptId, text: r.prompt || PROMPTS[r.kind] }));
    if (r.kind === "choice") {
      const options = Array.isArray(r.options) ? r.options.map(String) : [];
      form.append(el("div", { class: "options", role: "radiogroup", "aria-labelledby": promptId },
        options.map((o) => el("label", { class: "option" },
          el("input", { type: "radio", name: `choice-${id}`, value: o, required: "" }), " ", o))));
    }
    if (r.kind === "text") {
      form.append(el("textarea", { name: "text", rows: "3", maxlength: "4000", required: "", "aria-labelledby": promptId }));
    }
    const status = el("div", { class: "response-status", role: "status" });
    const button = el("button", { type: "submit", class: "primary",
      text: r.kind === "acknowledge" ? "Acknowledge" : "Send" });
    form.append(el("div", { class: "response-actions" }, button, status));
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const data = new FormData(form);
      const body = { inject_id: id, by: byName() };
      if (r.kind === "choice") body.choice = data.get(`choice-${id}`) || undefined;
      if (r.kind === "text") body.text = String(data.get("text") || "");
      button.disabled = true;
      status.textContent = "Sending…";
      try {
        const done = await api("POST", `${teamBase}/responses${withToken}`, body);
        showAnswer(id, { at: done.exercise_time, choice: done.choice, edit: done.edit });
      } catch (err) {
        status.textContent = `Not sent: ${err.message}`;
        status.dataset.error = "true";
      } finally {
        button.disabled = false;
      }
    });
    const answered = answers.get(id);
    if (answered) markAnswered(form, answered);
    return form;
  }

  function markAnswered(form, a) {
    const status = form.querySelector(".response-status");
    delete status.dataset.error;
    status.textContent = `Answered at ${fmtT(a.at)}${a.choice ? `: ${a.choice}` : ""}${a.by ? ` (${a.by})` : ""}`;
    form.dataset.answered = "true";
    const button = form.querySelector("button[type=submit]");
    if (button && form.dataset.kind !== "acknowledge") button.textContent = "Change answer";
  }

  function showAnswer(id, a) {
    // The first answer is the one that counts; a later one is shown as the latest.
    if (!answers.has(id) || a.edit) answers.set(id, a);
    const node = shown.get(id);
    const form = node && node.querySelector(".response-box");
    if (form) markAnswered(form, answers.get(id));
  }

  // An answer from any of this team's screens (the stream tells every one of them).
  function onResponse(r) {
    if (r && r.inject_id) showAnswer(String(r.inject_id), { at: r.exerciseTime, choice: r.choice, by: r.by, edit: r.edit });
  }

  // The public channels this team sees: a post reaches every team that sees it.
  function showComposer(channels) {
    const box = $("compose");
    box.hidden = !channels.length;
    $("compose-channel").replaceChildren(...channels.map((c) =>
      el("option", { value: c.id, text: c.name || c.id })));
  }

  $("compose").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const status = $("compose-status");
    const text = $("compose-text").value.trim();
    if (!text) { status.textContent = "Write something to post."; return; }
    status.textContent = "Posting…";
    try {
      await api("POST", `${teamBase}/posts${withToken}`, { channel: $("compose-channel").value, text, by: byName() });
      $("compose-text").value = "";
      status.textContent = "Posted.";
    } catch (err) {
      status.textContent = `Not posted: ${err.message}`;
    }
  });

  $("by-name").value = localStorage.getItem("scip-by") || "";
  $("by-name").addEventListener("change", () => localStorage.setItem("scip-by", $("by-name").value.trim()));

  // Highlights a node while its id is fresh; the glow animation continues where it was
  // when the node is re-rendered (retry or reconnect).
  function applyHighlight(node, id) {
    const left = (newUntil.get(id) || 0) - Date.now();
    if (left <= 0) return;
    node.classList.add("is-new");
    node.style.animationDelay = `${left - HIGHLIGHT_MS}ms`;
    setTimeout(() => {
      const cur = shown.get(id);
      if (cur && (newUntil.get(id) || 0) <= Date.now()) cur.classList.remove("is-new");
    }, left + 20);
  }

  function startRun(r) {
    run = r;
    shown = new Map();
    newUntil.clear();
    confirmed.clear();
    pending.clear();
    unseen.clear();
    answers.clear();
    feed.replaceChildren();
  }

  function onHistory(h) {
    // A history of the run already on screen comes after a reconnect: what it adds
    // arrived while the stream was down, and is new to this screen.
    const reconnect = h.run === run && historySeen;
    if (h.run !== run) startRun(h.run);
    historySeen = true;
    // Dedupe by id (a later copy replaces an earlier one but keeps its place).
    const byId = new Map();
    for (const item of h.injects || []) if (item && item.message) byId.set(item.message.id, item);
    const items = [...byId.values()];
    const frag = document.createDocumentFragment();
    const next = new Map();
    for (const item of items) if (item.answered) answers.set(String(item.message.id), item.answered);
    for (const item of items.slice().reverse()) {
      if (reconnect && !shown.has(item.message.id)) {
        newUntil.set(item.message.id, Date.now() + HIGHLIGHT_MS);
        unread += 1;
        unseen.add(item.message.id);
      }
      const node = renderItem(item);
      applyHighlight(node, item.message.id);
      next.set(item.message.id, node);
      frag.append(node);
    }
    shown = next;
    feed.replaceChildren(frag);
    updateTitle();
    applyChannel();
    queueReceipts(items);
  }

  function onInject(item) {
    if (!item || !item.message) return;
    if (run !== null && item.run !== run) {
      if (item.run < run) return; // a late event of an old run
      startRun(item.run);
    }
    run = item.run;
    const id = item.message.id;
    const node = renderItem(item);
    const old = shown.get(id);
    if (old) {
      old.replaceWith(node); // a retry of an inject already on screen: update in place, no new alert
    } else {
      newUntil.set(id, Date.now() + HIGHLIGHT_MS);
      feed.prepend(node);
      unread += 1;
      unseen.add(id);
      updateTitle();
    }
    applyHighlight(node, id);
    shown.set(id, node);
    applyChannel();
    queueReceipts([item]);
  }

  // Unread count in the title until someone interacts with the page.
  for (const ev of ["pointerdown", "keydown", "wheel", "touchstart"]) {
    addEventListener(ev, () => { if (unread) { unread = 0; updateTitle(); } }, { passive: true });
  }

  // ---- receipts ---------------------------------------------------------
  let inFlight = false;
  let retryTimer = null;

  function queueReceipts(items) {
    for (const it of items) {
      const id = it.message.id;
      if (it.received) confirmed.add(id);
      else if (!confirmed.has(id)) pending.add(id);
    }
    afterPaint();
  }

  // rAF runs just before the next paint; the timeout after it runs once the frame is
  // painted, so a receipt means the inject really was on screen. An inject of a
  // channel whose tab is not selected is not on screen: its receipt waits until it is
  // (a hidden page does not paint either, so its receipts wait for it to be shown).
  function afterPaint() {
    if (pending.size) requestAnimationFrame(() => setTimeout(flushReceipts, 0));
  }

  const onScreen = (id) => { const node = shown.get(id); return !!node && !node.hidden; };

  async function flushReceipts() {
    if (inFlight || refused || !pending.size) return;
    const ids = [...pending].filter(onScreen).slice(0, 100); // the server takes receipts of up to 1 MiB
    if (!ids.length) return;
    clearTimeout(retryTimer);
    retryTimer = null;
    const forRun = run;
    inFlight = true;
    try {
      await api("POST", `${teamBase}/receipts${withToken}`, { run: forRun, inject_ids: ids });
      if (forRun === run) for (const id of ids) { pending.delete(id); confirmed.add(id); }
    } catch (err) {
      // Refused: the link is no longer valid, and the stream's answer says why.
      if (err.status === 401 || err.status === 403) checkLink();
      else console.warn("receipts failed, will retry", err.message);
      retryTimer = setTimeout(flushReceipts, 2000);
    } finally {
      inFlight = false;
    }
    if (pending.size && !retryTimer) flushReceipts(); // more arrived while this one was in flight
  }

  // ---- start ------------------------------------------------------------
  if (!exId || !teamId) {
    fatal("This address does not name an exercise and a team (/exercises/{id}/teams/{team}).");
    return;
  }
  updateTitle();
  buildTabs();
  applyChannel();
  $("exercise-name").textContent = exId;
  $("team-name").textContent = teamId;
  let opened = false;
  es = SCIP.stream(streamUrl,
    { clock: onClock, names: onNames, history: onHistory, inject: onInject, response: onResponse },
    (status) => {
      if (status === "live") opened = true;
      SCIP.setConnection($("connection"), status);
      if (status === "reconnecting" && !opened) $("banner-title").textContent = "Connecting…";
    },
    (closed) => { if (closed) checkLink(); }); // answered with an error: gone for good, or a bad link?
})();
