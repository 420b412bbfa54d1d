//! Configuration: the raw TOML shape (unknown keys rejected) and the validated [`Config`] built
//! from it. Every check names the key it rejects, so `check-config` and start-up can say exactly
//! what is wrong before anything runs. Credentials never live here: AWS keys come from the standard
//! AWS chain.

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub mod agent;
pub mod responder;
pub mod types;
pub use responder::{RegionDigitalOcean, ResponderConfig};
use types::{Dur, HttpUrl, ProbeKind};

use crate::secret::Secret;

/// Resolves a secret: `(config key, file if configured, environment variable)`.
pub type SecretSource<'a> = &'a dyn Fn(&str, Option<&str>, &str) -> Result<Secret, String>;

/// A configuration problem, naming the key (dotted path) and what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config is not valid TOML or has an unexpected key: {0}")]
    Parse(String),
    #[error("config key `{key}`: {problem}")]
    Invalid { key: String, problem: String },
    #[error("config secret {0}")]
    Secret(String),
}

/// Regions one config may list (it bounds the responder's stored state, docs/runbook.md).
pub const MAX_REGIONS: usize = 16;

/// Reads TOML text into `T`; a value that does not parse names its exact key
/// (`responder.digitalocean.load_balancer[0].mode`).
pub(crate) fn deserialize<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, ConfigError> {
    let de = toml::Deserializer::parse(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        let problem = e.into_inner().message().to_string();
        if key.is_empty() || key == "." {
            ConfigError::Parse(problem)
        } else {
            invalid(key, problem)
        }
    })
}

pub(crate) fn invalid(key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        problem: problem.into(),
    }
}

// ---------------------------------------------------------------------------------------------
// The file's shape. Values parse themselves into their types ([`types`]); defaults live in one
// `Default` impl per section; what is checked by hand below is only what relates fields.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    prober: RawProber,
    #[serde(default)]
    exporter: ExporterConfig,
    #[serde(default, rename = "region")]
    regions: Vec<RawRegion>,
    #[serde(default, rename = "table")]
    tables: Vec<RawTable>,
    #[serde(default)]
    responder: Option<responder::RawResponder>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawProber {
    id: String,
    interval: Dur,
    attempt_timeout: Dur,
    timeout: Dur,
    max_attempts: u32,
    probes: Vec<ProbeKind>,
    canary_prefix: String,
}

