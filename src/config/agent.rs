//! The agent's config file (`dynamo-failover agent --config agent.toml`): an `[agent]` section
//! and nothing else, since an application server probes nothing and moves nothing.
//!
//! ```toml
//! [agent]
//! name = "wp-nyc1-01"                     # as listed in the responders' [[responder.agents.agent]]
//! responders = ["https://failover-1.example.com:9465", "https://failover-2.example.com:9465"]
//! token_file = "/etc/dynamo-failover/agent.token"   # or DYNAMO_FAILOVER_AGENT_TOKEN
//! env_file = "/etc/wordpress/dynamodb/dynamodb.env"
//! group = "www-data"
//! reload_commands = [["systemctl", "reload", "php8.2-fpm"]]
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::responder::check_commands;
use super::types::{ClientTls, Dur, EnvName, HttpUrl, ServerTls};
use super::{invalid, ConfigError, SecretSource};
use crate::secret::Secret;

/// The env file line where the agent records the epoch it applied.
pub const EPOCH_KEY: &str = "DYNAMO_FAILOVER_EPOCH";
/// The env file line where it records the lineage of the state whose epoch that is.
pub const LINEAGE_KEY: &str = "DYNAMO_FAILOVER_LINEAGE";

pub const AGENT_TOKEN_ENV: &str = "DYNAMO_FAILOVER_AGENT_TOKEN";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    agent: RawAgent,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawAgent {
    name: String,
    responders: Vec<HttpUrl>,
    token_file: Option<String>,
    listen: SocketAddr,
    tls: Option<ServerTls>,
    allow_plain_http: bool,
    responder_tls: ClientTls,
    poll_wait: Dur,
    request_timeout: Dur,
    env_file: PathBuf,
    env_key: Option<EnvName>,
    mode: String,
    group: Option<String>,
    reload_commands: Vec<Vec<String>>,
    pass_env: Vec<EnvName>,
    command_timeout: Dur,
}

impl Default for RawAgent {
    fn default() -> Self {
        Self {
            name: String::new(),
            responders: Vec::new(),
            token_file: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 9466)),
            tls: None,
            allow_plain_http: false,
            responder_tls: ClientTls::default(),
            poll_wait: Dur::secs(30),
            request_timeout: Dur::secs(5),
            env_file: PathBuf::new(),
            env_key: None,
            mode: "0640".into(),
            group: None,
            reload_commands: Vec::new(),
            pass_env: Vec::new(),
            command_timeout: Dur::secs(30),
        }
    }
}

/// The validated agent configuration.
#[derive(Debug, Clone, Serialize)]
pub struct AgentConfig {
    pub name: String,
    /// Any of them may answer (every responder replica serves the placement).
    pub responders: Vec<String>,
    pub token: Secret,
    /// `/metrics` and `/healthz`.
    pub listen: SocketAddr,
    /// `[agent.tls]`: `/metrics` and `/healthz` over HTTPS.
    pub tls: Option<ServerTls>,
    /// `[agent.responder_tls]`: the CA that signed the responders' certificates (only it is
    /// trusted when set; the system roots otherwise), and this agent's client certificate.
    pub responder_tls: ClientTls,
    /// How long one placement request waits for a change before it is answered anyway.
    #[serde(with = "super::duration_text")]
    pub poll_wait: Duration,
    /// Bound on connecting and on an acknowledgement; a placement request gets `poll_wait` on top.
    #[serde(with = "super::duration_text")]
    pub request_timeout: Duration,
    pub env_file: PathBuf,
    pub env_key: String,
    /// The env file's mode, e.g. 0o640.
    #[serde(serialize_with = "octal")]
    pub mode: u32,
    /// The env file's group (the web server's, so it can read the file), by name and id.
    pub group: Option<(String, u32)>,
    pub reload_commands: Vec<Vec<String>>,
    pub pass_env: Vec<String>,
    #[serde(with = "super::duration_text")]
    pub command_timeout: Duration,
}

fn octal<S: serde::Serializer>(mode: &u32, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{mode:04o}"))
}

