//! The `[responder]` section: webhook and admin API, policy, the application config step,
//! DigitalOcean load balancers and DNS records, and notifications. Secrets are read here, from
//! files or environment variables, and held as [`Secret`]s.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{invalid, parse_duration, ConfigError, RegionConfig};
use crate::secret::Secret;

pub const WEBHOOK_TOKEN_ENV: &str = "DYNAMO_FAILOVER_WEBHOOK_TOKEN";
pub const ADMIN_TOKEN_ENV: &str = "DYNAMO_FAILOVER_ADMIN_TOKEN";
pub const DIGITALOCEAN_TOKEN_ENV: &str = "DIGITALOCEAN_TOKEN";
pub const SLACK_URL_ENV: &str = "DYNAMO_FAILOVER_SLACK_WEBHOOK_URL";
pub const NOTIFY_TOKEN_ENV: &str = "DYNAMO_FAILOVER_NOTIFY_TOKEN";
/// Variables that hold the responder's secrets: never passed to a reload command.
const SECRET_VARIABLES: &[&str] = &[
    WEBHOOK_TOKEN_ENV,
    ADMIN_TOKEN_ENV,
    DIGITALOCEAN_TOKEN_ENV,
    SLACK_URL_ENV,
    NOTIFY_TOKEN_ENV,
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_ACCESS_KEY_ID",
];

/// Shortest webhook or admin token accepted.
pub const MIN_TOKEN_BYTES: usize = 16;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawResponder {
    #[serde(default = "d_listen")]
    listen: String,
    #[serde(default)]
    state_file: Option<String>,
    #[serde(default)]
    state: Option<RawState>,
    #[serde(default = "d_body")]
    max_body_bytes: usize,
    #[serde(default)]
    public_url: Option<String>,
    #[serde(default)]
    prometheus_url: Option<String>,
    #[serde(default)]
    webhook_token_file: Option<String>,
    #[serde(default)]
    admin_token_file: Option<String>,
    #[serde(default = "d_tick")]
    tick: String,
    #[serde(default = "d_request_timeout_in")]
    request_timeout: String,
    #[serde(default = "d_header_timeout")]
    header_timeout: String,
    #[serde(default = "d_max_connections")]
    max_connections: usize,
    #[serde(default)]
    alerts: RawAlerts,
    #[serde(default)]
    policy: RawPolicy,
    app: RawApp,
    #[serde(default)]
    steps: RawSteps,
    #[serde(default)]
    digitalocean: Option<RawDigitalOcean>,
    #[serde(default)]
    notify: RawNotify,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawState {
    backend: String,
    #[serde(default)]
    table: Option<String>,
    #[serde(default)]
    region: Option<String>,
    #[serde(default)]
    endpoint: Option<String>,
    #[serde(default)]
    replica: Option<String>,
    #[serde(default = "d_lease")]
    lease: String,
    #[serde(default)]
    renew: Option<String>,
    #[serde(default = "d_store_timeout")]
    timeout: String,
    #[serde(default = "d_clock_skew")]
    max_clock_skew: String,
}

fn d_lease() -> String {
    "15s".into()
}
fn d_clock_skew() -> String {
    "1s".into()
}
fn d_store_timeout() -> String {
    "2s".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAlerts {
    #[serde(default = "d_down_names")]
    region_down: Vec<String>,
    #[serde(default = "d_region_label")]
    region_label: String,
    #[serde(default = "d_firing_expiry")]
    firing_expiry: String,
    #[serde(default = "d_detail_annotation")]
    detail_annotation: String,
}

impl Default for RawAlerts {
    fn default() -> Self {
        Self {
            region_down: d_down_names(),
            region_label: d_region_label(),
            firing_expiry: d_firing_expiry(),
            detail_annotation: d_detail_annotation(),
        }
    }
}

fn d_detail_annotation() -> String {
    "operation".into()
}

fn d_firing_expiry() -> String {
    "20m".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default = "d_min_interval")]
    min_interval: String,
    #[serde(default = "d_stabilisation")]
    stabilisation: String,
    #[serde(default = "d_true")]
    auto_failback: bool,
    #[serde(default)]
    max_failback_lag: Option<String>,
    #[serde(default = "d_retry_backoff")]
    retry_backoff: String,
    #[serde(default = "d_cooldown")]
    live_check_cooldown: String,
    #[serde(default = "d_stay")]
    on_no_healthy_target: String,
}

