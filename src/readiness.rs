//! Readiness: the whole failover path checked between failovers, read-only. One evaluation serves
//! `dynamo-failover preflight` (once, a table and an exit code), the responder (at start and every
//! `responder.readiness.interval`, exported as `failover_readiness{check, target}` and shown by
//! `/v1/state` and `status`), and the demo. Nothing here changes anything: DigitalOcean and
//! DynamoDB are only read, files are only looked at, commands are only looked up, and no
//! notification is sent as a test.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use tokio::time::Instant;

use crate::config::responder::{DigitalOceanConfig, LbMode, StoreConfig};
use crate::config::{Config, RegionConfig};
use crate::probe::{ProbeResult, Target};

/// How long one DigitalOcean or DynamoDB read may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// An agent that has not reached this replica for longer is out of contact (the
/// FailoverAgentSilent limit).
const AGENT_SILENCE: Duration = Duration::from_secs(120);

/// One row: a check of one thing.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Row {
    /// Stable name (`do.load_balancer`, `dynamodb.table`, ...): the metric's `check` label.
    pub check: &'static str,
    /// What was checked (a load balancer id, `us-east-1/wordpress_posts`, a path).
    pub target: String,
    pub ok: bool,
    /// False when the row could not be judged this time (its region is down, a read it needs
    /// was skipped to save the rate-limit budget, the token it needs was rejected): `ok` is then
    /// meaningless, the metric's series is withdrawn and people are told nothing new about it.
    pub checked: bool,
    /// What was seen.
    pub detail: String,
    /// How to fix it (empty when ok).
    pub fix: String,
}

impl Row {
    fn ok(check: &'static str, target: impl Into<String>, detail: impl Into<String>) -> Row {
        Row {
            check,
            target: target.into(),
            ok: true,
            checked: true,
            detail: one_line(detail.into()),
            fix: String::new(),
        }
    }

    /// A row not judged this time, and why.
    fn skipped(check: &'static str, target: impl Into<String>, why: impl Into<String>) -> Row {
        Row {
            check,
            target: target.into(),
            ok: true,
            checked: false,
            detail: one_line(why.into()),
            fix: String::new(),
        }
    }

    fn failed(
        check: &'static str,
        target: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Row {
        Row {
            check,
            target: target.into(),
            ok: false,
            checked: true,
            detail: one_line(detail.into()),
            fix: fix.into(),
        }
    }
}

/// Details go into one table cell and one log field: no line breaks, bounded.
fn one_line(s: String) -> String {
    let mut out: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if out.chars().count() > 300 {
        out = out.chars().take(300).collect::<String>() + "...";
    }
    out
}

/// One evaluation.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Report {
    pub rows: Vec<Row>,
    /// When it finished (Unix ms).
    pub finished_ms: u64,
    pub duration_ms: u64,
    /// DigitalOcean API calls it made.
    pub digitalocean_calls: u32,
}

impl Report {
    pub fn failing(&self) -> impl Iterator<Item = &Row> {
        self.rows.iter().filter(|r| r.checked && !r.ok)
    }

    pub fn all_ok(&self) -> bool {
        self.failing().next().is_none()
    }

    /// The rows as a plain-text table, failing rows first.
    pub fn table(&self) -> String {
        let mut rows: Vec<&Row> = self.rows.iter().collect();
        rows.sort_by_key(|r| (r.ok, !r.checked));
        let w_check = rows.iter().map(|r| r.check.len()).max().unwrap_or(5).max(5);
        let w_target = rows
            .iter()
            .map(|r| r.target.chars().count())
            .max()
            .unwrap_or(6)
            .max(6);
        let mut out = format!(
            "{:<w_check$}  {:<w_target$}  {:<6}  detail\n",
            "check", "target", "result"
        );
        for r in rows {
            out += &format!(
                "{:<w_check$}  {:<w_target$}  {:<6}  {}\n",
                r.check,
                r.target,
                match (r.checked, r.ok) {
                    (false, _) => "-",
                    (true, true) => "ok",
                    (true, false) => "FAILED",
                },
                r.detail
            );
            if r.checked && !r.ok && !r.fix.is_empty() {
                out += &format!(
                    "{:<w_check$}  {:<w_target$}  {:<6}  fix: {}\n",
                    "", "", "", r.fix
                );
            }
        }
        out
    }
}

/// One agent: its name, the epoch it acknowledged and whether it applied it, its last contact
/// (Unix ms).
pub type AgentSeen = (String, Option<(u64, bool)>, Option<u64>);

/// What the responder knows of the agents, as `/v1/state` answers it.
#[derive(Debug, Clone, Default)]
pub struct AgentsView {
    pub placement_epoch: u64,
    /// When the source of this view started hearing from agents (Unix ms): an agent not heard
    /// from yet is not silent before the silence limit has passed since then.
    pub since_ms: Option<u64>,
    /// Whether every agent's contacts reach this view. With replicas, an agent long-polls one
    /// replica at a time and the others never see it: silence is then judged across replicas
    /// (FailoverAgentSilent, from every replica's metrics), and these rows judge only what the
    /// shared state says (the epoch each agent applied).
    pub sees_all_contacts: bool,
    /// name -> (acknowledged epoch and whether it applied, last contact in Unix ms).
    pub agents: Vec<AgentSeen>,
}

impl AgentsView {
    /// Reads the `placement` and `agents` fields of a `/v1/state` answer.
    pub fn from_state(state: &Value) -> AgentsView {
        let agents = state["agents"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(name, a)| {
                        let ack = a["ack"]["epoch"]
                            .as_u64()
                            .map(|e| (e, a["ack"]["ok"].as_bool().unwrap_or(false)));
                        (name.clone(), ack, a["last_seen_ms"].as_u64())
                    })
                    .collect()
            })
            .unwrap_or_default();
        AgentsView {
            placement_epoch: state["placement"]["epoch"].as_u64().unwrap_or(0),
            since_ms: state["started_ms"].as_u64(),
            sees_all_contacts: state["role"] == "single",
            agents,
        }
    }
}

/// Where the agents' view comes from: the responder's own state, or (for `preflight`) a call to
/// the responder, which may fail.
pub enum Agents {
    View(AgentsView),
    Unavailable(String),
}

/// The evaluation's clients, built once.
pub struct Evaluator {
    config: Config,
    http: reqwest::Client,
    ddb: Vec<(RegionConfig, aws_sdk_dynamodb::Client)>,
    shared: aws_config::SdkConfig,
    app: Vec<crate::probe::app::AppCheck>,
}

