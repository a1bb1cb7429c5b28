//! The audit trail: who did what, when, from where, and whether it was
//! refused — for every operator action, every rejected submission and every
//! call refused by the access layer.
//!
//! Records form a hash chain signed by the coordinator's Ed25519 key (the
//! key that signs receipts). Whoever can write to the store but does not hold
//! the key cannot change, insert or remove a record without [`verify`]
//! naming the first record that no longer fits. Removing records from the
//! *end* of the trail leaves a shorter, valid chain: compare the head hash
//! `tally audit verify` prints with one noted earlier to detect that.
//!
//! # Encoding, version 1
//!
//! Every integer is big-endian; a *string* is a `u32` byte length followed by
//! that many UTF-8 bytes; an *option* is one byte, 0 (absent) or 1 (present)
//! followed by the value.
//!
//! ```text
//! u8      version             1
//! u64     sequence            1, 2, 3, ... without gaps
//! i64     at_unix_ms          when the coordinator wrote the record
//! actor   u8 tag, then
//!           0 anonymous       (no credentials, an unknown token, or insecure mode)
//!           1 person          string name, u8 role (1 auditor, 2 operator)
//!           2 node            string state (named by its client certificate)
//! option<string> peer         the caller's address, e.g. "10.0.0.7:51234"
//! action  u8 tag, then
//!           1 acknowledge     u64 alert id
//!           2 resolve         u64 alert id, string reason ("" if not given)
//!           3 reopen          u64 alert id
//!           4 seizures        u64 items, option<u64> report id
//!           5 submit          option<string> claimed state, option<u64> claimed sequence
//!           6 call            string gRPC path (a call the access layer refused)
//! outcome u8 tag, then
//!           0 ok
//!           1 refused         u32 gRPC status code, string reason
//! ```
//!
//! Decoding accepts exactly this form: no trailing bytes, no unknown tags,
//! so every record has one encoding.
//!
//! # Chain
//!
//! `hash(n) = SHA-256(hash(n-1) || encoding(n))`, with 32 zero bytes before
//! record 1; the coordinator signs `"tally/v1/audit-record\0" || hash(n)`
//! (the prefix keeps these signatures apart from receipt signatures).
//!
//! Token values and key material never enter a record: people appear by the
//! name configured for their token.

use std::fmt;

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::access::{Principal, Role};
use crate::state::StateCode;

/// Version byte of the record encoding.
pub(crate) const ENCODING_VERSION: u8 = 1;
/// What comes before record 1 in the chain.
pub const GENESIS_HASH: [u8; 32] = [0; 32];
/// Prefix of the signed message.
pub(crate) const SIGNATURE_DOMAIN: &[u8; 22] = b"tally/v1/audit-record\0";
/// Longest text kept from a caller-supplied or error string; longer text is
/// cut (at a character boundary) so a caller cannot grow the trail at will.
pub(crate) const MAX_TEXT_BYTES: usize = 1024;
/// Longest claimed state code kept from a rejected submission.
pub(crate) const MAX_CLAIMED_STATE_BYTES: usize = 16;

/// Who acted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// No credentials, an unknown bearer token, or insecure mode.
    Anonymous,
    /// An operator or auditor, by the name configured for their token.
    Person { name: String, role: Role },
    /// A member-state node, by the state its client certificate names.
    Node { state: StateCode },
}

impl Actor {
    /// The actor of a request the access layer admitted (or `None`: not known).
    pub fn of(principal: Option<&Principal>) -> Actor {
        match principal {
            Some(Principal::Person { name, role }) => Actor::Person {
                name: name.clone(),
                role: *role,
            },
            Some(Principal::Member(state)) => Actor::Node { state: *state },
            Some(Principal::Unchecked) | None => Actor::Anonymous,
        }
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::Anonymous => f.write_str("anonymous"),
            Actor::Person { name, role } => write!(f, "{role} {name}"),
            Actor::Node { state } => write!(f, "node {state}"),
        }
    }
}

