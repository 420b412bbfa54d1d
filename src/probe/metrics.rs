//! The probers' metric families. Label values come from enums or from the validated config, so
//! the number of series is fixed by the config and cannot grow with traffic or errors; every
//! series the config implies is created at start.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

use super::{Operation, ProbeResult};
use crate::metrics::LATENCY_BUCKETS;

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
        interval: std::time::Duration,
    ) -> prometheus::Result<Self> {
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "dynamodb_probe_duration_seconds",
                "Duration of each DynamoDB probe, including retries, successful or not.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
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
        // Constant too: the spacing of the canaries, so that readers of the lag (the responder's
        // data at risk) know its resolution.
        let spacing = prometheus::GaugeVec::new(
            Opts::new(
                "dynamodb_probe_interval_seconds",
                "Seconds between two probe rounds of this prober (prober.interval): the resolution \
                 of dynamodb_replication_lag_seconds.",
            ),
            &["prober"],
        )?;
        registry.register(Box::new(spacing.clone()))?;
        spacing
            .with_label_values(&[prober])
            .set(interval.as_secs_f64());

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

/// The application checks' families (`app_probe_*`), every series the config implies created at
/// start.
#[derive(Clone)]
pub struct AppProbeMetrics {
    prober: String,
    pub duration: HistogramVec,
    pub success: IntGaugeVec,
    pub total: IntCounterVec,
}

impl AppProbeMetrics {
    pub fn register(
        registry: &Registry,
        prober: &str,
        checks: &[(String, String)],
    ) -> prometheus::Result<Self> {
        let labels = ["prober", "region", "check"];
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "app_probe_duration_seconds",
                "Duration of each application check, successful or not.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &labels,
        )?;
        let success = IntGaugeVec::new(
            Opts::new(
                "app_probe_success",
                "1 if the last application check succeeded, 0 if it failed.",
            ),
            &labels,
        )?;
        let total = IntCounterVec::new(
            Opts::new(
                "app_probe_total",
                "Application checks run, by result (success or the kind of failure).",
            ),
            &["prober", "region", "check", "result"],
        )?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(success.clone()))?;
        registry.register(Box::new(total.clone()))?;
        for (region, check) in checks {
            duration.with_label_values(&[prober, region, check]);
            for r in super::app::AppResult::ALL {
                total.with_label_values(&[prober, region, check, r.as_str()]);
            }
        }
        Ok(Self {
            prober: prober.to_string(),
            duration,
            success,
            total,
        })
    }

    pub fn observe(&self, region: &str, check: &str, result: super::app::AppResult, secs: f64) {
        let l = [self.prober.as_str(), region, check];
        self.duration.with_label_values(&l).observe(secs);
        self.total
            .with_label_values(&[l[0], l[1], l[2], result.as_str()])
            .inc();
        self.success
            .with_label_values(&l)
            .set(i64::from(result == super::app::AppResult::Success));
    }
}
