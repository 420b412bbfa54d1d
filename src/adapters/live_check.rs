//! The live check before a move, built on the exporter's probe code: the target must answer a
//! consistent read of every table's health item and accept a canary write. For a failback with a
//! lag bound, a canary written to the region being left must also show up in the target within
//! the bound.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::aws;
use crate::config::{Config, TableConfig};
use crate::ports::LiveCheck;
use crate::probe::write::Sequence;
use crate::probe::{read, replication, write, ProbeResult, Target};

pub struct ProbeLiveCheck {
    clients: HashMap<String, aws_sdk_dynamodb::Client>,
    /// To tell "no credentials here" from an IAM refusal when a probe is refused.
    credentials: Option<aws_credential_types::provider::SharedCredentialsProvider>,
    /// Each region's application checks: a target must pass them too.
    app: HashMap<String, Vec<crate::probe::app::AppCheck>>,
    tables: Vec<TableConfig>,
    prefix: String,
    id: String,
    timeout: Duration,
    max_lag: Option<Duration>,
    sequence: std::sync::Mutex<Sequence>,
}

impl ProbeLiveCheck {
    pub fn new(config: &Config, shared: &aws_config::SdkConfig, max_lag: Option<Duration>) -> Self {
        let app = config
            .regions
            .iter()
            .map(|r| {
                let checks = r
                    .app_checks
                    .iter()
                    .filter_map(|c| match crate::probe::app::AppCheck::new(&r.name, c) {
                        Ok(c) => Some(c),
                        Err(e) => {
                            tracing::error!(region = %r.name, check = %c.name, error = %e, "cannot build an application check");
                            None
                        }
                    })
                    .collect();
                (r.name.clone(), checks)
            })
            .collect();
        Self {
            app,
            credentials: shared.credentials_provider(),
            clients: config
                .regions
                .iter()
                .map(|r| (r.name.clone(), aws::probe_client(shared, r, &config.prober)))
                .collect(),
            tables: config.tables.clone(),
            prefix: config.prober.canary_prefix.clone(),
            // Its own canary id, so it never races the exporter's canaries in `serve` mode.
            id: format!("{}.live", config.prober.id),
            timeout: config.prober.timeout + Duration::from_millis(100),
            max_lag,
            sequence: std::sync::Mutex::new(Sequence::default()),
        }
    }

    fn target(&self, region: &str, table: &TableConfig) -> Option<Target> {
        Some(Target {
            region: region.to_string(),
            client: self.clients.get(region)?.clone(),
            table: table.clone(),
        })
    }

    fn next_seq(&self) -> u64 {
        self.sequence
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .next(crate::clock::unix_micros())
    }

    /// Why credentials do not resolve here, if they do not.
    async fn no_credentials(&self) -> Option<String> {
        use aws_credential_types::provider::ProvideCredentials;
        let Some(p) = &self.credentials else {
            return Some("no credentials provider is configured".into());
        };
        match tokio::time::timeout(self.timeout, p.provide_credentials()).await {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some("the credentials chain did not answer in time".into()),
        }
    }

    async fn bounded(&self, f: impl std::future::Future<Output = ProbeResult>) -> ProbeResult {
        tokio::time::timeout(self.timeout, f)
            .await
            .unwrap_or(ProbeResult::Timeout)
    }
}

/// One failed probe of the target, said so a person knows whose problem it is.
fn describe(what: &str, table: &str, region: &str, r: ProbeResult) -> String {
    if r.is_misconfiguration() {
        format!(
            "{what} {table} in {region}: {} (this responder's credentials, IAM policy, table or health item, not evidence that {region} is down)",
            r.as_str()
        )
    } else {
        format!("{what} {table} in {region}: {}", r.as_str())
    }
}

