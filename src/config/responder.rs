//! The `[responder]` section: webhook and admin API, policy, the application config step,
//! DigitalOcean load balancers and DNS records, and notifications. Values parse themselves
//! ([`super::types`]); sections that need no more than that are deserialized straight into their
//! validated types. Secrets are read here, from files or environment variables, and held as
//! [`Secret`]s; what relates several keys is checked by hand and names the key it rejects.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::types::{ClientTls, Dur, EnvName, HttpUrl, OnNoHealthyTarget, ServerTls};
pub use super::types::{LbMode, RecordType};
use super::{invalid, ConfigError, RegionConfig};
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

// ---------------------------------------------------------------------------------------------
// The file's shape where it differs from the validated one (secrets by file, the state store,
// DigitalOcean), with its defaults.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawResponder {
    listen: SocketAddr,
    tls: Option<ServerTls>,
    allow_plain_http: bool,
    outbound_tls: ClientTls,
    state_file: Option<PathBuf>,
    state: Option<RawState>,
    max_body_bytes: usize,
    public_url: Option<HttpUrl>,
    prometheus_url: Option<HttpUrl>,
    webhook_token_file: Option<String>,
    admin_token_file: Option<String>,
    tick: Dur,
    request_timeout: Dur,
    header_timeout: Dur,
    max_connections: usize,
    alerts: AlertsConfig,
    policy: PolicyConfig,
    app: Option<AppConfig>,
    steps: StepsConfig,
    readiness: ReadinessConfig,
    digitalocean: Option<RawDigitalOcean>,
    notify: RawNotify,
    agents: Option<RawAgents>,
}

impl Default for RawResponder {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9465)),
            tls: None,
            allow_plain_http: false,
            outbound_tls: ClientTls::default(),
            state_file: None,
            state: None,
            max_body_bytes: 1024 * 1024,
            public_url: None,
            prometheus_url: None,
            webhook_token_file: None,
            admin_token_file: None,
            tick: Dur::secs(1),
            request_timeout: Dur::secs(10),
            header_timeout: Dur::secs(10),
            max_connections: 256,
            alerts: AlertsConfig::default(),
            policy: PolicyConfig::default(),
            app: None,
            steps: StepsConfig::default(),
            readiness: ReadinessConfig::default(),
            digitalocean: None,
            notify: RawNotify::default(),
            agents: None,
        }
    }
}

/// `[responder.state]`: which store, and the DynamoDB backend's settings.
#[derive(Debug, Deserialize)]
#[serde(tag = "backend", rename_all = "snake_case", deny_unknown_fields)]
enum RawState {
    File,
    Dynamodb(RawDynamoState),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawDynamoState {
    table: String,
    region: String,
    endpoint: Option<HttpUrl>,
    replica: String,
    lease: Dur,
    renew: Option<Dur>,
    timeout: Dur,
    max_clock_skew: Dur,
}

impl Default for RawDynamoState {
    fn default() -> Self {
        Self {
            table: String::new(),
            region: String::new(),
            endpoint: None,
            replica: String::new(),
            lease: Dur::secs(15),
            renew: None,
            timeout: Dur::secs(2),
            max_clock_skew: Dur::secs(1),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDigitalOcean {
    #[serde(default = "RawDigitalOcean::api_url")]
    api_url: HttpUrl,
    #[serde(default)]
    token_file: Option<String>,
    #[serde(default = "RawDigitalOcean::request_timeout")]
    request_timeout: Dur,
    #[serde(default, rename = "load_balancer")]
    load_balancers: Vec<LoadBalancerConfig>,
    #[serde(default, rename = "dns_record")]
    dns_records: Vec<DnsRecordConfig>,
}

impl RawDigitalOcean {
    fn api_url() -> HttpUrl {
        HttpUrl::parse("https://api.digitalocean.com").expect("a valid URL")
    }
    fn request_timeout() -> Dur {
        Dur::secs(5)
    }
}

/// `[responder.agents]`: the application servers' agents.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgents {
    #[serde(default)]
    secret_file: Option<String>,
    #[serde(default)]
    required: Required,
    #[serde(default, rename = "agent")]
    agents: Vec<AgentEntry>,
}

/// How many of the target region's agents must acknowledge: `"all"` or a number.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Required {
    #[default]
    All,
    AtLeast(usize),
}

impl<'de> Deserialize<'de> for Required {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Required, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Text {
            Word(String),
            Count(i64),
        }
        match Text::deserialize(d)? {
            Text::Word(w) if w == "all" => Ok(Required::All),
            Text::Count(n) if n >= 1 => Ok(Required::AtLeast(n as usize)),
            _ => Err(serde::de::Error::custom(
                "must be \"all\" or a number of agents, 1 or more",
            )),
        }
    }
}

impl Serialize for Required {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Required::All => s.serialize_str("all"),
            Required::AtLeast(n) => s.serialize_u64(*n as u64),
        }
    }
}

