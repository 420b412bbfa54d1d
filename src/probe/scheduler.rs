//! Runs every region x table pair on its own fixed-rate schedule, each pair in a task of its own:
//! a slow table or a dead region never delays another's probes.
//!
//! The pairs of one region share a phase, in groups of at most [`PROBE_GROUP`] tables, each group
//! at a random offset within the interval (drawn independently, so groups and regions may
//! coincide). A group's tables are probed in the same instant: one wake-up of the runtime for all
//! of them, with the code and data still in cache from the first probe to the last. With a phase
//! per table every probe paid for a cold start: 2.3 times the CPU per probe at 20 probes a second
//! (docs/benchmarks.md). The price is in detection on average, not in the worst case: a
//! region-wide failure used to be seen first by whichever of the region's tables came next, about
//! interval / (tables + 1) after it on average; now by the group's next round, interval / 2 on
//! average. The worst case, one interval, is the same either way, and it is what the alert rules
//! and the README's detection budget are sized for. At the same CPU, the interval could be halved.
//!
//! A round is bounded by the probe timeout, which config keeps within the interval; a round that
//! still overruns its slot makes the next slots count as missed, and they are exported as such.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, Instant};

use super::replication::TableLedgers;
use super::write::Sequence;
use super::{read, replication, write, Operation, ProbeResult, Target};
use crate::config::Config;
use crate::probe::metrics::ProbeMetrics;
use crate::shutdown::Shutdown;

/// Extra time past the configured overall timeout before the scheduler cuts a probe off itself;
/// the SDK's own operation timeout normally fires first.
const CUTOFF_MARGIN: Duration = Duration::from_millis(100);

/// At most this many of a region's tables share a phase. Each of their calls holds a connection
/// of its own while the round is in flight (HTTP/1.1), so the group bounds a wake-up's burst of
/// calls and the connections a region's client keeps open for it (with write and replication
/// probes, three per table; more while slow rounds of several groups overlap). Past it, the
/// tables are split into groups as even as can be, each with its own phase.
const PROBE_GROUP: usize = 8;

/// The group of a region's `nth` table out of `tables`.
fn probe_group(nth: usize, tables: usize) -> usize {
    let groups = tables.div_ceil(PROBE_GROUP);
    nth * groups / tables
}

/// Each pair's phase, in the pairs' order (region by region, tables in config order): one
/// `draw` per region and group, shared by the group's tables.
fn pair_phases(regions: usize, tables: usize, mut draw: impl FnMut() -> Duration) -> Vec<Duration> {
    let mut phases = Vec::with_capacity(regions * tables);
    for _ in 0..regions {
        let mut group = None;
        for nth in 0..tables {
            let g = probe_group(nth, tables);
            let phase = match group {
                Some((at, phase)) if at == g => phase,
                _ => draw(),
            };
            group = Some((g, phase));
            phases.push(phase);
        }
    }
    phases
}

/// When each probe loop last finished a round, for `/healthz`.
#[derive(Debug)]
pub struct LoopHealth {
    started: Instant,
    last_round_ms: Vec<AtomicU64>,
    stale_after: Duration,
}

impl LoopHealth {
    fn new(loops: usize, interval: Duration, timeout: Duration) -> Self {
        Self {
            started: Instant::now(),
            last_round_ms: (0..loops).map(|_| AtomicU64::new(0)).collect(),
            stale_after: interval * 2 + timeout + Duration::from_secs(1),
        }
    }

    fn mark(&self, i: usize) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.last_round_ms[i].store(ms, Ordering::Relaxed);
    }

    /// Number of loops that have not finished a round recently (0 = healthy).
    pub fn stale_loops(&self) -> usize {
        let now = self.started.elapsed().as_millis() as u64;
        let limit = self.stale_after.as_millis() as u64;
        self.last_round_ms
            .iter()
            .filter(|t| now.saturating_sub(t.load(Ordering::Relaxed)) > limit)
            .count()
    }

    pub fn loops(&self) -> usize {
        self.last_round_ms.len()
    }
}

