//! Who may do what on the broker, for one exercise: the users, Mosquitto
//! ACL and password files that `broker-acl` writes, and Mosquitto's `$7$`
//! password hashes (PBKDF2-SHA512, as `mosquitto_passwd` writes them), which
//! the embedded broker checks too.
//!
//! An exercise is a closed room: each team reads only its own feed and the
//! exercise's clock, status and monitoring, and answers and posts only as
//! itself; the controller alone may command the exercise and reads
//! everything of it; the engine reads and writes
//! everything of it. Topics start with `/`, and ACL lines match them as
//! written.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use ring::rand::{SecureRandom, SystemRandom};

use crate::domain::{ExerciseId, TeamId};
use crate::mqtt::Password;

/// PBKDF2 rounds of a new hash: `mosquitto_passwd`'s default. The
/// passwords are 192 random bits, so more rounds would add nothing.
pub const PBKDF2_ITERATIONS: u32 = 101;
/// Random bytes of a generated password (32 characters).
const PASSWORD_BYTES: usize = 24;
/// Salt bytes of a new hash, as Mosquitto uses.
const SALT_BYTES: usize = 12;

/// Why the files cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum AclError {
    #[error("{what} {id:?} cannot be part of an MQTT user name: it contains {c:?}")]
    UnsafeName {
        what: &'static str,
        id: String,
        c: char,
    },
    #[error("user name {0:?} is given twice (the engine user must differ from the others)")]
    Duplicate(String),
    #[error("{} exists already: remove it or pass --force to replace it", .0.display())]
    Exists(PathBuf),
    #[error("cannot write {}: {reason}", .path.display())]
    Write { path: PathBuf, reason: String },
    #[error("line {line} of {}: {reason}", .path.display())]
    PasswordFile {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("no random numbers from the system")]
    Random,
}

/// What a broker user is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    Team(TeamId),
    Controller,
    Engine,
}

/// One user of the exercise's broker.
#[derive(Debug, Clone)]
pub struct BrokerUser {
    pub role: Role,
    pub username: String,
    pub password: Password,
}

/// Every user of one exercise, with fresh passwords.
#[derive(Debug, Clone)]
pub struct AccessPlan {
    pub exercise: ExerciseId,
    /// The teams in scenario order, then the controller, then the engine.
    pub users: Vec<BrokerUser>,
}

/// The users of `exercise`: `<exercise>-<team>` per team,
/// `<exercise>-controller` and the engine user (default
/// `<exercise>-engine`), each with a new random password.
pub fn plan(
    exercise: &ExerciseId,
    teams: &[TeamId],
    engine_user: Option<&str>,
) -> Result<AccessPlan, AclError> {
    name_safe("exercise id", exercise.as_str())?;
    let mut users = Vec::new();
    for team in teams {
        name_safe("team id", team.as_str())?;
        users.push((Role::Team(team.clone()), format!("{exercise}-{team}")));
    }
    users.push((Role::Controller, format!("{exercise}-controller")));
    let engine = engine_user.map_or_else(|| format!("{exercise}-engine"), str::to_owned);
    name_safe("engine user", &engine)?;
    users.push((Role::Engine, engine));
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for (role, username) in users {
        if !seen.insert(username.clone()) {
            return Err(AclError::Duplicate(username));
        }
        out.push(BrokerUser {
            role,
            username,
            password: random_password()?,
        });
    }
    Ok(AccessPlan {
        exercise: exercise.clone(),
        users: out,
    })
}

impl AccessPlan {
    /// The Mosquitto `acl_file`: one `user` block per user.
    pub fn acl_file(&self) -> String {
        let ex = format!("/exercise/{}", self.exercise);
        let mut out = format!(
            "# Mosquitto acl_file for exercise {}, written by scip-orchestrator broker-acl\n",
            self.exercise
        );
        for user in &self.users {
            let _ = writeln!(out, "\n# {}\nuser {}", user.role.describe(), user.username);
            let lines: Vec<(&str, String)> = match &user.role {
                Role::Team(team) => vec![
                    ("read", format!("{ex}/team/{team}/feed")),
                    ("read", format!("{ex}/timer")),
                    ("read", format!("{ex}/status")),
                    ("read", format!("{ex}/monitoring")),
                    ("write", format!("{ex}/team/{team}/responses")),
                    ("write", format!("{ex}/team/{team}/posts")),
                ],
                Role::Controller => vec![
                    ("readwrite", format!("{ex}/control")),
                    ("read", format!("{ex}/timer")),
                    ("read", format!("{ex}/status")),
                    ("read", format!("{ex}/monitoring")),
                    ("read", format!("{ex}/team/+/feed")),
                    ("read", format!("{ex}/responses")),
                ],
                Role::Engine => vec![("readwrite", format!("{ex}/#"))],
            };
            for (access, topic) in lines {
                let _ = writeln!(out, "topic {access} {topic}");
            }
        }
        out
    }

