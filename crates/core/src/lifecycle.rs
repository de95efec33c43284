//! The exercise lifecycle of SPEC section 2: states, commands, and which
//! command fits which state.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

/// Where an exercise is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Initialized,
    Running,
    Paused,
    Stopped,
    Completed,
}

impl State {
    pub const ALL: [State; 5] = [
        State::Initialized,
        State::Running,
        State::Paused,
        State::Stopped,
        State::Completed,
    ];

    /// The inverse of [`Self::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            State::Initialized => "initialized",
            State::Running => "running",
            State::Paused => "paused",
            State::Stopped => "stopped",
            State::Completed => "completed",
        }
    }

    /// Stopped or completed: the run is over until a reset.
    pub fn is_over(self) -> bool {
        matches!(self, State::Stopped | State::Completed)
    }

    /// The state `command` leads to from here, or why it does not fit.
    pub fn apply(self, command: Command) -> Result<State, Refusal> {
        use Command::*;
        use State::*;
        let reason = match (self, command) {
            (_, Reset) => return Ok(Initialized),
            (Initialized, Start) => return Ok(Running),
            (Running, Pause) => return Ok(Paused),
            (Paused, Resume | NextTurn) => return Ok(Running),
            (Initialized, NextTurn) => return Ok(Running),
            (Running, NextTurn) => "the turn is still under way: pause or wait for its end",
            (Running | Paused, Stop) => return Ok(Stopped),
            (Running, Start | Resume) => "the exercise is already running",
            (Paused, Start) => "the exercise is paused: resume it instead",
            (Paused, Pause) => "the exercise is already paused",
            (Initialized, Pause | Resume | Stop) => "the exercise has not started",
            (Stopped, _) => "the exercise is stopped: reset it first",
            (Completed, _) => "the exercise is completed: reset it first",
        };
        Err(Refusal {
            command,
            state: self,
            reason,
        })
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a controller can ask of an exercise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Command {
    Start,
    Pause,
    Resume,
    Stop,
    Reset,
    /// Turn-based exercises: start the next turn.
    #[serde(rename = "next_turn")]
    NextTurn,
}

impl Command {
    pub const ALL: [Command; 6] = [
        Command::Start,
        Command::Pause,
        Command::Resume,
        Command::Stop,
        Command::Reset,
        Command::NextTurn,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Command::Start => "start",
            Command::Pause => "pause",
            Command::Resume => "resume",
            Command::Stop => "stop",
            Command::Reset => "reset",
            Command::NextTurn => "next_turn",
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A command name that is not one of the five.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown command {0:?}: expected start, pause, resume, stop, reset or next_turn")]
pub struct UnknownCommand(pub String);

impl FromStr for Command {
    type Err = UnknownCommand;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Command::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| UnknownCommand(s.to_owned()))
    }
}

/// A command that does not fit the state; nothing changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{command} refused while {state}: {reason}")]
pub struct Refusal {
    pub command: Command,
    pub state: State,
    pub reason: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_and_command() {
        use Command::*;
        use State::*;
        let table: [(State, [Option<State>; 6]); 5] = [
            // start, pause, resume, stop, reset, next_turn (the engine also
            // checks that the exercise is turn-based and between turns)
            (
                Initialized,
                [
                    Some(Running),
                    None,
                    None,
                    None,
                    Some(Initialized),
                    Some(Running),
                ],
            ),
            (
                Running,
                [
                    None,
                    Some(Paused),
                    None,
                    Some(Stopped),
                    Some(Initialized),
                    None,
                ],
            ),
            (
                Paused,
                [
                    None,
                    None,
                    Some(Running),
                    Some(Stopped),
                    Some(Initialized),
                    Some(Running),
                ],
            ),
            (Stopped, [None, None, None, None, Some(Initialized), None]),
            (Completed, [None, None, None, None, Some(Initialized), None]),
        ];
        for (state, expected) in table {
            for (command, want) in [Start, Pause, Resume, Stop, Reset, NextTurn]
                .into_iter()
                .zip(expected)
            {
                let got = state.apply(command);
                assert_eq!(got.ok(), want, "{command} while {state}");
                if let Err(refusal) = got {
                    assert_eq!(refusal.state, state);
                    assert!(
                        refusal
                            .to_string()
                            .starts_with(&format!("{command} refused while {state}"))
                    );
                }
            }
        }
    }

    #[test]
    fn parses_command_names() {
        assert_eq!("pause".parse::<Command>(), Ok(Command::Pause));
        assert!("PAUSE".parse::<Command>().is_err());
        assert!(
            "explode"
                .parse::<Command>()
                .unwrap_err()
                .to_string()
                .contains("explode")
        );
    }
}
