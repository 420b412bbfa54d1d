//! The responder role: builds the engine from the config (state store, steps, live check,
//! notifiers), serves the webhook and admin API, and ticks the decision clock until shutdown.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use prometheus::Registry;
use tokio::net::TcpListener;

use crate::adapters::{
    app_config, digitalocean, live_check, notify, prometheus as prom, state_dynamodb, state_file,
};
use crate::config::responder::StoreConfig;
use crate::config::Config;
use crate::failover::executor::{Engine, Parts};
use crate::failover::lease::Ha;
use crate::failover::machine::Event;
use crate::failover::metrics::ResponderMetrics;
use crate::failover::notices::{self, Channels, Links};
use crate::http::responder::{router, ResponderState};
use crate::http::serve::{serve, ConnMetrics, Limits};
use crate::metrics::register_common;
use crate::ports::{
    Clock, FailReason, Lease, Notifier, Placement, Reading, StateStore, Step, StepCtx, SystemClock,
};
use crate::shutdown::Shutdown;

/// The configured steps, in plan order: application config, load balancers, DNS records.
pub fn steps(config: &Config) -> anyhow::Result<Vec<Arc<dyn Step>>> {
    let r = config
        .responder
        .as_ref()
        .context("the config has no [responder] section")?;
    let names = config.regions.iter().map(|x| x.name.clone()).collect();
    // The agents step, when agents are configured, is the engine's (it follows their
    // acknowledgements); it goes right after this one.
    let mut steps: Vec<Arc<dyn Step>> = Vec::new();
    if let Some(app) = &r.app {
        steps.push(Arc::new(app_config::AppConfigStep::new(app, names)));
    }
    if let Some(d) = &r.digitalocean {
        let client = Arc::new(
            digitalocean::DoClient::new(d, &r.outbound_tls)
                .context("building the DigitalOcean client")?,
        );
        for lb in &d.load_balancers {
            steps.push(Arc::new(digitalocean::LoadBalancerStep::new(
                client.clone(),
                lb.clone(),
                config.regions.clone(),
            )));
        }
        for rec in &d.dns_records {
            steps.push(Arc::new(digitalocean::DnsStep::new(
                client.clone(),
                rec.clone(),
                config.regions.clone(),
            )));
        }
    }
    Ok(steps)
}

/// Opens the configured state store; with DynamoDB, also answers it as the replicas' lease.
pub async fn open_store(
    store: &StoreConfig,
    shared: &aws_config::SdkConfig,
) -> anyhow::Result<(Arc<dyn StateStore>, Option<Arc<dyn Lease>>)> {
    Ok(match store {
        StoreConfig::File { path } => (
            Arc::new(state_file::FileStore::open(path).context("opening the state store")?),
            None,
        ),
        StoreConfig::Dynamodb {
            table,
            region,
            endpoint,
            timeout,
            ..
        } => {
            let ddb = Arc::new(state_dynamodb::DynamoStore::new(
                crate::aws::state_client(shared, region, endpoint.as_deref(), *timeout),
                table,
                *timeout,
            ));
            ddb.check_table()
                .await
                .map_err(|e| anyhow::anyhow!("the state table cannot be used: {e}"))?;
            (ddb.clone(), Some(ddb))
        }
    })
}