    /// The Mosquitto `password_file`: `user:$7$...` per user.
    pub fn password_file(&self) -> Result<String, AclError> {
        let mut out = String::new();
        for user in &self.users {
            let hash = hash_password(user.password.expose())?;
            let _ = writeln!(out, "{}:{hash}", user.username);
        }
        Ok(out)
    }

    /// The passwords in clear, for handing out: `role user password` per line.
    pub fn credentials_file(&self) -> String {
        let mut out = format!(
            "# MQTT logins for exercise {}: keep this file secret, give each team only its line\n# role user password\n",
            self.exercise
        );
        for user in &self.users {
            let role = match &user.role {
                Role::Team(team) => format!("team:{team}"),
                Role::Controller => "controller".into(),
                Role::Engine => "engine".into(),
            };
            let _ = writeln!(out, "{role} {} {}", user.username, user.password.expose());
        }
        out
    }

    pub fn engine(&self) -> &BrokerUser {
        self.users
            .iter()
            .find(|u| u.role == Role::Engine)
            .expect("a plan has an engine user")
    }

    /// Writes `<exercise>.acl`, `<exercise>.passwd`, `<exercise>.credentials`
    /// (mode 0600) and `<exercise>.engine-password` (0600, for
    /// MQTT_PASSWORD_FILE) into `dir`. Existing files are replaced only with
    /// `force`.
    pub fn write(&self, dir: &Path, force: bool) -> Result<WrittenFiles, AclError> {
        let files = WrittenFiles {
            acl: dir.join(format!("{}.acl", self.exercise)),
            passwd: dir.join(format!("{}.passwd", self.exercise)),
            credentials: dir.join(format!("{}.credentials", self.exercise)),
            engine_password: dir.join(format!("{}.engine-password", self.exercise)),
        };
        if !force {
            for path in files.all() {
                if path.exists() {
                    return Err(AclError::Exists(path.to_owned()));
                }
            }
        }
        std::fs::create_dir_all(dir).map_err(|e| AclError::Write {
            path: dir.to_owned(),
            reason: e.to_string(),
        })?;
        // The broker may run as another user: its files are group-readable.
        write_file(&files.acl, &self.acl_file(), 0o640)?;
        write_file(&files.passwd, &self.password_file()?, 0o640)?;
        write_file(&files.credentials, &self.credentials_file(), 0o600)?;
        write_file(
            &files.engine_password,
            &format!("{}\n", self.engine().password.expose()),
            0o600,
        )?;
        Ok(files)
    }
}

impl Role {
    fn describe(&self) -> String {
        match self {
            Role::Team(team) => format!(
                "team {team}: its own feed, the clock, status and monitoring; answers and posts as itself"
            ),
            Role::Controller => {
                "controller: commands on control; reads control, clock, status, monitoring, every feed and the responses".into()
            }
            Role::Engine => "engine: reads and writes everything of the exercise".into(),
        }
    }
}

/// Where `AccessPlan::write` put the files.
#[derive(Debug, Clone)]
pub struct WrittenFiles {
    pub acl: PathBuf,
    pub passwd: PathBuf,
    pub credentials: PathBuf,
    pub engine_password: PathBuf,
}

impl WrittenFiles {
    fn all(&self) -> [&Path; 4] {
        [
            &self.acl,
            &self.passwd,
            &self.credentials,
            &self.engine_password,
        ]
    }
}

/// What `broker-acl` prints: the files and who may do what.
pub fn summary(plan: &AccessPlan, files: &WrittenFiles) -> String {
    let mut out = format!(
        "Broker access for exercise {}: {} users\n",
        plan.exercise,
        plan.users.len()
    );
    for user in &plan.users {
        let _ = writeln!(out, "  {:<28} {}", user.username, user.role.describe());
    }
    out.push('\n');
    for (path, what) in [
        (&files.passwd, "Mosquitto password_file ($7$ PBKDF2-SHA512)"),
        (&files.acl, "Mosquitto acl_file"),
        (
            &files.credentials,
            "every password in clear (mode 0600): hand each team only its line",
        ),
        (
            &files.engine_password,
            "the engine's password (mode 0600), for MQTT_PASSWORD_FILE",
        ),
    ] {
        let _ = writeln!(out, "  {:<40} {what}", path.display().to_string());
    }
    out.push('\n');
    let _ = writeln!(
        out,
        "Mosquitto: password_file {}, acl_file {}, allow_anonymous false\n           (both readable by the broker's user: chgrp mosquitto)\nEngine:    MQTT_USERNAME={} MQTT_PASSWORD_FILE={}",
        files.passwd.display(),
        files.acl.display(),
        plan.engine().username,
        files.engine_password.display()
    );
    out
}

