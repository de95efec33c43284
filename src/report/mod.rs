//! What a run leaves behind: the after-action report of `serve` (`aar`:
//! delivery rows, summaries, the control log, as JSON, CSV and HTML with
//! charts) and the report of `run` (`run`: the `--report` JSON and the
//! per-team summary).

pub mod aar;
pub mod run;
