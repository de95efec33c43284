//! The administration subcommands: `import` and `export` of scenario
//! packages, `broker-acl`, `hash-token`.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use super::{load, redact};
use crate::config::Config;
use crate::domain::ExerciseId;
use crate::scenario::{self};
use crate::store::Store;

/// `import DIR`: a package folder into MEDIA_STORAGE_PATH, validated first.
pub fn import_package(
    dir: &Path,
    name: Option<&str>,
    replace: bool,
    config: &Config,
) -> anyhow::Result<()> {
    let root = package_root(config)?;
    let imported =
        crate::scenario::package::import_dir(dir, &root, name, replace, &config.limits())
            .with_context(|| format!("cannot import {}", dir.display()))?;
    print!("{}", crate::scenario::summary(&imported.scenario));
    println!(
        "\nImported as {:?} into {} ({} files, {} bytes).\nCreate an exercise from it: POST /api/v1/exercises {{\"scenario\": {:?}}}, or pick it in the control room.",
        imported.name,
        imported.path.display(),
        imported.files,
        imported.bytes,
        imported.name
    );
    Ok(())
}

/// `export NAME --to PATH`: a stored package to a new folder or a `.tar.gz`.
pub fn export_package(name: &str, to: &Path, config: &Config) -> anyhow::Result<()> {
    let root = package_root(config)?;
    let file_name = to
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if file_name.ends_with(".tar.gz") || file_name.ends_with(".tgz") {
        if to.exists() {
            anyhow::bail!("{} exists already: export to a new file", to.display());
        }
        let archive = crate::scenario::package::export_archive(&root, name)?;
        std::fs::write(to, &archive).with_context(|| format!("cannot write {}", to.display()))?;
        println!(
            "Exported {name:?} to {} ({} bytes).",
            to.display(),
            archive.len()
        );
    } else {
        let files = crate::scenario::package::export_dir(&root, name, to)?;
        println!("Exported {name:?} to {} ({files} files).", to.display());
    }
    Ok(())
}

/// Arguments of `broker-acl`.
#[derive(Debug, Clone)]
pub struct BrokerAclArgs {
    pub exercise: String,
    pub scenario: Option<PathBuf>,
    pub database_url: Option<String>,
    pub data_dir: PathBuf,
    pub out: PathBuf,
    pub engine_user: Option<String>,
    pub force: bool,
}

/// `broker-acl EXERCISE`: Mosquitto password and ACL files for one
/// exercise, its teams from `--scenario` or from the stored exercise.
pub async fn broker_acl(args: BrokerAclArgs, config: &Config) -> anyhow::Result<()> {
    let exercise = ExerciseId::parse(&args.exercise)
        .with_context(|| format!("exercise id {:?}", args.exercise))?;
    let scenario = match &args.scenario {
        Some(path) => load(path, config).map_err(anyhow::Error::msg)?,
        None => {
            let url = match &args.database_url {
                Some(url) => url.clone(),
                None => {
                    // Opening would create an empty database.
                    let file = args.data_dir.join("scip.db");
                    if !file.exists() {
                        bail!(
                            "no database at {}: give the service's DATA_DIR or DATABASE_URL, or the exercise's scenario with --scenario",
                            file.display()
                        );
                    }
                    crate::store::default_sqlite_url(&args.data_dir)
                }
            };
            let store = Store::connect(&url)
                .await
                .with_context(|| format!("cannot open the database {}", redact(&url)))?;
            let row = store.get_exercise(exercise.as_str()).await;
            store.close().await;
            let row = row?.with_context(|| {
                format!(
                    "no exercise {:?} in {}: create it first, or give its scenario with --scenario",
                    exercise.as_str(),
                    redact(&url)
                )
            })?;
            let package: serde_json::Value = serde_json::from_str(&row.scenario_json)
                .with_context(|| format!("the stored scenario of {exercise} is not JSON"))?;
            scenario::load_inline(&package, &config.limits()).map_err(|errors| {
                anyhow::anyhow!(
                    "the stored scenario of {exercise} is invalid: {}",
                    errors
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; ")
                )
            })?
        }
    };
    let teams: Vec<_> = scenario.teams.iter().map(|t| t.id.clone()).collect();
    let plan = crate::mqtt::broker_files::plan(&exercise, &teams, args.engine_user.as_deref())?;
    let files = plan.write(&args.out, args.force)?;
    print!("{}", crate::mqtt::broker_files::summary(&plan, &files));
    Ok(())
}

fn package_root(config: &Config) -> anyhow::Result<PathBuf> {
    config.media_storage_path.clone().ok_or_else(|| {
        anyhow::anyhow!("packages live in MEDIA_STORAGE_PATH: set it (or --media-storage-path)")
    })
}

/// `hash-token`: the API_TOKENS entry of a token, or of a new one.
pub fn hash_token(token: Option<String>, new: bool, role: &str) -> anyhow::Result<()> {
    let role = crate::access::tokens::Role::parse(role).ok_or_else(|| {
        anyhow::anyhow!("--role {role:?}: expected observer, evaluator, controller or admin")
    })?;
    let token = match (token, new) {
        (Some(_), true) => bail!("give a token or --new, not both"),
        (Some(token), false) => token,
        (None, true) => crate::access::tokens::generate(),
        (None, false) => {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .context("cannot read the token from standard input")?;
            line.trim().to_owned()
        }
    };
    if token.is_empty() {
        bail!("the token is empty");
    }
    if new {
        println!("token:      {token}");
    }
    println!("API_TOKENS: {role}:{}", crate::access::tokens::hash(&token));
    Ok(())
}