/// One expected agent.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AgentEntry {
    pub name: String,
    /// The region whose application servers it runs on.
    pub region: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawNotify {
    slack_webhook_url_file: Option<String>,
    slack: bool,
    webhook_url: Option<HttpUrl>,
    webhook_token_file: Option<String>,
    timeout: Option<Dur>,
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

// ---------------------------------------------------------------------------------------------
// The validated shape.
// ---------------------------------------------------------------------------------------------

/// The validated responder configuration.
#[derive(Debug, Clone, Serialize)]
pub struct ResponderConfig {
    pub listen: SocketAddr,
    /// `[responder.tls]`: the webhook, admin and agents' API over HTTPS.
    pub tls: Option<ServerTls>,
    /// Plain HTTP on a non-loopback `listen`, said explicitly.
    pub allow_plain_http: bool,
    /// `[responder.outbound_tls]`: how the responder verifies the servers it calls
    /// (DigitalOcean, Prometheus, notifications: the system roots plus `ca_file`) and the client
    /// certificate it presents when one is asked for.
    pub outbound_tls: ClientTls,
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
    /// The local env file step (single-machine setups); `None` when only agents do it.
    pub app: Option<AppConfig>,
    #[serde(with = "super::duration_text")]
    pub step_deadline: Duration,
    pub readiness: ReadinessConfig,
    pub digitalocean: Option<DigitalOceanConfig>,
    pub notify: NotifyConfig,
    pub agents: Option<AgentsConfig>,
}

impl ResponderConfig {
    /// This machine's URL of the listener: https with `[responder.tls]`, and a wildcard address
    /// reached through loopback.
    pub fn local_url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut addr = self.listen;
        if addr.ip().is_unspecified() {
            addr.set_ip(if addr.is_ipv4() {
                IpAddr::from([127, 0, 0, 1])
            } else {
                IpAddr::from(std::net::Ipv6Addr::LOCALHOST)
            });
        }
        format!("{scheme}://{addr}")
    }
}

/// `[responder.agents]`, validated.
#[derive(Debug, Clone, Serialize)]
pub struct AgentsConfig {
    /// Every agent's token is derived from it and the agent's name (`dynamo-failover
    /// agent-token`), so a token only ever speaks for its own agent.
    pub secret: Secret,
    pub required: Required,
    pub agents: Vec<AgentEntry>,
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

/// `[responder.alerts]`: which alerts mean a region is down, and how they are read.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
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
    /// Alert names that mean "this region's application is down": the region is not a target
    /// while one fires; they never start a move.
    pub app_down: Vec<String>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            region_down: vec!["DynamoDBRegionUnavailable".into()],
            region_label: "region".into(),
            firing_expiry: Duration::from_secs(20 * 60),
            detail_annotation: "operation".into(),
            app_down: vec!["AppRegionUnavailable".into()],
        }
    }
}

/// `[responder.policy]`: anti-flapping and retries.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    #[serde(with = "super::duration_text")]
    pub min_interval: Duration,
    #[serde(with = "super::duration_text")]
    pub stabilisation: Duration,
    pub auto_failback: bool,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "opt_duration",
        deserialize_with = "opt_dur"
    )]
    pub max_failback_lag: Option<Duration>,
    #[serde(with = "super::duration_text")]
    pub retry_backoff: Duration,
    #[serde(with = "super::duration_text")]
    pub live_check_cooldown: Duration,
    pub on_no_healthy_target: OnNoHealthyTarget,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            min_interval: Duration::from_secs(5 * 60),
            stabilisation: Duration::from_secs(10 * 60),
            auto_failback: true,
            max_failback_lag: None,
            retry_backoff: Duration::from_secs(30),
            live_check_cooldown: Duration::from_secs(60),
            on_no_healthy_target: OnNoHealthyTarget::Stay,
        }
    }
}

