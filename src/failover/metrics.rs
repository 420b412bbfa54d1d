//! The responder's own metric families, which Prometheus alerts on. Labels are enums or come
//! from the validated config.

use prometheus::{
    HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

use crate::metrics::LATENCY_BUCKETS;

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
    /// The epoch of the placement agents should apply.
    pub placement_epoch: IntGauge,
    /// Per configured agent: the epoch it last acknowledged applying.
    pub agent_applied_epoch: IntGaugeVec,
    /// Per configured agent: when it last reached this responder (this replica's view).
    pub agent_last_seen: prometheus::GaugeVec,
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
            .buckets(LATENCY_BUCKETS.to_vec()),
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
        let placement_epoch = g(
            "failover_placement_epoch",
            "Epoch of the placement the application servers' agents should apply.",
        )?;
        let agent_applied_epoch = IntGaugeVec::new(
            Opts::new(
                "failover_agent_applied_epoch",
                "Epoch an agent last acknowledged applying (successfully).",
            ),
            &["agent"],
        )?;
        let agent_last_seen = prometheus::GaugeVec::new(
            Opts::new(
                "failover_agent_last_seen_timestamp_seconds",
                "Unix time an agent last reached this responder replica (take the max over replicas).",
            ),
            &["agent"],
        )?;
        registry.register(Box::new(placement_epoch.clone()))?;
        registry.register(Box::new(agent_applied_epoch.clone()))?;
        registry.register(Box::new(agent_last_seen.clone()))?;
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
            placement_epoch,
            agent_applied_epoch,
            agent_last_seen,
        })
    }
}
