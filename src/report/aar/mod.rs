//! The after-action report of one run of an exercise: every delivery with its
//! planned and actual times, a summary per team and overall, and the control
//! log; as JSON, as CSV (deliveries and control log, one table each) and as a
//! self-contained HTML page with a chart per team.
//!
//! [`of_run`] asks the service for what a run left ([`ReportSource`]) and
//! makes its [`Input`] (`source`); the rest are pure functions that read no
//! clock and do no I/O: [`build`] turns the input into an
//! [`AfterActionReport`] (`model`); [`deliveries_csv`] and
//! [`control_log_csv`] (`csv`) and [`html`] (`html`, each team's chart drawn
//! by `chart`) render it.
//!
//! [`ReportSource`]: crate::runtime::service::ReportSource

mod chart;
mod csv;
#[cfg(test)]
mod fixtures;
mod html;
mod model;
mod play;
mod play_html;
mod source;

pub use chart::{Chart, tick_step};
pub use csv::{
    CONTROL_COLUMNS, DELIVERY_COLUMNS, control_log_csv, csv_field, deliveries_csv, spreadsheet_text,
};
pub use html::html;
pub use model::{
    AfterActionReport, Delivery, FIRST_RUN, Input, PERCENTILE, ReportControlEntry, ReportDelivery,
    ReportExercise, ReportSpread, ReportStats, ReportSummary, ReportTeam, ReportTeamStats, build,
    control_runs, exercise_time, percentile, planned,
};
pub use source::{from_row, from_view, input, of_run, scenario_parts};
