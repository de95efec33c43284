//! Who may call what: every route of the OpenAPI document, for every kind of
//! caller, gets the answer `auth::required` says (the README's matrix).

use reqwest::StatusCode;
use serde_json::json;

use scip_orchestrator::auth::{self, Access, Role};

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
    let status = app
        .anonymous
        .get(app.url(&format!(
            "/api/v1/scenarios?access_token={}",
            tokens[&Role::Controller]
        )))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, StatusCode::OK);
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
