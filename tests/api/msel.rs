//! Spreadsheet MSELs: a stored package exported as `.xlsx`, an `.xlsx` or
//! `.csv` imported as a package an exercise is created from, every problem
//! named by sheet, row and column, and who may do either.

use reqwest::StatusCode;
use serde_json::{Value, json};

use scip_orchestrator::access::tokens::Role;

use crate::support::*;

const XLSX: &str = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet";

async fn import(
    client: &reqwest::Client,
    app: &TestApp,
    query: &str,
    body: Vec<u8>,
    content_type: &str,
) -> Reply {
    let response = client
        .post(app.url(&format!("/api/v1/msel/import{query}")))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn export(
    client: &reqwest::Client,
    app: &TestApp,
    name: &str,
) -> (StatusCode, String, Vec<u8>) {
    let response = client
        .get(app.url(&format!("/api/v1/packages/{name}/msel.xlsx")))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let kind = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, kind, response.bytes().await.unwrap().to_vec())
}

async fn token(app: &TestApp, role: Role) -> String {
    let (status, issued) = app
        .post(
            "/api/v1/tokens",
            Some(json!({"role": role.as_str(), "name": format!("msel {role}")})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{issued}");
    issued["token"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_package_exports_and_imports_back_into_an_exercise() {
    let app = spawn_app().await;
    let (status, kind, workbook) = export(&app.client, &app, "four-teams").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(kind, XLSX);
    assert!(workbook.starts_with(b"PK\x03\x04"));

    let (status, package) = import(&app.client, &app, "", workbook, XLSX).await;
    assert_eq!(status, StatusCode::OK, "{package}");
    assert_eq!(package["id"], "four-teams-demo");
    assert_eq!(package["package"], "four-teams", "its media is still found");
    assert_eq!(package["teams"].as_array().unwrap().len(), 4);
    assert_eq!(package["timelines"][0]["id"], "blue-standard");
    assert_eq!(package["timelines"][0]["injects"][0]["id"], "blue-001");
    // Nothing was stored.
    let (_, scenarios) = app.get("/api/v1/scenarios").await;
    assert_eq!(scenarios.as_array().unwrap().len(), 1, "{scenarios}");

    let created = app.create("from-msel", 1.0, package).await;
    assert_eq!(created["id"], "from-msel");
    assert_eq!(created["teams"].as_array().unwrap().len(), 4, "{created}");

    let (status, kind, _) = export(&app.client, &app, "no-such").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{kind}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_csv_msel_is_mapped_and_every_problem_is_named() {
    let app = spawn_app().await;
    let csv = "When,Sent to,Channel,Subject,Body\n\
               0,all,briefing,Start,Go\n\
               T+01:30,\"blue; red\",sms,,Call in\n";
    let (status, body) = import(&app.client, &app, "?file=drill.csv", csv.into(), "text/csv").await;
    let body = assert_error(&(status, body), StatusCode::BAD_REQUEST, "invalid_input");
    let details = body["details"].to_string();
    assert!(
        details.contains(r#"Sheet \"drill\", row 1: no time column"#),
        "{details}"
    );
    assert!(details.contains("no team column"), "{details}");

    let (status, package) = import(
        &app.client,
        &app,
        "?file=drill.csv&time=When&team=Sent%20to",
        csv.into(),
        "text/csv",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{package}");
    assert_eq!(package["scenario_id"], "drill");
    assert_eq!(package["duration_minutes"], 2);
    assert_eq!(package["timelines"][1]["injects"][1]["time"], 90);
    assert_eq!(
        package["timelines"][1]["injects"][1]["content"],
        json!({"body": "Call in"})
    );

    let bad = "Time,Team,Type,Title\n0,blue,news,Fine\nT+5:6x,blue,news,Bad\n9,blue,,Untyped\n";
    let (status, body) = import(
        &app.client,
        &app,
        "?format=csv&file=msel.csv",
        bad.into(),
        "application/octet-stream",
    )
    .await;
    let body = assert_error(&(status, body), StatusCode::BAD_REQUEST, "invalid_input");
    assert_eq!(
        body["details"],
        json!([
            r#"Sheet "msel", row 3, column A (Time): "T+5:6x" is not seconds or T+mm:ss"#,
            r#"Sheet "msel", row 4, column C (Type): no type: news, social, email, sms, video, intel, briefing, ..."#,
        ])
    );

    let (status, body) = import(&app.client, &app, "", "x".into(), "image/png").await;
    assert_error(
        &(status, body),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
    let (status, body) = import(&app.client, &app, "?format=ods", "x".into(), "text/csv").await;
    assert_error(&(status, body), StatusCode::BAD_REQUEST, "invalid_input");
    let (status, body) = import(
        &app.client,
        &app,
        "",
        b"PK\x03\x04 not a zip".to_vec(),
        XLSX,
    )
    .await;
    let body = assert_error(&(status, body), StatusCode::BAD_REQUEST, "invalid_input");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("not a readable .xlsx"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_controllers_import_and_observers_may_export() {
    let app = spawn_app_with(&["--max-request-bytes", "4096"]).await;
    let csv = "Time,Team,Type\n0,blue,news\n";
    let observer = authorized(&token(&app, Role::Observer).await);
    let controller = authorized(&token(&app, Role::Controller).await);

    let (status, _) = import(&app.anonymous, &app, "", csv.into(), "text/csv").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = import(&observer, &app, "", csv.into(), "text/csv").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = import(&controller, &app, "", csv.into(), "text/csv").await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let (status, _, _) = export(&app.anonymous, &app, "four-teams").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, kind, _) = export(&observer, &app, "four-teams").await;
    assert_eq!((status, kind.as_str()), (StatusCode::OK, XLSX));

    // A team's dashboard link opens neither.
    app.create("links", 1.0, package(60, &[("blue", &[("a", 30)])]))
        .await;
    let path = team_path(&app, "links", "blue", "events").await;
    let link = path.split_once("token=").unwrap().1;
    let (status, _) = import(
        &app.anonymous,
        &app,
        &format!("?token={link}"),
        csv.into(),
        "text/csv",
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Uploads are held to the request limit.
    let big = format!("Time,Team,Type\n{}", "0,blue,news\n".repeat(500));
    let (status, body) = import(&controller, &app, "", big.into(), "text/csv").await;
    assert_error(
        &(status, body),
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );
}
