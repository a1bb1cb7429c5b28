//! Sequences of submissions against an in-process coordinator: the real
//! `tally.v1.Snapshots/Submit` handler on a real sled store, fed gRPC frames
//! through tonic's request decoder (everything but the HTTP/2 connection).
//!
//! A [`Scenario`] is a list of submissions; each builds one snapshot from a
//! plan (state, sequence, chain link, items, count, root, signer) and sends
//! an arbitrary list of messages for it: its header, a malformed header,
//! runs of its leaves, byte ranges that cut leaves, garbage, empty messages,
//! over-long messages; the stream then ends or the client disconnects.
//!
//! After every submission:
//! - accepted: the receipt verifies; either the snapshot is new (exactly one
//!   more snapshot, the next of its state, whose stored items are exactly the
//!   leaves sent) or it repeats a stored one (nothing changes, the original
//!   receipt comes back);
//! - rejected: the status is a client error (never INTERNAL or UNKNOWN), the
//!   stored snapshots, their items and the chunk files are exactly as before,
//!   and the only evidence added is one equivocation record for the
//!   submitted header, for a fork or conflict (FAILED_PRECONDITION,
//!   ALREADY_EXISTS);
//! - a well-formed submission of the next link is accepted, and one that is
//!   not signed by a member's key or has sequence 0 is rejected.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use bytes::Bytes;
use ed25519_dalek::SigningKey;
use http_body::Frame;
use tally::coordinator::grpc::snapshots::SnapshotsService;
use tally::coordinator::lifecycle::Lifecycle;
use tally::coordinator::storage::{Equivocation, SnapshotStore, Storage, StoredSnapshot};
use tally::item::{Item, Status as ItemStatus};
use tally::proto::snapshots_server::Snapshots;
use tally::proto::{self, submit_request};
use tally::reconcile::EngineConfig;
use tally::serial::CanonicalRule;
use tally::snapshot::{SignedHeader, SnapshotDigest, build_snapshot, encode_leaf, sort_items};
use tally::state::StateCode;
use tally::support::config::Limits;
use tally_wire::convert::{receipt_from_proto, signed_header_to_proto};
use tonic::Code;

/// Member states of the coordinator under test.
const MEMBERS: [&str; 3] = ["RUS", "KAZ", "BLR"];
/// A well-formed state code that is not a member.
const OUTSIDER: &str = "ARM";
/// Small limits, so that the limit paths are reachable with small inputs.
const MAX_ITEMS: u64 = 12;
const MAX_MESSAGE_BYTES: usize = 2048;
/// Bounds on the work per scenario.
const MAX_SUBMISSIONS: usize = 8;
const MAX_MESSAGES: usize = 24;
const MAX_PLANNED_ITEMS: usize = 16;

const MODELS: [&str; 4] = ["9K38", "9M39", "ak-74m", "\u{0410}K-74M"];
const SITES: [&str; 3] = ["", "Depot 7", "\"quoted\", site"];

/// A sequence of submissions to one fresh coordinator.
#[derive(Debug, Clone, Arbitrary)]
pub struct Scenario {
    pub submissions: Vec<Submission>,
}

/// One `Submit` call: the snapshot it is about and the messages it sends.
#[derive(Debug, Clone, Arbitrary)]
pub struct Submission {
    pub plan: Plan,
    pub messages: Vec<Message>,
    /// The client hangs up instead of ending the stream.
    pub disconnect: bool,
}

/// The snapshot a submission is about.
#[derive(Debug, Clone, Arbitrary)]
pub struct Plan {
    /// Index into the members, then the outsider.
    pub state: u8,
    pub sequence: SequenceChoice,
    /// Link to the stored head (else to a made-up digest).
    pub linked: bool,
    pub items: Vec<ItemPlan>,
    /// Added to the true item count in the header.
    pub count_error: i8,
    pub root_correct: bool,
    pub signer: Signer,
    pub as_of_unix_ms: i64,
}

#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum SequenceChoice {
    /// One past the stored head: the next link.
    Next,
    /// The exact stored snapshot this far below the head, items and all.
    Resubmit(u8),
    /// A new snapshot at a stored sequence this far below the head.
    Reuse(u8),
    /// This many past the next one.
    Skip(u8),
    Zero,
    Any(u64),
}

