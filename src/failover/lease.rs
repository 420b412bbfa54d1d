//! Who may act. A lone responder always may. Replicas compete for one lease in the shared state
//! store ([`crate::ports::Lease`]); only the holder acts, and only while its own view of the lease
//! leaves a safety margin:
//!
//! - The lease is timed on this replica's **monotonic** clock from the instant it *sent* the
//!   renewal that succeeded, never from wall-clock arithmetic: whatever the store recorded as the
//!   expiry, this replica's deadline is earlier.
//! - It stops acting `margin` before that deadline. The margin is the longest a request already
//!   sent can take (the DigitalOcean request timeout) plus an allowance for clock skew between
//!   replicas (`responder.state.max_clock_skew`): the last request this replica sends has ended
//!   before another replica's clock says the lease expired and it may take over.
//! - On shutdown it stops acting first, waits for in-flight plan work to reach its next fence,
//!   and only then releases the lease, so the next holder never overlaps with it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::executor::Engine;
use crate::ports::{Lease, LeaseError};
use crate::shutdown::Shutdown;

/// High-availability settings: the lease every replica competes for.
pub struct Ha {
    pub lease: Arc<dyn Lease>,
    /// This replica's name (the lease holder).
    pub replica: String,
    pub duration: Duration,
    pub renew_every: Duration,
    /// How long before the lease's deadline this replica stops acting.
    pub margin: Duration,
}

/// This replica's right to act, read before every side effect. Cheap: atomics and the monotonic
/// clock.
pub struct Authority {
    replicated: bool,
    origin: Instant,
    leader: AtomicBool,
    /// Milliseconds after `origin` until which this replica may act.
    act_until_ms: AtomicU64,
    lease_epoch: AtomicU64,
    stopping: AtomicBool,
}

impl Authority {
    pub fn new(replicated: bool) -> Self {
        Self {
            replicated,
            origin: Instant::now(),
            leader: AtomicBool::new(false),
            act_until_ms: AtomicU64::new(0),
            lease_epoch: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
        }
    }

    fn since_origin_ms(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.origin).as_millis() as u64
    }

    /// True while this replica may start a side effect.
    pub fn may_act(&self) -> bool {
        !self.stopping.load(Ordering::SeqCst) && self.holds()
    }

    /// True while this replica leads (a lone responder always does), shutdown aside.
    pub fn holds(&self) -> bool {
        !self.replicated
            || (self.leader.load(Ordering::SeqCst)
                && self.since_origin_ms(Instant::now()) < self.act_until_ms.load(Ordering::SeqCst))
    }

    pub fn lease_epoch(&self) -> u64 {
        self.lease_epoch.load(Ordering::SeqCst)
    }

    /// How much longer this replica may act: None for a lone responder.
    pub fn acting_for(&self) -> Option<Duration> {
        if !self.replicated {
            return None;
        }
        let until = self.act_until_ms.load(Ordering::SeqCst);
        let now = self.since_origin_ms(Instant::now());
        Some(Duration::from_millis(until.saturating_sub(now)))
    }

    /// Whether [`Authority::stop`] was called.
    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// No side effect starts after this.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// The store granted (or renewed) the lease for `duration`, asked at `sent`.
    pub fn granted(&self, sent: Instant, duration: Duration, margin: Duration, epoch: u64) {
        let until = self.since_origin_ms(sent) + duration.saturating_sub(margin).as_millis() as u64;
        self.act_until_ms.store(until, Ordering::SeqCst);
        self.lease_epoch.store(epoch, Ordering::SeqCst);
        self.leader.store(true, Ordering::SeqCst);
    }

    /// Another replica holds the lease. Answers whether this one thought it led.
    pub fn revoked(&self) -> bool {
        self.act_until_ms.store(0, Ordering::SeqCst);
        self.leader.swap(false, Ordering::SeqCst)
    }

    /// Whether this replica still considers itself the holder (for a clean release).
    fn flagged(&self) -> bool {
        self.leader.load(Ordering::SeqCst)
    }
}

