//! What every role's metrics share: the build and process families, the latency buckets and the
//! text encoder. Each role's own families live with it: [`crate::probe::metrics`] and
//! [`crate::failover::metrics`].

use prometheus::{Encoder, IntGauge, Opts, Registry, TextEncoder};

/// Latency buckets of every duration histogram: 1 ms to 10 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Registers `dynamo_failover_build_info` and the process collector (CPU, memory, fds).
pub fn register_common(registry: &Registry) -> prometheus::Result<()> {
    let build = IntGauge::with_opts(
        Opts::new(
            "dynamo_failover_build_info",
            "Build of the running binary; always 1.",
        )
        .const_label("version", env!("CARGO_PKG_VERSION"))
        .const_label("rustc_target_os", std::env::consts::OS),
    )?;
    build.set(1);
    registry.register(Box::new(build))?;
    #[cfg(target_os = "linux")]
    registry.register(Box::new(
        prometheus::process_collector::ProcessCollector::for_self(),
    ))?;
    Ok(())
}

/// Renders a registry in the Prometheus text format.
pub fn render(registry: &Registry) -> String {
    let mut buf = Vec::with_capacity(16 * 1024);
    let encoder = TextEncoder::new();
    if let Err(e) = encoder.encode(&registry.gather(), &mut buf) {
        tracing::error!(error = %e, "cannot encode metrics");
    }
    String::from_utf8(buf).unwrap_or_default()
}
