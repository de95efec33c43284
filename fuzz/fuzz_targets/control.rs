//! The control topic's parser, `wire::parse_control`, on any payload, and
//! the `invalid_command` status message the engine publishes for garbage;
//! the same payload as a team's answer and post (two-way play topics).

#![no_main]

use libfuzzer_sys::fuzz_target;
use time::OffsetDateTime;

use scip_orchestrator::core::State;
use scip_orchestrator::domain::{ExerciseId, ExerciseSeconds};
use scip_orchestrator::mqtt::wire::{
    ControlInput, PostIn, ResponseIn, StatusMessage, parse_control,
};

fuzz_target!(|data: &[u8]| {
    match parse_control(data) {
        ControlInput::Command { command, reason } => {
            let _ = (command.to_string(), reason);
        }
        ControlInput::Decide {
            decision,
            teams,
            reason,
        } => {
            let _ = (decision.len(), teams.map(|t| t.len()), reason);
        }
        ControlInput::Announcement => {}
        ControlInput::Invalid(why) => {
            let id = ExerciseId::parse("fuzz").expect("a valid id");
            let mut status = StatusMessage::new(
                &id,
                State::Initialized,
                "invalid_command",
                ExerciseSeconds::new(0),
                OffsetDateTime::UNIX_EPOCH,
            );
            status.message = Some(why);
            serde_json::to_vec(&status).expect("a status message serializes");
        }
    }
    if let Ok(answer) = serde_json::from_slice::<ResponseIn>(data) {
        let _ = (answer.inject_id.len(), answer.choice, answer.text, answer.by);
    }
    if let Ok(post) = serde_json::from_slice::<PostIn>(data) {
        let _ = (post.channel.len(), post.text, post.by);
    }
});