#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum Signer {
    /// The state's own key.
    Own,
    /// Another member's key.
    OtherMember,
    /// Signature bytes that are no signature.
    Garbage,
}

#[derive(Debug, Clone, Arbitrary)]
pub struct ItemPlan {
    pub model: u8,
    pub serial: String,
    pub status: u8,
    pub site: u8,
}

/// One message of the stream, relative to the planned snapshot.
#[derive(Debug, Clone, Arbitrary)]
pub enum Message {
    /// The planned signed header.
    Header,
    /// The planned header with one field of a wrong length or spelling.
    MalformedHeader(u8),
    /// Leaves `from..to` (by item index, clamped) as one chunk.
    Leaves { from: u8, to: u8 },
    /// A byte range of the concatenated leaves (may cut leaves).
    LeafBytes { start: u16, len: u16 },
    /// A chunk of arbitrary bytes.
    Raw(Vec<u8>),
    /// A message with neither header nor chunk.
    Empty,
    /// A chunk larger than the coordinator's message limit.
    Oversized,
}

/// Keys of the members, derived from their codes (reproducible failures).
fn state_key(state: &str) -> SigningKey {
    let mut seed = [0u8; 32];
    seed[..3].copy_from_slice(state.as_bytes());
    SigningKey::from_bytes(&seed)
}

fn coordinator_key() -> SigningKey {
    SigningKey::from_bytes(&[42; 32])
}

fn code(s: &str) -> StateCode {
    StateCode::parse(s).expect("state code")
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .max_blocking_threads(4)
            .build()
            .expect("tokio runtime")
    })
}

/// Where scratch stores go: memory-backed if the machine has it.
fn scratch_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(dir) = tempfile::Builder::new()
            .prefix("tally-fuzz")
            .tempdir_in(shm)
    {
        return dir;
    }
    tempfile::Builder::new()
        .prefix("tally-fuzz")
        .tempdir()
        .expect("temporary directory")
}

/// Runs a scenario on a fresh coordinator; panics if a property fails.
/// Returns how many submissions were accepted and how many refused.
pub fn run_scenario(scenario: &Scenario) -> (usize, usize) {
    let mut tally = (0, 0);
    let dir = scratch_dir();
    let storage = Storage::open_sled(dir.path()).expect("open store");
    let coordinator = tally::coordinator::server::assemble(
        storage,
        MEMBERS
            .iter()
            .map(|s| (code(s), state_key(s).verifying_key())),
        coordinator_key(),
        Limits {
            max_items_per_snapshot: MAX_ITEMS,
            max_message_bytes: MAX_MESSAGE_BYTES,
            max_concurrent_uploads: 2,
            upload_idle_timeout_seconds: 60,
        },
        CanonicalRule::default(),
        EngineConfig::default(),
        std::time::Duration::from_secs(3600),
    )
    .expect("assemble coordinator");
    let store = coordinator.ingestor.store().clone();
    let service = SnapshotsService::new(
        coordinator.ingestor.clone(),
        coordinator.reconciler.clone(),
        Lifecycle::new(),
        coordinator.metrics.clone(),
        coordinator.audit.clone(),
    );
    let chunk_dir = dir.path().join("leaf-chunks");
    for submission in scenario.submissions.iter().take(MAX_SUBMISSIONS) {
        let before = StoreView::capture(store.as_ref(), &chunk_dir);
        let built = build(submission, &before);
        let result = runtime().block_on(submit(&service, &built.frames, submission.disconnect));
        let after = StoreView::capture(store.as_ref(), &chunk_dir);
        check_outcome(&built, &result, &before, &after);
        if result.is_ok() {
            tally.0 += 1;
        } else {
            tally.1 += 1;
        }
    }
    // As the coordinator does when it stops (see `tally::coordinator::storage::drop_pinned`).
    tally::coordinator::storage::drop_pinned((service, store, coordinator));
    tally
}

/// A submission turned into bytes, with what is known about it.
struct Built {
    signed: SignedHeader,
    /// The planned snapshot's leaves, one by one.
    leaves: Vec<Vec<u8>>,
    /// The encoded gRPC frames, in order.
    frames: Vec<Bytes>,
    /// Everything is right: header first, then all leaves in whole-leaf
    /// chunks, the next link, within the limits, the stream ends normally.
    well_formed_next: bool,
    /// Certainly refused whatever else happens: not signed by the member's
    /// key, not a member, or sequence 0 (and the header comes first).
    certainly_refused: bool,
}