impl Evaluator {
    /// `who` names the caller in the DigitalOcean requests' User-Agent (`readiness` for the
    /// responder's loop, `preflight` for the command), so the API's audit log tells them apart.
    pub fn new(
        config: &Config,
        shared: &aws_config::SdkConfig,
        who: &str,
    ) -> anyhow::Result<Evaluator> {
        let ddb = config
            .regions
            .iter()
            .map(|r| {
                let c =
                    crate::aws::state_client(shared, &r.name, r.endpoint.as_deref(), CALL_TIMEOUT);
                (r.clone(), c)
            })
            .collect();
        let app = config
            .regions
            .iter()
            .flat_map(|r| {
                r.app_checks
                    .iter()
                    .filter_map(|c| crate::probe::app::AppCheck::new(&r.name, c).ok())
            })
            .collect();
        let timeout = config
            .responder
            .as_ref()
            .and_then(|r| r.digitalocean.as_ref())
            .map(|d| d.request_timeout)
            .unwrap_or(CALL_TIMEOUT);
        // Like every DigitalOcean call, the readiness reads say which replica sent them.
        let replica = match config.responder.as_ref().map(|r| &r.store) {
            Some(StoreConfig::Dynamodb { replica, .. }) => replica.clone(),
            _ => "single".to_string(),
        };
        let mut headers = reqwest::header::HeaderMap::new();
        if let Ok(v) = reqwest::header::HeaderValue::from_str(&replica) {
            headers.insert(crate::adapters::digitalocean::REPLICA_HEADER, v);
        }
        let outbound = config
            .responder
            .as_ref()
            .map(|r| r.outbound_tls.clone())
            .unwrap_or_default();
        let http = crate::tls::client(
            reqwest::Client::builder(),
            &outbound,
            crate::tls::Roots::SystemAndBundle,
        )?
        .default_headers(headers)
        .timeout(timeout)
        .connect_timeout(timeout)
        // Never a URL from an answer: the token goes only where the config says.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(format!(
            "dynamo-failover/{} ({who}, read-only; replica {replica})",
            env!("CARGO_PKG_VERSION")
        ))
        .build()?;
        Ok(Evaluator {
            config: config.clone(),
            http,
            ddb,
            shared: shared.clone(),
            app,
        })
    }

    /// Runs every check once. The DynamoDB and application rows of `down` regions (a region-down
    /// or application-down alert fires for them) are not checked: that outage has its own alerts,
    /// and readiness is about the path to the regions traffic may move to.
    pub async fn evaluate(&self, agents: Agents, down: &[String]) -> Report {
        let started = Instant::now();
        let mut rows = Vec::new();
        let mut calls = 0;
        let r = self.config.responder.as_ref();
        if let Some(d) = r.and_then(|r| r.digitalocean.as_ref()) {
            let mut api = Api {
                http: &self.http,
                d,
                calls: 0,
                remaining: None,
            };
            rows.extend(digitalocean(&mut api, &self.config.regions, down).await);
            calls = api.calls;
        }
        let (aws, ddb, app) = tokio::join!(
            self.credentials(),
            self.dynamodb(down),
            futures_app(&self.app, down)
        );
        rows.push(aws);
        rows.extend(ddb);
        if let Some(StoreConfig::Dynamodb {
            table,
            region,
            endpoint,
            timeout,
            ..
        }) = r.map(|r| &r.store)
        {
            let store = crate::adapters::state_dynamodb::DynamoStore::new(
                crate::aws::state_client(&self.shared, region, endpoint.as_deref(), *timeout),
                table,
                *timeout,
            );
            rows.push(match store.check_table().await {
                Ok(()) => Row::ok("state.table", table.as_str(), format!("in {region}: can hold the replicas' lease")),
                Err(e) => Row::failed(
                    "state.table",
                    table.as_str(),
                    e,
                    "create the state table (see the README's state store section) or fix responder.state",
                ),
            });
        }
        if let Some(a) = r.and_then(|r| r.agents.as_ref()) {
            rows.extend(agent_rows(a, &agents, down));
        }
        if let Some(app_cfg) = r.and_then(|r| r.app.as_ref()) {
            rows.extend(local_app_rows(app_cfg));
        }
        rows.extend(app);
        if let Some(r) = r {
            rows.extend(notify_rows(&r.notify).await);
        }
        Report {
            rows,
            finished_ms: crate::clock::unix_micros() / 1000,
            duration_ms: started.elapsed().as_millis() as u64,
            digitalocean_calls: calls,
        }
    }

    /// Credentials resolve through the standard chain (environment, files, web identity,
    /// container, instance metadata).
    async fn credentials(&self) -> Row {
        use aws_credential_types::provider::ProvideCredentials;
        const FIX: &str = "give this machine AWS credentials: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a profile in ~/.aws, or an instance role";
        let Some(p) = self.shared.credentials_provider() else {
            return Row::failed(
                "aws.credentials",
                "default chain",
                "no credentials provider is configured",
                FIX,
            );
        };
        match tokio::time::timeout(CALL_TIMEOUT, p.provide_credentials()).await {
            Ok(Ok(_)) => Row::ok("aws.credentials", "default chain", "credentials resolved"),
            Ok(Err(e)) => Row::failed(
                "aws.credentials",
                "default chain",
                format!("no credentials: {}", error_chain(&e)),
                FIX,
            ),
            Err(_) => Row::failed(
                "aws.credentials",
                "default chain",
                format!("no credentials within {} s", CALL_TIMEOUT.as_secs()),
                FIX,
            ),
        }
    }

    /// Every table in every region: ACTIVE, a replica in every other region, the health item.
    async fn dynamodb(&self, down: &[String]) -> Vec<Row> {
        let mut set = tokio::task::JoinSet::new();
        let names: Vec<String> = self.config.regions.iter().map(|r| r.name.clone()).collect();
        for (i, (region, client)) in self.ddb.iter().enumerate() {
            for (j, table) in self.config.tables.iter().enumerate() {
                if down.contains(&region.name) {
                    let rows = [
                        "dynamodb.table",
                        "dynamodb.replicas",
                        "dynamodb.health_item",
                    ]
                    .into_iter()
                    .filter(|c| names.len() > 1 || *c != "dynamodb.replicas")
                    .map(|c| not_checked(c, &region.name, &table.name))
                    .collect();
                    set.spawn(std::future::ready(((i, j), rows)));
                    continue;
                }
                let (region, client, table) = (region.name.clone(), client.clone(), table.clone());
                let others: Vec<String> = names.iter().filter(|n| **n != region).cloned().collect();
                set.spawn(async move {
                    let rows = table_rows(&region, &client, &table, &others).await;
                    ((i, j), rows)
                });
            }
        }
        let mut all: Vec<((usize, usize), Vec<Row>)> = set.join_all().await;
        all.sort_by_key(|(k, _)| *k);
        all.into_iter().flat_map(|(_, rows)| rows).collect()
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        let t = x.to_string();
        if !s.contains(&t) {
            s += &format!(": {t}");
        }
        src = x.source();
    }
    s
}

