//! DynamoDB probes. Each kind lives in its own file behind the same shape: it takes a
//! [`Target`] and answers a [`ProbeResult`]. A failed probe is data (a result label and
//! `success 0`), never an error that stops the loop. [`scheduler`] runs them.

pub mod app;
pub mod metrics;
pub mod read;
pub mod replication;
pub mod scheduler;
pub mod write;

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::Client;

use crate::config::TableConfig;

/// The kind of probe, the `operation` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    Read,
    Write,
    Replication,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Read => "read",
            Operation::Write => "write",
            Operation::Replication => "replication",
        }
    }
}

/// What one probe saw, the `result` label. The set is closed so the label stays bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeResult {
    Success,
    /// No answer within the attempt or overall timeout (includes a server that never answers).
    Timeout,
    /// The TCP/TLS connection could not be made or broke.
    ConnectError,
    /// DynamoDB throttled the request (throughput or request-rate limits).
    Throttled,
    /// DynamoDB answered 5xx, or an answer that could not be read.
    ServerError,
    /// Credentials wrong, expired or not allowed to do this (DynamoDB refused them).
    AccessDenied,
    /// No credentials resolve on this machine: the standard chain found none, or its provider
    /// failed. Nothing was sent to DynamoDB.
    NoCredentials,
    /// The table does not exist in this region.
    TableNotFound,
    /// Any other 4xx: the request itself was refused.
    ClientError,
    /// The read succeeded but the health item is not there.
    MissingItem,
    /// The canary write was refused by its condition: a newer canary of this prober id is
    /// already stored (two probers share an id, or the clock went back).
    ConditionFailed,
}

impl ProbeResult {
    pub const ALL: [ProbeResult; 11] = [
        ProbeResult::Success,
        ProbeResult::Timeout,
        ProbeResult::ConnectError,
        ProbeResult::Throttled,
        ProbeResult::ServerError,
        ProbeResult::AccessDenied,
        ProbeResult::NoCredentials,
        ProbeResult::TableNotFound,
        ProbeResult::ClientError,
        ProbeResult::MissingItem,
        ProbeResult::ConditionFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ProbeResult::Success => "success",
            ProbeResult::Timeout => "timeout",
            ProbeResult::ConnectError => "connect_error",
            ProbeResult::Throttled => "throttled",
            ProbeResult::ServerError => "server_error",
            ProbeResult::AccessDenied => "access_denied",
            ProbeResult::NoCredentials => "no_credentials",
            ProbeResult::TableNotFound => "table_not_found",
            ProbeResult::ClientError => "client_error",
            ProbeResult::MissingItem => "missing_item",
            ProbeResult::ConditionFailed => "condition_failed",
        }
    }
}

/// One region's client and one table: what every probe kind works on.
#[derive(Clone, Debug)]
pub struct Target {
    pub region: String,
    pub client: Client,
    pub table: TableConfig,
}

/// Maps an SDK error to the probe result it stands for.
pub fn classify<E: ProvideErrorMetadata + std::error::Error + 'static>(
    err: &SdkError<E, aws_sdk_dynamodb::config::http::HttpResponse>,
) -> ProbeResult {
    // No credentials, or a provider that could not load them: ours to fix, not the region's.
    if !matches!(err, SdkError::ServiceError(_)) && credentials_failed(err) {
        return ProbeResult::NoCredentials;
    }
    match err {
        SdkError::TimeoutError(_) => ProbeResult::Timeout,
        SdkError::DispatchFailure(d) if d.is_timeout() => ProbeResult::Timeout,
        SdkError::DispatchFailure(d) if d.is_user() => ProbeResult::ClientError,
        SdkError::DispatchFailure(_) => ProbeResult::ConnectError,
        SdkError::ResponseError(_) => ProbeResult::ServerError,
        SdkError::ServiceError(s) => {
            let status = s.raw().status().as_u16();
            classify_service(s.err().code(), status)
        }
        _ => ProbeResult::ClientError,
    }
}

/// Whether the error chain holds a credentials-provider failure (no credentials in the chain, an
/// expired role, an unreachable metadata service answering nothing usable).
fn credentials_failed(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut e: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(x) = e {
        if x.is::<aws_credential_types::provider::error::CredentialsError>() {
            return true;
        }
        e = x.source();
    }
    false
}

impl ProbeResult {
    /// Results that mean the prober is misconfigured or the fixture is broken (credentials, IAM,
    /// the table, the health item, a shared prober id): they never vote a region down, and a
    /// live check that meets one says it is ours to fix.
    pub fn is_misconfiguration(self) -> bool {
        matches!(
            self,
            ProbeResult::AccessDenied
                | ProbeResult::NoCredentials
                | ProbeResult::TableNotFound
                | ProbeResult::ClientError
                | ProbeResult::MissingItem
                | ProbeResult::ConditionFailed
        )
    }
}

/// Maps a DynamoDB error code and HTTP status to a result.
pub fn classify_service(code: Option<&str>, status: u16) -> ProbeResult {
    match code.unwrap_or_default() {
        "ThrottlingException"
        | "ProvisionedThroughputExceededException"
        | "RequestLimitExceeded"
        | "LimitExceededException" => ProbeResult::Throttled,
        "ConditionalCheckFailedException" => ProbeResult::ConditionFailed,
        "ResourceNotFoundException" => ProbeResult::TableNotFound,
        "AccessDeniedException"
        | "UnrecognizedClientException"
        | "InvalidSignatureException"
        | "MissingAuthenticationTokenException"
        | "ExpiredTokenException"
        | "IncompleteSignatureException" => ProbeResult::AccessDenied,
        _ if status >= 500 => ProbeResult::ServerError,
        _ if status == 429 => ProbeResult::Throttled,
        _ => ProbeResult::ClientError,
    }
}

/// The partition key value of this prober's canary in `source_region`. The source region is in the
/// key so that replicas of canaries from different regions never overwrite each other.
pub fn canary_key(prefix: &str, prober: &str, source_region: &str) -> String {
    format!("{prefix}#{prober}#{source_region}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_errors_map_to_their_result() {
        let cases = [
            (Some("ThrottlingException"), 400, ProbeResult::Throttled),
            (
                Some("ProvisionedThroughputExceededException"),
                400,
                ProbeResult::Throttled,
            ),
            (
                Some("ConditionalCheckFailedException"),
                400,
                ProbeResult::ConditionFailed,
            ),
            (
                Some("ResourceNotFoundException"),
                400,
                ProbeResult::TableNotFound,
            ),
            (
                Some("UnrecognizedClientException"),
                400,
                ProbeResult::AccessDenied,
            ),
            (Some("InternalServerError"), 500, ProbeResult::ServerError),
            (None, 503, ProbeResult::ServerError),
            (Some("ValidationException"), 400, ProbeResult::ClientError),
        ];
        for (code, status, want) in cases {
            assert_eq!(classify_service(code, status), want, "{code:?} {status}");
        }
    }

    #[test]
    fn result_labels_are_distinct() {
        let mut names: Vec<_> = ProbeResult::ALL.iter().map(|r| r.as_str()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), ProbeResult::ALL.len());
    }
}