#[async_trait]
impl LiveCheck for ProbeLiveCheck {
    async fn check(&self, to: &str, from: &str, failback: bool) -> Result<String, String> {
        let start = Instant::now();
        // The rules' semantics: reads and writes of every required table must work; a table
        // that is not required is reported and does not stop the move.
        let mut notes = Vec::new();
        for table in &self.tables {
            let t = self
                .target(to, table)
                .ok_or_else(|| format!("unknown region {to}"))?;
            let r = self.bounded(read::probe(&t)).await;
            let w = if r == ProbeResult::Success {
                let seq = self.next_seq();
                self.bounded(write::probe(&t, &self.prefix, &self.id, seq))
                    .await
            } else {
                ProbeResult::Success
            };
            let failed = [("read of", r), ("canary write to", w)]
                .into_iter()
                .find(|(_, res)| *res != ProbeResult::Success);
            if let Some((what, res)) = failed {
                let mut msg = describe(what, &table.name, to, res);
                if matches!(res, ProbeResult::AccessDenied | ProbeResult::NoCredentials) {
                    if let Some(why) = self.no_credentials().await {
                        msg = format!("no AWS credentials on this responder ({why}); {msg}");
                    }
                }
                if table.required {
                    return Err(msg);
                }
                notes.push(format!("{msg} (not a required table)"));
            }
        }
        // Its application must serve too: no move into a region whose application is down.
        // All at once, so the slowest bounds the wait, not their sum.
        let checks = self.app.get(to).map(Vec::as_slice).unwrap_or_default();
        let mut set = tokio::task::JoinSet::new();
        for check in checks.iter().cloned() {
            set.spawn(async move {
                let (res, seen) = tokio::time::timeout(check.cutoff(), check.probe())
                    .await
                    .unwrap_or((crate::probe::app::AppResult::Timeout, "no answer".into()));
                (check.config.name, res, seen)
            });
        }
        let mut results = Vec::new();
        while let Some(r) = set.join_next().await {
            // A check that could not finish counts as failed, never as passed.
            results.push(r.unwrap_or_else(|e| {
                (
                    "?".to_string(),
                    crate::probe::app::AppResult::Timeout,
                    format!("the check stopped: {e}"),
                )
            }));
        }
        results.sort_by(|a, b| a.0.cmp(&b.0));
        let failed: Vec<String> = results
            .iter()
            .filter(|(_, res, _)| *res != crate::probe::app::AppResult::Success)
            .map(|(name, res, seen)| {
                format!(
                    "application check {name} of {to}: {} ({seen})",
                    res.as_str()
                )
            })
            .collect();
        if !failed.is_empty() {
            return Err(failed.join("; "));
        }
        let mut detail = format!(
            "{to} answered reads and writes on {} table(s){} in {} ms",
            self.tables.len() - notes.len(),
            if checks.is_empty() {
                String::new()
            } else {
                format!(" and {} application check(s)", checks.len())
            },
            start.elapsed().as_millis()
        );
        for n in notes {
            detail += &format!("; {n}");
        }
        if let (true, Some(bound)) = (failback, self.max_lag) {
            // One table is enough to measure the replication path from `from` to `to`.
            let table = &self.tables[0];
            let src = self
                .target(from, table)
                .ok_or_else(|| format!("unknown region {from}"))?;
            let dst = self
                .target(to, table)
                .ok_or_else(|| format!("unknown region {to}"))?;
            let seq = self.next_seq();
            let w = self
                .bounded(write::probe(&src, &self.prefix, &self.id, seq))
                .await;
            if w != ProbeResult::Success {
                return Err(format!(
                    "cannot measure replication lag: canary write to {from} failed ({})",
                    w.as_str()
                ));
            }
            let written = Instant::now();
            loop {
                let seen = tokio::time::timeout(
                    self.timeout,
                    replication::probe(&dst, &self.prefix, &self.id, &[from.to_string()]),
                )
                .await;
                if let Ok(Ok(s)) = seen {
                    if s.first().is_some_and(|(_, got)| *got >= seq) {
                        detail += &format!(
                            "; a write to {from} reached {to} within {} ms (bound {} ms)",
                            written.elapsed().as_millis(),
                            bound.as_millis()
                        );
                        break;
                    }
                }
                if written.elapsed() >= bound {
                    return Err(format!(
                        "replication lag from {from} to {to} is above the failback bound of {} ms",
                        bound.as_millis()
                    ));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(detail)
    }
}
