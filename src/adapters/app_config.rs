//! The application-config step: writes `KEY=<region>` into an env file on this machine (see
//! [`super::envfile`]: atomic, every other line, the mode, owner and group kept), then runs the
//! reload commands with a timeout and a clean environment. Idempotent: a file that already says
//! the region is left alone; the reload commands run on every attempt.

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;

use super::envfile::{read_value, run_command, with_value, write_atomically, Ownership};
use crate::config::responder::AppConfig;
use crate::failover::state::StepKind;
use crate::ports::{FailReason, Placement, Step, StepCtx, StepError};

pub struct AppConfigStep {
    env_file: PathBuf,
    key: String,
    reload: Vec<Vec<String>>,
    pass_env: Vec<String>,
    timeout: Duration,
    /// The configured region names (what the env file may say).
    regions: Vec<String>,
}

impl AppConfigStep {
    pub fn new(c: &AppConfig, regions: Vec<String>) -> Self {
        Self {
            env_file: c.env_file.clone(),
            key: c.env_key.as_str().to_string(),
            reload: c.reload_commands.clone(),
            pass_env: c.pass_env.iter().map(|n| n.as_str().to_string()).collect(),
            timeout: c.command_timeout,
            regions,
        }
    }
}

#[async_trait]
impl Step for AppConfigStep {
    fn name(&self) -> String {
        StepKind::AppConfig.as_str().to_string()
    }

    fn kind(&self) -> StepKind {
        StepKind::AppConfig
    }

    async fn apply(&self, to: &str, ctx: &StepCtx<'_>) -> Result<String, StepError> {
        let epoch = ctx.epoch;
        let io = |what: String, e: std::io::Error| {
            StepError::new(FailReason::Io, format!("{what}: {e}"), true)
        };
        let current = match tokio::fs::read_to_string(&self.env_file).await {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(io(format!("reading {}", self.env_file.display()), e)),
        };
        let changed = read_value(&current, &self.key).as_deref() != Some(to);
        if changed {
            ctx.check()?;
            let body = with_value(&current, &self.key, to);
            let path = self.env_file.clone();
            tokio::task::spawn_blocking(move || write_atomically(&path, &body, Ownership::Keep))
                .await
                .map_err(|e| StepError::new(FailReason::Io, e.to_string(), true))?
                .map_err(|e| io(format!("writing {}", self.env_file.display()), e))?;
            // Read back.
            let back = tokio::fs::read_to_string(&self.env_file)
                .await
                .map_err(|e| io(format!("re-reading {}", self.env_file.display()), e))?;
            if read_value(&back, &self.key).as_deref() != Some(to) {
                return Err(StepError::new(
                    FailReason::VerifyFailed,
                    format!(
                        "{} does not say {}={to} after writing it",
                        self.env_file.display(),
                        self.key
                    ),
                    true,
                ));
            }
        }
        // Reload commands run on every apply: a previous attempt may have written the file and
        // died before reloading, and reloading twice is harmless where reloading zero times is not.
        let mut ran = Vec::new();
        for cmd in &self.reload {
            ctx.check()?;
            let vars = [
                (self.key.as_str(), to.to_string()),
                ("DYNAMO_FAILOVER_EPOCH", epoch.to_string()),
            ];
            // A replica's command is stopped if its lease comes within the margin while it runs
            // (a shutdown lets it finish: the lease is kept until it has).
            let lease_holds = || ctx.fence.acting_for().is_none_or(|left| !left.is_zero());
            let stdout =
                run_command(cmd, &vars, &self.pass_env, self.timeout, &lease_holds).await?;
            tracing::info!(command = %cmd.join(" "), epoch, stdout = %stdout, "reload command ran");
            ran.push(cmd[0].clone());
        }
        Ok(format!(
            "{} {}={to}; reload commands run: {}",
            if changed { "wrote" } else { "already had" },
            self.key,
            if ran.is_empty() {
                "none".to_string()
            } else {
                ran.join(", ")
            }
        ))
    }

    async fn placement(&self, _ctx: &StepCtx<'_>) -> Result<Placement, StepError> {
        let text = match tokio::fs::read_to_string(&self.env_file).await {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Placement::Unclear(format!(
                    "{} does not exist",
                    self.env_file.display()
                )))
            }
            Err(e) => {
                return Err(StepError::new(
                    FailReason::Io,
                    format!("reading {}: {e}", self.env_file.display()),
                    true,
                ))
            }
        };
        Ok(match read_value(&text, &self.key) {
            Some(v) if self.regions.contains(&v) => Placement::Region(v),
            Some(v) => Placement::Unclear(format!(
                "{} says {}={v}, not a configured region",
                self.env_file.display(),
                self.key
            )),
            None => Placement::Unclear(format!(
                "{} does not set {}",
                self.env_file.display(),
                self.key
            )),
        })
    }
}
