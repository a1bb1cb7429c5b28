//! Items: one serial-numbered article as a state reports it, validated once.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::serial::{CanonicalError, CanonicalModel, CanonicalRule, CanonicalSerial, ItemKey};
use crate::state::StateCode;

/// What a state says about an item (docs/protocol.md §2.1).
///
/// The numeric codes are part of the signed leaf encoding (docs/protocol.md):
/// never renumber them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum Status {
    InService = 1,
    InStorage = 2,
    TransferredOut = 3,
    Expended = 4,
    Destroyed = 5,
    Lost = 6,
}

impl Status {
    pub const ALL: [Status; 6] = [
        Status::InService,
        Status::InStorage,
        Status::TransferredOut,
        Status::Expended,
        Status::Destroyed,
        Status::Lost,
    ];

    /// The spelling used in exports and on the wire, e.g. `in_service`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::InService => "in_service",
            Status::InStorage => "in_storage",
            Status::TransferredOut => "transferred_out",
            Status::Expended => "expended",
            Status::Destroyed => "destroyed",
            Status::Lost => "lost",
        }
    }

    /// The byte that stands for this status in the leaf encoding.
    pub fn code(self) -> u8 {
        self as u8
    }

    pub(crate) fn from_code(code: u8) -> Option<Status> {
        Status::ALL.into_iter().find(|s| s.code() == code)
    }

    /// Returns true if and only if the state still has the item (`in_service` or `in_storage`).
    pub fn is_held(self) -> bool {
        matches!(self, Status::InService | Status::InStorage)
    }

    /// Returns true if and only if the item no longer exists (`expended` or `destroyed`).
    pub fn is_disposed(self) -> bool {
        matches!(self, Status::Expended | Status::Destroyed)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A status spelling that is not one of the six.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown status '{0}' (expected one of in_service, in_storage, transferred_out, expended, destroyed, lost)"
)]
pub struct UnknownStatus(pub String);

impl FromStr for Status {
    type Err = UnknownStatus;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Status::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_string()))
    }
}

/// Longest raw model, serial or site accepted, in UTF-8 bytes. Keeps every
/// field (and its canonical form, which NFKC can lengthen) far inside the
/// u16 length prefix of the leaf encoding.
pub const MAX_FIELD_BYTES: usize = 256;

/// Why a set of raw fields is not a valid item.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ItemError {
    #[error("{field} is {len} bytes long; at most {max} bytes are allowed")]
    TooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },
    #[error("model {0}")]
    Model(CanonicalError),
    #[error("serial {0}")]
    Serial(CanonicalError),
    #[error("status transferred_out needs a counterparty state code")]
    MissingCounterparty,
    #[error(
        "counterparty {counterparty} is only allowed with status transferred_out, not {status}"
    )]
    UnexpectedCounterparty {
        counterparty: StateCode,
        status: Status,
    },
}

/// The rules on raw fields that do not involve canonicalisation: lengths,
/// and counterparty present if and only if the status is `transferred_out`.
pub(crate) fn check_fields(
    model: &str,
    serial: &str,
    status: Status,
    site: &str,
    counterparty: Option<StateCode>,
) -> Result<(), ItemError> {
    for (field, value) in [("model", model), ("serial", serial), ("site", site)] {
        if value.len() > MAX_FIELD_BYTES {
            return Err(ItemError::TooLong {
                field,
                len: value.len(),
                max: MAX_FIELD_BYTES,
            });
        }
    }
    match (status, counterparty) {
        (Status::TransferredOut, None) => Err(ItemError::MissingCounterparty),
        (status, Some(counterparty)) if status != Status::TransferredOut => {
            Err(ItemError::UnexpectedCounterparty {
                counterparty,
                status,
            })
        }
        _ => Ok(()),
    }
}

/// One article as reported: raw spellings kept (they are signed evidence),
/// plus the canonical key used for matching.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Item {
    pub key: ItemKey,
    /// The model exactly as the ministry wrote it.
    pub model: String,
    /// The serial exactly as the ministry wrote it.
    pub serial: String,
    pub status: Status,
    /// Depot or unit holding the item; free text, may be empty.
    pub site: String,
    /// Receiving state, present if and only if `status` is `transferred_out`.
    pub counterparty: Option<StateCode>,
}

impl Item {
    /// Builds an item from raw fields, computing its key under `rule` and
    /// checking the status/counterparty pairing.
    pub fn new(
        model: &str,
        serial: &str,
        status: Status,
        site: &str,
        counterparty: Option<StateCode>,
        rule: &CanonicalRule,
    ) -> Result<Item, ItemError> {
        check_fields(model, serial, status, site, counterparty)?;
        let key = ItemKey {
            model: CanonicalModel::from_raw(model, rule).map_err(ItemError::Model)?,
            serial: CanonicalSerial::from_raw(serial, rule).map_err(ItemError::Serial)?,
        };
        Ok(Item {
            key,
            model: model.to_string(),
            serial: serial.to_string(),
            status,
            site: site.to_string(),
            counterparty,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_round_trip_and_spellings_parse() {
        for s in Status::ALL {
            assert_eq!(Status::from_code(s.code()), Some(s));
            assert_eq!(s.as_str().parse::<Status>(), Ok(s));
        }
        assert_eq!(Status::from_code(0), None);
        assert_eq!(Status::from_code(7), None);
        assert!("In_Service".parse::<Status>().is_err());
    }

    #[test]
    fn overlong_fields_are_refused_by_name() {
        let rule = CanonicalRule::default();
        let long = "X".repeat(MAX_FIELD_BYTES + 1);
        let ok = "X".repeat(MAX_FIELD_BYTES);
        assert!(Item::new(&ok, &ok, Status::InService, &ok, None, &rule).is_ok());
        for (m, s, site, field) in [
            (&long, &ok, &ok, "model"),
            (&ok, &long, &ok, "serial"),
            (&ok, &ok, &long, "site"),
        ] {
            assert_eq!(
                Item::new(m, s, Status::InService, site, None, &rule),
                Err(ItemError::TooLong {
                    field,
                    len: MAX_FIELD_BYTES + 1,
                    max: MAX_FIELD_BYTES
                })
            );
        }
    }

    #[test]
    fn counterparty_goes_with_transferred_out_only() {
        let rule = CanonicalRule::default();
        let kaz: StateCode = "KAZ".parse().unwrap();
        assert_eq!(
            Item::new("9K38", "1", Status::TransferredOut, "", None, &rule),
            Err(ItemError::MissingCounterparty)
        );
        assert!(matches!(
            Item::new("9K38", "1", Status::InService, "", Some(kaz), &rule),
            Err(ItemError::UnexpectedCounterparty { .. })
        ));
        assert!(Item::new("9K38", "1", Status::TransferredOut, "", Some(kaz), &rule).is_ok());
    }
}
