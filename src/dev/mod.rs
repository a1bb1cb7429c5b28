//! Development and demonstration: the synthetic inventory generator (tests,
//! benchmarks) and `tally demo`.

pub mod demo;
pub mod generate;
