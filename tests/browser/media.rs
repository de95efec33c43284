//! The sample's media in a team dashboard: each picture and clip the
//! package holds loads, and one it lacks shows a card naming it, an
//! attachment it lacks a link that opens nothing.

use serde_json::json;

use scip_orchestrator::app::{SAMPLE_FILES, SAMPLE_MEDIA};

use crate::SECS;
use crate::chrome::Browser;
use crate::support::*;

/// Removed from the sample's copy: a picture and an attachment of the
/// orange team's feed.
const MISSING: [&str; 2] = [
    "media/vts-traffic-picture.png",
    "media/inbound-traffic-1000.pdf",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_team_page_shows_the_sample_media_and_a_card_for_each_missing_file() {
    let app = spawn_app().await;
    // The sample as the binary holds it, in place of the copy of
    // `examples/four-teams` the test app starts with.
    let package = app.media.join("four-teams");
    std::fs::remove_dir_all(&package).unwrap();
    let texts = SAMPLE_FILES.iter().map(|(p, t)| (*p, t.as_bytes()));
    for (path, bytes) in texts.chain(SAMPLE_MEDIA) {
        if MISSING.contains(&path) {
            continue;
        }
        let file = package.join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, bytes).unwrap();
    }
    let (status, created) = app
        .post(
            "/api/v1/exercises",
            Some(json!({"scenario": "four-teams", "exercise_id": "media", "speed": 100.0})),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::CREATED, "{created}");
    let url = created["teams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == "orange")
        .and_then(|t| t["dashboard_url"].as_str())
        .expect("the orange team's link")
        .to_owned();
    let browser = Browser::on_live_dashboard(&url, SECS).await;
    app.command("media", "start").await;
    browser
        .wait(
            "the orange feed",
            "document.querySelectorAll('#feed article.inject').length === 4",
            SECS,
        )
        .await;
    let q = |id: &str, css: &str| {
        format!("document.querySelector('article.inject[data-inject-id=\"{id}\"] {css}')")
    };
    // The site map the package holds loaded.
    let map = q("orange-001", "img[src*=\"berth7-site-map.png\"]");
    browser
        .wait(
            "the site map loaded",
            &format!("(() => {{ const i = {map}; return !!i && i.complete && i.naturalWidth > 0 && !i.hidden; }})()"),
            SECS,
        )
        .await;
    // The traffic picture it lacks: a card naming it, no broken picture.
    let card = browser
        .wait(
            "a card for the missing picture",
            &format!(
                "(() => {{ const c = {}; return !!c && c.textContent; }})()",
                q("orange-001", ".media-missing")
            ),
            SECS,
        )
        .await;
    assert_eq!(card, "Picture not available: vts-traffic-picture.png");
    let broken = browser
        .eval(&format!(
            "return {}.hidden",
            q("orange-001", "img[src*=\"vts-traffic-picture.png\"]")
        ))
        .await;
    assert_eq!(broken, true, "the failed picture is hidden");
    // The attachment it lacks: a link that opens nothing, saying so.
    let link = browser
        .wait(
            "a disabled link for the missing attachment",
            &format!(
                "(() => {{ const a = {}; return !!a && !a.hasAttribute('href') && a.getAttribute('aria-disabled') === 'true' && a.textContent; }})()",
                q("orange-002", ".attachments .media-missing-link")
            ),
            SECS,
        )
        .await;
    assert_eq!(link, "Attachment not available: inbound-traffic-1000.pdf");
    // The bodycam clip plays: its metadata loaded, frames of a size.
    let clip = q("orange-004", "video");
    browser
        .wait(
            "the clip loaded",
            &format!("(() => {{ const v = {clip}; return !!v && v.readyState >= 1 && v.videoWidth > 0 && !v.hidden; }})()"),
            SECS,
        )
        .await;
    let missing = browser
        .eval("return document.querySelectorAll('.media-missing, .media-missing-link').length")
        .await;
    assert_eq!(missing, 2, "only the two files removed are missing");
    browser.screenshot("team-dashboard-media").await;
    browser
        .assert_no_policy_violations("the team page with media")
        .await;
    browser.quit().await;
}
