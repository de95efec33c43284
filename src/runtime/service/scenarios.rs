//! Scenarios on disk: packages imported and exported, the scenario folders
//! under MEDIA_STORAGE_PATH, loading one, and an exercise's media files.

use std::path::Path;

use tracing::{error, info};

use crate::scenario::msel;
use crate::scenario::package::{self as packages, Imported, is_plain_name};
use crate::scenario::{self, Scenario, ValidationError};

use super::{ScenarioEntry, ScenarioSource, Service, ServiceError};

impl Service {
    /// Imports a scenario package sent as a `.tar.gz` archive into
    /// MEDIA_STORAGE_PATH, validated first; `replace` overwrites a stored
    /// package of the same name.
    pub async fn import_package(
        &self,
        archive: Vec<u8>,
        name: Option<String>,
        replace: bool,
    ) -> Result<Imported, ServiceError> {
        let root = self.package_root()?;
        let limits = self.inner.config.limits();
        let imported = tokio::task::spawn_blocking(move || {
            packages::import_archive(&archive, &root, name.as_deref(), replace, &limits)
        })
        .await
        .map_err(|e| ServiceError::Internal(format!("the import failed: {e}")))??;
        info!(package = %imported.name, files = imported.files, bytes = imported.bytes, "package imported");
        Ok(imported)
    }

    /// Stored package `name` as a `.tar.gz` archive.
    pub async fn export_package(&self, name: String) -> Result<Vec<u8>, ServiceError> {
        let root = self.package_root()?;
        let archive = tokio::task::spawn_blocking(move || packages::export_archive(&root, &name))
            .await
            .map_err(|e| ServiceError::Internal(format!("the export failed: {e}")))??;
        Ok(archive)
    }

    /// Reads a spreadsheet MSEL into a validated scenario package (not
    /// stored: the caller creates an exercise from it or keeps it).
    pub async fn import_msel(
        &self,
        bytes: Vec<u8>,
        options: msel::ImportOptions,
    ) -> Result<msel::Imported, ServiceError> {
        let _turn = self.inner.file_work.acquire().await;
        let limits = self.inner.config.limits();
        tokio::task::spawn_blocking(move || msel::import(&bytes, &options, &limits))
            .await
            .map_err(|e| ServiceError::Internal(format!("the MSEL import failed: {e}")))?
            .map_err(|e| {
                ServiceError::Invalid(e.problems.iter().map(ToString::to_string).collect())
            })
    }

    /// Stored package `name` as an MSEL workbook (`.xlsx`).
    pub async fn export_msel(&self, name: String) -> Result<Vec<u8>, ServiceError> {
        let scenario = self.load_off_workers(ScenarioSource::Folder(name)).await?;
        tokio::task::spawn_blocking(move || msel::export(&scenario))
            .await
            .map_err(|e| ServiceError::Internal(format!("the MSEL export failed: {e}")))?
            .map_err(|e| ServiceError::Internal(e.to_string()))
    }

    fn package_root(&self) -> Result<std::path::PathBuf, ServiceError> {
        self.inner.config.media_storage_path.clone().ok_or_else(|| {
            ServiceError::Invalid(vec![
                "scenario packages need MEDIA_STORAGE_PATH to be set".into(),
            ])
        })
    }

    /// The scenario folders under MEDIA_STORAGE_PATH, by name; an invalid
    /// one is listed with its first problems.
    /// Every scenario folder under MEDIA_STORAGE_PATH, validated. The files
    /// are read on a blocking thread, one such job at a time, and a folder
    /// is validated again only when one of its files changed, so listing
    /// does not hold up the workers that wake the exercises.
    pub async fn scenarios(&self) -> Vec<ScenarioEntry> {
        let _turn = self.inner.file_work.acquire().await;
        let service = self.clone();
        tokio::task::spawn_blocking(move || service.scenarios_now())
            .await
            .unwrap_or_else(|e| {
                error!(error = %e, "listing the scenario folders failed");
                Vec::new()
            })
    }