/// With no stored state the responder would assume traffic is at home. It refuses to start when
/// the application's env file, a load balancer or a DNS record says another region: that state
/// was lost, and starting fresh would move nothing back and plan from a wrong picture. Objects it
/// cannot read are reported and do not stop it.
async fn check_fresh_start(
    steps: &[Arc<dyn Step>],
    home: &str,
    replica: &str,
) -> anyhow::Result<()> {
    let fence = Reading;
    let on_retry = |_: FailReason| {};
    let limit = Duration::from_secs(10);
    let ctx = StepCtx {
        epoch: 0,
        replica,
        deadline: tokio::time::Instant::now() + limit,
        fence: &fence,
        on_retry: &on_retry,
    };
    let mut elsewhere = Vec::new();
    for step in steps {
        match tokio::time::timeout(limit, step.placement(&ctx)).await {
            Ok(Ok(Placement::Region(r))) if r == home => {}
            Ok(Ok(Placement::Region(r))) => elsewhere.push((step.name(), r)),
            Ok(Ok(Placement::Unclear(why))) => {
                tracing::warn!(step = %step.name(), detail = %why, "first start: cannot tell where this points")
            }
            Ok(Err(e)) => {
                tracing::warn!(step = %step.name(), error = %e.message, "first start: cannot read where this points")
            }
            Err(_) => {
                tracing::warn!(step = %step.name(), "first start: no answer on where this points")
            }
        }
    }
    let Some((_, region)) = elsewhere.first() else {
        return Ok(());
    };
    let said = elsewhere
        .iter()
        .map(|(s, r)| format!("{s} points at {r}"))
        .collect::<Vec<_>>()
        .join(", ");
    anyhow::bail!(
        "no failover state is stored (a first start, or the state was lost), but {said}, not the home region {home}. \
         Starting now would assume traffic is in {home}. If traffic is really in {region}, adopt that placement first: \
         `dynamo-failover adopt --region {region} --config <this config>`; if it belongs in {home}, point those objects \
         back at it. Nothing was changed."
    )
}

/// Writes the first state with traffic in `region` (`dynamo-failover adopt`): for a responder
/// whose state was lost while traffic was away from home. Refuses when a state is stored.
pub async fn adopt(
    config: &Config,
    shared: &aws_config::SdkConfig,
    region: &str,
) -> anyhow::Result<String> {
    let r = config
        .responder
        .as_ref()
        .context("the config has no [responder] section")?;
    let policy = r.policy(&config.regions);
    anyhow::ensure!(
        policy.regions.iter().any(|x| x == region),
        "unknown region `{region}` (configured: {})",
        policy.regions.join(", ")
    );
    let (store, _) = open_store(&r.store, shared).await?;
    if let Some(v) = store.load().await.context("reading the stored state")? {
        anyhow::bail!(
            "a state is already stored (epoch {}, traffic in {}); adopt is only for a missing state. \
             To move traffic, use `dynamo-failover failover --to {region}` against the running responder",
            v.state.epoch,
            v.state.active
        );
    }
    let mut state = crate::failover::state::State::initial(&policy, SystemClock.now_ms());
    state.active = region.to_string();
    state.app_region = region.to_string();
    store
        .save(&state, 0)
        .await
        .context("storing the adopted state")?;
    Ok(format!(
        "adopted: traffic is in {region} (epoch 0); the responder can start now"
    ))
}

