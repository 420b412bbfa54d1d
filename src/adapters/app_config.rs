//! The application-config step: writes `KEY=<region>` into an env file atomically (temporary file,
//! fsync, rename), keeping every other line as it was, then runs the reload commands with a
//! timeout. Idempotent: if the file already says the region, it is left alone and the reload
//! commands still run only when the file changed or a previous run of this plan did not finish
//! them.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;

use crate::config::responder::AppConfig;
use crate::failover::state::StepKind;
use crate::ports::{FailReason, Step, StepCtx, StepError};

pub struct AppConfigStep {
    env_file: PathBuf,
    key: String,
    reload: Vec<Vec<String>>,
    timeout: Duration,
}

impl AppConfigStep {
    pub fn new(c: &AppConfig) -> Self {
        Self {
            env_file: c.env_file.clone(),
            key: c.env_key.clone(),
            reload: c.reload_commands.clone(),
            timeout: c.command_timeout,
        }
    }
}

/// The value of `key` in env-file text, if set.
pub fn read_value(text: &str, key: &str) -> Option<String> {
    text.lines().rev().find_map(|l| {
        let l = l
            .trim_start()
            .strip_prefix("export ")
            .unwrap_or(l.trim_start());
        l.strip_prefix(key)
            .and_then(|rest| rest.strip_prefix('='))
            .map(|v| v.trim().trim_matches('"').trim_matches('\'').to_string())
    })
}

/// `text` with `key` set to `value` (replacing every assignment of it, or appending one).
pub fn with_value(text: &str, key: &str, value: &str) -> String {
    let mut out = String::with_capacity(text.len() + key.len() + value.len() + 2);
    let mut set = false;
    for l in text.lines() {
        let t = l
            .trim_start()
            .strip_prefix("export ")
            .unwrap_or(l.trim_start());
        if t.strip_prefix(key).is_some_and(|r| r.starts_with('=')) {
            if !set {
                out.push_str(&format!("{key}={value}\n"));
                set = true;
            }
        } else {
            out.push_str(l);
            out.push('\n');
        }
    }
    if !set {
        out.push_str(&format!("{key}={value}\n"));
    }
    out
}

fn write_atomically(path: &Path, body: &str) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("dynamo-failover.tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(body.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
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
            tokio::task::spawn_blocking(move || write_atomically(&path, &body))
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
            let out = tokio::time::timeout(
                self.timeout,
                tokio::process::Command::new(&cmd[0])
                    .args(&cmd[1..])
                    .env(&self.key, to)
                    .env("DYNAMO_FAILOVER_EPOCH", epoch.to_string())
                    .stdin(Stdio::null())
                    .kill_on_drop(true)
                    .output(),
            )
            .await;
            let out = match out {
                Err(_) => {
                    return Err(StepError::new(
                        FailReason::Timeout,
                        format!(
                            "reload command `{}` did not finish within {:?}",
                            cmd.join(" "),
                            self.timeout
                        ),
                        true,
                    ))
                }
                Ok(Err(e)) => {
                    return Err(StepError::new(
                        FailReason::CommandFailed,
                        format!("reload command `{}` could not start: {e}", cmd.join(" ")),
                        false,
                    ))
                }
                Ok(Ok(o)) => o,
            };
            let tail = |b: &[u8]| {
                let s = String::from_utf8_lossy(b);
                let s = s.trim();
                s.chars()
                    .rev()
                    .take(300)
                    .collect::<String>()
                    .chars()
                    .rev()
                    .collect::<String>()
            };
            if !out.status.success() {
                return Err(StepError::new(
                    FailReason::CommandFailed,
                    format!(
                        "reload command `{}` exited with {}: {}",
                        cmd.join(" "),
                        out.status,
                        tail(&out.stderr)
                    ),
                    true,
                ));
            }
            tracing::info!(command = %cmd.join(" "), epoch, stdout = %tail(&out.stdout), "reload command ran");
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setting_a_value_keeps_every_other_line() {
        let text = "# app\nDB_HOST=x\nDYNAMODB_REGION=us-east-1\nOTHER=1\n";
        let out = with_value(text, "DYNAMODB_REGION", "us-west-2");
        assert_eq!(
            out,
            "# app\nDB_HOST=x\nDYNAMODB_REGION=us-west-2\nOTHER=1\n"
        );
        assert_eq!(
            read_value(&out, "DYNAMODB_REGION").as_deref(),
            Some("us-west-2")
        );
    }

    #[test]
    fn a_missing_key_is_appended_and_a_prefix_is_not_mistaken_for_it() {
        let text = "DYNAMODB_REGION_X=1";
        assert_eq!(read_value(text, "DYNAMODB_REGION"), None);
        let out = with_value(text, "DYNAMODB_REGION", "b");
        assert_eq!(out, "DYNAMODB_REGION_X=1\nDYNAMODB_REGION=b\n");
    }

    #[test]
    fn quoted_and_exported_values_are_read() {
        assert_eq!(read_value("export K=\"v\"", "K").as_deref(), Some("v"));
    }
}