/// Starts one task per region x table. They stop when `shutdown` fires.
pub fn spawn(
    config: &Config,
    clients: &HashMap<String, aws_sdk_dynamodb::Client>,
    metrics: ProbeMetrics,
    shutdown: Shutdown,
) -> (Vec<JoinHandle<()>>, Arc<LoopHealth>) {
    let p = &config.prober;
    let pairs: Vec<(String, crate::config::TableConfig)> = config
        .regions
        .iter()
        .flat_map(|r| config.tables.iter().map(|t| (r.name.clone(), t.clone())))
        .collect();
    let phases = pair_phases(config.regions.len(), config.tables.len(), || {
        Duration::from_millis(rand::rng().random_range(0..p.interval.as_millis().max(1) as u64))
    });
    let health = Arc::new(LoopHealth::new(pairs.len(), p.interval, p.timeout));
    let region_names: Vec<String> = config.regions.iter().map(|r| r.name.clone()).collect();
    let ledgers: HashMap<String, Arc<TableLedgers>> = config
        .tables
        .iter()
        .map(|t| (t.name.clone(), Arc::new(TableLedgers::new(&region_names))))
        .collect();
    // The phases count from the first poll of any pair's task, not from here: the exporter builds
    // more after spawning them, and a late start must not count as missed slots.
    let start = Arc::new(std::sync::OnceLock::new());
    let mut handles = Vec::with_capacity(pairs.len());
    for (i, ((region, table), phase)) in pairs.into_iter().zip(phases).enumerate() {
        let sources: Vec<String> = config
            .regions
            .iter()
            .filter(|r| r.name != region)
            .map(|r| r.name.clone())
            .collect();
        let task = PairLoop {
            index: i,
            target: Target {
                client: clients[&region].clone(),
                region,
                table: table.clone(),
            },
            sources,
            prober: p.id.clone(),
            prefix: p.canary_prefix.clone(),
            probes: p.probes,
            interval: p.interval,
            cutoff: p.timeout + CUTOFF_MARGIN,
            ledgers: ledgers[&table.name].clone(),
            metrics: metrics.clone(),
            health: health.clone(),
            last: HashMap::new(),
            sequence: Sequence::default(),
        };
        let (start, shutdown) = (start.clone(), shutdown.clone());
        handles.push(tokio::spawn(async move {
            let first = *start.get_or_init(Instant::now) + phase;
            task.run(first, shutdown).await
        }));
    }
    (handles, health)
}

struct PairLoop {
    index: usize,
    target: Target,
    sources: Vec<String>,
    prober: String,
    prefix: String,
    probes: crate::config::ProbeSet,
    interval: Duration,
    cutoff: Duration,
    ledgers: Arc<TableLedgers>,
    metrics: ProbeMetrics,
    health: Arc<LoopHealth>,
    /// Last result per operation, to log changes rather than every failure.
    last: HashMap<Operation, ProbeResult>,
    sequence: Sequence,
}

impl PairLoop {
    /// Probes at `next` and every interval after it.
    async fn run(mut self, mut next: Instant, mut shutdown: Shutdown) {
        loop {
            tokio::select! {
                _ = sleep_until(next) => {}
                _ = shutdown.wait() => return,
            }
            // A wake-up later than a whole interval means slots went by unprobed.
            next += self.interval;
            let now = Instant::now();
            while next <= now {
                self.metrics
                    .slot_missed(&self.target.region, &self.target.table.name);
                next += self.interval;
            }
            tokio::select! {
                _ = self.round() => {}
                _ = shutdown.wait() => return,
            }
            self.health.mark(self.index);
            let now = Instant::now();
            while next <= now {
                self.metrics
                    .slot_missed(&self.target.region, &self.target.table.name);
                next += self.interval;
            }
        }
    }

    async fn round(&mut self) {
        let seq = self.sequence.next(crate::clock::unix_micros());
        let t = &self.target;
        // Each SDK call's future is several kilobytes: it goes on the heap where it is made, so the
        // join below and the timeout move a pointer, not the future (moving them was 8 % of a
        // probe's instructions, callgrind).
        let read_fut = async {
            if self.probes.read {
                Some(timed(self.cutoff, Box::pin(read::probe(t))).await)
            } else {
                None
            }
        };
        let write_fut = async {
            if self.probes.write {
                let r = timed(
                    self.cutoff,
                    Box::pin(write::probe(t, &self.prefix, &self.prober, seq)),
                )
                .await;
                Some((r, Instant::now()))
            } else {
                None
            }
        };
        let repl_fut = async {
            if self.probes.replication && !self.sources.is_empty() {
                let mut seen = Vec::new();
                let (res, secs) = timed(self.cutoff, async {
                    let call = Box::pin(replication::probe(
                        t,
                        &self.prefix,
                        &self.prober,
                        &self.sources,
                    ));
                    match call.await {
                        Ok(s) => {
                            seen = s;
                            ProbeResult::Success
                        }
                        Err(r) => r,
                    }
                })
                .await;
                Some((res, secs, seen, Instant::now()))
            } else {
                None
            }
        };
        let (read_out, write_out, repl_out) = tokio::join!(read_fut, write_fut, repl_fut);

        if let Some((res, secs)) = read_out {
            self.record(Operation::Read, res, secs);
        }
        if let Some(((res, secs), acked_at)) = write_out {
            if res == ProbeResult::Success {
                self.ledgers
                    .acknowledged(&self.target.region, seq, acked_at);
            }
            self.record(Operation::Write, res, secs);
        }
        if let Some((res, secs, seen, at)) = repl_out {
            for (source, seq) in seen {
                let lag = self.ledgers.lag(&source, &self.target.region, seq, at);
                self.metrics.set_lag(
                    &self.target.table.name,
                    &source,
                    &self.target.region,
                    lag.as_secs_f64(),
                );
            }
            self.record(Operation::Replication, res, secs);
        }
    }

