//! Who may do what: API tokens and their roles, the signed links of team
//! dashboards (and their media), and the rate limit on control commands.
//! Below the HTTP layer and the runtime, which both ask it; it asks
//! nobody.

pub mod links;
pub mod ratelimit;
pub mod tokens;
