//! Health, readiness and the Prometheus metrics, with the broker link up
//! and cut.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::support::*;

const SECS: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics() {
    let app = spawn_app().await;
    assert_eq!(
        app.get("/healthz").await,
        (StatusCode::OK, json!({"status": "ok"}))
    );
    assert_eq!(
        app.get("/readyz").await,
        (StatusCode::OK, json!({"status": "ready"}))
    );

    let metrics = app.metrics().await;
    for state in ["initialized", "running", "paused", "stopped", "completed"] {
        assert!(
            metrics.contains(&format!("scip_exercises{{state=\"{state}\"}} 0\n")),
            "{metrics}"
        );
    }
    assert!(metrics.contains("# TYPE scip_exercises gauge"), "{metrics}");
    assert!(metrics.contains("scip_mqtt_connected 1\n"), "{metrics}");

    let id = "metered";
    app.create(id, 10.0, package(600, &[("blue", &[("b-0", 0)])]))
        .await;
    app.create("idle", 1.0, package(60, &[("blue", &[("b-0", 0)])]))
        .await;
    app.command(id, "start").await;
    app.wait_delivery(id, "blue", "b-0", "delivered").await;
    // The gauges count what GET shows.
    app.wait_for(&format!("/api/v1/exercises/{id}"), SECS, |e| {
        e["state"] == "running"
    })
    .await;
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("scip_exercises{state=\"running\"} 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("scip_exercises{state=\"initialized\"} 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("scip_deliveries_total{status=\"delivered\"}"),
        "{metrics}"
    );
    // Current records by status: "idle" has one pending, "metered" one delivered.
    assert!(
        metrics.contains("scip_deliveries{status=\"delivered\"} 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("scip_deliveries{status=\"pending\"} 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("scip_delivery_latency_seconds_bucket{le=\"0.001\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("scip_delivery_latency_seconds_bucket{le=\"10\"}"),
        "{metrics}"
    );

    // The broker link goes: not ready, and the gauge says so.
    app.proxy.set_up(false);
    let deadline = tokio::time::Instant::now() + SECS;
    let error = loop {
        let reply = app.get("/readyz").await;
        if reply.0 == StatusCode::SERVICE_UNAVAILABLE {
            break assert_error(&reply, StatusCode::SERVICE_UNAVAILABLE, "unavailable");
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still ready: {reply:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert!(
        error["message"].as_str().unwrap().contains("MQTT"),
        "{error}"
    );
    assert!(app.metrics().await.contains("scip_mqtt_connected 0\n"));
    assert_eq!(app.get("/healthz").await.0, StatusCode::OK);
    app.proxy.set_up(true);
    app.wait_for("/readyz", SECS, |body| body["status"] == "ready")
        .await;
}
