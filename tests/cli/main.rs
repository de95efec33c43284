//! The binary as a user runs it: `validate`, `run`, signals, exit codes.

mod msel;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use scip_orchestrator::testing::{Mosquitto, Subscriber, refused_port};

const BIN: &str = env!("CARGO_BIN_EXE_scip-orchestrator");

fn sample() -> &'static Path {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/four-teams/scenario.json"
    ))
}

#[test]
fn validate_prints_a_summary_of_the_sample() {
    let out = Command::new(BIN)
        .args(["validate"])
        .arg(sample())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("four-teams-demo"), "{stdout}");
    assert!(stdout.contains("23 deliveries"), "{stdout}");
    assert!(
        stdout.contains("Two-way:   3 ask for a response; 5 conditional; decisions: escalate; channels: chirper; 2 objectives"),
        "{stdout}"
    );
    for team in ["blue", "red", "orange", "green"] {
        assert!(stdout.contains(team), "{team} missing from {stdout}");
    }
}

#[test]
fn run_and_demo_refuse_a_speed_the_clock_cannot_keep() {
    for speed in ["0", "-1", "nan", "inf", "1000.5", "fast"] {
        for command in ["run", "demo"] {
            let mut args = vec![command];
            let path = sample().to_string_lossy().into_owned();
            if command == "run" {
                args.push(&path);
            }
            let out = Command::new(BIN)
                .args(&args)
                .arg(format!("--speed={speed}"))
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(
                out.status.code(),
                Some(2),
                "{command} --speed {speed}: {stderr}"
            );
            assert!(
                stderr.contains("speed must be a number above 0 and at most 1000"),
                "{command} --speed {speed}: {stderr}"
            );
        }
    }
}

#[test]
fn validate_shows_a_shared_timeline() {
    let path = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/shared-timeline/scenario.json"
    ));
    let out = Command::new(BIN)
        .arg("validate")
        .arg(path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("night-shift (shared with orange)"),
        "{stdout}"
    );
    assert!(stdout.contains("8 deliveries"), "{stdout}");
}

#[test]
fn validate_reports_every_error_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("timelines")).unwrap();
    std::fs::write(
        dir.path().join("scenario.json"),
        json!({"duration_minutes": 1, "teams": [
            {"id": "blue", "timeline_id": "t"},
            {"id": "blue", "timeline_id": "t"},
            {"id": "red/x", "timeline_id": "missing"}
        ]})
        .to_string(),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("timelines/t.json"),
        r#"{"injects": [
            {"id": "a", "time": -1, "type": "news", "content": {}},
            {"id": "a", "time": 90, "type": "news", "content": {}},
            {"id": "b", "time": 1.5, "type": "news"}
        ]}"#,
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("validate")
        .arg(dir.path().join("scenario.json"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "duplicate team id",
        "red/x",
        "missing",
        "must not be negative",
        "after the end",
        "duplicate inject id",
        "whole number of seconds",
        "\"content\"",
    ] {
        assert!(
            stderr.contains(needle),
            "{needle:?} missing from:\n{stderr}"
        );
    }
}

#[test]
fn validate_names_line_and_column_of_bad_json() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scenario.json");
    std::fs::write(
        &path,
        "{\n  \"teams\": [\n    {\"id\": \"blue\",}\n  ]\n}\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("validate")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("line 3, column"), "{stderr}");
}

#[test]
fn run_exits_non_zero_when_the_broker_is_unreachable() {
    // Held bound without listening: refused for the whole test.
    let (_held, port) = refused_port();
    let out = Command::new(BIN)
        .args([
            "run",
            "--mqtt-broker-port",
            &port.to_string(),
            "--mqtt-broker-host",
            "127.0.0.1",
        ])
        .arg(sample())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot reach the MQTT broker at 127.0.0.1:{port}")),
        "{stderr}"
    );
}