/// What was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    AcknowledgeAlert {
        alert_id: u64,
    },
    ResolveAlert {
        alert_id: u64,
        /// The resolution reason's name; empty if the request had none valid.
        reason: String,
    },
    ReopenAlert {
        alert_id: u64,
    },
    ReportSeizures {
        items: u64,
        /// The stored report, when it was accepted.
        report_id: Option<u64>,
    },
    /// A snapshot submission, with what its header claimed (when a header
    /// arrived at all).
    Submit {
        state: Option<String>,
        sequence: Option<u64>,
    },
    /// A call the access layer refused, by gRPC path.
    Call {
        rpc: String,
    },
}

impl Action {
    /// Short stable name, e.g. `resolve_alert`.
    pub fn kind(&self) -> &'static str {
        match self {
            Action::AcknowledgeAlert { .. } => "acknowledge_alert",
            Action::ResolveAlert { .. } => "resolve_alert",
            Action::ReopenAlert { .. } => "reopen_alert",
            Action::ReportSeizures { .. } => "report_seizures",
            Action::Submit { .. } => "submit",
            Action::Call { .. } => "call",
        }
    }

    /// A snapshot submission with its claims cut to size.
    pub fn submit(state: Option<&str>, sequence: Option<u64>) -> Action {
        Action::Submit {
            state: state.map(|s| cut(s, MAX_CLAIMED_STATE_BYTES)),
            sequence,
        }
    }

    /// A refused call, the path cut to size.
    pub fn call(rpc: &str) -> Action {
        Action::Call {
            rpc: cut(rpc, MAX_TEXT_BYTES),
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::AcknowledgeAlert { alert_id } => write!(f, "acknowledge alert {alert_id}"),
            Action::ResolveAlert { alert_id, reason } if reason.is_empty() => {
                write!(f, "resolve alert {alert_id}")
            }
            Action::ResolveAlert { alert_id, reason } => {
                write!(f, "resolve alert {alert_id} ({reason})")
            }
            Action::ReopenAlert { alert_id } => write!(f, "reopen alert {alert_id}"),
            Action::ReportSeizures { items, report_id } => {
                write!(f, "report {items} seized item(s)")?;
                match report_id {
                    Some(id) => write!(f, " as report {id}"),
                    None => Ok(()),
                }
            }
            Action::Submit { state, sequence } => {
                f.write_str("submit snapshot")?;
                if let Some(s) = state {
                    write!(f, " {s}")?;
                }
                if let Some(n) = sequence {
                    write!(f, " #{n}")?;
                }
                Ok(())
            }
            Action::Call { rpc } => write!(f, "call {rpc}"),
        }
    }
}

/// How it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Refused {
        /// gRPC status code (e.g. 7 for PERMISSION_DENIED).
        code: u32,
        reason: String,
    },
}

impl Outcome {
    /// A refusal, the reason cut to size.
    pub fn refused(code: u32, reason: &str) -> Outcome {
        Outcome::Refused {
            code,
            reason: cut(reason, MAX_TEXT_BYTES),
        }
    }

    /// `OK` or the gRPC code's canonical name, e.g. `PERMISSION_DENIED`.
    pub fn code_name(&self) -> &'static str {
        match self {
            Outcome::Ok => "OK",
            Outcome::Refused { code, .. } => grpc_code_name(*code),
        }
    }
}

/// The canonical name of a gRPC status code.
pub fn grpc_code_name(code: u32) -> &'static str {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    NAMES.get(code as usize).copied().unwrap_or("UNKNOWN_CODE")
}

/// `s` cut to at most `max` bytes at a character boundary.
fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// What happened, before it has a place in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub at_unix_ms: i64,
    pub actor: Actor,
    pub peer: Option<String>,
    pub action: Action,
    pub outcome: Outcome,
}

/// One record of the trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// 1 for the first record, then +1.
    pub sequence: u64,
    pub event: Event,
}

