//! The inventory export reader (README "Inventory export format"): one CSV
//! file, one complete snapshot.
//!
//! The file is UTF-8 CSV with the header line exactly
//! `model,serial,status,site,counterparty`. CRLF or LF line endings, a UTF-8
//! byte order mark before the header, blank lines and fields in double quotes
//! (with commas or quotes inside) are accepted. Fields are not trimmed: the
//! raw spellings are evidence, and only the canonical key ignores spaces.
//!
//! A file with any bad row is rejected as a whole: [`ExportError::Rows`] lists
//! every problem (up to [`ExportOptions::max_problems`], plus a count of the
//! rest), each with its line (1-based; the header is line 1 when the file does
//! not start with blank lines), column and reason.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::mpsc::{self, TrySendError};

use csv::ByteRecord;

use crate::item::{Item, ItemError, Status, UnknownStatus};
use crate::quote::excerpt;
use crate::serial::{CanonicalModel, CanonicalRule, CanonicalSerial};
use crate::state::{InvalidStateCode, StateCode, StateSet};

/// The column names of an export, in order.
pub const HEADER: [&str; 5] = ["model", "serial", "status", "site", "counterparty"];

/// The header line of an export.
pub const HEADER_LINE: &str = "model,serial,status,site,counterparty";

/// A sensible cap on the problems listed for one file.
pub(crate) const DEFAULT_MAX_PROBLEMS: usize = 100;

/// How to read an export.
#[derive(Debug, Clone, Copy)]
pub struct ExportOptions<'a> {
    /// The canonical-serial rule used for item keys.
    pub rule: &'a CanonicalRule,
    /// The states accepted as counterparties of `transferred_out` items.
    pub known_states: &'a StateSet,
    /// At most this many problems are listed; the rest are only counted.
    pub max_problems: usize,
}

impl<'a> ExportOptions<'a> {
    /// Options with [`DEFAULT_MAX_PROBLEMS`].
    pub fn new(rule: &'a CanonicalRule, known_states: &'a StateSet) -> ExportOptions<'a> {
        ExportOptions {
            rule,
            known_states,
            max_problems: DEFAULT_MAX_PROBLEMS,
        }
    }
}

/// A column of the export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Column {
    Model,
    Serial,
    Status,
    Site,
    Counterparty,
}

impl Column {
    pub const ALL: [Column; 5] = [
        Column::Model,
        Column::Serial,
        Column::Status,
        Column::Site,
        Column::Counterparty,
    ];

    /// The column's name in the header, e.g. `status`.
    pub fn name(self) -> &'static str {
        HEADER[self.index()]
    }

    /// The column's 1-based position in a row.
    pub fn number(self) -> usize {
        self.index() + 1
    }

    fn index(self) -> usize {
        match self {
            Column::Model => 0,
            Column::Serial => 1,
            Column::Status => 2,
            Column::Site => 3,
            Column::Counterparty => 4,
        }
    }
}

impl fmt::Display for Column {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a line of an export is bad.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProblemKind {
    #[error(
        "the file is empty: expected the header line '{}' (a file with only the header is an empty inventory)",
        HEADER_LINE
    )]
    EmptyFile,
    #[error("wrong header: expected '{}', found '{found}'", HEADER_LINE)]
    WrongHeader { found: String },
    #[error(
        "wrong number of fields: expected 5 ({}), found {found}{}",
        HEADER_LINE,
        if *.found > 5 { "; a field that contains a comma must be in double quotes" } else { "" }
    )]
    WrongFieldCount { found: usize },
    #[error(
        "invalid UTF-8 after {valid_up_to} bytes of the field ('{lossy}'): save the export as UTF-8"
    )]
    InvalidUtf8 { valid_up_to: usize, lossy: String },
    #[error(transparent)]
    UnknownStatus(UnknownStatus),
    #[error("{}", empty_message("model", .raw))]
    EmptyModel { raw: String },
    #[error("{}", empty_message("serial", .raw))]
    EmptySerial { raw: String },
    #[error("status transferred_out needs a counterparty: the receiving state's code, e.g. KAZ")]
    MissingCounterparty,
    #[error(
        "counterparty '{found}' is only allowed with status transferred_out, not {status}: leave it empty"
    )]
    UnexpectedCounterparty { found: String, status: Status },
    #[error("counterparty {0}")]
    InvalidCounterparty(InvalidStateCode),
    #[error("the value is {len} bytes long; at most {max} bytes are allowed")]
    TooLong { len: usize, max: usize },
    #[error("counterparty {code} is not a known state (expected one of {})", join_codes(.known))]
    UnknownCounterparty {
        code: StateCode,
        known: Vec<StateCode>,
    },
}

fn empty_message(what: &str, raw: &str) -> String {
    if raw.is_empty() {
        format!("{what} is empty")
    } else {
        format!("{what} '{raw}' is empty once spaces and hyphens are removed")
    }
}

fn join_codes(codes: &[StateCode]) -> String {
    let names: Vec<&str> = codes.iter().map(StateCode::as_str).collect();
    names.join(", ")
}

