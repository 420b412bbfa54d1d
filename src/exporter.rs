//! The exporter role: builds one client per region, starts the probe loops and serves their
//! metrics until shutdown.

use std::collections::HashMap;

use anyhow::Context;
use prometheus::Registry;
use tokio::net::TcpListener;

use crate::aws;
use crate::config::Config;
use crate::http::{exporter_router, ExporterState};
use crate::metrics::register_common;
use crate::probe::metrics::ProbeMetrics;
use crate::probe::{scheduler, Operation};
use crate::shutdown::Shutdown;

/// Runs the exporter on `listener` until `shutdown` fires. `shared` carries the AWS credentials
/// (from [`aws::load_shared`] in production, static ones in tests).
pub async fn run(
    config: Config,
    shared: aws_config::SdkConfig,
    listener: TcpListener,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let registry = Registry::new();
    register_common(&registry).context("registering build and process metrics")?;
    let tls = config
        .exporter
        .tls
        .as_ref()
        .map(|t| -> anyhow::Result<_> {
            let m = crate::tls::TlsFamilies::register(&registry)?;
            crate::tls::ServerTls::load("exporter", t, Some(m.of("exporter")))
        })
        .transpose()?;
    let mut operations = Vec::new();
    let p = config.prober.probes;
    if p.read {
        operations.push(Operation::Read);
    }
    if p.write {
        operations.push(Operation::Write);
    }
    if p.replication && config.regions.len() > 1 {
        operations.push(Operation::Replication);
    }
    let regions: Vec<String> = config.regions.iter().map(|r| r.name.clone()).collect();
    let tables: Vec<String> = config.tables.iter().map(|t| t.name.clone()).collect();
    let metrics = ProbeMetrics::register(
        &registry,
        &config.prober.id,
        &regions,
        &config.tables,
        &operations,
        config.prober.interval,
    )
    .context("registering probe metrics")?;

    let clients: HashMap<String, aws_sdk_dynamodb::Client> = config
        .regions
        .iter()
        .map(|r| {
            (
                r.name.clone(),
                aws::probe_client(&shared, r, &config.prober),
            )
        })
        .collect();
    let (mut tasks, health) = scheduler::spawn(&config, &clients, metrics, shutdown.clone());
    let checks = config
        .regions
        .iter()
        .flat_map(|r| r.app_checks.iter().map(move |c| (r.name.clone(), c)))
        .map(|(region, c)| crate::probe::app::AppCheck::new(&region, c))
        .collect::<anyhow::Result<Vec<_>>>()
        .context("building the application checks")?;
    if !checks.is_empty() {
        let names: Vec<(String, String)> = checks
            .iter()
            .map(|c| (c.region.clone(), c.config.name.clone()))
            .collect();
        let app_metrics =
            crate::probe::metrics::AppProbeMetrics::register(&registry, &config.prober.id, &names)
                .context("registering application check metrics")?;
        tasks.extend(scheduler::spawn_app_checks(
            checks,
            app_metrics,
            config.prober.interval,
            shutdown.clone(),
        ));
    }
    tracing::info!(
        prober = %config.prober.id,
        listen = %listener.local_addr()?,
        regions = regions.len(),
        tables = tables.len(),
        probes = %config.prober.probes,
        interval = %crate::config::fmt_duration(config.prober.interval),
        "exporter started"
    );

    let app = exporter_router(ExporterState { registry, health });
    crate::http::serve::serve(
        listener,
        app,
        crate::http::serve::Limits::default(),
        None,
        tls,
        shutdown.clone(),
    )
    .await
    .context("serving HTTP")?;
    for t in tasks {
        let _ = t.await;
    }
    tracing::info!("exporter stopped");
    Ok(())
}
