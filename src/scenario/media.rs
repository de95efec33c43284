//! Media of scenario packages: which files of a package the media route may
//! serve, the references to them inside feed messages, and which of them a
//! browser may show rather than download.
//!
//! Media are what a package holds besides its scenario: never the scenario
//! or a timeline (no `.json` file, nothing under `timelines/`, and no file
//! whose text starts as JSON does, whatever its name), nothing hidden (a
//! name starting with `.`), and nothing outside the package once symbolic
//! links are followed.

use std::path::{Component, Path, PathBuf};

use serde_json::Value;

use crate::scenario::package::is_plain_name;

/// Longest media reference followed, in bytes.
const MAX_REFERENCE_BYTES: usize = 1024;

/// Most media references taken from one feed message.
const MAX_REFERENCES: usize = 256;

/// The media file `path` (as the media route names it) of package
/// `package` under `root`: `<package>/<path>`, else `<package>/media/<path>`;
/// a `path` that starts with the package's own name (`/media/<package>/x`
/// in an inject, a path under MEDIA_STORAGE_PATH) is also looked for
/// without it. The file as found, links followed; None when there is none
/// that is media.
pub fn resolve(root: &Path, package: &str, path: &str) -> Option<PathBuf> {
    if !is_plain_name(package) {
        return None;
    }
    let relative = plain_relative(path)?;
    let dir = root.join(package).canonicalize().ok()?;
    let mut wanted = vec![relative.clone()];
    if let Ok(rest) = relative.strip_prefix(package)
        && !rest.as_os_str().is_empty()
    {
        wanted.push(rest.to_owned());
    }
    for relative in &wanted {
        for base in [dir.clone(), dir.join("media")] {
            let Ok(real) = base.join(relative).canonicalize() else {
                continue;
            };
            let Ok(inside) = real.strip_prefix(&dir) else {
                continue;
            };
            if is_media(inside) && real.is_file() && !holds_json(&real) {
                return Some(real);
            }
        }
    }
    None
}

/// The path a media reference in an inject names, as the dashboard asks
/// for it (`/media/x.png`, `media/x.png` and `x.png` are all `x.png`); None
/// for a URL (`https://...`) and for anything that cannot be a media file
/// of a package: text, `..`, a hidden name, a `.json` file, no extension.
pub fn reference(value: &str) -> Option<String> {
    if value.len() > MAX_REFERENCE_BYTES || value.chars().any(char::is_control) {
        return None;
    }
    // A scheme (`https:`, `data:`) before the first `/`: not a package file.
    if value
        .split('/')
        .next()
        .is_some_and(|first| first.contains(':'))
    {
        return None;
    }
    let path = value.trim_start_matches('/');
    let path = path.strip_prefix("media/").unwrap_or(path);
    let segments: Vec<&str> = path.split('/').collect();
    let plain = segments
        .iter()
        .all(|s| !s.is_empty() && !s.starts_with('.') && !s.contains('\\'));
    let (_, extension) = segments.last()?.rsplit_once('.')?;
    let extension_ok = (1..=10).contains(&extension.len())
        && extension.chars().all(|c| c.is_ascii_alphanumeric())
        && !extension.eq_ignore_ascii_case("json");
    (plain && extension_ok).then(|| path.to_owned())
}

/// The media references in a feed message (any string, at any depth), each
/// as written and as the path it names; each written form once.
pub fn references(message: &Value) -> Vec<(String, String)> {
    let mut found: Vec<(String, String)> = Vec::new();
    let mut stack = vec![message];
    while let Some(value) = stack.pop() {
        match value {
            Value::String(s) => {
                if found.len() < MAX_REFERENCES
                    && !found.iter().any(|(written, _)| written == s)
                    && let Some(path) = reference(s)
                {
                    found.push((s.clone(), path));
                }
            }
            Value::Array(items) => stack.extend(items.iter().rev()),
            Value::Object(fields) => stack.extend(fields.values().rev()),
            _ => {}
        }
    }
    found
}

/// Whether a file of `content_type` is shown by the browser as media
/// (pictures, video, sound); everything else is served as a download: SVG
/// and HTML (which can hold scripts), and documents such as PDF, whose
/// viewers do not open in the sandbox media responses are served in.
pub fn shown_inline(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    (essence.starts_with("image/") && essence != "image/svg+xml")
        || essence.starts_with("video/")
        || essence.starts_with("audio/")
}

/// `path` as a relative path of plain names: no root, no `.` or `..`, no
/// empty or hidden step, no control characters.
fn plain_relative(path: &str) -> Option<PathBuf> {
    if path.is_empty() || path.chars().any(char::is_control) || path.contains('\\') {
        return None;
    }
    let mut out = PathBuf::new();
    for segment in path.split('/') {
        if segment.is_empty() || segment.starts_with('.') {
            return None;
        }
        out.push(segment);
    }
    Some(out)
}

/// A package-relative path (links followed) that is media: every step a
/// plain name, not hidden, not under `timelines/`, not a `.json` file.
/// Whether the file's text starts as a JSON object or array does: a
/// scenario or timeline under any name (`timeline_file` may name
/// `teams/red.timeline`). No picture, video or sound starts so.
fn holds_json(file: &Path) -> bool {
    use std::io::Read as _;
    let mut head = [0u8; 512];
    let Ok(read) = std::fs::File::open(file).and_then(|mut f| f.read(&mut head)) else {
        return true;
    };
    let text = head[..read]
        .strip_prefix(b"\xef\xbb\xbf")
        .unwrap_or(&head[..read]);
    text.iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| matches!(b, b'{' | b'['))
}

