//! Team dashboard links: each carries a token, signed by the service
//! (HMAC-SHA256), that names one team of one exercise, that exercise's
//! incarnation (a random value drawn at its creation, so a link of a deleted
//! exercise opens nothing in a new one of the same id), the link's generation
//! and when it expires. A dashboard's event stream and receipts need it;
//! re-issuing or revoking a link moves its team to a new generation, which
//! every earlier token fails.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

/// Bytes of a signing secret.
pub const SECRET_BYTES: usize = 32;

/// The service's signing key.
#[derive(Debug)]
pub struct LinkKey(hmac::Key);

/// What a team link token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkClaims {
    pub exercise: String,
    /// Which life of the exercise id: see [`new_incarnation`].
    pub incarnation: String,
    pub team: String,
    pub generation: i64,
    /// Unix seconds.
    pub expires: i64,
}

/// Why a token does not open a dashboard.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("this dashboard needs the token of its link (?token=...)")]
    Missing,
    #[error("the link's token is not valid")]
    Forged,
    #[error("this link is for another exercise or team")]
    OtherTeam,
    #[error(
        "this link is for an exercise that was deleted since: ask the exercise control for a new one"
    )]
    Replaced,
    #[error("this link was revoked: ask the exercise control for a new one")]
    Revoked,
    #[error("this link expired: ask the exercise control for a new one")]
    Expired,
}

impl LinkKey {
    pub fn from_secret(secret: &[u8]) -> Self {
        Self(hmac::Key::new(hmac::HMAC_SHA256, secret))
    }

    /// A fresh random secret.
    pub fn new_secret() -> Vec<u8> {
        let mut secret = vec![0u8; SECRET_BYTES];
        SystemRandom::new()
            .fill(&mut secret)
            .expect("the system's random source works");
        secret
    }

    pub fn sign(&self, claims: &LinkClaims) -> String {
        let payload = format!(
            "v2\n{}\n{}\n{}\n{}\n{}",
            claims.exercise, claims.incarnation, claims.team, claims.generation, claims.expires
        );
        let tag = hmac::sign(&self.0, payload.as_bytes());
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(payload),
            URL_SAFE_NO_PAD.encode(tag.as_ref())
        )
    }

    /// The claims of a token this key signed.
    pub fn read(&self, token: &str) -> Result<LinkClaims, LinkError> {
        let (payload, tag) = token.split_once('.').ok_or(LinkError::Forged)?;
        let payload = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| LinkError::Forged)?;
        let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| LinkError::Forged)?;
        hmac::verify(&self.0, &payload, &tag).map_err(|_| LinkError::Forged)?;
        let text = String::from_utf8(payload).map_err(|_| LinkError::Forged)?;
        let parts: Vec<&str> = text.split('\n').collect();
        match parts.as_slice() {
            ["v2", exercise, incarnation, team, generation, expires] => Ok(LinkClaims {
                exercise: (*exercise).to_owned(),
                incarnation: (*incarnation).to_owned(),
                team: (*team).to_owned(),
                generation: generation.parse().map_err(|_| LinkError::Forged)?,
                expires: expires.parse().map_err(|_| LinkError::Forged)?,
            }),
            _ => Err(LinkError::Forged),
        }
    }

    /// Checks `token` for `team` of incarnation `incarnation` of `exercise`
    /// against the link's current generation, at unix second `now`.
    pub fn check(
        &self,
        token: Option<&str>,
        exercise: &str,
        incarnation: &str,
        team: &str,
        current: &LinkState,
        now: i64,
    ) -> Result<(), LinkError> {
        let claims = self.read(token.ok_or(LinkError::Missing)?)?;
        if claims.exercise != exercise || claims.team != team {
            return Err(LinkError::OtherTeam);
        }
        if claims.incarnation != incarnation {
            return Err(LinkError::Replaced);
        }
        if current.revoked || claims.generation != current.generation {
            return Err(LinkError::Revoked);
        }
        if now >= claims.expires {
            return Err(LinkError::Expired);
        }
        Ok(())
    }
}

/// What a media token says beyond what its URL says (exercise, path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaClaims {
    pub team: String,
    pub generation: i64,
    /// Unix seconds: the link's expiry.
    pub expires: i64,
}

impl LinkKey {
    /// Signs what a node forwarding a request to another says of it: the
    /// client it came from, its method and target (several nodes share this
    /// key through the database).
    pub fn sign_forward(&self, client: &str, method: &str, target: &str) -> String {
        let tag = hmac::sign(&self.0, forward_message(client, method, target).as_bytes());
        URL_SAFE_NO_PAD.encode(tag.as_ref())
    }