impl Engine {
    /// Competes for the lease until shutdown: renews it while held, takes it when free or
    /// expired, keeps this replica's view of the shared state fresh, and wakes the plan driver
    /// when it becomes the leader. On shutdown: stops acting, keeps renewing the lease it holds
    /// while the plan work in flight ends (up to `grace`), then releases it. Does nothing for a
    /// single responder.
    pub fn spawn_lease_loop(
        self: &Arc<Self>,
        mut shutdown: Shutdown,
        grace: Duration,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let ha = self.ha()?;
        let (every, duration, margin, replica, lease) = (
            ha.renew_every,
            ha.duration,
            ha.margin,
            ha.replica.clone(),
            ha.lease.clone(),
        );
        // Followers keep their view of the shared state fresh in a task of their own, so a slow
        // read or a busy state never delays a renewal.
        {
            let me = self.clone();
            let mut stop = shutdown.clone();
            tokio::spawn(async move {
                let mut t = tokio::time::interval(every);
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = t.tick() => {}
                        _ = stop.wait() => return,
                    }
                    if let Err(e) = me.refresh().await {
                        me.count_store_error("load");
                        tracing::error!(error = %e, "cannot read the shared state");
                    }
                }
            });
        }
        let me = self.clone();
        Some(tokio::spawn(async move {
            let mut t = tokio::time::interval(every);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut done = me.driver_done();
            // Set at shutdown: until then the loop competes for the lease; after it, it only
            // keeps the lease it holds alive while the plan work in flight ends.
            let mut draining: Option<Instant> = None;
            loop {
                tokio::select! {
                    _ = t.tick() => {}
                    _ = shutdown.wait(), if draining.is_none() => {
                        // No new side effect from now on; the one in flight may end.
                        me.authority().stop();
                        me.wake_driver();
                        draining = Some(Instant::now() + grace);
                        continue;
                    }
                    _ = done.wait_for(|d| *d), if draining.is_some() => break,
                }
                if draining.is_some_and(|until| Instant::now() >= until) {
                    break;
                }
                if draining.is_some() && !me.authority().flagged() {
                    break; // nothing held, nothing to keep
                }
                let was = me.authority().may_act();
                // The instant is taken before the wall-clock time the store records, so this
                // replica's deadline is never later than the stored expiry.
                let sent = Instant::now();
                let result = lease.acquire(&replica, me.now_ms(), duration).await;
                match result {
                    // A new leader first reads what the last one stored, so it never acts on a
                    // stale view (it would repeat the steps it did not see done).
                    Ok(_) if !was && draining.is_none() && me.refresh().await.is_err() => {
                        me.count_store_error("load");
                        tracing::error!(replica = %replica,
                            "holds the lease but cannot read the shared state; not acting yet");
                    }
                    Ok(view) => {
                        let epoch_before = me.authority().lease_epoch();
                        me.authority().granted(sent, duration, margin, view.epoch);
                        if !was && draining.is_none() {
                            if epoch_before != view.epoch {
                                tracing::warn!(replica = %replica, lease_epoch = view.epoch, "became the leader");
                            }
                            // May act again (taken, or renewed after the window had lapsed): a
                            // driver that stopped at its fence waits for exactly this.
                            me.wake_driver();
                        }
                    }
                    Err(LeaseError::HeldElsewhere) => {
                        if me.authority().revoked() {
                            tracing::error!(replica = %replica, "lost the lease to another replica; stopping before the next side effect");
                        }
                    }
                    Err(LeaseError::Unavailable(e)) => {
                        // Keep acting only until the lease we hold is within its margin.
                        me.count_store_error("lease");
                        tracing::error!(replica = %replica, error = %e, "cannot renew the lease");
                    }
                }
                me.observe_role();
            }
            if draining.is_none() {
                return; // the shutdown signal's sender went away without firing
            }
            if !me.authority().flagged() {
                return;
            }
            if *done.borrow() {
                lease.release(&replica).await;
                tracing::info!(replica = %replica, "lease released on shutdown");
            } else {
                tracing::warn!(replica = %replica,
                    "plan work did not stop within the grace period; the lease is left to expire");
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_lease_is_timed_from_the_renewal_sent_and_ends_a_margin_early() {
        let a = Authority::new(true);
        assert!(
            !a.may_act(),
            "a replica that never held the lease may not act"
        );
        let sent = Instant::now();
        tokio::time::advance(Duration::from_millis(400)).await; // the store answered late
        a.granted(sent, Duration::from_secs(3), Duration::from_secs(1), 7);
        assert!(a.may_act());
        assert_eq!(a.lease_epoch(), 7);
        // 2 s after the renewal was sent (not after it was answered), acting stops.
        tokio::time::advance(Duration::from_millis(1_550)).await;
        assert!(a.may_act());
        tokio::time::advance(Duration::from_millis(60)).await;
        assert!(!a.may_act());
        // Renewed again: acts again; stopping ends it for good.
        a.granted(
            Instant::now(),
            Duration::from_secs(3),
            Duration::from_secs(1),
            7,
        );
        assert!(a.may_act());
        a.stop();
        assert!(!a.may_act() && a.holds());
        assert!(a.revoked());
        assert!(!a.holds());
    }

    #[test]
    fn a_lone_responder_acts_until_it_stops() {
        let a = Authority::new(false);
        assert!(a.may_act());
        a.stop();
        assert!(!a.may_act());
    }
}
