//! The one place DynamoDB clients are built, for every role: the probers' (and the live check's)
//! one client per region, built once and shared by every table's probes, and the replicas' state
//! store client. Every client has explicit timeouts: without an operation timeout the SDK waits
//! forever on a server that accepts and never answers.

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_sdk_dynamodb::config::retry::RetryConfig;
use aws_sdk_dynamodb::config::timeout::TimeoutConfig;
use aws_sdk_dynamodb::config::{Region, StalledStreamProtectionConfig};
use aws_sdk_dynamodb::Client;

use crate::config::{ProberConfig, RegionConfig};

/// Loads the shared AWS configuration (credentials from the standard chain: environment, shared
/// files, web identity, container and instance metadata).
pub async fn load_shared() -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest()).load().await
}

/// A probing client for one region: attempt and operation timeouts from the prober config and a
/// short retry backoff.
pub fn probe_client(
    shared: &aws_config::SdkConfig,
    region: &RegionConfig,
    prober: &ProberConfig,
) -> Client {
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(prober.attempt_timeout)
        .operation_attempt_timeout(prober.attempt_timeout)
        .operation_timeout(prober.timeout)
        .build();
    let retry = RetryConfig::standard()
        .with_max_attempts(prober.max_attempts)
        .with_initial_backoff(Duration::from_millis(25))
        .with_max_backoff(Duration::from_millis(250));
    let mut builder = aws_sdk_dynamodb::config::Builder::from(shared)
        .region(Region::new(region.name.clone()))
        .timeout_config(timeouts)
        .retry_config(retry)
        // The operation and attempt timeouts above already bound every call; the stalled-stream
        // monitor would only add a timer per response body.
        .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
        .endpoint_resolver(KnownEndpoints::default());
    if let Some(endpoint) = &region.endpoint {
        builder = builder.endpoint_url(endpoint);
    }
    Client::from_conf(builder.build())
}

/// The SDK's own endpoint resolver, with what it answered remembered per set of parameters. The
/// SDK keeps only the last answer, and DynamoDB's parameters name the table, so a client shared by
/// several tables' probes missed it on every call and ran the endpoint rules and a URL parse each
/// time (3 % of a probe's instructions, callgrind). The answers are the SDK's: only the repeat
/// work goes.
#[derive(Debug, Default)]
struct KnownEndpoints {
    rules: aws_sdk_dynamodb::config::endpoint::DefaultResolver,
    known: std::sync::RwLock<
        Vec<(
            aws_sdk_dynamodb::config::endpoint::Params,
            aws_sdk_dynamodb::config::endpoint::Endpoint,
        )>,
    >,
}

/// More than any config has tables (they bound the distinct parameters); past it, answers are
/// still right, just not remembered.
const KNOWN_ENDPOINTS: usize = 256;

impl aws_sdk_dynamodb::config::endpoint::ResolveEndpoint for KnownEndpoints {
    fn resolve_endpoint<'a>(
        &'a self,
        params: &'a aws_sdk_dynamodb::config::endpoint::Params,
    ) -> aws_sdk_dynamodb::config::endpoint::EndpointFuture<'a> {
        use aws_sdk_dynamodb::config::endpoint::EndpointFuture;
        let known = self.known.read().unwrap_or_else(|p| p.into_inner());
        if let Some((_, e)) = known.iter().find(|(p, _)| p == params) {
            return EndpointFuture::ready(Ok(e.clone()));
        }
        drop(known);
        EndpointFuture::new(Box::pin(async move {
            let e = self.rules.resolve_endpoint(params).await?;
            let mut known = self.known.write().unwrap_or_else(|p| p.into_inner());
            if known.len() < KNOWN_ENDPOINTS && !known.iter().any(|(p, _)| p == params) {
                known.push((params.clone(), e.clone()));
            }
            Ok(e)
        }))
    }
}

/// The replicas' state store client: `timeout` bounds each call (connection included).
pub fn state_client(
    shared: &aws_config::SdkConfig,
    region: &str,
    endpoint: Option<&str>,
    timeout: Duration,
) -> Client {
    let mut b = aws_sdk_dynamodb::config::Builder::from(shared)
        .region(Region::new(region.to_string()))
        .timeout_config(
            TimeoutConfig::builder()
                .operation_timeout(timeout)
                .connect_timeout(timeout)
                .build(),
        );
    if let Some(ep) = endpoint {
        b = b.endpoint_url(ep);
    }
    Client::from_conf(b.build())
}
