//! Replication probe: read this prober's canaries from one region (the target) that were written
//! to the other regions (the sources), and report how far the target is behind each source.
//!
//! The lag is the age of the oldest acknowledged canary write to the source that the target does
//! not show yet, 0 when it shows the latest. Both ends of that figure are read on this prober's
//! own monotonic clock (when the write was acknowledged, when the read saw it missing), so clock
//! skew between machines never enters it.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes};
use tokio::time::Instant;

use super::write::SEQ_ATTR;
use super::{canary_key, classify, ProbeResult, Target};

/// How many acknowledged writes per source are remembered while some target has not seen them.
const LEDGER_CAP: usize = 4096;

/// Acknowledged canary writes of one table to one source region, oldest first.
#[derive(Debug)]
pub struct Ledger {
    writes: VecDeque<(u64, Instant)>,
    /// Highest sequence each target region has shown, to know what can be forgotten.
    seen: HashMap<String, u64>,
}

impl Ledger {
    /// A ledger whose writes are kept until every one of `targets` has shown them.
    pub fn new(targets: &[String]) -> Self {
        Self {
            writes: VecDeque::new(),
            seen: targets.iter().map(|t| (t.clone(), 0)).collect(),
        }
    }

    pub fn acknowledged(&mut self, seq: u64, at: Instant) {
        self.writes.push_back((seq, at));
        if self.writes.len() > LEDGER_CAP {
            self.writes.pop_front();
        }
    }

    /// Records that `target` shows `seen_seq` and answers the lag at `now`.
    pub fn lag(&mut self, target: &str, seen_seq: u64, now: Instant) -> std::time::Duration {
        let Some(entry) = self.seen.get_mut(target) else {
            return std::time::Duration::ZERO;
        };
        *entry = (*entry).max(seen_seq);
        let seen = *entry;
        let lag = self
            .writes
            .iter()
            .find(|(seq, _)| *seq > seen)
            .map(|(_, at)| now.saturating_duration_since(*at))
            .unwrap_or_default();
        // Forget writes every target has shown.
        let min_seen = self.seen.values().min().copied().unwrap_or(0);
        while matches!(self.writes.front(), Some((seq, _)) if *seq <= min_seen) {
            self.writes.pop_front();
        }
        lag
    }
}

/// Ledgers of one table, one per source region.
#[derive(Debug)]
pub struct TableLedgers {
    by_source: Mutex<HashMap<String, Ledger>>,
}

impl TableLedgers {
    /// One ledger per region as a source, with every other region as its targets.
    pub fn new(regions: &[String]) -> Self {
        let by_source = regions
            .iter()
            .map(|s| {
                let targets: Vec<String> = regions.iter().filter(|t| *t != s).cloned().collect();
                (s.clone(), Ledger::new(&targets))
            })
            .collect();
        Self {
            by_source: Mutex::new(by_source),
        }
    }

    pub fn acknowledged(&self, source: &str, seq: u64, at: Instant) {
        let mut map = self.by_source.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = map.get_mut(source) {
            l.acknowledged(seq, at);
        }
    }

    /// The lag of `target` behind `source`, given the sequence number `target` shows.
    pub fn lag(&self, source: &str, target: &str, seen: u64, now: Instant) -> std::time::Duration {
        let mut map = self.by_source.lock().unwrap_or_else(|p| p.into_inner());
        map.get_mut(source)
            .map(|l| l.lag(target, seen, now))
            .unwrap_or_default()
    }
}

/// Reads the canaries of `sources` from `target` in one BatchGetItem. Answers, per source, the
/// sequence number the target shows (0 when the canary has not arrived at all).
pub async fn probe(
    target: &Target,
    prefix: &str,
    prober: &str,
    sources: &[String],
) -> Result<Vec<(String, u64)>, ProbeResult> {
    let mut keys = KeysAndAttributes::builder().consistent_read(true);
    for s in sources {
        keys = keys.keys(HashMap::from([(
            target.table.key_attribute.clone(),
            AttributeValue::S(canary_key(prefix, prober, s)),
        )]));
    }
    let keys = keys.build().map_err(|_| ProbeResult::ClientError)?;
    let out = target
        .client
        .batch_get_item()
        .request_items(&target.table.name, keys)
        .send()
        .await
        .map_err(|e| classify(&e))?;
    if out
        .unprocessed_keys
        .as_ref()
        .is_some_and(|u| u.values().any(|k| !k.keys.is_empty()))
    {
        return Err(ProbeResult::Throttled);
    }
    let items = out
        .responses
        .and_then(|mut r| r.remove(&target.table.name))
        .unwrap_or_default();
    let mut seen: HashMap<String, u64> = HashMap::new();
    for item in items {
        let key = match item.get(&target.table.key_attribute) {
            Some(AttributeValue::S(k)) => k.clone(),
            _ => continue,
        };
        let seq = match item.get(SEQ_ATTR) {
            Some(AttributeValue::N(n)) => n.parse::<u64>().unwrap_or(0),
            _ => 0,
        };
        seen.insert(key, seq);
    }
    Ok(sources
        .iter()
        .map(|s| {
            let k = canary_key(prefix, prober, s);
            (s.clone(), seen.get(&k).copied().unwrap_or(0))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn lag_is_the_age_of_the_oldest_unseen_write_and_zero_when_caught_up() {
        let t0 = Instant::now();
        let mut l = Ledger::new(&["b".into()]);
        l.acknowledged(10, t0);
        l.acknowledged(20, t0 + Duration::from_secs(1));
        l.acknowledged(30, t0 + Duration::from_secs(2));
        let now = t0 + Duration::from_secs(5);
        assert_eq!(l.lag("b", 0, now), Duration::from_secs(5));
        assert_eq!(l.lag("b", 10, now), Duration::from_secs(4));
        assert_eq!(l.lag("b", 30, now), Duration::ZERO);
    }

    #[test]
    fn a_target_never_goes_back_and_seen_writes_are_forgotten() {
        let t0 = Instant::now();
        let mut l = Ledger::new(&["b".into()]);
        l.acknowledged(10, t0);
        l.acknowledged(20, t0 + Duration::from_secs(1));
        let now = t0 + Duration::from_secs(3);
        assert_eq!(l.lag("b", 20, now), Duration::ZERO);
        // An eventually consistent replica answering an older copy does not raise the lag again.
        assert_eq!(l.lag("b", 10, now), Duration::ZERO);
        assert!(l.writes.is_empty());
    }

    #[test]
    fn writes_are_kept_until_every_target_has_seen_them() {
        let t0 = Instant::now();
        let mut l = Ledger::new(&["b".into(), "c".into()]);
        l.acknowledged(10, t0);
        let now = t0 + Duration::from_secs(2);
        assert_eq!(l.lag("b", 10, now), Duration::ZERO);
        assert_eq!(l.lag("c", 0, now), Duration::from_secs(2));
        assert_eq!(l.writes.len(), 1);
    }

    #[test]
    fn the_ledger_is_bounded() {
        let t0 = Instant::now();
        let mut l = Ledger::new(&["b".into()]);
        for i in 0..(LEDGER_CAP as u64 + 10) {
            l.acknowledged(i + 1, t0);
        }
        assert_eq!(l.writes.len(), LEDGER_CAP);
    }
}
