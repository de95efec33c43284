//! Two-way play in scenario files (SPEC section 9): an inject's `response`,
//! `expect`, `when` and `objectives`; a scenario's `channels` and
//! `objectives`; and the checks `validate` makes of them: every reference
//! known, no cycle, no condition that can never be met.
//!
//! The inject fields stay among the passed-through fields (`extra`), so
//! storing, exporting and round trips keep them; [`Inject::play`] reads
//! them. The feed shows a team `response` only ([`HIDDEN_FIELDS`]).

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};

use super::fields::{Report, describe};
use super::model::{Inject, Timeline, ValidationError};
use crate::core::{Expectation, Outcome, OutcomeMatch};
use crate::domain::{ExerciseSeconds, InjectId, TeamId};

/// Inject fields that never reach a team's feed: the expected answer and
/// the scenario's branches are the controllers' secret.
pub const HIDDEN_FIELDS: [&str; 3] = ["expect", "when", "objectives"];

/// Most options a choice may offer, and the longest text of one.
pub const MAX_OPTIONS: usize = 20;
pub const MAX_OPTION_CHARS: usize = 200;
/// The longest decision name, channel id or objective id.
pub const MAX_NAME_CHARS: usize = 100;

/// What an inject asks of a team.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseKind {
    Acknowledge,
    Choice,
    Text,
}

impl ResponseKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ResponseKind::Acknowledge => "acknowledge",
            ResponseKind::Choice => "choice",
            ResponseKind::Text => "text",
        }
    }
}

/// `response` of an inject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseSpec {
    pub kind: ResponseKind,
    /// The options of a choice, in order; empty otherwise.
    pub options: Vec<String>,
    pub prompt: Option<String>,
}

/// `when` of an inject, by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WhenSpec {
    After {
        inject: InjectId,
        on: OutcomeMatch,
        delay: u32,
    },
    Decision {
        name: String,
        delay: u32,
    },
}

/// The two-way fields of one inject.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InjectPlay {
    pub response: Option<ResponseSpec>,
    pub expect: Option<Expectation>,
    pub when: Option<WhenSpec>,
    pub objectives: Vec<String>,
}

/// A simulated public channel (a social network, a news wire).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channel {
    pub id: String,
    /// The inject type its posts reach feeds as.
    pub kind: String,
    pub name: Option<String>,
    pub visible_to: Vec<TeamId>,
}

/// A scenario objective evaluators score teams on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Objective {
    pub id: String,
    pub title: String,
    pub description: Option<String>,
}

impl Channel {
    /// As a scenario file holds it.
    pub fn to_value(&self) -> Value {
        let mut m = Map::new();
        m.insert("id".into(), self.id.clone().into());
        m.insert("kind".into(), self.kind.clone().into());
        if let Some(name) = &self.name {
            m.insert("name".into(), name.clone().into());
        }
        let teams: Vec<Value> = self.visible_to.iter().map(|t| t.as_str().into()).collect();
        m.insert("visible_to".into(), teams.into());
        Value::Object(m)
    }
}

impl Objective {
    /// As a scenario file holds it.
    pub fn to_value(&self) -> Value {
        let mut m = Map::new();
        m.insert("id".into(), self.id.clone().into());
        m.insert("title".into(), self.title.clone().into());
        if let Some(d) = &self.description {
            m.insert("description".into(), d.clone().into());
        }
        Value::Object(m)
    }
}

impl Inject {
    /// The inject's two-way fields, as validated when it was loaded (a
    /// field that does not parse reads as absent).
    pub fn play(&self) -> InjectPlay {
        check_inject_play(&self.extra).unwrap_or_else(|_| InjectPlay::default())
    }
}

/// Reads and checks the two-way fields among an inject's other fields;
/// every problem at once.
pub(super) fn check_inject_play(extra: &Map<String, Value>) -> Result<InjectPlay, Vec<String>> {
    let mut errors = Vec::new();
    let mut play = InjectPlay::default();
    if let Some(value) = present(extra, "response") {
        play.response = record(&mut errors, response(value));
    }
    if let Some(value) = present(extra, "expect") {
        play.expect = record(&mut errors, expect(value, play.response.as_ref(), extra));
    }
    if let Some(value) = present(extra, "when") {
        play.when = record(&mut errors, when(value));
    }
    if let Some(value) = present(extra, "objectives") {
        play.objectives = record(&mut errors, names(value, "objectives")).unwrap_or_default();
    }
    if errors.is_empty() {
        Ok(play)
    } else {
        Err(errors)
    }
}

