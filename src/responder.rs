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
use crate::failover::notices::{self, Channels, Links};
use crate::http::responder::{router, ResponderState};
use crate::http::serve::{serve, ConnMetrics, Limits};
use crate::metrics::{register_common, ResponderMetrics};
use crate::ports::{Notifier, Step, SystemClock};
use crate::shutdown::Shutdown;

/// The configured steps, in plan order: application config, load balancers, DNS records.
pub fn steps(config: &Config) -> anyhow::Result<Vec<Arc<dyn Step>>> {
    let r = config
        .responder
        .as_ref()
        .context("the config has no [responder] section")?;
    let mut steps: Vec<Arc<dyn Step>> = vec![Arc::new(app_config::AppConfigStep::new(&r.app))];
    if let Some(d) = &r.digitalocean {
        let client =
            Arc::new(digitalocean::DoClient::new(d).context("building the DigitalOcean client")?);
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
    let request_timeout = r
        .digitalocean
        .as_ref()
        .map_or(Duration::ZERO, |d| d.request_timeout);
    // How long a shutdown waits for the plan work in flight: one request, or one reload command.
    let grace = request_timeout.max(r.app.command_timeout) + Duration::from_secs(1);
    let registry = Registry::new();
    register_common(&registry).context("registering build and process metrics")?;
    let regions: Vec<String> = config.regions.iter().map(|x| x.name.clone()).collect();
    let steps = steps(&config)?;
    let mut kinds: Vec<&str> = steps.iter().map(|s| s.kind().as_str()).collect();
    kinds.push("live_check");
    kinds.dedup();
    let metrics = ResponderMetrics::register(&registry, &regions, &kinds)
        .context("registering responder metrics")?;
    let (store, ha): (Arc<dyn crate::ports::StateStore>, Option<Ha>) = match &r.store {
        StoreConfig::File { path } => (
            Arc::new(state_file::FileStore::open(path).context("opening the state store")?),
            None,
        ),
        StoreConfig::Dynamodb {
            table,
            region,
            endpoint,
            replica,
            lease,
            renew,
            timeout,
            ..
        } => {
            let mut b = aws_sdk_dynamodb::config::Builder::from(&shared)
                .region(aws_sdk_dynamodb::config::Region::new(region.clone()))
                .timeout_config(
                    aws_sdk_dynamodb::config::timeout::TimeoutConfig::builder()
                        .operation_timeout(*timeout)
                        .connect_timeout(*timeout)
                        .build(),
                );
            if let Some(ep) = endpoint {
                b = b.endpoint_url(ep);
            }
            let ddb = Arc::new(state_dynamodb::DynamoStore::new(
                aws_sdk_dynamodb::Client::from_conf(b.build()),
                table,
                *timeout,
            ));
            ddb.check_table()
                .await
                .map_err(|e| anyhow::anyhow!("the state table cannot be used: {e}"))?;
            let ha = Ha {
                lease: ddb.clone(),
                replica: replica.clone(),
                duration: *lease,
                renew_every: *renew,
                margin: r.store.lease_margin(request_timeout),
            };
            (ddb, Some(ha))
        }
    };
    let notifiers: Vec<Arc<dyn Notifier>> = notify::from_config(&r.notify)
        .into_iter()
        .map(Arc::from)
        .collect();
    let policy = r.policy(&config.regions);
    let notices = notices::spawn(Channels {
        notifiers,
        lag: r
            .prometheus_url
            .as_deref()
            .map(|u| Arc::new(prom::PrometheusLag::new(u)) as Arc<dyn crate::ports::LagSource>),
        links: Links {
            responder: r
                .public_url
                .clone()
                .or_else(|| Some(format!("http://{}", r.listen))),
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
    };
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
        shutdown.clone(),
    )
    .await
    .context("serving HTTP")?;
    let _ = ticker.await;
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
