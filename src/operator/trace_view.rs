//! What `tally trace` prints: a table for people (at most 100 columns) or
//! stable JSON for scripts, both made from the coordinator's trace response.
//!
//! # JSON (`--format json`)
//! One object, fields in this order (documented in docs/cli.md, "tally trace / tally verify"):
//! - `format`: `"tally-trace/v1"`.
//! - `key`: `{ "model", "serial" }`, the canonical item key.
//! - `entries`: the trail, oldest first; each entry is exactly an evidence
//!   bundle entry ([`crate::evidence::BundleEntry`]): `state`, `sequence`,
//!   `as_of_unix_ms`, `status`, `site`, `counterparty` (empty unless
//!   `transferred_out`), raw `model` and `serial`, and `evidence` (`digest`,
//!   `header`, `signature`, `leaf` as lowercase hex; `leaf_index`,
//!   `tree_size`; `proof`, a list of hex hashes).
//! - `alerts`: `{ "id", "kind", "status", "state", "counterparty", "summary" }`
//!   for every alert about the key (`status`: `open`, `acknowledged`,
//!   `resolved` or `cleared`; absent states are empty strings).
//! - `custody`: `{ "never_reported", "last_custodian", "last_status",
//!   "last_held_in", "gone_in", "held_now_by", "custodians",
//!   "last_listed_in", "absent_since", "declared_to" }` (docs/alerts.md,
//!   "Custody"), where the snapshot fields are `null` or
//!   `{ "state", "sequence", "as_of_unix_ms", "digest" }`.
//!
//! New fields may be added at the end of an object; existing ones keep their
//! name, type and meaning.

use std::fmt::Write as _;

use serde::Serialize;

use crate::evidence::{BundleEntry, BundleError, BundleKey};
use crate::proto;

/// The value of the JSON output's `format` field.
pub(crate) const TRACE_FORMAT: &str = "tally-trace/v1";

