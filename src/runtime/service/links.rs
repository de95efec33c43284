//! Team dashboard links: issued, re-issued, revoked and checked, and the
//! media tokens a link hands out.

use time::OffsetDateTime;
use tracing::info;

use crate::access::links::{LinkClaims, LinkError, LinkKey, LinkState};
use crate::scenario::Scenario;
use crate::store::{Store, TeamLinkRow};

use super::{Handle, LinkWatch, Service, ServiceError, TeamLink, not_found};

impl Service {
    /// Issues `team`'s dashboard link again: a new token, valid for
    /// TEAM_LINK_TTL_HOURS; every earlier one stops working.
    pub async fn reissue_link(&self, id: &str, team: &str) -> Result<TeamLink, ServiceError> {
        self.move_link(id, team, false).await?;
        let info = self.get(id)?;
        info.teams
            .into_iter()
            .find(|t| t.id == team)
            .ok_or_else(|| ServiceError::NotFound(format!("no team {team:?} in exercise {id:?}")))
    }

    /// Revokes `team`'s dashboard link: no token opens it until re-issued.
    pub async fn revoke_link(&self, id: &str, team: &str) -> Result<(), ServiceError> {
        self.move_link(id, team, true).await
    }

    async fn move_link(&self, id: &str, team: &str, revoked: bool) -> Result<(), ServiceError> {
        let (links, index) = {
            let exercises = self.inner.exercises.read().expect("registry");
            let handle = exercises.get(id).ok_or_else(|| self.absent(id))?;
            let index = handle.team_index(id, team)?;
            (handle.links.clone(), index)
        };
        let next = {
            let current = links.borrow()[index];
            LinkState {
                generation: current.generation + 1,
                expires: self.link_expiry(),
                revoked,
            }
        };
        self.inner
            .store
            .put_team_link(&TeamLinkRow {
                exercise_id: id.to_owned(),
                team_id: team.to_owned(),
                generation: next.generation,
                expires_unix: next.expires,
                revoked,
            })
            .await?;
        links.send_modify(|links| links[index] = next);
        info!(
            exercise_id = id,
            team_id = team,
            revoked,
            generation = next.generation,
            "team link moved on"
        );
        Ok(())
    }

    /// The links of a new or restored exercise: the stored ones, and a
    /// fresh one (stored) for every team without.
    pub(super) async fn issue_links(
        &self,
        id: &str,
        scenario: &Scenario,
        stored: Option<&[TeamLinkRow]>,
    ) -> Result<Vec<LinkState>, ServiceError> {
        let mut links = Vec::with_capacity(scenario.teams.len());
        for team in &scenario.teams {
            let found = stored
                .and_then(|rows| rows.iter().find(|r| r.team_id == team.id.as_str()))
                .map(|r| LinkState {
                    generation: r.generation,
                    expires: r.expires_unix,
                    revoked: r.revoked,
                });
            let link = match found {
                Some(link) => link,
                None => {
                    let link = LinkState {
                        generation: 1,
                        expires: self.link_expiry(),
                        revoked: false,
                    };
                    self.inner
                        .store
                        .put_team_link(&TeamLinkRow {
                            exercise_id: id.to_owned(),
                            team_id: team.id.to_string(),
                            generation: link.generation,
                            expires_unix: link.expires,
                            revoked: false,
                        })
                        .await?;
                    link
                }
            };
            links.push(link);
        }
        Ok(links)
    }

    fn link_expiry(&self) -> i64 {
        let ttl = i64::from(self.inner.config.team_link_ttl_hours) * 3600;
        OffsetDateTime::now_utc().unix_timestamp() + ttl
    }

    pub(super) fn dashboard_url(
        &self,
        id: &str,
        incarnation: &str,
        team: &str,
        link: LinkState,
    ) -> String {
        let base = format!(
            "{}/exercises/{}/teams/{}",
            self.inner.public_url,
            path_segment(id),
            path_segment(team)
        );
        if link.revoked {
            return base;
        }
        let token = self.inner.link_key.sign(&LinkClaims {
            exercise: id.to_owned(),
            incarnation: incarnation.to_owned(),
            team: team.to_owned(),
            generation: link.generation,
            expires: link.expires,
        });
        format!("{base}?token={token}")
    }