fn present<'a>(fields: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    fields.get(key).filter(|v| !v.is_null())
}

fn record<T>(errors: &mut Vec<String>, result: Result<T, String>) -> Option<T> {
    result.map_err(|e| errors.push(e)).ok()
}

fn object<'a>(value: &'a Value, key: &str) -> Result<&'a Map<String, Value>, String> {
    value
        .as_object()
        .ok_or_else(|| format!("\"{key}\" must be an object, got {}", describe(value)))
}

fn text(value: &Value, key: &str) -> Result<String, String> {
    value
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("\"{key}\" must be a string, got {}", describe(value)))
}

/// A name: not empty, at most [`MAX_NAME_CHARS`], no control characters.
fn name(value: &Value, key: &str) -> Result<String, String> {
    let name = text(value, key)?;
    if name.trim().is_empty() {
        return Err(format!("\"{key}\" must not be empty"));
    }
    if name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(format!(
            "\"{key}\" must be at most {MAX_NAME_CHARS} characters, without control characters"
        ));
    }
    Ok(name)
}

fn names(value: &Value, key: &str) -> Result<Vec<String>, String> {
    let Value::Array(items) = value else {
        return Err(format!(
            "\"{key}\" must be an array of strings, got {}",
            describe(value)
        ));
    };
    items.iter().map(|item| name(item, key)).collect()
}

/// Whole seconds, 0 or more.
fn seconds(value: &Value, key: &str) -> Result<u32, String> {
    value
        .as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| {
            format!(
                "\"{key}\" must be a whole number of seconds, got {}",
                describe(value)
            )
        })
}

fn response(value: &Value) -> Result<ResponseSpec, String> {
    let fields = object(value, "response")?;
    let kind = match fields.get("kind").map(|k| k.as_str()) {
        Some(Some("acknowledge")) => ResponseKind::Acknowledge,
        Some(Some("choice")) => ResponseKind::Choice,
        Some(Some("text")) => ResponseKind::Text,
        None => return Err("\"response\" needs \"kind\": acknowledge, choice or text".into()),
        Some(_) => {
            return Err(format!(
                "\"response.kind\" must be acknowledge, choice or text, got {}",
                describe(&fields["kind"])
            ));
        }
    };
    let prompt = match present(fields, "prompt") {
        Some(p) => Some(text(p, "response.prompt")?),
        None => None,
    };
    let options = match (kind, present(fields, "options")) {
        (ResponseKind::Choice, None) => {
            return Err("a \"choice\" response needs \"options\"".into());
        }
        (ResponseKind::Choice, Some(value)) => options(value)?,
        (_, None) => Vec::new(),
        (other, Some(_)) => {
            return Err(format!(
                "\"response.options\" only go with kind choice, not {}",
                other.as_str()
            ));
        }
    };
    Ok(ResponseSpec {
        kind,
        options,
        prompt,
    })
}

fn options(value: &Value) -> Result<Vec<String>, String> {
    let Value::Array(items) = value else {
        return Err(format!(
            "\"response.options\" must be an array of strings, got {}",
            describe(value)
        ));
    };
    if items.len() < 2 || items.len() > MAX_OPTIONS {
        return Err(format!(
            "\"response.options\" must offer 2 to {MAX_OPTIONS} options, got {}",
            items.len()
        ));
    }
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let option = text(item, "response.options")?;
        if option.trim().is_empty()
            || option.chars().count() > MAX_OPTION_CHARS
            || option.chars().any(char::is_control)
        {
            return Err(format!(
                "each option must be 1 to {MAX_OPTION_CHARS} characters, without control characters"
            ));
        }
        if !seen.insert(option.clone()) {
            return Err(format!("option {option:?} is offered twice"));
        }
        out.push(option);
    }
    Ok(out)
}

