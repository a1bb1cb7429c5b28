//! Admission and ingestion of a submitted snapshot: every check the
//! coordinator makes before a snapshot becomes evidence.
//!
//! Order of checks on the header, cheapest and most telling first: the state
//! is a member; the signature verifies; the sequence is well formed; the size
//! is within limits; the header extends the stored chain (or repeats an
//! accepted snapshot exactly). Then items stream through an
//! [`ItemStreamVerifier`] into invisible chunk storage, and only a fully
//! verified upload is committed.

use crate::support::clock::Clock;
use std::collections::HashMap;
use std::sync::Arc;

use ed25519_dalek::{SigningKey, VerifyingKey};

use crate::coordinator::storage::{Equivocation, NewSnapshot, SnapshotStore, StoreError, UploadId};
use crate::serial::CanonicalRule;
use crate::snapshot::{
    BadSignature, ItemStreamVerifier, Receipt, SignedHeader, SnapshotDigest, VerifyError,
};
use crate::state::StateCode;
use crate::support::config::Limits;

/// Why a submission was refused. Mapped to a gRPC status at the service edge.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("state {0} is not a member of this coordinator")]
    UnknownState(StateCode),
    #[error(transparent)]
    BadSignature(#[from] BadSignature),
    #[error("malformed snapshot header: {0}")]
    MalformedHeader(String),
    #[error("snapshot declares {declared} items; this coordinator accepts at most {limit}")]
    TooManyItems { declared: u64, limit: u64 },
    #[error(
        "{state} sequence {got} is not the next one: the last accepted is {last}, so send {expected} next"
    )]
    SequenceGap {
        state: StateCode,
        got: u64,
        last: u64,
        expected: u64,
    },
    #[error(
        "{state} sequence {sequence} names previous digest {got} but the accepted chain ends in {expected}: it forks the chain (recorded as an equivocation)"
    )]
    ChainMismatch {
        state: StateCode,
        sequence: u64,
        expected: SnapshotDigest,
        got: SnapshotDigest,
    },
    #[error(
        "{state} sequence {sequence} was already accepted with digest {stored}; this different snapshot {submitted} conflicts with it (recorded as an equivocation)"
    )]
    Conflict {
        state: StateCode,
        sequence: u64,
        stored: SnapshotDigest,
        submitted: SnapshotDigest,
    },
    #[error("snapshot items rejected: {0}")]
    Items(#[from] VerifyError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The coordinator's ingestion side: members, keys, limits, and the store.
#[derive(Clone)]
pub struct Ingestor {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn SnapshotStore>,
    members: HashMap<StateCode, VerifyingKey>,
    key: SigningKey,
    limits: Limits,
    rule: CanonicalRule,
    clock: Clock,
}

/// The outcome of checking a header against the stored chain.
pub enum Admission {
    /// The exact snapshot is already stored: here is its original receipt.
    AlreadyAccepted(Receipt),
    /// A new link of the chain: stream its items into this upload.
    New(Box<Upload>),
}

impl Ingestor {
    pub fn new(
        store: Arc<dyn SnapshotStore>,
        members: impl IntoIterator<Item = (StateCode, VerifyingKey)>,
        key: SigningKey,
        limits: Limits,
        rule: CanonicalRule,
    ) -> Ingestor {
        Ingestor::with_clock(store, members, key, limits, rule, Clock::system())
    }

    /// As [`Ingestor::new`], with an injected clock for receipt times.
    pub fn with_clock(
        store: Arc<dyn SnapshotStore>,
        members: impl IntoIterator<Item = (StateCode, VerifyingKey)>,
        key: SigningKey,
        limits: Limits,
        rule: CanonicalRule,
        clock: Clock,
    ) -> Ingestor {
        Ingestor {
            inner: Arc::new(Inner {
                store,
                members: members.into_iter().collect(),
                key,
                limits,
                rule,
                clock,
            }),
        }
    }

    /// This ingestor on the same store, members, key, limits and rule,
    /// stamping with `clock` instead.
    pub fn with_clock_of(&self, clock: Clock) -> Ingestor {
        let i = &self.inner;
        Ingestor::with_clock(
            i.store.clone(),
            i.members.iter().map(|(s, k)| (*s, *k)),
            i.key.clone(),
            i.limits.clone(),
            i.rule.clone(),
            clock,
        )
    }

    /// The clock that stamps receipts and equivocation records.
    pub fn clock(&self) -> &Clock {
        &self.inner.clock
    }

    pub fn store(&self) -> &Arc<dyn SnapshotStore> {
        &self.inner.store
    }

    pub fn public_key(&self) -> VerifyingKey {
        self.inner.key.verifying_key()
    }

    pub fn members(&self) -> impl Iterator<Item = &StateCode> {
        self.inner.members.keys()
    }

    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// Checks a signed header; nothing is stored unless it is an equivocation.
    pub fn admit(&self, signed: SignedHeader) -> Result<Admission, IngestError> {
        let inner = &self.inner;
        let header = &signed.header;
        let key = inner
            .members
            .get(&header.state)
            .ok_or(IngestError::UnknownState(header.state))?;
        signed.verify(key)?;
        if header.sequence == 0 {
            return Err(IngestError::MalformedHeader(
                "sequence numbers start at 1".into(),
            ));
        }
        // The chain before the limit: a snapshot stored before the limit was
        // lowered must still get its receipt, or its node would take "too
        // big" for "not stored" and sign another snapshot in its place.
        if let Some(receipt) = self.check_chain(&signed)? {
            return Ok(Admission::AlreadyAccepted(receipt));
        }
        if header.item_count > inner.limits.max_items_per_snapshot {
            return Err(IngestError::TooManyItems {
                declared: header.item_count,
                limit: inner.limits.max_items_per_snapshot,
            });
        }
        let id = inner.store.begin_upload()?;
        Ok(Admission::New(Box::new(Upload {
            ingestor: self.clone(),
            verifier: ItemStreamVerifier::new(header, inner.rule.clone()),
            signed,
            id,
            chunks: 0,
            finished: false,
        })))
    }

    /// `Ok(Some(receipt))` if this exact snapshot is stored, `Ok(None)` if it
    /// is the next link, an error (after recording any equivocation) otherwise.
    fn check_chain(&self, signed: &SignedHeader) -> Result<Option<Receipt>, IngestError> {
        let store = &self.inner.store;
        let header = &signed.header;
        let digest = signed.digest();
        let latest = store.latest(header.state)?;
        let last = latest.as_ref().map_or(0, |l| l.signed.header.sequence);
        if header.sequence <= last {
            let stored =
                store
                    .get(header.state, header.sequence)?
                    .ok_or_else(|| StoreError::Corrupt {
                        what: format!(
                            "{} sequence {} missing below the head",
                            header.state, header.sequence
                        ),
                    })?;
            if stored.digest == digest {
                return Ok(Some(stored.receipt));
            }
            self.record_equivocation(signed, stored.digest)?;
            return Err(IngestError::Conflict {
                state: header.state,
                sequence: header.sequence,
                stored: stored.digest,
                submitted: digest,
            });
        }
        if header.sequence > last + 1 {
            return Err(IngestError::SequenceGap {
                state: header.state,
                got: header.sequence,
                last,
                expected: last + 1,
            });
        }
        let expected = latest.map_or(SnapshotDigest::GENESIS, |l| l.digest);
        if header.previous_digest != expected {
            self.record_equivocation(signed, expected)?;
            return Err(IngestError::ChainMismatch {
                state: header.state,
                sequence: header.sequence,
                expected,
                got: header.previous_digest,
            });
        }
        Ok(None)
    }

    fn record_equivocation(
        &self,
        signed: &SignedHeader,
        conflicts_with: SnapshotDigest,
    ) -> Result<(), StoreError> {
        tracing::warn!(
            state = %signed.header.state,
            sequence = signed.header.sequence,
            "equivocation: a signed snapshot conflicts with the accepted chain"
        );
        // A time ordered against acceptances (strictly after every one so
        // far, before every later one), so that a rebuild applies the record
        // where the live coordinator did: between the same two snapshots.
        let recorded_at_unix_ms = self
            .inner
            .store
            .issue_time(self.inner.clock.now_unix_ms())?;
        self.inner.store.record_equivocation(&Equivocation {
            signed: signed.clone(),
            conflicts_with,
            recorded_at_unix_ms,
        })
    }
}

/// How an upload ended when it was committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Committed {
    /// This upload is stored, with the receipt issued for it.
    New(Receipt),
    /// Another upload of the very same snapshot committed first: its
    /// original receipt. Nothing of this upload is kept.
    AlreadyAccepted(Receipt),
}

