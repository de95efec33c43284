//! Rows and inputs the report's tests are made of.

use crate::store::{ControlRow, DeliveryRow};

use super::model::{Delivery, Input, ReportTeam};

pub fn row(team: &str, inject: &str, due: i64, status: &str) -> DeliveryRow {
    DeliveryRow {
        exercise_id: "ex".into(),
        run: 1,
        team_id: team.into(),
        inject_id: inject.into(),
        due_secs: due,
        status: status.into(),
        attempts: 1,
        due_wall_ms: None,
        published_wall_ms: None,
        acked_wall_ms: None,
        received_wall_ms: None,
        latency_ms: None,
        late: false,
        last_error: None,
        position: 0,
        inject_json: None,
        watched: None,
        sent_secs: None,
        play: None,
    }
}

pub fn control(command: &str, accepted: bool, reason: Option<&str>) -> ControlRow {
    ControlRow {
        id: 0,
        exercise_id: "ex".into(),
        at_wall_ms: 1_705_313_132_123,
        command: command.into(),
        reason: reason.map(Into::into),
        source: "api:127.0.0.1".into(),
        accepted,
        message: None,
        exercise_secs: None,
    }
}

pub fn input(deliveries: Vec<DeliveryRow>, control_log: Vec<ControlRow>) -> Input {
    Input {
        exercise_id: "ex".into(),
        name: Some("Drill <1>".into()),
        state: "completed".into(),
        speed: 10.0,
        duration_secs: 600,
        current_run: 1,
        run: 1,
        teams: vec![
            ReportTeam {
                id: "blue".into(),
                name: Some("Blue & co".into()),
            },
            ReportTeam {
                id: "red".into(),
                name: None,
            },
        ],
        deliveries: deliveries
            .into_iter()
            .map(|row| Delivery {
                row,
                kind: "news".into(),
                live: false,
            })
            .collect(),
        control_log,
        plays: Vec::new(),
        objectives: Vec::new(),
        generated_wall_ms: 1_705_313_200_000,
    }
}