fn expect(
    value: &Value,
    response: Option<&ResponseSpec>,
    extra: &Map<String, Value>,
) -> Result<Expectation, String> {
    let fields = object(value, "expect")?;
    if present(extra, "response").is_none() {
        return Err("\"expect\" needs a \"response\" to expect".into());
    }
    let within = match present(fields, "within") {
        Some(w) => {
            let within = seconds(w, "expect.within")?;
            if within == 0 {
                return Err("\"expect.within\" must be at least 1 second".into());
            }
            Some(within)
        }
        None => None,
    };
    let choice = match present(fields, "choice") {
        Some(c) => {
            let choice = text(c, "expect.choice")?;
            if let Some(r) = response {
                if r.kind != ResponseKind::Choice {
                    return Err(format!(
                        "\"expect.choice\" needs a choice response, not {}",
                        r.kind.as_str()
                    ));
                }
                if !r.options.contains(&choice) {
                    return Err(format!(
                        "\"expect.choice\" {choice:?} is not one of the options"
                    ));
                }
            }
            Some(choice)
        }
        None => None,
    };
    Ok(Expectation { within, choice })
}

fn when(value: &Value) -> Result<WhenSpec, String> {
    let fields = object(value, "when")?;
    let delay = match present(fields, "delay") {
        Some(d) => seconds(d, "when.delay")?,
        None => 0,
    };
    match (present(fields, "after"), present(fields, "decision")) {
        (Some(_), Some(_)) => {
            Err("\"when\" names either \"after\" or \"decision\", not both".into())
        }
        (None, None) => {
            Err("\"when\" needs \"after\" (an inject id) or \"decision\" (a name)".into())
        }
        (Some(after), None) => {
            let inject = InjectId::parse(&text(after, "when.after")?)
                .map_err(|e| format!("invalid \"when.after\": {e}"))?;
            let outcome = present(fields, "outcome").ok_or(
                "\"when\" with \"after\" needs \"outcome\": met, late, wrong, missed or choice:<option>",
            )?;
            let raw = text(outcome, "when.outcome")?;
            let on = OutcomeMatch::parse(&raw).ok_or_else(|| {
                format!(
                    "\"when.outcome\" must be met, late, wrong, missed or choice:<option>, got {raw:?}"
                )
            })?;
            Ok(WhenSpec::After { inject, on, delay })
        }
        (None, Some(decision)) => {
            if present(fields, "outcome").is_some() {
                return Err("\"when.outcome\" goes with \"after\", not \"decision\"".into());
            }
            Ok(WhenSpec::Decision {
                name: name(decision, "when.decision")?,
                delay,
            })
        }
    }
}

/// The scenario's `objectives`.
pub(super) fn check_objectives(
    root: &Map<String, Value>,
    report: &mut Report<'_>,
) -> Vec<Objective> {
    let Some(value) = present(root, "objectives") else {
        return Vec::new();
    };
    let Value::Array(items) = value else {
        report.error(
            None,
            format!("\"objectives\" must be an array, got {}", describe(value)),
        );
        return Vec::new();
    };
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let location = format!("objective #{index}");
        let parsed = object(item, "objective").and_then(|fields| {
            let id = name(fields.get("id").unwrap_or(&Value::Null), "id")?;
            let title = name(fields.get("title").unwrap_or(&Value::Null), "title")?;
            let description = match present(fields, "description") {
                Some(d) => Some(text(d, "description")?),
                None => None,
            };
            Ok(Objective {
                id,
                title,
                description,
            })
        });
        match parsed {
            Ok(o) if !seen.insert(o.id.clone()) => report.error(
                Some(&format!("objective {:?}", o.id)),
                "duplicate objective id",
            ),
            Ok(o) => out.push(o),
            Err(reason) => report.error(Some(&location), reason),
        }
    }
    out
}

