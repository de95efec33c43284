//! Which team is behind, receipts of what nobody watched, and the report's
//! lateness chart after a seek: in the control room and the saved report.

use serde_json::Value;

use crate::SECS;
use crate::chrome::Browser;
use crate::support::*;

/// The text of the cell `field` in the team summary row of `team`.
fn cell(team: &str, field: &str) -> String {
    format!(
        "(document.querySelector('#team-summary tr[data-team={team}] [data-field={field}]') || {{}}).textContent"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_room_flags_the_team_whose_dashboard_is_not_open() {
    let app = spawn_app().await;
    app.create(
        "behind",
        1.0,
        package(
            60,
            &[
                ("blue", &[("a", 0), ("b", 1)]),
                ("red", &[("r", 0), ("s", 1)]),
            ],
        ),
    )
    .await;
    let (_, info) = app.get("/api/v1/exercises/behind").await;
    let url = |i: usize| {
        info["teams"][i]["dashboard_url"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    // Blue watches from the start; red's dashboard is not open.
    let blue = Browser::on_live_dashboard(&url(0), SECS).await;
    let control = Browser::start().await;
    control
        .open(&app.url(&format!("/exercises/behind#token={ADMIN_TOKEN}")))
        .await;
    control
        .wait(
            "one row per team",
            "document.querySelectorAll('#team-summary tbody tr[data-team]').length === 2",
            SECS,
        )
        .await;
    control
        .wait(
            "blue's dashboard is open",
            &format!("{} === 'open now'", cell("blue", "last_seen")),
            SECS,
        )
        .await;
    app.command("behind", "start").await;

    // Blue's dashboard shows both; red's two are delivered and unread.
    control
        .wait(
            "blue has seen both injects",
            &format!("{} === '2'", cell("blue", "shown")),
            SECS,
        )
        .await;
    control
        .wait(
            "red is flagged",
            "document.querySelector('#team-summary tr[data-team=red]').dataset.attention === 'true'",
            SECS,
        )
        .await;
    let row = |team: &str| {
        format!(
            "return [...document.querySelectorAll('#team-summary tr[data-team={team}] td')].map(td => td.textContent)"
        )
    };
    let blue_row = control.eval(&row("blue")).await;
    let red_row = control.eval(&row("red")).await;
    let texts = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_owned())
            .collect()
    };
    let (blue_row, red_row) = (texts(&blue_row), texts(&red_row));
    // Delivered, shown, unread, last seen, late, failed, not watched, latency, attention.
    assert_eq!(&blue_row[..3], ["2", "2", "0"], "{blue_row:?}");
    assert_eq!(blue_row[3], "open now");
    assert_eq!(blue_row[6], "0", "{blue_row:?}");
    assert!(blue_row[7].ends_with(" ms"), "{blue_row:?}");
    assert_eq!(blue_row[8], "OK");
    assert_eq!(&red_row[..3], ["2", "0", "2"], "{red_row:?}");
    assert_eq!(red_row[3], "never");
    assert_eq!(red_row[6], "2", "both went out unwatched: {red_row:?}");
    assert_eq!(red_row[7], "—");
    assert!(
        red_row[8].contains("2 unread, no dashboard open"),
        "{red_row:?}"
    );
    let first = control
        .eval("return document.querySelector('#team-summary tbody tr').dataset.team")
        .await;
    assert_eq!(first, "red", "the team needing attention comes first");
    let highlighted = control
        .eval(
            "return getComputedStyle(document.querySelector('#team-summary tr[data-team=red]')).backgroundColor",
        )
        .await;
    let plain = control
        .eval(
            "return getComputedStyle(document.querySelector('#team-summary tr[data-team=blue]')).backgroundColor",
        )
        .await;
    assert_ne!(highlighted, plain, "the flagged row stands out");
    control
        .wait(
            "the room says what was not watched",
            "document.querySelector('#not-watched').textContent.startsWith('2 injects went out with no dashboard')",
            SECS,
        )
        .await;

    // Red opens its dashboard late: shown, but not watched, so no latency.
    let red = Browser::on_live_dashboard(&url(1), SECS).await;
    control
        .wait(
            "red has seen both",
            &format!("{} === '2'", cell("red", "shown")),
            SECS,
        )
        .await;
    control
        .wait(
            "red is no longer flagged",
            "document.querySelector('#team-summary tr[data-team=red]').dataset.attention === 'false'",
            SECS,
        )
        .await;
    assert_eq!(
        control
            .eval(&format!("return {}", cell("red", "receipt_latency")))
            .await,
        "—"
    );
    assert_eq!(
        control
            .eval(&format!("return {}", cell("red", "not_watched")))
            .await,
        "2"
    );
    control
        .wait(
            "red's receipts are marked not watched in the delivery log",
            "[...document.querySelectorAll('#deliveries tr[data-inject]')].filter(tr => tr.textContent.includes('not watched')).length === 2",
            SECS,
        )
        .await;
    let (_, list) = app.get("/api/v1/exercises/behind/deliveries").await;
    assert!(find(&list, "red", "r")["receipt_latency_ms"].is_null());
    assert!(find(&list, "blue", "a")["receipt_latency_ms"].is_f64());
    for page in [&control, &blue, &red] {
        assert_eq!(page.console().await, Vec::<String>::new());
    }
    red.quit().await;
    blue.quit().await;
    control.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_plots_each_injects_lateness_and_marks_the_seek() {
    let app = spawn_app().await;
    // A 12-minute exercise; injects at T+1, 2 and 5 minutes.
    app.create(
        "seeky",
        1.0,
        package(720, &[("blue", &[("m1", 60), ("m2", 120), ("m5", 300)])]),
    )
    .await;
    app.command("seeky", "start").await;
    app.command("seeky", "pause").await;
    let (status, body) = app
        .post(
            "/api/v1/exercises/seeky/seek",
            Some(serde_json::json!({"to": 400, "mode": "deliver"})),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    for inject in ["m1", "m2", "m5"] {
        app.wait_delivery("seeky", "blue", inject, "delivered")
            .await;
    }
    let html = authorized(ADMIN_TOKEN)
        .get(app.url("/api/v1/exercises/seeky/report.html"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();

    let browser = Browser::start().await;
    let file = browser.downloads().with_file_name("seeky-report.html");
    std::fs::write(&file, html).unwrap();
    browser.open(&format!("file://{}", file.display())).await;
    browser
        .wait("the chart", "document.querySelector('figure svg')", SECS)
        .await;
    // The seek is a marker at T+6:40, in the chart and the control log.
    let marker = browser
        .eval(
            "const g = document.querySelector('svg g.control[data-command=seek]'); \
             return g && { at: g.dataset.at, x: Number(g.querySelector('line').getAttribute('x1')), \
                           label: g.querySelector('text').textContent, tip: g.querySelector('title').textContent }",
        )
        .await;
    assert_eq!(marker["at"], "400", "{marker}");
    assert_eq!(marker["label"], "seek");
    assert!(
        marker["tip"]
            .as_str()
            .unwrap()
            .contains("to T+06:40: 3 passed over, sent"),
        "{marker}"
    );
    for command in ["start", "pause"] {
        let found = browser
            .eval(&format!(
                "return !!document.querySelector('svg g.control[data-command={command}]')"
            ))
            .await;
        assert_eq!(found, true, "{command} is marked too");
    }
    let log = browser
        .eval("return [...document.querySelectorAll('table.control td')].map(td => td.textContent).join('|')")
        .await;
    assert!(log.as_str().unwrap().contains("|seek|"), "{log}");
    // Each inject is a point of its own lateness, at the second it was sent:
    // the three the seek sent stand on the seek's line, marked as such.
    let points = browser
        .eval(
            "return [...document.querySelectorAll('svg path.seek[data-inject]')].map(p => { \
               const b = p.getBBox(); \
               return { id: p.dataset.inject, ms: Number(p.dataset.latenessMs), \
                        x: b.x + b.width / 2, y: b.y + b.height / 2, \
                        tip: p.querySelector('title').textContent }; })",
        )
        .await;
    let points = points.as_array().unwrap();
    let mut ids: Vec<&str> = points.iter().map(|p| p["id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["m1", "m2", "m5"], "{points:?}");
    let x = marker["x"].as_f64().unwrap();
    for p in points {
        assert!(
            (p["x"].as_f64().unwrap() - x).abs() < 1.0,
            "{p} on the seek line at {x}"
        );
        let ms = p["ms"].as_f64().unwrap();
        assert!((0.0..5000.0).contains(&ms), "{p}");
        // Above the bottom of the plot, below its top: on the lateness scale.
        let y = p["y"].as_f64().unwrap();
        assert!((40.0..=296.0).contains(&y), "{p}");
        assert!(
            p["tip"]
                .as_str()
                .unwrap()
                .contains("(delivered by the seek)"),
            "{p}"
        );
    }
    let scale = browser
        .eval("return [...document.querySelectorAll('svg text.ytick')].map(t => t.textContent)")
        .await;
    let scale: Vec<&str> = scale
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(&scale[..3], ["0.1 ms", "1 ms", "10 ms"], "{scale:?}");
    browser.quit().await;
}
