//! A normal session is quiet: no page asks a route it may not use (no 4xx,
//! no console error), and a dashboard whose link is refused sends no receipt.

use serde_json::Value;

use crate::SECS;
use crate::chrome::{Browser, Exchange};
use crate::support::*;

/// Three news items for team blue, a second apart.
fn three_injects() -> Value {
    package(
        600,
        &[("blue", &[("first", 0), ("second", 1), ("third", 2)])],
    )
}

/// Panics if `browser` had a request answered with an error, or logged a
/// console error, since the last look; returns its requests.
async fn assert_quiet(browser: &Browser, page: &str) -> Vec<Exchange> {
    let network = browser.network().await;
    let refused: Vec<&Exchange> = network
        .iter()
        .filter(|e| e.status.is_some_and(|s| s >= 400))
        .collect();
    assert!(refused.is_empty(), "{page}: refused requests {refused:#?}");
    let errors: Vec<(String, String)> = browser
        .console_entries()
        .await
        .into_iter()
        .filter(|(level, _)| level == "SEVERE")
        .collect();
    assert!(errors.is_empty(), "{page}: console errors {errors:#?}");
    network
}

/// The requests to the API among `network`.
fn api_requests(network: &[Exchange]) -> Vec<&Exchange> {
    network.iter().filter(|e| e.url.contains("/api/")).collect()
}

/// The receipts among `network`.
fn receipts(network: &[Exchange]) -> Vec<&Exchange> {
    network
        .iter()
        .filter(|e| e.method == "POST" && e.url.contains("/receipts"))
        .collect()
}