impl AgentConfig {
    pub fn load(path: &Path) -> Result<AgentConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse_with_secrets(&text, &Secret::load)
    }

    pub fn parse_with_secrets(
        text: &str,
        secrets: SecretSource<'_>,
    ) -> Result<AgentConfig, ConfigError> {
        let raw: RawFile = super::deserialize(text)?;
        let a = raw.agent;
        super::check_label_value("agent.name", &a.name)?;
        if a.responders.is_empty() {
            return Err(invalid(
                "agent.responders",
                "needs at least one responder URL (list every replica)",
            ));
        }
        let token = secrets("agent.token_file", a.token_file.as_deref(), AGENT_TOKEN_ENV)
            .map_err(ConfigError::Secret)?;
        if a.env_file.as_os_str().is_empty() {
            return Err(invalid("agent.env_file", "is required"));
        }
        let mode = u32::from_str_radix(a.mode.trim_start_matches("0o"), 8)
            .ok()
            .filter(|m| *m <= 0o777)
            .ok_or_else(|| {
                invalid(
                    "agent.mode",
                    format!("`{}` is not a file mode (octal, e.g. \"0640\")", a.mode),
                )
            })?;
        if mode & 0o002 != 0 {
            return Err(invalid(
                "agent.mode",
                "must not let others write the file (it decides where the application's data goes)",
            ));
        }
        let group = match a.group {
            None => None,
            Some(g) => Some((
                g.clone(),
                group_id(&g).ok_or_else(|| {
                    invalid("agent.group", format!("no group `{g}` on this machine"))
                })?,
            )),
        };
        check_commands("agent", &a.reload_commands, &a.pass_env)?;
        crate::tls::check_listener(
            "agent",
            a.listen,
            a.tls.as_ref(),
            a.allow_plain_http,
            "its metrics",
        )
        .map_err(|e| invalid("agent.listen", e))?;
        a.responder_tls
            .check("agent.responder_tls")
            .map_err(|e| invalid("agent.responder_tls", e))?;
        for u in &a.responders {
            a.responder_tls
                .check_url("agent.responder_tls", "the agent's token", u.as_str())
                .map_err(|e| invalid("agent.responders", e))?;
        }
        if a.poll_wait.0 > Duration::from_secs(300) || a.poll_wait.0 < Duration::from_secs(1) {
            return Err(invalid("agent.poll_wait", "must be between 1s and 5m"));
        }
        if let Some(k) = &a.env_key {
            let k = k.as_str();
            if k == EPOCH_KEY || k == LINEAGE_KEY {
                return Err(invalid(
                    "agent.env_key",
                    format!("`{k}` is the line the agent keeps for itself; name the application's variable"),
                ));
            }
        }
        Ok(AgentConfig {
            name: a.name,
            responders: a.responders.iter().map(|u| u.to_string()).collect(),
            token,
            listen: a.listen,
            tls: a.tls,
            responder_tls: a.responder_tls,
            poll_wait: a.poll_wait.0,
            request_timeout: a.request_timeout.0,
            env_file: a.env_file,
            env_key: a
                .env_key
                .map_or_else(|| "DYNAMODB_REGION".to_string(), |k| k.as_str().to_string()),
            mode,
            group,
            reload_commands: a.reload_commands,
            pass_env: a.pass_env.iter().map(|n| n.as_str().to_string()).collect(),
            command_timeout: a.command_timeout.0,
        })
    }

    /// The effective configuration as TOML text (secrets redacted).
    pub fn to_pretty(&self) -> String {
        toml::to_string_pretty(&serde_json::json!({ "agent": self }))
            .unwrap_or_else(|e| format!("<cannot render config: {e}>"))
    }
}

/// A group's id, by name or as a number, from `/etc/group`.
pub fn group_id(group: &str) -> Option<u32> {
    id_in("/etc/group", group)
}

/// A user's (name, id, primary group id), by name or as a number, from `/etc/passwd`.
pub fn user_entry(user: &str) -> Option<(String, u32, u32)> {
    std::fs::read_to_string("/etc/passwd")
        .ok()?
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            let (name, uid, gid) = (f.first()?, f.get(2)?, f.get(3)?);
            (*name == user || *uid == user)
                .then(|| Some((name.to_string(), uid.parse().ok()?, gid.parse().ok()?)))?
        })
}

/// The ids of the groups that list `user` as a member in `/etc/group` (its supplementary
/// groups; the primary one is in `/etc/passwd`).
pub fn supplementary_groups(user: &str) -> Vec<u32> {
    std::fs::read_to_string("/etc/group")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            let members = f.get(3)?;
            members
                .split(',')
                .any(|m| m == user)
                .then(|| f.get(2)?.parse().ok())?
        })
        .collect()
}

/// The third field of the line of `name` in a colon-separated database (`name:x:id:...`).
fn id_in(db: &str, name: &str) -> Option<u32> {
    if let Ok(n) = name.parse::<u32>() {
        return Some(n);
    }
    std::fs::read_to_string(db).ok()?.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next()? == name).then(|| f.nth(1)?.parse().ok())?
    })
}
