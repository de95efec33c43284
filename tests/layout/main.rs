//! The layout as a rule, not a convention: which folder of `src/` may import
//! which, the core crate's dependencies, and how long a file may grow.
//! ARCHITECTURE.md draws the same picture.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The folders (and top-level files) of `src/`, from the top down: each may
/// import only from those below it. `core` and `domain` are the core crate,
/// below everything. Test support (`testing`, behind the `testing` feature)
/// sits beside the entry points: it may use anything, and nothing uses it.
const LAYERS: &[&[&str]] = &[
    &["main", "lib", "testing"],
    &["app"],
    &["http"],
    &["report", "broker"],
    &["runtime"],
    &["store", "mqtt", "access"],
    &["scenario"],
    &["config"],
];

/// Files allowed past [`MAX_LINES`], each one cohesive thing.
const LONG_FILES: &[(&str, &str)] = &[];

const MAX_LINES: usize = 800;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file of `src/` belongs to: its folder, or the
/// file's own name.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel.components().next().unwrap().as_os_str();
    Path::new(first)
        .file_stem()
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

/// Every `crate::name` a file's code (not its comments) mentions.
fn crate_paths(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.insert(name);
            }
            rest = after;
        }
    }
    found
}

fn layer(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

#[test]
fn every_import_between_folders_points_down() {
    let src = root().join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(&src, f)).collect();
    for m in &modules {
        assert!(
            layer(m).is_some(),
            "src/{m} is in no layer: add it to LAYERS and to ARCHITECTURE.md"
        );
    }
    let mut edges: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let from = module_of(&src, file);
        let text = fs::read_to_string(file).unwrap();
        for to in crate_paths(&text) {
            if to != from && modules.contains(&to) {
                let rel = file.strip_prefix(&src).unwrap().display().to_string();
                edges.entry((from.clone(), to)).or_default().insert(rel);
            }
        }
    }
    let upward: Vec<String> = edges
        .iter()
        .filter(|((from, to), _)| layer(from).unwrap() >= layer(to).unwrap())
        .map(|((from, to), files)| format!("{from} -> {to} in {files:?}"))
        .collect();
    assert!(
        upward.is_empty(),
        "imports that point sideways or up (a folder may import only from layers below it):\n{}",
        upward.join("\n")
    );
}

#[test]
fn the_core_crate_depends_on_no_io() {
    let manifest = fs::read_to_string(root().join("crates/core/Cargo.toml")).unwrap();
    let mut section = "";
    let mut deps = BTreeMap::new();
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line;
        } else if section == "[dependencies]" && !line.is_empty() && !line.starts_with('#') {
            let (name, spec) = line.split_once('=').unwrap();
            deps.insert(name.trim().to_owned(), spec.trim().to_owned());
        }
    }
    let names: Vec<&str> = deps.keys().map(String::as_str).collect();
    assert_eq!(names, ["serde", "thiserror", "time", "tokio"]);
    let tokio = &deps["tokio"];
    assert!(
        tokio.contains("default-features = false") && tokio.contains(r#"features = ["time"]"#),
        "the core may use tokio's clock types only, not its I/O: {tokio}"
    );
}

#[test]
fn no_file_grows_past_the_limit_unless_listed() {
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    rust_files(&root().join("crates"), &mut files);
    rust_files(&root().join("tests"), &mut files);
    rust_files(&root().join("benches"), &mut files);
    let mut long = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(root()).unwrap().display().to_string();
        let lines = fs::read_to_string(file).unwrap().lines().count();
        if lines > MAX_LINES && !LONG_FILES.iter().any(|(f, _)| *f == rel) {
            long.push(format!("{rel}: {lines} lines"));
        }
    }
    assert!(
        long.is_empty(),
        "files over {MAX_LINES} lines (split them, or list them in LONG_FILES with why):\n{}",
        long.join("\n")
    );
}
