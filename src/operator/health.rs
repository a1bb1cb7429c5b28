//! Client side of the standard gRPC health service (`grpc.health.v1.Health`),
//! which the coordinator serves: what `tally health` and the docker-compose
//! health checks ask.

use std::time::Duration;

use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// Why a health check did not report SERVING.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    #[error("'{address}' is not a coordinator address (e.g. http://127.0.0.1:50051): {message}")]
    BadAddress { address: String, message: String },
    #[error("cannot reach the coordinator at {address}: {message}")]
    Unreachable { address: String, message: String },
    #[error("the coordinator at {address} knows no service named '{service}'")]
    UnknownService { address: String, service: String },
    #[error("the health check at {address} failed: {code:?}: {message}")]
    Failed {
        address: String,
        code: tonic::Code,
        message: String,
    },
    #[error("the coordinator at {address} reports {status} for {service}")]
    NotServing {
        address: String,
        service: String,
        /// The status name as the health protocol spells it, e.g. `NOT_SERVING`.
        status: &'static str,
    },
}

/// Asks `address` for the health of `service` ("" is the whole server) and
/// returns `Ok` if and only if it is SERVING. Connecting and the call each
/// get `timeout`.
pub async fn check(
    address: &str,
    service: &str,
    timeout: Duration,
    ca_file: Option<&std::path::Path>,
) -> Result<(), HealthError> {
    if !(address.starts_with("http://") || address.starts_with("https://")) {
        return Err(HealthError::BadAddress {
            address: address.to_string(),
            message: "it must start with http:// or https://".into(),
        });
    }
    let tls = ca_file.map(|ca| crate::support::tls::ClientTlsFiles {
        ca_file: ca.to_path_buf(),
        ..Default::default()
    });
    let endpoint = crate::support::tls::endpoint(address, tls.as_ref())
        .map_err(|e| HealthError::BadAddress {
            address: address.to_string(),
            message: e.to_string(),
        })?
        .connect_timeout(timeout)
        .timeout(timeout);
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| HealthError::Unreachable {
            address: address.to_string(),
            message: error_chain(&e),
        })?;
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.to_string(),
        })
        .await
        .map_err(|s| match s.code() {
            tonic::Code::NotFound => HealthError::UnknownService {
                address: address.to_string(),
                service: service.to_string(),
            },
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => HealthError::Unreachable {
                address: address.to_string(),
                message: s.message().to_string(),
            },
            code => HealthError::Failed {
                address: address.to_string(),
                code,
                message: s.message().to_string(),
            },
        })?
        .into_inner();
    match ServingStatus::try_from(response.status) {
        Ok(ServingStatus::Serving) => Ok(()),
        other => Err(HealthError::NotServing {
            address: address.to_string(),
            service: if service.is_empty() {
                "the server".to_string()
            } else {
                format!("service '{service}'")
            },
            status: other.map_or("an unknown status", |s| s.as_str_name()),
        }),
    }
}

/// The error and its causes on one line: tonic's transport error alone
/// says only "transport error".
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        // hyper repeats its own message one level down.
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// `tally health`: SERVING, or an error naming why not.
pub async fn run(args: crate::cli::HealthArgs) -> anyhow::Result<()> {
    crate::operator::health::check(
        &args.coordinator,
        &args.service,
        args.timeout,
        args.ca.as_deref(),
    )
    .await?;
    println!("{}: SERVING", args.coordinator);
    Ok(())
}
