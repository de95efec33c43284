//! The API tokens the service accepts: configured (API_TOKENS) and issued
//! (stored as hashes).

use time::OffsetDateTime;
use tracing::{info, warn};

use crate::config::Config;
use crate::runtime::exercise::wall_ms;
use crate::store::Store;

use super::{Service, ServiceError};

impl Service {
    /// The API tokens the service accepts.
    pub fn tokens(&self) -> &crate::access::tokens::Tokens {
        &self.inner.tokens
    }

    /// Issues a token with `role`; the token in clear is returned once and
    /// never kept (only its hash).
    pub async fn issue_token(
        &self,
        role: crate::access::tokens::Role,
        name: Option<String>,
    ) -> Result<(crate::access::tokens::TokenEntry, String), ServiceError> {
        let token = crate::access::tokens::generate();
        let hash = crate::access::tokens::hash(&token);
        let id = format!("tok-{}", &hash[..12]);
        let created_wall_ms = wall_ms(OffsetDateTime::now_utc());
        self.inner
            .store
            .insert_token(&crate::store::TokenRow {
                id: id.clone(),
                name: name.clone(),
                role: role.as_str().to_owned(),
                hash: hash.clone(),
                created_wall_ms,
            })
            .await?;
        let entry = crate::access::tokens::TokenEntry {
            id,
            name,
            role,
            configured: false,
            created_wall_ms,
        };
        self.inner.tokens.add(hash, entry.clone());
        info!(token_id = %entry.id, role = %role, "API token issued");
        Ok((entry, token))
    }

    /// Revokes an issued token; configured ones are changed in API_TOKENS.
    pub async fn revoke_token(&self, id: &str) -> Result<(), ServiceError> {
        let entry = self
            .inner
            .tokens
            .get(id)
            .ok_or_else(|| ServiceError::NotFound(format!("no token {id:?}")))?;
        if entry.configured {
            return Err(ServiceError::Conflict(format!(
                "token {id} is configured in API_TOKENS: remove it there"
            )));
        }
        self.inner.store.delete_token(id).await?;
        self.inner.tokens.remove(id);
        info!(token_id = id, "API token revoked");
        Ok(())
    }

    /// With no token known at all, issues an admin token and returns it in
    /// clear, to be shown once: a fresh `serve` is never open to anyone.
    pub async fn bootstrap_admin(&self) -> Result<Option<String>, ServiceError> {
        if !self.inner.tokens.is_empty() {
            return Ok(None);
        }
        let (_, token) = self
            .issue_token(
                crate::access::tokens::Role::Admin,
                Some("first admin".into()),
            )
            .await?;
        Ok(Some(token))
    }
}

/// The configured tokens and the issued (stored) ones.
pub(super) async fn load_tokens(
    store: &Store,
    config: &Config,
) -> Result<crate::access::tokens::Tokens, ServiceError> {
    use crate::access::tokens::{TokenEntry, Tokens, parse_configured};
    let tokens = Tokens::default();
    for (n, raw) in config
        .api_tokens
        .iter()
        .filter(|r| !r.trim().is_empty())
        .enumerate()
    {
        let (role, hash) = parse_configured(raw)
            .map_err(|e| ServiceError::Invalid(vec![format!("API_TOKENS: {e}")]))?;
        tokens.add(
            hash,
            TokenEntry {
                id: format!("config-{}", n + 1),
                name: Some("API_TOKENS".into()),
                role,
                configured: true,
                created_wall_ms: 0,
            },
        );
    }
    for row in store.tokens().await? {
        if let Some((hash, entry)) = issued(row) {
            tokens.add(hash, entry);
        }
    }
    Ok(tokens)
}

/// An issued token as stored: its hash and entry; None (logged) for one
/// with a role this version does not know.
pub(super) fn issued(
    row: crate::store::TokenRow,
) -> Option<(String, crate::access::tokens::TokenEntry)> {
    let Some(role) = crate::access::tokens::Role::parse(&row.role) else {
        warn!(token_id = %row.id, role = %row.role, "stored token with an unknown role is ignored");
        return None;
    };
    Some((
        row.hash,
        crate::access::tokens::TokenEntry {
            id: row.id,
            name: row.name,
            role,
            configured: false,
            created_wall_ms: row.created_wall_ms,
        },
    ))
}