/// Runs the responder on `listener` until `shutdown` fires.
pub async fn run(
    config: Config,
    shared: aws_config::SdkConfig,
    listener: TcpListener,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let r = config
        .responder
        .clone()
        .context("the config has no [responder] section; the responder role needs one")?;
    let request_timeout = r
        .digitalocean
        .as_ref()
        .map_or(Duration::ZERO, |d| d.request_timeout);
    // How long a shutdown waits for the plan work in flight: one request, or one reload command.
    let command_timeout = r.app.as_ref().map_or(Duration::ZERO, |a| a.command_timeout);
    let grace = request_timeout.max(command_timeout) + Duration::from_secs(1);
    let registry = Registry::new();
    let tls = r
        .tls
        .as_ref()
        .map(|t| -> anyhow::Result<_> {
            let m = crate::tls::TlsFamilies::register(&registry)?;
            crate::tls::ServerTls::load("responder", t, Some(m.of("responder")))
        })
        .transpose()?;
    register_common(&registry).context("registering build and process metrics")?;
    let regions: Vec<String> = config.regions.iter().map(|x| x.name.clone()).collect();
    let steps = steps(&config)?;
    let mut kinds: Vec<&str> = steps.iter().map(|s| s.kind().as_str()).collect();
    if r.agents.is_some() {
        kinds.push(crate::failover::state::StepKind::Agents.as_str());
    }
    kinds.push("live_check");
    kinds.dedup();
    let metrics = ResponderMetrics::register(&registry, &regions, &kinds)
        .context("registering responder metrics")?;
    for a in r.agents.iter().flat_map(|a| &a.agents) {
        metrics.agent_applied_epoch.with_label_values(&[&a.name]);
        metrics.agent_last_seen.with_label_values(&[&a.name]);
    }
    let (store, lease) = open_store(&r.store, &shared).await?;
    let ha = match (&r.store, lease) {
        (
            StoreConfig::Dynamodb {
                replica,
                lease: duration,
                renew,
                ..
            },
            Some(lease),
        ) => Some(Ha {
            lease,
            replica: replica.clone(),
            duration: *duration,
            renew_every: *renew,
            margin: r.store.lease_margin(request_timeout),
        }),
        _ => None,
    };
    if store
        .load()
        .await
        .context("reading the stored state")?
        .is_none()
    {
        let replica = ha.as_ref().map_or("single", |h| h.replica.as_str());
        check_fresh_start(&steps, &config.regions[0].name, replica).await?;
    }
    let notifiers: Vec<Arc<dyn Notifier>> = notify::from_config(&r.notify, &r.outbound_tls)
        .context("building the notifiers ([responder.outbound_tls])")?
        .into_iter()
        .map(Arc::from)
        .collect();
    let readiness_metrics = crate::readiness::ReadinessMetrics::register(&registry)
        .context("registering readiness metrics")?;
    let policy = r.policy(&config.regions);
    let notices = notices::spawn(Channels {
        notifiers: notifiers.clone(),
        lag: r
            .prometheus_url
            .as_deref()
            .map(|u| prom::PrometheusLag::new(u, &r.outbound_tls))
            .transpose()
            .context("building the Prometheus client ([responder.outbound_tls])")?
            .map(|p| Arc::new(p) as Arc<dyn crate::ports::LagSource>),
        links: Links {
            responder: r.public_url.clone().or_else(|| Some(r.local_url())),
            prometheus: r.prometheus_url.clone(),
        },
        policy: policy.clone(),
        metrics: metrics.clone(),
    });
    let parts = Parts {
        policy,
        steps,
        store,
        live: Arc::new(live_check::ProbeLiveCheck::new(
            &config,
            &shared,
            r.policy.max_failback_lag,
        )),
        notices,
        clock: Arc::new(SystemClock),
        metrics: metrics.clone(),
        step_deadline: r.step_deadline,
        ha,
    };
    let engine = Engine::start(parts)
        .await
        .context("loading the failover state")?;
    let snap = engine.snapshot();
    tracing::info!(listen = %listener.local_addr()?, active = %snap.active, epoch = snap.epoch,
        paused = snap.paused, role = engine.role(), "responder started");
    let driver = engine.spawn_driver();
    let lease_loop = engine.spawn_lease_loop(shutdown.clone(), grace);

    let ticker = {
        let engine = engine.clone();
        let mut stop = shutdown.clone();
        let every = r.tick;
        tokio::spawn(async move {
            let mut t = tokio::time::interval(every);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    // Time-based decisions are the acting replica's; followers only record events.
                    _ = t.tick() => {
                        if !engine.is_leader() {
                            continue;
                        }
                        if let Err(e) = engine.submit(&[Event::Tick]).await {
                            tracing::error!(error = %e, "cannot record a tick");
                        }
                    }
                    _ = stop.wait() => return,
                }
            }
        })
    };
    let state = ResponderState {
        engine: engine.clone(),
        registry,
        metrics,
        alerts: Arc::new(r.alerts.clone()),
        webhook_token: r.webhook_token.clone(),
        admin_token: r.admin_token.clone(),
        regions: Arc::new(regions),
        max_body: r.max_body_bytes,
        request_timeout: r.request_timeout,
        agents: r.agents.as_ref().map(|a| {
            Arc::new(crate::http::agents::AgentDoor::new(
                a.secret.clone(),
                a.agents.iter().map(|e| e.name.clone()),
            ))
        }),
        readiness: Arc::default(),
        started_ms: crate::clock::unix_micros() / 1000,
    };
    let readiness = spawn_readiness(
        crate::readiness::Evaluator::new(&config, &shared, "readiness")
            .context("building the readiness evaluator")?,
        r.readiness.interval,
        readiness_metrics,
        &state,
        notifiers,
        shutdown.clone(),
    );
    let conn_metrics = ConnMetrics {
        open: state.metrics.connections_open.clone(),
        refused: state.metrics.connections_refused.clone(),
    };
    let app = router(state);
    serve(
        listener,
        app,
        Limits {
            header_timeout: r.header_timeout,
            max_connections: r.max_connections,
        },
        Some(conn_metrics),
        tls,
        shutdown.clone(),
    )
    .await
    .context("serving HTTP")?;
    let _ = ticker.await;
    let _ = readiness.await;
    match lease_loop {
        // It stops acting, waits for the plan work in flight, then releases the lease.
        Some(l) => {
            let _ = l.await;
        }
        None => {
            if !engine.stop(grace).await {
                tracing::warn!("plan work did not stop within the grace period");
            }
        }
    }
    driver.abort();
    tracing::info!("responder stopped");
    Ok(())
}