    fn record(&mut self, op: Operation, res: ProbeResult, secs: f64) {
        let t = &self.target;
        self.metrics
            .observe(&t.region, &t.table.name, op, res, secs);
        let before = self.last.insert(op, res);
        if before != Some(res) {
            if res == ProbeResult::Success {
                tracing::info!(region = %t.region, table = %t.table.name, operation = op.as_str(),
                    seconds = secs, "probe succeeding");
            } else {
                tracing::warn!(region = %t.region, table = %t.table.name, operation = op.as_str(),
                    result = res.as_str(), seconds = secs, "probe failing");
            }
        }
    }
}

/// Runs a probe with a hard cut-off and answers its result and duration in seconds.
async fn timed(cutoff: Duration, fut: impl Future<Output = ProbeResult>) -> (ProbeResult, f64) {
    let start = Instant::now();
    let res = tokio::time::timeout(cutoff, fut)
        .await
        .unwrap_or(ProbeResult::Timeout);
    (res, start.elapsed().as_secs_f64())
}

/// Starts one task per application check, on the prober's interval with its own random phase.
pub fn spawn_app_checks(
    checks: Vec<super::app::AppCheck>,
    metrics: crate::probe::metrics::AppProbeMetrics,
    interval: Duration,
    shutdown: Shutdown,
) -> Vec<JoinHandle<()>> {
    checks
        .into_iter()
        .map(|check| {
            let metrics = metrics.clone();
            let mut stop = shutdown.clone();
            tokio::spawn(async move {
                let phase = rand::rng().random_range(0..interval.as_millis().max(1) as u64);
                let mut next = Instant::now() + Duration::from_millis(phase);
                let mut last = None;
                loop {
                    tokio::select! {
                        _ = sleep_until(next) => {}
                        _ = stop.wait() => return,
                    }
                    next += interval;
                    let started = Instant::now();
                    let (result, detail) = tokio::select! {
                        r = tokio::time::timeout(check.cutoff(), check.probe()) => {
                            r.unwrap_or((super::app::AppResult::Timeout, "no answer".into()))
                        }
                        _ = stop.wait() => return,
                    };
                    let name = &check.config.name;
                    metrics.observe(&check.region, name, result, started.elapsed().as_secs_f64());
                    if last != Some(result) {
                        if result == super::app::AppResult::Success {
                            tracing::info!(region = %check.region, check = %name, "application check succeeding");
                        } else {
                            tracing::warn!(region = %check.region, check = %name, result = result.as_str(),
                                detail = %detail, "application check failing");
                        }
                        last = Some(result);
                    }
                    let now = Instant::now();
                    while next <= now {
                        next += interval;
                    }
                }
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_regions_tables_share_a_phase_in_groups_of_at_most_eight_split_evenly() {
        let groups = |tables: usize| -> Vec<usize> {
            let mut sizes = vec![0; tables.div_ceil(PROBE_GROUP)];
            for nth in 0..tables {
                sizes[probe_group(nth, tables)] += 1;
            }
            sizes
        };
        assert_eq!(groups(1), vec![1]);
        assert_eq!(groups(8), vec![8]);
        assert_eq!(groups(9), vec![5, 4]);
        assert_eq!(groups(10), vec![5, 5]);
        assert_eq!(groups(20), vec![7, 7, 6]);
        // Neighbours share a group (the groups are runs of the config's order).
        assert!((1..20).all(|n| probe_group(n, 20) >= probe_group(n - 1, 20)));
    }

    #[test]
    fn a_group_shares_one_drawn_phase_and_every_group_and_region_draws_its_own() {
        let mut n = 0;
        let phases = pair_phases(2, 10, || {
            n += 1;
            Duration::from_millis(n)
        });
        let ms: Vec<u64> = phases.iter().map(|d| d.as_millis() as u64).collect();
        // Region 1: tables 0-4 and 5-9; region 2 the same, with draws of its own.
        assert_eq!(ms, [[1; 5], [2; 5], [3; 5], [4; 5]].concat());
        assert_eq!(n, 4, "one draw per region and group");
        assert_eq!(pair_phases(3, 1, || Duration::ZERO).len(), 3);
    }
}
