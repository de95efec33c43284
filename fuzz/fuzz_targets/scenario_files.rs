//! The file loader, `scenario::load`, on a scenario folder written per input:
//! `scenario.json` and timeline files in `timelines/`, beside it, and in a
//! TIMELINE_STORAGE_PATH folder, at fixed names or (one folder in two) at
//! the names the teams give. Each file holds either generated
//! scenario-shaped JSON or the input's raw bytes (for syntax errors and their
//! line and column). An accepted scenario must satisfy `check_accepted`.
//!
//! The folder lives in /dev/shm when there is one, and is rewritten for every
//! input. With `SCIP_FUZZ_VERBOSE=1` each input's files and outcome go to
//! stderr.

#![no_main]

use std::fs;
use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;

use arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

use scip_orchestrator::scenario::load;
use scip_orchestrator_fuzz::{
    check_accepted, limits, outcome, scenario, scratch_dir, timeline, verbose,
};

/// Where a timeline file may be written, relative to the temp folder; the
/// scenario is `pkg/scenario.json` and `storage/` is TIMELINE_STORAGE_PATH.
const TIMELINE_FILES: &[&str] = &[
    "pkg/timelines/t.json",
    "pkg/timelines/u.json",
    "pkg/timelines/blue.json",
    "pkg/timelines/a.json",
    "pkg/timelines/t",
    "pkg/t.json",
    "pkg/u.json",
    "storage/t.json",
    "storage/u.json",
    "storage/blue.json",
    "t.json",
];

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});

fn run(u: &mut Unstructured<'_>) -> Result<()> {
    let root = folder();
    let limits = limits(u)?;
    let mut references = Vec::new();
    let scenario_bytes = contents(u, |u| {
        let mut value = scenario(u)?;
        references = referenced(&value);
        // The file loader finds timelines by file; keep one in two uploads'
        // "timelines" as an unknown field.
        if u.arbitrary()?
            && let Some(map) = value.as_object_mut()
        {
            map.remove("timelines");
        }
        Ok(value)
    })?;
    let mut files: Vec<(PathBuf, Vec<u8>)> = Vec::new();
    // One folder in two has a file for each timeline its teams name, so
    // that scenarios get accepted.
    if u.arbitrary()? {
        for reference in references {
            let relative = match reference {
                Reference::Id(id) if u.ratio(1, 4)? => format!("storage/{id}.json"),
                Reference::Id(id) => format!("pkg/timelines/{id}.json"),
                Reference::File(file) => format!("pkg/{file}"),
            };
            files.push((root.join(relative), contents(u, timeline)?));
        }
    }
    for _ in 0..u.int_in_range(0..=3)? {
        let path = root.join(u.choose(TIMELINE_FILES)?);
        files.push((path, contents(u, timeline)?));
    }

    let _ = fs::remove_dir_all(root.join("pkg"));
    let _ = fs::remove_dir_all(root.join("storage"));
    let _ = fs::remove_file(root.join("t.json"));
    for dir in ["pkg/timelines", "storage"] {
        fs::create_dir_all(root.join(dir)).expect("create a folder");
    }
    let scenario_file = root.join("pkg/scenario.json");
    fs::write(&scenario_file, &scenario_bytes).expect("write the scenario");
    // Where a name clashes (a folder, a file in the way, the scenario
    // itself), the file already there stays.
    for (path, bytes) in &files {
        if !path.exists()
            && let Some(parent) = path.parent()
            && fs::create_dir_all(parent).is_ok()
        {
            let _ = fs::write(path, bytes);
        }
    }
    if verbose() {
        eprintln!(
            "pkg/scenario.json: {}",
            String::from_utf8_lossy(&scenario_bytes)
        );
        for (path, bytes) in &files {
            let shown = path.strip_prefix(root).unwrap_or(path);
            eprintln!("{}: {}", shown.display(), String::from_utf8_lossy(bytes));
        }
    }
    let loaded = load(&scenario_file, &limits, Some(&root.join("storage")));
    outcome(loaded.as_ref().map_err(Vec::len));
    if let Ok(scenario) = loaded {
        check_accepted(&scenario, &limits);
    }
    Ok(())
}

/// A timeline a team names, when it can be a file inside the folder.
enum Reference {
    /// `timeline_id`: a plain file name.
    Id(String),
    /// `timeline_file`: a relative path of plain steps.
    File(String),
}

/// What the teams of a generated scenario name.
fn referenced(scenario: &Value) -> Vec<Reference> {
    let Some(teams) = scenario.get("teams").and_then(Value::as_array) else {
        return Vec::new();
    };
    let plain = |s: &str| !s.is_empty() && s.len() <= 100 && !s.contains('\0');
    let mut found = Vec::new();
    for team in teams {
        if let Some(id) = team.get("timeline_id").and_then(Value::as_str)
            && plain(id)
            && !id.contains(['/', '\\'])
            && id != "."
            && id != ".."
        {
            found.push(Reference::Id(id.to_owned()));
        }
        if let Some(file) = team.get("timeline_file").and_then(Value::as_str)
            && plain(file)
            && Path::new(file).components().count() <= 4
            && Path::new(file)
                .components()
                .all(|c| matches!(c, Component::Normal(_)))
        {
            found.push(Reference::File(file.to_owned()));
        }
    }
    found
}

/// A file's bytes: generated JSON, or (one in four) the input's raw bytes.
fn contents(
    u: &mut Unstructured<'_>,
    generate: impl FnOnce(&mut Unstructured<'_>) -> Result<Value>,
) -> Result<Vec<u8>> {
    if u.ratio(1, 4)? {
        let len = u.arbitrary_len::<u8>()?.min(4096);
        Ok(u.bytes(len)?.to_vec())
    } else {
        let value = generate(u)?;
        Ok(if u.arbitrary()? {
            serde_json::to_vec_pretty(&value)
        } else {
            serde_json::to_vec(&value)
        }
        .expect("a value serializes"))
    }
}

/// This process's folder, made once.
fn folder() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| scratch_dir("scip-fuzz-files-"))
}
