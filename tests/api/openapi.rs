//! The OpenAPI document: every served endpoint and its schemas, the same
//! document the router serves.

use std::collections::BTreeSet;

use reqwest::StatusCode;

use scip_orchestrator::http;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_lists_every_endpoint() {
    let app = spawn_app().await;
    let (status, doc) = app.get("/api/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    assert_eq!(doc["info"]["title"], "scip-orchestrator");
    let mut listed = BTreeSet::new();
    for (path, operations) in doc["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            assert!(
                operation["responses"]
                    .as_object()
                    .is_some_and(|r| !r.is_empty()),
                "{method} {path} documents no response"
            );
            listed.insert(format!("{} {path}", method.to_uppercase()));
        }
    }
    let served: BTreeSet<String> = [
        "POST /api/v1/exercises",
        "GET /api/v1/exercises",
        "GET /api/v1/exercises/{id}",
        "DELETE /api/v1/exercises/{id}",
        "POST /api/v1/exercises/{id}/{command}",
        "GET /api/v1/exercises/{id}/deliveries",
        "GET /api/v1/exercises/{id}/failures",
        "POST /api/v1/exercises/{id}/deliveries/retry",
        "POST /api/v1/exercises/{id}/teams/{team}/injects/{inject}/retry",
        "POST /api/v1/exercises/{id}/teams/{team}/injects/{inject}/cancel",
        "POST /api/v1/exercises/{id}/teams/{team}/injects/{inject}/reschedule",
        "POST /api/v1/exercises/{id}/injects",
        "POST /api/v1/exercises/{id}/seek",
        "GET /api/v1/exercises/{id}/control-log",
        "GET /api/v1/exercises/{id}/report",
        "GET /api/v1/exercises/{id}/report.csv",
        "GET /api/v1/exercises/{id}/report/control-log.csv",
        "GET /api/v1/exercises/{id}/report.html",
        "GET /api/v1/exercises/{id}/events",
        "GET /api/v1/exercises/{id}/teams/{team}/events",
        "POST /api/v1/exercises/{id}/teams/{team}/receipts",
        "POST /api/v1/exercises/{id}/teams/{team}/responses",
        "POST /api/v1/exercises/{id}/decisions",
        "POST /api/v1/exercises/{id}/posts",
        "POST /api/v1/exercises/{id}/scores",
        "POST /api/v1/exercises/{id}/teams/{team}/posts",
        "GET /api/v1/exercises/{id}/responses",
        "POST /api/v1/exercises/{id}/teams/{team}/link",
        "DELETE /api/v1/exercises/{id}/teams/{team}/link",
        "GET /api/v1/scenarios",
        "POST /api/v1/packages",
        "GET /api/v1/tokens",
        "POST /api/v1/tokens",
        "DELETE /api/v1/tokens/{token}",
        "GET /api/v1/packages/{name}/archive",
        "GET /api/v1/packages/{name}/msel.xlsx",
        "POST /api/v1/msel/import",
        "GET /api/v1/cluster",
        "GET /healthz",
        "GET /readyz",
        "GET /metrics",
        "GET /api/openapi.json",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(listed, served);
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for schema in [
        "ExerciseResponse",
        "DeliveryResponse",
        "TransitionResponse",
        "ControlLogEntry",
        "ErrorResponse",
        "CreateExerciseRequest",
        "SendInjectRequest",
        "SeekRequest",
        "ReceiptsRequest",
        "ScenarioResponse",
        "AfterActionReport",
        "ClusterResponse",
    ] {
        assert!(schemas.contains_key(schema), "no schema {schema}");
    }
    // The document is what the router serves as well.
    assert_eq!(doc, serde_json::to_value(http::openapi_document()).unwrap());
}

#[test]
fn the_error_schema_and_the_readme_list_every_error_code() {
    // The codes the API can answer with: `ApiError` holds an `ErrorCode`.
    let codes: BTreeSet<String> = http::ErrorCode::ALL
        .iter()
        .map(|c| {
            serde_json::to_value(c)
                .unwrap()
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(codes.len(), http::ErrorCode::ALL.len(), "{codes:?}");

    let doc = serde_json::to_value(http::openapi_document()).unwrap();
    let schemas = &doc["components"]["schemas"];
    let code = &schemas["ErrorBody"]["properties"]["code"];
    let schema = match code["$ref"].as_str() {
        Some(path) => &schemas[path.trim_start_matches("#/components/schemas/")],
        None => code,
    };
    let listed: BTreeSet<String> = schema["enum"]
        .as_array()
        .unwrap_or_else(|| panic!("the error code schema lists no values: {schema}"))
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    // Derived from the enum itself: a code added there and left out of
    // `ALL` shows here.
    assert_eq!(listed, codes);

    // The README's table of error codes: one row per code, with its status.
    let readme =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
            .unwrap();
    let table: BTreeSet<String> = readme
        .split_once("| error code | status | when |")
        .expect("the README's error code table")
        .1
        .lines()
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|row| {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            assert!(
                cells[2].chars().next().is_some_and(|c| c.is_ascii_digit()),
                "{row}: no status"
            );
            cells[1].trim_matches('`').to_owned()
        })
        .collect();
    assert_eq!(table, codes);
}

/// One node (SQLite): the cluster view says so, to callers with a token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_view_of_a_single_node() {
    let app = spawn_app().await;
    let (status, view) = app.get("/api/v1/cluster").await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["mode"], "single", "{view}");
    assert_eq!(view["trusted"], true, "{view}");
    assert_eq!(view["nodes"], serde_json::json!([]), "{view}");
    assert_eq!(view["leases"], serde_json::json!([]), "{view}");
    let anonymous = app
        .anonymous
        .get(app.url("/api/v1/cluster"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
}

/// What an outsider, a team and an observer can do with what several nodes
/// added: a client address claimed in the forwarding headers without the
/// cluster's signature names nobody (the control log keeps the real one),
/// and a team's link token opens no cluster view.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_and_the_cluster_view_give_outsiders_nothing() {
    let app = spawn_app().await;
    app.create("ex-fw", 1.0, package(60, &[("blue", &[("a", 30)])]))
        .await;
    let forged = app
        .client
        .post(app.url("/api/v1/exercises/ex-fw/start"))
        .header("x-scip-forwarded-by", "n9")
        .header("x-scip-forwarded-for", "api:203.0.113.9")
        .header("x-scip-forward-signature", "Zm9yZ2Vk")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::OK);
    let (_, log) = app.get("/api/v1/exercises/ex-fw/control-log").await;
    assert_eq!(log[0]["source"], "api:127.0.0.1", "{log}");
    // A team's link token is no API token.
    let events = team_path(&app, "ex-fw", "blue", "events").await;
    let token = events.split_once("token=").unwrap().1.to_owned();
    let team = app
        .anonymous
        .get(app.url("/api/v1/cluster"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(team.status(), StatusCode::UNAUTHORIZED);
}