/// `[responder.app]`: the env file on this machine and its reload commands.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    pub env_file: PathBuf,
    #[serde(default = "AppConfig::env_key")]
    pub env_key: EnvName,
    #[serde(default)]
    pub reload_commands: Vec<Vec<String>>,
    /// Variables of the responder's environment passed to the reload commands (besides PATH,
    /// the region variable and DYNAMO_FAILOVER_EPOCH; nothing else is).
    #[serde(default)]
    pub pass_env: Vec<EnvName>,
    #[serde(with = "super::duration_text", default = "AppConfig::command_timeout")]
    pub command_timeout: Duration,
    /// The user and group the application reads the env file as (names or ids). Readiness checks
    /// the file is readable by them; the write itself keeps the file's mode, owner and group.
    #[serde(default)]
    pub read_as_user: Option<String>,
    #[serde(default)]
    pub read_as_group: Option<String>,
}

impl AppConfig {
    fn env_key() -> EnvName {
        EnvName::parse("DYNAMODB_REGION").expect("a valid name")
    }
    fn command_timeout() -> Duration {
        Duration::from_secs(30)
    }
}

/// `[responder.steps]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StepsConfig {
    /// Bound on one step, retries included.
    #[serde(with = "super::duration_text")]
    pub deadline: Duration,
}

impl Default for StepsConfig {
    fn default() -> Self {
        Self {
            deadline: Duration::from_secs(60),
        }
    }
}

/// `[responder.readiness]`: how often the whole failover path is checked (read-only).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReadinessConfig {
    #[serde(with = "super::duration_text")]
    pub interval: Duration,
}

impl Default for ReadinessConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(300),
        }
    }
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

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadBalancerConfig {
    pub id: String,
    pub mode: LbMode,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsRecordConfig {
    pub domain: String,
    pub record_id: u64,
    #[serde(rename = "type")]
    pub kind: RecordType,
    #[serde(default = "DnsRecordConfig::ttl")]
    pub ttl: u32,
}

impl DnsRecordConfig {
    fn ttl() -> u32 {
        60
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct NotifyConfig {
    pub slack_webhook_url: Option<Secret>,
    pub webhook_url: Option<String>,
    pub webhook_token: Option<Secret>,
    #[serde(with = "super::duration_text")]
    pub timeout: Duration,
}

fn opt_dur<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    Dur::deserialize(d).map(|x| Some(x.0))
}

fn opt_duration<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_str(&super::fmt_duration(*d)),
        None => s.serialize_none(),
    }
}

// ---------------------------------------------------------------------------------------------
// What relates several keys.
// ---------------------------------------------------------------------------------------------

impl RawResponder {
    pub(super) fn validate(
        self,
        regions: &[RegionConfig],
        secrets: super::SecretSource<'_>,
    ) -> Result<ResponderConfig, ConfigError> {
        let secret = |key: &str, file: Option<&str>, env: &str| {
            secrets(key, file, env).map_err(ConfigError::Secret)
        };
        let store = validate_store(self.state, self.state_file)?;
        if !(1024..=64 * 1024 * 1024).contains(&self.max_body_bytes) {
            return Err(invalid(
                "responder.max_body_bytes",
                "must be between 1024 and 67108864",
            ));
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(86_400))
            .contains(&self.readiness.interval)
        {
            return Err(invalid(
                "responder.readiness.interval",
                "must be between 1s and 24h",
            ));
        }
        if regions.len() < 2 {
            return Err(invalid(
                "region",
                "the responder needs at least two [[region]]s to move traffic between",
            ));
        }
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
        if let Some(both) = self
            .alerts
            .app_down
            .iter()
            .find(|n| self.alerts.region_down.contains(n))
        {
            return Err(invalid(
                "responder.alerts.app_down",
                format!("`{both}` is also in responder.alerts.region_down; an alert either moves traffic or keeps it out of a region, not both"),
            ));
        }
        if self.alerts.firing_expiry < Duration::from_secs(60) {
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
        if self.app.is_none() && self.agents.is_none() {
            return Err(invalid(
                "responder.app",
                "is required (env_file at least), unless [responder.agents] reconfigure the application servers",
            ));
        }
        if let Some(app) = &self.app {
            if app.env_file.as_os_str().is_empty() {
                return Err(invalid("responder.app.env_file", "must not be empty"));
            }
            check_commands("responder.app", &app.reload_commands, &app.pass_env)?;
        }
        let agents = match self.agents {
            None => None,
            Some(a) => Some(validate_agents(a, regions, &secret)?),
        };
        if let Some(a) = &agents {
            // Each agent holds one long poll open; Alertmanager and operators need the rest.
            if a.agents.len() * 2 > self.max_connections {
                return Err(invalid(
                    "responder.max_connections",
                    format!(
                        "{} is too few for {} agents: each holds one connection while it waits for a placement, and the webhook needs room; raise it to {} or more",
                        self.max_connections,
                        a.agents.len(),
                        a.agents.len() * 2
                    ),
                ));
            }
        }

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
            HttpUrl::parse(s.expose()).map_err(|_| {
                invalid(
                    "responder.notify.slack_webhook_url_file",
                    "is not an http(s) URL",
                )
            })?;
            Some(s)
        } else {
            None
        };
        let webhook_url = n.webhook_url.as_ref().map(|u| u.to_string());
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
            timeout: n.timeout.map_or(Duration::from_secs(5), |d| d.0),
        };