/// Why bytes are not a version-1 record encoding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown encoding version {0} (this build reads version {ENCODING_VERSION})")]
    Version(u8),
    #[error("the encoding ends early")]
    Truncated,
    #[error("{0} trailing byte(s) after the record")]
    Trailing(usize),
    #[error("unknown {what} tag {tag}")]
    Tag { what: &'static str, tag: u8 },
    #[error("a text field is not UTF-8")]
    Utf8,
    #[error("the actor's state code is invalid: {0}")]
    State(String),
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

impl AuditRecord {
    /// The version-1 encoding (see the module documentation).
    pub fn encode(&self) -> Vec<u8> {
        let e = &self.event;
        let mut out = Vec::with_capacity(64);
        out.push(ENCODING_VERSION);
        out.extend_from_slice(&self.sequence.to_be_bytes());
        out.extend_from_slice(&e.at_unix_ms.to_be_bytes());
        match &e.actor {
            Actor::Anonymous => out.push(0),
            Actor::Person { name, role } => {
                out.push(1);
                put_str(&mut out, name);
                out.push(match role {
                    Role::Auditor => 1,
                    Role::Operator => 2,
                });
            }
            Actor::Node { state } => {
                out.push(2);
                put_str(&mut out, state.as_str());
            }
        }
        match &e.peer {
            None => out.push(0),
            Some(p) => {
                out.push(1);
                put_str(&mut out, p);
            }
        }
        match &e.action {
            Action::AcknowledgeAlert { alert_id } => {
                out.push(1);
                out.extend_from_slice(&alert_id.to_be_bytes());
            }
            Action::ResolveAlert { alert_id, reason } => {
                out.push(2);
                out.extend_from_slice(&alert_id.to_be_bytes());
                put_str(&mut out, reason);
            }
            Action::ReopenAlert { alert_id } => {
                out.push(3);
                out.extend_from_slice(&alert_id.to_be_bytes());
            }
            Action::ReportSeizures { items, report_id } => {
                out.push(4);
                out.extend_from_slice(&items.to_be_bytes());
                match report_id {
                    None => out.push(0),
                    Some(id) => {
                        out.push(1);
                        out.extend_from_slice(&id.to_be_bytes());
                    }
                }
            }
            Action::Submit { state, sequence } => {
                out.push(5);
                match state {
                    None => out.push(0),
                    Some(s) => {
                        out.push(1);
                        put_str(&mut out, s);
                    }
                }
                match sequence {
                    None => out.push(0),
                    Some(n) => {
                        out.push(1);
                        out.extend_from_slice(&n.to_be_bytes());
                    }
                }
            }
            Action::Call { rpc } => {
                out.push(6);
                put_str(&mut out, rpc);
            }
        }
        match &e.outcome {
            Outcome::Ok => out.push(0),
            Outcome::Refused { code, reason } => {
                out.push(1);
                out.extend_from_slice(&code.to_be_bytes());
                put_str(&mut out, reason);
            }
        }
        out
    }

    /// Reads a version-1 encoding; anything else is an error.
    pub fn decode(bytes: &[u8]) -> Result<AuditRecord, DecodeError> {
        let mut r = Reader(bytes);
        let version = r.u8()?;
        if version != ENCODING_VERSION {
            return Err(DecodeError::Version(version));
        }
        let sequence = r.u64()?;
        let at_unix_ms = r.u64()? as i64;
        let actor = match r.u8()? {
            0 => Actor::Anonymous,
            1 => {
                let name = r.string()?;
                let role = match r.u8()? {
                    1 => Role::Auditor,
                    2 => Role::Operator,
                    tag => return Err(DecodeError::Tag { what: "role", tag }),
                };
                Actor::Person { name, role }
            }
            2 => {
                let s = r.string()?;
                let state = StateCode::parse(&s).map_err(|e| DecodeError::State(e.to_string()))?;
                Actor::Node { state }
            }
            tag => return Err(DecodeError::Tag { what: "actor", tag }),
        };
        let peer = r.option(Reader::string)?;
        let action = match r.u8()? {
            1 => Action::AcknowledgeAlert { alert_id: r.u64()? },
            2 => Action::ResolveAlert {
                alert_id: r.u64()?,
                reason: r.string()?,
            },
            3 => Action::ReopenAlert { alert_id: r.u64()? },
            4 => Action::ReportSeizures {
                items: r.u64()?,
                report_id: r.option(Reader::u64)?,
            },
            5 => Action::Submit {
                state: r.option(Reader::string)?,
                sequence: r.option(Reader::u64)?,
            },
            6 => Action::Call { rpc: r.string()? },
            tag => {
                return Err(DecodeError::Tag {
                    what: "action",
                    tag,
                });
            }
        };
        let outcome = match r.u8()? {
            0 => Outcome::Ok,
            1 => Outcome::Refused {
                code: r.u32()?,
                reason: r.string()?,
            },
            tag => {
                return Err(DecodeError::Tag {
                    what: "outcome",
                    tag,
                });
            }
        };
        if !r.0.is_empty() {
            return Err(DecodeError::Trailing(r.0.len()));
        }
        Ok(AuditRecord {
            sequence,
            event: Event {
                at_unix_ms,
                actor,
                peer,
                action,
                outcome,
            },
        })
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let (head, rest) = self
            .0
            .split_first_chunk::<N>()
            .ok_or(DecodeError::Truncated)?;
        self.0 = rest;
        Ok(*head)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take::<1>()?[0])
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.take()?))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.take()?))
    }
    fn string(&mut self) -> Result<String, DecodeError> {
        let len = self.u32()? as usize;
        if self.0.len() < len {
            return Err(DecodeError::Truncated);
        }
        let (s, rest) = self.0.split_at(len);
        self.0 = rest;
        String::from_utf8(s.to_vec()).map_err(|_| DecodeError::Utf8)
    }
    fn option<T>(
        &mut self,
        read: impl FnOnce(&mut Self) -> Result<T, DecodeError>,
    ) -> Result<Option<T>, DecodeError> {
        match self.u8()? {
            0 => Ok(None),
            1 => read(self).map(Some),
            tag => Err(DecodeError::Tag {
                what: "option",
                tag,
            }),
        }
    }
}