/// One problem on one line of an export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowProblem {
    /// 1-based line number where the record starts.
    pub line: u64,
    /// The column at fault, if the problem is confined to one.
    pub column: Option<Column>,
    pub kind: ProblemKind,
}

impl RowProblem {
    /// The problem without its line: `column 'status': unknown status …`.
    fn write_detail(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(column) = self.column {
            write!(f, "column '{column}': ")?;
        }
        write!(f, "{}", self.kind)
    }
}

/// `line 17: column 'status': unknown status …`
impl fmt::Display for RowProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: ", self.line)?;
        self.write_detail(f)
    }
}

/// Why an export was not read.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The file could not be opened or read.
    #[error("cannot read export {}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The file was read, but some lines are bad: nothing in it may be used.
    #[error("{}", rows_display(.source_name, .problems, *.more))]
    Rows {
        /// The file name used in messages.
        source_name: String,
        /// The problems, in line order, at most `max_problems` of them.
        problems: Vec<RowProblem>,
        /// How many further problems were found but not listed.
        more: usize,
    },
}

impl ExportError {
    /// The listed row problems (empty for I/O errors).
    pub fn problems(&self) -> &[RowProblem] {
        match self {
            ExportError::Rows { problems, .. } => problems,
            ExportError::Io { .. } => &[],
        }
    }
}

fn rows_display<'a>(
    source_name: &'a str,
    problems: &'a [RowProblem],
    more: usize,
) -> RowsDisplay<'a> {
    RowsDisplay {
        source_name,
        problems,
        more,
    }
}

/// One problem per line: `exports/RUS.csv:17: column 'status': unknown status …`.
struct RowsDisplay<'a> {
    source_name: &'a str,
    problems: &'a [RowProblem],
    more: usize,
}

impl fmt::Display for RowsDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for problem in self.problems {
            if !first {
                f.write_str("\n")?;
            }
            first = false;
            write!(f, "{}:{}: ", self.source_name, problem.line)?;
            problem.write_detail(f)?;
        }
        if self.more > 0 {
            if !first {
                f.write_str("\n")?;
            }
            write!(
                f,
                "{}: {} more problem{} not listed",
                self.source_name,
                self.more,
                if self.more == 1 { "" } else { "s" }
            )?;
        }
        Ok(())
    }
}

/// Reads the export at `path`; messages name the file as `path` is written.
pub fn read_export_file(path: &Path, opts: &ExportOptions) -> Result<Vec<Item>, ExportError> {
    let file = File::open(path).map_err(|source| ExportError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    read_export(&path.display().to_string(), file, opts)
}

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// The first `n` bytes of `reader` (fewer only at the end of the input),
/// however few each read returns.
fn read_start(reader: &mut impl Read, n: usize) -> io::Result<Vec<u8>> {
    let mut start = Vec::with_capacity(n);
    reader.by_ref().take(n as u64).read_to_end(&mut start)?;
    Ok(start)
}

/// Reads an export from `reader`; `source` names it in messages (and in
/// [`ExportError::Io`]). Returns the items in file order.
pub fn read_export<R: Read>(
    source: &str,
    mut reader: R,
    opts: &ExportOptions,
) -> Result<Vec<Item>, ExportError> {
    // The byte order mark is dropped here, and the csv crate never gets to
    // see one: it strips a mark only when its first read holds all three
    // bytes, so results would depend on how much each read returns. Its first
    // read is therefore one byte, and the rest follows.
    let io_err = |err| ExportError::Io {
        path: PathBuf::from(source),
        source: err,
    };
    let mut start = read_start(&mut reader, UTF8_BOM.len()).map_err(io_err)?;
    if start == UTF8_BOM {
        start = read_start(&mut reader, 1).map_err(io_err)?;
    }
    let rest = start.split_off(start.len().min(1));
    let input = io::Cursor::new(start)
        .chain(io::Cursor::new(rest))
        .chain(reader);
    let mut csv = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .buffer_capacity(1 << 16)
        .from_reader(input);
    let mut record = ByteRecord::new();
    let mut problems = Problems::new(opts.max_problems);
    let io_error = |err: csv::Error| ExportError::Io {
        path: PathBuf::from(source),
        source: match err.into_kind() {
            csv::ErrorKind::Io(err) => err,
            other => io::Error::new(io::ErrorKind::InvalidData, format!("{other:?}")),
        },
    };

    if !csv.read_byte_record(&mut record).map_err(io_error)? {
        problems.push(1, None, ProblemKind::EmptyFile);
        return Err(problems.into_error(source));
    }
    if !is_header(&record) {
        let found = record
            .iter()
            .map(String::from_utf8_lossy)
            .collect::<Vec<_>>()
            .join(",");
        problems.push(
            line_of(&record),
            None,
            ProblemKind::WrongHeader {
                found: excerpt(found.trim_start_matches('\u{FEFF}')),
            },
        );
        return Err(problems.into_error(source));
    }

    let items = read_rows(&mut csv, opts, &mut problems).map_err(io_error)?;
    if problems.is_empty() {
        Ok(items)
    } else {
        Err(problems.into_error(source))
    }
}

/// Rows handed to a thread at a time.
const BATCH_ROWS: usize = 4096;

/// At most this many threads parse one file (the calling thread included).
const MAX_THREADS: usize = 4;

/// A run of consecutive data rows: read by the calling thread, parsed by
/// whichever thread is free. Its buffers are reused from batch to batch.
struct Batch {
    /// Position of the batch in the file.
    index: usize,
    /// Record buffers; the first `len` hold this batch's rows.
    records: Vec<ByteRecord>,
    len: usize,
    /// The parsed items (dropped once anything in the batch is wrong).
    items: Vec<Item>,
    /// The batch's problems, capped like the file's.
    problems: Problems,
}

impl Batch {
    fn new(max_problems: usize) -> Batch {
        Batch {
            index: 0,
            records: Vec::new(),
            len: 0,
            items: Vec::new(),
            problems: Problems::new(max_problems),
        }
    }

    /// Reads up to [`BATCH_ROWS`] records; returns whether input may remain.
    fn fill<R: Read>(&mut self, csv: &mut csv::Reader<R>) -> Result<bool, csv::Error> {
        self.len = 0;
        while self.len < BATCH_ROWS {
            if self.len == self.records.len() {
                self.records.push(ByteRecord::new());
            }
            if !csv.read_byte_record(&mut self.records[self.len])? {
                return Ok(false);
            }
            self.len += 1;
        }
        Ok(true)
    }

    fn parse(&mut self, opts: &ExportOptions) {
        self.items.clear();
        self.problems.clear();
        for record in &self.records[..self.len] {
            match parse_row(record, opts) {
                Ok(item) => {
                    if self.problems.is_empty() {
                        self.items.push(item);
                    }
                }
                Err(row_problems) => {
                    // The file is rejected: stop keeping items.
                    self.items.clear();
                    let line = line_of(record);
                    for (column, kind) in row_problems {
                        self.problems.push(line, column, kind);
                    }
                }
            }
        }
    }
}

/// Collects parsed batches in file order.
struct Collector<'p> {
    items: Vec<Item>,
    problems: &'p mut Problems,
    next: usize,
    pending: BTreeMap<usize, Batch>,
    /// Batches whose results were taken, ready for reuse.
    spare: Vec<Batch>,
}

