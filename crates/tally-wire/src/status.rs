//! The coordinator's status on the wire (`GetStatus`).

use tally_core::overview::{CoordinatorStatus, MemberStatus};

use crate::proto;

/// The wire form of the coordinator's status.
pub fn status_to_proto(s: &CoordinatorStatus) -> proto::CoordinatorStatus {
    proto::CoordinatorStatus {
        members: s.members.iter().map(member_to_proto).collect(),
        open_alerts: s
            .current_alerts
            .iter()
            .map(|(kind, open)| proto::AlertCount {
                kind: kind.to_string(),
                open: *open,
            })
            .collect(),
        last_cursor: s.last_cursor,
    }
}

/// The wire form of one member's status (zeros before its first snapshot).
pub fn member_to_proto(m: &MemberStatus) -> proto::MemberStatus {
    proto::MemberStatus {
        state: m.state.to_string(),
        last_sequence: m.latest.map_or(0, |l| l.sequence),
        last_as_of_unix_ms: m.latest.map_or(0, |l| l.as_of_unix_ms),
        last_accepted_at_unix_ms: m.latest.map_or(0, |l| l.accepted_at_unix_ms),
        overdue: m.overdue,
    }
}
