//! Accessibility: axe-core (tests/browser/package.json, installed with
//! `npm ci --prefix tests/browser`) run in every page, which must have no
//! serious or critical violation; and what axe cannot judge (heading order,
//! live progress values, errors beside their fields) checked directly.

use std::path::PathBuf;

use serde_json::Value;

use crate::chrome::Browser;
use crate::support::*;
use crate::{FEED_IDS, SECS, every_kind};

/// axe-core's script, from `tests/browser/node_modules`.
pub struct Axe {
    source: String,
}

impl Axe {
    /// The script; None (with the reason printed) when it is not installed
    /// and CI is unset. With CI set, a missing axe-core fails the test.
    pub fn load() -> Option<Self> {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/browser/node_modules/axe-core/axe.min.js");
        match std::fs::read_to_string(&path) {
            Ok(source) => Some(Self { source }),
            Err(e) if std::env::var_os("CI").is_none() => {
                eprintln!(
                    "skipping the axe-core check: cannot read {} ({e}); install it with \
                     `npm ci --prefix tests/browser`",
                    path.display()
                );
                None
            }
            Err(e) => panic!(
                "axe-core is not installed ({}: {e}): run `npm ci --prefix tests/browser`",
                path.display()
            ),
        }
    }

    /// Runs axe in the page `browser` shows (closed `<details>` opened first,
    /// so the fields in them are checked too) and panics listing every
    /// serious or critical violation: rule, impact and the nodes.
    pub async fn check(&self, browser: &Browser, page: &str) {
        browser
            .eval("document.querySelectorAll('details').forEach(d => d.open = true); return true")
            .await;
        browser.eval(&self.source).await;
        let found = browser
            .client
            .execute_async(
                r#"const done = arguments[arguments.length - 1];
                axe.run(document, {resultTypes: ['violations']}).then(
                  (r) => done(r.violations
                    .filter((v) => v.impact === 'serious' || v.impact === 'critical')
                    .map((v) => `${v.id} (${v.impact}): ${v.help}\n` + v.nodes
                      .map((n) => `    ${n.target.join(' ')}: ${n.failureSummary.replace(/\n/g, ' ')}`)
                      .join('\n'))),
                  (e) => done([`axe failed: ${e}`]));"#,
                Vec::new(),
            )
            .await
            .unwrap_or_else(|e| panic!("{page}: axe did not run: {e}"));
        let violations: Vec<&str> = found
            .as_array()
            .unwrap_or_else(|| panic!("{page}: axe answered {found}"))
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(
            violations.is_empty(),
            "{page}: {} serious or critical accessibility violations:\n{}",
            violations.len(),
            violations.join("\n")
        );
    }
}

/// The headings of the page shown, in order, as `h<level> text`; and the
/// first that skips a level (an h1 followed by an h3), if any.
const HEADING_JUMP: &str = "(() => { const hs = [...document.querySelectorAll('h1, h2, h3, h4, h5, h6')] \
     .filter(h => h.getClientRects().length || h.classList.contains('sr-only')); \
     let last = 0; for (const h of hs) { const l = Number(h.tagName[1]); \
     if (l > last + 1) return `${h.tagName} \"${h.textContent.trim()}\" after h${last}`; last = l; } \
     return null; })()";

async fn assert_heading_order(browser: &Browser, page: &str) {
    let jump = browser.eval(&format!("return {HEADING_JUMP}")).await;
    assert_eq!(jump, Value::Null, "{page}: a heading skips a level");
}

