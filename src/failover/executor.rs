//! Carries decisions out. Every event goes through [`Engine::submit`]: decide, store the new state
//! durably, publish it, and only then start the effects. A plan's intent is therefore on disk
//! before its first side effect, each step's outcome is recorded before the next step starts,
//! and on start an unfinished plan is resumed from its first step not done.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Mutex};
use tokio::time::Instant;

use super::machine::{decide, Effect, Event, Notice, NoticeKind, Policy, Refusal, StepSpec};
use super::state::{Kind, PlanStatus, State};
use crate::metrics::ResponderMetrics;
use crate::ports::{
    Clock, LagSource, Lease, LeaseError, LiveCheck, Message, Notifier, StateStore, Step, StoreError,
};
use crate::shutdown::Shutdown;

/// Where people can look, for notification links.
#[derive(Debug, Clone, Default)]
pub struct Links {
    pub responder: Option<String>,
    pub prometheus: Option<String>,
}

/// Everything the engine drives.
pub struct Parts {
    pub policy: Policy,
    pub steps: Vec<Arc<dyn Step>>,
    pub store: Arc<dyn StateStore>,
    pub live: Arc<dyn LiveCheck>,
    pub notifiers: Vec<Arc<dyn Notifier>>,
    pub lag: Option<Arc<dyn LagSource>>,
    pub clock: Arc<dyn Clock>,
    pub metrics: ResponderMetrics,
    pub links: Links,
    pub step_deadline: Duration,
    /// Several replicas sharing one store: only the lease holder acts.
    pub ha: Option<Ha>,
}

/// High-availability settings: the lease every replica competes for.
pub struct Ha {
    pub lease: Arc<dyn Lease>,
    /// This replica's name (the lease holder).
    pub replica: String,
    pub duration: Duration,
    pub renew_every: Duration,
}

/// How many times a save that lost a race to another replica is decided again.
const CAS_ATTEMPTS: usize = 8;

struct Current {
    state: State,
    version: u64,
}

pub struct Engine {
    parts: Parts,
    step_names: Vec<StepSpec>,
    current: Mutex<Current>,
    published: watch::Sender<Arc<State>>,
    /// Serialises plan work: one live check or step at a time.
    plan_lock: Mutex<()>,
    ready: AtomicBool,
    leader: AtomicBool,
    lease_until_ms: AtomicU64,
    lease_epoch: AtomicU64,
}

/// What [`Engine::submit`] did with a batch of events.
#[derive(Debug)]
pub struct Submitted {
    /// Per event: the refusal reason of an operator request, or None.
    pub refusals: Vec<Option<Refusal>>,
    /// Whether the state changed (and was stored); false for duplicates and repeats.
    pub changed: bool,
}