        crate::tls::check_listener(
            "responder",
            self.listen,
            self.tls.as_ref(),
            self.allow_plain_http,
            "its tokens",
        )
        .map_err(|e| invalid("responder.listen", e))?;
        // The responder's own tokens never go out in cleartext either.
        let out = &self.outbound_tls;
        let section = "responder.outbound_tls";
        if let Some(d) = &digitalocean {
            out.check_url(section, "the DigitalOcean token", &d.api_url)
                .map_err(|e| invalid("responder.digitalocean.api_url", e))?;
        }
        if let (Some(u), Some(_)) = (&notify.webhook_url, &notify.webhook_token) {
            out.check_url(section, "the notification token", u)
                .map_err(|e| invalid("responder.notify.webhook_url", e))?;
        }
        if let Some(u) = &notify.slack_webhook_url {
            out.check_url(
                section,
                "the Slack webhook URL (itself a secret)",
                u.expose(),
            )
            .map_err(|e| invalid("responder.notify.slack_webhook_url_file", e))?;
        }
        self.outbound_tls
            .check("responder.outbound_tls")
            .map_err(|e| invalid("responder.outbound_tls", e))?;
        Ok(ResponderConfig {
            listen: self.listen,
            tls: self.tls,
            allow_plain_http: self.allow_plain_http,
            outbound_tls: self.outbound_tls,
            store,
            max_body_bytes: self.max_body_bytes,
            public_url: self.public_url.map(|u| u.to_string()),
            prometheus_url: self.prometheus_url.map(|u| u.to_string()),
            webhook_token,
            admin_token,
            tick: self.tick.0,
            request_timeout: self.request_timeout.0,
            header_timeout: self.header_timeout.0,
            max_connections: self.max_connections,
            alerts: self.alerts,
            policy: self.policy,
            app: self.app,
            step_deadline: self.steps.deadline,
            readiness: self.readiness,
            digitalocean,
            notify,
            agents,
        })
    }
}

/// Reload commands are argument lists, and pass no secret through.
pub(super) fn check_commands(
    section: &str,
    commands: &[Vec<String>],
    pass_env: &[EnvName],
) -> Result<(), ConfigError> {
    for (i, c) in commands.iter().enumerate() {
        if c.is_empty() || c[0].is_empty() {
            return Err(invalid(
                format!("{section}.reload_commands[{i}]"),
                "must be a non-empty list: [program, args...]",
            ));
        }
    }
    for (i, name) in pass_env.iter().enumerate() {
        if SECRET_VARIABLES.contains(&name.as_str()) {
            return Err(invalid(
                format!("{section}.pass_env[{i}]"),
                format!(
                    "`{}` holds a secret; reload commands never get it",
                    name.as_str()
                ),
            ));
        }
    }
    Ok(())
}

/// The environment variable an agents secret can come from.
pub const AGENT_SECRET_ENV: &str = "DYNAMO_FAILOVER_AGENT_SECRET";

fn validate_agents(
    a: RawAgents,
    regions: &[RegionConfig],
    secret: SecretLoader<'_>,
) -> Result<AgentsConfig, ConfigError> {
    let secret = secret(
        "responder.agents.secret_file",
        a.secret_file.as_deref(),
        AGENT_SECRET_ENV,
    )?;
    if secret.expose().len() < MIN_TOKEN_BYTES {
        return Err(invalid(
            "responder.agents.secret_file",
            format!("the secret is shorter than {MIN_TOKEN_BYTES} bytes; use a random one (`openssl rand -hex 32`)"),
        ));
    }
    if a.agents.is_empty() {
        return Err(invalid(
            "responder.agents.agent",
            "lists no agent; add one [[responder.agents.agent]] per application server",
        ));
    }
    let mut names = std::collections::BTreeSet::new();
    for (i, e) in a.agents.iter().enumerate() {
        let key = |k: &str| format!("responder.agents.agent[{i}].{k}");
        super::check_label_value(&key("name"), &e.name)?;
        if !names.insert(e.name.clone()) {
            return Err(invalid(
                key("name"),
                format!("agent `{}` is listed twice", e.name),
            ));
        }
        if !regions.iter().any(|r| r.name == e.region) {
            return Err(invalid(
                key("region"),
                format!("`{}` is not a configured region", e.region),
            ));
        }
    }
    Ok(AgentsConfig {
        secret,
        required: a.required,
        agents: a.agents,
    })
}