impl Default for RawPolicy {
    fn default() -> Self {
        Self {
            min_interval: d_min_interval(),
            stabilisation: d_stabilisation(),
            auto_failback: true,
            max_failback_lag: None,
            retry_backoff: d_retry_backoff(),
            live_check_cooldown: d_cooldown(),
            on_no_healthy_target: d_stay(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApp {
    env_file: String,
    #[serde(default = "d_env_key")]
    env_key: String,
    #[serde(default)]
    reload_commands: Vec<Vec<String>>,
    #[serde(default)]
    pass_env: Vec<String>,
    #[serde(default = "d_command_timeout")]
    command_timeout: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSteps {
    #[serde(default = "d_step_deadline")]
    deadline: String,
}

impl Default for RawSteps {
    fn default() -> Self {
        Self {
            deadline: d_step_deadline(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDigitalOcean {
    #[serde(default = "d_do_url")]
    api_url: String,
    #[serde(default)]
    token_file: Option<String>,
    #[serde(default = "d_request_timeout")]
    request_timeout: String,
    #[serde(default, rename = "load_balancer")]
    load_balancers: Vec<RawLoadBalancer>,
    #[serde(default, rename = "dns_record")]
    dns_records: Vec<RawDnsRecord>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLoadBalancer {
    id: String,
    mode: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDnsRecord {
    domain: String,
    record_id: u64,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default = "d_ttl")]
    ttl: u32,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNotify {
    #[serde(default)]
    slack_webhook_url_file: Option<String>,
    #[serde(default)]
    slack: bool,
    #[serde(default)]
    webhook_url: Option<String>,
    #[serde(default)]
    webhook_token_file: Option<String>,
    #[serde(default)]
    timeout: Option<String>,
}

/// DigitalOcean attributes of one region (`[region.digitalocean]`).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RegionDigitalOcean {
    /// DigitalOcean region slug (e.g. `nyc1`), for a GLOBAL load balancer's priorities.
    #[serde(default)]
    pub slug: Option<String>,
    /// Droplets serving this region, for `droplets` mode load balancers.
    #[serde(default)]
    pub droplet_ids: Vec<u64>,
    /// Tag of this region's droplets, for `tag` mode load balancers.
    #[serde(default)]
    pub tag: Option<String>,
    /// Address that A records point at when this region is active.
    #[serde(default)]
    pub ipv4: Option<String>,
    /// Address that AAAA records point at when this region is active.
    #[serde(default)]
    pub ipv6: Option<String>,
}

fn d_listen() -> String {
    "127.0.0.1:9465".into()
}
fn d_body() -> usize {
    1024 * 1024
}
fn d_tick() -> String {
    "1s".into()
}
fn d_request_timeout_in() -> String {
    "10s".into()
}
fn d_header_timeout() -> String {
    "10s".into()
}
fn d_max_connections() -> usize {
    256
}
fn d_down_names() -> Vec<String> {
    vec!["DynamoDBRegionUnavailable".into()]
}
fn d_region_label() -> String {
    "region".into()
}
fn d_min_interval() -> String {
    "5m".into()
}
fn d_stabilisation() -> String {
    "10m".into()
}
fn d_true() -> bool {
    true
}
fn d_retry_backoff() -> String {
    "30s".into()
}
fn d_cooldown() -> String {
    "1m".into()
}
fn d_stay() -> String {
    "stay".into()
}
fn d_env_key() -> String {
    "DYNAMODB_REGION".into()
}
fn d_command_timeout() -> String {
    "30s".into()
}
fn d_step_deadline() -> String {
    "60s".into()
}
fn d_do_url() -> String {
    "https://api.digitalocean.com".into()
}
fn d_request_timeout() -> String {
    "5s".into()
}
fn d_ttl() -> u32 {
    60
}

/// The validated responder configuration.
#[derive(Debug, Clone, Serialize)]
pub struct ResponderConfig {
    pub listen: SocketAddr,
    pub store: StoreConfig,
    pub max_body_bytes: usize,
    pub public_url: Option<String>,
    pub prometheus_url: Option<String>,
    pub webhook_token: Secret,
    pub admin_token: Secret,
    #[serde(with = "super::duration_text")]
    pub tick: Duration,
    /// Time for a request's body to arrive (408 beyond), and for the state to be free to record
    /// it (503 beyond).
    #[serde(with = "super::duration_text")]
    pub request_timeout: Duration,
    /// Time to send a request's headers, counted from when the connection waits for a request
    /// (so it also closes idle keep-alive connections).
    #[serde(with = "super::duration_text")]
    pub header_timeout: Duration,
    /// Connections open at once; more are closed as soon as they are accepted.
    pub max_connections: usize,
    pub alerts: AlertsConfig,
    pub policy: PolicyConfig,
    pub app: AppConfig,
    #[serde(with = "super::duration_text")]
    pub step_deadline: Duration,
    pub digitalocean: Option<DigitalOceanConfig>,
    pub notify: NotifyConfig,
}

/// Where the responder keeps its state.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "backend", rename_all = "snake_case")]
pub enum StoreConfig {
    /// One responder: a JSON file.
    File { path: PathBuf },
    /// Several replicas: a DynamoDB table with a lease.
    Dynamodb {
        table: String,
        region: String,
        endpoint: Option<String>,
        replica: String,
        #[serde(with = "super::duration_text")]
        lease: Duration,
        #[serde(with = "super::duration_text")]
        renew: Duration,
        #[serde(with = "super::duration_text")]
        timeout: Duration,
        /// The most two replicas' clocks may differ; part of the lease's safety margin.
        #[serde(with = "super::duration_text")]
        max_clock_skew: Duration,
    },
}

impl StoreConfig {
    /// How long before its lease's deadline a replica stops acting: the longest a request it
    /// already sent can take (`request_timeout`, DigitalOcean's) plus the clock-skew allowance.
    /// Zero for the file store (one responder, no lease).
    pub fn lease_margin(&self, request_timeout: Duration) -> Duration {
        match self {
            StoreConfig::File { .. } => Duration::ZERO,
            StoreConfig::Dynamodb { max_clock_skew, .. } => request_timeout + *max_clock_skew,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct AlertsConfig {
    pub region_down: Vec<String>,
    pub region_label: String,
    /// A firing alert not sent again for this long is treated as resolved. Alertmanager sends a
    /// firing alert again every `repeat_interval` of its route (5 m in the shipped route): keep
    /// this several times that.
    #[serde(with = "super::duration_text")]
    pub firing_expiry: Duration,
    /// The annotation that says what failed (the shipped rules' `operation`: read, write or
    /// both); notices quote it.
    pub detail_annotation: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct PolicyConfig {
    #[serde(with = "super::duration_text")]
    pub min_interval: Duration,
    #[serde(with = "super::duration_text")]
    pub stabilisation: Duration,
    pub auto_failback: bool,
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_duration")]
    pub max_failback_lag: Option<Duration>,
    #[serde(with = "super::duration_text")]
    pub retry_backoff: Duration,
    #[serde(with = "super::duration_text")]
    pub live_check_cooldown: Duration,
    pub on_no_healthy_target: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct AppConfig {
    pub env_file: PathBuf,
    pub env_key: String,
    pub reload_commands: Vec<Vec<String>>,
    /// Variables of the responder's environment passed to the reload commands (besides PATH,
    /// the region variable and DYNAMO_FAILOVER_EPOCH; nothing else is).
    pub pass_env: Vec<String>,
    #[serde(with = "super::duration_text")]
    pub command_timeout: Duration,
}

#[derive(Debug, Clone, Serialize)]
pub struct DigitalOceanConfig {
    pub api_url: String,
    pub token: Secret,
    #[serde(with = "super::duration_text")]
    pub request_timeout: Duration,
    pub load_balancers: Vec<LoadBalancerConfig>,
    pub dns_records: Vec<DnsRecordConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LbMode {
    Droplets,
    Tag,
    Global,
}

#[derive(Debug, Clone, Serialize)]
pub struct LoadBalancerConfig {
    pub id: String,
    pub mode: LbMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum RecordType {
    A,
    #[allow(clippy::upper_case_acronyms)]
    AAAA,
}

impl RecordType {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordType::A => "A",
            RecordType::AAAA => "AAAA",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct DnsRecordConfig {
    pub domain: String,
    pub record_id: u64,
    #[serde(rename = "type")]
    pub kind: RecordType,
    pub ttl: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct NotifyConfig {
    pub slack_webhook_url: Option<Secret>,
    pub webhook_url: Option<String>,
    pub webhook_token: Option<Secret>,
    #[serde(with = "super::duration_text")]
    pub timeout: Duration,
}

mod opt_duration {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&super::super::fmt_duration(*d)),
            None => s.serialize_none(),
        }
    }
}

fn url_key(key: &str, value: &str) -> Result<String, ConfigError> {
    if !(value.starts_with("http://") || value.starts_with("https://")) {
        return Err(invalid(
            key,
            format!("`{value}` must start with http:// or https://"),
        ));
    }
    Ok(value.trim_end_matches('/').to_string())
}

impl RawResponder {
    pub(super) fn validate(
        self,
        regions: &[RegionConfig],
        secrets: super::SecretSource<'_>,
    ) -> Result<ResponderConfig, ConfigError> {
        let secret = |key: &str, file: Option<&str>, env: &str| {
            secrets(key, file, env).map_err(ConfigError::Secret)
        };
        let listen = self
            .listen
            .parse::<SocketAddr>()
            .map_err(|e| invalid("responder.listen", format!("not an address:port ({e})")))?;
        let store = match (self.state, self.state_file) {
            (None, None) => {
                return Err(invalid(
                    "responder.state_file",
                    "is required (or a [responder.state] section with backend = \"dynamodb\")",
                ))
            }
            (None, Some(f)) | (Some(RawState { backend: _, .. }), Some(f)) if f.is_empty() => {
                return Err(invalid("responder.state_file", "must not be empty"))
            }
            (None, Some(f)) => StoreConfig::File {
                path: PathBuf::from(f),
            },
            (Some(st), file) => validate_store(st, file)?,
        };
        if !(1024..=64 * 1024 * 1024).contains(&self.max_body_bytes) {
            return Err(invalid(
                "responder.max_body_bytes",
                "must be between 1024 and 67108864",
            ));
        }
        if regions.len() < 2 {
            return Err(invalid(
                "region",
                "the responder needs at least two [[region]]s to move traffic between",
            ));
        }
        let public_url = self
            .public_url
            .as_deref()
            .map(|u| url_key("responder.public_url", u))
            .transpose()?;
        let prometheus_url = self
            .prometheus_url
            .as_deref()
            .map(|u| url_key("responder.prometheus_url", u))
            .transpose()?;
        let webhook_token = secret(
            "responder.webhook_token_file",
            self.webhook_token_file.as_deref(),
            WEBHOOK_TOKEN_ENV,
        )?;
        let admin_token = secret(
            "responder.admin_token_file",
            self.admin_token_file.as_deref(),
            ADMIN_TOKEN_ENV,
        )?;
        for (key, token) in [
            ("responder.webhook_token_file", &webhook_token),
            ("responder.admin_token_file", &admin_token),
        ] {
            if token.expose().len() < MIN_TOKEN_BYTES {
                return Err(invalid(
                    key,
                    format!("the token is shorter than {MIN_TOKEN_BYTES} bytes; use a random one (e.g. `openssl rand -hex 32`)"),
                ));
            }
        }
        if admin_token.matches(webhook_token.expose().as_bytes()) {
            return Err(invalid(
                "responder.admin_token_file",
                "the admin token equals the webhook token; they must differ, so Alertmanager's token cannot move traffic by hand",
            ));
        }
        let tick = parse_duration("responder.tick", &self.tick)?;
        let request_timeout = parse_duration("responder.request_timeout", &self.request_timeout)?;
        let header_timeout = parse_duration("responder.header_timeout", &self.header_timeout)?;
        if !(1..=65_536).contains(&self.max_connections) {
            return Err(invalid(
                "responder.max_connections",
                "must be between 1 and 65536",
            ));
        }

        if self.alerts.region_down.is_empty()
            || self.alerts.region_down.iter().any(|n| n.is_empty())
        {
            return Err(invalid(
                "responder.alerts.region_down",
                "needs at least one alert name, none empty",
            ));
        }
        let firing_expiry =
            parse_duration("responder.alerts.firing_expiry", &self.alerts.firing_expiry)?;
        if firing_expiry < Duration::from_secs(60) {
            return Err(invalid(
                "responder.alerts.firing_expiry",
                "must be at least 1m (and several times the responder route's repeat_interval)",
            ));
        }
        if self.alerts.region_label.is_empty() {
            return Err(invalid(
                "responder.alerts.region_label",
                "must not be empty",
            ));
        }

        let p = &self.policy;
        let policy = PolicyConfig {
            min_interval: parse_duration("responder.policy.min_interval", &p.min_interval)?,
            stabilisation: parse_duration("responder.policy.stabilisation", &p.stabilisation)?,
            auto_failback: p.auto_failback,
            max_failback_lag: p
                .max_failback_lag
                .as_deref()
                .map(|t| parse_duration("responder.policy.max_failback_lag", t))
                .transpose()?,
            retry_backoff: parse_duration("responder.policy.retry_backoff", &p.retry_backoff)?,
            live_check_cooldown: parse_duration(
                "responder.policy.live_check_cooldown",
                &p.live_check_cooldown,
            )?,
            on_no_healthy_target: p.on_no_healthy_target.clone(),
        };
        if policy.on_no_healthy_target != "stay" {
            return Err(invalid(
                "responder.policy.on_no_healthy_target",
                format!(
                    "`{}` is not supported: the only safe choice is \"stay\" (keep traffic where it is and alert)",
                    policy.on_no_healthy_target
                ),
            ));
        }

        let a = &self.app;
        if a.env_file.is_empty() {
            return Err(invalid("responder.app.env_file", "must not be empty"));
        }
        if a.env_key.is_empty()
            || !a
                .env_key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
            || a.env_key.starts_with(|c: char| c.is_ascii_digit())
        {
            return Err(invalid(
                "responder.app.env_key",
                format!("`{}` is not a valid environment variable name", a.env_key),
            ));
        }
        for (i, c) in a.reload_commands.iter().enumerate() {
            if c.is_empty() || c[0].is_empty() {
                return Err(invalid(
                    format!("responder.app.reload_commands[{i}]"),
                    "must be a non-empty list: [program, args...]",
                ));
            }
        }
        for (i, name) in a.pass_env.iter().enumerate() {
            let key = format!("responder.app.pass_env[{i}]");
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(invalid(
                    key,
                    format!("`{name}` is not an environment variable name"),
                ));
            }
            if SECRET_VARIABLES.contains(&name.as_str()) {
                return Err(invalid(
                    key,
                    format!("`{name}` holds a secret; reload commands never get it"),
                ));
            }
        }
        let app = AppConfig {
            env_file: PathBuf::from(&a.env_file),
            env_key: a.env_key.clone(),
            reload_commands: a.reload_commands.clone(),
            pass_env: a.pass_env.clone(),
            command_timeout: parse_duration("responder.app.command_timeout", &a.command_timeout)?,
        };
        let step_deadline = parse_duration("responder.steps.deadline", &self.steps.deadline)?;

        let digitalocean = match self.digitalocean {
            None => None,
            Some(d) => Some(validate_do(d, regions, &secret)?),
        };
        if let StoreConfig::Dynamodb {
            lease,
            renew,
            timeout,
            ..
        } = &store
        {
            // After a renewal the leader must still be able to act until the next one has been
            // answered, or a healthy leader would pause between renewals.
            let request_timeout = digitalocean
                .as_ref()
                .map_or(Duration::ZERO, |d| d.request_timeout);
            let margin = store.lease_margin(request_timeout);
            if *lease <= margin + *renew + *timeout {
                return Err(invalid(
                    "responder.state.lease",
                    format!(
                        "{} is too short: a replica stops acting {} before its lease ends \
                         (responder.digitalocean.request_timeout + responder.state.max_clock_skew), \
                         and must still hold it when its next renewal ({} later, answered within {}) \
                         lands; make it longer than {}",
                        super::fmt_duration(*lease),
                        super::fmt_duration(margin),
                        super::fmt_duration(*renew),
                        super::fmt_duration(*timeout),
                        super::fmt_duration(margin + *renew + *timeout)
                    ),
                ));
            }
        }

        let n = &self.notify;
        let slack_webhook_url = if n.slack || n.slack_webhook_url_file.is_some() {
            let s = secret(
                "responder.notify.slack_webhook_url_file",
                n.slack_webhook_url_file.as_deref(),
                SLACK_URL_ENV,
            )?;
            url_key("responder.notify.slack_webhook_url_file", s.expose()).map_err(|_| {
                invalid(
                    "responder.notify.slack_webhook_url_file",
                    "is not an http(s) URL",
                )
            })?;
            Some(s)
        } else {
            None
        };
        let webhook_url = n
            .webhook_url
            .as_deref()
            .map(|u| url_key("responder.notify.webhook_url", u))
            .transpose()?;
        let notify_token = match (&n.webhook_token_file, &webhook_url) {
            (Some(f), Some(_)) => Some(secret(
                "responder.notify.webhook_token_file",
                Some(f),
                NOTIFY_TOKEN_ENV,
            )?),
            (Some(_), None) => {
                return Err(invalid(
                    "responder.notify.webhook_token_file",
                    "is set but responder.notify.webhook_url is not",
                ))
            }
            (None, Some(_)) => secret(
                "responder.notify.webhook_token_file",
                None,
                NOTIFY_TOKEN_ENV,
            )
            .ok(),
            (None, None) => None,
        };
        let notify = NotifyConfig {
            slack_webhook_url,
            webhook_url,
            webhook_token: notify_token,
            timeout: parse_duration(
                "responder.notify.timeout",
                n.timeout.as_deref().unwrap_or("5s"),
            )?,
        };

        Ok(ResponderConfig {
            listen,
            store,
            max_body_bytes: self.max_body_bytes,
            public_url,
            prometheus_url,
            webhook_token,
            admin_token,
            tick,
            request_timeout,
            header_timeout,
            max_connections: self.max_connections,
            alerts: AlertsConfig {
                region_down: self.alerts.region_down,
                region_label: self.alerts.region_label,
                firing_expiry,
                detail_annotation: self.alerts.detail_annotation,
            },
            policy,
            app,
            step_deadline,
            digitalocean,
            notify,
        })
    }
}

fn validate_store(st: RawState, file: Option<String>) -> Result<StoreConfig, ConfigError> {
    let key = |k: &str| format!("responder.state.{k}");
    match st.backend.as_str() {
        "file" => Ok(StoreConfig::File {
            path: PathBuf::from(file.ok_or_else(|| {
                invalid(
                    "responder.state_file",
                    "is required with backend = \"file\"",
                )
            })?),
        }),
        "dynamodb" => {
            if file.is_some() {
                return Err(invalid(
                    "responder.state_file",
                    "is only for backend = \"file\"; remove it",
                ));
            }
            let need = |v: Option<String>, k: &str| {
                v.filter(|x| !x.is_empty())
                    .ok_or_else(|| invalid(key(k), "is required with backend = \"dynamodb\""))
            };
            let table = need(st.table, "table")?;
            let region = need(st.region, "region")?;
            let replica = need(st.replica, "replica")?;
            if !replica
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            {
                return Err(invalid(
                    key("replica"),
                    "may contain only letters, digits, `-`, `_` and `.`",
                ));
            }
            if let Some(ep) = &st.endpoint {
                url_key(&key("endpoint"), ep)?;
            }
            let lease = parse_duration(&key("lease"), &st.lease)?;
            let renew = match st.renew {
                Some(r) => parse_duration(&key("renew"), &r)?,
                None => lease / 3,
            };
            let timeout = parse_duration(&key("timeout"), &st.timeout)?;
            let max_clock_skew = parse_duration(&key("max_clock_skew"), &st.max_clock_skew)?;
            if renew * 2 > lease {
                return Err(invalid(
                    key("renew"),
                    "must be at most half of the lease, so one missed renewal does not lose it",
                ));
            }
            if timeout >= renew {
                return Err(invalid(
                    key("timeout"),
                    "must be shorter than the renew interval",
                ));
            }
            Ok(StoreConfig::Dynamodb {
                table,
                region,
                endpoint: st.endpoint,
                replica,
                lease,
                renew,
                timeout,
                max_clock_skew,
            })
        }
        other => Err(invalid(
            key("backend"),
            format!("unknown backend `{other}` (file or dynamodb)"),
        )),
    }
}

type SecretLoader<'a> = &'a dyn Fn(&str, Option<&str>, &str) -> Result<Secret, ConfigError>;

fn validate_do(
    d: RawDigitalOcean,
    regions: &[RegionConfig],
    secret: SecretLoader<'_>,
) -> Result<DigitalOceanConfig, ConfigError> {
    let api_url = url_key("responder.digitalocean.api_url", &d.api_url)?;
    let token = secret(
        "responder.digitalocean.token_file",
        d.token_file.as_deref(),
        DIGITALOCEAN_TOKEN_ENV,
    )?;
    let request_timeout =
        parse_duration("responder.digitalocean.request_timeout", &d.request_timeout)?;
    let mut load_balancers = Vec::new();
    for (i, lb) in d.load_balancers.into_iter().enumerate() {
        let key = format!("responder.digitalocean.load_balancer[{i}]");
        if lb.id.is_empty() {
            return Err(invalid(format!("{key}.id"), "must not be empty"));
        }
        let mode = match lb.mode.as_str() {
            "droplets" => LbMode::Droplets,
            "tag" => LbMode::Tag,
            "global" => LbMode::Global,
            other => {
                return Err(invalid(
                    format!("{key}.mode"),
                    format!("unknown mode `{other}` (droplets, tag or global)"),
                ))
            }
        };
        for (j, r) in regions.iter().enumerate() {
            let d = &r.digitalocean;
            let missing = match mode {
                LbMode::Droplets if d.droplet_ids.is_empty() => Some("droplet_ids"),
                LbMode::Tag if d.tag.as_deref().unwrap_or("").is_empty() => Some("tag"),
                LbMode::Global if d.slug.as_deref().unwrap_or("").is_empty() => Some("slug"),
                _ => None,
            };
            if let Some(field) = missing {
                return Err(invalid(
                    format!("region[{j}].digitalocean.{field}"),
                    format!(
                        "region `{}` needs it for load balancer {} in {} mode",
                        r.name, lb.id, lb.mode
                    ),
                ));
            }
        }
        load_balancers.push(LoadBalancerConfig { id: lb.id, mode });
    }
    // Droplets of different regions must not overlap, or a move could remove a target it adds.
    let mut seen = std::collections::BTreeMap::new();
    for r in regions {
        for id in &r.digitalocean.droplet_ids {
            if let Some(other) = seen.insert(*id, r.name.clone()) {
                return Err(invalid(
                    "region.digitalocean.droplet_ids",
                    format!("droplet {id} is listed for both {other} and {}", r.name),
                ));
            }
        }
    }
    let mut dns_records = Vec::new();
    for (i, rec) in d.dns_records.into_iter().enumerate() {
        let key = format!("responder.digitalocean.dns_record[{i}]");
        if rec.domain.is_empty() {
            return Err(invalid(format!("{key}.domain"), "must not be empty"));
        }
        let kind = match rec.kind.as_str() {
            "A" => RecordType::A,
            "AAAA" => RecordType::AAAA,
            other => {
                return Err(invalid(
                    format!("{key}.type"),
                    format!("`{other}` is not supported (A or AAAA)"),
                ))
            }
        };
        if rec.ttl < 30 {
            return Err(invalid(
                format!("{key}.ttl"),
                "DigitalOcean's minimum TTL is 30 seconds",
            ));
        }
        for (j, r) in regions.iter().enumerate() {
            let (field, addr) = match kind {
                RecordType::A => ("ipv4", &r.digitalocean.ipv4),
                RecordType::AAAA => ("ipv6", &r.digitalocean.ipv6),
            };
            let ok = addr
                .as_deref()
                .and_then(|a| a.parse::<IpAddr>().ok())
                .is_some_and(|ip| ip.is_ipv4() == (kind == RecordType::A));
            if !ok {
                return Err(invalid(
                    format!("region[{j}].digitalocean.{field}"),
                    format!(
                        "region `{}` needs a valid {field} address for the {} record of {}",
                        r.name,
                        kind.as_str(),
                        rec.domain
                    ),
                ));
            }
        }
        dns_records.push(DnsRecordConfig {
            domain: rec.domain,
            record_id: rec.record_id,
            kind,
            ttl: rec.ttl,
        });
    }
    Ok(DigitalOceanConfig {
        api_url,
        token,
        request_timeout,
        load_balancers,
        dns_records,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use crate::secret::Secret;

    const BASE: &str = r#"
[prober]
id = "p"

[[region]]
name = "us-east-1"
priority = 1
[region.digitalocean]
slug = "nyc1"
droplet_ids = [1]
tag = "east"
ipv4 = "192.0.2.1"

[[region]]
name = "us-west-2"
priority = 2
[region.digitalocean]
slug = "sfo3"
droplet_ids = [2]
tag = "west"
ipv4 = "192.0.2.2"

[[table]]
name = "wordpress_posts"

[responder]
state_file = "/tmp/state.json"

[responder.policy]
min_interval = "1m"

[responder.app]
env_file = "/tmp/app.env"

[responder.digitalocean]
[[responder.digitalocean.load_balancer]]
id = "lb"
mode = "droplets"
[[responder.digitalocean.dns_record]]
domain = "example.com"
record_id = 1
type = "A"
"#;

    fn parse(text: &str) -> Result<Config, String> {
        // A distinct, long enough secret per key.
        let secrets =
            |key: &str, _: Option<&str>, _: &str| Ok(Secret::new(format!("s3cr3t-{key}")));
        Config::parse_with_secrets(text, &secrets).map_err(|e| e.to_string())
    }

    #[test]
    fn a_complete_responder_section_builds_its_policy() {
        let c = parse(BASE).unwrap();
        let r = c.responder.as_ref().unwrap();
        let p = r.policy(&c.regions);
        assert_eq!(p.regions, vec!["us-east-1", "us-west-2"]);
        assert_eq!(p.min_interval_ms, 60_000);
        assert!(p.auto_failback);
        // Secrets never show in the effective config.
        let shown = c.to_pretty();
        assert!(
            !shown.contains("s3cr3t") && shown.contains("[redacted]"),
            "{shown}"
        );
    }

    #[test]
    fn policy_and_step_errors_name_their_key() {
        let cases = [
            (
                BASE.replace("min_interval = \"1m\"", "min_interval = \"soon\""),
                "responder.policy.min_interval",
            ),
            (
                BASE.replace(
                    "min_interval = \"1m\"",
                    "min_interval = \"1m\"\non_no_healthy_target = \"random\"",
                ),
                "responder.policy.on_no_healthy_target",
            ),
            (
                BASE.replace(
                    "min_interval = \"1m\"",
                    "min_interval = \"1m\"\nmax_failback_lag = \"5\"",
                ),
                "responder.policy.max_failback_lag",
            ),
            (
                BASE.replace("mode = \"droplets\"", "mode = \"weighted\""),
                "load_balancer[0].mode",
            ),
            (
                BASE.replace("droplet_ids = [2]", "droplet_ids = []"),
                "region[1].digitalocean.droplet_ids",
            ),
            (
                BASE.replace("droplet_ids = [2]", "droplet_ids = [1]"),
                "droplet 1 is listed for both",
            ),
            (
                BASE.replace("ipv4 = \"192.0.2.2\"", "ipv4 = \"not-an-ip\""),
                "region[1].digitalocean.ipv4",
            ),
            (
                BASE.replace("type = \"A\"", "type = \"CNAME\""),
                "dns_record[0].type",
            ),
            (
                BASE.replace("type = \"A\"", "type = \"A\"\nttl = 10"),
                "minimum TTL is 30",
            ),
            (
                BASE.replace(
                    "env_file = \"/tmp/app.env\"",
                    "env_file = \"/tmp/app.env\"\nenv_key = \"1BAD\"",
                ),
                "responder.app.env_key",
            ),
            (
                BASE.replace(
                    "env_file = \"/tmp/app.env\"",
                    "env_file = \"/tmp/app.env\"\nreload_commands = [[]]",
                ),
                "reload_commands[0]",
            ),
            (
                BASE.replace("[responder]", "[responder]\nlisten = \"nowhere\""),
                "responder.listen",
            ),
            (
                BASE.replace("[responder]", "[responder]\nmax_body_bytes = 10"),
                "responder.max_body_bytes",
            ),
            (
                BASE.replace("[responder.policy]", "[responder.policy]\nfailback = true"),
                "failback",
            ),
        ];
        for (text, want) in cases {
            let e = parse(&text).unwrap_err();
            assert!(e.contains(want), "want `{want}` in: {e}");
        }
    }

    #[test]
    fn one_region_is_not_enough_for_a_responder() {
        let start = BASE.find("[[region]]\nname = \"us-west-2\"").unwrap();
        let end = BASE.find("[[table]]").unwrap();
        let text = format!("{}{}", &BASE[..start], &BASE[end..]);
        assert!(parse(&text).unwrap_err().contains("at least two"));
    }

    #[test]
    fn a_missing_secret_names_its_key_and_variable() {
        let secrets = |k: &str, f: Option<&str>, env: &str| Secret::load(k, f, env);
        let text = BASE.replace(
            "[responder]",
            "[responder]\nwebhook_token_file = \"/nonexistent/token\"",
        );
        let e = Config::parse_with_secrets(&text, &secrets)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("responder.webhook_token_file") && e.contains("/nonexistent/token"),
            "{e}"
        );
    }

    #[test]
    fn tokens_must_be_long_enough_and_the_admin_token_not_the_webhook_token() {
        let short = |key: &str, _: Option<&str>, _: &str| {
            Ok(Secret::new(if key.contains("admin") {
                "short"
            } else {
                "w-0123456789abcdef"
            }))
        };
        let e = Config::parse_with_secrets(BASE, &short)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("responder.admin_token_file") && e.contains("16 bytes"),
            "{e}"
        );
        let same = |_: &str, _: Option<&str>, _: &str| Ok(Secret::new("the-same-token-0123456789"));
        let e = Config::parse_with_secrets(BASE, &same)
            .unwrap_err()
            .to_string();
        assert!(e.contains("equals the webhook token"), "{e}");
    }
}