/// The chain hash of a record whose encoding is `encoding`.
pub fn chain_hash(previous: &[u8; 32], encoding: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(previous);
    h.update(encoding);
    h.finalize().into()
}

fn signed_message(hash: &[u8; 32]) -> Vec<u8> {
    let mut m = Vec::with_capacity(SIGNATURE_DOMAIN.len() + 32);
    m.extend_from_slice(SIGNATURE_DOMAIN);
    m.extend_from_slice(hash);
    m
}

/// A record as stored and served: its encoding, chain hash and signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedRecord {
    /// The sequence the record is stored under.
    pub sequence: u64,
    pub encoding: Vec<u8>,
    pub hash: Vec<u8>,
    pub signature: Vec<u8>,
}

impl SealedRecord {
    /// Places `event` after the record whose hash is `previous`, as record
    /// `sequence`, and signs it.
    pub fn seal(
        sequence: u64,
        event: Event,
        previous: &[u8; 32],
        key: &SigningKey,
    ) -> SealedRecord {
        let encoding = AuditRecord { sequence, event }.encode();
        let hash = chain_hash(previous, &encoding);
        let signature = key.sign(&signed_message(&hash));
        SealedRecord {
            sequence,
            encoding,
            hash: hash.to_vec(),
            signature: signature.to_bytes().to_vec(),
        }
    }

    /// The stored form: hash (32 bytes), signature (64 bytes), encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(96 + self.encoding.len());
        out.extend_from_slice(&self.hash);
        out.extend_from_slice(&self.signature);
        out.extend_from_slice(&self.encoding);
        out
    }

    /// Splits a stored value. Nothing is checked here ([`verify`] does
    /// that): a value too short to hold a hash and a signature comes back
    /// with the short fields it has, and fails verification.
    pub fn from_bytes(sequence: u64, bytes: &[u8]) -> SealedRecord {
        let hash_end = bytes.len().min(32);
        let sig_end = bytes.len().min(96);
        SealedRecord {
            sequence,
            hash: bytes[..hash_end].to_vec(),
            signature: bytes[hash_end..sig_end].to_vec(),
            encoding: bytes[sig_end..].to_vec(),
        }
    }

    /// The decoded record (not verified).
    pub fn decode(&self) -> Result<AuditRecord, DecodeError> {
        AuditRecord::decode(&self.encoding)
    }

    /// The hash as an array, if it has the right length.
    pub fn hash_array(&self) -> Option<[u8; 32]> {
        self.hash.as_slice().try_into().ok()
    }
}

/// Why a record breaks the chain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BreakReason {
    #[error("gap in sequence numbers: expected record {expected}, found {found}")]
    Gap { expected: u64, found: u64 },
    #[error("stored hash is {0} bytes, not 32")]
    HashLength(usize),
    #[error(
        "bad hash link: SHA-256(previous hash || encoding) is not the stored hash \
         (the record or the one before it was altered)"
    )]
    HashMismatch,
    #[error("bad signature: not signed by the coordinator's key")]
    BadSignature,
    #[error("the encoding does not decode: {0}")]
    Undecodable(DecodeError),
    #[error("the encoding says record {encoded}, but it is stored as record {stored}")]
    SequenceMismatch { encoded: u64, stored: u64 },
}