fn build(submission: &Submission, store: &StoreView) -> Built {
    let plan = &submission.plan;
    let state_name = MEMBERS
        .get(usize::from(plan.state) % (MEMBERS.len() + 1))
        .copied()
        .unwrap_or(OUTSIDER);
    let state = code(state_name);
    let chain = store
        .snapshots
        .get(&state)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let head = chain.len() as u64;
    // The stored snapshot `back` below the head (modulo the chain length).
    let stored_at = |back: u8| {
        let back = u64::from(back) % head.max(1);
        chain.get(head.checked_sub(1 + back)? as usize)
    };

    let (signed, leaves, mut well_formed_next) = match (plan.sequence, stored_at(0)) {
        (SequenceChoice::Resubmit(back), Some(_)) => {
            let stored = stored_at(back).expect("a stored snapshot");
            (stored.0.signed.clone(), split_leaves(&stored.1), false)
        }
        _ => {
            let rule = CanonicalRule::default();
            let mut items: Vec<Item> = plan
                .items
                .iter()
                .take(MAX_PLANNED_ITEMS)
                .filter_map(|p| item(p, &rule))
                .collect();
            sort_items(&mut items);
            let (sequence, next) = match plan.sequence {
                SequenceChoice::Next | SequenceChoice::Resubmit(_) => (head + 1, true),
                SequenceChoice::Reuse(back) if head > 0 => (head - u64::from(back) % head, false),
                SequenceChoice::Reuse(_) => (head + 1, true),
                SequenceChoice::Skip(n) => (head + 2 + u64::from(n), false),
                SequenceChoice::Zero => (0, false),
                SequenceChoice::Any(n) => (n, n == head + 1),
            };
            let previous = if plan.linked {
                match sequence.checked_sub(2) {
                    Some(i) => chain
                        .get(i as usize)
                        .map_or(SnapshotDigest([7; 32]), |s| s.0.digest),
                    None => SnapshotDigest::GENESIS,
                }
            } else {
                SnapshotDigest([7; 32])
            };
            let unsigned = build_snapshot(state, sequence, plan.as_of_unix_ms, previous, &items);
            let mut header = unsigned.header;
            header.item_count = header
                .item_count
                .wrapping_add_signed(i64::from(plan.count_error));
            if !plan.root_correct {
                header.items_root[0] ^= 1;
            }
            let signed = match plan.signer {
                Signer::Own => header.sign(&state_key(state_name)),
                Signer::OtherMember => {
                    header.sign(&state_key(if state_name == "RUS" { "KAZ" } else { "RUS" }))
                }
                Signer::Garbage => SignedHeader {
                    header,
                    signature: ed25519_dalek::Signature::from_bytes(&[0xA5; 64]),
                },
            };
            let leaves = items
                .iter()
                .map(|item| {
                    let mut leaf = Vec::new();
                    encode_leaf(item, &mut leaf);
                    leaf
                })
                .collect();
            let well = next
                && plan.linked
                && plan.count_error == 0
                && plan.root_correct
                && matches!(plan.signer, Signer::Own)
                && state_name != OUTSIDER
                && items.len() as u64 <= MAX_ITEMS;
            (signed, leaves, well)
        }
    };

    let all: Vec<u8> = leaves.concat();
    let header_message = signed_header_to_proto(&signed);
    let mut frames = Vec::new();
    let mut covered = 0usize; // leaves sent so far, if whole and in order
    for (i, message) in submission.messages.iter().take(MAX_MESSAGES).enumerate() {
        let part = match message {
            Message::Header => {
                well_formed_next &= i == 0;
                Some(submit_request::Part::Header(header_message.clone()))
            }
            Message::MalformedHeader(which) => {
                well_formed_next = false;
                let mut h = header_message.clone();
                match which % 5 {
                    0 => h.state = "rus".into(),
                    1 => h.signature = h.signature.slice(1..),
                    2 => h.previous_digest = Bytes::from_static(&[1; 31]),
                    3 => h.items_root = Bytes::from_static(&[1; 33]),
                    _ => h.state = format!("{}X", h.state),
                }
                Some(submit_request::Part::Header(h))
            }
            Message::Leaves { from, to } => {
                let from = usize::from(*from).min(leaves.len());
                let to = usize::from(*to).clamp(from, leaves.len());
                if from == covered {
                    covered = to;
                } else {
                    well_formed_next = false;
                }
                chunk(leaves[from..to].concat())
            }
            Message::LeafBytes { start, len } => {
                well_formed_next = false;
                let start = usize::from(*start).min(all.len());
                let end = (start + usize::from(*len)).min(all.len());
                chunk(all[start..end].to_vec())
            }
            Message::Raw(bytes) => {
                well_formed_next &= bytes.is_empty();
                chunk(bytes.clone())
            }
            Message::Empty => {
                well_formed_next = false;
                None
            }
            Message::Oversized => {
                well_formed_next = false;
                chunk(vec![1; MAX_MESSAGE_BYTES + 1])
            }
        };
        frames.push(frame(&proto::SubmitRequest { part }));
    }
    let chunks_fit = frames.iter().all(|f| f.len() - 5 <= MAX_MESSAGE_BYTES);
    let first_is_header = matches!(submission.messages.first(), Some(Message::Header));
    let well_formed_next = well_formed_next
        && first_is_header
        && !submission.disconnect
        && covered == leaves.len()
        && !frames.is_empty()
        && chunks_fit;
    let certainly_refused = first_is_header
        && (!matches!(plan.signer, Signer::Own)
            || state_name == OUTSIDER
            || matches!(plan.sequence, SequenceChoice::Zero))
        && !matches!(plan.sequence, SequenceChoice::Resubmit(_) if head > 0);
    Built {
        signed,
        leaves,
        frames,
        well_formed_next,
        certainly_refused,
    }
}

