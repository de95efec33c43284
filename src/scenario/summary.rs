//! The one-screen summary of a valid scenario: the exercise, its duration and
//! turns, and per team its timeline, inject count and first and last inject.

use std::fmt::Write as _;
use std::sync::Arc;

use super::model::{Inject, Scenario, Team};
use crate::domain::ExerciseSeconds;

/// A one-screen summary of a valid scenario, for the `validate` command.
pub fn summary(scenario: &Scenario) -> String {
    let exercise_id = scenario
        .exercise_id
        .as_ref()
        .map_or_else(|| "(generated at start)".to_owned(), ToString::to_string);
    let secs = scenario.duration.get();
    let minutes = if secs.is_multiple_of(60) {
        format!("{} min", secs / 60)
    } else {
        let text = format!("{:.2}", f64::from(secs) / 60.0);
        format!("{} min", text.trim_end_matches('0').trim_end_matches('.'))
    };

    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(out, "Exercise:  {exercise_id}");
    if let Some(name) = &scenario.name {
        let _ = writeln!(out, "Name:      {name}");
    }
    let _ = writeln!(out, "Duration:  {} ({minutes})", scenario.duration);
    if let Some(turns) = &scenario.turns {
        let starts: Vec<String> = turns
            .starts
            .iter()
            .map(|&s| ExerciseSeconds::new(s).to_string())
            .collect();
        let _ = writeln!(
            out,
            "Turns:     {} (turn-based; each starts on next_turn, at {})",
            turns.total(),
            starts.join(", ")
        );
    }
    let _ = writeln!(
        out,
        "Teams:     {} ({} deliveries)",
        scenario.teams.len(),
        scenario.delivery_count()
    );
    if let Some(line) = two_way(scenario) {
        let _ = writeln!(out, "Two-way:   {line}");
    }
    let _ = writeln!(out);

    let rows: Vec<[String; 5]> = scenario
        .teams
        .iter()
        .map(|team| team_row(scenario, team))
        .collect();
    let mut widths = [0; 5];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    for [team, timeline, count, first, last] in &rows {
        let [w0, w1, w2, w3, _] = widths;
        let line = format!("  {team:w0$}  {timeline:w1$}  {count:>w2$}  {first:w3$}  {last}");
        let _ = writeln!(out, "{}", line.trim_end());
    }
    out
}

/// What the scenario asks of teams and how it branches, in one line; None
/// for a one-way scenario.
fn two_way(scenario: &Scenario) -> Option<String> {
    use super::play::WhenSpec;
    let (mut asks, mut branches) = (0, 0);
    let mut decisions: Vec<String> = Vec::new();
    for team in &scenario.teams {
        for inject in &team.timeline.injects {
            let play = inject.play();
            asks += usize::from(play.response.is_some());
            match play.when {
                Some(WhenSpec::Decision { name, .. }) => {
                    branches += 1;
                    if !decisions.contains(&name) {
                        decisions.push(name);
                    }
                }
                Some(WhenSpec::After { .. }) => branches += 1,
                None => {}
            }
        }
    }
    let mut parts = Vec::new();
    if asks > 0 {
        parts.push(format!("{asks} ask for a response"));
    }
    if branches > 0 {
        parts.push(format!("{branches} conditional"));
    }
    if !decisions.is_empty() {
        parts.push(format!("decisions: {}", decisions.join(", ")));
    }
    if !scenario.channels.is_empty() {
        let ids: Vec<&str> = scenario.channels.iter().map(|c| c.id.as_str()).collect();
        parts.push(format!("channels: {}", ids.join(", ")));
    }
    if !scenario.objectives.is_empty() {
        parts.push(format!("{} objectives", scenario.objectives.len()));
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// Team, timeline (and who shares it), inject count, first and last inject.
fn team_row(scenario: &Scenario, team: &Team) -> [String; 5] {
    let injects = &team.timeline.injects;
    let sharing: Vec<&str> = scenario
        .teams
        .iter()
        .filter(|other| other.id != team.id && Arc::ptr_eq(&other.timeline, &team.timeline))
        .map(|other| other.id.as_str())
        .collect();
    let timeline = if sharing.is_empty() {
        team.timeline.id.clone()
    } else {
        format!("{} (shared with {})", team.timeline.id, sharing.join(", "))
    };
    // Injects need not be sorted: first and last are by time, ties in file order.
    let by_time = |(index, inject): (usize, &Inject)| (scenario.due(inject), index);
    let first = injects.iter().enumerate().min_by_key(|&pair| by_time(pair));
    let last = injects.iter().enumerate().max_by_key(|&pair| by_time(pair));
    let show = |label: &str, inject: Option<(usize, &Inject)>| {
        inject.map_or_else(String::new, |(_, inject)| {
            format!("{label} {} {}", scenario.due(inject), inject.id)
        })
    };
    [
        team.id.to_string(),
        timeline,
        inject_count(injects.len()),
        show("first", first),
        show("last", last),
    ]
}

fn inject_count(n: usize) -> String {
    match n {
        1 => "1 inject".to_owned(),
        n => format!("{n} injects"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::fixtures::*;

    #[test]
    fn summarises_teams_timelines_and_first_and_last_injects() {
        let (_dir, loaded) = load_ok(&[
            (
                "scenario.json",
                &scenario(
                    "0.5",
                    &[("blue", "shared"), ("red", "solo"), ("orange", "shared")],
                ),
            ),
            (
                "timelines/shared.json",
                &timeline(&[
                    r#"{"id": "late", "time": 25, "type": "news", "content": {}}"#,
                    r#"{"id": "early", "time": 3, "type": "news", "content": {}}"#,
                    r#"{"id": "also-late", "time": 25, "type": "news", "content": {}}"#,
                ]),
            ),
            ("timelines/solo.json", &timeline(&[BRIEFING])),
        ]);
        assert_eq!(
            summary(&loaded),
            "\
Exercise:  (generated at start)
Name:      Test
Duration:  T+00:30 (0.5 min)
Teams:     3 (7 deliveries)

  blue    shared (shared with orange)  3 injects  first T+00:03 early  last T+00:25 also-late
  red     solo                          1 inject  first T+00:00 i-1    last T+00:00 i-1
  orange  shared (shared with blue)    3 injects  first T+00:03 early  last T+00:25 also-late
"
        );
    }
}