const LOGIN_SHOWN: &str = "!document.querySelector('#login-form').hidden";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_normal_session_asks_nothing_it_is_refused_and_logs_no_error() {
    let app = spawn_app().await;
    let created = app.create("calm", 2.0, three_injects()).await;
    let control = Browser::start().await;

    // Before sign-in, neither the list nor a room asks the API anything.
    for page in ["/", "/exercises/calm"] {
        control.open(&app.url(page)).await;
        control.wait("the sign-in form", LOGIN_SHOWN, SECS).await;
        let network = assert_quiet(&control, page).await;
        let asked = api_requests(&network);
        assert!(asked.is_empty(), "{page} before sign-in: {asked:#?}");
    }

    // Signed in, the room follows the exercise.
    control
        .type_into("#login-form input[name=token]", ADMIN_TOKEN)
        .await;
    control.click("#login-form [type=submit]").await;
    control
        .wait(
            "the room's deliveries",
            "document.querySelectorAll('#deliveries tr[data-inject]').length === 3",
            SECS,
        )
        .await;

    // The team follows its dashboard; the exercise runs to the last inject.
    let team = Browser::start().await;
    team.open(created["teams"][0]["dashboard_url"].as_str().unwrap())
        .await;
    team.wait(
        "the team's name from the stream",
        "document.querySelector('#team-name').textContent === 'Team blue'",
        SECS,
    )
    .await;
    control
        .wait(
            "start enabled",
            "!document.querySelector('button[data-command=start]').disabled",
            SECS,
        )
        .await;
    control.click("button[data-command=start]").await;
    control
        .wait(
            "every inject received",
            "document.querySelectorAll('#deliveries tr[data-received=true]').length === 3",
            SECS,
        )
        .await;

    let room = assert_quiet(&control, "the control room after sign-in").await;
    let dashboard = assert_quiet(&team, "the team dashboard").await;
    // The log does see the streams and the receipts, with their statuses.
    assert!(
        room.iter()
            .any(|e| e.url.contains("/api/v1/exercises/calm/events") && e.status == Some(200)),
        "{room:#?}"
    );
    assert!(
        dashboard
            .iter()
            .any(|e| e.url.contains("/teams/blue/events") && e.status == Some(200)),
        "{dashboard:#?}"
    );
    assert!(
        receipts(&dashboard).iter().all(|e| e.status == Some(200))
            && !receipts(&dashboard).is_empty(),
        "{dashboard:#?}"
    );
    control.quit().await;
    team.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dashboard_whose_link_is_refused_sends_no_receipt() {
    let app = spawn_app().await;
    let created = app.create("shut", 4.0, three_injects()).await;
    let url = created["teams"][0]["dashboard_url"]
        .as_str()
        .unwrap()
        .to_owned();
    let team = Browser::start().await;
    const REFUSED: &str = "!document.querySelector('#fatal').hidden";

    // A forged link: refused, and said so.
    let (page, token) = url.split_once("?token=").unwrap();
    let last = if token.ends_with('x') { 'y' } else { 'x' };
    team.open(&format!("{page}?token={}{last}", &token[..token.len() - 1]))
        .await;
    team.wait("the forged link refused", REFUSED, SECS).await;
    let network = team.network().await;
    assert!(receipts(&network).is_empty(), "forged: {network:#?}");

    // The real link: the team sees every inject and confirms each.
    team.open(&url).await;
    app.command("shut", "start").await;
    app.wait_for("/api/v1/exercises/shut/deliveries", SECS, |list| {
        list.as_array()
            .unwrap()
            .iter()
            .all(|d| d["received_at"].is_string())
    })
    .await;
    let network = team.network().await;
    assert!(!receipts(&network).is_empty(), "{network:#?}");

    // Revoked while open: the stream ends, its reconnect is refused, and the
    // page says so without a receipt.
    let revoked = authorized(ADMIN_TOKEN)
        .delete(app.url("/api/v1/exercises/shut/teams/blue/link"))
        .send()
        .await
        .expect("DELETE the link");
    assert_eq!(revoked.status(), reqwest::StatusCode::NO_CONTENT);
    team.wait("the revoked link refused", REFUSED, SECS).await;
    let network = team.network().await;
    assert!(receipts(&network).is_empty(), "revoked: {network:#?}");

    // Opened again, the revoked link is refused at once, without a receipt.
    team.open(&url).await;
    team.wait("the revoked link refused on load", REFUSED, SECS)
        .await;
    let network = team.network().await;
    assert!(receipts(&network).is_empty(), "reopened: {network:#?}");
    assert!(
        network
            .iter()
            .any(|e| e.url.contains("/teams/blue/events") && e.status == Some(403)),
        "the stream itself was refused: {network:#?}"
    );
    team.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_stops_the_room_and_is_forgotten() {
    let app = spawn_app().await;
    app.create("gone", 1.0, three_injects()).await;
    let (status, issued) = app
        .post(
            "/api/v1/tokens",
            Some(serde_json::json!({"role": "observer", "name": "room"})),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::CREATED, "{issued}");
    let token = issued["token"].as_str().unwrap();
    let control = Browser::start().await;
    control
        .open(&app.url(&format!("/exercises/gone#token={token}")))
        .await;
    control
        .wait(
            "the room live",
            "document.querySelector('#connection').dataset.status === 'live' && document.querySelector('#state').textContent === 'initialized'",
            SECS,
        )
        .await;
    assert_quiet(&control, "the room signed in").await;

    let revoked = app
        .client
        .delete(app.url(&format!(
            "/api/v1/tokens/{}",
            issued["id"].as_str().unwrap()
        )))
        .send()
        .await
        .expect("DELETE the token");
    assert_eq!(revoked.status(), reqwest::StatusCode::NO_CONTENT);
    // The stream is refused: the room asks for a token, closes the stream
    // for good and forgets the refused token.
    control
        .wait(
            "the sign-in form, the stream closed and the token forgotten",
            &format!(
                "{LOGIN_SHOWN} && document.querySelector('#connection').dataset.status === 'error' \
                 && !localStorage.getItem('scip.apiToken')"
            ),
            SECS,
        )
        .await;
    control.network().await;
    control.console_entries().await;

    // Reloaded, it asks nothing until someone signs in again.
    control.client.refresh().await.expect("reload");
    control.wait("the sign-in form", LOGIN_SHOWN, SECS).await;
    let network = assert_quiet(&control, "the room reloaded").await;
    let asked = api_requests(&network);
    assert!(asked.is_empty(), "after the revocation: {asked:#?}");
    control.quit().await;
}
