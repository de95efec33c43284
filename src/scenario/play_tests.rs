//! `validate` on two-way play: what loads, what is refused and why, and
//! the plan a scenario with branches makes.

use super::fixtures::*;
use super::play::{ResponseKind, WhenSpec};
use super::{inject_value, load_inline, to_inline};
use crate::config::Limits;
use crate::core::{Condition, Expectation, OutcomeMatch, Trigger};

const QUESTION: &str = r#"{"id": "q", "time": 10, "type": "email", "content": {},
    "response": {"kind": "choice", "options": ["A", "B"], "prompt": "Which?"},
    "expect": {"within": 60, "choice": "B"}, "objectives": ["comms"]}"#;

fn with_objectives(injects: &[&str]) -> Vec<(String, String)> {
    vec![
        (
            "scenario.json".into(),
            r#"{"duration_minutes": 10, "teams": [{"id": "blue", "timeline_id": "t"},
                {"id": "red", "timeline_id": "t"}],
                "objectives": [{"id": "comms", "title": "Public communication"}],
                "channels": [{"id": "social", "kind": "social", "visible_to": ["blue", "red"]}]}"#
                .into(),
        ),
        ("timelines/t.json".into(), timeline(injects)),
    ]
}

fn files(owned: &[(String, String)]) -> Vec<(&str, &str)> {
    owned
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect()
}

#[test]
fn loads_responses_expectations_branches_channels_and_objectives() {
    let owned = with_objectives(&[
        QUESTION,
        r#"{"id": "a", "time": 0, "type": "news", "content": {},
            "when": {"after": "q", "outcome": "choice:A", "delay": 5}}"#,
        r#"{"id": "late", "time": 0, "type": "news", "content": {},
            "when": {"after": "q", "outcome": "missed"}}"#,
        r#"{"id": "go", "time": 30, "type": "sms", "content": {},
            "when": {"decision": "escalate"}, "response": {"kind": "acknowledge"}}"#,
    ]);
    let (_dir, loaded) = load_ok(&files(&owned));
    let injects = &loaded.teams[0].timeline.injects;
    let q = injects[0].play();
    let response = q.response.unwrap();
    assert_eq!(response.kind, ResponseKind::Choice);
    assert_eq!(response.options, ["A", "B"]);
    assert_eq!(
        q.expect,
        Some(Expectation {
            within: Some(60),
            choice: Some("B".into())
        })
    );
    assert_eq!(q.objectives, ["comms"]);
    assert_eq!(
        injects[3].play().when,
        Some(WhenSpec::Decision {
            name: "escalate".into(),
            delay: 0
        })
    );
    assert_eq!(loaded.channels[0].visible_to.len(), 2);
    assert_eq!(loaded.objectives[0].title, "Public communication");

    // Each team's condition names its own slot of the question.
    let plan = loaded.plan();
    assert_eq!(plan.play.len(), 8);
    assert_eq!(
        plan.play[5].when,
        Some(Condition {
            trigger: Trigger::After {
                slot: 4,
                on: OutcomeMatch::Choice("A".into())
            },
            delay: 5
        })
    );

    // Stored and loaded again (the API's form), nothing is lost.
    let again = load_inline(&to_inline(&loaded), &Limits::default()).unwrap();
    assert_eq!(again.channels, loaded.channels);
    assert_eq!(again.objectives, loaded.objectives);
    assert_eq!(
        inject_value(&again.teams[0].timeline.injects[1]),
        inject_value(&injects[1])
    );
    assert_eq!(again.plan(), plan);
}

#[test]
fn refuses_malformed_two_way_fields_naming_each() {
    check_injects(
        &[
            r#"{"id": "i-1", "time": 0, "type": "news", "content": {}, "response": {"kind": "vote"}}"#,
            r#"{"id": "i-2", "time": 0, "type": "news", "content": {}, "response": {"kind": "choice"}}"#,
            r#"{"id": "i-3", "time": 0, "type": "news", "content": {},
                "response": {"kind": "choice", "options": ["A", "A"]}}"#,
            r#"{"id": "i-4", "time": 0, "type": "news", "content": {},
                "response": {"kind": "text", "options": ["A", "B"]}}"#,
            r#"{"id": "i-5", "time": 0, "type": "news", "content": {}, "expect": {"within": 5}}"#,
            r#"{"id": "i-6", "time": 0, "type": "news", "content": {},
                "response": {"kind": "choice", "options": ["A", "B"]}, "expect": {"choice": "C"}}"#,
            r#"{"id": "i-7", "time": 0, "type": "news", "content": {},
                "response": {"kind": "text"}, "expect": {"within": 0}}"#,
            r#"{"id": "i-8", "time": 0, "type": "news", "content": {}, "when": {"after": "i-1"}}"#,
            r#"{"id": "i-9", "time": 0, "type": "news", "content": {},
                "when": {"after": "i-1", "decision": "x", "outcome": "met"}}"#,
            r#"{"id": "i-10", "time": 0, "type": "news", "content": {},
                "when": {"after": "i-1", "outcome": "sometimes"}}"#,
            r#"{"id": "i-11", "time": 0, "type": "news", "content": {},
                "when": {"decision": "", "delay": -1}}"#,
        ],
        &[
            r#"timelines/t.json: inject "i-1": "response.kind" must be acknowledge, choice or text, got "vote""#,
            r#"timelines/t.json: inject "i-2": a "choice" response needs "options""#,
            r#"timelines/t.json: inject "i-3": option "A" is offered twice"#,
            r#"timelines/t.json: inject "i-4": "response.options" only go with kind choice, not text"#,
            r#"timelines/t.json: inject "i-5": "expect" needs a "response" to expect"#,
            r#"timelines/t.json: inject "i-6": "expect.choice" "C" is not one of the options"#,
            r#"timelines/t.json: inject "i-7": "expect.within" must be at least 1 second"#,
            r#"timelines/t.json: inject "i-8": "when" with "after" needs "outcome": met, late, wrong, missed or choice:<option>"#,
            r#"timelines/t.json: inject "i-9": "when" names either "after" or "decision", not both"#,
            r#"timelines/t.json: inject "i-10": "when.outcome" must be met, late, wrong, missed or choice:<option>, got "sometimes""#,
            r#"timelines/t.json: inject "i-11": "when.delay" must be a whole number of seconds, got -1"#,
        ],
    );
}

