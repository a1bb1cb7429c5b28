//! Who may call what: principals, roles, bearer tokens, and the one table of
//! RPC permissions.
//!
//! Member-state nodes are identified by their TLS client certificate (the
//! state code it names); operators and auditors by a bearer token, of which
//! the configuration holds only the SHA-256. Every operation is checked
//! against one table, [`Operation::need`] ([`RPC_TABLE`] names each by its
//! gRPC path): the access layer at the gRPC edge authenticates every call
//! and checks the table for node and public calls, the coordinator's
//! operator operations check it themselves ([`AccessPolicy::permit`]),
//! whatever the transport. The few checks that depend on a request's content
//! (a node may only submit and read its own state's snapshots) are made by
//! the handler with the [`Principal`] the layer attached to the request.

use std::collections::HashMap;
use std::fmt;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::state::StateCode;

/// What a person may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads alerts, traces, seizure reports, snapshots and status.
    Auditor,
    /// Everything an auditor may, plus acknowledging, resolving and reopening
    /// alerts and reporting seizures.
    Operator,
}

impl Role {
    pub const ALL: [Role; 2] = [Role::Auditor, Role::Operator];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Auditor => "auditor",
            Role::Operator => "operator",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Role, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown role '{s}' (expected auditor or operator)"))
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The authenticated caller of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A member state's node, by its client certificate.
    Member(StateCode),
    /// An operator or auditor, by bearer token.
    Person { name: String, role: Role },
    /// Plaintext development mode without configured tokens: nobody is
    /// authenticated and everything is allowed.
    Unchecked,
}

impl Principal {
    /// The state a member principal may act for; `None` for everyone else.
    pub(crate) fn member_state(&self) -> Option<StateCode> {
        match self {
            Principal::Member(s) => Some(*s),
            _ => None,
        }
    }

    /// Short description for logs and the audit trail.
    pub fn describe(&self) -> String {
        match self {
            Principal::Member(s) => format!("node {s}"),
            Principal::Person { name, role } => format!("{role} {name}"),
            Principal::Unchecked => "unauthenticated (insecure mode)".to_string(),
        }
    }
}

/// What an RPC requires of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Health and reflection: anyone, even without credentials.
    Public,
    /// Submitting a snapshot: a member node (for its own state).
    Submit,
    /// Reading snapshots and coordinator info: a member node (its own state
    /// only) or any person.
    ReadSnapshots,
    /// Reading alerts, traces, seizure reports, status and the audit trail:
    /// auditor or operator.
    Read,
    /// Changing alerts or reporting seizures: operator.
    Act,
}

/// Every operation the coordinator serves, whatever the transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    HealthCheck,
    HealthWatch,
    Reflection,
    Submit,
    ListSnapshots,
    GetSnapshot,
    GetCoordinatorInfo,
    ListAlerts,
    GetAlert,
    WatchAlerts,
    AcknowledgeAlert,
    ResolveAlert,
    ReopenAlert,
    ReportSeizures,
    ListSeizureReports,
    GetStatus,
    TraceItem,
    ListAuditRecords,
}

impl Operation {
    /// What the operation requires of its caller: the one permission table
    /// (a `match` without wildcard, so a new operation does not compile
    /// until it has a row).
    pub const fn need(self) -> Need {
        use Operation as O;
        match self {
            O::HealthCheck | O::HealthWatch | O::Reflection => Need::Public,
            O::Submit => Need::Submit,
            O::ListSnapshots | O::GetSnapshot | O::GetCoordinatorInfo => Need::ReadSnapshots,
            O::ListAlerts
            | O::GetAlert
            | O::WatchAlerts
            | O::ListSeizureReports
            | O::GetStatus
            | O::TraceItem
            | O::ListAuditRecords => Need::Read,
            O::AcknowledgeAlert | O::ResolveAlert | O::ReopenAlert | O::ReportSeizures => Need::Act,
        }
    }

    /// The gRPC path that names this operation in [`RPC_TABLE`] (and in
    /// refusals and audit records, whichever transport asked).
    pub fn rpc(self) -> &'static str {
        RPC_TABLE
            .iter()
            .find(|(_, o)| *o == self)
            .map_or("", |(p, _)| p)
    }
}

