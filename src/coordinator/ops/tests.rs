//! The operations decide their own permission, first: each refuses, by the
//! one permission table, every caller the table refuses, records the
//! refusal, and only then looks at its request.

use std::sync::Arc;

use super::*;
use crate::access::Role;
use crate::audit::{Action, Outcome};
use crate::coordinator::storage::audit_log::{AuditLog, AuditStore};
use crate::coordinator::storage::memory::{
    MemoryAlertStorage, MemoryAuditTrail, MemorySeizureStore, MemoryStore,
};
use crate::seizure::RawSeizure;
use crate::state::StateCode;

/// The codes the trail records for a refused call, as the gRPC edge gives
/// them (`grpc::status::ops_code`, which ops does not depend on).
fn test_code(e: &OpsError) -> u32 {
    match e {
        OpsError::Access(e) if e.is_unauthenticated() => 16,
        OpsError::Access(_) => 7,
        OpsError::Request(_) => 3,
        _ => 13,
    }
}

/// Operations on `reconciler` and `audit` with `policy`: no member states,
/// the system clock, the default rule.
pub(crate) fn ops_on(
    policy: AccessPolicy,
    reconciler: Arc<Reconciler>,
    audit: Arc<dyn AuditStore>,
) -> Ops {
    let ingestor = Ingestor::new(
        reconciler.lookup().store().clone(),
        [],
        ed25519_dalek::SigningKey::from_bytes(&[1; 32]),
        crate::support::config::Limits::default(),
        CanonicalRule::default(),
    );
    Ops::new(Deps {
        policy: Arc::new(policy),
        ingestor,
        reconciler,
        audit,
        lifecycle: Lifecycle::new(),
        metrics: Arc::new(Metrics::new()),
        clock: Clock::system(),
        rule: CanonicalRule::default(),
        code_of: test_code,
    })
}

/// Operations on empty in-memory stores, and their audit trail.
fn empty_ops() -> (Ops, Arc<AuditLog>) {
    let alerts = AlertStore::with_storage(Arc::new(MemoryAlertStorage::new())).unwrap();
    let reconciler = Reconciler::open(
        Arc::new(MemoryStore::new()),
        Arc::new(alerts),
        Arc::new(MemorySeizureStore::new()),
        crate::reconcile::EngineConfig::default(),
        0,
        None,
    )
    .unwrap();
    let audit = Arc::new(
        AuditLog::open(
            Arc::new(MemoryAuditTrail::new()),
            ed25519_dalek::SigningKey::from_bytes(&[9; 32]),
        )
        .unwrap(),
    );
    let ops = ops_on(AccessPolicy::open(), Arc::new(reconciler), audit.clone());
    (ops, audit)
}

/// A request that does not decode: if the operation looks at it, it
/// refuses the call with this.
fn undecodable<T>() -> Decoded<T> {
    Err(RequestError::UnknownPageToken("x".into()))
}

/// Calls `operation`'s function as `caller`, with a request that does not
/// decode wherever the function takes one.
fn call(ops: &Ops, operation: Operation, caller: &Caller) -> Result<(), OpsError> {
    use Operation as O;
    match operation {
        O::ListAlerts => ops.list_alerts(caller, undecodable()).map(drop),
        O::GetAlert => ops.get_alert(caller, 1).map(drop),
        O::WatchAlerts => ops.watch_alerts(caller, 0).map(drop),
        O::AcknowledgeAlert => ops.acknowledge_alert(caller, 1, "").map(drop),
        O::ResolveAlert => ops.resolve_alert(caller, 1, undecodable(), "").map(drop),
        O::ReopenAlert => ops.reopen_alert(caller, 1, "").map(drop),
        O::ReportSeizures => ops.report_seizures(caller, &[]).map(drop),
        O::ListSeizureReports => ops.list_seizure_reports(caller, 0, 0).map(drop),
        O::GetStatus => ops.get_status(caller).map(drop),
        O::TraceItem => ops.trace_item(caller, undecodable()).map(drop),
        O::ListAuditRecords => ops.list_audit_records(caller, 0, 0).map(drop),
        other => panic!("{other:?} is in DECIDED but this test cannot call it yet: add it"),
    }
}

