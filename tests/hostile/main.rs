//! Hostile input that fuzzing (`fuzz/`, README "Fuzzing") found to crash or
//! mislead the program: one test per finding, kept as a regression. Each
//! input is also a seed of the fuzz target that found it.

use serde_json::{Value, json};

use scip_orchestrator::config::Limits;
use scip_orchestrator::scenario::{load_inline, to_inline};

/// An upload without a duration whose one inject is at `time`.
fn undated(time: u64, turn_based: bool) -> Value {
    let mut inject = json!({"id": "a", "time": time, "type": "news", "content": {}});
    if turn_based {
        inject["turn"] = json!(1);
    }
    json!({
        "turn_based": turn_based,
        "teams": [{"id": "blue", "timeline_id": "t"}],
        "timelines": [{"id": "t", "injects": [inject]}],
    })
}

/// Without a duration the exercise ends on the whole minute after its last
/// inject, `(last + 60).div_ceil(60) * 60` in `Header::finish`: for a last
/// inject after 4,294,967,220 s that overflowed, a panic in debug builds and,
/// in release, a 60-second exercise with an inject due 136 years later.
/// Found by `scenario_value`.
#[test]
fn a_huge_inject_time_without_a_duration_is_refused() {
    for time in [
        4_294_967_221,
        4_294_967_235,
        4_294_967_236,
        u64::from(u32::MAX),
    ] {
        for turn_based in [false, true] {
            let result = load_inline(&undated(time, turn_based), &Limits::default());
            let Err(errors) = result else {
                panic!("time {time} (turn-based: {turn_based}): accepted");
            };
            assert!(
                errors.iter().any(|e| e.reason.contains("over the limit")),
                "time {time} (turn-based: {turn_based}): {errors:?}"
            );
        }
    }
}

/// A turn-based upload without `total_turns` took any `turn` up to 65535,
/// but `to_inline` writes the count as `total_turns`, which loading allows
/// only up to 1000: the form the service stores could not be loaded back, so
/// such an exercise was not restored after a restart. A turn over 1000 is
/// now refused with or without `total_turns`, and accepted scenarios load
/// back from their stored form. Found by `scenario_value`.
#[test]
fn a_turn_based_scenario_loads_back_from_its_stored_form() {
    for turn in [1, 1000, 1001, 65535] {
        let package = json!({
            "turn_based": true,
            "duration_minutes": 120,
            "teams": [{"id": "blue", "timeline_id": "t"}],
            "timelines": [{"id": "t", "injects": [
                {"id": "a", "time": 0, "turn": turn, "type": "news", "content": {}},
            ]}],
        });
        let scenario = match load_inline(&package, &Limits::default()) {
            Ok(scenario) => scenario,
            Err(errors) => {
                assert!(turn > 1000, "turn {turn} refused: {errors:?}");
                assert!(
                    errors[0].to_string().contains("from 1 to 1000"),
                    "turn {turn}: {errors:?}"
                );
                continue;
            }
        };
        assert!(turn <= 1000, "turn {turn} accepted");
        let stored = to_inline(&scenario);
        let again = load_inline(&stored, &Limits::default())
            .unwrap_or_else(|errors| panic!("turn {turn}: {errors:?}"));
        assert_eq!(again.turns, scenario.turns, "turn {turn}");
    }
}