/// Every RPC the coordinator serves, by gRPC path, with its operation (and
/// so, through [`Operation::need`], what it needs). Paths not listed are
/// treated as [`Need::Act`]: a new RPC is closed until it is added here.
pub const RPC_TABLE: &[(&str, Operation)] = &[
    ("/grpc.health.v1.Health/Check", Operation::HealthCheck),
    ("/grpc.health.v1.Health/Watch", Operation::HealthWatch),
    (
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        Operation::Reflection,
    ),
    // The same service under its pre-release name, which the stock
    // reflection clients of several languages still speak.
    (
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        Operation::Reflection,
    ),
    ("/tally.v1.Snapshots/Submit", Operation::Submit),
    (
        "/tally.v1.Snapshots/ListSnapshots",
        Operation::ListSnapshots,
    ),
    ("/tally.v1.Snapshots/GetSnapshot", Operation::GetSnapshot),
    (
        "/tally.v1.Snapshots/GetCoordinatorInfo",
        Operation::GetCoordinatorInfo,
    ),
    ("/tally.v1.Alerts/ListAlerts", Operation::ListAlerts),
    ("/tally.v1.Alerts/GetAlert", Operation::GetAlert),
    ("/tally.v1.Alerts/WatchAlerts", Operation::WatchAlerts),
    (
        "/tally.v1.Alerts/AcknowledgeAlert",
        Operation::AcknowledgeAlert,
    ),
    ("/tally.v1.Alerts/ResolveAlert", Operation::ResolveAlert),
    ("/tally.v1.Alerts/ReopenAlert", Operation::ReopenAlert),
    (
        "/tally.v1.Seizures/ReportSeizures",
        Operation::ReportSeizures,
    ),
    (
        "/tally.v1.Seizures/ListSeizureReports",
        Operation::ListSeizureReports,
    ),
    ("/tally.v1.Coordinator/GetStatus", Operation::GetStatus),
    ("/tally.v1.Trace/TraceItem", Operation::TraceItem),
    (
        "/tally.v1.Audit/ListAuditRecords",
        Operation::ListAuditRecords,
    ),
];

/// The operation `path` names, if any.
pub fn operation_of(path: &str) -> Option<Operation> {
    RPC_TABLE.iter().find(|(p, _)| *p == path).map(|(_, o)| *o)
}

/// What `path` needs.
pub fn need_of(path: &str) -> Need {
    operation_of(path).map_or(Need::Act, Operation::need)
}

/// Why a request was refused; mapped to `UNAUTHENTICATED` and
/// `PERMISSION_DENIED` at the edge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    #[error(
        "{rpc} needs credentials: a bearer token (operators and auditors: \
         `authorization: Bearer <token>`) or a member-state client certificate"
    )]
    NoCredentials { rpc: String },
    #[error("the bearer token is not known to this coordinator (ask for a new one)")]
    UnknownToken,
    #[error("the authorization header must be `Bearer <token>`")]
    MalformedToken,
    #[error("{who} may not call {rpc}: {why}")]
    Denied {
        who: String,
        rpc: String,
        why: &'static str,
    },
}

impl AccessError {
    /// True for "who are you?" (UNAUTHENTICATED), false for "you may not"
    /// (PERMISSION_DENIED).
    pub fn is_unauthenticated(&self) -> bool {
        !matches!(self, AccessError::Denied { .. })
    }
}

/// SHA-256 of a bearer token: what the configuration stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenDigest(pub [u8; 32]);

impl TokenDigest {
    pub fn of(token: &str) -> TokenDigest {
        TokenDigest(Sha256::digest(token.as_bytes()).into())
    }

    pub fn parse_hex(s: &str) -> Option<TokenDigest> {
        let bytes = hex::decode(s.trim()).ok()?;
        Some(TokenDigest(bytes.try_into().ok()?))
    }

    pub fn to_hex(self) -> String {
        hex::encode(self.0)
    }
}

/// One person allowed to call the coordinator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    pub name: String,
    pub role: Role,
}

/// The coordinator's access rules.
#[derive(Debug, Clone)]
pub struct AccessPolicy {
    people: HashMap<TokenDigest, Person>,
    /// Plaintext mode: nodes cannot present certificates, so a submission
    /// without credentials is admitted on the strength of its signature.
    nodes_without_certificates: bool,
    /// Plaintext mode with no tokens configured: no checks at all.
    open: bool,
}

impl AccessPolicy {
    /// TLS mode: nodes by certificate, people by token.
    pub fn enforced(people: impl IntoIterator<Item = (TokenDigest, Person)>) -> AccessPolicy {
        AccessPolicy {
            people: people.into_iter().collect(),
            nodes_without_certificates: false,
            open: false,
        }
    }

    /// Plaintext mode: submissions rely on their signatures alone; people
    /// need tokens if any are configured, else nothing is checked.
    pub fn insecure(people: impl IntoIterator<Item = (TokenDigest, Person)>) -> AccessPolicy {
        let people: HashMap<_, _> = people.into_iter().collect();
        AccessPolicy {
            open: people.is_empty(),
            people,
            nodes_without_certificates: true,
        }
    }

