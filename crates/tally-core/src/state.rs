//! Member-state identity: ISO 3166-1 alpha-3 codes such as `RUS` or `KAZ`.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The six member states of the alliance, the default set of known states.
pub const MEMBER_STATES: [&str; 6] = ["RUS", "BLR", "ARM", "KAZ", "KGZ", "TJK"];

/// A state code: exactly three ASCII upper-case letters.
///
/// Stored inline (three bytes) because it is copied into every item and every
/// storage key.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StateCode([u8; 3]);

/// Why a string is not a state code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a state code (expected three upper-case letters, e.g. RUS)")]
pub struct InvalidStateCode(pub String);

impl StateCode {
    /// Parses a code; accepts exactly three ASCII upper-case letters, nothing else.
    pub fn parse(s: &str) -> Result<StateCode, InvalidStateCode> {
        match s.as_bytes() {
            [a, b, c] if [a, b, c].iter().all(|x| x.is_ascii_uppercase()) => {
                Ok(StateCode([*a, *b, *c]))
            }
            _ => Err(InvalidStateCode(crate::quote::excerpt(s))),
        }
    }

    /// The code's three bytes, as they appear in the signed encodings.
    pub fn as_bytes(&self) -> &[u8; 3] {
        &self.0
    }

    pub fn as_str(&self) -> &str {
        // The constructor only admits ASCII letters, so this cannot fail.
        std::str::from_utf8(&self.0).unwrap_or("???")
    }
}

impl FromStr for StateCode {
    type Err = InvalidStateCode;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        StateCode::parse(s)
    }
}

impl fmt::Display for StateCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for StateCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StateCode({})", self.as_str())
    }
}

impl Serialize for StateCode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for StateCode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        StateCode::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A set of state codes that a component accepts as counterparties.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StateSet(BTreeSet<StateCode>);

impl StateSet {
    /// The six member states.
    pub fn members() -> StateSet {
        StateSet(
            MEMBER_STATES
                .iter()
                .filter_map(|s| StateCode::parse(s).ok())
                .collect(),
        )
    }

    pub fn contains(&self, code: &StateCode) -> bool {
        self.0.contains(code)
    }

    pub fn iter(&self) -> impl Iterator<Item = &StateCode> {
        self.0.iter()
    }
}

impl FromIterator<StateCode> for StateSet {
    fn from_iter<T: IntoIterator<Item = StateCode>>(iter: T) -> Self {
        StateSet(iter.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_three_upper_case_letters_only() {
        assert_eq!(StateCode::parse("RUS").unwrap().as_str(), "RUS");
        for bad in ["", "RU", "RUSS", "rus", "R1S", "РУС", " RUS"] {
            assert!(StateCode::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn members_are_the_six_states() {
        let m = StateSet::members();
        assert_eq!(m.iter().count(), 6);
        assert!(m.contains(&"KGZ".parse().unwrap()));
        assert!(!m.contains(&"USA".parse().unwrap()));
    }
}