impl Default for RawProber {
    fn default() -> Self {
        Self {
            id: String::new(),
            interval: Dur::secs(5),
            attempt_timeout: Dur::secs(1),
            timeout: Dur::millis(2500),
            max_attempts: 2,
            probes: vec![ProbeKind::Read, ProbeKind::Write, ProbeKind::Replication],
            canary_prefix: "dynamo-failover-canary".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegion {
    name: String,
    #[serde(default)]
    endpoint: Option<HttpUrl>,
    priority: u32,
    #[serde(default)]
    digitalocean: RegionDigitalOcean,
    #[serde(default, rename = "app_check")]
    app_checks: Vec<AppCheckConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTable {
    name: String,
    #[serde(default = "TableDefaults::key_attribute")]
    key_attribute: String,
    #[serde(default = "TableDefaults::health_key")]
    health_key: String,
    #[serde(default = "TableDefaults::required")]
    required: bool,
}

/// A table's defaults (its name has none).
struct TableDefaults;

impl TableDefaults {
    fn key_attribute() -> String {
        "pk".into()
    }
    fn health_key() -> String {
        "dynamo-failover-health".into()
    }
    fn required() -> bool {
        true
    }
}

// ---------------------------------------------------------------------------------------------
// Validated shape.
// ---------------------------------------------------------------------------------------------

/// The whole validated configuration. Only [`Config::parse`] builds one.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub prober: ProberConfig,
    pub exporter: ExporterConfig,
    /// Sorted by priority, most preferred first.
    pub regions: Vec<RegionConfig>,
    pub tables: Vec<TableConfig>,
    /// Present when the config can run the responder role.
    pub responder: Option<ResponderConfig>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProberConfig {
    /// Names this vantage point in every metric (`prober` label).
    pub id: String,
    #[serde(with = "duration_text")]
    pub interval: Duration,
    #[serde(with = "duration_text")]
    pub attempt_timeout: Duration,
    /// Bound on one probe including retries; the probe is cut off here whatever the SDK does.
    #[serde(with = "duration_text")]
    pub timeout: Duration,
    pub max_attempts: u32,
    pub probes: ProbeSet,
    pub canary_prefix: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExporterConfig {
    pub listen: SocketAddr,
    /// `[exporter.tls]`: `/metrics` over HTTPS (Prometheus with `scheme: https`).
    pub tls: Option<types::ServerTls>,
    /// Plain HTTP on a non-loopback `listen` (refused unless set).
    pub allow_plain_http: bool,
}

impl Default for ExporterConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
            tls: None,
            allow_plain_http: false,
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RegionConfig {
    pub name: String,
    /// Override of the DynamoDB endpoint (a local stand-in); `None` means AWS's own endpoint.
    pub endpoint: Option<String>,
    pub priority: u32,
    pub digitalocean: RegionDigitalOcean,
    /// HTTP checks of the region's application as its users reach it.
    pub app_checks: Vec<AppCheckConfig>,
}

/// One check of a region's application (`[[region.app_check]]`): an HTTP request as users send
/// it, answered with an expected status and, optionally, a body that contains a text.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AppCheckConfig {
    /// Names the check in metrics (`check` label).
    pub name: String,
    /// The URL users use, exactly (a trailing slash matters): its host is the `Host` header and
    /// the TLS server name.
    pub url: String,
    /// Where to connect instead of resolving the URL's host (a load balancer's or droplet's
    /// address, `ip:port`), like `curl --resolve`.
    #[serde(default)]
    pub address: Option<SocketAddr>,
    #[serde(default = "AppCheckConfig::expect_status")]
    pub expect_status: Vec<u16>,
    #[serde(default)]
    pub body_contains: Option<String>,
    #[serde(default = "AppCheckConfig::timeout", with = "duration_text")]
    pub timeout: Duration,
}

impl AppCheckConfig {
    fn expect_status() -> Vec<u16> {
        vec![200]
    }
    fn timeout() -> Duration {
        Duration::from_secs(2)
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TableConfig {
    pub name: String,
    /// Name of the table's partition key attribute (type S).
    pub key_attribute: String,
    /// Partition key value of the health item the read probe fetches.
    pub health_key: String,
    /// Whether this table's failures vote a region down (exported as
    /// `dynamodb_probe_table_required` for the rules). Default true.
    pub required: bool,
}

/// Which probe kinds run. Replication needs write (it reads back this prober's canaries).
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct ProbeSet {
    pub read: bool,
    pub write: bool,
    pub replication: bool,
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::parse(&text)
    }

    /// Parses and validates config text; secrets are read from their files or the environment.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        Self::parse_with_secrets(text, &Secret::load)
    }

    /// Like [`Config::parse`], with secrets resolved by `secrets(key, file, env_var)`.
    pub fn parse_with_secrets(
        text: &str,
        secrets: SecretSource<'_>,
    ) -> Result<Config, ConfigError> {
        let raw: RawConfig = deserialize(text)?;
        raw.validate(secrets)
    }

    /// Reads and validates a config file's shape without requiring its secrets to be readable
    /// here (`check-config` on a machine other than the one that runs it). Answers the config,
    /// with a stand-in for each secret that could not be read, and what each such secret's
    /// loader said; a role must never run on such a config.
    pub fn load_shape(path: &Path) -> Result<(Config, Vec<String>), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let missing = std::cell::RefCell::new(Vec::new());
        let lenient = |key: &str, file: Option<&str>, env: &str| {
            Secret::load(key, file, env).or_else(|e| {
                missing.borrow_mut().push(e);
                // Distinct per key, so checks that secrets differ still pass on stand-ins, and a
                // URL, so checks of a URL-shaped secret (Slack's) pass too.
                Ok(Secret::new(format!(
                    "https://unreadable-secret-stand-in.invalid/{}",
                    key.replace(|c: char| !c.is_ascii_alphanumeric(), "-")
                )))
            })
        };
        let config = Config::parse_with_secrets(&text, &lenient)?;
        Ok((config, missing.into_inner()))
    }

    /// The effective configuration as TOML text for `check-config`. Secrets serialize as
    /// `[redacted]`.
    pub fn to_pretty(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("<cannot render config: {e}>"))
    }
}

impl RawConfig {
    fn validate(self, secrets: SecretSource<'_>) -> Result<Config, ConfigError> {
        let prober = self.prober.validate()?;

        if self.regions.is_empty() {
            return Err(invalid(
                "region",
                "at least one [[region]] is required (two or more for failover)",
            ));
        }
        if self.regions.len() > MAX_REGIONS {
            return Err(invalid(
                "region",
                format!("at most {MAX_REGIONS} [[region]]s are supported"),
            ));
        }
        let mut names = BTreeSet::new();
        let mut priorities = BTreeSet::new();
        let mut regions = Vec::with_capacity(self.regions.len());
        for (i, r) in self.regions.into_iter().enumerate() {
            let key = |field: &str| format!("region[{i}].{field}");
            check_label_value(&key("name"), &r.name)?;
            if !names.insert(r.name.clone()) {
                return Err(invalid(
                    key("name"),
                    format!("region `{}` is listed twice", r.name),
                ));
            }
            if !priorities.insert(r.priority) {
                return Err(invalid(
                    key("priority"),
                    format!(
                        "priority {} is used by another region; priorities must be distinct",
                        r.priority
                    ),
                ));
            }
            let mut checks = BTreeSet::new();
            for (j, c) in r.app_checks.iter().enumerate() {
                let key = |k: &str| format!("region[{i}].app_check[{j}].{k}");
                check_label_value(&key("name"), &c.name)?;
                if !checks.insert(c.name.clone()) {
                    return Err(invalid(
                        key("name"),
                        format!("check `{}` is listed twice for this region", c.name),
                    ));
                }
                if c.expect_status.is_empty()
                    || c.expect_status.iter().any(|s| !(100..=599).contains(s))
                {
                    return Err(invalid(
                        key("expect_status"),
                        "must list one or more HTTP status codes (100 to 599)",
                    ));
                }
                if c.timeout > prober.interval {
                    return Err(invalid(
                        key("timeout"),
                        "must not be longer than prober.interval",
                    ));
                }
                let url = reqwest::Url::parse(&c.url)
                    .ok()
                    .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
                    .ok_or_else(|| {
                        invalid(
                            key("url"),
                            format!("`{}` is not an http:// or https:// URL with a host", c.url),
                        )
                    })?;
                if let Some(addr) = c.address {
                    let ip_literal = url.host_str().is_some_and(|h| {
                        h.trim_start_matches('[')
                            .trim_end_matches(']')
                            .parse::<std::net::IpAddr>()
                            .is_ok()
                    });
                    if ip_literal {
                        return Err(invalid(
                            key("address"),
                            "needs a URL with a host name (it replaces that name's address); with an IP address in the URL, leave it out",
                        ));
                    }
                    if url.port().is_some_and(|p| p != addr.port()) {
                        return Err(invalid(
                            key("address"),
                            format!("its port {} differs from the URL's {}, which would win; leave the port out of the URL", addr.port(), url.port().unwrap_or(0)),
                        ));
                    }
                }
            }
            regions.push(RegionConfig {
                name: r.name,
                endpoint: r.endpoint.map(|u| u.to_string()),
                priority: r.priority,
                digitalocean: r.digitalocean,
                app_checks: r.app_checks,
            });
        }
        regions.sort_by_key(|r| r.priority);

        if self.tables.is_empty() {
            return Err(invalid("table", "at least one [[table]] is required"));
        }
        if self.tables.iter().all(|t| !t.required) {
            return Err(invalid(
                "table",
                "at least one [[table]] must be required (required = true, the default): only required tables vote a region down",
            ));
        }
        let mut table_names = BTreeSet::new();
        let mut tables = Vec::with_capacity(self.tables.len());
        for (i, t) in self.tables.into_iter().enumerate() {
            let key = |field: &str| format!("table[{i}].{field}");
            check_table_name(&key("name"), &t.name)?;
            if !table_names.insert(t.name.clone()) {
                return Err(invalid(
                    key("name"),
                    format!("table `{}` is listed twice", t.name),
                ));
            }
            if t.key_attribute.is_empty() {
                return Err(invalid(key("key_attribute"), "must not be empty"));
            }
            if t.health_key.is_empty() {
                return Err(invalid(key("health_key"), "must not be empty"));
            }
            if t.health_key.starts_with(&prober.canary_prefix) {
                return Err(invalid(
                    key("health_key"),
                    "must not start with prober.canary_prefix (the canary writes would overwrite it)",
                ));
            }
            tables.push(TableConfig {
                name: t.name,
                key_attribute: t.key_attribute,
                health_key: t.health_key,
                required: t.required,
            });
        }

        crate::tls::check_listener(
            "exporter",
            self.exporter.listen,
            self.exporter.tls.as_ref(),
            self.exporter.allow_plain_http,
            "its metrics",
        )
        .map_err(|e| invalid("exporter.listen", e))?;
        let responder = self
            .responder
            .map(|r| r.validate(&regions, secrets))
            .transpose()?;
        Ok(Config {
            prober,
            exporter: self.exporter,
            regions,
            tables,
            responder,
        })
    }
}

impl RawProber {
    fn validate(self) -> Result<ProberConfig, ConfigError> {
        check_label_value("prober.id", &self.id)?;
        let (interval, attempt_timeout, timeout) =
            (self.interval.0, self.attempt_timeout.0, self.timeout.0);
        if interval < Duration::from_millis(100) {
            return Err(invalid("prober.interval", "must be at least 100ms"));
        }
        if timeout > interval {
            return Err(invalid(
                "prober.timeout",
                format!(
                    "{} is longer than prober.interval ({}); a probe must end before the next one is due",
                    fmt_duration(timeout),
                    fmt_duration(interval)
                ),
            ));
        }
        if attempt_timeout > timeout {
            return Err(invalid(
                "prober.attempt_timeout",
                "must not be longer than prober.timeout",
            ));
        }
        if !(1..=10).contains(&self.max_attempts) {
            return Err(invalid("prober.max_attempts", "must be between 1 and 10"));
        }
        let mut probes = ProbeSet {
            read: false,
            write: false,
            replication: false,
        };
        for p in &self.probes {
            let slot = match p {
                ProbeKind::Read => &mut probes.read,
                ProbeKind::Write => &mut probes.write,
                ProbeKind::Replication => &mut probes.replication,
            };
            if *slot {
                return Err(invalid(
                    "prober.probes",
                    format!("probe `{}` is listed twice", p.as_str()),
                ));
            }
            *slot = true;
        }
        if !(probes.read || probes.write) {
            return Err(invalid(
                "prober.probes",
                "needs at least one of read, write",
            ));
        }
        if probes.replication && !probes.write {
            return Err(invalid(
                "prober.probes",
                "replication reads back the write probe's canaries, so it needs write too",
            ));
        }
        if self.canary_prefix.is_empty() || self.canary_prefix.contains('#') {
            return Err(invalid(
                "prober.canary_prefix",
                "must be non-empty and must not contain `#`",
            ));
        }
        Ok(ProberConfig {
            id: self.id,
            interval,
            attempt_timeout,
            timeout,
            max_attempts: self.max_attempts,
            probes,
            canary_prefix: self.canary_prefix,
        })
    }
}

/// Names used as label values and in canary keys: short, printable, no separators we rely on.
pub(crate) fn check_label_value(key: &str, value: &str) -> Result<(), ConfigError> {
    if value.is_empty() || value.len() > 64 {
        return Err(invalid(key, "must be 1 to 64 characters"));
    }
    if !value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(invalid(
            key,
            format!("`{value}` may contain only letters, digits, `-`, `_` and `.`"),
        ));
    }
    Ok(())
}

/// DynamoDB's own rule for table names: 3 to 255 of `[a-zA-Z0-9_.-]`.
fn check_table_name(key: &str, value: &str) -> Result<(), ConfigError> {
    if !(3..=255).contains(&value.len())
        || !value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(invalid(
            key,
            format!("`{value}` is not a DynamoDB table name (3 to 255 of letters, digits, `_`, `-`, `.`)"),
        ));
    }
    Ok(())
}

