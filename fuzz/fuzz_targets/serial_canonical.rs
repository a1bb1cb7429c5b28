//! `cargo fuzz run serial_canonical`: see `check_serial_canonical` in tests/fuzz_checks/mod.rs
//! for the properties checked (shared with the property tests).
#![no_main]

#[allow(dead_code)]
#[path = "../../tests/fuzz_checks/mod.rs"]
mod fuzz_checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_checks::check_serial_canonical(data));