impl Collector<'_> {
    fn add(&mut self, batch: Batch) {
        self.pending.insert(batch.index, batch);
        while let Some(mut batch) = self.pending.remove(&self.next) {
            self.next += 1;
            if batch.problems.is_empty() {
                if self.problems.is_empty() {
                    self.items.append(&mut batch.items);
                }
            } else {
                self.items = Vec::new();
                self.problems.absorb(&mut batch.problems);
            }
            self.spare.push(batch);
        }
    }

    fn batch(&mut self, index: usize) -> Batch {
        let mut batch = self
            .spare
            .pop()
            .unwrap_or_else(|| Batch::new(self.problems.max));
        batch.index = index;
        batch
    }
}

/// Parses the data rows after the header. Large files are parsed on several
/// threads, batch by batch; items and problems keep the file's order.
fn read_rows<R: Read>(
    csv: &mut csv::Reader<R>,
    opts: &ExportOptions,
    problems: &mut Problems,
) -> Result<Vec<Item>, csv::Error> {
    let mut collector = Collector {
        items: Vec::new(),
        problems,
        next: 0,
        pending: BTreeMap::new(),
        spare: Vec::new(),
    };
    let mut batch = collector.batch(0);
    let mut more = batch.fill(csv)?;
    let helpers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, MAX_THREADS)
        - 1;
    if !more || helpers == 0 {
        // A small file (or one core): no threads.
        for index in 1.. {
            batch.parse(opts);
            collector.add(batch);
            if !more {
                break;
            }
            batch = collector.batch(index);
            more = batch.fill(csv)?;
        }
        return Ok(collector.items);
    }

    let (work_tx, work_rx) = mpsc::sync_channel::<Batch>(helpers);
    let work_rx = &Mutex::new(work_rx);
    let (done_tx, done_rx) = mpsc::channel::<Batch>();
    std::thread::scope(move |scope| {
        for _ in 0..helpers {
            let done_tx = done_tx.clone();
            scope.spawn(move || {
                loop {
                    let next = match work_rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    let Ok(mut batch) = next else { return };
                    batch.parse(opts);
                    if done_tx.send(batch).is_err() {
                        return;
                    }
                }
            });
        }
        drop(done_tx);

        for index in 1.. {
            // Hand the batch to a helper, or parse it here if all are busy.
            match work_tx.try_send(batch) {
                Ok(()) => {}
                Err(TrySendError::Full(mut own) | TrySendError::Disconnected(mut own)) => {
                    own.parse(opts);
                    collector.add(own);
                }
            }
            while let Ok(done) = done_rx.try_recv() {
                collector.add(done);
            }
            if !more {
                break;
            }
            batch = collector.batch(index);
            more = batch.fill(csv)?;
        }
        drop(work_tx);
        for done in done_rx {
            collector.add(done);
        }
        Ok(collector.items)
    })
}

