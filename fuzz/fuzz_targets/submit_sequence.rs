//! `cargo fuzz run submit_sequence`: arbitrary sequences of submissions
//! against an in-process coordinator; see tests/fuzz_checks/submit.rs.
#![no_main]

#[allow(dead_code)]
#[path = "../../tests/fuzz_checks/mod.rs"]
mod fuzz_checks;

libfuzzer_sys::fuzz_target!(|scenario: fuzz_checks::submit::Scenario| {
    fuzz_checks::submit::run_scenario(&scenario);
});