/// Widest table line, in terminal columns.
pub(crate) const TABLE_WIDTH: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct TraceJson {
    pub format: &'static str,
    pub key: BundleKey,
    pub entries: Vec<BundleEntry>,
    pub alerts: Vec<AlertJson>,
    pub custody: Option<CustodyJson>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct AlertJson {
    pub id: u64,
    pub kind: String,
    pub status: &'static str,
    pub state: String,
    pub counterparty: String,
    pub summary: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct CustodyJson {
    pub never_reported: bool,
    pub last_custodian: String,
    pub last_status: Vec<String>,
    pub last_held_in: Option<SnapshotJson>,
    pub gone_in: Option<SnapshotJson>,
    pub held_now_by: Vec<String>,
    pub custodians: Vec<String>,
    pub last_listed_in: Option<SnapshotJson>,
    pub absent_since: Option<SnapshotJson>,
    pub declared_to: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct SnapshotJson {
    pub state: String,
    pub sequence: u64,
    pub as_of_unix_ms: i64,
    pub digest: String,
}

fn alert_status(code: i32) -> &'static str {
    match proto::AlertStatus::try_from(code) {
        Ok(proto::AlertStatus::Open) => "open",
        Ok(proto::AlertStatus::Acknowledged) => "acknowledged",
        Ok(proto::AlertStatus::Resolved) => "resolved",
        Ok(proto::AlertStatus::Cleared) => "cleared",
        Ok(proto::AlertStatus::Unspecified) | Err(_) => "unknown",
    }
}

fn snapshot_json(r: &proto::SnapshotRef) -> SnapshotJson {
    SnapshotJson {
        state: r.state.clone(),
        sequence: r.sequence,
        as_of_unix_ms: r.as_of_unix_ms,
        digest: hex::encode(&r.digest),
    }
}

impl TraceJson {
    pub(crate) fn from_response(r: &proto::TraceItemResponse) -> Result<TraceJson, BundleError> {
        Ok(TraceJson {
            format: TRACE_FORMAT,
            key: BundleKey {
                model: r.model.clone(),
                serial: r.serial.clone(),
            },
            entries: r
                .entries
                .iter()
                .enumerate()
                .map(|(i, e)| tally_wire::evidence::bundle_entry_from_trace(i, e))
                .collect::<Result<_, _>>()?,
            alerts: r
                .alerts
                .iter()
                .map(|a| AlertJson {
                    id: a.id,
                    kind: a.kind.clone(),
                    status: alert_status(a.status),
                    state: a.state.clone(),
                    counterparty: a.counterparty.clone(),
                    summary: a.summary.clone(),
                })
                .collect(),
            custody: r.custody.as_ref().map(|c| CustodyJson {
                never_reported: c.never_reported,
                last_custodian: c.last_custodian.clone(),
                last_status: c.last_status.clone(),
                last_held_in: c.last_held_in.as_ref().map(snapshot_json),
                gone_in: c.gone_in.as_ref().map(snapshot_json),
                held_now_by: c.held_now_by.clone(),
                custodians: c.custodians.clone(),
                last_listed_in: c.last_listed_in.as_ref().map(snapshot_json),
                absent_since: c.absent_since.as_ref().map(snapshot_json),
                declared_to: c.declared_to.clone(),
            }),
        })
    }
}

/// `YYYY-MM-DD HH:MM:SS` in UTC for milliseconds since the Unix epoch.
pub(crate) fn utc(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let secs = ms.rem_euclid(86_400_000) / 1000;
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Terminal columns of one character: 0 for combining and zero-width
/// characters, 2 for East Asian wide and full-width ones, else 1. An
/// approximation that covers what inventories contain.
fn char_width(c: char) -> usize {
    match c as u32 {
        0x0300..=0x036F | 0x200B..=0x200F | 0x2060..=0x2064 | 0xFE00..=0xFE0F | 0xFEFF => 0,
        0x1100..=0x115F
        | 0x2E80..=0x303E
        | 0x3041..=0x33FF
        | 0x3400..=0x4DBF
        | 0x4E00..=0x9FFF
        | 0xA000..=0xA4CF
        | 0xAC00..=0xD7A3
        | 0xF900..=0xFAFF
        | 0xFE30..=0xFE4F
        | 0xFF00..=0xFF60
        | 0xFFE0..=0xFFE6
        | 0x1F300..=0x1FAFF
        | 0x20000..=0x3FFFD => 2,
        _ => 1,
    }
}

/// Columns `s` takes on a terminal.
pub fn display_width(s: &str) -> usize {
    s.chars().map(char_width).sum()
}

/// `s` made safe for one table cell: control characters (a raw serial may
/// hold a tab or a newline) are shown escaped.
fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// `s` in exactly `width` columns: padded with spaces, or cut with `…`.
fn fit(s: &str, width: usize) -> String {
    let s = printable(s);
    let w = display_width(&s);
    if w <= width {
        return format!("{s}{}", " ".repeat(width - w));
    }
    let mut out = String::new();
    let mut used = 0;
    for c in s.chars() {
        let cw = char_width(c);
        if used + cw + 1 > width {
            break;
        }
        out.push(c);
        used += cw;
    }
    out.push('…');
    used += 1;
    out.push_str(&" ".repeat(width.saturating_sub(used)));
    out
}

/// `s` cut to at most `width` columns, without padding.
fn clip(s: &str, width: usize) -> String {
    fit(s, width).trim_end().to_string()
}

/// Column widths of the trail table; with two spaces between columns the
/// last one ends at [`TABLE_WIDTH`].
const COLUMNS: [(&str, usize); 7] = [
    ("AS OF (UTC)", 19),
    ("STATE", 5),
    ("SEQ", 6),
    ("STATUS", 15),
    ("SITE", 18),
    ("CPTY", 4),
    ("AS WRITTEN", 21),
];

fn row(cells: [&str; 7]) -> String {
    let mut line = String::new();
    for (i, (cell, (_, width))) in cells.iter().zip(COLUMNS).enumerate() {
        if i > 0 {
            line.push_str("  ");
        }
        if i == 2 {
            // Sequence numbers right-aligned.
            let s = clip(cell, width);
            line.push_str(&" ".repeat(width - display_width(&s)));
            line.push_str(&s);
        } else {
            line.push_str(&fit(cell, width));
        }
    }
    line.trim_end().to_string()
}

fn snapshot_text(r: &proto::SnapshotRef) -> String {
    format!(
        "{} #{} (as of {})",
        r.state,
        r.sequence,
        utc(r.as_of_unix_ms)
    )
}

/// The table `tally trace` prints: the trail, the alerts and the custody
/// summary; no line is wider than [`TABLE_WIDTH`] columns.
pub(crate) fn render_table(r: &proto::TraceItemResponse) -> String {
    let mut out = String::new();
    let key = format!("{}/{}", r.model, r.serial);
    let mut states: Vec<&str> = r.entries.iter().map(|e| e.state.as_str()).collect();
    states.sort_unstable();
    states.dedup();
    let title = if r.entries.is_empty() {
        format!("{key}: no stored snapshot lists this item")
    } else {
        format!(
            "{key}: {} row{} in {} snapshot{} of {}",
            r.entries.len(),
            if r.entries.len() == 1 { "" } else { "s" },
            snapshot_count(r),
            if snapshot_count(r) == 1 { "" } else { "s" },
            states.join(", ")
        )
    };
    let _ = writeln!(out, "{}", clip(&title, TABLE_WIDTH));
    if !r.entries.is_empty() {
        out.push('\n');
        let header = COLUMNS.map(|(name, _)| name);
        let _ = writeln!(out, "{}", row(header));
        for e in &r.entries {
            let seq = e.sequence.to_string();
            let written = format!("{} {}", printable(&e.model), printable(&e.serial));
            let _ = writeln!(
                out,
                "{}",
                row([
                    &utc(e.as_of_unix_ms),
                    &e.state,
                    &seq,
                    &e.status,
                    &e.site,
                    &e.counterparty,
                    &written,
                ])
            );
        }
    }

    out.push('\n');
    if r.alerts.is_empty() {
        let _ = writeln!(out, "Alerts: none");
    } else {
        let _ = writeln!(out, "Alerts ({}):", r.alerts.len());
        for a in &r.alerts {
            let who = match (a.state.as_str(), a.counterparty.as_str()) {
                ("", _) => String::new(),
                (s, "") => s.to_string(),
                (s, c) => format!("{s}->{c}"),
            };
            let line = format!(
                "  #{}  {}  {}  {}  {}",
                fit(&a.id.to_string(), 5),
                fit(&a.kind, 25),
                fit(alert_status(a.status), 12),
                fit(&who, 8),
                printable(&a.summary)
            );
            let _ = writeln!(out, "{}", clip(&line, TABLE_WIDTH));
        }
    }

    out.push('\n');
    let custody: Vec<String> = match &r.custody {
        None => vec!["Custody: not reported by the coordinator".into()],
        Some(c) if c.never_reported => {
            vec!["Custody: no member state has ever reported this item".into()]
        }
        Some(c) => {
            let custodians = if c.custodians.is_empty() {
                c.last_custodian.clone()
            } else {
                c.custodians.join(", ")
            };
            let mut lines = vec![if c.last_held_in.is_some() {
                format!("Custody: last held by {custodians}")
            } else {
                format!("Custody: never listed as held; last listed by {custodians}")
            }];
            let listed = c
                .last_listed_in
                .as_ref()
                .map_or(String::new(), |r| format!(" in {}", snapshot_text(r)));
            lines.push(format!(
                "  {} lists it as {}{listed}",
                c.last_custodian,
                c.last_status.join(", ")
            ));
            if !c.declared_to.is_empty() {
                lines.push(format!(
                    "  declared transferred to {}",
                    c.declared_to.join(", ")
                ));
            }
            if let Some(h) = &c.last_held_in {
                lines.push(format!("  last held in {}", snapshot_text(h)));
            }
            if let Some(g) = &c.gone_in {
                lines.push(format!("  no longer held from {}", snapshot_text(g)));
            }
            if let Some(a) = &c.absent_since {
                lines.push(format!(
                    "  absent since {} (dropped without a declaration)",
                    snapshot_text(a)
                ));
            }
            lines.push(format!(
                "  held now by: {}",
                if c.held_now_by.is_empty() {
                    "nobody".to_string()
                } else {
                    c.held_now_by.join(", ")
                }
            ));
            lines
        }
    };
    for line in custody {
        let _ = writeln!(out, "{}", clip(&line, TABLE_WIDTH));
    }
    out
}

fn snapshot_count(r: &proto::TraceItemResponse) -> usize {
    let mut snaps: Vec<(&str, u64)> = r
        .entries
        .iter()
        .map(|e| (e.state.as_str(), e.sequence))
        .collect();
    snaps.sort_unstable();
    snaps.dedup();
    snaps.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(1_767_225_600_000), "2026-01-01 00:00:00");
        assert_eq!(utc(1_709_210_096_789), "2024-02-29 12:34:56");
        assert_eq!(utc(-1), "1969-12-31 23:59:59");
    }

    #[test]
    fn columns_add_up_to_the_table_width() {
        let total: usize = COLUMNS.iter().map(|(_, w)| w).sum::<usize>() + 2 * (COLUMNS.len() - 1);
        assert_eq!(total, TABLE_WIDTH);
        for (name, width) in COLUMNS {
            assert!(display_width(name) <= width);
        }
    }

    fn entry(state: &str, serial: &str, site: &str) -> proto::TraceEntry {
        proto::TraceEntry {
            state: state.into(),
            sequence: 123_456_789,
            as_of_unix_ms: 1_767_225_600_000,
            status: "transferred_out".into(),
            site: site.into(),
            counterparty: "KGZ".into(),
            model: "9М39".into(),
            serial: serial.into(),
            evidence: None,
        }
    }

    /// Long, wide, and control-character fields never push a line past 100
    /// columns or break it in two.
    #[test]
    fn the_table_stays_within_100_columns() {
        let response = proto::TraceItemResponse {
            model: "9M39".into(),
            serial: "A".repeat(300),
            entries: vec![
                entry(
                    "KAZ",
                    "ＡＢ－７７０１ＡＢ－７７０１ＡＢ－７７０１",
                    "Арсенал 3 (центральный склад)",
                ),
                entry("RUS", "a\nb\tc", "Depot\n7"),
                entry("TJK", "x\u{0301}y", "倉庫倉庫倉庫倉庫倉庫倉庫倉庫"),
            ],
            alerts: vec![proto::TraceAlert {
                id: 42,
                kind: "transfer_not_received".into(),
                status: proto::AlertStatus::Acknowledged as i32,
                state: "KAZ".into(),
                counterparty: "KGZ".into(),
                summary: "KAZ declared 9M39/AB7701 transferred to KGZ; ".repeat(5),
            }],
            custody: Some(proto::Custody {
                never_reported: false,
                last_custodian: "KAZ".into(),
                last_status: vec!["transferred_out".into()],
                last_held_in: Some(proto::SnapshotRef {
                    state: "KAZ".into(),
                    sequence: 2,
                    digest: vec![0; 32].into(),
                    as_of_unix_ms: 1_767_000_000_000,
                }),
                gone_in: None,
                held_now_by: vec![],
                custodians: vec!["KAZ".into()],
                last_listed_in: Some(proto::SnapshotRef {
                    state: "KAZ".into(),
                    sequence: 3,
                    digest: vec![0; 32].into(),
                    as_of_unix_ms: 1_768_000_000_000,
                }),
                absent_since: None,
                declared_to: vec!["KGZ".into()],
            }),
        };
        let table = render_table(&response);
        assert_eq!(
            table
                .lines()
                .filter(|l| l.contains("transferred_out"))
                .count(),
            4
        );
        for line in table.lines() {
            assert!(
                display_width(line) <= TABLE_WIDTH,
                "{} columns: {line}",
                display_width(line)
            );
        }
        assert!(table.contains("a\\nb\\tc"), "{table}");
        // A sequence too long for its column is cut, never allowed to widen the line.
        assert!(table.contains(" 12345…  "), "{table}");
        assert!(table.contains("held now by: nobody"));
    }

    #[test]
    fn an_empty_trail_says_so() {
        let table = render_table(&proto::TraceItemResponse {
            model: "9K38".into(),
            serial: "ZZ9".into(),
            custody: Some(proto::Custody {
                never_reported: true,
                ..Default::default()
            }),
            ..Default::default()
        });
        assert!(table.starts_with("9K38/ZZ9: no stored snapshot lists this item"));
        assert!(table.contains("no member state has ever reported this item"));
    }
}
