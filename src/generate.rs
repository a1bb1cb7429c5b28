//! Seeded generation of realistic inventory exports, for benchmarks, tests
//! and the demo. Deterministic: the same seed gives the same bytes.

use std::fmt::Write;

use crate::state::StateCode;

/// Model codes of MANPADS launchers, missiles and small arms.
pub const MODELS: [&str; 8] = [
    "9K38", "9P39", "9M39", "9K310", "9M313", "9P516", "AK-74M", "PKM",
];

/// SplitMix64: tiny, fast, and good enough for test data (not for keys).
#[derive(Debug, Clone)]
pub struct SplitMix(u64);

impl SplitMix {
    pub fn new(seed: u64) -> SplitMix {
        SplitMix(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// A CSV export of `n` distinct held items for `state`: serials like
/// `KA-0012345`, a few percent spelled with Cyrillic look-alikes or in lower
/// case, as real ministry records are.
pub fn inventory_csv(state: StateCode, n: usize, seed: u64) -> String {
    let mut rng = SplitMix::new(seed);
    let mut out = String::with_capacity(n * 40 + 64);
    out.push_str("model,serial,status,site,counterparty\n");
    let prefix = &state.as_str()[..2];
    for i in 0..n {
        let model = MODELS[i % MODELS.len()];
        let status = if rng.below(3) == 0 {
            "in_storage"
        } else {
            "in_service"
        };
        let depot = rng.below(40);
        let serial = match rng.below(50) {
            // Cyrillic К and А: the same key as the Latin spelling.
            0 => format!("КА-{prefix}{i:08}"),
            1 => format!("ka-{}{i:08}", prefix.to_lowercase()),
            _ => format!("KA-{prefix}{i:08}"),
        };
        let _ = writeln!(out, "{model},{serial},{status},Depot {depot},");
    }
    out
}