fn validate_store(
    state: Option<RawState>,
    file: Option<PathBuf>,
) -> Result<StoreConfig, ConfigError> {
    let key = |k: &str| format!("responder.state.{k}");
    match (state, file) {
        (None, None) => Err(invalid(
            "responder.state_file",
            "is required (or a [responder.state] section with backend = \"dynamodb\")",
        )),
        (None | Some(RawState::File), Some(f)) if f.as_os_str().is_empty() => {
            Err(invalid("responder.state_file", "must not be empty"))
        }
        (None | Some(RawState::File), Some(path)) => Ok(StoreConfig::File { path }),
        (Some(RawState::File), None) => Err(invalid(
            "responder.state_file",
            "is required with backend = \"file\"",
        )),
        (Some(RawState::Dynamodb(_)), Some(_)) => Err(invalid(
            "responder.state_file",
            "is only for backend = \"file\"; remove it",
        )),
        (Some(RawState::Dynamodb(st)), None) => {
            for (k, v) in [
                ("table", &st.table),
                ("region", &st.region),
                ("replica", &st.replica),
            ] {
                if v.is_empty() {
                    return Err(invalid(key(k), "is required with backend = \"dynamodb\""));
                }
            }
            if !st
                .replica
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            {
                return Err(invalid(
                    key("replica"),
                    "may contain only letters, digits, `-`, `_` and `.`",
                ));
            }
            let lease = st.lease.0;
            let renew = st.renew.map_or(lease / 3, |r| r.0);
            let timeout = st.timeout.0;
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
                table: st.table,
                region: st.region,
                endpoint: st.endpoint.map(|u| u.to_string()),
                replica: st.replica,
                lease,
                renew,
                timeout,
                max_clock_skew: st.max_clock_skew.0,
            })
        }
    }
}

type SecretLoader<'a> = &'a dyn Fn(&str, Option<&str>, &str) -> Result<Secret, ConfigError>;

fn validate_do(
    d: RawDigitalOcean,
    regions: &[RegionConfig],
    secret: SecretLoader<'_>,
) -> Result<DigitalOceanConfig, ConfigError> {
    let token = secret(
        "responder.digitalocean.token_file",
        d.token_file.as_deref(),
        DIGITALOCEAN_TOKEN_ENV,
    )?;
    for (i, lb) in d.load_balancers.iter().enumerate() {
        let key = format!("responder.digitalocean.load_balancer[{i}]");
        if lb.id.is_empty() {
            return Err(invalid(format!("{key}.id"), "must not be empty"));
        }
        for (j, r) in regions.iter().enumerate() {
            let d = &r.digitalocean;
            let missing = match lb.mode {
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
                        r.name,
                        lb.id,
                        lb.mode.as_str()
                    ),
                ));
            }
        }
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
    for (i, rec) in d.dns_records.iter().enumerate() {
        let key = format!("responder.digitalocean.dns_record[{i}]");
        if rec.domain.is_empty() {
            return Err(invalid(format!("{key}.domain"), "must not be empty"));
        }
        if rec.ttl < 30 {
            return Err(invalid(
                format!("{key}.ttl"),
                "DigitalOcean's minimum TTL is 30 seconds",
            ));
        }
        for (j, r) in regions.iter().enumerate() {
            let (field, addr) = match rec.kind {
                RecordType::A => ("ipv4", &r.digitalocean.ipv4),
                RecordType::AAAA => ("ipv6", &r.digitalocean.ipv6),
            };
            let ok = addr
                .as_deref()
                .and_then(|a| a.parse::<IpAddr>().ok())
                .is_some_and(|ip| ip.is_ipv4() == (rec.kind == RecordType::A));
            if !ok {
                return Err(invalid(
                    format!("region[{j}].digitalocean.{field}"),
                    format!(
                        "region `{}` needs a valid {field} address for the {} record of {}",
                        r.name,
                        rec.kind.as_str(),
                        rec.domain
                    ),
                ));
            }
        }
    }
    Ok(DigitalOceanConfig {
        api_url: d.api_url.to_string(),
        token,
        request_timeout: d.request_timeout.0,
        load_balancers: d.load_balancers,
        dns_records: d.dns_records,
    })
}

#[cfg(test)]
mod tests;
