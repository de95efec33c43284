//! The report of a run as the service holds it: its [`Input`] made from
//! the [`ReportSource`] runtime gathers, after checking that the exercise
//! had the run asked for.

use std::collections::HashMap;

use time::OffsetDateTime;

use crate::runtime::exercise::{DeliveryView, wall_ms};
use crate::runtime::service::{ReportSource, RunDeliveries, Service, ServiceError};
use crate::scenario::Scenario;
use crate::store::DeliveryRow;

use super::model::{AfterActionReport, Delivery, FIRST_RUN, Input, ReportTeam, build};

/// The after-action report of run `run` of exercise `id` (its current run
/// when None), made now.
pub async fn of_run(
    service: &Service,
    id: &str,
    run: Option<u32>,
) -> Result<AfterActionReport, ServiceError> {
    let source = service.report_source(id, run).await?;
    Ok(build(&input(source, wall_ms(OffsetDateTime::now_utc()))?))
}

/// What the report of `source.run` is made of, generated at
/// `generated_wall_ms`; not found when the exercise never had that run.
pub fn input(source: ReportSource, generated_wall_ms: i64) -> Result<Input, ServiceError> {
    let ReportSource {
        exercise,
        state,
        current_run,
        run,
        scenario,
        deliveries,
        control_log,
        plays,
    } = source;
    if !(FIRST_RUN..=current_run).contains(&run) {
        return Err(ServiceError::NotFound(format!(
            "exercise {:?} has no run {run}: its runs are {FIRST_RUN} to {current_run}",
            exercise.id
        )));
    }
    let (teams, kinds) = scenario.as_deref().map(scenario_parts).unwrap_or_default();
    let deliveries = match deliveries {
        RunDeliveries::Hosted(views) => views
            .into_iter()
            .enumerate()
            .map(|(slot, view)| from_view(&exercise.id, run, slot, view))
            .collect(),
        RunDeliveries::Stored(rows) => rows.into_iter().map(|r| from_row(r, &kinds)).collect(),
    };
    Ok(Input {
        exercise_id: exercise.id,
        name: exercise.name,
        state,
        speed: exercise.speed,
        duration_secs: exercise.duration_secs,
        current_run,
        run,
        teams,
        deliveries,
        control_log,
        plays,
        objectives: scenario
            .as_deref()
            .map(|s| {
                s.objectives
                    .iter()
                    .map(|o| (o.id.clone(), o.title.clone()))
                    .collect()
            })
            .unwrap_or_default(),
        generated_wall_ms,
    })
}

/// The delivery of a live exercise's current run as a store row.
pub fn from_view(exercise_id: &str, run: i64, position: usize, v: DeliveryView) -> Delivery {
    let r = v.record;
    Delivery {
        row: DeliveryRow {
            exercise_id: exercise_id.to_owned(),
            run,
            team_id: v.team_id,
            inject_id: v.inject_id,
            due_secs: i64::from(r.due.get()),
            status: r.status.as_str().to_owned(),
            attempts: i64::from(r.attempts),
            due_wall_ms: r.due_wall.map(wall_ms),
            published_wall_ms: r.published_wall.map(wall_ms),
            acked_wall_ms: r.acked_wall.map(wall_ms),
            received_wall_ms: r.received_wall.map(wall_ms),
            latency_ms: r.latency.map(|l| l.as_secs_f64() * 1000.0),
            late: r.late,
            last_error: r.last_error,
            position: position as i64,
            inject_json: None,
            watched: r.watched,
            sent_secs: r.published_at.map(|s| i64::from(s.get())),
            play: crate::runtime::exercise::play_json(&r.play),
        },
        kind: v.kind,
        live: v.live,
    }
}

/// A stored delivery row, its `type` taken from the inject stored with it
/// (sent live) or else from `kinds` (the scenario's).
pub fn from_row(row: DeliveryRow, kinds: &HashMap<(String, String), String>) -> Delivery {
    let stored_kind = row.inject_json.as_deref().and_then(|json| {
        serde_json::from_str::<serde_json::Value>(json)
            .ok()?
            .get("type")?
            .as_str()
            .map(str::to_owned)
    });
    let live = row.inject_json.is_some();
    let kind = stored_kind
        .or_else(|| {
            kinds
                .get(&(row.team_id.clone(), row.inject_id.clone()))
                .cloned()
        })
        .unwrap_or_default();
    Delivery { row, kind, live }
}