/// The engine could not record an event.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Engine {
    /// Loads (or creates) the state, then resumes any unfinished plan.
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
        let step_names = parts
            .steps
            .iter()
            .map(|s| StepSpec {
                name: s.name(),
                kind: s.kind(),
            })
            .collect::<Vec<_>>();
        let (published, _) = watch::channel(Arc::new(state.clone()));
        let engine = Arc::new(Engine {
            parts,
            step_names,
            current: Mutex::new(Current { state, version }),
            published,
            plan_lock: Mutex::new(()),
            ready: AtomicBool::new(false),
            leader: AtomicBool::new(false),
            lease_until_ms: AtomicU64::new(0),
            lease_epoch: AtomicU64::new(0),
        });
        let snapshot = engine.snapshot();
        engine.observe(&snapshot);
        if engine.parts.ha.is_none() {
            engine.resume(&snapshot);
        }
        engine.ready.store(true, Ordering::SeqCst);
        Ok(engine)
    }

    /// Starts the work of an unfinished plan, unless plan work is already under way.
    fn resume(self: &Arc<Self>, snapshot: &State) {
        if let Some(plan) = &snapshot.plan {
            if plan.status == PlanStatus::Failed || self.plan_lock.try_lock().is_err() {
                return; // a failed plan waits for its retry; busy means a task is on it
            }
            tracing::warn!(epoch = plan.epoch, from = %plan.from, to = %plan.to, status = ?plan.status,
                replica = self.replica().unwrap_or("single"), "resuming an unfinished plan");
            if plan.steps.len() != self.step_names.len()
                || plan
                    .steps
                    .iter()
                    .zip(&self.step_names)
                    .any(|(a, b)| a.name != b.name)
            {
                tracing::warn!(epoch = plan.epoch,
                    "the unfinished plan's steps differ from the configured steps; it resumes with the stored steps");
            }
            let effect = match plan.status {
                PlanStatus::Checking => Effect::CheckTarget { epoch: plan.epoch },
                _ => Effect::RunSteps { epoch: plan.epoch },
            };
            self.clone().run_effects(vec![effect]);
        }
    }

    /// True when this replica may act: always for a single responder; for replicas, while it
    /// holds an unexpired lease.
    pub fn is_leader(&self) -> bool {
        self.parts.ha.is_none()
            || (self.leader.load(Ordering::SeqCst)
                && self.parts.clock.now_ms() < self.lease_until_ms.load(Ordering::SeqCst))
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

    pub fn lease_epoch(&self) -> u64 {
        self.lease_epoch.load(Ordering::SeqCst)
    }

    /// Competes for the lease until shutdown: renews it while held, takes it when free or
    /// expired, and keeps this replica's view of the shared state fresh. A new leader resumes an
    /// unfinished plan. Does nothing for a single responder.
    pub fn spawn_lease_loop(
        self: &Arc<Self>,
        mut shutdown: Shutdown,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let ha = self.parts.ha.as_ref()?;
        let (every, duration, replica, lease) = (
            ha.renew_every,
            ha.duration,
            ha.replica.clone(),
            ha.lease.clone(),
        );
        let me = self.clone();
        Some(tokio::spawn(async move {
            let mut t = tokio::time::interval(every);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = t.tick() => {}
                    _ = shutdown.wait() => {
                        if me.leader.swap(false, Ordering::SeqCst) {
                            lease.release(&replica).await;
                            tracing::info!(replica = %replica, "lease released on shutdown");
                        }
                        return;
                    }
                }
                let was = me.leader.load(Ordering::SeqCst);
                match lease
                    .acquire(&replica, me.parts.clock.now_ms(), duration)
                    .await
                {
                    Ok(view) => {
                        me.lease_until_ms
                            .store(view.expires_at_ms, Ordering::SeqCst);
                        me.lease_epoch.store(view.epoch, Ordering::SeqCst);
                        me.leader.store(true, Ordering::SeqCst);
                        if !was {
                            tracing::warn!(replica = %replica, lease_epoch = view.epoch, "became the leader");
                        }
                    }
                    Err(LeaseError::HeldElsewhere) => {
                        if me.leader.swap(false, Ordering::SeqCst) {
                            tracing::error!(replica = %replica, "lost the lease to another replica; stopping before the next side effect");
                        }
                    }
                    Err(LeaseError::Unavailable(e)) => {
                        // Keep acting only until the lease we hold expires (is_leader checks).
                        me.parts
                            .metrics
                            .store_errors
                            .with_label_values(&["lease"])
                            .inc();
                        tracing::error!(replica = %replica, error = %e, "cannot renew the lease");
                    }
                }
                me.parts.metrics.leader.set(i64::from(me.is_leader()));
                if let Err(e) = me.refresh().await {
                    me.parts
                        .metrics
                        .store_errors
                        .with_label_values(&["load"])
                        .inc();
                    tracing::error!(error = %e, "cannot read the shared state");
                }
            }
        }))
    }

    /// Reads the shared state; adopts it if another replica stored a newer version. The leader
    /// then resumes an unfinished plan.
    async fn refresh(self: &Arc<Self>) -> Result<(), StoreError> {
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
        if self.is_leader() {
            let snap = self.snapshot();
            self.resume(&snap);
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
        // Fast path for repeats and duplicates: alerts the latest stored state already accounts
        // for are durable already and change nothing. Alert records only move forward, so one
        // known to this snapshot is known to any newer state. (Time-based follow-ups are the
        // ticker's job.)
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
        let mut cur = loop {
            tokio::select! {
                biased;
                guard = &mut lock => break guard,
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
                let d = decide(&state, e, now, &self.parts.policy, &self.step_names);
                answers.push(d.rejected);
                state = d.state;
                effects.extend(d.effects);
            }
            let changed = state != cur.state;
            if changed {
                match self.parts.store.save(&state, cur.version).await {
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
                        self.parts
                            .metrics
                            .store_errors
                            .with_label_values(&["save"])
                            .inc();
                        return Err(e.into());
                    }
                }
            }
            break (answers, effects, changed);
        };
        drop(cur);
        if raced && self.is_leader() {
            // A plan another replica recorded is ours to carry out: start now, not at the next
            // refresh.
            let snap = self.snapshot();
            self.resume(&snap);
        }
        self.clone().run_effects(effects);
        Ok(Submitted {
            refusals: answers,
            changed,
        })
    }

    fn changes_nothing(&self, events: &[Event]) -> bool {
        let snap = self.published.borrow();
        !events.is_empty()
            && events
                .iter()
                .all(|e| super::machine::is_known_alert(&snap, e))
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
        m.leader.set(i64::from(self.is_leader()));
        m.paused.set(i64::from(s.paused));
        m.blocked.set(i64::from(s.blocked.is_some()));
        m.plan_in_progress.set(match &s.plan {
            None => 0,
            Some(p) if p.status == PlanStatus::Failed => 2,
            Some(_) => 1,
        });
    }

    fn run_effects(self: Arc<Self>, effects: Vec<Effect>) {
        for e in effects {
            let me = self.clone();
            match e {
                Effect::Notify(n) => {
                    me.count_transition(&n);
                    tokio::spawn(async move { me.notify(n).await });
                }
                // Followers record plans; the leader carries them out (it picks them up from the
                // shared state on its next refresh).
                Effect::CheckTarget { .. } | Effect::RunSteps { .. } if !me.is_leader() => {}
                Effect::CheckTarget { epoch } => {
                    tokio::spawn(async move { me.check_target(epoch).await });
                }
                Effect::RunSteps { epoch } => {
                    tokio::spawn(async move { me.run_steps(epoch).await });
                }
            }
        }
    }

    fn count_transition(&self, n: &Notice) {
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

    async fn check_target(self: Arc<Self>, epoch: u64) {
        let guard = self.plan_lock.lock().await;
        let Some(plan) = self
            .snapshot()
            .plan
            .clone()
            .filter(|p| p.epoch == epoch && p.status == PlanStatus::Checking)
        else {
            return;
        };
        if !self.is_leader() {
            return;
        }
        let started = Instant::now();
        let res = self
            .parts
            .live
            .check(&plan.to, &plan.from, plan.kind == Kind::Failback)
            .await;
        self.parts
            .metrics
            .step_duration
            .with_label_values(&["live_check"])
            .observe(started.elapsed().as_secs_f64());
        drop(guard);
        let (ok, detail) = match res {
            Ok(d) => {
                tracing::info!(epoch, to = %plan.to, detail = %d, "live check passed");
                (true, d)
            }
            Err(d) => {
                tracing::warn!(epoch, to = %plan.to, detail = %d, "live check failed");
                self.parts
                    .metrics
                    .step_failures
                    .with_label_values(&["live_check", "target_unhealthy"])
                    .inc();
                (false, d)
            }
        };
        if let Err(e) = self.submit(&[Event::LiveCheck { epoch, ok, detail }]).await {
            tracing::error!(epoch, error = %e, "cannot record the live check; the plan resumes on restart");
        }
    }

    async fn run_steps(self: Arc<Self>, epoch: u64) {
        let _guard = self.plan_lock.lock().await;
        loop {
            // Fence: before every side effect, the plan must still be the current one and running.
            let Some(plan) = self
                .snapshot()
                .plan
                .clone()
                .filter(|p| p.epoch == epoch && p.status == PlanStatus::Running)
            else {
                return;
            };
            let Some(index) = plan.steps.iter().position(|s| !s.done) else {
                return;
            };
            if !self.is_leader() {
                tracing::error!(
                    epoch,
                    "no longer the leader; stopping before the next side effect"
                );
                return;
            }
            let Some(step) = self
                .parts
                .steps
                .iter()
                .find(|s| s.name() == plan.steps[index].name)
                .cloned()
            else {
                let detail = format!("step {} is no longer configured", plan.steps[index].name);
                let _ = self
                    .submit(&[Event::StepFailed {
                        epoch,
                        index,
                        detail,
                    }])
                    .await;
                return;
            };
            let started = Instant::now();
            let res = self
                .apply_with_retries(step.as_ref(), &plan.to, epoch)
                .await;
            self.parts
                .metrics
                .step_duration
                .with_label_values(&[step.kind().as_str()])
                .observe(started.elapsed().as_secs_f64());
            let event = match res {
                Ok(detail) => {
                    tracing::info!(epoch, step = %step.name(), to = %plan.to, detail = %detail, "step done");
                    Event::StepDone {
                        epoch,
                        index,
                        detail,
                    }
                }
                Err(detail) => {
                    tracing::error!(epoch, step = %step.name(), to = %plan.to, error = %detail, "step failed");
                    Event::StepFailed {
                        epoch,
                        index,
                        detail,
                    }
                }
            };
            let failed = matches!(event, Event::StepFailed { .. });
            if let Err(e) = self.submit(&[event]).await {
                tracing::error!(epoch, error = %e, "cannot record a step outcome; stopping before the next side effect");
                return;
            }
            if failed {
                return;
            }
        }
    }

    /// Applies one step, retrying retryable failures with backoff until the step deadline.
    async fn apply_with_retries(
        &self,
        step: &dyn Step,
        to: &str,
        epoch: u64,
    ) -> Result<String, String> {
        let deadline = Instant::now() + self.parts.step_deadline;
        let mut backoff = Duration::from_millis(200);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let fence = PlanFence {
                engine: self,
                epoch,
            };
            let err = match tokio::time::timeout(left, step.apply(to, epoch, &fence)).await {
                Ok(Ok(detail)) => return Ok(detail),
                Ok(Err(e)) => e,
                Err(_) => crate::ports::StepError::new(
                    crate::ports::FailReason::Timeout,
                    format!(
                        "no result within the step deadline of {:?}",
                        self.parts.step_deadline
                    ),
                    false,
                ),
            };
            self.parts
                .metrics
                .step_failures
                .with_label_values(&[step.kind().as_str(), err.reason.as_str()])
                .inc();
            tracing::warn!(epoch, step = %step.name(), reason = err.reason.as_str(), error = %err.message,
                retryable = err.retryable, "step attempt failed");
            if !err.retryable || Instant::now() + backoff >= deadline {
                return Err(err.message);
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    async fn notify(&self, n: Notice) {
        let lag = match (&self.parts.lag, n.kind, &n.from) {
            (Some(src), NoticeKind::Started | NoticeKind::Completed, Some(from)) => {
                src.last_lag_out_of(from).await
            }
            _ => None,
        };
        let msg = render(
            &n,
            &self.snapshot(),
            &self.parts.policy,
            &self.parts.links,
            lag,
        );
        tracing::info!(epoch = n.epoch, kind = n.kind.as_str(), title = %msg.title, "notice");
        for notifier in &self.parts.notifiers {
            let result = match notifier.send(&msg).await {
                Ok(()) => "sent",
                Err(e) => {
                    tracing::warn!(channel = notifier.channel(), error = %e, "notification failed");
                    "failed"
                }
            };
            self.parts
                .metrics
                .notifications
                .with_label_values(&[notifier.channel(), result])
                .inc();
        }
    }
}

/// The engine's answer to "may I act?" for one plan: this replica leads and the plan is current.
struct PlanFence<'a> {
    engine: &'a Engine,
    epoch: u64,
}

impl crate::ports::Fence for PlanFence<'_> {
    fn may_act(&self) -> bool {
        self.engine.is_leader()
            && self
                .engine
                .snapshot()
                .plan
                .as_ref()
                .is_some_and(|p| p.epoch == self.epoch && p.status == PlanStatus::Running)
    }
}

