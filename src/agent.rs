//! The agent role: one per application server. It long-polls the responders (any replica may
//! answer) for the placement, the region the application should use and the epoch of the plan
//! that chose it; when the epoch is newer than the one it applied it writes the env file
//! atomically (with its mode and group), runs the reload commands, and acknowledges the epoch and
//! the outcome. It applies only newer epochs, so a replica behind can never roll it back; it
//! keeps what it applied in the env file itself (`DYNAMO_FAILOVER_EPOCH`), so a restart picks up
//! where it was; and when no responder answers it keeps the file as it is, never a default.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus::{IntCounterVec, IntGauge, Opts, Registry};
use serde::Deserialize;
use tokio::net::TcpListener;

use crate::adapters::envfile::{read_value, run_command, with_value, write_atomically, Ownership};
use crate::config::agent::AgentConfig;
use crate::shutdown::Shutdown;

pub use crate::config::agent::{EPOCH_KEY, LINEAGE_KEY};

/// What the responder answers.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Placement {
    pub region: String,
    pub epoch: u64,
    /// Whether the responder has this agent's acknowledgement of this placement.
    pub acked: bool,
    /// Which state history the epoch belongs to (a state created afresh starts again at 0).
    #[serde(default)]
    pub lineage: String,
}

/// What the env file says was applied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    pub region: Option<String>,
    pub epoch: Option<u64>,
    pub lineage: Option<String>,
}

/// What to do with an answer, given what is applied. Pure, so every case is unit-tested.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// A newer placement: write, reload, acknowledge.
    Apply,
    /// Applied before, but the responder has no acknowledgement (this agent restarted, or the
    /// acknowledgement was lost): the reload may not have run, so apply again and acknowledge.
    Acknowledge,
    /// Nothing to do (the same, acknowledged).
    Nothing,
    /// An older epoch than the one applied: a responder behind; ignored.
    Stale,
}

pub fn next(applied: &Applied, p: &Placement) -> Next {
    if applied.lineage.as_deref().unwrap_or("") != p.lineage {
        // The responders' state began afresh: its epochs are not comparable with ours.
        return Next::Apply;
    }
    match applied.epoch {
        Some(e) if p.epoch < e => Next::Stale,
        Some(e) if p.epoch == e && applied.region.as_deref() == Some(p.region.as_str()) => {
            if p.acked {
                Next::Nothing
            } else {
                Next::Acknowledge
            }
        }
        _ => Next::Apply,
    }
}

struct Metrics {
    applied_epoch: IntGauge,
    last_contact: prometheus::Gauge,
    applies: IntCounterVec,
    responder_errors: prometheus::IntCounter,
}

impl Metrics {
    fn register(r: &Registry, name: &str) -> prometheus::Result<Metrics> {
        let c = |n: &str, h: &str| Opts::new(n, h).const_label("agent", name);
        let m = Metrics {
            applied_epoch: IntGauge::with_opts(c(
                "dynamo_failover_agent_applied_epoch",
                "Epoch of the placement this agent last applied (its env file says so).",
            ))?,
            last_contact: prometheus::Gauge::with_opts(c(
                "dynamo_failover_agent_last_contact_timestamp_seconds",
                "Unix time a responder last answered this agent.",
            ))?,
            applies: IntCounterVec::new(
                c(
                    "dynamo_failover_agent_applies_total",
                    "Placements applied, by result (ok: written and reloaded; failed).",
                ),
                &["result"],
            )?,
            responder_errors: prometheus::IntCounter::with_opts(c(
                "dynamo_failover_agent_responder_errors_total",
                "Requests to a responder that failed (the next responder is tried).",
            ))?,
        };
        r.register(Box::new(m.applied_epoch.clone()))?;
        r.register(Box::new(m.last_contact.clone()))?;
        r.register(Box::new(m.applies.clone()))?;
        r.register(Box::new(m.responder_errors.clone()))?;
        for res in ["ok", "failed"] {
            m.applies.with_label_values(&[res]);
        }
        Ok(m)
    }
}