/// Checks `page` with axe (when installed) and its heading order.
async fn audit(axe: Option<&Axe>, browser: &Browser, page: &str) {
    assert_heading_order(browser, page).await;
    if let Some(axe) = axe {
        axe.check(browser, page).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_passes_the_accessibility_check() {
    let axe = Axe::load();
    let app = spawn_app().await;
    let created = app
        .create("a11y", 4.0, every_kind(8, &[("blue", "Port Authority")]))
        .await;
    let dashboard = created["teams"][0]["dashboard_url"].as_str().unwrap();

    // The team dashboard with every kind of inject on it, at desktop and phone width.
    let team = Browser::on_live_dashboard(dashboard, SECS).await;
    audit(axe.as_ref(), &team, "the team dashboard before the start").await;
    app.command("a11y", "start").await;
    team.wait(
        "every inject shown",
        &format!("{FEED_IDS}.length === 6"),
        SECS,
    )
    .await;
    // The progress bar says where the exercise is, as it moves.
    let progress = team
        .wait(
            "the progress bar's value",
            "(p => Number(p.getAttribute('aria-valuenow')) > 0 && [p.getAttribute('role'), p.getAttribute('aria-valuetext')])(document.querySelector('#progress'))",
            SECS,
        )
        .await;
    assert_eq!(progress[0], "progressbar", "{progress}");
    assert!(
        progress[1].as_str().unwrap().starts_with("T+00:0"),
        "{progress}"
    );
    // The high-priority chip's text against its background: at least 4.5:1.
    let ratio = team.eval(CONTRAST_OF_HIGH).await.as_f64().expect("a ratio");
    assert!(ratio >= 4.5, "the HIGH chip's contrast is {ratio:.2}:1");
    audit(axe.as_ref(), &team, "the team dashboard with injects").await;
    team.client
        .set_window_size(390, 844)
        .await
        .expect("a phone-sized window");
    audit(axe.as_ref(), &team, "the team dashboard on a phone").await;
    team.assert_no_policy_violations("the team dashboard").await;
    team.quit().await;

    // The control room: its sign-in, the list of exercises, one exercise's room.
    let control = Browser::start().await;
    control.open(&app.url("/")).await;
    control
        .wait(
            "the sign-in form",
            "!document.querySelector('#login-form').hidden",
            SECS,
        )
        .await;
    audit(axe.as_ref(), &control, "the control room's sign-in").await;
    // (A new address: a changed fragment alone would not load the page again.)
    control.open("about:blank").await;
    control
        .open(&app.url(&format!("/#token={ADMIN_TOKEN}")))
        .await;
    control
        .wait(
            "the exercise in the list",
            "document.querySelector('[data-exercise-id=a11y] [role=progressbar]')",
            SECS,
        )
        .await;
    audit(axe.as_ref(), &control, "the list of exercises").await;
    control.open(&app.url("/exercises/a11y")).await;
    control
        .wait(
            "the room's deliveries",
            "document.querySelectorAll('#deliveries tr[data-inject]').length === 6",
            SECS,
        )
        .await;
    // The custom type field shown, as when "other…" is chosen.
    control
        .eval("const s = document.querySelector('#send-form [name=type]'); s.value = '__other'; s.dispatchEvent(new Event('change', {bubbles: true})); return true")
        .await;
    let labels = control
        .eval("return [...document.querySelectorAll('#room-view input:not([type=checkbox]), #room-view textarea, #room-view select')].filter(i => !i.labels.length && !i.getAttribute('aria-label') && !i.getAttribute('aria-labelledby')).map(i => i.name || i.id)")
        .await;
    assert_eq!(labels, serde_json::json!([]), "fields without a label");
    audit(axe.as_ref(), &control, "the control room").await;
    control
        .assert_no_policy_violations("the control room")
        .await;

    // The after-action report, as the control room saves it.
    let html = app
        .client
        .get(app.url("/api/v1/exercises/a11y/report.html"))
        .send()
        .await
        .expect("the report")
        .text()
        .await
        .expect("its text");
    let dir = tempfile::tempdir().expect("a folder");
    let file = dir.path().join("report.html");
    std::fs::write(&file, html).expect("write the report");
    control.open(&format!("file://{}", file.display())).await;
    control
        .wait(
            "the report",
            "document.querySelector('h1') && document.querySelector('h1').textContent.includes('After-action report')",
            SECS,
        )
        .await;
    audit(axe.as_ref(), &control, "the after-action report").await;
    control.quit().await;
}

/// The contrast ratio of the first HIGH priority chip's text.
const CONTRAST_OF_HIGH: &str = r#"
    const chip = document.querySelector('.priority[data-priority=high]');
    const s = getComputedStyle(chip);
    const rgb = (c) => c.match(/\d+(\.\d+)?/g).slice(0, 3).map(Number);
    const lum = (c) => { const [r, g, b] = rgb(c).map((v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
      return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
    const [a, b] = [lum(s.color), lum(s.backgroundColor)].sort((x, y) => y - x);
    return (a + 0.05) / (b + 0.05);"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn form_errors_show_beside_their_fields() {
    let app = spawn_app().await;
    app.create(
        "errors",
        1.0,
        every_kind(600, &[("blue", "Port Authority")]),
    )
    .await;
    let control = Browser::start().await;
    control
        .open(&app.url(&format!("/exercises/errors#token={ADMIN_TOKEN}")))
        .await;
    control
        .wait(
            "the send form's teams",
            "document.querySelector('#send-form input[name=team][value=blue]')",
            SECS,
        )
        .await;
    // No team, a blank id, "other…" without a type, a time that is none.
    control
        .eval("const f = document.querySelector('#send-form'); f.elements.id.value = '  '; f.elements.at.value = 'soon'; \
               f.elements.type.value = '__other'; f.elements.type.dispatchEvent(new Event('change', {bubbles: true})); return true")
        .await;
    control.click("#send-form [type=submit]").await;
    let errors = control
        .wait("the errors beside the fields", ERRORS_BESIDE_FIELDS, SECS)
        .await;
    assert_eq!(
        errors,
        serde_json::json!([
            ["team-picks", "choose at least one team"],
            ["id", "the inject needs an id"],
            ["type_other", "the inject needs a type"],
            ["at", "“soon” is not a time: use mm:ss or seconds"],
        ]),
        "each error under its field"
    );
    // Put right, the errors go and the inject is sent.
    control
        .eval("const f = document.querySelector('#send-form'); f.elements.at.value = ''; f.elements.type_other.value = 'radio'; \
               f.querySelector('input[name=team][value=blue]').click(); return true")
        .await;
    control
        .type_into("#send-form input[name=id]", "fixed-1")
        .await;
    control.click("#send-form [type=submit]").await;
    control
        .wait(
            "the inject sent",
            "document.querySelector('#deliveries tr[data-inject=\"fixed-1\"]')",
            SECS,
        )
        .await;
    let left = control
        .eval("return document.querySelectorAll('#send-form .field-error, #send-form [aria-invalid=true]').length")
        .await;
    assert_eq!(left, 0, "no error left once sent");
    // The server's refusal of an id a team has already: under the id.
    control
        .type_into("#send-form input[name=id]", "fixed-1")
        .await;
    control.click("#send-form [type=submit]").await;
    let refused = control
        .wait(
            "the refusal under the id",
            "(i => i.getAttribute('aria-invalid') === 'true' && document.getElementById(i.getAttribute('aria-describedby')).textContent)(document.querySelector('#send-form input[name=id]'))",
            SECS,
        )
        .await;
    assert!(
        refused.as_str().unwrap().contains("already has an inject"),
        "{refused}"
    );

    // The create form: nothing chosen, the error under the scenario folder.
    control.open(&app.url("/")).await;
    control
        .wait(
            "the create form",
            "document.querySelector('#create-form select[name=scenario] option[value=four-teams]')",
            SECS,
        )
        .await;
    control.click("#create-form [type=submit]").await;
    let error = control
        .wait(
            "the error under the scenario folder",
            "(s => s.getAttribute('aria-invalid') === 'true' && document.getElementById(s.getAttribute('aria-describedby')).textContent)(document.querySelector('#create-form [name=scenario]'))",
            SECS,
        )
        .await;
    assert_eq!(error, "Pick a scenario folder or load a package first.");
    control.quit().await;
}

/// Per invalid control of the send form, in page order: what it is and the
/// error it is described by, when that error is the next thing after the
/// field (or inside the fieldset); false until there are four.
const ERRORS_BESIDE_FIELDS: &str = "(() => { \
     const bad = [...document.querySelectorAll('#send-form [aria-invalid=true]')]; \
     if (bad.length < 4) return false; \
     return bad.map(n => { const box = document.getElementById(n.getAttribute('aria-describedby')); \
       const holder = n.closest('label') || n; \
       const beside = holder.tagName === 'FIELDSET' ? box.parentElement === holder : holder.nextElementSibling === box; \
       return [n.name || n.id, beside ? box.textContent : 'not beside its field']; }); })()";