/// The teams of a scenario, and the `type` of each (team, inject) of it.
pub fn scenario_parts(scenario: &Scenario) -> (Vec<ReportTeam>, HashMap<(String, String), String>) {
    let teams = scenario
        .teams
        .iter()
        .map(|t| ReportTeam {
            id: t.id.to_string(),
            name: t.name.clone(),
        })
        .collect();
    let kinds = scenario
        .teams
        .iter()
        .flat_map(|t| {
            t.timeline
                .injects
                .iter()
                .map(move |i| ((t.id.to_string(), i.id.to_string()), i.kind.clone()))
        })
        .collect();
    (teams, kinds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::DeliveryRecord;
    use crate::domain::ExerciseSeconds;
    use crate::report::aar::fixtures::{control, row};
    use crate::store::ExerciseRow;

    fn source(current_run: i64, run: i64, deliveries: RunDeliveries) -> ReportSource {
        ReportSource {
            exercise: ExerciseRow {
                id: "ex".into(),
                name: Some("Drill".into()),
                scenario_json: "{}".into(),
                state: "running".into(),
                run: current_run,
                speed: 2.0,
                duration_secs: 600,
                started_wall_ms: None,
                paused_total_ms: 0,
                paused_since_wall_ms: None,
                created_wall_ms: 0,
                updated_wall_ms: 0,
                owner: None,
                epoch: 0,
                turn: 0,
                incarnation: String::new(),
            },
            state: "paused".into(),
            current_run,
            run,
            scenario: None,
            deliveries,
            control_log: vec![control("start", true, None)],
            plays: Vec::new(),
        }
    }

    #[test]
    fn a_run_the_exercise_never_had_is_not_found() {
        let check = |current_run: i64, run: i64, expected: Option<&str>| {
            let got = input(source(current_run, run, RunDeliveries::Stored(vec![])), 0);
            match (got, expected) {
                (Ok(input), None) => assert_eq!(input.run, run),
                (Err(ServiceError::NotFound(message)), Some(expected)) => {
                    assert_eq!(message, expected)
                }
                (got, _) => panic!("run {run} of {current_run}: {got:?}"),
            }
        };
        check(1, 1, None);
        check(3, 2, None);
        check(
            1,
            0,
            Some("exercise \"ex\" has no run 0: its runs are 1 to 1"),
        );
        check(
            2,
            3,
            Some("exercise \"ex\" has no run 3: its runs are 1 to 2"),
        );
    }

    #[test]
    fn hosted_views_and_stored_rows_become_the_deliveries_of_the_run() {
        let mut record = DeliveryRecord::new(0, 0, ExerciseSeconds::new(30));
        record.attempts = 2;
        let view = DeliveryView {
            team_id: "blue".into(),
            inject_id: "b-1".into(),
            kind: "news".into(),
            record,
            live: true,
            skip_reason: None,
            waits_for: None,
            decision: None,
        };
        let hosted = input(source(2, 2, RunDeliveries::Hosted(vec![view])), 0).unwrap();
        let d = &hosted.deliveries[0];
        assert_eq!(
            (d.row.run, d.row.due_secs, d.row.attempts, d.row.position),
            (2, 30, 2, 0)
        );
        assert_eq!((d.kind.as_str(), d.live), ("news", true));
        assert_eq!(hosted.state, "paused", "the state now, not the stored one");
        assert_eq!(hosted.control_log.len(), 1);

        let mut live = row("blue", "b-9", 40, "delivered");
        live.inject_json = Some(r#"{"id": "b-9", "type": "email"}"#.into());
        let stored = input(
            source(
                2,
                1,
                RunDeliveries::Stored(vec![row("red", "r-1", 10, "failed"), live]),
            ),
            0,
        )
        .unwrap();
        let kinds: Vec<(&str, bool)> = stored
            .deliveries
            .iter()
            .map(|d| (d.kind.as_str(), d.live))
            .collect();
        assert_eq!(
            kinds,
            [("", false), ("email", true)],
            "no scenario to name r-1's type"
        );
    }
}