async fn table_rows(
    region: &str,
    client: &aws_sdk_dynamodb::Client,
    table: &crate::config::TableConfig,
    others: &[String],
) -> Vec<Row> {
    let target = format!("{region}/{}", table.name);
    let d = match client.describe_table().table_name(&table.name).send().await {
        Ok(d) => d,
        Err(e) => {
            let kind = crate::probe::classify(&e);
            let rest = |why: &str| {
                let mut rows = Vec::new();
                if !others.is_empty() {
                    rows.push(Row::skipped("dynamodb.replicas", target.clone(), why));
                }
                rows.push(Row::skipped("dynamodb.health_item", target.clone(), why));
                rows
            };
            if !kind.is_misconfiguration() {
                // The region does not answer: its availability is the probes' and the
                // region-down alert's to judge, not a flaw in the failover path.
                let why = format!(
                    "not checked: DynamoDB in {region} does not answer ({}); the probes judge its availability",
                    kind.as_str()
                );
                let mut rows = vec![Row::skipped("dynamodb.table", target.clone(), &why)];
                rows.extend(rest(&why));
                return rows;
            }
            let (detail, fix) = match kind {
                ProbeResult::TableNotFound => (
                    format!("table {} does not exist in {region}", table.name),
                    format!("add {region} as a replica of the global table {}", table.name),
                ),
                ProbeResult::NoCredentials => (
                    "DescribeTable not sent: no AWS credentials on this machine (see aws.credentials)".to_string(),
                    "give this machine AWS credentials (the aws.credentials row says what the chain tried)".to_string(),
                ),
                ProbeResult::AccessDenied => (
                    "DescribeTable refused (access_denied)".to_string(),
                    "allow dynamodb:DescribeTable and dynamodb:GetItem on the table to this machine's credentials".to_string(),
                ),
                k => (
                    format!("DescribeTable refused: {}", k.as_str()),
                    "see the error kinds in the README's thresholds section".to_string(),
                ),
            };
            let mut rows = vec![Row::failed("dynamodb.table", target.clone(), detail, fix)];
            rows.extend(rest("not checked: DescribeTable failed"));
            return rows;
        }
    };
    let Some(t) = d.table else {
        return vec![Row::failed(
            "dynamodb.table",
            target,
            "DescribeTable answered no description",
            format!("check that {region}'s DynamoDB endpoint is DynamoDB"),
        )];
    };
    let status = t
        .table_status
        .as_ref()
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|| "unknown".into());
    let mut rows = vec![if status == "ACTIVE" {
        Row::ok("dynamodb.table", target.clone(), "ACTIVE")
    } else {
        Row::failed(
            "dynamodb.table",
            target.clone(),
            format!("status {status}, not ACTIVE"),
            "wait for the table to become ACTIVE, or find out why it is not (AWS console)",
        )
    }];
    if !others.is_empty() {
        // Only replicas that serve count: CREATING, DELETING, REGION_DISABLED and the like do
        // not take a failover.
        let replicas: Vec<String> = t
            .replicas
            .unwrap_or_default()
            .into_iter()
            .filter(|r| {
                r.replica_status
                    .as_ref()
                    .is_none_or(|s| s.as_str() == "ACTIVE")
            })
            .filter_map(|r| r.region_name)
            .collect();
        let missing: Vec<&String> = others.iter().filter(|o| !replicas.contains(o)).collect();
        rows.push(if replicas.is_empty() {
            Row::failed(
                "dynamodb.replicas",
                target.clone(),
                "not a global table: DescribeTable lists no replicas",
                format!(
                    "make {} a global table with a replica in every configured region",
                    table.name
                ),
            )
        } else if missing.is_empty() {
            Row::ok(
                "dynamodb.replicas",
                target.clone(),
                format!("replicas: {}", replicas.join(", ")),
            )
        } else {
            Row::failed(
                "dynamodb.replicas",
                target.clone(),
                format!(
                    "no replica in {} (replicas: {})",
                    missing
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    replicas.join(", ")
                ),
                format!("add the missing regions as replicas of {}", table.name),
            )
        });
    }
    let probe_target = Target {
        region: region.to_string(),
        client: client.clone(),
        table: table.clone(),
    };
    let r = tokio::time::timeout(CALL_TIMEOUT, crate::probe::read::probe(&probe_target))
        .await
        .unwrap_or(ProbeResult::Timeout);
    rows.push(match r {
        ProbeResult::Success => Row::ok("dynamodb.health_item", target, format!("{} = {} found", table.key_attribute, table.health_key)),
        ProbeResult::MissingItem => Row::failed(
            "dynamodb.health_item",
            target,
            format!("no item with {} = {}", table.key_attribute, table.health_key),
            format!(
                "put the health item back: aws dynamodb put-item --region {region} --table-name {} --item '{{\"{}\": {{\"S\": \"{}\"}}}}'",
                table.name, table.key_attribute, table.health_key
            ),
        ),
        k if !k.is_misconfiguration() => Row::skipped(
            "dynamodb.health_item",
            target,
            format!(
                "not checked: DynamoDB in {region} does not answer ({}); the probes judge its availability",
                k.as_str()
            ),
        ),
        k => Row::failed(
            "dynamodb.health_item",
            target,
            format!("consistent read refused: {}", k.as_str()),
            "see the exporter's dynamodb_probe_total for this region and the runbook's DynamoDBProbeMisconfigured",
        ),
    });
    rows
}

/// A row of a region that is down, left unchecked.
fn not_checked(check: &'static str, region: &str, what: &str) -> Row {
    Row::skipped(
        check,
        format!("{region}/{what}"),
        format!("not checked while {region} is down (its own alerts cover it)"),
    )
}

async fn futures_app(checks: &[crate::probe::app::AppCheck], down: &[String]) -> Vec<Row> {
    let mut set = tokio::task::JoinSet::new();
    for (i, c) in checks.iter().enumerate() {
        let c = c.clone();
        if down.contains(&c.region) {
            set.spawn(std::future::ready((
                i,
                not_checked("app.check", &c.region, &c.config.name),
            )));
            continue;
        }
        set.spawn(async move {
            let (result, detail) = tokio::time::timeout(c.cutoff(), c.probe())
                .await
                .unwrap_or((crate::probe::app::AppResult::Timeout, "no answer".into()));
            let target = format!("{}/{}", c.region, c.config.name);
            let row = if result == crate::probe::app::AppResult::Success {
                Row::ok("app.check", target, detail)
            } else {
                Row::failed(
                    "app.check",
                    target,
                    format!("{}: {detail}", result.as_str()),
                    format!(
                        "the application in {} does not answer {} as expected: traffic cannot move there until it does",
                        c.region, c.config.url
                    ),
                )
            };
            (i, row)
        });
    }
    let mut rows = set.join_all().await;
    rows.sort_by_key(|(i, _)| *i);
    rows.into_iter().map(|(_, r)| r).collect()
}

fn agent_rows(
    a: &crate::config::responder::AgentsConfig,
    view: &Agents,
    down: &[String],
) -> Vec<Row> {
    let view = match view {
        Agents::View(v) => v,
        Agents::Unavailable(why) => {
            return a
                .agents
                .iter()
                .map(|e| {
                    Row::failed(
                        "agents.agent",
                        e.name.as_str(),
                        format!("unknown: {why}"),
                        "start the responder (or pass --url) so its agents can be read",
                    )
                })
                .collect()
        }
    };
    let now = crate::clock::unix_micros() / 1000;
    a.agents
        .iter()
        .map(|e| {
            if down.contains(&e.region) {
                return Row::skipped(
                    "agents.agent",
                    e.name.as_str(),
                    format!("not checked while {} is down (its own alerts cover it)", e.region),
                );
            }
            let seen = view.agents.iter().find(|(n, _, _)| *n == e.name);
            let (ack, last) = seen.map(|(_, a, l)| (*a, *l)).unwrap_or((None, None));
            let silent = view.sees_all_contacts
                && last.is_none_or(|l| now.saturating_sub(l) > AGENT_SILENCE.as_millis() as u64);
            let fix = format!(
                "on {}'s server: systemctl status dynamo-failover-agent; journalctl -u dynamo-failover-agent",
                e.name
            );
            let young = since_ms_ago(view.since_ms, now).is_some_and(|a| a < AGENT_SILENCE.as_millis() as u64);
            match (silent, ack) {
                (true, _) if last.is_none() && young => Row::ok(
                    "agents.agent",
                    e.name.as_str(),
                    "not heard from yet (this responder started less than 2 minutes ago)",
                ),
                (true, _) => Row::failed(
                    "agents.agent",
                    e.name.as_str(),
                    match last {
                        Some(l) => format!("no contact for {} s", now.saturating_sub(l) / 1000),
                        None => "never reached this responder".to_string(),
                    },
                    fix,
                ),
                (false, Some((epoch, true))) if epoch >= view.placement_epoch => Row::ok(
                    "agents.agent",
                    e.name.as_str(),
                    format!("in contact; applied epoch {epoch}"),
                ),
                (false, None) if view.placement_epoch == 0 => Row::ok(
                    "agents.agent",
                    e.name.as_str(),
                    "in contact; no placement to apply yet",
                ),
                (false, Some((epoch, false))) => Row::failed(
                    "agents.agent",
                    e.name.as_str(),
                    format!("failed to apply epoch {epoch}"),
                    fix,
                ),
                (false, ack) => Row::failed(
                    "agents.agent",
                    e.name.as_str(),
                    format!(
                        "applied epoch {}, the placement is epoch {}",
                        ack.map(|(e, _)| e).unwrap_or(0),
                        view.placement_epoch
                    ),
                    fix,
                ),
            }
        })
        .collect()
}

fn since_ms_ago(since: Option<u64>, now: u64) -> Option<u64> {
    since.map(|s| now.saturating_sub(s))
}