/// A new password: 24 random bytes, URL-safe base64 (32 characters).
pub fn random_password() -> Result<Password, AclError> {
    let mut bytes = [0u8; PASSWORD_BYTES];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| AclError::Random)?;
    Ok(Password::new(URL_SAFE_NO_PAD.encode(bytes)))
}

/// `$7$101$<salt>$<hash>`: PBKDF2-HMAC-SHA512 over a random 12-byte salt,
/// as `mosquitto_passwd` writes it.
pub fn hash_password(password: &str) -> Result<String, AclError> {
    let mut salt = [0u8; SALT_BYTES];
    SystemRandom::new()
        .fill(&mut salt)
        .map_err(|_| AclError::Random)?;
    Ok(hash_with(password, &salt, PBKDF2_ITERATIONS))
}

fn hash_with(password: &str, salt: &[u8], iterations: u32) -> String {
    let rounds = NonZeroU32::new(iterations).unwrap_or(NonZeroU32::MIN);
    let mut hash = [0u8; 64];
    ring::pbkdf2::derive(
        ring::pbkdf2::PBKDF2_HMAC_SHA512,
        rounds,
        salt,
        password.as_bytes(),
        &mut hash,
    );
    format!(
        "$7${iterations}${}${}",
        STANDARD.encode(salt),
        STANDARD.encode(hash)
    )
}

/// Whether `password` matches a Mosquitto hash: `$7$` (PBKDF2-SHA512) or
/// `$6$` (one round of SHA-512 over password and salt).
pub fn verify_password(hash: &str, password: &str) -> bool {
    let decode = |s: &str| {
        STANDARD
            .decode(s)
            .or_else(|_| STANDARD_NO_PAD.decode(s))
            .ok()
    };
    let parts: Vec<&str> = hash.split('$').collect();
    match parts.as_slice() {
        ["", "7", iterations, salt, expected] => {
            let (Ok(iterations), Some(salt), Some(expected)) =
                (iterations.parse::<u32>(), decode(salt), decode(expected))
            else {
                return false;
            };
            let Some(rounds) = NonZeroU32::new(iterations) else {
                return false;
            };
            ring::pbkdf2::verify(
                ring::pbkdf2::PBKDF2_HMAC_SHA512,
                rounds,
                &salt,
                password.as_bytes(),
                &expected,
            )
            .is_ok()
        }
        ["", "6", salt, expected] => {
            let (Some(salt), Some(expected)) = (decode(salt), decode(expected)) else {
                return false;
            };
            let mut ctx = ring::digest::Context::new(&ring::digest::SHA512);
            ctx.update(password.as_bytes());
            ctx.update(&salt);
            let actual = ctx.finish();
            same_secret(actual.as_ref(), &expected)
        }
        _ => false,
    }
}

/// Compares two secrets in constant time: both are hashed to SHA-256 first,
/// so neither their contents nor their lengths change how long it takes,
/// and the digests are compared with `subtle` (which the optimiser cannot
/// turn into an early exit, as it may a hand-written fold).
pub fn same_secret(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq as _;
    let a = ring::digest::digest(&ring::digest::SHA256, a);
    let b = ring::digest::digest(&ring::digest::SHA256, b);
    a.as_ref().ct_eq(b.as_ref()).into()
}

/// The users and hashes of a Mosquitto password file. Blank lines and `#`
/// comments are skipped; a line without `user:hash`, or with a hash in a
/// format other than `$6$`/`$7$`, is an error naming it.
pub fn read_password_file(path: &Path) -> Result<HashMap<String, String>, AclError> {
    let text = std::fs::read_to_string(path).map_err(|e| AclError::PasswordFile {
        path: path.to_owned(),
        line: 0,
        reason: e.to_string(),
    })?;
    let mut users = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |reason: &str| AclError::PasswordFile {
            path: path.to_owned(),
            line: i + 1,
            reason: reason.to_owned(),
        };
        let Some((user, hash)) = line.rsplit_once(':') else {
            return Err(bad("expected user:hash"));
        };
        if !(hash.starts_with("$7$") || hash.starts_with("$6$")) {
            return Err(bad(
                "the hash is neither $7$ (PBKDF2-SHA512) nor $6$ (SHA-512)",
            ));
        }
        users.insert(user.to_owned(), hash.to_owned());
    }
    Ok(users)
}

