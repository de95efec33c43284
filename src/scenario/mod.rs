//! Scenarios (SPEC section 1): the validated in-memory form the engine runs,
//! and everything that reads, checks, writes and shows it.
//!
//! - `model`: [`Scenario`], its teams, timelines, injects and turns, and the
//!   [`ValidationError`] every check reports.
//! - `files`: scenario and timeline files on disk ([`load`], [`load_package`]).
//! - `inline`: the same as one JSON value, the API's create body
//!   ([`load_inline`], [`to_inline`]); `catalog` finds its timelines.
//! - `validation`, `timeline`, `timing` and `fields`: the checks both loaders
//!   share, for the scenario object and its teams, a timeline and its
//!   injects, the duration and turns, and single fields.
//! - `summary`: the one-screen summary `validate` and `import` print.
//! - `plan`: the engine's [`Plan`](crate::core::Plan) of a scenario.
//! - [`play`]: two-way play: responses, expectations, conditions, channels
//!   and objectives, and their checks.
//! - [`package`]: scenario packages (a folder or `.tar.gz` with its timelines
//!   and media) imported into and exported from MEDIA_STORAGE_PATH.
//! - [`media`]: which files of a package are media, and references to them.
//! - [`msel`]: spreadsheet MSELs (`.xlsx`, `.csv`, one row per inject)
//!   imported as a scenario package, and any scenario exported as `.xlsx`.
//!
//! [`load`] never stops at the first problem: it reads the scenario and every
//! timeline it names and reports every error it finds, each naming the file, the
//! place in it (team, inject, or line and column) and the reason.
//!
//! [`load_inline`] does the same for a scenario uploaded as one JSON value, with
//! its timelines inside it, and [`to_inline`] turns a scenario back into such a
//! value. Both loaders share every check; only where the timelines come from
//! differs.

mod catalog;
mod fields;
mod files;
#[cfg(test)]
mod fixtures;
mod inline;
pub mod media;
mod model;
pub mod msel;
pub mod package;
mod plan;
pub mod play;
#[cfg(test)]
mod play_tests;
mod summary;
mod timeline;
mod timing;
mod validation;

pub use fields::format_start_time;
pub use files::{MAX_JSON_VALUES, load, load_package};
pub use inline::{UPLOAD, load_inline, to_inline};
pub use model::{
    Inject, MAX_TURNS, Scenario, Team, Timeline, Turns, ValidationError, inject_from_value,
    inject_value,
};
pub use summary::summary;
