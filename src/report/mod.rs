//! What a run leaves behind, rendered: the after-action report of `serve`
//! (`aar`: its model built from the delivery records and the control log,
//! with summaries; as JSON, as CSV and as an HTML page with an SVG chart per
//! team) and the report of `run` (`run`: the `--report` JSON and the
//! per-team summary for the terminal).
//!
//! It sits above runtime: it reads what runtime gathers (`ReportSource`,
//! `Outcome`); runtime never imports it.

pub mod aar;
pub mod run;