fn item(plan: &ItemPlan, rule: &CanonicalRule) -> Option<Item> {
    let status = ItemStatus::ALL[usize::from(plan.status) % ItemStatus::ALL.len()];
    let counterparty = (status == ItemStatus::TransferredOut).then(|| code("KAZ"));
    let serial: String = plan.serial.chars().take(24).collect();
    Item::new(
        MODELS[usize::from(plan.model) % MODELS.len()],
        &serial,
        status,
        SITES[usize::from(plan.site) % SITES.len()],
        counterparty,
        rule,
    )
    .ok()
}

/// Stored chunks split back into their leaves.
fn split_leaves(chunks: &[Vec<u8>]) -> Vec<Vec<u8>> {
    chunks
        .iter()
        .flat_map(|c| tally::snapshot::leaf::leaves(c).map(|l| l.expect("stored leaf").1.to_vec()))
        .collect()
}

fn chunk(leaves: Vec<u8>) -> Option<submit_request::Part> {
    Some(submit_request::Part::Chunk(proto::ItemChunk {
        leaves: leaves.into(),
    }))
}

/// One uncompressed gRPC length-prefixed message.
fn frame(message: &proto::SubmitRequest) -> Bytes {
    let body = prost::Message::encode_to_vec(message);
    let mut out = Vec::with_capacity(5 + body.len());
    out.push(0);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out.into()
}

/// Calls the service's `Submit` with these frames as the request body.
async fn submit(
    service: &SnapshotsService,
    frames: &[Bytes],
    disconnect: bool,
) -> Result<proto::Receipt, tonic::Status> {
    let mut parts: Vec<Result<Frame<Bytes>, tonic::Status>> =
        frames.iter().cloned().map(|f| Ok(Frame::data(f))).collect();
    if disconnect {
        parts.push(Err(tonic::Status::cancelled("the client went away")));
    }
    let body = http_body_util::StreamBody::new(futures::stream::iter(parts));
    let decoder = tonic_prost::ProstDecoder::<proto::SubmitRequest>::default();
    let streaming = tonic::Streaming::new_request(decoder, body, None, Some(MAX_MESSAGE_BYTES));
    service
        .submit(tonic::Request::new(streaming))
        .await
        .map(tonic::Response::into_inner)
}

/// A stored snapshot and its chunks.
type StoredWithChunks = (StoredSnapshot, Vec<Vec<u8>>);

