//! The exporter's metric families. Label values come from enums or from the validated config,
//! so the number of series is fixed by the config and cannot grow with traffic or errors.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::probe::{Operation, ProbeResult};

/// Probe latency buckets: 1 ms to 10 s.
pub const PROBE_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Everything the probers publish.
#[derive(Clone)]
pub struct ProbeMetrics {
    prober: String,
    pub duration: HistogramVec,
    pub success: IntGaugeVec,
    pub total: IntCounterVec,
    pub last_success: prometheus::GaugeVec,
    pub replication_lag: prometheus::GaugeVec,
    pub slots_missed: IntCounterVec,
}

impl ProbeMetrics {
    /// Registers the families on `registry` and creates every series the config implies, so that
    /// `rate()` and `increase()` see a zero before the first failure.
    pub fn register(
        registry: &Registry,
        prober: &str,
        regions: &[String],
        tables: &[crate::config::TableConfig],
        operations: &[Operation],
    ) -> prometheus::Result<Self> {
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "dynamodb_probe_duration_seconds",
                "Duration of each DynamoDB probe, including retries, successful or not.",
            )
            .buckets(PROBE_BUCKETS.to_vec()),
            &["prober", "region", "table", "operation"],
        )?;
        let success = IntGaugeVec::new(
            Opts::new(
                "dynamodb_probe_success",
                "1 if the last probe of this kind succeeded, 0 if it failed.",
            ),
            &["prober", "region", "table", "operation"],
        )?;
        let total = IntCounterVec::new(
            Opts::new(
                "dynamodb_probe_total",
                "Probes run, by result (success or the kind of failure).",
            ),
            &["prober", "region", "table", "operation", "result"],
        )?;
        let last_success = prometheus::GaugeVec::new(
            Opts::new(
                "dynamodb_probe_last_success_timestamp_seconds",
                "Unix time of the last successful probe of this kind.",
            ),
            &["prober", "region", "table", "operation"],
        )?;
        let replication_lag = prometheus::GaugeVec::new(
            Opts::new(
                "dynamodb_replication_lag_seconds",
                "Age of the oldest canary write to source_region not yet visible in target_region, \
                 timed on this prober's clock at both ends (0 when fully caught up).",
            ),
            &["prober", "table", "source_region", "target_region"],
        )?;
        let slots_missed = IntCounterVec::new(
            Opts::new(
                "dynamodb_probe_slots_missed_total",
                "Probe rounds skipped because the previous round of the same region and table was still running.",
            ),
            &["prober", "region", "table"],
        )?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(success.clone()))?;
        registry.register(Box::new(total.clone()))?;
        registry.register(Box::new(last_success.clone()))?;
        registry.register(Box::new(replication_lag.clone()))?;
        registry.register(Box::new(slots_missed.clone()))?;
        // Constant for the process's life: which tables the rules let vote.
        let required = IntGaugeVec::new(
            Opts::new(
                "dynamodb_probe_table_required",
                "1 if failures of this table vote its region down (table.required), 0 if not.",
            ),
            &["prober", "region", "table"],
        )?;
        registry.register(Box::new(required.clone()))?;

        for region in regions {
            for t in tables {
                let table = &t.name;
                required
                    .with_label_values(&[prober, region, table])
                    .set(i64::from(t.required));
                slots_missed.with_label_values(&[prober, region, table]);
                for op in operations {
                    let l = [prober, region.as_str(), table.as_str(), op.as_str()];
                    duration.with_label_values(&l);
                    for r in ProbeResult::ALL {
                        total.with_label_values(&[l[0], l[1], l[2], l[3], r.as_str()]);
                    }
                }
            }
        }
        Ok(Self {
            prober: prober.to_string(),
            duration,
            success,
            total,
            last_success,
            replication_lag,
            slots_missed,
        })
    }

    /// Records one finished probe.
    pub fn observe(
        &self,
        region: &str,
        table: &str,
        op: Operation,
        result: ProbeResult,
        seconds: f64,
    ) {
        let l = [self.prober.as_str(), region, table, op.as_str()];
        self.duration.with_label_values(&l).observe(seconds);
        self.total
            .with_label_values(&[l[0], l[1], l[2], l[3], result.as_str()])
            .inc();
        let ok = result == ProbeResult::Success;
        self.success.with_label_values(&l).set(i64::from(ok));
        if ok {
            self.last_success
                .with_label_values(&l)
                .set(crate::clock::unix_seconds_f64());
        }
    }

    pub fn set_lag(&self, table: &str, source: &str, target: &str, seconds: f64) {
        self.replication_lag
            .with_label_values(&[self.prober.as_str(), table, source, target])
            .set(seconds);
    }

    pub fn slot_missed(&self, region: &str, table: &str) {
        self.slots_missed
            .with_label_values(&[self.prober.as_str(), region, table])
            .inc();
    }
}

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

