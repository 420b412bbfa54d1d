//! The engine records what happens and publishes it. Every event goes through [`Engine::submit`]:
//! decide, store the new state durably, publish it, and only then start the effects (notices, and
//! waking the plan driver). A plan's intent is therefore stored before its first side effect, and
//! each step's outcome before the next step starts. The plan itself is carried out by
//! [`super::driver`], the lease is kept by [`super::lease`], notices are sent by
//! [`super::notices`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Mutex, Notify};
use tokio::time::Instant;

use super::lease::{Authority, Ha};
use super::machine::{decide, is_known_alert, Effect, Event, Notice, Policy, Refusal, StepSpec};
use super::notices::NoticeQueue;
use super::state::{Plan, PlanStatus, State, StepKind};
use crate::failover::metrics::ResponderMetrics;
use crate::ports::{Clock, LiveCheck, StateStore, Step, StoreError};

/// Everything the engine drives.
pub struct Parts {
    pub policy: Policy,
    pub steps: Vec<Arc<dyn Step>>,
    pub store: Arc<dyn StateStore>,
    pub live: Arc<dyn LiveCheck>,
    pub notices: NoticeQueue,
    pub clock: Arc<dyn Clock>,
    pub metrics: ResponderMetrics,
    pub step_deadline: Duration,
    /// Several replicas sharing one store: only the lease holder acts.
    pub ha: Option<Ha>,
}

/// How many times a save that lost a race to another replica is decided again.
const CAS_ATTEMPTS: usize = 8;

struct Current {
    state: State,
    version: u64,
}

pub struct Engine {
    parts: Parts,
    step_specs: Vec<StepSpec>,
    current: Mutex<Current>,
    published: watch::Sender<Arc<State>>,
    ready: AtomicBool,
    authority: Authority,
    /// Pokes the plan driver (leadership gained, a raced plan, shutdown).
    wake: Notify,
    /// True once the plan driver has ended.
    driver_done: watch::Sender<bool>,
}

/// What [`Engine::submit`] did with a batch of events.
#[derive(Debug)]
pub struct Submitted {
    /// Per event: why an operator request was refused, or None.
    pub refusals: Vec<Option<Refusal>>,
    /// Whether the state changed (and was stored); false for duplicates and repeats.
    pub changed: bool,
}

/// The engine could not record an event.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Other events held the state for longer than the caller would wait; nothing was recorded.
    #[error("the state is busy recording other events; nothing was recorded")]
    Busy,
}