fn secs(ms: u64) -> String {
    if ms.is_multiple_of(60_000) && ms >= 60_000 {
        format!("{} min", ms / 60_000)
    } else {
        format!("{} s", ms / 1000)
    }
}

/// Turns a notice into a message for people: what happened, why, what changed, what to do next.
pub fn render(n: &Notice, s: &State, p: &Policy, links: &Links, lag: Option<f64>) -> Message {
    let from = n.from.as_deref().unwrap_or("-");
    let to = n.to.as_deref().unwrap_or("-");
    let is_failback = n.to.as_deref() == Some(p.home());
    let word = if is_failback { "Failback" } else { "Failover" };
    let title = match n.kind {
        NoticeKind::Started => format!("{word} {from} -> {to} started (epoch {})", n.epoch),
        NoticeKind::Completed => format!("{word} {from} -> {to} completed (epoch {})", n.epoch),
        NoticeKind::CompletedAfterRetry => {
            format!(
                "{word} {from} -> {to} completed after a retry (epoch {})",
                n.epoch
            )
        }
        NoticeKind::Unblocked => "Failover no longer blocked".to_string(),
        NoticeKind::Blocked => format!("Failover BLOCKED: traffic stays in {}", s.active),
        NoticeKind::TargetRejected => format!("{word} to {to} dropped: {to} failed its live check"),
        NoticeKind::StepFailed => {
            format!("{word} {from} -> {to} FAILED at a step (epoch {})", n.epoch)
        }
        NoticeKind::Paused => "Automatic failover paused".to_string(),
        NoticeKind::Resumed => "Automatic failover resumed".to_string(),
    };
    let mut text = format!("Why: {}\n", n.reason);
    if !n.changes.is_empty() {
        text += "Changed:\n";
        for c in &n.changes {
            text += &format!("  - {c}\n");
        }
    }
    if !n.pending.is_empty() {
        text += &format!("Not done yet: {}\n", n.pending.join(", "));
    }
    if matches!(n.kind, NoticeKind::Started | NoticeKind::Completed) && !is_failback {
        text += &match lag {
            Some(l) => format!(
                "Data at risk: writes to {from} in the last {l:.1} s before it failed may not have reached other regions (last replication lag measured out of {from}).\n"
            ),
            None => format!("Data at risk: unknown (no replication lag out of {from} was available).\n"),
        };
    }
    let next = match n.kind {
        NoticeKind::Started => "Nothing yet: the responder is applying the plan and will report when it is verified.".to_string(),
        k if k.completes_a_move() => {
            if is_failback {
                "Nothing: traffic is home. Review the incident.".to_string()
            } else if p.auto_failback {
                format!(
                    "Check the application in {to}. Failback to {} is automatic once it has been healthy for {}.",
                    p.home(),
                    secs(p.stabilisation_ms)
                )
            } else {
                format!(
                    "Check the application in {to}. Automatic failback is off: run `dynamo-failover failback` once {} is healthy.",
                    p.home()
                )
            }
        }
        NoticeKind::Blocked => "Investigate the regions' health (`dynamo-failover status`); the responder moves traffic as soon as it safely can.".to_string(),
        NoticeKind::TargetRejected => "The responder tries the next healthy region in priority order; if none is left it stays and reports BLOCKED.".to_string(),
        NoticeKind::StepFailed => format!(
            "The responder retries with backoff. To retry now after fixing the cause: `dynamo-failover failover --to {to}`."
        ),
        _ => "Nothing.".to_string(),
    };
    text += &format!("Next: {next}\n");
    let mut link_line = Vec::new();
    if let Some(r) = &links.responder {
        link_line.push(format!("state: {r}/v1/state"));
    }
    if let Some(pr) = &links.prometheus {
        link_line.push(format!("alerts: {pr}/alerts"));
    }
    if !link_line.is_empty() {
        text += &format!("Links: {}\n", link_line.join(" | "));
    }
    let fields = serde_json::json!({
        "kind": n.kind.as_str(),
        "trigger": n.trigger,
        "epoch": n.epoch,
        "from": n.from,
        "to": n.to,
        "reason": n.reason,
        "changes": n.changes,
        "pending": n.pending,
        "active_region": s.active,
        "replication_lag_seconds": lag,
    });
    Message {
        title,
        text,
        fields,
    }
}
