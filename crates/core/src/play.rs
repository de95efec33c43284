//! Two-way play (SPEC section 9) as the engine sees it: expectations and
//! the outcomes they give, conditions that hold an inject back, and the
//! state each delivery record keeps of them. Names (inject ids, options) are
//! the driver's business; the engine knows slots.

use std::fmt;

use serde::{Deserialize, Serialize};

/// How a team did on an inject that expects an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Not known yet: no answer, and the window (if any) still open.
    Pending,
    /// Answered in time (with the expected choice, when one is expected).
    Met,
    /// Answered after the window closed.
    Late,
    /// Answered in time with another choice than the expected one.
    Wrong,
    /// No answer within the window (or, without a window, by the end).
    Missed,
}

impl Outcome {
    pub const ALL: [Outcome; 5] = [
        Outcome::Pending,
        Outcome::Met,
        Outcome::Late,
        Outcome::Wrong,
        Outcome::Missed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Pending => "pending",
            Outcome::Met => "met",
            Outcome::Late => "late",
            Outcome::Wrong => "wrong",
            Outcome::Missed => "missed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.as_str() == s)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `expect` of an inject: answer within `within` exercise seconds of its
/// first publish, with `choice` when one is given.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Expectation {
    pub within: Option<u32>,
    pub choice: Option<String>,
}

/// What a condition waits for on another inject of the same team.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutcomeMatch {
    /// That outcome (never `Pending`).
    Outcome(Outcome),
    /// The team's answer is this option.
    Choice(String),
}

impl OutcomeMatch {
    /// `met`, `late`, `wrong`, `missed` or `choice:<option>`.
    pub fn parse(s: &str) -> Option<Self> {
        if let Some(option) = s.strip_prefix("choice:") {
            return (!option.is_empty()).then(|| OutcomeMatch::Choice(option.to_owned()));
        }
        Outcome::parse(s)
            .filter(|&o| o != Outcome::Pending)
            .map(OutcomeMatch::Outcome)
    }
}

impl fmt::Display for OutcomeMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OutcomeMatch::Outcome(o) => f.write_str(o.as_str()),
            OutcomeMatch::Choice(c) => write!(f, "choice:{c}"),
        }
    }
}

/// What holds a conditional inject back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// The same team's outcome (or answer) on the inject in `slot`.
    After { slot: usize, on: OutcomeMatch },
    /// A controller's decision of this name for the team.
    Decision(String),
}

/// `when` of an inject: due once its trigger holds, `delay` seconds later
/// (and never before its own `time`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub trigger: Trigger,
    pub delay: u32,
}

/// The two-way part of one planned inject.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SlotPlay {
    pub expect: Option<Expectation>,
    pub when: Option<Condition>,
}

/// A team's first answer to an inject: the exercise second it came in
/// and the option chosen, if any. Later edits are the driver's history;
/// the outcome is the first answer's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    pub at: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub choice: Option<String>,
}

/// Why a conditional inject will never go out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "why", rename_all = "snake_case")]
pub enum Skip {
    /// The inject it waited on ended with another outcome.
    Outcome { after: usize, outcome: Outcome },
    /// The team chose another option (or answered without one).
    Choice {
        after: usize,
        choice: Option<String>,
    },
    /// The inject it waited on never went out (skipped or cancelled).
    NotSent { after: usize },
    /// Its condition held at exercise second `at`, but with its delay it
    /// would be due after the end.
    AfterEnd { at: u32 },
    /// The exercise ended before its condition held.
    Ended,
}

impl Skip {
    /// Why, in words; `name` gives the inject id of a slot.
    pub fn describe(&self, name: impl Fn(usize) -> String) -> String {
        match self {
            Skip::Outcome { after, outcome } => {
                format!("the outcome on {} was {outcome}", name(*after))
            }
            Skip::Choice {
                after,
                choice: Some(choice),
            } => format!("the team chose {choice:?} on {}", name(*after)),
            Skip::Choice {
                after,
                choice: None,
            } => format!("the team answered {} without a choice", name(*after)),
            Skip::NotSent { after } => format!("{} never went out", name(*after)),
            Skip::AfterEnd { at } => format!(
                "its condition held at T+{at} s, and with its delay it would be due after the end"
            ),
            Skip::Ended => "the exercise ended before its condition held".into(),
        }
    }
}

/// Where a conditional inject stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Gate {
    /// Waiting for its condition.
    Held,
    /// Its condition held at exercise second `at`; it is due at `due`.
    Released { at: u32, due: u32 },
    /// It will never go out.
    Skipped { reason: Skip },
}

impl Gate {
    /// `held`, `released` or `skipped`, as the API and the report name it.
    pub fn as_str(&self) -> &'static str {
        match self {
            Gate::Held => "held",
            Gate::Released { .. } => "released",
            Gate::Skipped { .. } => "skipped",
        }
    }
}

/// What a delivery record keeps of two-way play.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PlayState {
    /// Set for an inject with `expect`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    /// The exercise second the answer window closes, once it went out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_end: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<Answer>,
    /// Set for a conditional inject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<Gate>,
}

impl PlayState {
    pub fn is_empty(&self) -> bool {
        *self == PlayState::default()
    }

    pub fn is_held(&self) -> bool {
        self.gate == Some(Gate::Held)
    }
}

/// A team's answer or a decision that does not fit; nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlayError {
    #[error("no delivery {0} in this run")]
    UnknownDelivery(usize),
    /// Also what a team hears of an inject it was not sent yet, so that
    /// answering reveals nothing of its future.
    #[error("this inject has not been sent to the team")]
    NotSent,
    #[error("the exercise has not started")]
    NotStarted,
    #[error("the exercise is {0}")]
    Over(crate::lifecycle::State),
    #[error("no inject waits for decision {0:?}")]
    UnknownDecision(String),
}

/// What an answer did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answered {
    /// The team had answered before: this one is an edit, kept in the
    /// history, and the outcome stays the first answer's.
    pub edit: bool,
    /// The exercise second it came in.
    pub at: u32,
    /// The outcome now (None for an inject without `expect`).
    pub outcome: Option<Outcome>,
}