fn line_of(record: &ByteRecord) -> u64 {
    record.position().map_or(0, |p| p.line())
}

fn is_header(record: &ByteRecord) -> bool {
    record.len() == HEADER.len()
        && record
            .iter()
            .zip(HEADER)
            .enumerate()
            .all(|(i, (got, want))| {
                let got = if i == 0 {
                    got.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(got)
                } else {
                    got
                };
                got == want.as_bytes()
            })
}

/// The problems of a file, capped.
struct Problems {
    listed: Vec<RowProblem>,
    max: usize,
    more: usize,
}

impl Problems {
    fn new(max: usize) -> Problems {
        Problems {
            listed: Vec::new(),
            max,
            more: 0,
        }
    }

    fn is_empty(&self) -> bool {
        self.listed.is_empty() && self.more == 0
    }

    /// Moves in the problems of a later part of the file.
    fn absorb(&mut self, later: &mut Problems) {
        for problem in later.listed.drain(..) {
            if self.listed.len() < self.max {
                self.listed.push(problem);
            } else {
                self.more += 1;
            }
        }
        self.more += later.more;
        later.more = 0;
    }

    fn clear(&mut self) {
        self.listed.clear();
        self.more = 0;
    }

    fn push(&mut self, line: u64, column: Option<Column>, kind: ProblemKind) {
        if self.listed.len() < self.max {
            self.listed.push(RowProblem { line, column, kind });
        } else {
            self.more += 1;
        }
    }

    fn into_error(self, source: &str) -> ExportError {
        ExportError::Rows {
            source_name: source.to_string(),
            problems: self.listed,
            more: self.more,
        }
    }
}

type ProblemList = Vec<(Option<Column>, ProblemKind)>;

/// Parses one data row into an item, or lists everything wrong with it.
fn parse_row(record: &ByteRecord, opts: &ExportOptions) -> Result<Item, ProblemList> {
    if record.len() != HEADER.len() {
        return Err(vec![(
            None,
            ProblemKind::WrongFieldCount {
                found: record.len(),
            },
        )]);
    }
    let mut fields: [Option<&str>; 5] = [None; 5];
    let mut problems = ProblemList::new();
    // Usually the whole record is valid UTF-8: check it once, then cut it
    // into fields (`get` also checks that each cut is at a char boundary).
    if let Ok(text) = std::str::from_utf8(record.as_slice()) {
        let mut start = 0;
        for (slot, bytes) in fields.iter_mut().zip(record) {
            let end = start + bytes.len();
            *slot = text.get(start..end);
            start = end;
        }
    }
    for (column, (slot, bytes)) in Column::ALL.into_iter().zip(fields.iter_mut().zip(record)) {
        if slot.is_some() {
            continue;
        }
        match std::str::from_utf8(bytes) {
            Ok(text) => *slot = Some(text),
            Err(err) => problems.push((
                Some(column),
                ProblemKind::InvalidUtf8 {
                    valid_up_to: err.valid_up_to(),
                    lossy: excerpt(&String::from_utf8_lossy(bytes)),
                },
            )),
        }
    }
    let [model, serial, status, site, counterparty] = fields;

    let status = status.map(|raw| {
        raw.parse::<Status>()
            .map_err(|_| UnknownStatus(excerpt(raw)))
    });
    let counterparty = match (&status, counterparty) {
        (_, None) => None,
        (_, Some("")) => Some(None),
        (Some(Ok(status)), Some(raw)) if *status != Status::TransferredOut => {
            problems.push((
                Some(Column::Counterparty),
                ProblemKind::UnexpectedCounterparty {
                    found: excerpt(raw),
                    status: *status,
                },
            ));
            None
        }
        (_, Some(raw)) => match StateCode::parse(raw) {
            Ok(code) if opts.known_states.contains(&code) => Some(Some(code)),
            Ok(code) => {
                problems.push((
                    Some(Column::Counterparty),
                    ProblemKind::UnknownCounterparty {
                        code,
                        known: opts.known_states.iter().copied().collect(),
                    },
                ));
                None
            }
            Err(_) => {
                problems.push((
                    Some(Column::Counterparty),
                    ProblemKind::InvalidCounterparty(InvalidStateCode(excerpt(raw))),
                ));
                None
            }
        },
    };

    if let (Some(model), Some(serial), Some(Ok(status)), Some(site), Some(counterparty)) =
        (model, serial, &status, site, counterparty)
        && problems.is_empty()
    {
        match Item::new(model, serial, *status, site, counterparty, opts.rule) {
            Ok(item) => return Ok(item),
            Err(ItemError::MissingCounterparty) => {
                problems.push((Some(Column::Counterparty), ProblemKind::MissingCounterparty));
            }
            Err(ItemError::UnexpectedCounterparty {
                counterparty,
                status,
            }) => problems.push((
                Some(Column::Counterparty),
                ProblemKind::UnexpectedCounterparty {
                    found: counterparty.to_string(),
                    status,
                },
            )),
            Err(ItemError::TooLong { field, len, max }) => {
                let column = match field {
                    "model" => Column::Model,
                    "serial" => Column::Serial,
                    _ => Column::Site,
                };
                problems.push((Some(column), ProblemKind::TooLong { len, max }));
            }
            Err(ItemError::Model(_)) => problems.push(empty_model(model)),
            Err(ItemError::Serial(_)) => problems.push(empty_serial(serial)),
        }
    }

    // Something is wrong: find everything else that is wrong with the row.
    let reported =
        |problems: &ProblemList, column| problems.iter().any(|(c, _)| *c == Some(column));
    if let Some(raw) = model
        && !reported(&problems, Column::Model)
        && CanonicalModel::from_raw(raw, opts.rule).is_err()
    {
        problems.push(empty_model(raw));
    }
    if let Some(raw) = serial
        && !reported(&problems, Column::Serial)
        && CanonicalSerial::from_raw(raw, opts.rule).is_err()
    {
        problems.push(empty_serial(raw));
    }
    match status {
        Some(Err(unknown)) => {
            problems.push((Some(Column::Status), ProblemKind::UnknownStatus(unknown)))
        }
        Some(Ok(Status::TransferredOut))
            if counterparty == Some(None) && !reported(&problems, Column::Counterparty) =>
        {
            problems.push((Some(Column::Counterparty), ProblemKind::MissingCounterparty));
        }
        _ => {}
    }
    problems.sort_by_key(|(column, _)| *column);
    Err(problems)
}