/// The responder's own env file: its directory writable by this process, its reload commands
/// found and executable.
fn local_app_rows(app: &crate::config::responder::AppConfig) -> Vec<Row> {
    let mut rows = Vec::new();
    let file = app.env_file.display().to_string();
    // Where the write really lands: through a symlink, in the nearest directory that exists
    // (the write creates the missing ones).
    let real = std::fs::canonicalize(&app.env_file).unwrap_or_else(|_| app.env_file.clone());
    let mut dir = crate::adapters::envfile::dir_of(&real).to_path_buf();
    while !dir.exists() {
        match dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => dir = p.to_path_buf(),
            _ => break,
        }
    }
    rows.push(match writable_dir(&dir) {
        Ok(()) => Row::ok(
            "app.env_file",
            file.clone(),
            format!("{} is writable", dir.display()),
        ),
        Err(e) => Row::failed(
            "app.env_file",
            file.clone(),
            format!("cannot write in {}: {e}", dir.display()),
            "create the directory and give this service write access to it (deploy/README.md)",
        ),
    });
    if app.read_as_user.is_some() || app.read_as_group.is_some() {
        rows.push(match readable_by(&real, app) {
            Ok(detail) => Row::ok("app.env_file_readable", file.clone(), detail),
            Err(e) => Row::failed(
                "app.env_file_readable",
                file.clone(),
                e,
                "give the file to the application's group with mode 0640 (chgrp, chmod); \
                 a rewrite keeps the mode and group",
            ),
        });
    }
    for cmd in &app.reload_commands {
        let Some(prog) = cmd.first() else { continue };
        rows.push(match resolve_executable(prog) {
            Ok(p) => Row::ok(
                "app.reload_command",
                prog.as_str(),
                format!("{} is executable", p.display()),
            ),
            Err(e) => Row::failed(
                "app.reload_command",
                prog.as_str(),
                e,
                "install it, or fix responder.app.reload_commands",
            ),
        });
    }
    rows
}

/// Whether the application, as `read_as_user`/`read_as_group`, may read the env file at `path`.
/// By the mode bits, as the kernel would decide for that user (ACLs aside): a file not written yet
/// will be created 0644, readable by anyone.
fn readable_by(path: &Path, app: &crate::config::responder::AppConfig) -> Result<String, String> {
    use crate::config::agent::{group_id, supplementary_groups, user_entry};
    use std::os::unix::fs::MetadataExt;
    // The user's own id and every group it is in, as the kernel would count them.
    let (uid, mut gids) = match &app.read_as_user {
        Some(u) => {
            let (name, uid, primary) =
                user_entry(u).ok_or_else(|| format!("no user `{u}` on this machine"))?;
            let mut gids = supplementary_groups(&name);
            gids.push(primary);
            (Some(uid), gids)
        }
        None => (None, Vec::new()),
    };
    if let Some(g) = &app.read_as_group {
        gids.push(group_id(g).ok_or_else(|| format!("no group `{g}` on this machine"))?);
    }
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok("not written yet; the first write creates it with mode 0644".into())
        }
        Err(e) => return Err(e.to_string()),
    };
    let mode = meta.mode() & 0o777;
    // Root reads anything; otherwise the owner's bits apply to the owner alone, then the group's
    // to its members, then the rest.
    let bits = if uid == Some(0) {
        0o4
    } else if uid == Some(meta.uid()) {
        mode >> 6
    } else if gids.contains(&meta.gid()) {
        mode >> 3
    } else {
        mode
    };
    let who = match (&app.read_as_user, &app.read_as_group) {
        (Some(u), Some(g)) => format!("{u}:{g}"),
        (Some(u), None) => u.clone(),
        (None, Some(g)) => format!(":{g}"),
        (None, None) => String::new(),
    };
    if bits & 0o4 != 0 {
        Ok(format!(
            "readable by {who} (mode {mode:04o}, owner {} group {})",
            meta.uid(),
            meta.gid()
        ))
    } else {
        Err(format!(
            "{who} cannot read it (mode {mode:04o}, owner {} group {})",
            meta.uid(),
            meta.gid()
        ))
    }
}

/// Whether this process may create files in `dir` (as the env file's atomic write does).
fn writable_dir(dir: &Path) -> Result<(), String> {
    let meta = std::fs::metadata(dir).map_err(|e| e.to_string())?;
    if !meta.is_dir() {
        return Err("not a directory".into());
    }
    // Ask the kernel, which knows about users, groups, ACLs and read-only mounts.
    let c =
        std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).map_err(|e| e.to_string())?;
    // SAFETY: faccessat(2) reads a NUL-terminated path and has no other effect. AT_EACCESS asks
    // with the effective ids, the ones the write will run with.
    let rc = unsafe {
        libc::faccessat(
            libc::AT_FDCWD,
            c.as_ptr(),
            libc::W_OK | libc::X_OK,
            libc::AT_EACCESS,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error().to_string())
    }
}