/// The responder's own metrics, which Prometheus alerts on.
#[derive(Clone)]
pub struct ResponderMetrics {
    pub active_region: IntGaugeVec,
    pub region_down: IntGaugeVec,
    pub epoch: IntGauge,
    pub paused: IntGauge,
    pub blocked: IntGauge,
    pub plan_in_progress: IntGauge,
    pub leader: IntGauge,
    pub store_errors: IntCounterVec,
    pub transitions: IntCounterVec,
    pub step_duration: HistogramVec,
    pub step_failures: IntCounterVec,
    pub webhook_requests: IntCounterVec,
    pub notifications: IntCounterVec,
    pub connections_open: IntGauge,
    pub connections_refused: prometheus::IntCounter,
}

/// What became of one webhook request: the bounded `result` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookResult {
    /// Recorded (or already known); 200.
    Accepted,
    /// No or wrong bearer token; 401.
    Unauthorized,
    /// Malformed body or payload; 400.
    BadRequest,
    /// Over the body size limit; 413.
    TooLarge,
    /// Not `application/json`; 415.
    UnsupportedMediaType,
    /// The body did not arrive within the request timeout; 408.
    BodyTimeout,
    /// Other events held the state for longer than the request timeout; 503, Alertmanager
    /// retries.
    Busy,
    /// The state store could not record the events; 503, Alertmanager retries.
    Unavailable,
}

impl WebhookResult {
    pub const ALL: [WebhookResult; 8] = [
        WebhookResult::Accepted,
        WebhookResult::Unauthorized,
        WebhookResult::BadRequest,
        WebhookResult::TooLarge,
        WebhookResult::UnsupportedMediaType,
        WebhookResult::BodyTimeout,
        WebhookResult::Busy,
        WebhookResult::Unavailable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WebhookResult::Accepted => "accepted",
            WebhookResult::Unauthorized => "unauthorized",
            WebhookResult::BadRequest => "bad_request",
            WebhookResult::TooLarge => "too_large",
            WebhookResult::UnsupportedMediaType => "unsupported_media_type",
            WebhookResult::BodyTimeout => "body_timeout",
            WebhookResult::Busy => "busy",
            WebhookResult::Unavailable => "unavailable",
        }
    }
}

impl ResponderMetrics {
    /// Counts one webhook request under its result.
    pub fn webhook(&self, result: WebhookResult) {
        self.webhook_requests
            .with_label_values(&[result.as_str()])
            .inc();
    }

