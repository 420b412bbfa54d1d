//! The responder role: builds the engine from the config (state store, steps, live check,
//! notifiers), serves the webhook and admin API, and ticks the decision clock until shutdown.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use prometheus::Registry;
use tokio::net::TcpListener;

use crate::adapters::{
    app_config, digitalocean, live_check, notify, prometheus as prom, state_file,
};
use crate::config::Config;
use crate::failover::executor::{Engine, Links, Parts};
use crate::failover::machine::Event;
use crate::http::responder::{router, ResponderState};
use crate::metrics::{register_common, ResponderMetrics};
use crate::ports::{Notifier, Step, SystemClock};
use crate::shutdown::Shutdown;

/// How long one request (body included) may take before it is cut off.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The configured steps, in plan order: application config, load balancers, DNS records.
pub fn steps(config: &Config) -> anyhow::Result<Vec<Arc<dyn Step>>> {
    let r = config
        .responder
        .as_ref()
        .context("the config has no [responder] section")?;
    let mut steps: Vec<Arc<dyn Step>> = vec![Arc::new(app_config::AppConfigStep::new(&r.app))];
    if let Some(d) = &r.digitalocean {
        let client = Arc::new(
            digitalocean::DoClient::new(d, r.step_deadline)
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
    let registry = Registry::new();
    register_common(&registry).context("registering build and process metrics")?;
    let regions: Vec<String> = config.regions.iter().map(|x| x.name.clone()).collect();
    let steps = steps(&config)?;
    let mut kinds: Vec<&str> = steps.iter().map(|s| s.kind()).collect();
    kinds.push("live_check");
    kinds.dedup();
    let metrics = ResponderMetrics::register(&registry, &regions, &kinds)
        .context("registering responder metrics")?;
    let store = state_file::FileStore::open(&r.state_file).context("opening the state store")?;
    let notifiers: Vec<Arc<dyn Notifier>> = notify::from_config(&r.notify)
        .into_iter()
        .map(Arc::from)
        .collect();
    let parts = Parts {
        policy: r.policy(&config.regions),
        steps,
        store: Arc::new(store),
        live: Arc::new(live_check::ProbeLiveCheck::new(
            &config,
            &shared,
            r.policy.max_failback_lag,
        )),
        notifiers,
        lag: r
            .prometheus_url
            .as_deref()
            .map(|u| Arc::new(prom::PrometheusLag::new(u)) as Arc<dyn crate::ports::LagSource>),
        clock: Arc::new(SystemClock),
        metrics: metrics.clone(),
        links: Links {
            responder: r
                .public_url
                .clone()
                .or_else(|| Some(format!("http://{}", r.listen))),
            prometheus: r.prometheus_url.clone(),
        },
        step_deadline: r.step_deadline,
    };
    let engine = Engine::start(parts)
        .await
        .context("loading the failover state")?;
    let snap = engine.snapshot();
    tracing::info!(listen = %listener.local_addr()?, active = %snap.active, epoch = snap.epoch,
        paused = snap.paused, state_file = %r.state_file.display(), "responder started");

    let ticker = {
        let engine = engine.clone();
        let mut stop = shutdown.clone();
        let every = r.tick;
        tokio::spawn(async move {
            let mut t = tokio::time::interval(every);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = t.tick() => {
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
        engine,
        registry,
        metrics,
        alerts: Arc::new(r.alerts.clone()),
        webhook_token: r.webhook_token.clone(),
        admin_token: r.admin_token.clone(),
        regions: Arc::new(regions),
    };
    let app = router(state, r.max_body_bytes, REQUEST_TIMEOUT);
    let mut stop = shutdown.clone();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.wait().await })
        .await
        .context("serving HTTP")?;
    let _ = ticker.await;
    tracing::info!("responder stopped");
    Ok(())
}
