//! Who may use which route: every route needs a role, except the probes,
//! the OpenAPI document and the pages; a team dashboard's stream and
//! receipts need that team's signed link instead (see `access::links`), and
//! an exercise's media a role or a media token from the team stream. The
//! middleware `require` that every route passes.

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::access::tokens::{Role, TokenEntry, Tokens};

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Open,
    /// A team's signed dashboard link, checked by the handler.
    TeamLink,
    Role(Role),
    /// An exercise's media: a token of any role, checked here when one is
    /// sent, else a media token from the team stream, checked by the
    /// handler (which refuses a request with neither).
    Media,
}

/// The access a request to the route `path` (as routed, with `{params}`) by
/// `method` needs.
pub fn required(method: &Method, path: &str) -> Access {
    if path.ends_with("/teams/{team}/events")
        || path.ends_with("/teams/{team}/receipts")
        || path.ends_with("/teams/{team}/responses")
        || path.ends_with("/teams/{team}/posts")
    {
        return Access::TeamLink;
    }
    if path == "/exercises/{id}/media/{*path}" {
        return Access::Media;
    }
    if path.starts_with("/api/v1/tokens") {
        return Access::Role(Role::Admin);
    }
    if path == "/api/v1/exercises/{id}/scores" && method == Method::POST {
        return Access::Role(Role::Evaluator);
    }
    if path.starts_with("/api/v1/") {
        return Access::Role(if method == Method::GET || method == Method::HEAD {
            Role::Observer
        } else {
            Role::Controller
        });
    }
    if path == "/metrics" {
        return Access::Role(Role::Observer);
    }
    Access::Open
}

/// Whether the route `path` (as routed) takes its API token as
/// `?access_token=`: only what a browser fetches without a way to set a
/// header, the control room's event stream (`EventSource`) and an
/// exercise's media (`<img>`, `<video>`). Everywhere else a token in the
/// address is refused: it would stay in the browser's history and in the
/// logs of every proxy on the way.
pub fn takes_query_token(path: &str) -> bool {
    path == "/api/v1/exercises/{id}/events" || path == "/exercises/{id}/media/{*path}"
}

/// What the caller should do instead of `?access_token=` on a route that
/// does not take it.
pub const NO_QUERY_TOKEN: &str = "this route does not take ?access_token= (a token in an address \
    stays in browser history and server logs): send it as Authorization: Bearer <token>; only \
    the control room's event stream and an exercise's media take ?access_token=";

/// The `?access_token=` of a request, decoded.
fn query_token(request: &Request) -> Option<String> {
    request.uri().query().and_then(|q| {
        q.split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(k, _)| *k == "access_token")
            .map(|(_, v)| {
                percent_encoding::percent_decode_str(v)
                    .decode_utf8_lossy()
                    .into_owned()
            })
    })
}

/// The bearer token of a request: `Authorization: Bearer ...`, or
/// `?access_token=` on a route that takes it (see [`takes_query_token`]).
pub fn bearer(request: &Request, path: &str) -> Option<String> {
    if let Some(value) = request.headers().get(axum::http::header::AUTHORIZATION) {
        let value = value.to_str().ok()?;
        let (scheme, token) = value.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim().to_owned());
    }
    takes_query_token(path)
        .then(|| query_token(request))
        .flatten()
}

/// Why a request was not let through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// No token, or one the service does not know.
    Unauthenticated(&'static str),
    /// A token whose role is below the route's.
    Forbidden { have: Role, need: Role },
}

/// Checks `token` against what the route needs; the token's entry when it
/// is let through with one.
pub fn check(
    tokens: &Tokens,
    access: Access,
    token: Option<&str>,
) -> Result<Option<TokenEntry>, Denied> {
    let need = match (access, token) {
        (Access::Role(need), _) => need,
        (Access::Media, Some(_)) => Role::Observer,
        _ => return Ok(None),
    };
    let token = token.ok_or(Denied::Unauthenticated(
        "this needs an API token: Authorization: Bearer <token>",
    ))?;
    let entry = tokens
        .find(token)
        .ok_or(Denied::Unauthenticated("unknown or revoked API token"))?;
    if entry.role < need {
        return Err(Denied::Forbidden {
            have: entry.role,
            need,
        });
    }
    Ok(Some(entry))
}

