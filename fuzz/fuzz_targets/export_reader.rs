//! `cargo fuzz run export_reader`: see `check_export_reader` in tests/fuzz_checks/mod.rs
//! for the properties checked (shared with the property tests).
#![no_main]

#[allow(dead_code)]
#[path = "../../tests/fuzz_checks/mod.rs"]
mod fuzz_checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_checks::check_export_reader(data));