/// `prog` as the reload would run it: a path, or a name looked up in PATH.
fn resolve_executable(prog: &str) -> Result<std::path::PathBuf, String> {
    let exec = |p: &Path| {
        std::fs::metadata(p)
            .ok()
            .filter(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .is_some()
    };
    if prog.contains('/') {
        let p = Path::new(prog);
        return if exec(p) {
            Ok(p.to_path_buf())
        } else {
            Err(format!("{prog} is missing or not executable"))
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(prog))
        .find(|p| exec(p))
        .ok_or_else(|| format!("{prog} is not found in PATH"))
}

/// Each channel's URL is well formed and its host resolves; nothing is sent.
async fn notify_rows(n: &crate::config::responder::NotifyConfig) -> Vec<Row> {
    let mut rows = Vec::new();
    let channels = [
        (
            "slack",
            n.slack_webhook_url.as_ref().map(|s| s.expose().to_string()),
        ),
        ("webhook", n.webhook_url.clone()),
    ];
    for (name, url) in channels {
        let Some(url) = url else { continue };
        rows.push(match resolves(&url).await {
            Ok(host) => Row::ok("notify.url", name, format!("{host} resolves")),
            Err(e) => Row::failed(
                "notify.url",
                name,
                e,
                "fix the channel's URL in responder.notify (for Slack, its file)",
            ),
        });
    }
    rows
}

/// The URL's host, once it resolved. Errors never repeat the URL (a Slack URL is a secret).
async fn resolves(url: &str) -> Result<String, String> {
    let u = reqwest::Url::parse(url).map_err(|e| format!("not a valid URL: {e}"))?;
    let host = u.host_str().ok_or("the URL has no host")?.to_string();
    let port = u.port_or_known_default().unwrap_or(443);
    let name = host.trim_matches(|c| c == '[' || c == ']').to_string();
    let lookup = tokio::net::lookup_host((name, port));
    match tokio::time::timeout(CALL_TIMEOUT, lookup).await {
        Ok(Ok(mut addrs)) => match addrs.next() {
            Some(_) => Ok(host),
            None => Err(format!("{host} resolves to no address")),
        },
        Ok(Err(e)) => Err(format!("{host} does not resolve: {e}")),
        Err(_) => Err(format!("{host}: no answer from the resolver")),
    }
}

/// DigitalOcean reads, counted, stopping when the rate-limit budget gets low.
struct Api<'a> {
    http: &'a reqwest::Client,
    d: &'a DigitalOceanConfig,
    calls: u32,
    /// `ratelimit-remaining` of the last answer.
    remaining: Option<u64>,
}

/// Calls a whole plan makes without retries: a `droplets` load balancer GET, POST, DELETE and a
/// verifying GET; `tag` and `global` GET, PUT and GET; a DNS record GET, PATCH and GET.
pub fn plan_calls(d: &DigitalOceanConfig) -> u64 {
    let lbs: u64 = d
        .load_balancers
        .iter()
        .map(|l| match l.mode {
            LbMode::Droplets => 4,
            LbMode::Tag | LbMode::Global => 3,
        })
        .sum();
    lbs + 3 * d.dns_records.len() as u64
}

enum Got {
    Found(Value),
    Missing,
    /// 401 (the token is not accepted) or 403 (it lacks a scope), with what was said.
    Denied(u16, String),
    Failed(String),
}

/// Pages a list is read in at most: 2,000 objects at the API's largest page.
const MAX_PAGES: usize = 10;

impl Api<'_> {
    /// Every object of a paginated list (`key` in each page), 200 per page. The next page is
    /// asked of our own base URL by number, never by following a URL from the answer, so the
    /// token only ever goes where the config says.
    async fn list(&mut self, path: &str, key: &str) -> Got {
        let mut all = Vec::new();
        for page in 1..=MAX_PAGES {
            if page > 1 && self.low() {
                return Got::Failed(format!(
                    "GET {path}: stopped at page {page} to keep the rate-limit budget for failovers"
                ));
            }
            match self.get(&format!("{path}?page={page}&per_page=200")).await {
                Got::Found(b) => {
                    let Some(items) = b[key].as_array() else {
                        return Got::Failed(format!("GET {path}: the answer has no `{key}` list"));
                    };
                    all.extend(items.iter().cloned());
                    if b["links"]["pages"]["next"].is_null() {
                        return Got::Found(Value::Array(all));
                    }
                }
                other => return other,
            }
        }
        Got::Failed(format!("GET {path}: more than {MAX_PAGES} pages"))
    }

    /// Keeps this much of the budget for real failovers: two whole plans.
    fn reserve(&self) -> u64 {
        2 * plan_calls(self.d)
    }

    fn low(&self) -> bool {
        self.remaining.is_some_and(|r| r <= self.reserve())
    }

    async fn get(&mut self, path: &str) -> Got {
        self.calls += 1;
        let resp = self
            .http
            .get(format!("{}{path}", self.d.api_url))
            .bearer_auth(self.d.token.expose())
            .send()
            .await;
        let resp = match resp {
            Ok(r) => r,
            Err(e) if e.is_timeout() => {
                return Got::Failed(format!("GET {path}: no answer in time"))
            }
            Err(e) => return Got::Failed(format!("GET {path}: {}", error_chain(&e.without_url()))),
        };
        if let Some(r) = resp
            .headers()
            .get("ratelimit-remaining")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
        {
            self.remaining = Some(r);
        }
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        match status.as_u16() {
            200..=299 => Got::Found(body),
            404 => Got::Missing,
            s @ (401 | 403) => Got::Denied(
                s,
                format!("GET {path}: {s} {}", body["message"].as_str().unwrap_or("")),
            ),
            s => Got::Failed(format!(
                "GET {path}: {s} {}",
                body["message"].as_str().unwrap_or("")
            )),
        }
    }
}

/// The object of a list answer that `is` it: Found, Missing, or the list's own failure.
fn find(list: &Got, is: impl Fn(&Value) -> bool) -> Got {
    match list {
        Got::Found(Value::Array(all)) => all
            .iter()
            .find(|o| is(o))
            .map_or(Got::Missing, |o| Got::Found(o.clone())),
        Got::Found(_) => Got::Failed("the list answer is not a list".into()),
        Got::Missing => Got::Missing,
        Got::Denied(s, e) => Got::Denied(*s, e.clone()),
        Got::Failed(e) => Got::Failed(e.clone()),
    }
}

/// The row of a read that failed: a denied read names the scope the token lacks.
fn read_failed(check: &'static str, target: String, got: Got, scope: &str) -> Row {
    match got {
        Got::Denied(_, e) => Row::failed(
            check,
            target,
            format!("the token may not read this ({e})"),
            format!("give the token the {scope}:read scope (a custom-scoped token needs it)"),
        ),
        Got::Failed(e) => Row::failed(check, target, e, "check the DigitalOcean API's status"),
        Got::Found(_) | Got::Missing => unreachable!("only failures come here"),
    }
}

async fn digitalocean(api: &mut Api<'_>, regions: &[RegionConfig], down: &[String]) -> Vec<Row> {
    let mut rows = Vec::new();
    // Every configured object, so that a row skipped below still has its place.
    let lbs = api.d.load_balancers.clone();
    let records = api.d.dns_records.clone();
    let mut droplets: Vec<(u64, &RegionConfig)> = Vec::new();
    for r in regions {
        for id in &r.digitalocean.droplet_ids {
            droplets.push((*id, r));
        }
    }
    // A tag-mode load balancer pointed at a region finds that region's droplets by its tag.
    let tags: Vec<(&str, &RegionConfig)> = if lbs.iter().any(|l| l.mode == LbMode::Tag) {
        regions
            .iter()
            .filter_map(|r| r.digitalocean.tag.as_deref().map(|t| (t, r)))
            .collect()
    } else {
        Vec::new()
    };
    let skip_all = |rows: &mut Vec<Row>, why: &str| {
        for lb in &lbs {
            rows.push(Row::skipped("do.load_balancer", lb.id.clone(), why));
        }
        for (id, _) in &droplets {
            rows.push(Row::skipped("do.droplet", id.to_string(), why));
        }
        for (tag, _) in &tags {
            rows.push(Row::skipped("do.droplet_tag", *tag, why));
        }
        for rec in &records {
            rows.push(Row::skipped(
                "do.dns_record",
                format!("{}/{}", rec.domain, rec.record_id),
                why,
            ));
        }
    };
    match api.get("/v2/account").await {
        Got::Found(b) => rows.push(Row::ok(
            "do.token",
            "account",
            format!(
                "accepted (account status {})",
                b["account"]["status"].as_str().unwrap_or("unknown")
            ),
        )),
        Got::Missing => rows.push(Row::failed(
            "do.token",
            "account",
            "GET /v2/account: 404",
            "check responder.digitalocean.api_url",
        )),
        Got::Denied(401, e) => {
            rows.push(Row::failed(
                "do.token",
                "account",
                format!("the token is not accepted ({e})"),
                "create a DigitalOcean token with read and write scope and put it in responder.digitalocean.token_file",
            ));
            // Every other read would be refused the same way.
            skip_all(&mut rows, "not checked: the token is not accepted");
            rows.push(Row::skipped(
                "do.rate_limit",
                "account",
                "not checked: the token is not accepted",
            ));
            return rows;
        }
        Got::Denied(_, e) => rows.push(Row::failed(
            "do.token",
            "account",
            format!("the token is accepted but may not read the account ({e})"),
            "give the token the account:read scope (a custom-scoped token needs it)",
        )),
        Got::Failed(e) => rows.push(Row::failed(
            "do.token",
            "account",
            e,
            "check that the DigitalOcean API is reachable from here",
        )),
    }
    // One list per kind (and per DNS domain), whatever the number of objects: four or so calls
    // an evaluation.
    const LOW: &str = "not checked: the rate-limit budget is kept for failovers";
    let mut skipped = 0;
    if !lbs.is_empty() {
        if api.low() {
            skipped += lbs.len();
            for lb in &lbs {
                rows.push(Row::skipped("do.load_balancer", lb.id.clone(), LOW));
            }
        } else {
            let got = api.list("/v2/load_balancers", "load_balancers").await;
            for lb in &lbs {
                rows.push(
                    match find(&got, |o| o["id"].as_str() == Some(lb.id.as_str())) {
                        g @ (Got::Denied(..) | Got::Failed(_)) => {
                            read_failed("do.load_balancer", lb.id.clone(), g, "load_balancer")
                        }
                        g => load_balancer_row(lb, g, regions),
                    },
                );
            }
        }
    }
    if !droplets.is_empty() || !tags.is_empty() {
        if api.low() {
            skipped += droplets.len() + tags.len();
            for (id, _) in &droplets {
                rows.push(Row::skipped("do.droplet", id.to_string(), LOW));
            }
            for (tag, _) in &tags {
                rows.push(Row::skipped("do.droplet_tag", *tag, LOW));
            }
        } else {
            let got = api.list("/v2/droplets", "droplets").await;
            for (id, region) in &droplets {
                if down.contains(&region.name) {
                    rows.push(not_checked("do.droplet", &region.name, &id.to_string()));
                    continue;
                }
                rows.push(match find(&got, |o| o["id"].as_u64() == Some(*id)) {
                    g @ (Got::Denied(..) | Got::Failed(_)) => {
                        read_failed("do.droplet", id.to_string(), g, "droplet")
                    }
                    g => droplet_row(*id, region, g),
                });
            }
            for (tag, region) in &tags {
                if down.contains(&region.name) {
                    rows.push(not_checked("do.droplet_tag", &region.name, tag));
                    continue;
                }
                rows.push(tag_row(tag, region, &got));
            }
        }
    }
    let mut domains: Vec<&str> = records.iter().map(|r| r.domain.as_str()).collect();
    domains.sort_unstable();
    domains.dedup();
    for domain in domains {
        let mine: Vec<_> = records.iter().filter(|r| r.domain == domain).collect();
        if api.low() {
            skipped += mine.len();
            for rec in mine {
                rows.push(Row::skipped(
                    "do.dns_record",
                    format!("{}/{}", rec.domain, rec.record_id),
                    LOW,
                ));
            }
            continue;
        }
        let got = api
            .list(&format!("/v2/domains/{domain}/records"), "domain_records")
            .await;
        for rec in mine {
            let target = format!("{}/{}", rec.domain, rec.record_id);
            let want = rec.kind.as_str();
            rows.push(match find(&got, |o| o["id"].as_u64() == Some(rec.record_id)) {
                Got::Found(r) => {
                    let kind = r["type"].as_str().unwrap_or("?");
                    if kind == want {
                        Row::ok("do.dns_record", target, format!("{kind} record {} -> {}", r["name"].as_str().unwrap_or("?"), r["data"].as_str().unwrap_or("?")))
                    } else {
                        Row::failed("do.dns_record", target, format!("the record is {kind}, the config says {want}"), "fix the record's type in responder.digitalocean.dns_records")
                    }
                }
                Got::Missing => Row::failed("do.dns_record", target, format!("no such record in {domain}"), "find the record's new id (GET /v2/domains/{domain}/records) and put it in responder.digitalocean.dns_records"),
                g => read_failed("do.dns_record", target, g, "domain"),
            });
        }
    }
    let need = plan_calls(api.d);
    rows.push(match api.remaining {
        Some(r) if skipped > 0 => Row::failed(
            "do.rate_limit",
            "account",
            format!(
                "ratelimit-remaining {r}, at most {} kept for failovers: {skipped} checks skipped",
                api.reserve()
            ),
            "find what else spends this token's budget (250/minute, 5,000/hour)",
        ),
        Some(r) if r < need => Row::failed(
            "do.rate_limit",
            "account",
            format!("ratelimit-remaining {r}; a whole plan needs {need}"),
            "find what else spends this token's budget (250/minute, 5,000/hour)",
        ),
        Some(r) => Row::ok(
            "do.rate_limit",
            "account",
            format!("ratelimit-remaining {r}; a whole plan needs {need}"),
        ),
        None => Row::ok(
            "do.rate_limit",
            "account",
            format!("no rate-limit headers seen; a whole plan needs {need}"),
        ),
    });
    rows
}