/// Everything a submission may change, read through the store's interface
/// plus the chunk files on disk.
#[derive(Debug, Clone, PartialEq)]
struct StoreView {
    /// Per state, its snapshots (oldest first) with their chunks.
    snapshots: BTreeMap<StateCode, Vec<StoredWithChunks>>,
    equivocations: Vec<Equivocation>,
    chunk_files: Vec<PathBuf>,
}

impl StoreView {
    fn capture(store: &dyn SnapshotStore, chunk_dir: &Path) -> StoreView {
        let mut snapshots = BTreeMap::new();
        for state in MEMBERS.iter().chain([&OUTSIDER]) {
            let state = code(state);
            let list = store.list(state, 1, usize::MAX).expect("list snapshots");
            let with_chunks: Vec<_> = list
                .into_iter()
                .map(|s| {
                    let chunks = store
                        .chunks(&s)
                        .expect("chunks")
                        .collect::<Result<Vec<_>, _>>()
                        .expect("read chunks");
                    (s, chunks)
                })
                .collect();
            if !with_chunks.is_empty() {
                snapshots.insert(state, with_chunks);
            }
        }
        let mut chunk_files: Vec<PathBuf> = match std::fs::read_dir(chunk_dir) {
            Ok(entries) => entries
                .map(|e| e.expect("chunk directory entry").path())
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => panic!("chunk directory: {e}"),
        };
        chunk_files.sort();
        StoreView {
            snapshots,
            equivocations: store.equivocations().expect("equivocations"),
            chunk_files,
        }
    }

    fn count(&self) -> usize {
        self.snapshots.values().map(Vec::len).sum()
    }
}

fn check_outcome(
    built: &Built,
    result: &Result<proto::Receipt, tonic::Status>,
    before: &StoreView,
    after: &StoreView,
) {
    match result {
        Ok(receipt) => {
            assert!(
                !built.certainly_refused,
                "accepted a submission that must be refused: {:?}",
                built.signed.header
            );
            let receipt = receipt_from_proto(receipt).expect("well-formed receipt");
            assert!(receipt.verify(&coordinator_key().verifying_key()));
            let state = receipt.state;
            let chain = after
                .snapshots
                .get(&state)
                .expect("accepted state has snapshots");
            let stored = chain
                .iter()
                .find(|s| s.0.signed.header.sequence == receipt.sequence)
                .expect("the receipted snapshot is stored");
            assert_eq!(stored.0.digest, receipt.digest);
            assert_eq!(stored.0.receipt, receipt);
            assert_eq!(stored.0.signed, built.signed);
            assert_eq!(
                stored.1.concat(),
                built.leaves.concat(),
                "stored items differ from those sent"
            );
            assert_eq!(after.equivocations, before.equivocations);
            if before.count() == after.count() {
                assert_eq!(before, after, "a resubmission changed the store");
            } else {
                assert_eq!(after.count(), before.count() + 1);
                let mut expected = before.snapshots.clone();
                expected.entry(state).or_default().push(stored.clone());
                assert_eq!(
                    after.snapshots, expected,
                    "more than the new snapshot changed"
                );
                assert_eq!(chain.len() as u64, receipt.sequence, "not the next link");
            }
        }
        Err(status) => {
            assert!(
                !built.well_formed_next,
                "refused a well-formed next snapshot: {status:?}"
            );
            assert!(
                !matches!(status.code(), Code::Internal | Code::Unknown),
                "a bad submission answered as a server failure: {status:?}"
            );
            assert!(!status.message().is_empty());
            assert_eq!(
                after.snapshots, before.snapshots,
                "a refused submission changed the snapshots: {status:?}"
            );
            assert_eq!(
                after.chunk_files, before.chunk_files,
                "a refused submission left chunk files: {status:?}"
            );
            let added = &after.equivocations[..];
            if added.len() != before.equivocations.len() {
                assert!(
                    matches!(
                        status.code(),
                        Code::FailedPrecondition | Code::AlreadyExists
                    ),
                    "equivocation recorded for {status:?}"
                );
                assert_eq!(added.len(), before.equivocations.len() + 1);
                let new: Vec<_> = added
                    .iter()
                    .filter(|e| !before.equivocations.contains(e))
                    .collect();
                assert_eq!(new.len(), 1);
                assert_eq!(new[0].signed, built.signed);
            }
        }
    }
}