fn is_media(inside: &Path) -> bool {
    if inside.as_os_str().is_empty() {
        return false;
    }
    let plain = inside.components().enumerate().all(|(n, c)| match c {
        Component::Normal(name) => {
            let name = name.to_string_lossy();
            let hidden = name.starts_with('.');
            let timelines = n == 0 && name == "timelines";
            !hidden && !timelines
        }
        _ => false,
    });
    let json = inside
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    plain && !json
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_paths_of_media_files() {
        let check = |value: &str, want: Option<&str>| {
            assert_eq!(reference(value).as_deref(), want, "{value:?}");
        };
        check("/media/four-teams/map.png", Some("four-teams/map.png"));
        check("media/map.png", Some("map.png"));
        check("map.png", Some("map.png"));
        check("ops/Site plan 2.PDF", Some("ops/Site plan 2.PDF"));
        check("https://example.org/x.png", None);
        check("data:image/png;base64,AAAA", None);
        check("javascript:alert(1).png", None);
        check("../secret.png", None);
        check("/media/../x.png", None);
        check("a//b.png", None);
        check(".hidden.png", None);
        check("scenario.json", None);
        check("timelines/blue.JSON", None);
        check("Shipping was halted early this morning.", None);
        check("600 t of ammonium nitrate", None);
        check("v1.2 released", None);
        check("a\\b.png", None);
        check("a\nb.png", None);
        check("", None);
    }

    #[test]
    fn references_are_found_anywhere_in_a_message_once() {
        let message = serde_json::json!({
            "id": "i-1", "type": "email",
            "content": {"subject": "Plan.", "attachments": [
                {"filename": "plan.pdf", "url": "/media/pkg/plan.pdf"},
                "notes.txt"
            ], "image": "https://example.org/x.png"},
            "media": ["/media/pkg/plan.pdf", "pkg/map.png"],
        });
        let mut found = references(&message);
        found.sort();
        assert_eq!(
            found,
            [
                ("/media/pkg/plan.pdf".to_owned(), "pkg/plan.pdf".to_owned()),
                ("notes.txt".to_owned(), "notes.txt".to_owned()),
                ("pkg/map.png".to_owned(), "pkg/map.png".to_owned()),
                ("plan.pdf".to_owned(), "plan.pdf".to_owned()),
            ]
        );
    }

    #[test]
    fn only_passive_types_are_shown_inline() {
        for inline in ["image/png", "image/jpeg", "video/mp4", "audio/mpeg"] {
            assert!(shown_inline(inline), "{inline}");
        }
        for download in [
            "image/svg+xml",
            "text/html",
            "text/html; charset=utf-8",
            "application/xhtml+xml",
            "text/javascript",
            "application/javascript",
            "text/xml",
            "application/octet-stream",
            "application/pdf",
            "",
        ] {
            assert!(!shown_inline(download), "{download}");
        }
    }

    #[test]
    fn only_media_of_the_package_resolve() {
        let root = tempfile::tempdir().unwrap();
        let write = |path: &str| {
            let file = root.path().join(path);
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(file, path).unwrap();
        };
        for path in [
            "pkg/scenario.json",
            "pkg/timelines/blue.json",
            "pkg/timelines/notes.txt",
            "pkg/map.png",
            "pkg/media/brief.pdf",
            "pkg/.secret.png",
            "other/photo.png",
            "outside.png",
        ] {
            write(path);
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::symlink;
            symlink(
                root.path().join("outside.png"),
                root.path().join("pkg/out.png"),
            )
            .unwrap();
            symlink("map.png", root.path().join("pkg/alias.png")).unwrap();
            symlink("scenario.json", root.path().join("pkg/disguised.png")).unwrap();
            symlink(
                root.path().join("other"),
                root.path().join("pkg/media/other"),
            )
            .unwrap();
        }
        let found = |path: &str| {
            resolve(root.path(), "pkg", path).map(|p| {
                p.strip_prefix(root.path().canonicalize().unwrap())
                    .unwrap()
                    .display()
                    .to_string()
            })
        };
        assert_eq!(found("map.png").as_deref(), Some("pkg/map.png"));
        assert_eq!(found("pkg/map.png").as_deref(), Some("pkg/map.png"));
        assert_eq!(found("brief.pdf").as_deref(), Some("pkg/media/brief.pdf"));
        assert_eq!(
            found("media/brief.pdf").as_deref(),
            Some("pkg/media/brief.pdf")
        );
        assert_eq!(
            found("pkg/brief.pdf").as_deref(),
            Some("pkg/media/brief.pdf")
        );
        for refused in [
            "scenario.json",
            "pkg/scenario.json",
            "timelines/blue.json",
            "timelines/notes.txt",
            ".secret.png",
            "../other/photo.png",
            "other/photo.png",
            "../outside.png",
            "/etc/passwd",
            "pkg/../other/photo.png",
            "nope.png",
            "",
        ] {
            assert_eq!(found(refused), None, "{refused:?}");
        }
        #[cfg(unix)]
        {
            assert_eq!(found("alias.png").as_deref(), Some("pkg/map.png"));
            assert_eq!(found("out.png"), None, "a link out of the package");
            assert_eq!(found("disguised.png"), None, "a link to the scenario");
            assert_eq!(found("other/photo.png"), None, "a folder linked in");
        }
        assert_eq!(resolve(root.path(), "../pkg", "map.png"), None);
    }
}