impl Committed {
    /// The receipt the submitter gets, either way.
    pub fn receipt(&self) -> &Receipt {
        match self {
            Committed::New(r) | Committed::AlreadyAccepted(r) => r,
        }
    }
}

/// An admitted snapshot whose items are arriving. Dropping it before
/// [`Upload::finish`] discards everything it stored.
pub struct Upload {
    ingestor: Ingestor,
    signed: SignedHeader,
    verifier: ItemStreamVerifier,
    id: UploadId,
    chunks: u32,
    finished: bool,
}

impl Upload {
    pub fn header(&self) -> &SignedHeader {
        &self.signed
    }

    /// Items verified so far.
    pub fn items_received(&self) -> u64 {
        self.verifier.count()
    }

    /// Verifies one chunk of leaves and stores it (invisibly, until commit).
    pub fn push_chunk(&mut self, leaves: &[u8]) -> Result<(), IngestError> {
        if leaves.is_empty() {
            return Ok(());
        }
        self.verifier.push_chunk(leaves)?;
        self.ingestor
            .inner
            .store
            .put_chunk(self.id, self.chunks, leaves)?;
        self.chunks += 1;
        Ok(())
    }

    /// Checks count and root, commits durably and issues the receipt. Blocks on
    /// a disk flush: call it off the async runtime.
    pub fn finish(mut self) -> Result<Committed, IngestError> {
        self.verifier.finish()?;
        let inner = &self.ingestor.inner;
        let header = self.signed.header;
        let digest = self.signed.digest();
        // Derived data, flushed with the commit below. Without it a trace
        // rehashes the snapshot (and stores it then), so a failure here must
        // not refuse a verified snapshot.
        if let Err(e) = inner
            .store
            .put_block_roots(&digest, &self.verifier.block_roots())
        {
            tracing::warn!(error = %e, "could not keep the snapshot's Merkle block roots; traces will rebuild them");
        }
        let clock = &inner.clock;
        let issue = |earliest: i64| {
            let accepted_at = clock.now_unix_ms().max(earliest);
            Receipt::issue(
                &inner.key,
                header.state,
                header.sequence,
                digest,
                accepted_at,
            )
        };
        let new = NewSnapshot {
            signed: self.signed.clone(),
            digest,
            upload: self.id,
            chunk_count: self.chunks,
        };
        let committed = inner.store.commit_new(new, &issue);
        match committed {
            Ok(record) => {
                self.finished = true;
                Ok(Committed::New(record.receipt))
            }
            Err(StoreError::ChainMoved { .. }) => {
                // Another upload of this state committed first. If it was this
                // very snapshot, answer with its receipt (this upload's chunks
                // are discarded when it is dropped); otherwise the usual
                // conflict or gap error applies.
                match self.ingestor.check_chain(&self.signed)? {
                    Some(receipt) => Ok(Committed::AlreadyAccepted(receipt)),
                    None => Err(StoreError::ChainMoved {
                        state: header.state,
                        sequence: header.sequence,
                    }
                    .into()),
                }
            }
            Err(e) => Err(e.into()),
        }
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if !self.finished
            && let Err(e) = self.ingestor.inner.store.abort(self.id)
        {
            // Orphaned chunks are invisible and removed at the next open.
            tracing::warn!(error = %e, upload = self.id.0, "could not discard an aborted upload");
        }
    }
}