/// Reads what the env file says was applied (nothing if it does not exist).
pub fn read_applied(cfg: &AgentConfig) -> anyhow::Result<Applied> {
    match std::fs::read_to_string(&cfg.env_file) {
        Ok(text) => Ok(Applied {
            region: read_value(&text, &cfg.env_key),
            epoch: read_value(&text, EPOCH_KEY).and_then(|e| e.parse().ok()),
            lineage: read_value(&text, LINEAGE_KEY),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Applied::default()),
        Err(e) => Err(e).with_context(|| format!("reading {}", cfg.env_file.display())),
    }
}

struct Agent {
    cfg: AgentConfig,
    http: Arc<crate::tls::Client>,
    metrics: Metrics,
    /// The responder that answered last (tried first).
    current: usize,
    /// Unix seconds of the last answer, for /healthz.
    last_contact: Arc<AtomicU64>,
}

impl Agent {
    fn url(&self, i: usize, what: &str) -> String {
        format!(
            "{}/v1/agents/{}/{what}",
            self.cfg.responders[i], self.cfg.name
        )
    }

    /// One placement request, to the responders in turn from the last that answered.
    async fn poll(&mut self, applied: &Applied) -> Option<Placement> {
        let n = self.cfg.responders.len();
        for k in 0..n {
            let i = (self.current + k) % n;
            let mut req = self
                .http
                .get()
                .get(self.url(i, "placement"))
                .bearer_auth(self.cfg.token.expose())
                .timeout(self.cfg.poll_wait + self.cfg.request_timeout)
                .query(&[("wait_ms", self.cfg.poll_wait.as_millis() as u64)]);
            if let Some(e) = applied.epoch {
                req = req.query(&[("applied", e)]);
            }
            if let Some(l) = &applied.lineage {
                req = req.query(&[("lineage", l)]);
            }
            match req.send().await {
                Ok(r) if r.status().is_success() => match r.json::<Placement>().await {
                    Ok(p) => {
                        self.current = i;
                        self.contact();
                        return Some(p);
                    }
                    Err(e) => {
                        tracing::warn!(responder = %self.cfg.responders[i], error = %e, "unreadable placement")
                    }
                },
                Ok(r) => {
                    tracing::warn!(responder = %self.cfg.responders[i], status = r.status().as_u16(),
                        "placement refused (an unauthorized answer means this agent's token or name is wrong)")
                }
                Err(e) => {
                    let why = self.why(i, &e).await;
                    tracing::warn!(responder = %self.cfg.responders[i], error = %why, "responder unreachable")
                }
            }
            self.metrics.responder_errors.inc();
        }
        None
    }

    /// Why a request to responder `i` failed. A connection that was made and then closed may be a
    /// TLS refusal of this agent's certificate that the error does not carry (TLS 1.3): one
    /// handshake of its own finds the server's alert ([`crate::tls::diagnose`]).
    async fn why(&self, i: usize, e: &reqwest::Error) -> String {
        if crate::tls::explain(e).is_none() && !e.is_connect() && !e.is_timeout() {
            let url = &self.cfg.responders[i];
            if let Some(t) =
                crate::tls::diagnose(url, &self.cfg.responder_tls, crate::tls::Roots::BundleOnly)
                    .await
            {
                return t;
            }
        }
        without_url(e)
    }

    fn contact(&self) {
        let now = crate::clock::unix_seconds_f64();
        self.metrics.last_contact.set(now);
        self.last_contact.store(now as u64, Ordering::SeqCst);
    }

    /// Tells the responders what was applied; answers whether one recorded it.
    async fn acknowledge(&mut self, p: &Placement, ok: bool, detail: &str) -> bool {
        let body = serde_json::json!({
            "epoch": p.epoch, "region": p.region, "ok": ok, "detail": detail, "lineage": p.lineage,
        });
        let n = self.cfg.responders.len();
        for k in 0..n {
            let i = (self.current + k) % n;
            let r = self
                .http
                .get()
                .post(self.url(i, "ack"))
                .bearer_auth(self.cfg.token.expose())
                .timeout(self.cfg.request_timeout)
                .json(&body)
                .send()
                .await;
            match r {
                Ok(r) if r.status().is_success() => {
                    self.current = i;
                    self.contact();
                    return true;
                }
                Ok(r) => {
                    tracing::warn!(responder = %self.cfg.responders[i], status = r.status().as_u16(), "acknowledgement refused")
                }
                Err(e) => {
                    let why = self.why(i, &e).await;
                    tracing::warn!(responder = %self.cfg.responders[i], error = %why, "responder unreachable")
                }
            }
            self.metrics.responder_errors.inc();
        }
        false
    }

    /// Writes the env file and runs the reload commands for `p`.
    async fn apply(&self, p: &Placement) -> anyhow::Result<String> {
        // What goes into a file that shells source: a region name and a number, nothing else.
        let plain = |v: &str| {
            !v.is_empty()
                && v.len() <= 64
                && v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        };
        if !plain(&p.region) || !(p.lineage.is_empty() || plain(&p.lineage)) {
            anyhow::bail!(
                "the responder answered a region or lineage that is not a plain name; not written"
            );
        }
        let current = match tokio::fs::read_to_string(&self.cfg.env_file).await {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => {
                return Err(e).with_context(|| format!("reading {}", self.cfg.env_file.display()))
            }
        };
        let body = with_value(
            &with_value(
                &with_value(&current, &self.cfg.env_key, &p.region),
                EPOCH_KEY,
                &p.epoch.to_string(),
            ),
            LINEAGE_KEY,
            &p.lineage,
        );
        let path = self.cfg.env_file.clone();
        // Without a configured group the file keeps the one it has (the application's group,
        // which an operator gave it), never the agent's own.
        let gid = match &self.cfg.group {
            Some((_, gid)) => Some(*gid),
            None => std::fs::metadata(&path).ok().map(|m| {
                use std::os::unix::fs::MetadataExt;
                m.gid()
            }),
        };
        let ownership = Ownership::Set {
            mode: self.cfg.mode,
            gid,
        };
        tokio::task::spawn_blocking(move || write_atomically(&path, &body, ownership))
            .await?
            .with_context(|| format!("writing {}", self.cfg.env_file.display()))?;
        let vars = [
            (self.cfg.env_key.as_str(), p.region.clone()),
            (EPOCH_KEY, p.epoch.to_string()),
        ];
        for cmd in &self.cfg.reload_commands {
            let out = run_command(
                cmd,
                &vars,
                &self.cfg.pass_env,
                self.cfg.command_timeout,
                &|| true,
            )
            .await
            .map_err(|e| anyhow::anyhow!(e.message))?;
            tracing::info!(command = %cmd.join(" "), epoch = p.epoch, stdout = %out, "reload command ran");
        }
        Ok(format!(
            "wrote {}={} (epoch {}); reload commands run: {}",
            self.cfg.env_key,
            p.region,
            p.epoch,
            self.cfg.reload_commands.len()
        ))
    }
}

/// reqwest's error text without the URL (what to do about it, when TLS was the reason).
fn without_url(e: &reqwest::Error) -> String {
    if let Some(t) = crate::tls::explain(e) {
        return t;
    }
    let mut s = e.to_string();
    if let Some(u) = e.url() {
        s = s.replace(&format!(" for url ({u})"), "");
    }
    s
}

#[derive(Clone)]
struct Health {
    registry: Registry,
    last_contact: Arc<AtomicU64>,
    /// Silence longer than this is unhealthy.
    limit: Duration,
}

/// Runs the agent until `shutdown` fires; `/metrics` and `/healthz` on `listener`.
pub async fn run(
    cfg: AgentConfig,
    listener: TcpListener,
    mut shutdown: Shutdown,
) -> anyhow::Result<()> {
    let registry = Registry::new();
    crate::metrics::register_common(&registry).context("registering build metrics")?;
    let metrics = Metrics::register(&registry, &cfg.name).context("registering agent metrics")?;
    let tls_metrics =
        crate::tls::TlsFamilies::register(&registry).context("registering TLS metrics")?;
    let tls = cfg
        .tls
        .as_ref()
        .map(|t| crate::tls::ServerTls::load("agent", t, Some(tls_metrics.of("agent"))))
        .transpose()?;
    let (timeout, agent_name) = (cfg.request_timeout, cfg.name.clone());
    // Its token goes only where the config says: no proxy from the environment in between.
    let http = crate::tls::Client::new(
        "agent-client",
        &cfg.responder_tls,
        crate::tls::Roots::BundleOnly,
        move || {
            reqwest::Client::builder()
                .connect_timeout(timeout)
                .no_proxy()
                .user_agent(format!(
                    "dynamo-failover-agent/{} ({agent_name})",
                    env!("CARGO_PKG_VERSION"),
                ))
        },
        cfg.responder_tls
            .cert_file
            .is_some()
            .then(|| tls_metrics.of("agent-client")),
    )
    .context("[agent.responder_tls]")?;
    let mut applied = read_applied(&cfg)?;
    if let Some(e) = applied.epoch {
        metrics.applied_epoch.set(e as i64);
    }
    tracing::info!(agent = %cfg.name, listen = %listener.local_addr()?, env_file = %cfg.env_file.display(),
        applied_region = applied.region.as_deref().unwrap_or("-"), applied_epoch = applied.epoch.unwrap_or(0),
        responders = cfg.responders.len(), "agent started");
    let last_contact = Arc::new(AtomicU64::new(0));
    let health = Health {
        registry,
        last_contact: last_contact.clone(),
        limit: (cfg.poll_wait + cfg.request_timeout) * 3,
    };
    let app = Router::new()
        .route("/metrics", get(metrics_page))
        .route("/healthz", get(healthz))
        .with_state(health);
    let server = tokio::spawn(crate::http::serve::serve(
        listener,
        app,
        crate::http::serve::Limits::default(),
        None,
        tls,
        shutdown.clone(),
    ));
    let mut agent = Agent {
        cfg,
        http,
        metrics,
        current: 0,
        last_contact,
    };
    let mut pause = Duration::from_secs(1);
    loop {
        let polled = tokio::select! {
            p = agent.poll(&applied) => p,
            _ = shutdown.wait() => break,
        };
        let wait = match polled {
            None => {
                tracing::error!("no responder answered; the env file stays as it is, retrying");
                Some(pause)
            }
            Some(p) => match next(&applied, &p) {
                Next::Nothing => None,
                Next::Stale => {
                    tracing::info!(
                        epoch = p.epoch,
                        applied = applied.epoch.unwrap_or(0),
                        "a responder answered an older placement (it is behind); ignored, asking the next one"
                    );
                    agent.current = (agent.current + 1) % agent.cfg.responders.len();
                    None
                }
                next @ (Next::Apply | Next::Acknowledge) => {
                    if next == Next::Acknowledge {
                        tracing::info!(region = %p.region, epoch = p.epoch,
                            "applied before without a recorded acknowledgement: writing and reloading again");
                    } else {
                        tracing::info!(region = %p.region, epoch = p.epoch, "applying a new placement");
                    }
                    match agent.apply(&p).await {
                        Ok(detail) => {
                            agent.metrics.applies.with_label_values(&["ok"]).inc();
                            agent.metrics.applied_epoch.set(p.epoch as i64);
                            applied = Applied {
                                region: Some(p.region.clone()),
                                epoch: Some(p.epoch),
                                lineage: Some(p.lineage.clone()),
                            };
                            tracing::info!(region = %p.region, epoch = p.epoch, detail = %detail, "placement applied");
                            (!agent.acknowledge(&p, true, &detail).await).then_some(pause)
                        }
                        Err(e) => {
                            agent.metrics.applies.with_label_values(&["failed"]).inc();
                            let detail = format!("{e:#}");
                            tracing::error!(region = %p.region, epoch = p.epoch, error = %detail, "placement not applied");
                            agent.acknowledge(&p, false, &detail).await;
                            Some(pause)
                        }
                    }
                }
            },
        };
        match wait {
            None => pause = Duration::from_secs(1),
            Some(d) => {
                tokio::select! {
                    _ = tokio::time::sleep(d) => {}
                    _ = shutdown.wait() => break,
                }
                pause = (pause * 2).min(Duration::from_secs(10));
            }
        }
    }
    let _ = server.await;
    tracing::info!("agent stopped");
    Ok(())
}

async fn metrics_page(State(h): State<Health>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::metrics::render(&h.registry),
    )
        .into_response()
}