impl Engine {
    /// Loads (or creates) the state. Plan work starts with [`Engine::spawn_driver`].
    pub async fn start(parts: Parts) -> Result<Arc<Engine>, StoreError> {
        let now = parts.clock.now_ms();
        let (state, version) = match parts.store.load().await? {
            Some(v) => (v.state.adopt(&parts.policy, now), v.version),
            None => {
                let s = State::initial(&parts.policy, now);
                match parts.store.save(&s, 0).await {
                    Ok(v) => (s, v),
                    // Another replica created it first.
                    Err(StoreError::Conflict { .. }) => {
                        let v = parts.store.load().await?.ok_or_else(|| {
                            StoreError::Corrupt(
                                "the state vanished after a conflicting create".into(),
                            )
                        })?;
                        (v.state.adopt(&parts.policy, now), v.version)
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        let (published, _) = watch::channel(Arc::new(state.clone()));
        let mut parts = parts;
        if !parts.policy.agents.expected.is_empty() {
            // The agents step watches the published state for the acknowledgements: it is the
            // engine's to build. It comes right after the local env file step, if there is one.
            let at = parts
                .steps
                .iter()
                .position(|s| s.kind() != StepKind::AppConfig)
                .unwrap_or(parts.steps.len());
            parts.steps.insert(
                at,
                Arc::new(super::agents::AgentsStep::new(
                    published.subscribe(),
                    parts.policy.clone(),
                )),
            );
        }
        let step_specs = parts
            .steps
            .iter()
            .map(|s| StepSpec {
                name: s.name(),
                kind: s.kind(),
            })
            .collect::<Vec<_>>();
        let replicated = parts.ha.is_some();
        let engine = Arc::new(Engine {
            parts,
            step_specs,
            current: Mutex::new(Current { state, version }),
            published,
            ready: AtomicBool::new(false),
            authority: Authority::new(replicated),
            wake: Notify::new(),
            driver_done: watch::channel(false).0,
        });
        let snapshot = engine.snapshot();
        engine.observe(&snapshot);
        engine.ready.store(true, Ordering::SeqCst);
        Ok(engine)
    }

    /// Starts the plan driver. It runs until [`Engine::stop`], on a runtime of its own (one
    /// thread): a plan's live check, API calls, fsyncs and reload commands never hold up the
    /// runtime that answers webhooks, whose acknowledgements stay fast while a plan runs. The
    /// handle finishes when the driver does.
    pub fn spawn_driver(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("plan")
            .enable_all()
            .build();
        match runtime {
            Ok(rt) => {
                let handle = rt.spawn(super::driver::run(self.clone()));
                // The plan runtime lives as long as the process: the clients the driver shares with
                // the webhooks keep connections it opened, and dropping a runtime from inside
                // another is not allowed. The handle can be awaited and aborted from any runtime.
                std::mem::forget(rt);
                handle
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot start the plan runtime: the plan driver runs beside the webhooks");
                tokio::spawn(super::driver::run(self.clone()))
            }
        }
    }

    /// Stops acting: no side effect starts after this call. Waits up to `grace` for the plan
    /// driver to reach its next fence and end; answers whether it did.
    pub async fn stop(&self, grace: Duration) -> bool {
        self.authority.stop();
        self.wake.notify_one();
        let mut done = self.driver_done.subscribe();
        let finished = tokio::time::timeout(grace, done.wait_for(|d| *d))
            .await
            .is_ok();
        finished
    }

    pub(crate) fn authority(&self) -> &Authority {
        &self.authority
    }

    pub(crate) fn ha(&self) -> Option<&Ha> {
        self.parts.ha.as_ref()
    }

    pub(crate) fn live(&self) -> &dyn LiveCheck {
        self.parts.live.as_ref()
    }

    pub(crate) fn step(&self, name: &str) -> Option<Arc<dyn Step>> {
        self.parts.steps.iter().find(|s| s.name() == name).cloned()
    }

    pub(crate) fn step_deadline(&self) -> Duration {
        self.parts.step_deadline
    }

    pub(crate) fn now_ms(&self) -> u64 {
        self.parts.clock.now_ms()
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<Arc<State>> {
        self.published.subscribe()
    }

    pub(crate) fn wake_driver(&self) {
        self.wake.notify_one();
    }

    pub(crate) async fn driver_woken(&self) {
        self.wake.notified().await
    }

    pub(crate) fn driver_done(&self) -> watch::Receiver<bool> {
        self.driver_done.subscribe()
    }

    pub(crate) fn driver_finished(&self) {
        self.driver_done.send_replace(true);
    }

    /// Whether a stored plan names the configured steps, in order.
    pub(crate) fn plan_matches_config(&self, plan: &Plan) -> bool {
        plan.steps.len() == self.step_specs.len()
            && plan
                .steps
                .iter()
                .zip(&self.step_specs)
                .all(|(a, b)| a.name == b.name)
    }

    pub(crate) fn observe_duration(&self, step: &str, started: Instant) {
        self.parts
            .metrics
            .step_duration
            .with_label_values(&[step])
            .observe(started.elapsed().as_secs_f64());
    }

    pub(crate) fn count_step_failure(&self, step: &str, reason: &str) {
        self.parts
            .metrics
            .step_failures
            .with_label_values(&[step, reason])
            .inc();
    }

    pub(crate) fn count_store_error(&self, op: &str) {
        self.parts
            .metrics
            .store_errors
            .with_label_values(&[op])
            .inc();
    }

    pub(crate) fn observe_role(&self) {
        self.parts
            .metrics
            .leader
            .set(i64::from(self.authority.holds()));
    }

    /// True while this replica leads: always for a single responder; for replicas, while it
    /// holds its lease with the safety margin to spare.
    pub fn is_leader(&self) -> bool {
        self.authority.holds()
    }

    /// `single`, `leader` or `follower`, for `/readyz` and `/v1/state`.
    pub fn role(&self) -> &'static str {
        match (&self.parts.ha, self.is_leader()) {
            (None, _) => "single",
            (Some(_), true) => "leader",
            (Some(_), false) => "follower",
        }
    }

    pub fn replica(&self) -> Option<&str> {
        self.parts.ha.as_ref().map(|h| h.replica.as_str())
    }

    /// The name this responder acts under: its replica name, or `single`.
    pub fn replica_name(&self) -> &str {
        self.replica().unwrap_or("single")
    }

    pub fn lease_epoch(&self) -> u64 {
        self.authority.lease_epoch()
    }

    /// Reads the shared state; adopts it if another replica stored a newer version (which wakes
    /// the plan driver through the published state).
    pub(crate) async fn refresh(&self) -> Result<(), StoreError> {
        if let Some(v) = self.parts.store.load().await? {
            let mut cur = self.current.lock().await;
            if v.version > cur.version {
                cur.state = v.state.adopt(&self.parts.policy, self.parts.clock.now_ms());
                cur.version = v.version;
                let snap = Arc::new(cur.state.clone());
                self.published.send_replace(snap.clone());
                self.observe(&snap);
            }
        }
        Ok(())
    }

    /// The latest stored state.
    pub fn snapshot(&self) -> Arc<State> {
        self.published.borrow().clone()
    }

    pub fn ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// Decides every event in order, stores the result once, then starts the effects. Answers the
    /// refusal reason of each event (None when accepted). Nothing is changed if storing fails.
    pub async fn submit(self: &Arc<Self>, events: &[Event]) -> Result<Submitted, SubmitError> {
        self.submit_within(events, None).await
    }

    /// Like [`Engine::submit`], but gives up with [`SubmitError::Busy`] when the state has not
    /// been free for `wait` (for callers that answer a client, which can then retry). Once the
    /// store has been asked to save, the answer is awaited: the store's own timeout bounds it.
    pub async fn submit_within(
        self: &Arc<Self>,
        events: &[Event],
        wait: Option<Duration>,
    ) -> Result<Submitted, SubmitError> {
        // Fast path for repeats and duplicates: alerts the latest published state already
        // accounts for are durable already and change nothing. (A replica's published state can
        // lag another replica's writes by one refresh; an alert that state has since expired or
        // evicted is sent again by Alertmanager within its repeat interval. Time-based follow-ups
        // are the ticker's job.)
        let nothing = || Submitted {
            refusals: vec![None; events.len()],
            changed: false,
        };
        let mut seen = self.published.subscribe();
        if self.changes_nothing(events) {
            return Ok(nothing());
        }
        // Wait for the lock, but a burst of copies of one new alert need not queue on it behind
        // the first copy's write: each state published meanwhile is checked, and once it
        // accounts for these alerts they are answered at once, all together.
        let lock = self.current.lock();
        tokio::pin!(lock);
        let give_up = tokio::time::sleep(wait.unwrap_or(Duration::from_secs(365 * 24 * 3600)));
        tokio::pin!(give_up);
        let mut cur = loop {
            tokio::select! {
                biased;
                guard = &mut lock => break guard,
                _ = &mut give_up, if wait.is_some() => return Err(SubmitError::Busy),
                changed = seen.changed() => {
                    if changed.is_err() {
                        break lock.await;
                    }
                    if self.changes_nothing(events) {
                        return Ok(nothing());
                    }
                }
            }
        };
        let mut attempt = 0;
        let mut raced = false;
        let (answers, effects, changed) = loop {
            attempt += 1;
            let now = self.parts.clock.now_ms();
            let mut state = cur.state.clone();
            let mut effects = Vec::new();
            let mut answers = Vec::with_capacity(events.len());
            for e in events {
                let d = decide(&state, e, now, &self.parts.policy, &self.step_specs);
                answers.push(d.rejected);
                state = d.state;
                effects.extend(d.effects);
            }
            let changed = state != cur.state;
            if changed {
                let saved = match self.parts.store.save(&state, cur.version).await {
                    // The answer was lost (a timeout), but the write may have landed: look, so a
                    // stored change is never answered as a refusal and its effects not lost.
                    Err(StoreError::Unavailable(why)) => match self.parts.store.load().await {
                        Ok(Some(v)) if v.version == cur.version + 1 && v.state == state => {
                            tracing::warn!(error = %why, "a save's answer was lost, but it was stored");
                            Ok(v.version)
                        }
                        _ => Err(StoreError::Unavailable(why)),
                    },
                    other => other,
                };
                match saved {
                    Ok(version) => {
                        cur.version = version;
                        cur.state = state.clone();
                        let snap = Arc::new(state);
                        self.published.send_replace(snap.clone());
                        self.observe(&snap);
                    }
                    // Another replica stored first: decide again on what it stored.
                    Err(StoreError::Conflict { .. }) if attempt < CAS_ATTEMPTS => {
                        raced = true;
                        if let Some(v) = self.parts.store.load().await? {
                            cur.state = v.state.adopt(&self.parts.policy, now);
                            cur.version = v.version;
                            let snap = Arc::new(cur.state.clone());
                            self.published.send_replace(snap.clone());
                            self.observe(&snap);
                        }
                        continue;
                    }
                    Err(e) => {
                        self.count_store_error("save");
                        return Err(e.into());
                    }
                }
            }
            break (answers, effects, changed);
        };
        drop(cur);
        if raced {
            // A plan another replica recorded may be ours to carry out: look now, not at the
            // next refresh.
            self.wake_driver();
        }
        self.run_effects(effects);
        Ok(Submitted {
            refusals: answers,
            changed,
        })
    }

    fn changes_nothing(&self, events: &[Event]) -> bool {
        let now = self.parts.clock.now_ms();
        let snap = self.published.borrow();
        !events.is_empty()
            && events
                .iter()
                .all(|e| is_known_alert(&snap, e, now, &self.parts.policy))
    }

    fn observe(&self, s: &State) {
        let m = &self.parts.metrics;
        for r in &self.parts.policy.regions {
            m.active_region
                .with_label_values(&[r])
                .set(i64::from(*r == s.active));
            m.region_down
                .with_label_values(&[r])
                .set(i64::from(s.health.get(r).is_some_and(|h| h.down)));
        }
        m.epoch.set(s.epoch as i64);
        m.leader.set(i64::from(self.authority.holds()));
        m.paused.set(i64::from(s.paused));
        m.blocked.set(i64::from(s.blocked.is_some()));
        m.plan_in_progress.set(match &s.plan {
            None => 0,
            Some(p) if p.status == PlanStatus::Failed => 2,
            Some(_) => 1,
        });
        m.placement_epoch.set(super::machine::placement(s).1 as i64);
        for name in self.parts.policy.agents.expected.keys() {
            let applied = s.agents.get(name).filter(|a| a.ok).map_or(0, |a| a.epoch);
            m.agent_applied_epoch
                .with_label_values(&[name])
                .set(applied as i64);
        }
    }

    /// The policy the engine decides with.
    pub(crate) fn policy(&self) -> &Policy {
        &self.parts.policy
    }

    /// Notices go to the notice queue (in decision order); plan work is the driver's, which reads
    /// it from the published state and is only woken here.
    fn run_effects(&self, effects: Vec<Effect>) {
        let mut plan_work = false;
        for e in effects {
            match e {
                Effect::Notify(n) => {
                    self.count_transition(&n);
                    self.parts.notices.push(n, self.snapshot());
                }
                Effect::CheckTarget { .. } | Effect::RunSteps { .. } => plan_work = true,
            }
        }
        if plan_work {
            self.wake_driver();
        }
    }

    fn count_transition(&self, n: &Notice) {
        use super::machine::NoticeKind;
        let result = match n.kind {
            k if k.completes_a_move() => "completed",
            NoticeKind::StepFailed => "failed",
            NoticeKind::TargetRejected => "target_rejected",
            NoticeKind::Blocked => "blocked",
            _ => return,
        };
        let trigger = n.trigger.map_or("none", |t| t.as_str());
        self.parts
            .metrics
            .transitions
            .with_label_values(&[
                n.from.as_deref().unwrap_or("none"),
                n.to.as_deref().unwrap_or("none"),
                trigger,
                result,
            ])
            .inc();
    }
}

#[cfg(test)]
mod tests;