fn load_balancer_row(
    lb: &crate::config::responder::LoadBalancerConfig,
    got: Got,
    regions: &[RegionConfig],
) -> Row {
    const CHECK: &str = "do.load_balancer";
    let target = lb.id.clone();
    let b = match got {
        Got::Found(b) => b,
        Got::Missing => {
            return Row::failed(CHECK, target, "no such load balancer", "it was deleted or recreated under a new id: put the current id in responder.digitalocean.load_balancers")
        }
        g => return read_failed(CHECK, target, g, "load_balancer"),
    };
    let lb_json = &b;
    let kind = lb_json["type"].as_str().unwrap_or("REGIONAL");
    let name = lb_json["name"].as_str().unwrap_or("?");
    match lb.mode {
        LbMode::Global => {
            if kind != "GLOBAL" {
                return Row::failed(
                    CHECK,
                    target,
                    format!("{name} is {kind}; mode `global` needs a GLOBAL load balancer"),
                    "fix the load balancer's mode in the config",
                );
            }
            let prios = lb_json["glb_settings"]["region_priorities"].as_object();
            let missing: Vec<&str> = regions
                .iter()
                .filter_map(|r| r.digitalocean.slug.as_deref())
                .filter(|s| prios.is_none_or(|p| !p.contains_key(*s)))
                .collect();
            if missing.is_empty() {
                Row::ok(
                    CHECK,
                    target,
                    format!("{name}: GLOBAL, every region among its priorities"),
                )
            } else {
                Row::failed(
                    CHECK,
                    target,
                    format!(
                        "{name}: {} not among its region priorities",
                        missing.join(", ")
                    ),
                    "add the regions to glb_settings.region_priorities in DigitalOcean",
                )
            }
        }
        LbMode::Tag => {
            if kind == "GLOBAL" {
                return Row::failed(
                    CHECK,
                    target,
                    format!("{name} is GLOBAL; mode `tag` needs a regional load balancer"),
                    "fix the load balancer's mode in the config",
                );
            }
            if lb_json["tag"].as_str().is_some_and(|t| !t.is_empty()) {
                Row::ok(
                    CHECK,
                    target,
                    format!(
                        "{name}: targets tag {}",
                        lb_json["tag"].as_str().unwrap_or("")
                    ),
                )
            } else {
                Row::failed(
                    CHECK,
                    target,
                    format!("{name} targets droplet ids, not a tag"),
                    "set the mode to `droplets`, or make the load balancer target a tag",
                )
            }
        }
        LbMode::Droplets => {
            if kind == "GLOBAL" {
                return Row::failed(
                    CHECK,
                    target,
                    format!("{name} is GLOBAL; mode `droplets` needs a regional load balancer"),
                    "fix the load balancer's mode in the config",
                );
            }
            if lb_json["tag"].as_str().is_some_and(|t| !t.is_empty()) {
                Row::failed(
                    CHECK,
                    target,
                    format!(
                        "{name} targets tag {}, not droplet ids",
                        lb_json["tag"].as_str().unwrap_or("")
                    ),
                    "set the mode to `tag`, or make the load balancer target droplet ids",
                )
            } else {
                Row::ok(CHECK, target, format!("{name}: targets droplet ids"))
            }
        }
    }
}

/// A region's droplet tag: a tag-mode load balancer pointed at the region serves the active
/// droplets carrying it, in the region's DigitalOcean region.
fn tag_row(tag: &str, region: &RegionConfig, list: &Got) -> Row {
    const CHECK: &str = "do.droplet_tag";
    let all = match list {
        Got::Found(Value::Array(all)) => all,
        Got::Found(_) | Got::Missing => {
            return Row::failed(
                CHECK,
                tag,
                "the droplets list could not be read",
                "check the DigitalOcean API's status",
            )
        }
        Got::Denied(s, e) => {
            return read_failed(
                CHECK,
                tag.to_string(),
                Got::Denied(*s, e.clone()),
                "droplet",
            )
        }
        Got::Failed(e) => {
            return read_failed(CHECK, tag.to_string(), Got::Failed(e.clone()), "droplet")
        }
    };
    let serving = all
        .iter()
        .filter(|d| {
            d["tags"]
                .as_array()
                .is_some_and(|t| t.iter().any(|x| x == tag))
                && d["status"] == "active"
                && region
                    .digitalocean
                    .slug
                    .as_deref()
                    .is_none_or(|s| d["region"]["slug"] == s)
        })
        .count();
    if serving > 0 {
        Row::ok(
            CHECK,
            tag,
            format!("{serving} active droplet(s) of {} carry it", region.name),
        )
    } else {
        Row::failed(
            CHECK,
            tag,
            format!(
                "no active droplet{} carries it: a load balancer pointed at {} would serve nothing",
                region
                    .digitalocean
                    .slug
                    .as_deref()
                    .map(|s| format!(" in {s}"))
                    .unwrap_or_default(),
                region.name
            ),
            format!(
                "tag {}'s droplets with {tag} (droplets recreated without their tag?)",
                region.name
            ),
        )
    }
}