/// The first record that does not fit the chain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit record {sequence}: {reason}")]
pub struct ChainBreak {
    /// The sequence the record is stored under.
    pub sequence: u64,
    pub reason: BreakReason,
}

/// A chain that verified: how many records and the last hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifiedChain {
    pub records: u64,
    /// The hash of the last record ([`GENESIS_HASH`] for an empty trail).
    pub head: [u8; 32],
}

/// Checks a whole trail, from record 1, in order: sequence numbers without
/// gaps, each hash linking to the one before, each signature by `key`, each
/// encoding decoding to the sequence it is stored under. Returns the first
/// record that fails and why.
pub fn verify<'a>(
    records: impl IntoIterator<Item = &'a SealedRecord>,
    key: &VerifyingKey,
) -> Result<VerifiedChain, ChainBreak> {
    let mut previous = GENESIS_HASH;
    let mut expected = 1u64;
    for r in records {
        let fail = |reason| ChainBreak {
            sequence: r.sequence,
            reason,
        };
        if r.sequence != expected {
            return Err(fail(BreakReason::Gap {
                expected,
                found: r.sequence,
            }));
        }
        let hash = r
            .hash_array()
            .ok_or_else(|| fail(BreakReason::HashLength(r.hash.len())))?;
        if chain_hash(&previous, &r.encoding) != hash {
            return Err(fail(BreakReason::HashMismatch));
        }
        let signature =
            Signature::from_slice(&r.signature).map_err(|_| fail(BreakReason::BadSignature))?;
        key.verify(&signed_message(&hash), &signature)
            .map_err(|_| fail(BreakReason::BadSignature))?;
        let decoded = r.decode().map_err(|e| fail(BreakReason::Undecodable(e)))?;
        if decoded.sequence != r.sequence {
            return Err(fail(BreakReason::SequenceMismatch {
                encoded: decoded.sequence,
                stored: r.sequence,
            }));
        }
        previous = hash;
        expected += 1;
    }
    Ok(VerifiedChain {
        records: expected - 1,
        head: previous,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[7; 32])
    }

    fn events() -> Vec<Event> {
        let base = |actor, action, outcome| Event {
            at_unix_ms: 1_790_000_000_000,
            actor,
            peer: Some("127.0.0.1:5000".into()),
            action,
            outcome,
        };
        let olga = Actor::Person {
            name: "olga".into(),
            role: Role::Operator,
        };
        vec![
            base(
                olga.clone(),
                Action::AcknowledgeAlert { alert_id: 3 },
                Outcome::Ok,
            ),
            base(
                olga.clone(),
                Action::ResolveAlert {
                    alert_id: 3,
                    reason: "located".into(),
                },
                Outcome::Ok,
            ),
            base(
                olga,
                Action::ReopenAlert { alert_id: 9 },
                Outcome::refused(5, "no alert with id 9"),
            ),
            base(
                Actor::Node {
                    state: StateCode::parse("RUS").unwrap(),
                },
                Action::submit(Some("BLR"), Some(4)),
                Outcome::refused(7, "node RUS may not ..."),
            ),
            base(
                Actor::Anonymous,
                Action::call("/tally.v1.Alerts/ListAlerts"),
                Outcome::refused(16, "needs credentials"),
            ),
            Event {
                at_unix_ms: -1,
                actor: Actor::Person {
                    name: "arman".into(),
                    role: Role::Auditor,
                },
                peer: None,
                action: Action::ReportSeizures {
                    items: 2,
                    report_id: Some(1),
                },
                outcome: Outcome::Ok,
            },
            base(
                Actor::Anonymous,
                Action::submit(None, None),
                Outcome::refused(3, "the stream ended before a SnapshotHeader arrived"),
            ),
        ]
    }

    fn chain(events: Vec<Event>) -> Vec<SealedRecord> {
        let mut previous = GENESIS_HASH;
        let mut out = Vec::new();
        for (i, e) in events.into_iter().enumerate() {
            let r = SealedRecord::seal(i as u64 + 1, e, &previous, &key());
            previous = r.hash_array().unwrap();
            out.push(r);
        }
        out
    }

    fn pk() -> VerifyingKey {
        key().verifying_key()
    }

    #[test]
    fn records_round_trip_through_their_encoding() {
        for (i, event) in events().into_iter().enumerate() {
            let r = AuditRecord {
                sequence: i as u64 + 1,
                event,
            };
            assert_eq!(AuditRecord::decode(&r.encode()), Ok(r));
        }
    }

    #[test]
    fn encoding_is_pinned() {
        // The documented layout, byte by byte: changing it needs a new version.
        let r = AuditRecord {
            sequence: 1,
            event: Event {
                at_unix_ms: 2,
                actor: Actor::Node {
                    state: StateCode::parse("KAZ").unwrap(),
                },
                peer: None,
                action: Action::AcknowledgeAlert { alert_id: 5 },
                outcome: Outcome::refused(7, "no"),
            },
        };
        let want = hex::decode(concat!(
            "01",
            "0000000000000001",
            "0000000000000002",
            "02",
            "00000003",
            "4b415a",
            "00",
            "01",
            "0000000000000005",
            "01",
            "00000007",
            "00000002",
            "6e6f",
        ))
        .unwrap();
        assert_eq!(r.encode(), want);
    }

    #[test]
    fn an_intact_chain_verifies() {
        let c = chain(events());
        let v = verify(&c, &pk()).unwrap();
        assert_eq!(v.records, c.len() as u64);
        assert_eq!(v.head.to_vec(), c.last().unwrap().hash);
        assert_eq!(
            verify(&[], &pk()).unwrap(),
            VerifiedChain {
                records: 0,
                head: GENESIS_HASH
            }
        );
    }

    #[test]
    fn stored_bytes_round_trip() {
        for r in chain(events()) {
            assert_eq!(SealedRecord::from_bytes(r.sequence, &r.to_bytes()), r);
        }
        let short = SealedRecord::from_bytes(4, &[1, 2, 3]);
        assert_eq!(short.hash, vec![1, 2, 3]);
        assert!(short.signature.is_empty() && short.encoding.is_empty());
    }

    #[test]
    fn a_changed_field_is_a_bad_hash_link() {
        let mut c = chain(events());
        let mut r = c[2].decode().unwrap();
        r.event.outcome = Outcome::Ok;
        c[2].encoding = r.encode();
        let err = verify(&c, &pk()).unwrap_err();
        assert_eq!(err.sequence, 3);
        assert_eq!(err.reason, BreakReason::HashMismatch);
    }

    #[test]
    fn rewriting_the_chain_without_the_key_is_a_bad_signature() {
        // An attacker alters record 2 and recomputes every hash after it.
        let mut c = chain(events());
        let mut r = c[1].decode().unwrap();
        r.event.actor = Actor::Anonymous;
        c[1].encoding = r.encode();
        let mut previous: [u8; 32] = c[0].hash_array().unwrap();
        for rec in &mut c[1..] {
            let h = chain_hash(&previous, &rec.encoding);
            rec.hash = h.to_vec();
            previous = h;
        }
        let err = verify(&c, &pk()).unwrap_err();
        assert_eq!(
            err,
            ChainBreak {
                sequence: 2,
                reason: BreakReason::BadSignature
            }
        );
        // ...and a different key does not verify an honest chain.
        let honest = chain(events());
        let other = SigningKey::from_bytes(&[8; 32]).verifying_key();
        assert_eq!(
            verify(&honest, &other).unwrap_err().reason,
            BreakReason::BadSignature
        );
    }

    #[test]
    fn a_removed_or_reordered_record_is_a_gap() {
        let mut c = chain(events());
        c.remove(3);
        assert_eq!(
            verify(&c, &pk()).unwrap_err(),
            ChainBreak {
                sequence: 5,
                reason: BreakReason::Gap {
                    expected: 4,
                    found: 5
                }
            }
        );
        let mut c = chain(events());
        c.swap(1, 2);
        assert_eq!(verify(&c, &pk()).unwrap_err().sequence, 3);
        let mut c = chain(events());
        c.remove(0);
        assert!(matches!(
            verify(&c, &pk()).unwrap_err().reason,
            BreakReason::Gap {
                expected: 1,
                found: 2
            }
        ));
    }

    #[test]
    fn a_record_moved_to_another_sequence_is_named() {
        // Stored under 2 but says 1: signed by the key (the attacker re-used
        // a genuine record 1), so the hash link is what fails.
        let c = chain(events());
        let mut moved = c[0].clone();
        moved.sequence = 2;
        let err = verify(&[c[0].clone(), moved], &pk()).unwrap_err();
        assert_eq!(err.sequence, 2);
        assert_eq!(err.reason, BreakReason::HashMismatch);
    }

    #[test]
    fn decoding_is_strict() {
        let r = chain(events()).remove(0);
        let mut trailing = r.encoding.clone();
        trailing.push(0);
        assert_eq!(
            AuditRecord::decode(&trailing),
            Err(DecodeError::Trailing(1))
        );
        let mut v2 = r.encoding.clone();
        v2[0] = 2;
        assert_eq!(AuditRecord::decode(&v2), Err(DecodeError::Version(2)));
        assert_eq!(
            AuditRecord::decode(&r.encoding[..r.encoding.len() - 1]),
            Err(DecodeError::Truncated)
        );
        assert_eq!(AuditRecord::decode(&[]), Err(DecodeError::Truncated));
    }

    #[test]
    fn caller_supplied_text_is_cut() {
        let long = "й".repeat(MAX_TEXT_BYTES);
        let Outcome::Refused { reason, .. } = Outcome::refused(3, &long) else {
            unreachable!()
        };
        assert!(reason.len() <= MAX_TEXT_BYTES && long.starts_with(&reason));
        let Action::Submit { state, .. } = Action::submit(Some(&"X".repeat(100)), None) else {
            unreachable!()
        };
        assert_eq!(state.unwrap().len(), MAX_CLAIMED_STATE_BYTES);
    }

    #[test]
    fn code_names() {
        assert_eq!(grpc_code_name(7), "PERMISSION_DENIED");
        assert_eq!(grpc_code_name(16), "UNAUTHENTICATED");
        assert_eq!(grpc_code_name(99), "UNKNOWN_CODE");
        // That the names follow tonic's numbering is checked where tonic is
        // in reach: `coordinator::grpc::status`'s tests.
    }

    /// Which part of a stored record a tamperer changes.
    #[derive(Debug, Clone, Copy)]
    enum Part {
        Hash,
        Signature,
        Encoding,
    }

    proptest! {
        /// Any single altered byte, in any record, in any part, is found,
        /// and named at that record.
        #[test]
        fn any_altered_byte_is_detected(
            record in 0usize..7,
            part in prop_oneof![Just(Part::Hash), Just(Part::Signature), Just(Part::Encoding)],
            position in any::<prop::sample::Index>(),
            flip in 1u8..=255,
        ) {
            let mut c = chain(events());
            let bytes = match part {
                Part::Hash => &mut c[record].hash,
                Part::Signature => &mut c[record].signature,
                Part::Encoding => &mut c[record].encoding,
            };
            let i = position.index(bytes.len());
            bytes[i] ^= flip;
            let err = verify(&c, &pk()).unwrap_err();
            prop_assert_eq!(err.sequence, record as u64 + 1);
        }

        /// Any change to any field of any record is found at that record.
        #[test]
        fn any_changed_field_is_detected(
            record in 0usize..7,
            field in 0usize..6,
            text in "[a-z]{0,8}",
            number in any::<u64>(),
        ) {
            let mut c = chain(events());
            let mut r = c[record].decode().unwrap();
            let before = r.clone();
            match field {
                0 => r.event.at_unix_ms = r.event.at_unix_ms.wrapping_add(1),
                1 => r.event.actor = Actor::Person { name: text.clone(), role: Role::Auditor },
                2 => r.event.peer = Some(text.clone()),
                3 => r.event.action = Action::AcknowledgeAlert { alert_id: number },
                4 => r.event.outcome = Outcome::refused(number as u32 % 17, &text),
                _ => r.sequence = r.sequence.wrapping_add(number | 1),
            }
            prop_assume!(r != before);
            c[record].encoding = r.encode();
            let err = verify(&c, &pk()).unwrap_err();
            prop_assert_eq!(err.sequence, record as u64 + 1);
        }
    }
}
