//! `msel-import` and `msel-export`: spreadsheet MSELs to scenarios and back.

use std::path::Path;
use std::process::Command;

use scip_orchestrator::config::Limits;
use scip_orchestrator::scenario::{load, to_inline};

use super::{BIN, sample};

fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn inline_of(path: &Path) -> serde_json::Value {
    to_inline(&load(path, &Limits::default(), None).unwrap())
}

#[test]
fn an_exported_msel_imports_as_the_same_scenario() {
    let dir = tempfile::tempdir().unwrap();
    let xlsx = dir.path().join("four-teams.xlsx");
    let folder = dir.path().join("back");
    let sample_dir = sample().parent().unwrap().to_str().unwrap();
    let (ok, stdout, stderr) = run(&["msel-export", sample_dir, "--out", xlsx.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("23 injects of 4 teams"), "{stdout}");
    // Never over an existing file.
    let (ok, _, stderr) = run(&["msel-export", sample_dir, "--out", xlsx.to_str().unwrap()]);
    assert!(!ok && stderr.contains("exists already"), "{stderr}");

    let (ok, stdout, stderr) = run(&[
        "msel-import",
        xlsx.to_str().unwrap(),
        "--out",
        folder.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("23 deliveries"), "{stdout}");
    let (ok, _, stderr) = run(&["validate", folder.join("scenario.json").to_str().unwrap()]);
    assert!(ok, "{stderr}");
    assert_eq!(
        inline_of(&folder.join("scenario.json")),
        inline_of(sample())
    );
}

#[test]
fn the_sample_msel_in_examples_is_the_sample_scenario() {
    let xlsx = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/four-teams-msel.xlsx"
    ));
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("package.json");
    let (ok, _, stderr) = run(&[
        "msel-import",
        xlsx.to_str().unwrap(),
        "--out",
        json.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    let package: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(package, inline_of(sample()));
}

#[test]
fn a_bad_msel_reports_every_problem_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("drill.csv");
    std::fs::write(
        &csv,
        "Time,Team,Type,Title\n0,blue,news,Fine\nT+5:6x,blue,news,Bad\n9,,sms,No team\n",
    )
    .unwrap();
    let out = dir.path().join("drill");
    let (ok, _, stderr) = run(&[
        "msel-import",
        csv.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(stderr.contains("2 problems"), "{stderr}");
    assert!(
        stderr.contains(
            r#"Sheet "drill", row 3, column A (Time): "T+5:6x" is not seconds or T+mm:ss"#
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains(r#"Sheet "drill", row 4, column B (Team): no team"#),
        "{stderr}"
    );
    assert!(!out.exists());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn columns_can_be_mapped_explicitly() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("plan.csv");
    std::fs::write(
        &csv,
        "When;Sent to;Channel;Body\nT+01:00;blue, red;email;Hello\n",
    )
    .unwrap();
    let json = dir.path().join("plan.json");
    let (ok, _, stderr) = run(&[
        "msel-import",
        csv.to_str().unwrap(),
        "--out",
        json.to_str().unwrap(),
    ]);
    assert!(!ok && stderr.contains("no time column"), "{stderr}");
    let (ok, _, stderr) = run(&[
        "msel-import",
        csv.to_str().unwrap(),
        "--column",
        "time=When",
        "--column",
        "team=Sent to",
        "--name",
        "harbour-drill",
        "--out",
        json.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    let package: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(package["scenario_id"], "harbour-drill");
    assert_eq!(package["teams"].as_array().unwrap().len(), 2);
    assert_eq!(package["timelines"][1]["injects"][0]["time"], 60);
    assert_eq!(
        package["timelines"][1]["injects"][0]["content"]["body"],
        "Hello"
    );

    let (ok, _, stderr) = run(&[
        "msel-import",
        csv.to_str().unwrap(),
        "--column",
        "when=When",
        "--out",
        "x.json",
    ]);
    assert!(!ok && stderr.contains("unknown field \"when\""), "{stderr}");
    let (ok, stdout, _) = run(&["msel-import", "--help"]);
    assert!(ok && stdout.contains("--column <FIELD=HEADER>") && stdout.contains("T+mm:ss"));
}