    pub fn register(
        registry: &Registry,
        regions: &[String],
        steps: &[&str],
    ) -> prometheus::Result<Self> {
        let g = |name: &str, help: &str| IntGauge::with_opts(Opts::new(name, help));
        let active_region = IntGaugeVec::new(
            Opts::new(
                "failover_active_region",
                "1 for the region traffic is in, 0 for the others.",
            ),
            &["region"],
        )?;
        let region_down = IntGaugeVec::new(
            Opts::new(
                "failover_region_down",
                "1 while a region-down alert is firing for the region, as the responder sees it.",
            ),
            &["region"],
        )?;
        let epoch = g(
            "failover_epoch",
            "Epoch (fencing token) of the latest plan.",
        )?;
        let paused = g(
            "failover_paused",
            "1 while automatic moves are paused by an operator.",
        )?;
        let blocked = g(
            "failover_blocked",
            "1 while a wanted move cannot be made (no healthy target, minimum interval, paused).",
        )?;
        let plan_in_progress = g(
            "failover_plan_in_progress",
            "1 while a plan is being checked or applied, 2 while a failed plan waits for its retry.",
        )?;
        let leader = g(
            "failover_leader",
            "1 while this responder may act (a single responder, or the replica holding the lease).",
        )?;
        let store_errors = IntCounterVec::new(
            Opts::new(
                "failover_state_store_errors_total",
                "Failed state store or lease operations, by operation.",
            ),
            &["operation"],
        )?;
        let transitions = IntCounterVec::new(
            Opts::new(
                "failover_transitions_total",
                "Transitions by outcome: completed, failed (a step failed), target_rejected (live check failed), blocked.",
            ),
            &["from", "to", "trigger", "result"],
        )?;
        let step_duration = HistogramVec::new(
            HistogramOpts::new(
                "failover_step_duration_seconds",
                "Time to apply and verify one step, retries included.",
            )
            .buckets(PROBE_BUCKETS.to_vec()),
            &["step"],
        )?;
        let step_failures = IntCounterVec::new(
            Opts::new(
                "failover_step_failures_total",
                "Step attempts that failed, by reason.",
            ),
            &["step", "reason"],
        )?;
        let webhook_requests = IntCounterVec::new(
            Opts::new(
                "failover_webhook_requests_total",
                "Alertmanager webhook requests by result.",
            ),
            &["result"],
        )?;
        let notifications = IntCounterVec::new(
            Opts::new(
                "failover_notifications_total",
                "Notifications sent, by channel and result.",
            ),
            &["channel", "result"],
        )?;
        let connections_open = g(
            "failover_http_connections_open",
            "Connections open to the responder's listener.",
        )?;
        let connections_refused = prometheus::IntCounter::new(
            "failover_http_connections_refused_total",
            "Connections closed at once because responder.max_connections were open.",
        )?;
        registry.register(Box::new(connections_open.clone()))?;
        registry.register(Box::new(connections_refused.clone()))?;
        for c in [&active_region, &region_down] {
            registry.register(Box::new(c.clone()))?;
        }
        for c in [&epoch, &paused, &blocked, &plan_in_progress, &leader] {
            registry.register(Box::new(c.clone()))?;
        }
        for c in [
            &transitions,
            &step_failures,
            &webhook_requests,
            &notifications,
            &store_errors,
        ] {
            registry.register(Box::new(c.clone()))?;
        }
        registry.register(Box::new(step_duration.clone()))?;
        for r in regions {
            active_region.with_label_values(&[r]);
            region_down.with_label_values(&[r]);
        }
        for s in steps {
            step_duration.with_label_values(&[s]);
            for r in crate::ports::FailReason::ALL {
                step_failures.with_label_values(&[s, r.as_str()]);
            }
        }
        step_failures.with_label_values(&["live_check", "target_unhealthy"]);
        for op in ["load", "save", "lease"] {
            store_errors.with_label_values(&[op]);
        }
        for r in WebhookResult::ALL {
            webhook_requests.with_label_values(&[r.as_str()]);
        }
        Ok(Self {
            active_region,
            region_down,
            epoch,
            paused,
            blocked,
            plan_in_progress,
            leader,
            store_errors,
            transitions,
            step_duration,
            step_failures,
            webhook_requests,
            notifications,
            connections_open,
            connections_refused,
        })
    }
}
