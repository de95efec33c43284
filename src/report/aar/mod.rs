//! The after-action report of one run of an exercise: every delivery with its
//! planned and actual times, a summary per team and overall, and the control
//! log; as JSON, as CSV (deliveries and control log, one table each) and as a
//! self-contained HTML page with a chart per team.
//!
//! Pure functions: [`build`] turns store rows and exercise metadata into an
//! [`AfterActionReport`] (`model`); [`deliveries_csv`] and
//! [`control_log_csv`] (`csv`) and [`html`] (`html`, its charts drawn by
//! `chart`) render it. Nothing here reads a clock or does I/O.

mod chart;
mod csv;
#[cfg(test)]
mod fixtures;
mod html;
mod model;

pub use chart::{Chart, tick_step};
pub use csv::{
    CONTROL_COLUMNS, DELIVERY_COLUMNS, control_log_csv, csv_field, deliveries_csv, spreadsheet_text,
};
pub use html::html;
pub use model::{
    AfterActionReport, Delivery, FIRST_RUN, Input, PERCENTILE, ReportControlEntry, ReportDelivery,
    ReportExercise, ReportSpread, ReportStats, ReportSummary, ReportTeam, ReportTeamStats, build,
    control_runs, exercise_time, from_row, from_view, percentile, planned, scenario_parts,
};