fn droplet_row(id: u64, region: &RegionConfig, got: Got) -> Row {
    const CHECK: &str = "do.droplet";
    let target = id.to_string();
    let b = match got {
        Got::Found(b) => b,
        Got::Missing => {
            return Row::failed(
                CHECK,
                target,
                format!("no such droplet (listed for {})", region.name),
                format!(
                    "put {}'s current droplet ids in its [region.digitalocean] droplet_ids",
                    region.name
                ),
            )
        }
        g => return read_failed(CHECK, target, g, "droplet"),
    };
    let d = &b;
    let status = d["status"].as_str().unwrap_or("unknown");
    let slug = d["region"]["slug"].as_str().unwrap_or("unknown");
    if status != "active" {
        return Row::failed(
            CHECK,
            target,
            format!("status {status}, not active"),
            "power the droplet on, or replace it in the config",
        );
    }
    match region.digitalocean.slug.as_deref() {
        Some(want) if want != slug => Row::failed(
            CHECK,
            target,
            format!("in {slug}, but listed for {} ({want})", region.name),
            format!(
                "move the id to the region it runs in, or fix {}'s slug",
                region.name
            ),
        ),
        _ => Row::ok(CHECK, target, format!("active in {slug}")),
    }
}

/// `failover_readiness{check, target}` and the evaluation's time and duration.
#[derive(Clone)]
pub struct ReadinessMetrics {
    rows: prometheus::IntGaugeVec,
    last: prometheus::Gauge,
    duration: prometheus::Gauge,
}