#[test]
fn refuses_unknown_references_cycles_and_conditions_never_met() {
    let owned = with_objectives(&[
        QUESTION,
        r#"{"id": "open", "time": 0, "type": "news", "content": {}, "response": {"kind": "text"}}"#,
        r#"{"id": "u", "time": 0, "type": "news", "content": {},
            "when": {"after": "nowhere", "outcome": "met"}}"#,
        r#"{"id": "c1", "time": 0, "type": "news", "content": {},
            "when": {"after": "c2", "outcome": "choice:A"}, "response": {"kind": "choice", "options": ["A", "B"]}}"#,
        r#"{"id": "c2", "time": 0, "type": "news", "content": {},
            "when": {"after": "c1", "outcome": "choice:A"}, "response": {"kind": "choice", "options": ["A", "B"]}}"#,
        r#"{"id": "n1", "time": 0, "type": "news", "content": {},
            "when": {"after": "q", "outcome": "choice:C"}}"#,
        r#"{"id": "n2", "time": 0, "type": "news", "content": {},
            "when": {"after": "open", "outcome": "met"}}"#,
        r#"{"id": "n3", "time": 0, "type": "news", "content": {},
            "when": {"after": "open", "outcome": "choice:A"}}"#,
        r#"{"id": "n4", "time": 0, "type": "news", "content": {},
            "when": {"after": "q", "outcome": "missed", "delay": 540}}"#,
        r#"{"id": "n5", "time": 0, "type": "news", "content": {}, "objectives": ["speed"]}"#,
    ]);
    check(
        &files(&owned),
        &[
            r#"timelines/t.json: inject "u": "when.after" names inject "nowhere", which is not in this timeline"#,
            r#"timelines/t.json: inject "c1": conditions form a cycle: c1 -> c2 -> c1"#,
            r#"timelines/t.json: inject "c2": conditions form a cycle: c2 -> c1 -> c2"#,
            r#"timelines/t.json: inject "n1": the condition can never be met: inject "q" offers no option "C""#,
            r#"timelines/t.json: inject "n2": the condition can never be met: inject "open" has no "expect", so it has no outcome"#,
            r#"timelines/t.json: inject "n3": the condition can never be met: inject "open" asks for no choice"#,
            r#"timelines/t.json: inject "n4": the condition can never be met before the end: the earliest it can go out is T+10:10, after the end (T+10:00)"#,
            r#"timelines/t.json: inject "n5": "objectives" names "speed", which is not one of the scenario's objectives"#,
        ],
    );
}

#[test]
fn refuses_channels_for_unknown_teams_and_conditions_in_turns() {
    check(
        &[
            (
                "scenario.json",
                r#"{"duration_minutes": 10, "teams": [{"id": "blue", "timeline_id": "t"}],
                    "channels": [{"id": "wire", "kind": "news", "visible_to": ["blue", "green"]},
                                 {"id": "x", "kind": "Loud", "visible_to": ["blue"]},
                                 {"id": "wire", "kind": "news", "visible_to": ["blue"]}],
                    "objectives": [{"id": "o"}]}"#,
            ),
            ("timelines/t.json", &timeline(&[BRIEFING])),
        ],
        &[
            r#"scenario.json: channel #1: "kind" must be a lowercase word like an inject type, got "Loud""#,
            r#"scenario.json: channel "wire": duplicate channel id"#,
            r#"scenario.json: objective #0: "title" must be a string, got null"#,
            r#"scenario.json: channel "wire": "visible_to" names team "green", which is not in the scenario"#,
        ],
    );
    check(
        &[
            (
                "scenario.json",
                r#"{"turn_based": true, "teams": [{"id": "blue", "timeline_id": "t"}]}"#,
            ),
            (
                "timelines/t.json",
                &timeline(&[
                    r#"{"id": "i-1", "time": 0, "turn": 1, "type": "news", "content": {}}"#,
                    r#"{"id": "i-2", "time": 0, "turn": 2, "type": "news", "content": {},
                        "when": {"decision": "go"}}"#,
                ]),
            ),
        ],
        &[
            r#"timelines/t.json: inject "i-2": "when" is not supported in a turn-based scenario: a turn's injects are fixed when it starts"#,
        ],
    );
}