    pub(super) fn check_link(
        &self,
        handle: &Handle,
        id: &str,
        team: &str,
        index: usize,
        token: Option<&str>,
    ) -> Result<LinkWatch, ServiceError> {
        let current = handle.links.borrow()[index];
        let now = OffsetDateTime::now_utc().unix_timestamp();
        self.inner
            .link_key
            .check(token, id, &handle.incarnation, team, &current, now)
            .map_err(|e| match e {
                LinkError::Missing => ServiceError::Unauthorized(e.to_string()),
                _ => ServiceError::Forbidden(e.to_string()),
            })?;
        Ok(LinkWatch {
            links: handle.links.subscribe(),
            index,
            opened: current,
            claims: LinkClaims {
                exercise: id.to_owned(),
                incarnation: handle.incarnation.clone(),
                team: team.to_owned(),
                generation: current.generation,
                expires: current.expires,
            },
        })
    }

    /// Checks a team link token for `team` of exercise `id`, as its stream,
    /// receipts, answers and posts do; 401 without one, 403 for one that
    /// does not open it. The team's index when it opens it.
    pub fn check_team_link(
        &self,
        id: &str,
        team: &str,
        token: Option<&str>,
    ) -> Result<usize, ServiceError> {
        let exercises = self.inner.exercises.read().expect("registry");
        let handle = exercises.get(id).ok_or_else(|| self.absent(id))?;
        let index = handle.team_index(id, team)?;
        self.check_link(handle, id, team, index, token)?;
        Ok(index)
    }

    /// The URL (path and query) at which the dashboard of the link
    /// `claims` describes fetches media file `path` of its exercise: the
    /// file's route with a media token, valid while the link is.
    pub fn media_url(&self, claims: &LinkClaims, path: &str) -> String {
        let token = self.inner.link_key.sign_media(claims, path);
        let segments: Vec<String> = path.split('/').map(path_segment).collect();
        format!(
            "/exercises/{}/media/{}?media={token}",
            path_segment(&claims.exercise),
            segments.join("/")
        )
    }

    /// Checks a media token for file `path` of exercise `id`: signed for
    /// this file of this incarnation, by a team link that still opens its
    /// dashboard. 404 without the exercise, 403 otherwise.
    pub fn check_media_token(&self, id: &str, path: &str, token: &str) -> Result<(), ServiceError> {
        let exercises = self.inner.exercises.read().expect("registry");
        let handle = exercises.get(id).ok_or_else(|| not_found(id))?;
        let forbidden = |e: LinkError| ServiceError::Forbidden(e.to_string());
        let claims = self
            .inner
            .link_key
            .read_media(token, id, &handle.incarnation, path)
            .map_err(forbidden)?;
        let index = handle.team_index(id, &claims.team)?;
        let current = handle.links.borrow()[index];
        if current.revoked || current.generation != claims.generation {
            return Err(forbidden(LinkError::Revoked));
        }
        if OffsetDateTime::now_utc().unix_timestamp() >= claims.expires {
            return Err(forbidden(LinkError::Expired));
        }
        Ok(())
    }
}

/// The key team links are signed with: the stored secret, or a new one
/// stored now (so links outlive restarts).
pub(super) async fn link_key(store: &Store) -> Result<LinkKey, ServiceError> {
    use base64::Engine as _;
    let fresh = base64::engine::general_purpose::STANDARD.encode(LinkKey::new_secret());
    let stored = store.setting_or_insert("team_link_secret", &fresh).await?;
    let secret = base64::engine::general_purpose::STANDARD
        .decode(stored)
        .map_err(|e| {
            ServiceError::Internal(format!("the stored team link secret is unreadable: {e}"))
        })?;
    Ok(LinkKey::from_secret(&secret))
}

/// An id as one URL path segment: ids may hold spaces, `?` or `%`.
fn path_segment(id: &str) -> String {
    const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(id, SEGMENT).to_string()
}