impl ReadinessMetrics {
    pub fn register(registry: &prometheus::Registry) -> prometheus::Result<Self> {
        let rows = prometheus::IntGaugeVec::new(
            prometheus::Opts::new(
                "failover_readiness",
                "1 if this readiness check of the failover path passed at the last evaluation, 0 if it failed.",
            ),
            &["check", "target"],
        )?;
        let last = prometheus::Gauge::new(
            "failover_readiness_last_evaluation_timestamp_seconds",
            "Unix time the last readiness evaluation finished (0 before the first).",
        )?;
        let duration = prometheus::Gauge::new(
            "failover_readiness_evaluation_duration_seconds",
            "How long the last readiness evaluation took.",
        )?;
        registry.register(Box::new(rows.clone()))?;
        registry.register(Box::new(last.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        Ok(Self {
            rows,
            last,
            duration,
        })
    }

    /// Sets every judged row of `report` and withdraws the others. The checks follow the config,
    /// which does not change while the process runs, so no other row ever goes away.
    pub fn record(&self, report: &Report) {
        for r in &report.rows {
            let labels = [r.check, r.target.as_str()];
            if r.checked {
                self.rows.with_label_values(&labels).set(i64::from(r.ok));
            } else {
                // Not judged this time: no value, rather than a stale one that would keep an
                // alert firing (or quiet) about something nobody looked at.
                let _ = self.rows.remove_label_values(&labels);
            }
        }
        self.last.set(report.finished_ms as f64 / 1000.0);
        self.duration.set(report.duration_ms as f64 / 1000.0);
    }
}

/// What people have been told, so that each change is told once. A row counts as broken once it
/// failed at two evaluations in a row (one failed read is not worth a message; the alert's window
/// asks the same), and as repaired once it passes after people were told it was broken.
#[derive(Default)]
pub struct Changes {
    previous: Option<Report>,
    told: std::collections::BTreeSet<(&'static str, String)>,
}

impl Changes {
    /// Takes the latest evaluation; answers the message to send, if anything changed. Only the
    /// replica that tells people (`tells`: the acting one) remembers what it told: another one
    /// that takes over tells what is still broken, once.
    pub fn update(&mut self, now: &Report, tells: bool) -> Option<crate::ports::Message> {
        let key = |r: &Row| (r.check, r.target.clone());
        let before: std::collections::BTreeSet<_> = self
            .previous
            .as_ref()
            .map(|b| b.failing().map(key).collect())
            .unwrap_or_default();
        self.previous = Some(now.clone());
        if !tells {
            return None;
        }
        let failing: std::collections::BTreeSet<_> = now.failing().map(key).collect();
        // Rows not judged this time keep what people were told about them.
        let unjudged: std::collections::BTreeSet<_> =
            now.rows.iter().filter(|r| !r.checked).map(key).collect();
        let broken: Vec<&Row> = now
            .failing()
            .filter(|r| before.contains(&key(r)) && !self.told.contains(&key(r)))
            .collect();
        let repaired: Vec<String> = self
            .told
            .iter()
            .filter(|k| !failing.contains(*k) && !unjudged.contains(*k))
            .map(|(c, t)| format!("{c} {t}"))
            .collect();
        self.told
            .retain(|k| failing.contains(k) || unjudged.contains(k));
        self.told.extend(broken.iter().map(|r| key(r)));
        if broken.is_empty() && repaired.is_empty() {
            return None;
        }
        let still = self.told.len();
        let title = if !broken.is_empty() {
            format!("Failover path broken: {still} check(s) failing")
        } else if still == 0 {
            "Failover path repaired: every readiness check passes".to_string()
        } else {
            format!("Failover path partly repaired: {still} check(s) still failing")
        };
        let mut text = String::new();
        for r in &broken {
            text += &format!(
                "Broken: {} {}: {}\n  Fix: {}\n",
                r.check, r.target, r.detail, r.fix
            );
        }
        for r in &repaired {
            text += &format!("Repaired: {r}\n");
        }
        if still > 0 {
            text += "A failover now would fail or go wrong; `dynamo-failover preflight` shows every check.\n";
        }
        Some(crate::ports::Message {
            title,
            text,
            fields: serde_json::json!({
                "kind": "readiness",
                "broken": broken.iter().map(|r| serde_json::json!({"check": r.check, "target": r.target, "detail": r.detail, "fix": r.fix})).collect::<Vec<_>>(),
                "repaired": repaired,
            }),
        })
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn the_env_file_is_judged_readable_as_the_kernel_would_for_that_user() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("app.env");
        std::fs::write(&file, "DYNAMODB_REGION=us-east-1\n").unwrap();
        let chmod =
            |m| std::fs::set_permissions(&file, std::fs::Permissions::from_mode(m)).unwrap();
        let app = |user: Option<&str>, group: Option<&str>| crate::config::responder::AppConfig {
            env_file: file.clone(),
            env_key: crate::config::types::EnvName::parse("DYNAMODB_REGION").unwrap(),
            reload_commands: Vec::new(),
            pass_env: Vec::new(),
            command_timeout: std::time::Duration::from_secs(1),
            read_as_user: user.map(str::to_string),
            read_as_group: group.map(str::to_string),
        };
        // Root reads anything.
        chmod(0o000);
        assert!(readable_by(&file, &app(Some("root"), None)).is_ok());
        // nobody owns nothing here and is in none of the file's groups: the others' bits.
        chmod(0o640);
        let e = readable_by(&file, &app(Some("nobody"), None)).unwrap_err();
        assert!(e.contains("nobody cannot read it (mode 0640"), "{e}");
        chmod(0o644);
        assert!(readable_by(&file, &app(Some("nobody"), None)).is_ok());
        // The file's own group (this process's) given as the group: its bits.
        use std::os::unix::fs::MetadataExt;
        let gid = std::fs::metadata(&file).unwrap().gid().to_string();
        chmod(0o640);
        assert!(readable_by(&file, &app(None, Some(&gid))).is_ok());
        chmod(0o600);
        assert!(readable_by(&file, &app(None, Some(&gid))).is_err());
        // A user that does not exist is said as such.
        let e = readable_by(&file, &app(Some("no-such-user-here"), None)).unwrap_err();
        assert!(e.contains("no user `no-such-user-here`"), "{e}");
    }
    use super::*;

    impl Changes {
        fn update_t(&mut self, r: &Report) -> Option<crate::ports::Message> {
            self.update(r, true)
        }
    }

    fn report(failing: &[(&'static str, &str)]) -> Report {
        let mut rows = vec![Row::ok("do.token", "account", "accepted")];
        rows.extend(
            failing
                .iter()
                .map(|(c, t)| Row::failed(c, *t, "broken", "fix it")),
        );
        Report {
            rows,
            ..Report::default()
        }
    }

    #[test]
    fn people_hear_of_a_row_once_it_failed_twice_in_a_row_and_once_when_it_passes_again() {
        let mut c = Changes::default();
        let lb = [("do.load_balancer", "lb-1")];
        assert!(c.update_t(&report(&[])).is_none());
        // One failed evaluation is not worth a message.
        assert!(c.update_t(&report(&lb)).is_none());
        assert!(c.update_t(&report(&[])).is_none());
        assert!(c.update_t(&report(&lb)).is_none());
        let m = c.update_t(&report(&lb)).expect("failed twice in a row");
        assert!(m.title.contains("broken"), "{}", m.title);
        assert!(m.text.contains("do.load_balancer lb-1: broken") && m.text.contains("fix it"));
        // Not on every evaluation.
        assert!(c.update_t(&report(&lb)).is_none());
        assert!(c.update_t(&report(&lb)).is_none());
        let m = c.update_t(&report(&[])).expect("repaired");
        assert!(m.title.contains("repaired") && m.text.contains("do.load_balancer lb-1"));
        assert!(c.update_t(&report(&[])).is_none());
    }

    #[test]
    fn a_second_broken_row_is_told_with_how_many_still_fail() {
        let mut c = Changes::default();
        let one = [("do.load_balancer", "lb-1")];
        let two = [("do.load_balancer", "lb-1"), ("do.droplet", "7")];
        c.update_t(&report(&one));
        assert!(c.update_t(&report(&one)).is_some());
        assert!(c.update_t(&report(&two)).is_none());
        let m = c.update_t(&report(&two)).expect("the second row, twice");
        assert!(m.title.contains("2 check(s)"), "{}", m.title);
        assert!(m.text.contains("do.droplet 7") && !m.text.contains("Broken: do.load_balancer"));
        let m = c
            .update(&report(&[("do.droplet", "7")]), true)
            .expect("one repaired");
        assert!(m.title.contains("partly repaired"), "{}", m.title);
    }

    #[test]
    fn a_row_not_judged_keeps_what_people_were_told_and_a_follower_tells_nothing() {
        let mut c = Changes::default();
        let lb = [("do.load_balancer", "lb-1")];
        c.update_t(&report(&lb));
        assert!(c.update_t(&report(&lb)).is_some());
        // The row is skipped (its read was saved for the budget): neither repaired nor broken.
        let mut skipped = report(&[]);
        skipped
            .rows
            .push(Row::skipped("do.load_balancer", "lb-1", "not checked"));
        assert!(c.update_t(&skipped).is_none());
        assert!(c.update_t(&report(&lb)).is_none(), "still told");
        assert!(
            c.update_t(&report(&[])).is_some(),
            "repaired once judged passing"
        );
        // A follower keeps quiet, and remembers nothing as told.
        let mut f = Changes::default();
        assert!(f.update(&report(&lb), false).is_none());
        assert!(f.update(&report(&lb), false).is_none());
        // Once it leads, it tells what is still broken.
        assert!(f.update(&report(&lb), true).is_some());
    }

    fn lb(mode: LbMode) -> crate::config::responder::LoadBalancerConfig {
        crate::config::responder::LoadBalancerConfig {
            id: "lb-1".into(),
            mode,
        }
    }

    fn region(name: &str, slug: &str) -> RegionConfig {
        RegionConfig {
            name: name.into(),
            endpoint: None,
            priority: 1,
            digitalocean: crate::config::responder::RegionDigitalOcean {
                slug: Some(slug.into()),
                ..Default::default()
            },
            app_checks: Vec::new(),
        }
    }

    #[test]
    fn a_load_balancer_must_have_the_shape_its_mode_needs() {
        let regions = [region("us-east-1", "nyc1"), region("us-west-2", "sfo3")];
        let tag = serde_json::json!({"name": "a", "type": "REGIONAL", "tag": "wp-east", "droplet_ids": []});
        let ids =
            serde_json::json!({"name": "a", "type": "REGIONAL", "tag": "", "droplet_ids": [1]});
        let global = serde_json::json!({"name": "g", "type": "GLOBAL",
            "glb_settings": {"region_priorities": {"nyc1": 1, "sfo3": 2}}});
        let half = serde_json::json!({"name": "g", "type": "GLOBAL",
            "glb_settings": {"region_priorities": {"nyc1": 1}}});
        let ok = |mode, v: &Value| load_balancer_row(&lb(mode), Got::Found(v.clone()), &regions).ok;
        assert!(ok(LbMode::Tag, &tag));
        assert!(!ok(LbMode::Tag, &ids));
        assert!(ok(LbMode::Droplets, &ids));
        assert!(!ok(LbMode::Droplets, &tag));
        assert!(ok(LbMode::Global, &global));
        assert!(!ok(LbMode::Global, &half));
        assert!(!ok(LbMode::Tag, &global) && !ok(LbMode::Droplets, &global));
        let missing = load_balancer_row(&lb(LbMode::Tag), Got::Missing, &regions);
        assert!(!missing.ok && missing.fix.contains("new id"));
    }

    #[test]
    fn a_droplet_must_be_active_in_its_regions_slug() {
        let r = region("us-east-1", "nyc1");
        let d = |status: &str, slug: &str| {
            droplet_row(
                7,
                &r,
                Got::Found(serde_json::json!({"status": status, "region": {"slug": slug}})),
            )
        };
        assert!(d("active", "nyc1").ok);
        assert!(!d("off", "nyc1").ok);
        let moved = d("active", "ams3");
        assert!(!moved.ok && moved.detail.contains("in ams3, but listed for us-east-1"));
        assert!(!droplet_row(7, &r, Got::Missing).ok);
    }

    #[test]
    fn details_are_one_bounded_line() {
        assert_eq!(one_line("a\n  b\tc".into()), "a b c");
        assert!(one_line("x ".repeat(400)).chars().count() <= 303);
    }

    #[test]
    fn an_executable_is_found_by_path_or_in_path() {
        assert!(resolve_executable("sh").is_ok());
        assert!(resolve_executable("/bin/sh").is_ok());
        assert!(resolve_executable("no-such-program-here").is_err());
        let plain =
            std::env::temp_dir().join(format!("dynamo-failover-plain-{}", std::process::id()));
        std::fs::write(&plain, "not a program").unwrap();
        std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();
        let r = resolve_executable(plain.to_str().unwrap());
        let _ = std::fs::remove_file(&plain);
        assert!(r.is_err(), "not executable");
    }
}