fn caller(principal: Option<Principal>) -> Caller {
    Caller {
        principal,
        peer: Some("127.0.0.1:9".parse().unwrap()),
    }
}

fn person(role: Role) -> Option<Principal> {
    Some(Principal::Person {
        name: "p".into(),
        role,
    })
}

#[test]
fn every_operation_refuses_whom_the_table_refuses_before_reading_its_request() {
    let (ops, audit) = empty_ops();
    let rus = StateCode::parse("RUS").unwrap();
    let callers = [
        ("nobody", None),
        ("node", Some(Principal::Member(rus))),
        ("auditor", person(Role::Auditor)),
        ("operator", person(Role::Operator)),
        ("unchecked", Some(Principal::Unchecked)),
    ];
    for operation in DECIDED {
        for (who, principal) in &callers {
            let caller = caller(principal.clone());
            let before = audit.last_sequence();
            let got = call(&ops, *operation, &caller);
            let allowed = match principal {
                Some(p) => AccessPolicy::open().permit(p, *operation).is_ok(),
                None => false,
            };
            let records = audit.list(before + 1, 10).unwrap();
            if allowed {
                assert!(
                    !matches!(got, Err(OpsError::Access(_))),
                    "{operation:?} as {who}: {got:?}"
                );
                assert!(
                    records
                        .iter()
                        .all(|r| !matches!(r.decode().unwrap().event.action, Action::Call { .. })),
                    "{operation:?} as {who}: a refused call recorded"
                );
                continue;
            }
            let refused = match got {
                Err(OpsError::Access(e)) => e,
                other => panic!("{operation:?} as {who}: not refused first: {other:?}"),
            };
            assert_eq!(refused.is_unauthenticated(), principal.is_none(), "{who}");
            // Recorded as the access layer records a refused call.
            let events: Vec<_> = records.iter().map(|r| r.decode().unwrap().event).collect();
            assert_eq!(events.len(), 1, "{operation:?} as {who}: {events:?}");
            assert_eq!(events[0].action, Action::call(operation.rpc()));
            assert_eq!(
                events[0].outcome,
                Outcome::refused(
                    if principal.is_none() { 16 } else { 7 },
                    &refused.to_string()
                )
            );
            assert_eq!(events[0].actor, Actor::of(principal.as_ref()));
            assert_eq!(events[0].peer.as_deref(), Some("127.0.0.1:9"));
        }
    }
}

#[test]
fn an_allowed_caller_then_hears_what_is_wrong_with_the_request() {
    let (ops, _) = empty_ops();
    let operator = caller(person(Role::Operator));
    for result in [
        ops.list_alerts(&operator, undecodable()).map(drop),
        ops.resolve_alert(&operator, 1, undecodable(), "").map(drop),
        ops.trace_item(&operator, undecodable()).map(drop),
        ops.report_seizures(&operator, &[RawSeizure::default()])
            .map(drop),
    ] {
        assert!(matches!(result, Err(OpsError::Request(_))), "{result:?}");
    }
    assert!(matches!(
        ops.get_alert(&operator, 1),
        Err(OpsError::Request(RequestError::NoAlert(1)))
    ));
}

/// Every operation the gRPC access layer leaves to ops is one this module
/// decides (a new entry of `DECIDED` fails `call` above until it is added).
#[test]
fn decided_operations_are_operator_operations() {
    for operation in DECIDED {
        assert!(
            matches!(
                operation.need(),
                crate::access::Need::Read | crate::access::Need::Act
            ),
            "{operation:?}"
        );
    }
}

/// The wall of this module: the operations name no transport. A file of
/// `coordinator/ops/` that uses the gRPC edge, tonic or the wire crate
/// fails here (comments may mention them).
#[test]
fn ops_names_no_transport() {
    // Spelled in two halves, so that this file does not match itself.
    let names = [
        ["gr", "pc::"],
        ["to", "nic"],
        ["tally_", "wire"],
        ["pro", "to::"],
    ]
    .map(|halves| halves.concat());
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/coordinator/ops");
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for name in &names {
                if code.contains(name.as_str()) {
                    found.push(format!("{}:{}: {name}", path.display(), n + 1));
                }
            }
        }
    }
    assert!(found.is_empty(), "ops depends on a transport: {found:?}");
}