    /// No checks (tests and the in-process demo on loopback).
    pub fn open() -> AccessPolicy {
        AccessPolicy::insecure([])
    }

    /// Who presents these credentials: a person by known token, else a
    /// member by certificate, else nobody.
    fn caller(
        &self,
        authorization: Option<&str>,
        certificate_state: Option<StateCode>,
    ) -> Result<Option<Principal>, AccessError> {
        match authorization {
            Some(value) => {
                let token = value
                    .strip_prefix("Bearer ")
                    .or_else(|| value.strip_prefix("bearer "))
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .ok_or(AccessError::MalformedToken)?;
                let person = self
                    .people
                    .get(&TokenDigest::of(token))
                    .ok_or(AccessError::UnknownToken)?;
                Ok(Some(Principal::Person {
                    name: person.name.clone(),
                    role: person.role,
                }))
            }
            None => Ok(certificate_state.map(Principal::Member)),
        }
    }

    /// The caller these credentials identify, if any, whether or not the
    /// call is allowed (for the audit record of a refused call).
    pub fn identify(
        &self,
        authorization: Option<&str>,
        certificate_state: Option<StateCode>,
    ) -> Option<Principal> {
        self.caller(authorization, certificate_state).ok().flatten()
    }

    /// Decides one request. `authorization` is the raw header value if any;
    /// `certificate_state` the state named by a verified client certificate.
    pub fn authorize(
        &self,
        rpc: &str,
        authorization: Option<&str>,
        certificate_state: Option<StateCode>,
    ) -> Result<Principal, AccessError> {
        let principal = self.authenticate(rpc, authorization, certificate_state)?;
        check(&principal, need_of(rpc), rpc)?;
        Ok(principal)
    }

    /// Who is calling `rpc`, without deciding whether they may: refuses
    /// malformed or unknown credentials, and calls without any where the
    /// RPC needs them. The permission itself is [`AccessPolicy::permit`]'s.
    pub fn authenticate(
        &self,
        rpc: &str,
        authorization: Option<&str>,
        certificate_state: Option<StateCode>,
    ) -> Result<Principal, AccessError> {
        let need = need_of(rpc);
        match self.caller(authorization, certificate_state)? {
            Some(p) => Ok(p),
            None if need == Need::Public || self.open => Ok(Principal::Unchecked),
            None if self.nodes_without_certificates
                && matches!(need, Need::Submit | Need::ReadSnapshots) =>
            {
                Ok(Principal::Unchecked)
            }
            None => Err(AccessError::NoCredentials {
                rpc: rpc.trim_start_matches('/').to_string(),
            }),
        }
    }

    /// Whether an authenticated `principal` may perform `operation`, by the
    /// one permission table ([`Operation::need`]).
    pub fn permit(&self, principal: &Principal, operation: Operation) -> Result<(), AccessError> {
        check(principal, operation.need(), operation.rpc())
    }
}

/// The role check of one call of `rpc`, which needs `need`.
fn check(principal: &Principal, need: Need, rpc: &str) -> Result<(), AccessError> {
    let refusal = match (principal, need) {
        (_, Need::Public) => None,
        (Principal::Member(_), Need::Submit | Need::ReadSnapshots) => None,
        (Principal::Member(_), _) => {
            Some("member-state nodes may only submit and read their own snapshots")
        }
        (Principal::Person { .. }, Need::Submit) => {
            Some("only member-state nodes submit snapshots (with their client certificate)")
        }
        (Principal::Person { .. }, Need::ReadSnapshots | Need::Read) => None,
        (Principal::Person { role, .. }, Need::Act) => {
            (*role != Role::Operator).then_some("this needs the operator role")
        }
        (Principal::Unchecked, _) => None,
    };
    match refusal {
        None => Ok(()),
        Some(why) => Err(AccessError::Denied {
            who: principal.describe(),
            rpc: rpc.trim_start_matches('/').to_string(),
            why,
        }),
    }
}

