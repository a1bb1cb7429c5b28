//! The access layer: every request is authenticated here before any handler
//! runs, and authorised here unless its operation is one that
//! `coordinator::ops` decides itself (`ops::DECIDED`: the operator
//! operations, which check the same table whatever the transport); see
//! `crate::access` for the rules. The caller's [`Principal`] is attached to
//! the request for the operations and the handlers' own-state checks.
//! Refused calls are recorded in the audit trail, if one is attached.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::Either;
use tonic::codegen::http;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

use super::request::EdgeRefusal;
use super::status;
use crate::access::{AccessError, AccessPolicy, Principal};
use crate::audit::{Action, Actor, Event, Outcome};
use crate::coordinator::storage::audit_log::AuditStore;
use crate::state::StateCode;
use crate::support::clock::Clock;
use crate::support::tls;

/// Tower layer applying an [`AccessPolicy`] to every RPC.
#[derive(Clone)]
pub(crate) struct AccessLayer {
    policy: Arc<AccessPolicy>,
    audit: Option<Arc<dyn AuditStore>>,
    clock: Clock,
}

impl AccessLayer {
    pub fn new(policy: AccessPolicy) -> AccessLayer {
        AccessLayer {
            policy: Arc::new(policy),
            audit: None,
            clock: Clock::system(),
        }
    }

    /// Stamps the records of refused calls with `clock`'s time.
    pub(crate) fn timed_by(mut self, clock: Clock) -> AccessLayer {
        self.clock = clock;
        self
    }

    /// Records every refused call in `audit`.
    pub(crate) fn recording_to(mut self, audit: Arc<dyn AuditStore>) -> AccessLayer {
        self.audit = Some(audit);
        self
    }
}

impl<S> tower_layer::Layer<S> for AccessLayer {
    type Service = AccessService<S>;

    fn layer(&self, inner: S) -> AccessService<S> {
        AccessService {
            inner,
            policy: self.policy.clone(),
            audit: self.audit.clone(),
            clock: self.clock.clone(),
        }
    }
}

#[derive(Clone)]
pub(crate) struct AccessService<S> {
    inner: S,
    policy: Arc<AccessPolicy>,
    audit: Option<Arc<dyn AuditStore>>,
    clock: Clock,
}

/// The caller's address, over TLS or not.
fn peer_addr<B>(req: &http::Request<B>) -> Option<SocketAddr> {
    let ext = req.extensions();
    ext.get::<TcpConnectInfo>()
        .and_then(TcpConnectInfo::remote_addr)
        .or_else(|| {
            ext.get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(|i| i.get_ref().remote_addr())
        })
}

/// A refusal answered once its audit record is on disk.
type Refusal<R, E> = Pin<Box<dyn Future<Output = Result<R, E>> + Send>>;

/// The state named by the verified client certificate of this connection.
fn certificate_state<B>(req: &http::Request<B>) -> Result<Option<StateCode>, tonic::Status> {
    let Some(certs) = req
        .extensions()
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(|info| info.peer_certs())
    else {
        return Ok(None);
    };
    match certs.first() {
        None => Ok(None),
        Some(leaf) => tls::certificate_state(leaf.as_ref())
            .map(Some)
            .map_err(|e| EdgeRefusal::Certificate(e).into()),
    }
}

impl<S, ReqBody, ResBody> tower_service::Service<http::Request<ReqBody>> for AccessService<S>
where
    S: tower_service::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Error: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<Refusal<S::Response, S::Error>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<ReqBody>) -> Self::Future {
        // Who the credentials name, even if the call is refused.
        let mut identified = None;
        let decision = certificate_state(&req).and_then(|state| {
            let authorization = match req.headers().get(http::header::AUTHORIZATION) {
                None => None,
                Some(v) => Some(
                    v.to_str()
                        .map_err(|_| status::access(AccessError::MalformedToken))?,
                ),
            };
            identified = self.policy.identify(authorization, state);
            let path = req.uri().path();
            // The operations of `coordinator::ops` check their permission
            // themselves (the same table, whatever the transport): here
            // only who is calling.
            let decided_in_ops = crate::access::operation_of(path)
                .is_some_and(|o| crate::coordinator::ops::DECIDED.contains(&o));
            if decided_in_ops {
                self.policy.authenticate(path, authorization, state)
            } else {
                self.policy.authorize(path, authorization, state)
            }
            .map_err(status::access)
        });
        match decision {
            Ok(principal) => {
                if !matches!(principal, Principal::Unchecked) {
                    tracing::debug!(rpc = req.uri().path(), who = %principal.describe(), "authorised");
                }
                req.extensions_mut().insert(principal);
                Either::Right(self.inner.call(req))
            }
            Err(status) => {
                tracing::warn!(rpc = req.uri().path(), code = ?status.code(), reason = %status.message(), "request refused");
                let event = self.audit.clone().map(|log| {
                    let event = Event {
                        at_unix_ms: self.clock.now_unix_ms(),
                        actor: Actor::of(identified.as_ref()),
                        peer: peer_addr(&req).map(|p| p.to_string()),
                        action: Action::call(req.uri().path()),
                        outcome: Outcome::refused(status.code() as u32, status.message()),
                    };
                    (log, event)
                });
                Either::Left(Box::pin(async move {
                    if let Some((log, event)) = event
                        && let Err(e) = super::audit::append(&log, event).await
                    {
                        tracing::error!(error = %e, "writing the audit trail failed");
                    }
                    Ok(status.into_http())
                }))
            }
        }
    }
}
