//! The control topic's parser, `wire::parse_control`, on any payload, and
//! the `invalid_command` status message the engine publishes for garbage.

#![no_main]

use libfuzzer_sys::fuzz_target;
use time::OffsetDateTime;

use scip_orchestrator::core::State;
use scip_orchestrator::domain::{ExerciseId, ExerciseSeconds};
use scip_orchestrator::mqtt::wire::{ControlInput, StatusMessage, parse_control};

fuzz_target!(|data: &[u8]| {
    match parse_control(data) {
        ControlInput::Command { command, reason } => {
            let _ = (command.to_string(), reason);
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
});
