//! What access rests on: API tokens (their hashes), the state of each
//! team's dashboard link, and the settings links are signed with.

use super::{Store, StoreError};

/// An API token an admin issued; only its hash is kept.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct TokenRow {
    pub id: String,
    pub name: Option<String>,
    pub role: String,
    pub hash: String,
    pub created_wall_ms: i64,
}

/// A team's dashboard link: its generation, expiry and whether revoked.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct TeamLinkRow {
    pub exercise_id: String,
    pub team_id: String,
    pub generation: i64,
    pub expires_unix: i64,
    pub revoked: bool,
}

impl Store {
    /// The setting `key`, stored as `value` first if it has none yet; the
    /// stored value either way (another node may have set it first).
    pub async fn setting_or_insert(&self, key: &str, value: &str) -> Result<String, StoreError> {
        with_pool!(self, pool => {
            sqlx::query("INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
                .bind(key)
                .bind(value)
                .execute(pool)
                .await
                .map(drop)
        })?;
        let (stored,): (String,) = with_pool!(self, pool => {
            sqlx::query_as("SELECT value FROM settings WHERE key = $1")
                .bind(key)
                .fetch_one(pool)
                .await
        })?;
        Ok(stored)
    }

    pub async fn insert_token(&self, row: &TokenRow) -> Result<(), StoreError> {
        with_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO api_tokens (id, name, role, hash, created_wall_ms) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&row.id)
            .bind(&row.name)
            .bind(&row.role)
            .bind(&row.hash)
            .bind(row.created_wall_ms)
            .execute(pool)
            .await
            .map(drop)
        })?;
        Ok(())
    }

    pub async fn tokens(&self) -> Result<Vec<TokenRow>, StoreError> {
        let rows = with_pool!(self, pool => {
            sqlx::query_as(
                "SELECT id, name, role, hash, created_wall_ms FROM api_tokens ORDER BY created_wall_ms, id",
            )
            .fetch_all(pool)
            .await
        })?;
        Ok(rows)
    }

    /// Deletes token `id`; false when it was not stored.
    pub async fn delete_token(&self, id: &str) -> Result<bool, StoreError> {
        let done = with_pool!(self, pool => {
            sqlx::query("DELETE FROM api_tokens WHERE id = $1")
                .bind(id)
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })?;
        Ok(done > 0)
    }

    /// Writes a team's dashboard link state.
    pub async fn put_team_link(&self, row: &TeamLinkRow) -> Result<(), StoreError> {
        with_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO team_links (exercise_id, team_id, generation, expires_unix, revoked) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (exercise_id, team_id) DO UPDATE SET \
                 generation = excluded.generation, expires_unix = excluded.expires_unix, \
                 revoked = excluded.revoked",
            )
            .bind(&row.exercise_id)
            .bind(&row.team_id)
            .bind(row.generation)
            .bind(row.expires_unix)
            .bind(row.revoked)
            .execute(pool)
            .await
            .map(drop)
        })?;
        Ok(())
    }

    /// The dashboard links of an exercise's teams.
    pub async fn team_links(&self, exercise_id: &str) -> Result<Vec<TeamLinkRow>, StoreError> {
        let rows = with_pool!(self, pool => {
            sqlx::query_as(
                "SELECT exercise_id, team_id, generation, expires_unix, revoked \
                 FROM team_links WHERE exercise_id = $1 ORDER BY team_id",
            )
            .bind(exercise_id)
            .fetch_all(pool)
            .await
        })?;
        Ok(rows)
    }
}