/// Parses `250ms`, `5s`, `2m`, `1h` for `key` (one number and one unit).
pub fn parse_duration(key: &str, text: &str) -> Result<Duration, ConfigError> {
    types::parse_duration_text(text).map_err(|problem| invalid(key, problem))
}

/// Formats a duration the way the config writes it.
pub fn fmt_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if !ms.is_multiple_of(1000) {
        format!("{ms}ms")
    } else if ms.is_multiple_of(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else {
        format!("{}s", ms / 1000)
    }
}

/// `#[serde(with = "duration_text")]`: a `Duration` read and written as `5s`, `250ms`, ...
pub(crate) mod duration_text {
    use std::time::Duration;

    use serde::Deserialize;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::fmt_duration(*d))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        super::types::Dur::deserialize(d).map(|x| x.0)
    }
}

impl fmt::Display for ProbeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = [
            (self.read, "read"),
            (self.write, "write"),
            (self.replication, "replication"),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, n)| *n)
        .collect();
        f.write_str(&names.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        [prober]
        id = "vantage-a"
        interval = "1s"
        attempt_timeout = "300ms"
        timeout = "800ms"

        [[region]]
        name = "us-west-2"
        priority = 2

        [[region]]
        name = "us-east-1"
        endpoint = "http://127.0.0.1:8000"
        priority = 1

        [[table]]
        name = "wordpress_posts"
    "#;

    fn err_of(text: &str) -> String {
        Config::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn a_good_config_fills_defaults_and_orders_regions_by_priority() {
        let c = Config::parse(GOOD).unwrap();
        assert_eq!(c.regions[0].name, "us-east-1");
        assert_eq!(c.regions[1].name, "us-west-2");
        assert_eq!(c.prober.interval, Duration::from_secs(1));
        assert_eq!(c.prober.max_attempts, 2);
        assert!(c.prober.probes.read && c.prober.probes.write && c.prober.probes.replication);
        assert_eq!(c.tables[0].key_attribute, "pk");
        assert_eq!(c.exporter.listen.to_string(), "127.0.0.1:9464");
    }

    #[test]
    fn an_unknown_key_is_rejected_by_name() {
        let e = err_of(&GOOD.replace("interval = \"1s\"", "interval = \"1s\"\nintervall = 3"));
        assert!(e.contains("intervall"), "{e}");
    }

    #[test]
    fn a_timeout_longer_than_the_interval_is_rejected() {
        let e = err_of(&GOOD.replace("timeout = \"800ms\"", "timeout = \"2s\""));
        assert!(e.contains("`prober.timeout`"), "{e}");
    }

    #[test]
    fn duplicate_priorities_are_rejected() {
        let e = err_of(&GOOD.replace("priority = 2", "priority = 1"));
        assert!(e.contains("region[1].priority"), "{e}");
    }

    /// GOOD with these `[[region.app_check]]` lines under us-east-1.
    fn with_checks(checks: &str) -> String {
        GOOD.replace(
            "        priority = 1\n",
            &format!("        priority = 1\n{checks}\n"),
        )
    }

    #[test]
    fn application_checks_parse_with_their_defaults() {
        let c = Config::parse(&with_checks(
            "[[region.app_check]]\nname = \"lb\"\nurl = \"https://www.example.com/\"\naddress = \"127.0.0.1:8443\"\ntimeout = \"500ms\"\n\
             [[region.app_check]]\nname = \"droplet\"\nurl = \"http://127.0.0.1:8080/healthz\"\nexpect_status = [200, 204]\nbody_contains = \"ok\"\ntimeout = \"1s\"",
        ))
        .unwrap();
        let east = &c.regions[0];
        assert_eq!(east.app_checks.len(), 2);
        assert_eq!(east.app_checks[0].expect_status, vec![200]);
        assert_eq!(
            east.app_checks[0].address,
            Some("127.0.0.1:8443".parse().unwrap())
        );
        assert_eq!(east.app_checks[1].body_contains.as_deref(), Some("ok"));
        // The URL is kept exactly: a trailing slash is part of it.
        assert_eq!(east.app_checks[0].url, "https://www.example.com/");
        assert!(c.regions[1].app_checks.is_empty());
    }

    #[test]
    fn bad_application_checks_are_rejected_by_name() {
        let base = "[[region.app_check]]\nname = \"lb\"\nurl = \"http://127.0.0.1:8080/\"\ntimeout = \"500ms\"";
        for (change, key) in [
            (
                base.replace("500ms", "2s"),
                "region[1].app_check[0].timeout",
            ),
            (
                format!("{base}\nexpect_status = []"),
                "region[1].app_check[0].expect_status",
            ),
            (
                format!("{base}\nexpect_status = [200, 700]"),
                "region[1].app_check[0].expect_status",
            ),
            (format!("{base}\n{base}"), "region[1].app_check[1].name"),
            (
                base.replace("name = \"lb\"", "name = \"\""),
                "region[1].app_check[0].name",
            ),
            (
                base.replace("http://127.0.0.1:8080/", "ftp://127.0.0.1/"),
                "app_check",
            ),
            (format!("{base}\naddress = \"load-balancer\""), "address"),
            (format!("{base}\nhost = \"x\""), "host"),
            // An address with an IP in the URL would be ignored; a port in the URL would win.
            (
                format!("{base}\naddress = \"127.0.0.1:9090\""),
                "region[1].app_check[0].address",
            ),
            (
                base.replace("127.0.0.1:8080", "www.example.com:8080")
                    + "\naddress = \"127.0.0.1:9090\"",
                "region[1].app_check[0].address",
            ),
        ] {
            let e = err_of(&with_checks(&change));
            assert!(e.contains(key), "{change}: {e}");
        }
    }

    #[test]
    fn a_bad_endpoint_is_rejected() {
        let e = err_of(&GOOD.replace("http://127.0.0.1:8000", "127.0.0.1:8000"));
        assert!(e.contains("region[1].endpoint"), "{e}");
    }

    #[test]
    fn a_bad_duration_names_its_key() {
        let e = err_of(&GOOD.replace("\"300ms\"", "\"300\""));
        assert!(
            e.contains("prober.attempt_timeout") && e.contains("unit"),
            "{e}"
        );
        let e = err_of(&GOOD.replace("\"300ms\"", "\"3 fortnights\""));
        assert!(e.contains("prober.attempt_timeout"), "{e}");
    }

    #[test]
    fn replication_without_write_is_rejected() {
        let e = err_of(&GOOD.replace(
            "timeout = \"800ms\"",
            "timeout = \"800ms\"\nprobes = [\"read\", \"replication\"]",
        ));
        assert!(e.contains("prober.probes"), "{e}");
    }

    #[test]
    fn a_label_unsafe_prober_id_is_rejected() {
        let e = err_of(&GOOD.replace("vantage-a", "vantage a\""));
        assert!(e.contains("prober.id") || e.contains("TOML"), "{e}");
        let e = err_of(&GOOD.replace("vantage-a", "vantage#a"));
        assert!(e.contains("prober.id"), "{e}");
    }

    #[test]
    fn durations_round_trip_through_their_text_form() {
        for t in ["250ms", "1s", "90s", "2m", "1h", "1500ms"] {
            let d = parse_duration("k", t).unwrap();
            assert_eq!(parse_duration("k", &fmt_duration(d)).unwrap(), d);
        }
        assert!(parse_duration("k", "0s").is_err());
    }
}

#[cfg(test)]
mod shipped_files {
    use super::Config;

    #[test]
    fn the_shipped_example_config_is_valid() {
        // Secrets are files or environment variables on the target machine; stand in for them.
        let stand_in = |key: &str, _: Option<&str>, _: &str| {
            Ok(crate::secret::Secret::new(format!("stand-in-for-{key}")))
        };
        let c = Config::parse_with_secrets(include_str!("../config/example.toml"), &stand_in)
            .unwrap_or_else(|e| panic!("config/example.toml: {e}"));
        assert!(c.responder.is_some());
    }
}
