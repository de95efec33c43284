//! Scenario-shaped JSON values (teams, timelines as an array or keyed, injects,
//! turns, each part sometimes any value) and, one input in eight, any JSON
//! value, validated by `scenario::load_inline` under the default or small
//! limits; an accepted scenario must satisfy `check_accepted`. With
//! `SCIP_FUZZ_VERBOSE=1` each value and its outcome go to stderr.

#![no_main]

use arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;

use scip_orchestrator_fuzz::{check_inline, limits, scenario, value};

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(limits) = limits(&mut u) else {
        return;
    };
    let generated = if u.ratio(1, 8).unwrap_or(false) {
        value(&mut u, 6)
    } else {
        scenario(&mut u)
    };
    if let Ok(generated) = generated {
        check_inline(&generated, &limits);
    }
});