    /// Whether `signature` is [`Self::sign_forward`]'s for these values.
    pub fn check_forward(&self, client: &str, method: &str, target: &str, signature: &str) -> bool {
        let Ok(tag) = URL_SAFE_NO_PAD.decode(signature) else {
            return false;
        };
        hmac::verify(
            &self.0,
            forward_message(client, method, target).as_bytes(),
            &tag,
        )
        .is_ok()
    }

    /// A media token: opens the one file `path` (as the media route names
    /// it) of the exercise and incarnation `claims` name, for as long as the
    /// team link `claims` describes opens its dashboard (same generation,
    /// not revoked, not expired). The team stream hands one out for each
    /// media file an inject sent to the team names, so a dashboard fetches
    /// the media of what it was shown, and nothing else.
    pub fn sign_media(&self, claims: &LinkClaims, path: &str) -> String {
        let visible = format!(
            "m1\n{}\n{}\n{}",
            claims.team, claims.generation, claims.expires
        );
        let tag = hmac::sign(&self.0, media_message(claims, path).as_bytes());
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(visible),
            URL_SAFE_NO_PAD.encode(tag.as_ref())
        )
    }

    /// The claims of a media token this key signed for `path` of
    /// `incarnation` of `exercise`; [`LinkError::Forged`] for any other
    /// file, exercise or incarnation.
    pub fn read_media(
        &self,
        token: &str,
        exercise: &str,
        incarnation: &str,
        path: &str,
    ) -> Result<MediaClaims, LinkError> {
        let (visible, tag) = token.split_once('.').ok_or(LinkError::Forged)?;
        let visible = URL_SAFE_NO_PAD
            .decode(visible)
            .map_err(|_| LinkError::Forged)?;
        let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| LinkError::Forged)?;
        let text = String::from_utf8(visible).map_err(|_| LinkError::Forged)?;
        let ["m1", team, generation, expires] = text.split('\n').collect::<Vec<_>>()[..] else {
            return Err(LinkError::Forged);
        };
        let claims = LinkClaims {
            exercise: exercise.to_owned(),
            incarnation: incarnation.to_owned(),
            team: team.to_owned(),
            generation: generation.parse().map_err(|_| LinkError::Forged)?,
            expires: expires.parse().map_err(|_| LinkError::Forged)?,
        };
        hmac::verify(&self.0, media_message(&claims, path).as_bytes(), &tag)
            .map_err(|_| LinkError::Forged)?;
        Ok(MediaClaims {
            team: claims.team,
            generation: claims.generation,
            expires: claims.expires,
        })
    }
}

/// What a media token's tag covers. `m1` keeps it apart from link tokens,
/// whose payloads start with `v2`.
fn media_message(claims: &LinkClaims, path: &str) -> String {
    format!(
        "m1\n{}\n{}\n{}\n{}\n{}\n{path}",
        claims.exercise, claims.incarnation, claims.team, claims.generation, claims.expires
    )
}

/// A fresh incarnation for a new exercise: 16 random bytes, base64url.
/// What a forwarding signature covers; its own prefix, so that no other
/// token of this key can pass for one.
fn forward_message(client: &str, method: &str, target: &str) -> String {
    format!("f1\n{client}\n{method}\n{target}")
}

