//! API tokens and their roles (observer < evaluator < controller < admin), kept only as
//! SHA-256 hashes: configured at start (`API_TOKENS=role:hash,...`) or
//! issued by an admin (stored). Which route needs which role is the HTTP
//! layer's (`http::auth`).

use std::collections::HashMap;
use std::fmt;
use std::sync::RwLock;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::digest;
use ring::rand::{SecureRandom, SystemRandom};

/// What a token may do; each role may also do what the ones below it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Read everything.
    Observer,
    /// Read everything, and score teams (two-way play).
    Evaluator,
    /// Run exercises: create, control, edit, delete, import.
    Controller,
    /// Issue and revoke tokens.
    Admin,
}

impl Role {
    pub const ALL: [Role; 4] = [
        Role::Observer,
        Role::Evaluator,
        Role::Controller,
        Role::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Observer => "observer",
            Role::Evaluator => "evaluator",
            Role::Controller => "controller",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A new random token: `scip_` and 32 random bytes, base64url.
pub fn generate() -> String {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system's random source works");
    format!("scip_{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// The SHA-256 of a token, lowercase hex: how tokens are kept.
pub fn hash(token: &str) -> String {
    digest::digest(&digest::SHA256, token.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// One known token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenEntry {
    pub id: String,
    pub name: Option<String>,
    pub role: Role,
    /// Configured at start (API_TOKENS) rather than issued.
    pub configured: bool,
    pub created_wall_ms: i64,
}

/// The tokens the service accepts, by hash.
#[derive(Debug, Default)]
pub struct Tokens {
    by_hash: RwLock<HashMap<String, TokenEntry>>,
    /// Counts revocations, so open event streams can end when theirs goes.
    revocations: tokio::sync::watch::Sender<u64>,
}

impl Tokens {
    pub fn add(&self, hash: String, entry: TokenEntry) {
        self.by_hash.write().expect("tokens").insert(hash, entry);
    }

    /// How many revocations so far: a reader of the stored tokens compares
    /// it before and after, so a revocation meanwhile is not undone.
    pub fn revision(&self) -> u64 {
        *self.revocations.borrow()
    }

    /// Forgets the token `id`; false when there is none.
    pub fn remove(&self, id: &str) -> bool {
        let mut tokens = self.by_hash.write().expect("tokens");
        let before = tokens.len();
        tokens.retain(|_, e| e.id != id);
        let removed = tokens.len() != before;
        drop(tokens);
        if removed {
            self.revocations.send_modify(|n| *n += 1);
        }
        removed
    }

    /// Resolves once the token `id` is revoked (at once if it is gone).
    pub async fn revoked(&self, id: &str) {
        let mut changes = self.revocations.subscribe();
        while self.get(id).is_some() {
            if changes.changed().await.is_err() {
                return;
            }
        }
    }

    pub fn find(&self, token: &str) -> Option<TokenEntry> {
        self.by_hash
            .read()
            .expect("tokens")
            .get(&hash(token))
            .cloned()
    }

    pub fn get(&self, id: &str) -> Option<TokenEntry> {
        self.by_hash
            .read()
            .expect("tokens")
            .values()
            .find(|e| e.id == id)
            .cloned()
    }

    pub fn list(&self) -> Vec<TokenEntry> {
        let mut all: Vec<TokenEntry> = self
            .by_hash
            .read()
            .expect("tokens")
            .values()
            .cloned()
            .collect();
        all.sort_by(|a, b| (a.created_wall_ms, &a.id).cmp(&(b.created_wall_ms, &b.id)));
        all
    }

    pub fn is_empty(&self) -> bool {
        self.by_hash.read().expect("tokens").is_empty()
    }
}

/// A configured token: `role:sha256hex`.
pub fn parse_configured(raw: &str) -> Result<(Role, String), String> {
    let (role, hash) = raw.trim().split_once(':').ok_or_else(|| {
        format!(
            "{raw:?}: expected role:sha256-hex (hash a token with `scip-orchestrator hash-token`)"
        )
    })?;
    let role = Role::parse(role).ok_or_else(|| {
        format!("{raw:?}: role {role:?} is not observer, evaluator, controller or admin")
    })?;
    let hash = hash.to_ascii_lowercase();
    if hash.len() != 64 || !hash.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!(
            "{raw:?}: the hash must be 64 hex digits (SHA-256), not a token in clear"
        ));
    }
    Ok((role, hash))
}