#[test]
fn run_refuses_a_bad_configuration_value_naming_it() {
    let out = Command::new(BIN)
        .arg("run")
        .arg(sample())
        .env("MQTT_QOS_LEVEL", "7")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("mqtt-qos-level") || stderr.contains("MQTT_QOS_LEVEL"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_cleanly_cancels_the_rest_and_writes_the_report() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    let mut sub = Subscriber::connect(broker.port, "/exercise/sigterm-1/#").await;
    let child = Command::new(BIN)
        .args([
            "run",
            "--exercise-id",
            "sigterm-1",
            "--speed",
            "30",
            "--report",
        ])
        .arg(&report)
        .arg(sample())
        .env("MQTT_BROKER_HOST", "127.0.0.1")
        .env("MQTT_BROKER_PORT", broker.port.to_string())
        .env("LOG_FORMAT", "json")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the T+2:00 email to reach blue, then send SIGTERM.
    sub.collect_until(Duration::from_secs(20), |m| {
        m.topic.ends_with("/team/blue/feed") && m.payload["exerciseTime"] == 120
    })
    .await;
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}: {stderr}", out.status);

    let seen = sub
        .collect_until(Duration::from_secs(10), |m| {
            m.topic.ends_with("/status") && m.payload["status"] == "stopped"
        })
        .await;
    assert_eq!(
        seen.last().unwrap().payload["reason"],
        "orchestrator shut down"
    );

    let report: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(report["state"], "stopped");
    assert_eq!(report["exercise_id"], "sigterm-1");
    let deliveries = report["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 23);
    // What waits for a condition (a team's answer, a decision) never went out.
    let conditional = [
        "blue-evacuated",
        "blue-sheltered",
        "blue-chased",
        "red-statement-chased",
        "green-escalated",
    ];
    for d in deliveries {
        let due = d["due_exercise_time"].as_u64().unwrap();
        let status = d["status"].as_str().unwrap();
        if conditional.contains(&d["inject_id"].as_str().unwrap()) {
            assert_eq!(status, "cancelled", "{d}");
        } else if due <= 120 {
            assert_eq!(status, "delivered", "{d}");
            assert!(
                d["acknowledged_at"].is_string() && d["latency_ms"].is_number(),
                "{d}"
            );
        } else {
            assert_eq!(status, "cancelled", "{d}");
        }
    }
    assert_eq!(report["counts"]["delivered"], 10);
    assert_eq!(report["counts"]["cancelled"], 13);
    // The final summary names every team; JSON logs name every delivery.
    let stdout = String::from_utf8_lossy(&out.stdout);
    for team in ["blue", "red", "orange", "green"] {
        assert!(stdout.contains(team), "{stdout}");
    }
    let deliveries_logged = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["message"] == "inject delivered")
        .inspect(|l| {
            for field in [
                "exercise_id",
                "team_id",
                "inject_id",
                "exercise_time",
                "latency_ms",
            ] {
                assert!(!l[field].is_null(), "{field} missing in {l}");
            }
        })
        .count();
    assert_eq!(deliveries_logged, 10, "{stderr}");
}

#[test]
fn import_and_export_round_trip_a_package_unchanged() {
    let work = tempfile::tempdir().unwrap();
    let media = work.path().join("media");
    let source = work.path().join("harbour");
    let write = |path: &str, body: &str| {
        let path = source.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, body).unwrap();
    };
    write(
        "legacy.json",
        r#"{"name": "Harbour", "teams": [{"id": "blue", "timeline_file": "timelines/blue.json"}]}"#,
    );
    write(
        "timelines/blue.json",
        r#"{"injects": [{"id": "b1", "time": 30, "type": "news", "content": {"headline": "Fog"}}]}"#,
    );
    write(
        "media/map.svg",
        "<svg xmlns=\"http://www.w3.org/2000/svg\"/>",
    );
    let run = |args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .env("MEDIA_STORAGE_PATH", &media)
            .output()
            .unwrap()
    };
    let out = run(&["import", source.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("Imported as \"harbour\""), "{stdout}");
    assert!(
        stdout.contains("Duration:  T+02:00"),
        "a minute after the last inject: {stdout}"
    );
    assert_eq!(
        std::fs::read(media.join("harbour/scenario.json")).unwrap(),
        std::fs::read(source.join("legacy.json")).unwrap()
    );
    // Again: refused unless replaced.
    let out = run(&["import", source.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("exists already"));
    assert!(
        run(&["import", source.to_str().unwrap(), "--replace"])
            .status
            .success()
    );

    // Export to a folder and to an archive.
    let folder = work.path().join("out");
    let out = run(&["export", "harbour", "--to", folder.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (exported, original) in [
        ("scenario.json", "legacy.json"),
        ("timelines/blue.json", "timelines/blue.json"),
        ("media/map.svg", "media/map.svg"),
    ] {
        assert_eq!(
            std::fs::read(folder.join(exported)).unwrap(),
            std::fs::read(source.join(original)).unwrap(),
            "{exported}"
        );
    }
    let archive = work.path().join("harbour.tar.gz");
    assert!(
        run(&["export", "harbour", "--to", archive.to_str().unwrap()])
            .status
            .success()
    );
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(
        std::fs::File::open(&archive).unwrap(),
    ));
    let mut names: Vec<String> = tar
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .filter(|p| p.ends_with(".json") || p.ends_with(".svg"))
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "harbour/media/map.svg",
            "harbour/scenario.json",
            "harbour/timelines/blue.json"
        ]
    );

    // An invalid package: every error, nothing stored.
    std::fs::remove_file(source.join("timelines/blue.json")).unwrap();
    let out = run(&["import", source.to_str().unwrap(), "--name", "broken"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("timelines/blue.json") && stderr.contains("not found"),
        "{stderr}"
    );
    assert!(!media.join("broken").exists());
    let hidden: Vec<_> = std::fs::read_dir(&media)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(hidden.is_empty(), "staging left behind: {hidden:?}");
    // Without MEDIA_STORAGE_PATH: a clear error.
    let out = Command::new(BIN)
        .args(["export", "harbour", "--to", "x"])
        .env_remove("MEDIA_STORAGE_PATH")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("MEDIA_STORAGE_PATH"));
}