/// The scenario's `channels`; `visible_to` is checked against the teams
/// once they are known ([`check_channel_teams`]).
pub(super) fn check_channels(root: &Map<String, Value>, report: &mut Report<'_>) -> Vec<Channel> {
    let Some(value) = present(root, "channels") else {
        return Vec::new();
    };
    let Value::Array(items) = value else {
        report.error(
            None,
            format!("\"channels\" must be an array, got {}", describe(value)),
        );
        return Vec::new();
    };
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let location = format!("channel #{index}");
        let parsed = object(item, "channel").and_then(|fields| {
            let raw_id = text(fields.get("id").unwrap_or(&Value::Null), "id")?;
            // A channel id names a topic-safe thing, like an inject id.
            let id = InjectId::parse(&raw_id)
                .map_err(|e| format!("invalid \"id\": {e}"))?
                .as_str()
                .to_owned();
            let kind = text(fields.get("kind").unwrap_or(&Value::Null), "kind")?;
            let word = kind.chars().next().is_some_and(|c| c.is_ascii_lowercase())
                && kind
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
            if !word {
                return Err(format!(
                    "\"kind\" must be a lowercase word like an inject type, got {kind:?}"
                ));
            }
            let name = match present(fields, "name") {
                Some(n) => Some(text(n, "name")?),
                None => None,
            };
            let visible_to = match present(fields, "visible_to") {
                None => return Err("\"visible_to\" must list the teams that see it".into()),
                Some(v) => names(v, "visible_to")?
                    .iter()
                    .map(|t| {
                        TeamId::parse(t).map_err(|e| format!("invalid team in \"visible_to\": {e}"))
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            };
            if visible_to.is_empty() {
                return Err("\"visible_to\" must name at least one team".into());
            }
            Ok(Channel {
                id,
                kind,
                name,
                visible_to,
            })
        });
        match parsed {
            Ok(c) if !seen.insert(c.id.clone()) => {
                report.error(Some(&format!("channel {:?}", c.id)), "duplicate channel id")
            }
            Ok(c) => out.push(c),
            Err(reason) => report.error(Some(&location), reason),
        }
    }
    out
}

/// Every team a channel names must be one of the scenario's.
pub(super) fn check_channel_teams(channels: &[Channel], teams: &[TeamId], report: &mut Report<'_>) {
    for channel in channels {
        for team in &channel.visible_to {
            if !teams.contains(team) {
                report.error(
                    Some(&format!("channel {:?}", channel.id)),
                    format!(
                        "\"visible_to\" names team {:?}, which is not in the scenario",
                        team.as_str()
                    ),
                );
            }
        }
    }
}

/// The checks that need a whole timeline: `when.after` names an inject of
/// the same timeline, conditions form no cycle and can be met before the
/// end, objectives are the scenario's, conditions are not in a turn-based
/// scenario.
pub(super) fn check_timeline_play(
    timeline: &Timeline,
    objectives: &[Objective],
    turn_based: bool,
    duration: ExerciseSeconds,
    errors: &mut Vec<ValidationError>,
) {
    let mut report = Report {
        file: &timeline.path,
        errors,
    };
    let plays: Vec<InjectPlay> = timeline.injects.iter().map(Inject::play).collect();
    let index: HashMap<&InjectId, usize> = timeline
        .injects
        .iter()
        .enumerate()
        .map(|(i, inject)| (&inject.id, i))
        .collect();
    for (i, (inject, play)) in timeline.injects.iter().zip(&plays).enumerate() {
        let location = format!("inject {:?}", inject.id.as_str());
        let location = Some(location.as_str());
        for objective in &play.objectives {
            if !objectives.iter().any(|o| &o.id == objective) {
                report.error(
                    location,
                    format!("\"objectives\" names {objective:?}, which is not one of the scenario's objectives"),
                );
            }
        }
        let Some(when) = &play.when else { continue };
        if turn_based {
            report.error(
                location,
                "\"when\" is not supported in a turn-based scenario: a turn's injects are fixed when it starts",
            );
            continue;
        }
        let WhenSpec::After {
            inject: after, on, ..
        } = when
        else {
            continue;
        };
        let Some(&target) = index.get(after) else {
            report.error(
                location,
                format!(
                    "\"when.after\" names inject {:?}, which is not in this timeline",
                    after.as_str()
                ),
            );
            continue;
        };
        if let Some(cycle) = cycle_from(i, &timeline.injects, &plays, &index) {
            report.error(location, format!("conditions form a cycle: {cycle}"));
            continue;
        }
        if let Some(reason) = never_met(on, &plays[target], after) {
            report.error(
                location,
                format!("the condition can never be met: {reason}"),
            );
            continue;
        }
        if let Some(earliest) = earliest(i, &timeline.injects, &plays, &index)
            && earliest > duration.get()
        {
            report.error(
                location,
                format!(
                    "the condition can never be met before the end: the earliest it can go out is {}, after the end ({})",
                    ExerciseSeconds::new(earliest),
                    duration
                ),
            );
        }
    }
}

/// The chain of `after` from inject `start`, when it comes back to it.
fn cycle_from(
    start: usize,
    injects: &[Inject],
    plays: &[InjectPlay],
    index: &HashMap<&InjectId, usize>,
) -> Option<String> {
    let mut path = vec![start];
    let mut at = start;
    while let Some(WhenSpec::After { inject, .. }) = &plays[at].when {
        let next = *index.get(inject)?;
        if next == start {
            path.push(start);
            let ids: Vec<&str> = path.iter().map(|&i| injects[i].id.as_str()).collect();
            return Some(ids.join(" -> "));
        }
        if path.contains(&next) {
            // A cycle further on, reported at its own injects.
            return None;
        }
        path.push(next);
        at = next;
    }
    None
}

/// Why `on` can never be met on an inject with `target`'s fields.
fn never_met(on: &OutcomeMatch, target: &InjectPlay, id: &InjectId) -> Option<String> {
    let id = id.as_str();
    match on {
        OutcomeMatch::Choice(option) => match &target.response {
            Some(r) if r.kind == ResponseKind::Choice => (!r.options.contains(option))
                .then(|| format!("inject {id:?} offers no option {option:?}")),
            _ => Some(format!("inject {id:?} asks for no choice")),
        },
        OutcomeMatch::Outcome(outcome) => {
            let Some(expect) = &target.expect else {
                return Some(format!(
                    "inject {id:?} has no \"expect\", so it has no outcome"
                ));
            };
            match outcome {
                Outcome::Wrong if expect.choice.is_none() => Some(format!(
                    "inject {id:?} expects no particular choice, so no answer is wrong"
                )),
                Outcome::Late | Outcome::Missed if expect.within.is_none() => Some(format!(
                    "inject {id:?} expects no answer within a time, so none is {outcome}"
                )),
                _ => None,
            }
        }
    }
}

/// The earliest exercise second inject `i` can go out: its time, or the
/// earliest its condition can hold plus its delay (None in a cycle).
fn earliest(
    i: usize,
    injects: &[Inject],
    plays: &[InjectPlay],
    index: &HashMap<&InjectId, usize>,
) -> Option<u32> {
    let mut chain = Vec::new();
    let mut at = i;
    loop {
        if chain.contains(&at) || chain.len() > injects.len() {
            return None;
        }
        chain.push(at);
        match &plays[at].when {
            Some(WhenSpec::After { inject, .. }) => at = *index.get(inject)?,
            _ => break,
        }
    }
    // From the root of the chain down to `i`.
    let mut earliest = 0u32;
    for (n, &slot) in chain.iter().rev().enumerate() {
        let own = injects[slot].time.get();
        earliest = if n == 0 {
            match &plays[slot].when {
                Some(WhenSpec::Decision { delay, .. }) => own.max(*delay),
                _ => own,
            }
        } else {
            let parent = chain[chain.len() - n];
            let window = match &plays[slot].when {
                Some(WhenSpec::After {
                    on: OutcomeMatch::Outcome(Outcome::Missed | Outcome::Late),
                    ..
                }) => plays[parent]
                    .expect
                    .as_ref()
                    .and_then(|e| e.within)
                    .unwrap_or(0),
                _ => 0,
            };
            let delay = match &plays[slot].when {
                Some(WhenSpec::After { delay, .. } | WhenSpec::Decision { delay, .. }) => *delay,
                None => 0,
            };
            own.max(earliest.saturating_add(window).saturating_add(delay))
        };
    }
    Some(earliest)
}