/// What the engine and the agents' door know of the agents, for the readiness rows.
fn agents_view(state: &ResponderState) -> crate::readiness::AgentsView {
    let st = state.engine.snapshot();
    let seen = state
        .agents
        .as_ref()
        .map(|d| d.last_seen())
        .unwrap_or_default();
    let agents = state
        .engine
        .policy()
        .agents
        .expected
        .keys()
        .map(|name| {
            let ack = st.agents.get(name).map(|a| (a.epoch, a.ok));
            let last = seen.get(name).and_then(|t| {
                t.duration_since(std::time::UNIX_EPOCH)
                    .ok()
                    .map(|d| d.as_millis() as u64)
            });
            (name.clone(), ack, last)
        })
        .collect();
    crate::readiness::AgentsView {
        placement_epoch: crate::failover::machine::placement(&st).1,
        since_ms: Some(state.started_ms),
        sees_all_contacts: state.engine.role() == "single",
        agents,
    }
}

/// Evaluates the failover path at start and every `every`, on every replica: exported, kept for
/// `/v1/state`, logged, and a change told to people once (by the acting replica).
fn spawn_readiness(
    evaluator: crate::readiness::Evaluator,
    every: Duration,
    metrics: crate::readiness::ReadinessMetrics,
    state: &ResponderState,
    notifiers: Vec<Arc<dyn Notifier>>,
    shutdown: Shutdown,
) -> tokio::task::JoinHandle<()> {
    let state = state.clone();
    let mut stop = shutdown;
    tokio::spawn(async move {
        let mut t = tokio::time::interval(every);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut changes = crate::readiness::Changes::default();
        loop {
            tokio::select! {
                _ = t.tick() => {}
                _ = stop.wait() => return,
            }
            let view = crate::readiness::Agents::View(agents_view(&state));
            let down: Vec<String> = state
                .engine
                .snapshot()
                .health
                .iter()
                .filter(|(_, h)| h.down || h.app_down)
                .map(|(r, _)| r.clone())
                .collect();
            let report = tokio::select! {
                r = evaluator.evaluate(view, &down) => r,
                _ = stop.wait() => return,
            };
            // Stored and exported before anyone is told, so what people read agrees.
            let before = state
                .readiness
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .replace(report.clone());
            metrics.record(&report);
            // Logged when the set of failing rows changes, not at every evaluation.
            let failing = |r: Option<&crate::readiness::Report>| -> Vec<(&'static str, String)> {
                r.map(|r| r.failing().map(|x| (x.check, x.target.clone())).collect())
                    .unwrap_or_default()
            };
            if failing(before.as_ref()) != failing(Some(&report)) {
                for r in report.failing() {
                    tracing::warn!(check = r.check, target = %r.target, detail = %r.detail, fix = %r.fix, "readiness check failing");
                }
                if report.all_ok() {
                    tracing::info!(checks = report.rows.len(), "every readiness check passes");
                }
            }
            if let Some(m) = changes.update(&report, state.engine.is_leader()) {
                tracing::info!(title = %m.title, "readiness changed");
                for n in &notifiers {
                    let result = match n.send(&m).await {
                        Ok(()) => "sent",
                        Err(e) => {
                            tracing::warn!(channel = n.channel(), error = %e, "cannot send the readiness notice");
                            "failed"
                        }
                    };
                    state
                        .metrics
                        .notifications
                        .with_label_values(&[n.channel(), result])
                        .inc();
                }
            }
        }
    })
}
