//! Scenario packages: a folder holding a scenario file, the timelines it
//! names and its media, as SCIP v3 packages come. Imported packages live in
//! MEDIA_STORAGE_PATH, one folder each (`<root>/<name>/scenario.json`), where
//! exercises are created from them and their media is served.
//!
//! Import checks the package as it will be stored: it is copied (or unpacked)
//! next to its destination, validated there, so every timeline it needs must
//! be inside it, and only then moved into place in one rename. Nothing is
//! left behind on failure. Export writes a stored package to a folder or a
//! `.tar.gz` archive whose top folder is the package's name.

use std::fs;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;

use crate::config::Limits;
use crate::scenario::{self, Scenario, ValidationError};

/// The file a stored package's scenario is in.
pub const SCENARIO_FILE: &str = "scenario.json";

/// Most bytes an archive may unpack to: a guard against compression bombs.
pub const MAX_UNPACKED_BYTES: u64 = 1024 * 1024 * 1024;

/// A package that is now stored.
#[derive(Debug, Clone)]
pub struct Imported {
    pub name: String,
    pub path: PathBuf,
    pub scenario: Scenario,
    pub files: usize,
    pub bytes: u64,
}

/// Why a package was not imported or exported; nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error(
        "no scenario file in {}: expected scenario.json, or a single .json file with \"teams\"",
        .0.display()
    )]
    NoScenario(PathBuf),
    #[error("the package is invalid: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<ValidationError>),
    #[error("a package {0:?} exists already: replace it explicitly")]
    Exists(String),
    #[error("no package {0:?}")]
    NotFound(String),
    /// A bad name, a link, a path leaving the package, too large.
    #[error("{0}")]
    Refused(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> PackageError {
    let what = what.into();
    move |source| PackageError::Io { what, source }
}

/// A single path component, no `..`, no separators: safe to join under a root.
pub fn is_plain_name(name: &str) -> bool {
    let mut parts = Path::new(name).components();
    matches!(parts.next(), Some(Component::Normal(_)))
        && parts.next().is_none()
        && !name.contains(['/', '\\'])
        && !name.starts_with('.')
        && !name.chars().any(char::is_control)
}

/// The scenario file of the package in `dir`: `scenario.json`, else the one
/// top-level `.json` file whose object has `teams`. Files are looked into
/// only up to `max_bytes` (MAX_SCENARIO_FILE_BYTES), without building them.
pub fn find_scenario(dir: &Path, max_bytes: u64) -> Result<PathBuf, PackageError> {
    let named = dir.join(SCENARIO_FILE);
    if named.is_file() {
        return Ok(named);
    }
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).map_err(io(format!("cannot read {}", dir.display())))? {
        let path = entry.map_err(io("cannot read a folder entry"))?.path();
        if path.extension().is_some_and(|e| e == "json") && path.is_file() {
            let has_teams = probe(&path, max_bytes).is_some_and(|p| p.teams.is_some());
            if has_teams {
                found.push(path);
            }
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        _ => Err(PackageError::NoScenario(dir.to_owned())),
    }
}

/// What import needs to know of a scenario file before it is validated;
/// everything else in it is skipped over, not built.
#[derive(Debug, serde::Deserialize)]
struct Probe {
    teams: Option<serde::de::IgnoredAny>,
    scenario_id: Option<TextOrOther>,
}

/// A JSON string, or anything else (skipped).
#[derive(Debug)]
struct TextOrOther(Option<String>);

impl<'de> serde::Deserialize<'de> for TextOrOther {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = TextOrOther;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E>(self, v: &str) -> Result<TextOrOther, E> {
                Ok(TextOrOther(Some(v.to_owned())))
            }
            fn visit_bool<E>(self, _: bool) -> Result<TextOrOther, E> {
                Ok(TextOrOther(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<TextOrOther, E> {
                Ok(TextOrOther(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<TextOrOther, E> {
                Ok(TextOrOther(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<TextOrOther, E> {
                Ok(TextOrOther(None))
            }
            fn visit_unit<E>(self) -> Result<TextOrOther, E> {
                Ok(TextOrOther(None))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<TextOrOther, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(TextOrOther(None))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<TextOrOther, A::Error> {
                while map
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(TextOrOther(None))
            }
        }
        d.deserialize_any(Visit)
    }
}

/// The probe of a JSON file of at most `max_bytes`; None when it is bigger,
/// unreadable, or not a JSON object.
fn probe(path: &Path, max_bytes: u64) -> Option<Probe> {
    let mut bytes = Vec::new();
    fs::File::open(path)
        .and_then(|file| {
            file.take(max_bytes.saturating_add(1))
                .read_to_end(&mut bytes)
        })
        .ok()?;
    if bytes.len() as u64 > max_bytes {
        return None;
    }
    serde_json::from_slice(&bytes).ok()
}

/// Imports the package folder `src` into `root` as `name` (default: its
/// `scenario_id` when that is a usable name, else the folder's name).
pub fn import_dir(
    src: &Path,
    root: &Path,
    name: Option<&str>,
    replace: bool,
    limits: &Limits,
) -> Result<Imported, PackageError> {
    let scenario_file = find_scenario(src, limits.max_file_bytes)?;
    let fallback = src
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
    let name = package_name(name, &scenario_file, fallback, limits.max_file_bytes)?;
    let dest = root.join(&name);
    if dest.exists() && !replace {
        return Err(PackageError::Exists(name));
    }
    fs::create_dir_all(root).map_err(io(format!("cannot create {}", root.display())))?;
    let staging = Staging::new(root, "import")?;
    let mut totals = Totals::default();
    copy_tree(src, &staging.path, &mut totals)?;
    finish_import(
        staging,
        &scenario_file,
        src,
        &dest,
        name,
        limits,
        totals,
        replace,
    )
}

/// Imports a package sent as a `.tar.gz` archive: the package folder at the
/// archive's top, or as its only top folder.
pub fn import_archive(
    archive: &[u8],
    root: &Path,
    name: Option<&str>,
    replace: bool,
    limits: &Limits,
) -> Result<Imported, PackageError> {
    fs::create_dir_all(root).map_err(io(format!("cannot create {}", root.display())))?;
    let unpacked = Staging::new(root, "upload")?;
    let totals = unpack(archive, &unpacked.path, limits.max_file_bytes)?;
    let top = package_root(&unpacked.path, limits.max_file_bytes)?;
    let scenario_file = find_scenario(&top, limits.max_file_bytes)?;
    let fallback = (top != unpacked.path)
        .then(|| top.file_name().map(|n| n.to_string_lossy().into_owned()))
        .flatten();
    let name = package_name(name, &scenario_file, fallback, limits.max_file_bytes)?;
    let dest = root.join(&name);
    if dest.exists() && !replace {
        return Err(PackageError::Exists(name));
    }
    let staging = Staging::new(root, "import")?;
    fs::remove_dir(&staging.path).map_err(io("cannot prepare the import"))?;
    fs::rename(&top, &staging.path).map_err(io("cannot move the unpacked package"))?;
    let scenario_file = staging
        .path
        .join(scenario_file.strip_prefix(&top).unwrap_or(&scenario_file));
    let shown = PathBuf::from(format!("<archive>/{name}"));
    let result = finish_import(
        staging,
        &scenario_file,
        &shown,
        &dest,
        name,
        limits,
        totals,
        replace,
    );
    drop(unpacked);
    result
}

/// Writes stored package `name` to the folder `to`, which must not exist.
pub fn export_dir(root: &Path, name: &str, to: &Path) -> Result<usize, PackageError> {
    let src = stored(root, name)?;
    if to.exists() {
        return Err(PackageError::Refused(format!(
            "{} exists already: export into a new folder",
            to.display()
        )));
    }
    let mut totals = Totals::default();
    copy_tree(&src, to, &mut totals)?;
    Ok(totals.files)
}

/// Stored package `name` as a `.tar.gz` archive with one top folder, `name`.
pub fn export_archive(root: &Path, name: &str) -> Result<Vec<u8>, PackageError> {
    let src = stored(root, name)?;
    let mut builder = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::default()));
    builder.follow_symlinks(false);
    builder
        .append_dir_all(name, &src)
        .map_err(io(format!("cannot archive {}", src.display())))?;
    let encoder = builder
        .into_inner()
        .map_err(io("cannot finish the archive"))?;
    encoder.finish().map_err(io("cannot compress the archive"))
}

/// The folder of stored package `name`.
pub fn stored(root: &Path, name: &str) -> Result<PathBuf, PackageError> {
    if !is_plain_name(name) {
        return Err(PackageError::NotFound(name.to_owned()));
    }
    let path = root.join(name);
    if !path.join(SCENARIO_FILE).is_file() {
        return Err(PackageError::NotFound(name.to_owned()));
    }
    Ok(path)
}

/// A folder next to the packages that is removed unless kept.
struct Staging {
    path: PathBuf,
    keep: bool,
}

impl Staging {
    fn new(root: &Path, what: &str) -> Result<Self, PackageError> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let path = root.join(format!(".{what}-{}-{nanos}", std::process::id()));
        fs::create_dir(&path).map_err(io(format!("cannot create {}", path.display())))?;
        Ok(Self { path, keep: false })
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Totals {
    files: usize,
    bytes: u64,
}

/// Validates the staged copy (as it will be stored: no timeline from outside
/// it), then moves it into place.
#[allow(clippy::too_many_arguments)]
fn finish_import(
    mut staging: Staging,
    scenario_file: &Path,
    shown_as: &Path,
    dest: &Path,
    name: String,
    limits: &Limits,
    totals: Totals,
    replace: bool,
) -> Result<Imported, PackageError> {
    let relative = scenario_file
        .strip_prefix(&staging.path)
        .or_else(|_| scenario_file.strip_prefix(shown_as))
        .map(Path::to_path_buf)
        .unwrap_or_else(|_| PathBuf::from(scenario_file.file_name().unwrap_or_default()));
    let staged_scenario = staging.path.join(&relative);
    if relative != Path::new(SCENARIO_FILE) {
        // Stored under the one name exercises are created from.
        fs::rename(&staged_scenario, staging.path.join(SCENARIO_FILE))
            .map_err(io("cannot store the scenario file"))?;
    }
    let scenario = scenario::load_package(&staging.path.join(SCENARIO_FILE), limits, None)
        .map_err(|errors| {
            PackageError::Invalid(
                errors
                    .into_iter()
                    .map(|mut e| {
                        if let Ok(rest) = e.file.strip_prefix(&staging.path) {
                            e.file = shown_as.join(rest);
                        }
                        e
                    })
                    .collect(),
            )
        })?;
    if dest.exists() {
        if !replace {
            return Err(PackageError::Exists(name));
        }
        let old = Staging::new(dest.parent().unwrap_or(Path::new(".")), "replaced")?;
        fs::remove_dir(&old.path).map_err(io("cannot prepare the replacement"))?;
        fs::rename(dest, &old.path).map_err(io(format!("cannot move {} aside", dest.display())))?;
        if let Err(e) = fs::rename(&staging.path, dest) {
            let _ = fs::rename(&old.path, dest);
            return Err(io(format!("cannot store {}", dest.display()))(e));
        }
    } else {
        fs::rename(&staging.path, dest).map_err(io(format!("cannot store {}", dest.display())))?;
    }
    staging.keep = true;
    let mut scenario = scenario;
    scenario.path = dest.join(SCENARIO_FILE);
    Ok(Imported {
        name,
        path: dest.to_owned(),
        scenario,
        files: totals.files,
        bytes: totals.bytes,
    })
}

fn package_name(
    given: Option<&str>,
    scenario_file: &Path,
    fallback: Option<String>,
    max_bytes: u64,
) -> Result<String, PackageError> {
    if let Some(name) = given {
        if !is_plain_name(name) {
            return Err(PackageError::Refused(format!(
                "package name {name:?}: a plain folder name, without /, \\ or a leading ."
            )));
        }
        return Ok(name.to_owned());
    }
    let scenario_id = probe(scenario_file, max_bytes)
        .and_then(|p| p.scenario_id)
        .and_then(|id| id.0);
    scenario_id
        .into_iter()
        .chain(fallback)
        .find(|n| is_plain_name(n))
        .ok_or_else(|| {
            PackageError::Refused("name the package: it has no usable scenario_id".into())
        })
}

/// Copies regular files and folders; links are refused, not followed.
fn copy_tree(src: &Path, dest: &Path, totals: &mut Totals) -> Result<(), PackageError> {
    fs::create_dir_all(dest).map_err(io(format!("cannot create {}", dest.display())))?;
    let mut entries: Vec<_> = fs::read_dir(src)
        .map_err(io(format!("cannot read {}", src.display())))?
        .collect::<Result<_, _>>()
        .map_err(io(format!("cannot read {}", src.display())))?;
    entries.sort_by_key(fs::DirEntry::file_name);
    for entry in entries {
        let from = entry.path();
        let kind = entry
            .file_type()
            .map_err(io(format!("cannot read {}", from.display())))?;
        let to = dest.join(entry.file_name());
        if kind.is_symlink() {
            return Err(PackageError::Refused(format!(
                "{} is a link: packages hold plain files only",
                from.display()
            )));
        } else if kind.is_dir() {
            copy_tree(&from, &to, totals)?;
        } else if kind.is_file() {
            totals.bytes +=
                fs::copy(&from, &to).map_err(io(format!("cannot copy {}", from.display())))?;
            totals.files += 1;
        }
    }
    Ok(())
}

/// Longest GNU long name, or PAX header block, an archive may carry: they
/// are read into memory, so their size is checked before they are.
const MAX_ARCHIVE_HEADER_BYTES: u64 = 64 * 1024;

/// Unpacks a `.tar.gz` into `dest`: plain files and folders only, every path
/// inside `dest`, at most [`MAX_UNPACKED_BYTES`], a `.json` file at most
/// `max_json_bytes` (MAX_SCENARIO_FILE_BYTES). Entries are streamed to disk,
/// never held in memory, and no buffer is sized from what a header
/// declares: the archive is read raw, so long names and PAX headers are
/// read here, bounded, rather than whole by the tar reader.
fn unpack(archive: &[u8], dest: &Path, max_json_bytes: u64) -> Result<Totals, PackageError> {
    let mut tar = tar::Archive::new(GzDecoder::new(archive));
    let mut totals = Totals::default();
    let entries = tar
        .entries()
        .map_err(|e| PackageError::Refused(format!("not a .tar.gz archive: {e}")))?
        .raw(true);
    // The path a GNU long name or PAX header gives the next entry.
    let mut long_path: Option<PathBuf> = None;
    for entry in entries {
        let mut entry =
            entry.map_err(|e| PackageError::Refused(format!("unreadable archive: {e}")))?;
        let kind = entry.header().entry_type();
        let size = entry
            .header()
            .size()
            .map_err(|e| PackageError::Refused(format!("unreadable archive entry size: {e}")))?;
        if kind.is_gnu_longname()
            || kind.is_pax_local_extensions()
            || kind.is_pax_global_extensions()
        {
            if size > MAX_ARCHIVE_HEADER_BYTES {
                return Err(PackageError::Refused(format!(
                    "an archive header of {size} bytes: at most {MAX_ARCHIVE_HEADER_BYTES} are read"
                )));
            }
            let mut bytes = Vec::new();
            (&mut entry)
                .take(MAX_ARCHIVE_HEADER_BYTES)
                .read_to_end(&mut bytes)
                .map_err(|e| PackageError::Refused(format!("unreadable archive header: {e}")))?;
            if kind.is_gnu_longname() {
                let name = bytes.split(|b| *b == 0).next().unwrap_or_default();
                long_path = Some(archive_path(name)?);
            } else if kind.is_pax_local_extensions() {
                for extension in tar::PaxExtensions::new(&bytes) {
                    let extension = extension.map_err(|e| {
                        PackageError::Refused(format!("unreadable PAX header: {e}"))
                    })?;
                    match extension.key() {
                        Ok("path") => long_path = Some(archive_path(extension.value_bytes())?),
                        Ok("size") => {
                            return Err(PackageError::Refused(
                                "PAX sizes are not supported: files over 8 GiB have no place in a package".into(),
                            ));
                        }
                        _ => {}
                    }
                }
            }
            continue;
        }
        let path = match long_path.take() {
            Some(path) => path,
            None => archive_path(&entry.path_bytes())?,
        };
        let safe = path
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
        if !safe {
            return Err(PackageError::Refused(format!(
                "archive path {} leaves the package",
                path.display()
            )));
        }
        // Names every system takes as plain names: `\` is a separator on
        // Windows (an export unpacked there would leave the folder), `:` a
        // drive or stream.
        let text = path.to_string_lossy();
        if text.contains(['\\', ':']) || text.chars().any(char::is_control) {
            return Err(PackageError::Refused(format!(
                "archive path {text:?}: names in a package hold no \\, : or control characters"
            )));
        }
        // An entry inside what the archive made a file, or a file where it
        // made a folder: the archive contradicts itself.
        let clash = path.ancestors().skip(1).any(|a| dest.join(a).is_file())
            || (kind.is_dir() && dest.join(&path).is_file())
            || (!kind.is_dir() && dest.join(&path).is_dir());
        if clash {
            return Err(PackageError::Refused(format!(
                "archive path {} is both a file and a folder",
                path.display()
            )));
        }
        if kind.is_dir() {
            fs::create_dir_all(dest.join(&path)).map_err(io("cannot unpack a folder"))?;
            continue;
        }
        if !kind.is_file() {
            return Err(PackageError::Refused(format!(
                "archive entry {} is not a plain file (links are refused)",
                path.display()
            )));
        }
        let is_json = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"));
        if is_json && size > max_json_bytes {
            return Err(PackageError::Refused(format!(
                "{} is over the limit of {max_json_bytes} bytes (MAX_SCENARIO_FILE_BYTES)",
                path.display()
            )));
        }
        if totals.bytes.saturating_add(size) > MAX_UNPACKED_BYTES {
            return Err(PackageError::Refused(format!(
                "the archive unpacks to more than {} MiB",
                MAX_UNPACKED_BYTES / (1024 * 1024)
            )));
        }
        let to = dest.join(&path);
        if let Some(parent) = to.parent() {
            fs::create_dir_all(parent).map_err(io("cannot unpack a folder"))?;
        }
        let mut file =
            fs::File::create(&to).map_err(io(format!("cannot write {}", to.display())))?;
        // At most what the header declares, whatever the stream holds.
        let written = std::io::copy(&mut (&mut entry).take(size), &mut file).map_err(|e| {
            PackageError::Refused(format!("unreadable archive entry {}: {e}", path.display()))
        })?;
        if written != size {
            return Err(PackageError::Refused(format!(
                "archive entry {} is cut short",
                path.display()
            )));
        }
        totals.bytes += written;
        totals.files += 1;
    }
    Ok(totals)
}

/// A path as an archive spells it: UTF-8, without NUL.
fn archive_path(bytes: &[u8]) -> Result<PathBuf, PackageError> {
    match std::str::from_utf8(bytes) {
        Ok(text) if !text.is_empty() && !text.contains('\0') => Ok(PathBuf::from(text)),
        _ => Err(PackageError::Refused(
            "an archive path that is empty or not UTF-8".into(),
        )),
    }
}

/// Where the package is in an unpacked archive: its top, or its only folder.
fn package_root(unpacked: &Path, max_bytes: u64) -> Result<PathBuf, PackageError> {
    if find_scenario(unpacked, max_bytes).is_ok() {
        return Ok(unpacked.to_owned());
    }
    let entries: Vec<PathBuf> = fs::read_dir(unpacked)
        .map_err(io("cannot read the unpacked archive"))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    match entries.as_slice() {
        [only] if only.is_dir() => Ok(only.clone()),
        _ => Err(PackageError::NoScenario(PathBuf::from("<archive>"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_names_are_plain_folder_names() {
        for (name, ok) in [
            ("maritime", true),
            ("four-teams", true),
            ("..", false),
            ("../etc", false),
            ("a/b", false),
            ("/abs", false),
            ("", false),
            (".", false),
            (".hidden", false),
            ("a\\b", false),
            ("tab\there", false),
        ] {
            assert_eq!(is_plain_name(name), ok, "{name:?}");
        }
    }
}