    fn scenarios_now(&self) -> Vec<ScenarioEntry> {
        let Some(root) = &self.inner.config.media_storage_path else {
            return Vec::new();
        };
        let Ok(dir) = std::fs::read_dir(root) else {
            return Vec::new();
        };
        let mut names: Vec<String> = dir
            .filter_map(Result::ok)
            .filter(|e| e.path().join("scenario.json").is_file())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|name| is_plain_name(name))
            .collect();
        names.sort();
        let storage = self
            .inner
            .config
            .timeline_storage_path
            .as_deref()
            .map(|path| fingerprint(path, false))
            .unwrap_or_default();
        let mut cache = self
            .inner
            .scenario_cache
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        cache.retain(|name, _| names.contains(name));
        names
            .into_iter()
            .map(|name| {
                let print = fingerprint(&root.join(&name), true) ^ storage;
                if let Some((seen, entry)) = cache.get(&name)
                    && *seen == print
                {
                    return entry.clone();
                }
                let entry = self.scenario_entry(name.clone());
                cache.insert(name, (print, entry.clone()));
                entry
            })
            .collect()
    }

    fn scenario_entry(&self, name: String) -> ScenarioEntry {
        match self.load(&ScenarioSource::Folder(name.clone())) {
            Ok(s) => ScenarioEntry {
                title: s.name.clone(),
                teams: s.teams.len(),
                injects: s.teams.iter().map(|t| t.timeline.injects.len()).sum(),
                duration_secs: s.duration.get(),
                error: None,
                name,
            },
            Err(e) => ScenarioEntry {
                name,
                title: None,
                teams: 0,
                injects: 0,
                duration_secs: 0,
                error: Some(e.to_string()),
            },
        }
    }

    /// Loads a scenario on a blocking thread (files, parsing, validation),
    /// one such job at a time.
    pub(super) async fn load_off_workers(
        &self,
        source: ScenarioSource,
    ) -> Result<Scenario, ServiceError> {
        let _turn = self.inner.file_work.acquire().await;
        let service = self.clone();
        tokio::task::spawn_blocking(move || service.load(&source))
            .await
            .map_err(|e| ServiceError::Internal(format!("loading the scenario failed: {e}")))?
    }

    fn load(&self, source: &ScenarioSource) -> Result<Scenario, ServiceError> {
        let limits = self.inner.config.limits();
        let result = match source {
            ScenarioSource::Inline(value) => scenario::load_inline(value, &limits),
            ScenarioSource::Folder(name) => {
                let Some(root) = &self.inner.config.media_storage_path else {
                    return Err(ServiceError::Invalid(vec![
                        "scenario folders need MEDIA_STORAGE_PATH to be set".into(),
                    ]));
                };
                if !is_plain_name(name) {
                    return Err(ServiceError::Invalid(vec![format!(
                        "scenario {name:?}: a folder name under MEDIA_STORAGE_PATH, without / or .."
                    )]));
                }
                let path = root.join(name).join("scenario.json");
                if !path.exists() {
                    return Err(ServiceError::NotFound(format!(
                        "no scenario folder {name:?}"
                    )));
                }
                scenario::load_package(
                    &path,
                    &limits,
                    self.inner.config.timeline_storage_path.as_deref(),
                )
                .map(|mut scenario| {
                    scenario.package = Some(name.clone());
                    scenario
                })
                .map_err(|errors| {
                    // Named as under MEDIA_STORAGE_PATH (`four-teams/...`),
                    // not where the server keeps it.
                    errors
                        .into_iter()
                        .map(|mut e| {
                            if let Ok(inside) = e.file.strip_prefix(root) {
                                e.file = inside.to_owned();
                            }
                            e
                        })
                        .collect()
                })
            }
        };
        result.map_err(|errors| {
            ServiceError::Invalid(errors.iter().map(ValidationError::to_string).collect())
        })
    }

    /// The media file `path` of exercise `id` (as the media route names
    /// it): a file of the exercise's own package, as is or under its
    /// `media/`; a `path` starting with the package's name (`/media/<package>/x`
    /// in an inject) is also looked for without it. Never a scenario or
    /// timeline file (no `.json`, nothing under `timelines/`), nothing hidden
    /// (a `.` name), nothing outside the package once links are followed.
    /// None when there is no such file, or the exercise has no package (it
    /// was created from an inline one) or no MEDIA_STORAGE_PATH is set.
    pub async fn media_file(&self, id: &str, path: &str) -> Option<std::path::PathBuf> {
        let root = self.inner.config.media_storage_path.clone()?;
        let package = {
            let exercises = self.inner.exercises.read().expect("registry");
            exercises.get(id)?.scenario.package.clone()?
        };
        let path = path.to_owned();
        tokio::task::spawn_blocking(move || crate::scenario::media::resolve(&root, &package, &path))
            .await
            .ok()
            .flatten()
    }
}

/// A hash of the names, sizes and modification times of the files in
/// `folder` (and, with `deep`, in its folders): changes when a file does.
fn fingerprint(folder: &Path, deep: bool) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    let mut pending = vec![folder.to_owned()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut entries: Vec<_> = entries.filter_map(Result::ok).collect();
        entries.sort_by_key(std::fs::DirEntry::file_name);
        for entry in entries {
            let Ok(meta) = std::fs::metadata(entry.path()) else {
                continue;
            };
            if meta.is_dir() {
                if deep {
                    pending.push(entry.path());
                }
                continue;
            }
            entry.path().hash(&mut hasher);
            meta.len().hash(&mut hasher);
            meta.modified().ok().hash(&mut hasher);
        }
    }
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenario_folder_names_cannot_escape_the_media_root() {
        for (name, ok) in [
            ("maritime", true),
            ("four-teams", true),
            ("..", false),
            ("../etc", false),
            ("a/b", false),
            ("/abs", false),
            ("", false),
            (".", false),
            ("a\\b", false),
        ] {
            assert_eq!(is_plain_name(name), ok, "{name:?}");
        }
    }
}