/// User names go into `user` lines of the ACL and `user:` of the password
/// file: no whitespace, `:` or control characters.
fn name_safe(what: &'static str, id: &str) -> Result<(), AclError> {
    match id
        .chars()
        .find(|&c| c == ':' || c.is_whitespace() || c.is_control())
    {
        Some(c) => Err(AclError::UnsafeName {
            what,
            id: id.to_owned(),
            c,
        }),
        None if id.is_empty() => Err(AclError::UnsafeName {
            what,
            id: String::new(),
            c: ' ',
        }),
        None => Ok(()),
    }
}

fn write_file(path: &Path, text: &str, mode: u32) -> Result<(), AclError> {
    let error = |e: std::io::Error| AclError::Write {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        options.mode(mode);
        // A file that existed keeps its mode unless set again.
        if path.exists() {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(error)?;
        }
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(path).map_err(error)?;
    file.write_all(text.as_bytes()).map_err(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_what_mosquitto_passwd_wrote() {
        // `mosquitto_passwd -b pw alice secret` with Mosquitto 2.0.11.
        let hash = "$7$101$A2QT0rr/aLAy7OVO$rM3n3oB7adGe8fKzuKv4RuqDxoEx5NE8v5HHrKJBXlfS1hI4VXnyiEDpINUvqpUC1pkRzreTnKZqrOjFu+F8DA==";
        assert!(verify_password(hash, "secret"));
        assert!(!verify_password(hash, "Secret"));
        let salt = STANDARD.decode("A2QT0rr/aLAy7OVO").unwrap();
        assert_eq!(hash_with("secret", &salt, 101), hash);
    }

    #[test]
    fn secrets_match_only_when_equal() {
        assert!(same_secret(b"", b""));
        assert!(same_secret(b"s3cret", b"s3cret"));
        for other in [
            &b""[..],
            b"s3cre",
            b"s3cret ",
            b"S3cret",
            b"s3cres",
            b"s3cret\0",
        ] {
            assert!(!same_secret(b"s3cret", other), "{other:?}");
            assert!(!same_secret(other, b"s3cret"), "{other:?}");
        }
    }

    #[test]
    fn new_hashes_verify() {
        let hash = hash_password("pw").unwrap();
        assert!(hash.starts_with("$7$101$"));
        assert!(verify_password(&hash, "pw"));
        assert!(!verify_password(&hash, "pw "));
        assert!(!verify_password("$7$x$y$z", "pw"));
    }

    #[test]
    fn acl_gives_each_role_its_topics() {
        let ex = ExerciseId::parse("ex-1").unwrap();
        let teams = [
            TeamId::parse("blue").unwrap(),
            TeamId::parse("red").unwrap(),
        ];
        let plan = plan(&ex, &teams, None).unwrap();
        let names: Vec<&str> = plan.users.iter().map(|u| u.username.as_str()).collect();
        assert_eq!(
            names,
            ["ex-1-blue", "ex-1-red", "ex-1-controller", "ex-1-engine"]
        );
        let acl = plan.acl_file();
        let blue = acl.split("user ex-1-blue\n").nth(1).unwrap();
        let blue = blue.split("\n\n").next().unwrap();
        assert_eq!(
            blue,
            "topic read /exercise/ex-1/team/blue/feed\ntopic read /exercise/ex-1/timer\ntopic read /exercise/ex-1/status\ntopic read /exercise/ex-1/monitoring\ntopic write /exercise/ex-1/team/blue/responses\ntopic write /exercise/ex-1/team/blue/posts"
        );
        assert!(acl.contains("user ex-1-engine\ntopic readwrite /exercise/ex-1/#\n"));
        assert!(acl.contains("topic readwrite /exercise/ex-1/control\n"));
        let passwords: std::collections::HashSet<&str> =
            plan.users.iter().map(|u| u.password.expose()).collect();
        assert_eq!(passwords.len(), 4);
        assert!(passwords.iter().all(|p| p.len() == 32));
    }

    #[test]
    fn refuses_names_mosquitto_files_cannot_hold() {
        let ex = ExerciseId::parse("ex 1").unwrap();
        assert!(matches!(
            plan(&ex, &[], None),
            Err(AclError::UnsafeName { c: ' ', .. })
        ));
        let ex = ExerciseId::parse("ex").unwrap();
        let team = TeamId::parse("a:b").unwrap();
        assert!(matches!(
            plan(&ex, &[team], None),
            Err(AclError::UnsafeName { c: ':', .. })
        ));
        let team = TeamId::parse("controller").unwrap();
        assert!(matches!(
            plan(&ex, &[team], None),
            Err(AclError::Duplicate(_))
        ));
    }
}
