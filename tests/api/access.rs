//! Who may call what: every route of the OpenAPI document, for every kind of
//! caller, gets the answer `auth::required` says (the README's matrix).

use reqwest::StatusCode;
use serde_json::json;

use scip_orchestrator::access::tokens::Role;
use scip_orchestrator::http::auth::{self as auth, Access};

use crate::support::*;

/// What a caller presents.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Caller {
    Nobody,
    Forged,
    Token(Role),
    /// Blue's signed dashboard link (and no bearer token).
    BlueLink,
    /// Red's link, used on blue's routes.
    RedLink,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_every_caller_as_the_matrix_says() {
    let app = spawn_app().await;
    app.create(
        "acc",
        1.0,
        package(60, &[("blue", &[("a", 30)]), ("red", &[("r", 30)])]),
    )
    .await;
    let mut tokens = std::collections::HashMap::new();
    for role in Role::ALL {
        let (status, issued) = app
            .post(
                "/api/v1/tokens",
                Some(json!({"role": role.as_str(), "name": format!("{role} test")})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{issued}");
        assert_eq!(issued["role"], role.as_str());
        tokens.insert(role, issued["token"].as_str().unwrap().to_owned());
    }
    let mut links = Vec::new();
    for team in ["blue", "red"] {
        let path = team_path(&app, "acc", team, "events").await;
        links.push(path.split_once("token=").unwrap().1.to_owned());
    }
    let (blue_link, red_link) = (links[0].clone(), links[1].clone());

    let (_, doc) = app.get("/api/openapi.json").await;
    let mut routes: Vec<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, ops)| {
            ops.as_object()
                .unwrap()
                .keys()
                .map(move |m| (m.to_uppercase(), path.clone()))
        })
        .collect();
    // Deleting and re-issuing links go last, so the exercise and the links
    // are there for the rest.
    routes.sort_by_key(|(m, p)| (m == "DELETE" || p.ends_with("/link"), p.clone()));
    let callers = [
        Caller::Nobody,
        Caller::Forged,
        Caller::Token(Role::Observer),
        Caller::Token(Role::Controller),
        Caller::Token(Role::Admin),
        Caller::BlueLink,
        Caller::RedLink,
    ];
    let mut checked = 0;
    for (method, route) in &routes {
        let access = auth::required(&method.parse().unwrap(), route);
        let path = route
            .replace("{id}", "acc")
            .replace("{team}", "blue")
            .replace("{inject}", "a")
            .replace("{command}", "pause")
            .replace("{name}", "four-teams")
            .replace("{token}", "tok-none");
        for caller in callers {
            let (bearer, query) = match caller {
                Caller::Nobody => (None, String::new()),
                Caller::Forged => (Some("scip_forged".to_owned()), String::new()),
                Caller::Token(role) => (Some(tokens[&role].clone()), String::new()),
                Caller::BlueLink => (None, format!("?token={blue_link}")),
                Caller::RedLink => (None, format!("?token={red_link}")),
            };
            let mut request = app
                .anonymous
                .request(method.parse().unwrap(), app.url(&format!("{path}{query}")));
            if let Some(token) = &bearer {
                request = request.bearer_auth(token);
            }
            if method != "GET" {
                // A well-formed receipt, so the link is what decides.
                let body = if path.ends_with("/receipts") {
                    r#"{"run": 1, "inject_ids": []}"#
                } else {
                    "{}"
                };
                request = request
                    .header("content-type", "application/json")
                    .body(body);
            }
            let status = request.send().await.unwrap().status();
            let expected = match (access, caller) {
                (Access::Open, _) => None,
                (Access::TeamLink, Caller::BlueLink) => None,
                (Access::TeamLink, Caller::RedLink) => Some(StatusCode::FORBIDDEN),
                (Access::TeamLink, _) => Some(StatusCode::UNAUTHORIZED),
                (Access::Role(_), Caller::Nobody | Caller::Forged) => {
                    Some(StatusCode::UNAUTHORIZED)
                }
                (Access::Role(_), Caller::BlueLink | Caller::RedLink) => {
                    Some(StatusCode::UNAUTHORIZED)
                }
                (Access::Role(need), Caller::Token(have)) if have < need => {
                    Some(StatusCode::FORBIDDEN)
                }
                (Access::Role(_), Caller::Token(_)) => None,
                (Access::Media, _) => unreachable!("media routes are not in the API document"),
            };
            match expected {
                Some(want) => assert_eq!(status, want, "{method} {path} as {caller:?}"),
                None => assert!(
                    status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
                    "{method} {path} as {caller:?}: {status}"
                ),
            }
            checked += 1;
        }
    }
    assert_eq!(checked, routes.len() * callers.len());
    assert!(routes.len() >= 33, "{} routes", routes.len());

    // A revoked token opens nothing; a configured one cannot be revoked here.
    let (_, list) = app.get("/api/v1/tokens").await;
    let observer = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["role"] == "observer")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .all(|t| t.get("token").is_none())
    );
    // The control room's stream opened with it ends at the revocation.
    app.create("acc-rev", 1.0, package(60, &[("blue", &[("a", 30)])]))
        .await;
    let mut stream = EventStream::from_response(
        app.anonymous
            .get(app.url(&format!(
                "/api/v1/exercises/acc-rev/events?access_token={}",
                tokens[&Role::Observer]
            )))
            .send()
            .await
            .unwrap(),
    );
    stream.next(std::time::Duration::from_secs(15)).await;
    let response = app
        .client
        .delete(app.url(&format!("/api/v1/tokens/{observer}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    stream.ends(std::time::Duration::from_secs(15)).await;
    let status = app
        .anonymous
        .get(app.url("/api/v1/exercises"))
        .bearer_auth(&tokens[&Role::Observer])
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let response = app
        .client
        .delete(app.url("/api/v1/tokens/config-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CONFLICT);
    // The control room's stream takes the token as ?access_token= too.
    let status = app
        .anonymous
        .get(app.url(&format!(
            "/api/v1/exercises/acc/events?access_token={}",
            tokens[&Role::Observer]
        )))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, StatusCode::UNAUTHORIZED, "revoked above");
    // Elsewhere a token in the address is refused, saying what to send.
    let response = app
        .anonymous
        .get(app.url(&format!(
            "/api/v1/scenarios?access_token={}",
            tokens[&Role::Controller]
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "token_in_query", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_in_a_report_address_is_refused_saying_to_send_it_as_a_header() {
    let app = spawn_app().await;
    app.create("aar-q", 1.0, package(60, &[("blue", &[("a", 30)])]))
        .await;
    for route in [
        "report",
        "report.csv",
        "report/control-log.csv",
        "report.html",
    ] {
        let path = format!("/api/v1/exercises/aar-q/{route}");
        // As a header, the report.
        let response = app
            .anonymous
            .get(app.url(&path))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        // In the address, with a header or without one: refused, with what
        // to do instead, before the token is even looked at.
        for (token, header) in [(ADMIN_TOKEN, false), (ADMIN_TOKEN, true), ("forged", false)] {
            let mut request = app
                .anonymous
                .get(app.url(&format!("{path}?run=1&access_token={token}")));
            if header {
                request = request.bearer_auth(ADMIN_TOKEN);
            }
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{path} {token}");
            let body: serde_json::Value = response.json().await.unwrap();
            assert_eq!(body["error"]["code"], "token_in_query", "{path}: {body}");
            let message = body["error"]["message"].as_str().unwrap();
            assert!(
                message.contains("?access_token=")
                    && message.contains("Authorization: Bearer <token>"),
                "{path}: {message}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_controllers_get_the_teams_signed_links() {
    let app = spawn_app().await;
    app.create("links", 1.0, package(60, &[("blue", &[("a", 30)])]))
        .await;
    let mut clients = Vec::new();
    for role in Role::ALL {
        let (status, issued) = app
            .post(
                "/api/v1/tokens",
                Some(json!({"role": role.as_str(), "name": "links"})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{issued}");
        let token = issued["token"].as_str().unwrap().to_owned();
        clients.push((role, token));
    }
    for (role, token) in &clients {
        let client = authorized(token);
        let get = |path: &'static str| {
            let request = client.get(app.url(path));
            async move {
                let response = request.send().await.unwrap();
                assert_eq!(response.status(), StatusCode::OK, "{path}");
                response.json::<serde_json::Value>().await.unwrap()
            }
        };
        let one = get("/api/v1/exercises/links").await;
        let all = get("/api/v1/exercises").await;
        let mut stream = EventStream::from_response(
            app.anonymous
                .get(app.url(&format!(
                    "/api/v1/exercises/links/events?access_token={token}"
                )))
                .send()
                .await
                .unwrap(),
        );
        let streamed = stream
            .until(std::time::Duration::from_secs(15), "exercise", |_| true)
            .await
            .pop()
            .unwrap()
            .data;
        for (what, exercise) in [
            ("GET one", &one),
            ("GET all", &all[0]),
            ("stream", &streamed),
        ] {
            let url = &exercise["teams"][0]["dashboard_url"];
            if *role >= Role::Controller {
                assert!(
                    url.as_str().is_some_and(|u| u.contains("?token=")),
                    "{role} {what}: {exercise}"
                );
            } else {
                assert!(url.is_null(), "{role} {what}: {exercise}");
                assert!(!exercise.to_string().contains("token="), "{role} {what}");
            }
        }
    }
}

/// A package `kit` for the media tests: blue is sent an inject at T+0 naming
/// a picture, an HTML and an SVG file, a link out of the package and the
/// scenario's own files, and another at T+30 naming a picture of its own;
/// red is sent one at T+0 naming a picture only red may see.
fn write_media_package(media: &std::path::Path) {
    let write = |path: &str, bytes: &[u8]| {
        let file = media.join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, bytes).unwrap();
    };
    write(
        "kit/scenario.json",
        json!({"id": "closed", "duration_minutes": 1, "teams": [
            {"id": "blue", "timeline_id": "blue"}, {"id": "red", "timeline_id": "red"}]})
        .to_string()
        .as_bytes(),
    );
    write(
        "kit/timelines/blue.json",
        json!({"id": "blue", "injects": [
            {"id": "b-1", "time": 0, "type": "news", "content": {"headline": "Now", "image": "/media/kit/map.png"},
             "media": ["secret.html", "vector.svg", "out.png", "scenario.json",
                       "timelines/red.json", "../other/photo.png", "https://example.org/x.png"]},
            {"id": "b-2", "time": 30, "type": "news", "content": {"headline": "Later"}, "media": ["future.png"]}]})
        .to_string()
        .as_bytes(),
    );
    write(
        "kit/timelines/red.json",
        json!({"id": "red", "injects": [
            {"id": "r-1", "time": 0, "type": "news", "content": {"headline": "Red"}, "media": ["red-only.png"]}]})
        .to_string()
        .as_bytes(),
    );
    write("kit/map.png", b"\x89PNG map of the harbour");
    write("kit/tool.js", b"alert(document.cookie)");
    write("kit/media/future.png", b"\x89PNG what comes at T+30");
    write("kit/red-only.png", b"\x89PNG for red");
    write(
        "kit/secret.html",
        b"<script>fetch('/api/v1/tokens',{headers:{Authorization:'Bearer '+localStorage['scip.apiToken']}})</script>",
    );
    write(
        "kit/vector.svg",
        b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>",
    );
    write("other/photo.png", b"\x89PNG another package");
    write("other/scenario.json", b"{}");
    write("outside.png", b"\x89PNG outside every package");
    #[cfg(unix)]
    std::os::unix::fs::symlink(media.join("outside.png"), media.join("kit/out.png")).unwrap();
}

/// The `media_urls` of every item of `history` and `inject` events, by
/// reference as written.
fn media_urls(events: &[Sse]) -> std::collections::HashMap<String, String> {
    let mut urls = std::collections::HashMap::new();
    for e in events {
        let items = match e.event.as_str() {
            "history" => e.data["injects"].as_array().unwrap().clone(),
            "inject" => vec![e.data.clone()],
            _ => continue,
        };
        for item in items {
            for (written, url) in item["media_urls"].as_object().unwrap() {
                urls.insert(written.clone(), url.as_str().unwrap().to_owned());
            }
        }
    }
    urls
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_open_to_their_team_once_sent_and_to_api_tokens_only() {
    use std::time::Duration;
    const SECS: Duration = Duration::from_secs(15);
    let app = spawn_app().await;
    write_media_package(&app.media);
    for id in ["closed", "closed-2"] {
        let (status, body) = app
            .post(
                "/api/v1/exercises",
                Some(json!({"scenario": "kit", "exercise_id": id})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        app.command(id, "start").await;
        app.wait_delivery(id, "blue", "b-1", "delivered").await;
        app.wait_delivery(id, "red", "r-1", "delivered").await;
    }
    let (_, observer) = app
        .post(
            "/api/v1/tokens",
            Some(json!({"role": "observer", "name": "media"})),
        )
        .await;
    let observer = observer["token"].as_str().unwrap().to_owned();
    let history = |id: &'static str, team: &'static str| {
        let app = &app;
        async move {
            let mut stream =
                EventStream::open(app, &team_path(app, id, team, "events").await).await;
            let events = stream.until(SECS, "history", |_| true).await;
            (stream, media_urls(&events))
        }
    };
    let (mut blue_stream, blue) = history("closed", "blue").await;
    let (_, red) = history("closed", "red").await;
    let (_, blue_elsewhere) = history("closed-2", "blue").await;

    // What blue was sent names these files; only media get a URL.
    let mut named: Vec<&str> = blue.keys().map(String::as_str).collect();
    named.sort();
    assert_eq!(
        named,
        ["/media/kit/map.png", "out.png", "secret.html", "vector.svg"],
        "{blue:?}"
    );
    assert!(blue["/media/kit/map.png"].starts_with("/exercises/closed/media/kit/map.png?media="));

    let get = |path: String, bearer: Option<String>, range: bool| {
        let app = &app;
        async move {
            let mut request = app.anonymous.get(app.url(&path));
            if let Some(token) = bearer {
                request = request.bearer_auth(token);
            }
            if range {
                request = request.header("range", "bytes=0-3");
            }
            let response = request.send().await.unwrap();
            let status = response.status();
            let headers = response.headers().clone();
            let body = response.bytes().await.unwrap();
            (status, headers, body)
        }
    };
    let status = |path: String, bearer: Option<String>| {
        let get = &get;
        async move { get(path, bearer, false).await.0 }
    };
    let file = |path: &str| format!("/exercises/closed/media/{path}");
    let blue_link = team_path(&app, "closed", "blue", "events").await;
    let blue_link = blue_link.split_once("token=").unwrap().1.to_owned();
    let paths = [
        "map.png",
        "kit/map.png",
        "scenario.json",
        "timelines/blue.json",
        "timelines/red.json",
        "future.png",
        "red-only.png",
        "secret.html",
        "vector.svg",
        "out.png",
        // Encoded: a client would resolve a plain `..` before sending it.
        "..%2Fother%2Fphoto.png",
        "other/photo.png",
        "..%2F..%2Fdata%2Fscip.db",
        "nope.png",
    ];

    // An outsider, a forged token, a team's link (which opens its stream,
    // not media): 401 for every file, whether it exists or not.
    for path in paths {
        assert_eq!(
            status(file(path), None).await,
            StatusCode::UNAUTHORIZED,
            "{path}"
        );
        assert_eq!(
            status(file(path), Some("scip_forged".into())).await,
            StatusCode::UNAUTHORIZED,
            "{path}"
        );
        assert_eq!(
            status(format!("{}?token={blue_link}", file(path)), None).await,
            StatusCode::UNAUTHORIZED,
            "{path}"
        );
    }
    // The old open media folder is gone, for everyone.
    for path in [
        "/media/kit/timelines/blue.json",
        "/media/kit/scenario.json",
        "/media/kit/map.png",
    ] {
        assert_eq!(
            status(path.into(), None).await,
            StatusCode::NOT_FOUND,
            "{path}"
        );
        assert_eq!(
            status(path.into(), Some(observer.clone())).await,
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }

    // An API token (observer is the lowest role): every media file of the
    // exercise's own package, never its scenario or timelines, nothing
    // outside it.
    for (path, want) in [
        ("map.png", StatusCode::OK),
        ("kit/map.png", StatusCode::OK),
        ("future.png", StatusCode::OK),
        ("red-only.png", StatusCode::OK),
        ("secret.html", StatusCode::OK),
        ("vector.svg", StatusCode::OK),
        ("scenario.json", StatusCode::NOT_FOUND),
        ("timelines/blue.json", StatusCode::NOT_FOUND),
        ("timelines/red.json", StatusCode::NOT_FOUND),
        ("out.png", StatusCode::NOT_FOUND),
        ("..%2Fother%2Fphoto.png", StatusCode::NOT_FOUND),
        ("other/photo.png", StatusCode::NOT_FOUND),
        ("..%2F..%2Fdata%2Fscip.db", StatusCode::NOT_FOUND),
        ("nope.png", StatusCode::NOT_FOUND),
    ] {
        assert_eq!(
            status(file(path), Some(observer.clone())).await,
            want,
            "{path}"
        );
    }
    let (code, headers, body) = get(file("map.png"), Some(observer.clone()), false).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(&body[..], b"\x89PNG map of the harbour");
    assert_eq!(headers["content-type"], "image/png");
    assert!(headers.get("content-disposition").is_none());
    // The control room's way: the token in the address.
    let (code, _, body) = get(
        format!("{}?access_token={observer}", file("map.png")),
        None,
        false,
    )
    .await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(&body[..], b"\x89PNG map of the harbour");
    // Range requests, for video seeking.
    let (code, headers, body) = get(file("map.png"), Some(observer.clone()), true).await;
    assert_eq!(code, StatusCode::PARTIAL_CONTENT);
    assert_eq!(&body[..], b"\x89PNG");
    assert_eq!(headers["content-range"], "bytes 0-3/23");
    // No exercise, no media.
    assert_eq!(
        status(
            "/exercises/nope/media/map.png".into(),
            Some(observer.clone())
        )
        .await,
        StatusCode::NOT_FOUND
    );

    // Blue's dashboard: the files named by what blue was sent, each with
    // its own URL; the scenario's files and the link out stay closed.
    let (code, headers, body) = get(blue["/media/kit/map.png"].clone(), None, false).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(&body[..], b"\x89PNG map of the harbour");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    let (code, _, body) = get(blue["/media/kit/map.png"].clone(), None, true).await;
    assert_eq!(
        (code, &body[..]),
        (StatusCode::PARTIAL_CONTENT, &b"\x89PNG"[..])
    );
    assert_eq!(
        status(blue["secret.html"].clone(), None).await,
        StatusCode::OK
    );
    assert_eq!(
        status(blue["vector.svg"].clone(), None).await,
        StatusCode::OK
    );
    assert_eq!(
        status(blue["out.png"].clone(), None).await,
        StatusCode::NOT_FOUND
    );
    // A URL opens its own file only: not another path, not red's picture,
    // not blue's future one, not the scenario.
    let (_, token) = blue["/media/kit/map.png"].split_once("?media=").unwrap();
    for path in [
        "map.png",
        "red-only.png",
        "future.png",
        "scenario.json",
        "timelines/blue.json",
        "..%2Fother%2Fphoto.png",
        "out.png",
    ] {
        assert_eq!(
            status(format!("{}?media={token}", file(path)), None).await,
            StatusCode::FORBIDDEN,
            "{path}"
        );
    }
    // Red's URL opens red's picture, and nothing of blue's.
    assert_eq!(
        status(red["red-only.png"].clone(), None).await,
        StatusCode::OK
    );
    assert!(!red.contains_key("/media/kit/map.png"), "{red:?}");
    let (_, red_token) = red["red-only.png"].split_once("?media=").unwrap();
    assert_eq!(
        status(format!("{}?media={red_token}", file("kit/map.png")), None).await,
        StatusCode::FORBIDDEN
    );
    // Another exercise's URL for the same file of the same package: refused.
    let elsewhere =
        blue_elsewhere["/media/kit/map.png"].replace("/exercises/closed-2/", "/exercises/closed/");
    assert_eq!(status(elsewhere, None).await, StatusCode::FORBIDDEN);

    // Blue's inject at T+30 goes out: its picture opens then, and not before.
    let (_, future_token) = blue["/media/kit/map.png"].split_once('?').unwrap();
    assert_eq!(
        status(format!("{}?{future_token}", file("future.png")), None).await,
        StatusCode::FORBIDDEN
    );
    app.command("closed", "pause").await;
    let (code, body) = app
        .post(
            "/api/v1/exercises/closed/seek",
            Some(json!({"to": 30, "mode": "deliver"})),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    app.command("closed", "resume").await;
    let events = blue_stream
        .until(SECS, "inject", |i| i["message"]["id"] == "b-2")
        .await;
    let later = media_urls(&events);
    let (code, _, body) = get(later["future.png"].clone(), None, false).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(&body[..], b"\x89PNG what comes at T+30");

    // A new link for blue: the URLs handed out with the old one close.
    let (code, _) = app
        .post("/api/v1/exercises/closed/teams/blue/link", None)
        .await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(
        status(blue["/media/kit/map.png"].clone(), None).await,
        StatusCode::FORBIDDEN
    );
    // An exercise created from an inline package has no media at all.
    app.create("inline", 1.0, package(60, &[("blue", &[("a", 0)])]))
        .await;
    assert_eq!(
        status(
            "/exercises/inline/media/kit/map.png".into(),
            Some(observer.clone())
        )
        .await,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploaded_media_never_run_on_the_service_origin() {
    let app = spawn_app().await;
    write_media_package(&app.media);
    let (status, body) = app
        .post(
            "/api/v1/exercises",
            Some(json!({"scenario": "kit", "exercise_id": "closed"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let headers = |path: &'static str| {
        let app = &app;
        async move {
            let response = app
                .client
                .get(app.url(&format!("/exercises/closed/media/{path}")))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            response.headers().clone()
        }
    };
    for (path, kind, download) in [
        ("map.png", "image/png", false),
        // A download has no type a browser could act on as a page's
        // resource (a script served as JavaScript would pass the pages'
        // `script-src 'self'`); an SVG stays a picture for <img>.
        ("secret.html", "application/octet-stream", true),
        ("vector.svg", "image/svg+xml", true),
        ("tool.js", "application/octet-stream", true),
    ] {
        let h = headers(path).await;
        assert!(
            h["content-type"].to_str().unwrap().starts_with(kind),
            "{path}: {h:?}"
        );
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        let policy = h["content-security-policy"].to_str().unwrap();
        assert!(policy.contains("sandbox"), "{path}: {policy}");
        assert!(policy.contains("default-src 'none'"), "{path}: {policy}");
        assert_eq!(h["cross-origin-resource-policy"], "same-origin", "{path}");
        match h.get("content-disposition") {
            Some(d) if download => {
                assert_eq!(
                    d.to_str().unwrap(),
                    format!("attachment; filename=\"{path}\"")
                )
            }
            None if !download => {}
            other => panic!("{path}: content-disposition {other:?}"),
        }
    }
    // The pages: their own policy (their scripts only), never sniffed, and
    // a team page's address (which holds its link) is not sent on.
    for path in ["/", "/exercises/closed", "/exercises/closed/teams/blue"] {
        let response = app.anonymous.get(app.url(path)).send().await.unwrap();
        let h = response.headers();
        let policy = h["content-security-policy"].to_str().unwrap();
        for part in [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "connect-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(policy.contains(part), "{path}: {policy}");
        }
        assert!(!policy.contains("unsafe-inline"), "{path}: {policy}");
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h["referrer-policy"], "no-referrer", "{path}");
    }
    for asset in ["/assets/common.js", "/assets/app.css"] {
        let response = app.anonymous.get(app.url(asset)).send().await.unwrap();
        assert_eq!(
            response.headers()["x-content-type-options"],
            "nosniff",
            "{asset}"
        );
    }
}