/// The middleware every route passes: refuses `?access_token=` where the
/// route does not take it (400, saying what to send instead); lets a
/// request through when its token has the role the route needs; answers
/// 401 or 403 otherwise.
pub async fn require(
    State(service): State<crate::runtime::service::Service>,
    mut request: Request,
    next: Next,
) -> Response {
    let path = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| request.uri().path().to_owned());
    if !takes_query_token(&path) && query_token(&request).is_some() {
        return crate::http::ApiError::token_in_query(NO_QUERY_TOKEN).into_response();
    }
    let access = required(request.method(), &path);
    match check(service.tokens(), access, bearer(&request, &path).as_deref()) {
        Ok(entry) => {
            // For handlers that outlive the request, as event streams do.
            if let Some(entry) = entry {
                request.extensions_mut().insert(entry);
            }
            next.run(request).await
        }
        Err(denied) => crate::http::denied(denied).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::tokens::{generate, hash, parse_configured};

    #[test]
    fn routes_need_the_role_that_fits() {
        let check = |method: Method, path: &str, want: Access| {
            assert_eq!(required(&method, path), want, "{method} {path}");
        };
        use Access::*;
        check(
            Method::GET,
            "/api/v1/exercises",
            Role(super::Role::Observer),
        );
        check(
            Method::GET,
            "/api/v1/exercises/{id}/events",
            Role(super::Role::Observer),
        );
        check(
            Method::POST,
            "/api/v1/exercises",
            Role(super::Role::Controller),
        );
        check(
            Method::POST,
            "/api/v1/exercises/{id}/{command}",
            Role(super::Role::Controller),
        );
        check(
            Method::DELETE,
            "/api/v1/exercises/{id}",
            Role(super::Role::Controller),
        );
        check(Method::GET, "/api/v1/tokens", Role(super::Role::Admin));
        check(Method::POST, "/api/v1/tokens", Role(super::Role::Admin));
        check(
            Method::GET,
            "/api/v1/exercises/{id}/teams/{team}/events",
            TeamLink,
        );
        check(
            Method::POST,
            "/api/v1/exercises/{id}/teams/{team}/receipts",
            TeamLink,
        );
        check(
            Method::POST,
            "/api/v1/exercises/{id}/teams/{team}/responses",
            TeamLink,
        );
        check(
            Method::POST,
            "/api/v1/exercises/{id}/teams/{team}/posts",
            TeamLink,
        );
        check(
            Method::POST,
            "/api/v1/exercises/{id}/decisions",
            Role(super::Role::Controller),
        );
        check(
            Method::GET,
            "/api/v1/exercises/{id}/responses",
            Role(super::Role::Observer),
        );
        check(
            Method::POST,
            "/api/v1/exercises/{id}/scores",
            Role(super::Role::Evaluator),
        );
        check(Method::GET, "/metrics", Role(super::Role::Observer));
        check(Method::GET, "/exercises/{id}/media/{*path}", Media);
        for open in [
            "/healthz",
            "/readyz",
            "/api/openapi.json",
            "/",
            "/assets/{name}",
        ] {
            check(Method::GET, open, Open);
        }
    }

    #[test]
    fn only_what_a_browser_cannot_send_a_header_for_takes_a_token_in_its_address() {
        for (path, takes) in [
            ("/api/v1/exercises/{id}/events", true),
            ("/exercises/{id}/media/{*path}", true),
            ("/api/v1/exercises/{id}/teams/{team}/events", false),
            ("/api/v1/exercises/{id}/report.html", false),
            ("/api/v1/exercises/{id}/report.csv", false),
            ("/api/v1/exercises", false),
            ("/metrics", false),
        ] {
            assert_eq!(takes_query_token(path), takes, "{path}");
        }
    }

    #[test]
    fn tokens_are_kept_hashed_and_roles_rank() {
        let tokens = Tokens::default();
        let token = generate();
        assert!(token.starts_with("scip_") && token.len() > 40);
        tokens.add(
            hash(&token),
            TokenEntry {
                id: "t1".into(),
                name: None,
                role: Role::Controller,
                configured: false,
                created_wall_ms: 0,
            },
        );
        let need = |role| Access::Role(role);
        assert!(check(&tokens, need(Role::Observer), Some(&token)).is_ok());
        assert!(check(&tokens, need(Role::Controller), Some(&token)).is_ok());
        assert_eq!(
            check(&tokens, need(Role::Admin), Some(&token)),
            Err(Denied::Forbidden {
                have: Role::Controller,
                need: Role::Admin
            })
        );
        assert!(matches!(
            check(&tokens, need(Role::Observer), None),
            Err(Denied::Unauthenticated(_))
        ));
        assert!(matches!(
            check(&tokens, need(Role::Observer), Some("scip_forged")),
            Err(Denied::Unauthenticated(_))
        ));
        assert_eq!(check(&tokens, Access::Open, None), Ok(None));
        // Media: a token is checked when sent; without one the handler
        // decides (a media token, or 401).
        assert!(
            check(&tokens, Access::Media, Some(&token))
                .unwrap()
                .is_some()
        );
        assert_eq!(check(&tokens, Access::Media, None), Ok(None));
        assert!(matches!(
            check(&tokens, Access::Media, Some("scip_forged")),
            Err(Denied::Unauthenticated(_))
        ));
        assert!(tokens.remove("t1"));
        assert!(check(&tokens, need(Role::Observer), Some(&token)).is_err());
        assert_eq!(
            hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(parse_configured(&format!("admin:{}", hash("x"))).is_ok());
        assert!(parse_configured("admin:scip_cleartext").is_err());
        assert!(parse_configured(&format!("root:{}", hash("x"))).is_err());
    }
}
