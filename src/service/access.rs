//! The access layer: every request is authorised here, once, before any
//! handler runs (see `crate::access` for the rules). The caller's
//! [`Principal`] is attached to the request for the handlers' own-state checks.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::{Either, Ready, ready};
use tonic::codegen::http;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

use crate::access::{AccessError, AccessPolicy, Principal};
use crate::state::StateCode;
use crate::tls;

/// Tower layer applying an [`AccessPolicy`] to every RPC.
#[derive(Clone)]
pub struct AccessLayer {
    policy: Arc<AccessPolicy>,
}

impl AccessLayer {
    pub fn new(policy: AccessPolicy) -> AccessLayer {
        AccessLayer {
            policy: Arc::new(policy),
        }
    }
}

impl<S> tower_layer::Layer<S> for AccessLayer {
    type Service = AccessService<S>;

    fn layer(&self, inner: S) -> AccessService<S> {
        AccessService {
            inner,
            policy: self.policy.clone(),
        }
    }
}

#[derive(Clone)]
pub struct AccessService<S> {
    inner: S,
    policy: Arc<AccessPolicy>,
}

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
            .map_err(|e| tonic::Status::unauthenticated(e.to_string())),
    }
}

fn access_status(e: AccessError) -> tonic::Status {
    if e.is_unauthenticated() {
        tonic::Status::unauthenticated(e.to_string())
    } else {
        tonic::Status::permission_denied(e.to_string())
    }
}

impl<S, ReqBody, ResBody> tower_service::Service<http::Request<ReqBody>> for AccessService<S>
where
    S: tower_service::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    ResBody: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<Ready<Result<S::Response, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<ReqBody>) -> Self::Future {
        let decision = certificate_state(&req).and_then(|state| {
            let authorization = match req.headers().get(http::header::AUTHORIZATION) {
                None => None,
                Some(v) => Some(
                    v.to_str()
                        .map_err(|_| access_status(AccessError::MalformedToken))?,
                ),
            };
            self.policy
                .authorize(req.uri().path(), authorization, state)
                .map_err(access_status)
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
                Either::Left(ready(Ok(status.into_http())))
            }
        }
    }
}
