//! Carries decisions out. Every event goes through [`Engine::submit`]: decide, store the new state
//! durably, publish it, and only then start the effects. A plan's intent is therefore on disk
//! before its first side effect, each step's outcome is recorded before the next step starts,
//! and on start an unfinished plan is resumed from its first step not done.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Mutex};
use tokio::time::Instant;

use super::machine::{
    decide, Effect, Event, Kind, Notice, NoticeKind, PlanStatus, Policy, State, StepNames,
};
use crate::metrics::ResponderMetrics;
use crate::ports::{Clock, LagSource, LiveCheck, Message, Notifier, StateStore, Step, StoreError};

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
}

struct Current {
    state: State,
    version: u64,
}

pub struct Engine {
    parts: Parts,
    step_names: StepNames,
    current: Mutex<Current>,
    published: watch::Sender<Arc<State>>,
    /// Serialises plan work: one live check or step at a time.
    plan_lock: Mutex<()>,
    ready: AtomicBool,
}

/// What [`Engine::submit`] did with a batch of events.
#[derive(Debug)]
pub struct Submitted {
    /// Per event: the refusal reason of an operator request, or None.
    pub refusals: Vec<Option<String>>,
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
                let v = parts.store.save(&s, 0).await?;
                (s, v)
            }
        };
        let step_names = parts.steps.iter().map(|s| s.name()).collect::<Vec<_>>();
        let (published, _) = watch::channel(Arc::new(state.clone()));
        let engine = Arc::new(Engine {
            parts,
            step_names,
            current: Mutex::new(Current { state, version }),
            published,
            plan_lock: Mutex::new(()),
            ready: AtomicBool::new(false),
        });
        let snapshot = engine.snapshot();
        engine.observe(&snapshot);
        if let Some(plan) = &snapshot.plan {
            tracing::warn!(epoch = plan.epoch, from = %plan.from, to = %plan.to, status = ?plan.status,
                "resuming an unfinished plan");
            if plan.steps.len() != engine.step_names.len()
                || plan
                    .steps
                    .iter()
                    .zip(&engine.step_names)
                    .any(|(a, b)| a.name != *b)
            {
                tracing::warn!(epoch = plan.epoch,
                    "the unfinished plan's steps differ from the configured steps; it resumes with the stored steps");
            }
            match plan.status {
                PlanStatus::Checking => engine
                    .clone()
                    .run_effects(vec![Effect::CheckTarget { epoch: plan.epoch }]),
                PlanStatus::Running => engine
                    .clone()
                    .run_effects(vec![Effect::RunSteps { epoch: plan.epoch }]),
                PlanStatus::Failed => {} // the policy's retry backoff applies on the next tick
            }
        }
        engine.ready.store(true, Ordering::SeqCst);
        Ok(engine)
    }

    /// The latest stored state.
    pub fn snapshot(&self) -> Arc<State> {
        self.published.borrow().clone()
    }

    /// Subscribes to state changes.
    pub fn watch(&self) -> watch::Receiver<Arc<State>> {
        self.published.subscribe()
    }

    pub fn ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    pub fn policy(&self) -> &Policy {
        &self.parts.policy
    }

    /// Decides every event in order, stores the result once, then starts the effects. Answers the
    /// refusal reason of each event (None when accepted). Nothing is changed if storing fails.
    pub async fn submit(self: &Arc<Self>, events: &[Event]) -> Result<Submitted, SubmitError> {
        // Fast path for repeats and duplicates: alerts the latest stored state already accounts
        // for are durable already and change nothing. Alert records only move forward, so one
        // known to this snapshot is known to any newer state. (Time-based follow-ups are the
        // ticker's job.)
        if self.changes_nothing(events) {
            return Ok(Submitted {
                refusals: vec![None; events.len()],
                changed: false,
            });
        }
        let mut cur = self.current.lock().await;
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
            let version = self.parts.store.save(&state, cur.version).await?;
            cur.version = version;
            cur.state = state.clone();
            let snap = Arc::new(state);
            self.published.send_replace(snap.clone());
            self.observe(&snap);
        }
        drop(cur);
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
            NoticeKind::Completed | NoticeKind::Recovered if n.to.is_some() => "completed",
            NoticeKind::StepFailed => "failed",
            NoticeKind::TargetRejected => "target_rejected",
            NoticeKind::Blocked => "blocked",
            _ => return,
        };
        let trigger = self
            .snapshot()
            .history
            .front()
            .filter(|t| t.epoch == n.epoch)
            .map(|t| t.trigger.as_str())
            .or_else(|| {
                self.snapshot()
                    .plan
                    .as_ref()
                    .filter(|p| p.epoch == n.epoch)
                    .map(|p| p.trigger.as_str())
            })
            .unwrap_or("alert");
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
                .with_label_values(&[step.kind()])
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
            let err = match tokio::time::timeout(left, step.apply(to, epoch)).await {
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
                .with_label_values(&[step.kind(), err.reason.as_str()])
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
        NoticeKind::Recovered if n.to.is_some() => {
            format!(
                "{word} {from} -> {to} completed after a retry (epoch {})",
                n.epoch
            )
        }
        NoticeKind::Recovered => "Failover no longer blocked".to_string(),
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
        NoticeKind::Completed | NoticeKind::Recovered if n.to.is_some() => {
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
