//! `cargo fuzz run snapshot_decode`: see `check_snapshot_decode` in tests/fuzz_checks/mod.rs
//! for the properties checked (shared with the property tests).
#![no_main]

#[allow(dead_code)]
#[path = "../../tests/fuzz_checks/mod.rs"]
mod fuzz_checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_checks::check_snapshot_decode(data));