fn empty_model(raw: &str) -> (Option<Column>, ProblemKind) {
    (
        Some(Column::Model),
        ProblemKind::EmptyModel { raw: excerpt(raw) },
    )
}

fn empty_serial(raw: &str) -> (Option<Column>, ProblemKind) {
    (
        Some(Column::Serial),
        ProblemKind::EmptySerial { raw: excerpt(raw) },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "model,serial,status,site,counterparty\n";

    fn read(text: &str) -> Result<Vec<Item>, ExportError> {
        read_bytes(text.as_bytes(), DEFAULT_MAX_PROBLEMS)
    }

    fn read_bytes(bytes: &[u8], max_problems: usize) -> Result<Vec<Item>, ExportError> {
        let rule = CanonicalRule::default();
        let states = StateSet::members();
        let opts = ExportOptions {
            rule: &rule,
            known_states: &states,
            max_problems,
        };
        read_export("exports/RUS.csv", bytes, &opts)
    }

    /// The problems as (line, column number, kind), or a panic if the file was read.
    fn problems(text: &str) -> Vec<(u64, Option<usize>, ProblemKind)> {
        problems_of(read(text))
    }

    fn problems_of(
        result: Result<Vec<Item>, ExportError>,
    ) -> Vec<(u64, Option<usize>, ProblemKind)> {
        match result {
            Err(ExportError::Rows { problems, more, .. }) => {
                assert_eq!(more, 0);
                problems
                    .into_iter()
                    .map(|p| (p.line, p.column.map(Column::number), p.kind))
                    .collect()
            }
            other => panic!("expected row problems, got {other:?}"),
        }
    }

    fn code(s: &str) -> StateCode {
        StateCode::parse(s).expect("test state code")
    }

    fn one(
        line: u64,
        column: Option<usize>,
        kind: ProblemKind,
    ) -> Vec<(u64, Option<usize>, ProblemKind)> {
        vec![(line, column, kind)]
    }

    #[test]
    fn overlong_field_names_its_column() {
        let long_site = "D".repeat(crate::item::MAX_FIELD_BYTES + 5);
        let text = format!("{H}9K38,A1,in_service,{long_site},\n");
        assert_eq!(
            problems(&text),
            one(
                2,
                Some(4),
                ProblemKind::TooLong {
                    len: crate::item::MAX_FIELD_BYTES + 5,
                    max: crate::item::MAX_FIELD_BYTES
                }
            )
        );
    }

    #[test]
    fn empty_file() {
        assert_eq!(problems(""), one(1, None, ProblemKind::EmptyFile));
        assert_eq!(problems("\n\r\n"), one(1, None, ProblemKind::EmptyFile));
        assert_eq!(problems("\u{FEFF}"), one(1, None, ProblemKind::EmptyFile));
    }

    #[test]
    fn header_only_is_an_empty_snapshot() {
        assert_eq!(read(H).ok(), Some(vec![]));
        assert_eq!(read(HEADER_LINE).ok(), Some(vec![]));
        assert_eq!(
            read("\u{FEFF}model,serial,status,site,counterparty\r\n").ok(),
            Some(vec![])
        );
    }

    #[test]
    fn wrong_header() {
        for (text, found) in [
            (
                "Model,serial,status,site,counterparty\n",
                "Model,serial,status,site,counterparty",
            ),
            (
                "model,serial,status,site\n9M39,1,lost,x\n",
                "model,serial,status,site",
            ),
            (
                "model, serial,status,site,counterparty\n",
                "model, serial,status,site,counterparty",
            ),
            (
                "9M39,KA-1,in_service,Depot,\n",
                "9M39,KA-1,in_service,Depot,",
            ),
        ] {
            assert_eq!(
                problems(text),
                one(
                    1,
                    None,
                    ProblemKind::WrongHeader {
                        found: found.to_string()
                    }
                ),
                "{text:?}"
            );
        }
        let bytes = b"model,ser\xFFial,status,site,counterparty\n";
        assert_eq!(
            problems_of(read_bytes(bytes, 10)),
            one(
                1,
                None,
                ProblemKind::WrongHeader {
                    found: "model,ser\u{FFFD}ial,status,site,counterparty".to_string()
                }
            )
        );
    }

    #[test]
    fn wrong_number_of_fields() {
        let text = format!(
            "{H}9M39,KA-1,in_service,Depot 1,\n9M39,KA-2,in_service,Depot, 1,\n9M39,KA-3\n"
        );
        assert_eq!(
            problems(&text),
            vec![
                (3, None, ProblemKind::WrongFieldCount { found: 6 }),
                (4, None, ProblemKind::WrongFieldCount { found: 2 }),
            ]
        );
        let message = ProblemKind::WrongFieldCount { found: 6 }.to_string();
        assert!(message.contains("double quotes"), "{message}");
    }

    #[test]
    fn invalid_utf8() {
        let mut bytes = H.as_bytes().to_vec();
        bytes.extend_from_slice(b"9M39,KA-1,in_service,D\xE9p\xF4t,\n");
        bytes.extend_from_slice(b"9M39,K\xC0,in_service,Depot,\n");
        assert_eq!(
            problems_of(read_bytes(&bytes, 10)),
            vec![
                (
                    2,
                    Some(4),
                    ProblemKind::InvalidUtf8 {
                        valid_up_to: 1,
                        lossy: "D\u{FFFD}p\u{FFFD}t".to_string()
                    }
                ),
                (
                    3,
                    Some(2),
                    ProblemKind::InvalidUtf8 {
                        valid_up_to: 1,
                        lossy: "K\u{FFFD}".to_string()
                    }
                ),
            ]
        );
    }

    #[test]
    fn unknown_status() {
        let text = format!(
            "{H}9M39,KA-1,in-servise,Depot,\n9M39,KA-2,,Depot,\n9M39,KA-3,In_Service,Depot,\n"
        );
        assert_eq!(
            problems(&text),
            vec![
                (
                    2,
                    Some(3),
                    ProblemKind::UnknownStatus(UnknownStatus("in-servise".into()))
                ),
                (
                    3,
                    Some(3),
                    ProblemKind::UnknownStatus(UnknownStatus(String::new()))
                ),
                (
                    4,
                    Some(3),
                    ProblemKind::UnknownStatus(UnknownStatus("In_Service".into()))
                ),
            ]
        );
    }

    #[test]
    fn missing_counterparty() {
        let text = format!("{H}9M39,KA-1,in_service,Depot,\n9M39,KA-2,transferred_out,Depot,\n");
        assert_eq!(
            problems(&text),
            one(3, Some(5), ProblemKind::MissingCounterparty)
        );
    }

    #[test]
    fn counterparty_on_another_status() {
        let text = format!("{H}9M39,KA-1,in_storage,Depot,KAZ\n9M39,KA-2,lost,,kaz\n");
        assert_eq!(
            problems(&text),
            vec![
                (
                    2,
                    Some(5),
                    ProblemKind::UnexpectedCounterparty {
                        found: "KAZ".into(),
                        status: Status::InStorage
                    }
                ),
                (
                    3,
                    Some(5),
                    ProblemKind::UnexpectedCounterparty {
                        found: "kaz".into(),
                        status: Status::Lost
                    }
                ),
            ]
        );
    }

    #[test]
    fn counterparty_not_a_state_code_or_not_known() {
        let text = format!(
            "{H}9M39,KA-1,transferred_out,Depot,kaz\n9M39,KA-2,transferred_out,Depot, KAZ\n9M39,KA-3,transferred_out,Depot,USA\n"
        );
        assert_eq!(
            problems(&text),
            vec![
                (
                    2,
                    Some(5),
                    ProblemKind::InvalidCounterparty(InvalidStateCode("kaz".into()))
                ),
                (
                    3,
                    Some(5),
                    ProblemKind::InvalidCounterparty(InvalidStateCode(" KAZ".into()))
                ),
                (
                    4,
                    Some(5),
                    ProblemKind::UnknownCounterparty {
                        code: code("USA"),
                        known: StateSet::members().iter().copied().collect()
                    }
                ),
            ]
        );
        let message = problems(&text)[2].2.to_string();
        assert_eq!(
            message,
            "counterparty USA is not a known state (expected one of ARM, BLR, KAZ, KGZ, RUS, TJK)"
        );
    }

    #[test]
    fn empty_serial_and_model() {
        let text = format!(
            "{H}9M39,,in_service,Depot,\n9M39, - ,in_service,Depot,\n,KA-1,in_service,Depot,\n--,KA-2,in_service,Depot,\n"
        );
        assert_eq!(
            problems(&text),
            vec![
                (2, Some(2), ProblemKind::EmptySerial { raw: String::new() }),
                (3, Some(2), ProblemKind::EmptySerial { raw: " - ".into() }),
                (4, Some(1), ProblemKind::EmptyModel { raw: String::new() }),
                (5, Some(1), ProblemKind::EmptyModel { raw: "--".into() }),
            ]
        );
        assert_eq!(
            ProblemKind::EmptySerial { raw: " - ".into() }.to_string(),
            "serial ' - ' is empty once spaces and hyphens are removed"
        );
        assert_eq!(
            ProblemKind::EmptyModel { raw: String::new() }.to_string(),
            "model is empty"
        );
    }

    #[test]
    fn every_problem_of_a_row_is_listed() {
        let text = format!("{H},,in-service,Depot,USA\n,-,transferred_out,Depot,\n");
        assert_eq!(
            problems(&text),
            vec![
                (2, Some(1), ProblemKind::EmptyModel { raw: String::new() }),
                (2, Some(2), ProblemKind::EmptySerial { raw: String::new() }),
                (
                    2,
                    Some(3),
                    ProblemKind::UnknownStatus(UnknownStatus("in-service".into()))
                ),
                (
                    2,
                    Some(5),
                    ProblemKind::UnknownCounterparty {
                        code: code("USA"),
                        known: StateSet::members().iter().copied().collect()
                    }
                ),
                (3, Some(1), ProblemKind::EmptyModel { raw: String::new() }),
                (3, Some(2), ProblemKind::EmptySerial { raw: "-".into() }),
                (3, Some(5), ProblemKind::MissingCounterparty),
            ]
        );
    }

    #[test]
    fn several_bad_rows_are_all_listed_with_lines_after_quoted_newlines_and_blank_lines() {
        let text = format!(
            "{H}9M39,KA-1,in_service,Depot,\n9M39,KA-2,broken,Depot,\n\n9M39,\"KA-3\",in_service,\"Depot\nwith a newline\",\n9M39,,in_service,Depot,\n9M39,KA-5,in_service,Depot,KAZ\n"
        );
        assert_eq!(
            problems(&text),
            vec![
                (
                    3,
                    Some(3),
                    ProblemKind::UnknownStatus(UnknownStatus("broken".into()))
                ),
                (7, Some(2), ProblemKind::EmptySerial { raw: String::new() }),
                (
                    8,
                    Some(5),
                    ProblemKind::UnexpectedCounterparty {
                        found: "KAZ".into(),
                        status: Status::InService
                    }
                ),
            ]
        );
    }

    #[test]
    fn the_cap_lists_the_first_problems_and_counts_the_rest() {
        let mut text = H.to_string();
        for i in 0..250 {
            text.push_str(&format!("9M39,KA-{i},bad,Depot,\n"));
        }
        match read_bytes(text.as_bytes(), 100) {
            Err(ExportError::Rows { problems, more, .. }) => {
                assert_eq!(problems.len(), 100);
                assert_eq!(more, 150);
                assert_eq!(problems[0].line, 2);
                assert_eq!(problems[99].line, 101);
            }
            other => panic!("{other:?}"),
        }
        match read_bytes(text.as_bytes(), 0) {
            Err(err @ ExportError::Rows { .. }) => {
                assert!(err.problems().is_empty());
                assert_eq!(
                    err.to_string(),
                    "exports/RUS.csv: 250 more problems not listed"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    /// More rows than one batch, so that large files take the threaded path.
    fn big_file(rows: usize, bad_every: Option<usize>) -> String {
        let mut text = H.to_string();
        for i in 0..rows {
            let status = match bad_every {
                Some(n) if i % n == n - 1 => "bad",
                _ => "in_storage",
            };
            text.push_str(&format!("9M39,KA-{i:06},{status},Depot 12,\n"));
        }
        text
    }

    #[test]
    fn large_files_keep_their_order() {
        let rows = 5 * BATCH_ROWS + 17;
        let items = read(&big_file(rows, None)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(items.len(), rows);
        for (i, item) in items.iter().enumerate() {
            assert_eq!(item.serial, format!("KA-{i:06}"));
        }
    }

    #[test]
    fn large_files_list_problems_in_order_across_batches() {
        let rows = 6 * BATCH_ROWS;
        let every = 997;
        let text = big_file(rows, Some(every));
        let bad_lines: Vec<u64> = (0..rows)
            .filter(|i| i % every == every - 1)
            .map(|i| i as u64 + 2)
            .collect();
        let listed = problems(&text);
        assert_eq!(listed.len(), bad_lines.len());
        for ((line, column, kind), expected) in listed.iter().zip(&bad_lines) {
            assert_eq!((*line, *column), (*expected, Some(3)));
            assert_eq!(
                kind,
                &ProblemKind::UnknownStatus(UnknownStatus("bad".into()))
            );
        }
        match read_bytes(text.as_bytes(), 5) {
            Err(ExportError::Rows { problems, more, .. }) => {
                let lines: Vec<u64> = problems.iter().map(|p| p.line).collect();
                assert_eq!(lines, bad_lines[..5]);
                assert_eq!(more, bad_lines.len() - 5);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn long_raw_values_are_cut_in_messages() {
        let long = "x".repeat(500);
        let text = format!("{H}9M39,KA-1,{long},Depot,\n");
        let listed = problems(&text);
        let expected = format!("{}…", "x".repeat(crate::quote::EXCERPT_CHARS));
        assert_eq!(
            listed,
            one(
                2,
                Some(3),
                ProblemKind::UnknownStatus(UnknownStatus(expected))
            )
        );
    }

    #[test]
    fn a_problem_displays_its_line() {
        let problem = RowProblem {
            line: 17,
            column: Some(Column::Counterparty),
            kind: ProblemKind::MissingCounterparty,
        };
        assert_eq!(
            problem.to_string(),
            "line 17: column 'counterparty': status transferred_out needs a counterparty: the receiving state's code, e.g. KAZ"
        );
    }

    #[test]
    fn display_names_file_line_and_column() {
        let text =
            format!("{H}9M39,KA-1,in_service,Depot,\n9M39,KA-2,in-servise,Depot,\n9M39,KA-3\n");
        let err = read_bytes(text.as_bytes(), 1).err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some(
                "exports/RUS.csv:3: column 'status': unknown status 'in-servise' (expected one of in_service, in_storage, transferred_out, expended, destroyed, lost)\n\
                 exports/RUS.csv: 1 more problem not listed"
            )
        );
        let err = read(&text).err().map(|e| e.to_string());
        assert!(
            err.as_deref().is_some_and(|e| e.ends_with(
                "\nexports/RUS.csv:4: wrong number of fields: expected 5 (model,serial,status,site,counterparty), found 2"
            )),
            "{err:?}"
        );
    }

    #[test]
    fn good_file_with_bom_crlf_quotes_and_cyrillic() {
        let text = "\u{FEFF}model,serial,status,site,counterparty\r\n\
            9M39,\u{041A}\u{0410}-012345,in_storage,Depot 12,\r\n\
            \"9K38\",\"ka 0 12\",transferred_out,\"Depot 3, north\",KAZ\r\n\
            AK-74M,\"A\"\"1\",lost,,\r\n\
            9P39, 77 ,destroyed,\"\",\r\n\
            \r\n\r\n";
        let items = read(text).unwrap_or_else(|e| panic!("{e}"));
        let rule = CanonicalRule::default();
        let expected = vec![
            Item::new(
                "9M39",
                "\u{041A}\u{0410}-012345",
                Status::InStorage,
                "Depot 12",
                None,
                &rule,
            ),
            Item::new(
                "9K38",
                "ka 0 12",
                Status::TransferredOut,
                "Depot 3, north",
                Some(code("KAZ")),
                &rule,
            ),
            Item::new("AK-74M", "A\"1", Status::Lost, "", None, &rule),
            Item::new("9P39", " 77 ", Status::Destroyed, "", None, &rule),
        ]
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(items, expected);
        assert_eq!(items[0].key.serial.as_str(), "KA012345");
        assert_eq!(items[1].key.serial.as_str(), "KA012");
        assert_eq!(items[2].key.model.as_str(), "AK74M");
        // Raw spellings are kept exactly.
        assert_eq!(items[3].serial, " 77 ");
    }

    #[test]
    fn good_file_without_trailing_newline() {
        let items = read(&format!("{H}9M39,KA-1,in_service,Depot,")).unwrap_or_default();
        assert_eq!(items.len(), 1);
    }

    #[test]
    fn reads_files_and_reports_missing_ones() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("RUS.csv");
        std::fs::write(&path, format!("{H}9M39,KA-1,in_service,Depot,\n"))
            .unwrap_or_else(|e| panic!("{e}"));
        let rule = CanonicalRule::default();
        let states = StateSet::members();
        let opts = ExportOptions::new(&rule, &states);
        assert_eq!(
            read_export_file(&path, &opts).map(|v| v.len()).ok(),
            Some(1)
        );

        let missing = dir.path().join("BLR.csv");
        match read_export_file(&missing, &opts) {
            Err(err @ ExportError::Io { .. }) => {
                assert_eq!(
                    err.to_string(),
                    format!("cannot read export {}", missing.display())
                );
                assert!(std::error::Error::source(&err).is_some());
            }
            other => panic!("{other:?}"),
        }

        std::fs::write(&path, format!("{H}9M39,KA-1,in_servic,Depot,\n"))
            .unwrap_or_else(|e| panic!("{e}"));
        let message = read_export_file(&path, &opts)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            message.starts_with(&format!("{}:2: column 'status': ", path.display())),
            "{message}"
        );
    }
}
