//! `msel-import` and `msel-export`: spreadsheet MSELs to a scenario package
//! on disk, and a scenario on disk to an `.xlsx` workbook.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde_json::Value;

use super::load;
use crate::config::Config;
use crate::scenario::msel::{self, Format, ImportOptions, Mapping};
use crate::scenario::package::find_scenario;

/// Arguments of `msel-import`.
#[derive(Debug, Clone)]
pub struct MselImportArgs {
    pub file: PathBuf,
    pub sheet: Option<String>,
    /// `field=Header` choices.
    pub columns: Vec<String>,
    pub name: Option<String>,
    pub out: PathBuf,
}

/// `msel-import FILE --out DIR|FILE.json`: the MSEL as a scenario folder
/// (`scenario.json` and `timelines/`) or as one inline package file;
/// nothing is written when the MSEL is invalid.
pub fn msel_import(args: MselImportArgs, config: &Config) -> anyhow::Result<()> {
    let mapping = Mapping::parse(&args.columns)
        .map_err(|errors| anyhow::anyhow!("bad --column: {}", errors.join("; ")))?;
    if args.out.exists() {
        bail!(
            "{} exists already: write to a new folder or file",
            args.out.display()
        );
    }
    let bytes = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let file_name = args
        .file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let extension = args
        .file
        .extension()
        .map(|e| e.to_string_lossy().into_owned())
        .unwrap_or_default();
    let options = ImportOptions {
        sheet: args.sheet,
        mapping,
        name: args.name,
        file_name,
        format: Format::parse(&extension),
    };
    let imported = match msel::import(&bytes, &options, &config.limits()) {
        Ok(imported) => imported,
        Err(e) => {
            let mut out = format!(
                "{} is invalid: {} problem{}\n",
                args.file.display(),
                e.problems.len(),
                if e.problems.len() == 1 { "" } else { "s" }
            );
            for problem in &e.problems {
                out.push_str(&format!("  {problem}\n"));
            }
            bail!(out.trim_end().to_owned());
        }
    };
    let is_json = args
        .out
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    if is_json {
        let text = serde_json::to_string_pretty(&imported.package)?;
        std::fs::write(&args.out, text + "\n")
            .with_context(|| format!("cannot write {}", args.out.display()))?;
    } else {
        write_folder(&imported.package, &args.out)?;
    }
    print!("{}", crate::scenario::summary(&imported.scenario));
    if is_json {
        println!(
            "\nWrote the scenario package to {}: create an exercise from it with POST /api/v1/exercises {{\"package\": <its contents>}}.",
            args.out.display()
        );
    } else {
        println!(
            "\nWrote the scenario to {}: check it with `validate {}`, run it, or store it with `import {}`.",
            args.out.display(),
            args.out.join("scenario.json").display(),
            args.out.display()
        );
    }
    Ok(())
}

/// The inline package as a scenario folder, written next to `out` first
/// and renamed into place.
fn write_folder(package: &Value, out: &Path) -> anyhow::Result<()> {
    let mut root = package.as_object().cloned().unwrap_or_default();
    let timelines = root.remove("timelines").unwrap_or(Value::Array(Vec::new()));
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let dir = parent.join(format!(".msel-import-{}-{nanos}", std::process::id()));
    let written = (|| -> anyhow::Result<()> {
        std::fs::create_dir_all(dir.join("timelines"))?;
        std::fs::write(
            dir.join("scenario.json"),
            serde_json::to_string_pretty(&Value::Object(root))? + "\n",
        )?;
        for timeline in timelines.as_array().into_iter().flatten() {
            let id = timeline["id"].as_str().unwrap_or("timeline");
            std::fs::write(
                dir.join("timelines").join(format!("{id}.json")),
                serde_json::to_string_pretty(timeline)? + "\n",
            )?;
        }
        std::fs::rename(&dir, out)?;
        Ok(())
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_dir_all(&dir);
        return Err(e.context(format!("cannot write {}", out.display())));
    }
    Ok(())
}

/// `msel-export SCENARIO --out FILE.xlsx`: a scenario file (or a folder
/// holding one) as an MSEL workbook.
pub fn msel_export(scenario: &Path, out: &Path, config: &Config) -> anyhow::Result<()> {
    if out.exists() {
        bail!("{} exists already: export to a new file", out.display());
    }
    let file = if scenario.is_dir() {
        find_scenario(scenario, config.limits().max_file_bytes)?
    } else {
        scenario.to_owned()
    };
    let loaded = load(&file, config).map_err(|e| anyhow::anyhow!(e.trim_end().to_owned()))?;
    let bytes = msel::export(&loaded)?;
    std::fs::write(out, &bytes).with_context(|| format!("cannot write {}", out.display()))?;
    println!(
        "Exported {} injects of {} teams to {} ({} bytes).",
        loaded.delivery_count(),
        loaded.teams.len(),
        out.display(),
        bytes.len()
    );
    Ok(())
}