pub fn new_incarnation() -> String {
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system's random source works");
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A team's link as the service keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkState {
    pub generation: i64,
    /// Unix seconds.
    pub expires: i64,
    pub revoked: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> LinkClaims {
        LinkClaims {
            exercise: "ex-1".into(),
            incarnation: "life-1".into(),
            team: "blue".into(),
            generation: 2,
            expires: 1_000,
        }
    }

    #[test]
    fn a_token_opens_its_own_team_until_revoked_or_expired() {
        let key = LinkKey::from_secret(&LinkKey::new_secret());
        let token = key.sign(&claims());
        assert_eq!(key.read(&token), Ok(claims()));
        let live = LinkState {
            generation: 2,
            expires: 1_000,
            revoked: false,
        };
        let check = |token: Option<&str>, exercise, team, state: &LinkState, now| {
            key.check(token, exercise, "life-1", team, state, now)
        };
        assert_eq!(check(Some(&token), "ex-1", "blue", &live, 999), Ok(()));
        assert_eq!(
            check(None, "ex-1", "blue", &live, 999),
            Err(LinkError::Missing)
        );
        assert_eq!(
            check(Some(&token), "ex-1", "red", &live, 999),
            Err(LinkError::OtherTeam)
        );
        assert_eq!(
            check(Some(&token), "ex-2", "blue", &live, 999),
            Err(LinkError::OtherTeam)
        );
        assert_eq!(
            check(Some(&token), "ex-1", "blue", &live, 1_000),
            Err(LinkError::Expired)
        );
        // The exercise was deleted and created again with the same id: a
        // new incarnation, whose links start again at generation 1.
        let fresh = LinkState {
            generation: 2,
            ..live
        };
        assert_eq!(
            key.check(Some(&token), "ex-1", "life-2", "blue", &fresh, 999),
            Err(LinkError::Replaced)
        );
        assert_ne!(new_incarnation(), new_incarnation());
        assert_eq!(new_incarnation().len(), 22);
        let reissued = LinkState {
            generation: 3,
            ..live
        };
        assert_eq!(
            check(Some(&token), "ex-1", "blue", &reissued, 999),
            Err(LinkError::Revoked)
        );
        let revoked = LinkState {
            revoked: true,
            ..live
        };
        assert_eq!(
            check(Some(&token), "ex-1", "blue", &revoked, 999),
            Err(LinkError::Revoked)
        );
    }

    #[test]
    fn a_media_token_opens_one_file_of_one_exercise() {
        let key = LinkKey::from_secret(&LinkKey::new_secret());
        let token = key.sign_media(&claims(), "four-teams/map.png");
        let read = |token: &str, exercise, incarnation, path| {
            key.read_media(token, exercise, incarnation, path)
        };
        assert_eq!(
            read(&token, "ex-1", "life-1", "four-teams/map.png"),
            Ok(MediaClaims {
                team: "blue".into(),
                generation: 2,
                expires: 1_000
            })
        );
        for (exercise, incarnation, path) in [
            ("ex-1", "life-1", "four-teams/other.png"),
            ("ex-1", "life-1", "scenario.json"),
            ("ex-2", "life-1", "four-teams/map.png"),
            ("ex-1", "life-2", "four-teams/map.png"),
        ] {
            assert_eq!(
                read(&token, exercise, incarnation, path),
                Err(LinkError::Forged),
                "{exercise} {incarnation} {path}"
            );
        }
        // Another team, generation or expiry in the visible part: forged.
        let (_, tag) = token.split_once('.').unwrap();
        for visible in ["m1\nred\n2\n1000", "m1\nblue\n3\n1000", "m1\nblue\n2\n9999"] {
            let forged = format!("{}.{tag}", URL_SAFE_NO_PAD.encode(visible));
            assert_eq!(
                read(&forged, "ex-1", "life-1", "four-teams/map.png"),
                Err(LinkError::Forged),
                "{visible:?}"
            );
        }
        // A team link token is no media token, nor the other way round.
        let link = key.sign(&claims());
        assert_eq!(
            read(&link, "ex-1", "life-1", "four-teams/map.png"),
            Err(LinkError::Forged)
        );
        assert_eq!(key.read(&token), Err(LinkError::Forged));
    }

    #[test]
    fn tampered_and_foreign_tokens_are_refused() {
        let key = LinkKey::from_secret(b"one secret, thirty-two bytes....");
        let other = LinkKey::from_secret(b"another secret, also 32 bytes...");
        let token = key.sign(&claims());
        assert_eq!(other.read(&token), Err(LinkError::Forged));
        // The payload changed (another team), the tag kept.
        let (_, tag) = token.split_once('.').unwrap();
        let forged = format!(
            "{}.{tag}",
            URL_SAFE_NO_PAD.encode("v2\nex-1\nlife-1\nred\n2\n1000")
        );
        assert_eq!(key.read(&forged), Err(LinkError::Forged));
        for junk in [
            "",
            ".",
            "abc",
            "a.b",
            "%%%.###",
            "djE.",
            &token[..token.len() - 2],
        ] {
            assert_eq!(key.read(junk), Err(LinkError::Forged), "{junk:?}");
        }
        // A valid signature over a payload that is not ours, or over a
        // link of the first format, which named no incarnation.
        for payload in ["v3\nex-1\nlife-1\nblue\n2\n1000", "v1\nex-1\nblue\n2\n1000"] {
            let tag = hmac::sign(&key.0, payload.as_bytes());
            let odd = format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(payload),
                URL_SAFE_NO_PAD.encode(tag.as_ref())
            );
            assert_eq!(key.read(&odd), Err(LinkError::Forged), "{payload:?}");
        }
    }
}