async fn healthz(State(h): State<Health>) -> Response {
    let last = h.last_contact.load(Ordering::SeqCst);
    let now = crate::clock::unix_seconds_f64() as u64;
    if last > 0 && now.saturating_sub(last) <= h.limit.as_secs() {
        (StatusCode::OK, "ok: a responder answered recently\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "unhealthy: no responder answered in the last {} s\n",
                h.limit.as_secs()
            ),
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(region: &str, epoch: u64, acked: bool) -> Placement {
        Placement {
            region: region.into(),
            epoch,
            acked,
            lineage: "1000".into(),
        }
    }

    #[test]
    fn only_a_newer_epoch_is_applied_and_an_older_one_never_rolls_back() {
        let none = Applied::default();
        assert_eq!(next(&none, &p("a", 0, false)), Next::Apply);
        let at3 = Applied {
            region: Some("b".into()),
            epoch: Some(3),
            lineage: Some("1000".into()),
        };
        assert_eq!(next(&at3, &p("a", 4, false)), Next::Apply);
        assert_eq!(next(&at3, &p("a", 2, false)), Next::Stale);
        assert_eq!(next(&at3, &p("b", 3, true)), Next::Nothing);
        assert_eq!(next(&at3, &p("b", 3, false)), Next::Acknowledge);
        // The same epoch naming another region (a file edited by hand): the responder wins.
        assert_eq!(next(&at3, &p("a", 3, true)), Next::Apply);
    }

    #[test]
    fn a_state_begun_afresh_is_applied_whatever_its_epoch() {
        let at7 = Applied {
            region: Some("b".into()),
            epoch: Some(7),
            lineage: Some("1000".into()),
        };
        let fresh = Placement {
            lineage: "2000".into(),
            ..p("a", 1, false)
        };
        assert_eq!(next(&at7, &fresh), Next::Apply);
        // A file from before lineages existed, and a state from before them: comparable.
        let old = Applied {
            lineage: None,
            ..at7.clone()
        };
        let unnamed = Placement {
            lineage: String::new(),
            ..p("a", 1, false)
        };
        assert_eq!(next(&old, &unnamed), Next::Stale);
    }
}
