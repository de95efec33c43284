//! Any bytes, parsed as JSON as an upload is, then validated by
//! `scenario::load_inline` (the `package` of `POST /exercises`); an accepted
//! scenario must satisfy `check_accepted`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;

use scip_orchestrator::config::Limits;
use scip_orchestrator_fuzz::check_inline;

fuzz_target!(|data: &[u8]| {
    if let Ok(value) = serde_json::from_slice::<Value>(data) {
        check_inline(&value, &Limits::default());
    }
});