/// A handler's check that a member node acts only for its own state.
pub fn check_own_state(principal: Option<&Principal>, state: StateCode) -> Result<(), AccessError> {
    match principal.and_then(Principal::member_state) {
        Some(own) if own != state => Err(AccessError::Denied {
            who: format!("node {own}"),
            rpc: format!("snapshots of {state}"),
            why: "a node's certificate names the only state it may act for",
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPERATOR_TOKEN: &str = "tly_operator";
    const AUDITOR_TOKEN: &str = "tly_auditor";

    fn policy() -> AccessPolicy {
        AccessPolicy::enforced([
            (
                TokenDigest::of(OPERATOR_TOKEN),
                Person {
                    name: "olga".into(),
                    role: Role::Operator,
                },
            ),
            (
                TokenDigest::of(AUDITOR_TOKEN),
                Person {
                    name: "arman".into(),
                    role: Role::Auditor,
                },
            ),
        ])
    }

    /// Expected outcome per caller, for each kind of need.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Outcome {
        Allowed,
        Unauthenticated,
        Denied,
    }
    use Outcome::*;

    fn outcome(r: Result<Principal, AccessError>) -> Outcome {
        match r {
            Ok(_) => Allowed,
            Err(e) if e.is_unauthenticated() => Unauthenticated,
            Err(_) => Denied,
        }
    }

    #[test]
    fn every_rpc_for_every_caller() {
        let p = policy();
        let rus = StateCode::parse("RUS").unwrap();
        let operator = format!("Bearer {OPERATOR_TOKEN}");
        let auditor = format!("Bearer {AUDITOR_TOKEN}");
        // (anonymous, unknown token, member node, auditor, operator)
        let expect = |need: Need| -> [Outcome; 5] {
            match need {
                Need::Public => [Allowed; 5],
                Need::Submit => [Unauthenticated, Unauthenticated, Allowed, Denied, Denied],
                Need::ReadSnapshots => {
                    [Unauthenticated, Unauthenticated, Allowed, Allowed, Allowed]
                }
                Need::Read => [Unauthenticated, Unauthenticated, Denied, Allowed, Allowed],
                Need::Act => [Unauthenticated, Unauthenticated, Denied, Denied, Allowed],
            }
        };
        for (rpc, operation) in RPC_TABLE {
            let need = &operation.need();
            let got = [
                outcome(p.authorize(rpc, None, None)),
                outcome(p.authorize(rpc, Some("Bearer tly_nobody"), None)),
                outcome(p.authorize(rpc, None, Some(rus))),
                outcome(p.authorize(rpc, Some(&auditor), None)),
                outcome(p.authorize(rpc, Some(&operator), None)),
            ];
            let mut want = expect(*need);
            if *need == Need::Public {
                // An unknown token is refused even where none is needed:
                // a caller who sends a wrong one should learn it.
                want[1] = Unauthenticated;
            }
            assert_eq!(got, want, "{rpc}");
        }
    }

    #[test]
    fn unknown_rpcs_are_closed() {
        let p = policy();
        assert_eq!(need_of("/tally.v1.New/Thing"), Need::Act);
        let auditor = format!("Bearer {AUDITOR_TOKEN}");
        assert!(matches!(
            p.authorize("/tally.v1.New/Thing", Some(&auditor), None),
            Err(AccessError::Denied { .. })
        ));
    }

    #[test]
    fn malformed_authorization_is_named() {
        let p = policy();
        assert_eq!(
            p.authorize("/tally.v1.Alerts/ListAlerts", Some(OPERATOR_TOKEN), None),
            Err(AccessError::MalformedToken)
        );
        assert_eq!(
            p.authorize("/tally.v1.Alerts/ListAlerts", Some("Bearer "), None),
            Err(AccessError::MalformedToken)
        );
    }

    #[test]
    fn insecure_mode_admits_signed_submissions_and_still_checks_tokens() {
        let people = [(
            TokenDigest::of(AUDITOR_TOKEN),
            Person {
                name: "a".into(),
                role: Role::Auditor,
            },
        )];
        let p = AccessPolicy::insecure(people);
        assert_eq!(
            p.authorize("/tally.v1.Snapshots/Submit", None, None),
            Ok(Principal::Unchecked)
        );
        assert!(matches!(
            p.authorize("/tally.v1.Alerts/ListAlerts", None, None),
            Err(AccessError::NoCredentials { .. })
        ));
        let open = AccessPolicy::open();
        assert_eq!(
            open.authorize("/tally.v1.Alerts/ResolveAlert", None, None),
            Ok(Principal::Unchecked)
        );
    }

    #[test]
    fn nodes_act_only_for_their_own_state() {
        let rus = StateCode::parse("RUS").unwrap();
        let blr = StateCode::parse("BLR").unwrap();
        assert!(check_own_state(Some(&Principal::Member(rus)), rus).is_ok());
        assert!(check_own_state(Some(&Principal::Member(rus)), blr).is_err());
        let person = Principal::Person {
            name: "x".into(),
            role: Role::Auditor,
        };
        assert!(check_own_state(Some(&person), blr).is_ok());
        assert!(check_own_state(None, blr).is_ok());
    }

    #[test]
    fn token_digests_round_trip_as_hex() {
        let token = format!("tly_{}", "5a".repeat(32));
        let d = TokenDigest::of(&token);
        assert_eq!(TokenDigest::parse_hex(&d.to_hex()), Some(d));
        assert_eq!(TokenDigest::parse_hex("abc"), None);
    }
}
