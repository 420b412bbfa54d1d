//! The failover decision, as a pure function: [`decide`] takes the state, one event, the time and
//! the policy, and answers the next state and the effects to carry out. It never reads the clock
//! and does no I/O, so every state x event pair is unit-tested and a plan can be replayed from any
//! intermediate state.
//!
//! The decision is level-triggered: after applying an event it reconciles the state against the
//! health picture (which regions are down, since when), so a deferred move happens on a later
//! `Tick` without the event that caused it being delivered again.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

/// How many finished transitions the state keeps.
pub const HISTORY_LEN: usize = 50;
/// Resolved alerts are forgotten this long after they resolved.
const ALERT_MEMORY_MS: u64 = 7 * 24 * 3600 * 1000;

/// The validated failover policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Regions in priority order; the first is home.
    pub regions: Vec<String>,
    /// Minimum time between two automatic transitions.
    pub min_interval_ms: u64,
    /// How long the preferred region must have been healthy before an automatic failback.
    pub stabilisation_ms: u64,
    pub auto_failback: bool,
    /// After a failed plan, the first automatic retry waits this long, doubling up to 16x.
    pub retry_backoff_ms: u64,
    /// A region that failed its live check is not chosen again for this long.
    pub live_check_cooldown_ms: u64,
}

impl Policy {
    pub fn home(&self) -> &str {
        &self.regions[0]
    }

    fn rank(&self, region: &str) -> usize {
        self.regions
            .iter()
            .position(|r| r == region)
            .unwrap_or(usize::MAX)
    }
}

/// Everything the responder knows, persisted by the state store after every change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Fencing token: raised for every plan; every step and notice of a plan carries it.
    pub epoch: u64,
    /// Where traffic is, as of the last completed transition.
    pub active: String,
    /// What the application config says now; changes when a plan's app-config step is done.
    pub app_region: String,
    /// Paused: events are recorded and decisions notified, nothing is moved.
    pub paused: bool,
    /// An operator chose the active region; automatic failback leaves it alone.
    pub pinned: bool,
    /// The plan in flight, written before its first side effect.
    pub plan: Option<Plan>,
    pub last_transition_ms: Option<u64>,
    pub health: BTreeMap<String, RegionHealth>,
    /// Alert instances by fingerprint, to tell repeats, duplicates and reordering apart.
    pub alerts: BTreeMap<String, AlertInstance>,
    /// Why no move is being made although one is wanted (notified once per distinct reason).
    pub blocked: Option<String>,
    pub history: VecDeque<Transition>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionHealth {
    pub down: bool,
    /// When `down` last changed (or when the state was created).
    pub since_ms: u64,
    /// When the region last failed a live check, if it did recently.
    pub live_failed_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertInstance {
    pub region: String,
    pub starts_at_ms: u64,
    pub firing: bool,
    pub updated_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Failover,
    Failback,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    Alert,
    Stabilised,
    Operator,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Alert => "alert",
            Trigger::Stabilised => "stabilised",
            Trigger::Operator => "operator",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlanStatus {
    /// The target is being probed live; nothing has been changed for this attempt yet.
    Checking,
    /// Steps are being applied.
    Running,
    /// A step failed past its retries; done steps stay done, a retry resumes the rest.
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub epoch: u64,
    pub kind: Kind,
    pub from: String,
    pub to: String,
    pub trigger: Trigger,
    pub reason: String,
    pub created_ms: u64,
    pub status: PlanStatus,
    pub attempts: u32,
    pub steps: Vec<StepState>,
    pub failed_ms: Option<u64>,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepState {
    pub name: String,
    pub done: bool,
    pub detail: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    pub epoch: u64,
    pub kind: Kind,
    pub from: String,
    pub to: String,
    pub trigger: Trigger,
    pub reason: String,
    pub started_ms: u64,
    pub finished_ms: u64,
}

/// What can happen to the responder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// One alert of a "region down" kind, firing or resolved.
    Alert {
        fingerprint: String,
        region: String,
        firing: bool,
        starts_at_ms: u64,
    },
    /// Time passes: deferred moves, stabilised failbacks and plan retries happen here.
    Tick,
    /// Operator: move to this region now (the live check still applies).
    Failover {
        to: String,
    },
    /// Operator: move back to home now (the live check still applies).
    Failback,
    Pause,
    Resume,
    /// The executor's live check of the plan's target.
    LiveCheck {
        epoch: u64,
        ok: bool,
        detail: String,
    },
    /// A step was applied and verified.
    StepDone {
        epoch: u64,
        index: usize,
        detail: String,
    },
    /// A step failed past its retries and deadline.
    StepFailed {
        epoch: u64,
        index: usize,
        detail: String,
    },
}

/// Something for the executor to do after the new state is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Probe the plan's target live, then answer [`Event::LiveCheck`].
    CheckTarget {
        epoch: u64,
    },
    /// Apply the plan's steps that are not done yet, in order.
    RunSteps {
        epoch: u64,
    },
    Notify(Notice),
}

/// A message for people, built from the decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Notice {
    pub kind: NoticeKind,
    pub epoch: u64,
    pub from: Option<String>,
    pub to: Option<String>,
    pub reason: String,
    /// What the plan changed (step outcomes), for completion and failure notices.
    pub changes: Vec<String>,
    /// Steps not done yet, for failure notices.
    pub pending: Vec<String>,
    /// What started the move the notice is about, if it is about one.
    pub trigger: Option<Trigger>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NoticeKind {
    /// A plan was decided and is being carried out.
    Started,
    /// Every step is applied and verified.
    Completed,
    /// A move is wanted but cannot be made (no healthy target, minimum interval, paused).
    Blocked,
    /// The target failed its live check; the plan was dropped.
    TargetRejected,
    /// A step failed past its retries.
    StepFailed,
    /// A previously failed plan finished, or the block cleared.
    Recovered,
    Paused,
    Resumed,
}

impl NoticeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NoticeKind::Started => "started",
            NoticeKind::Completed => "completed",
            NoticeKind::Blocked => "blocked",
            NoticeKind::TargetRejected => "target_rejected",
            NoticeKind::StepFailed => "step_failed",
            NoticeKind::Recovered => "recovered",
            NoticeKind::Paused => "paused",
            NoticeKind::Resumed => "resumed",
        }
    }
}

/// The outcome of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub state: State,
    pub effects: Vec<Effect>,
    /// Set when an operator request was refused; the state is then unchanged.
    pub rejected: Option<String>,
}

impl State {
    /// The state of a fresh installation: traffic at home, every region presumed healthy now.
    pub fn initial(policy: &Policy, now: u64) -> State {
        State {
            epoch: 0,
            active: policy.home().to_string(),
            app_region: policy.home().to_string(),
            paused: false,
            pinned: false,
            plan: None,
            last_transition_ms: None,
            health: policy
                .regions
                .iter()
                .map(|r| {
                    (
                        r.clone(),
                        RegionHealth {
                            down: false,
                            since_ms: now,
                            live_failed_ms: None,
                        },
                    )
                })
                .collect(),
            alerts: BTreeMap::new(),
            blocked: None,
            history: VecDeque::new(),
        }
    }

    /// Brings a loaded state in line with the current policy's regions (added regions start
    /// healthy now; removed ones are dropped from the health map).
    pub fn adopt(mut self, policy: &Policy, now: u64) -> State {
        for r in &policy.regions {
            self.health
                .entry(r.clone())
                .or_insert_with(|| RegionHealth {
                    down: false,
                    since_ms: now,
                    live_failed_ms: None,
                });
        }
        self.health.retain(|r, _| policy.regions.contains(r));
        self
    }

    fn is_down(&self, region: &str) -> bool {
        self.health.get(region).is_some_and(|h| h.down)
    }
}

/// True when `event` is an alert the state already accounts for: a duplicate, a repeat, a late
/// copy of an older episode, a firing overtaken by its resolved, or an unknown region. Applying it
/// changes nothing, so it needs no write. (Kept in step with the alert arm of `apply`; a test
/// checks the two agree.)
pub fn is_known_alert(s: &State, event: &Event) -> bool {
    let Event::Alert {
        fingerprint,
        region,
        firing,
        starts_at_ms,
    } = event
    else {
        return false;
    };
    if !s.health.contains_key(region) {
        return true;
    }
    s.alerts.get(fingerprint).is_some_and(|a| {
        a.starts_at_ms > *starts_at_ms
            || (a.starts_at_ms == *starts_at_ms
                && ((!a.firing && *firing) || (a.firing == *firing && a.region == *region)))
    })
}

/// Names of a plan's steps, in order, fixed by the config.
pub type StepNames = Vec<String>;

/// Decides what `event` means at `now` under `policy`. Pure.
pub fn decide(
    state: &State,
    event: &Event,
    now: u64,
    policy: &Policy,
    steps: &StepNames,
) -> Decision {
    let mut s = state.clone();
    let mut fx = Vec::new();
    if let Err(reason) = apply(&mut s, event, now, policy, steps, &mut fx) {
        return Decision {
            state: state.clone(),
            effects: Vec::new(),
            rejected: Some(reason),
        };
    }
    reconcile(&mut s, now, policy, steps, &mut fx);
    Decision {
        state: s,
        effects: fx,
        rejected: None,
    }
}

/// Applies the event itself. Answers `Err(reason)` to refuse an operator request.
fn apply(
    s: &mut State,
    event: &Event,
    now: u64,
    policy: &Policy,
    steps: &StepNames,
    fx: &mut Vec<Effect>,
) -> Result<(), String> {
    match event {
        Event::Alert {
            fingerprint,
            region,
            firing,
            starts_at_ms,
        } => {
            if !s.health.contains_key(region) {
                return Ok(()); // unknown regions are reported by the caller and change nothing
            }
            let stale = s.alerts.get(fingerprint).is_some_and(|a| {
                a.starts_at_ms > *starts_at_ms
                    // A resolved that overtook its firing: the late firing is not news.
                    || (a.starts_at_ms == *starts_at_ms && !a.firing && *firing)
            });
            if stale {
                return Ok(());
            }
            let same = s.alerts.get(fingerprint).is_some_and(|a| {
                a.starts_at_ms == *starts_at_ms && a.firing == *firing && a.region == *region
            });
            if !same {
                s.alerts.insert(
                    fingerprint.clone(),
                    AlertInstance {
                        region: region.clone(),
                        starts_at_ms: *starts_at_ms,
                        firing: *firing,
                        updated_ms: now,
                    },
                );
            }
            refresh_health(s, now);
            Ok(())
        }
        Event::Tick => {
            s.alerts
                .retain(|_, a| a.firing || now.saturating_sub(a.updated_ms) < ALERT_MEMORY_MS);
            for h in s.health.values_mut() {
                if h.live_failed_ms
                    .is_some_and(|t| now.saturating_sub(t) >= policy.live_check_cooldown_ms)
                {
                    h.live_failed_ms = None;
                }
            }
            Ok(())
        }
        Event::Pause => {
            if !s.paused {
                s.paused = true;
                fx.push(notice(
                    NoticeKind::Paused,
                    s.epoch,
                    None,
                    None,
                    "automatic moves paused by an operator; decisions are still made and notified"
                        .into(),
                ));
            }
            Ok(())
        }
        Event::Resume => {
            if s.paused {
                s.paused = false;
                fx.push(notice(
                    NoticeKind::Resumed,
                    s.epoch,
                    None,
                    None,
                    "automatic moves resumed by an operator".into(),
                ));
            }
            Ok(())
        }
        Event::Failover { to } => operator_move(s, to, now, policy, steps, fx, Kind::Failover),
        Event::Failback => {
            let home = policy.home().to_string();
            operator_move(s, &home, now, policy, steps, fx, Kind::Failback)
        }
        Event::LiveCheck { epoch, ok, detail } => {
            let Some(plan) = s.plan.as_mut().filter(|p| p.epoch == *epoch) else {
                return Ok(());
            };
            if plan.status != PlanStatus::Checking {
                return Ok(());
            }
            if *ok {
                plan.status = PlanStatus::Running;
                fx.push(Effect::RunSteps { epoch: *epoch });
            } else {
                let plan = s.plan.take().expect("checked above");
                if let Some(h) = s.health.get_mut(&plan.to) {
                    h.live_failed_ms = Some(now);
                }
                fx.push(triggered(
                    notice(
                        NoticeKind::TargetRejected,
                        plan.epoch,
                        Some(plan.from.clone()),
                        Some(plan.to.clone()),
                        format!(
                            "{} to {} dropped: the live check of {} failed ({detail})",
                            kind_word(plan.kind),
                            plan.to,
                            plan.to
                        ),
                    ),
                    plan.trigger,
                ));
            }
            Ok(())
        }
        Event::StepDone {
            epoch,
            index,
            detail,
        } => {
            let Some(plan) = s.plan.as_mut().filter(|p| p.epoch == *epoch) else {
                return Ok(());
            };
            if plan.status != PlanStatus::Running || *index >= plan.steps.len() {
                return Ok(());
            }
            let step = &mut plan.steps[*index];
            step.done = true;
            step.detail = Some(detail.clone());
            if step.name == crate::failover::APP_CONFIG_STEP {
                s.app_region = plan.to.clone();
            }
            if plan.steps.iter().all(|st| st.done) {
                let plan = s.plan.take().expect("present");
                finish(s, plan, now, fx);
            }
            Ok(())
        }
        Event::StepFailed {
            epoch,
            index,
            detail,
        } => {
            let Some(plan) = s.plan.as_mut().filter(|p| p.epoch == *epoch) else {
                return Ok(());
            };
            if plan.status != PlanStatus::Running || *index >= plan.steps.len() {
                return Ok(());
            }
            plan.status = PlanStatus::Failed;
            plan.failed_ms = Some(now);
            let msg = format!("step {} failed: {detail}", plan.steps[*index].name);
            plan.last_error = Some(msg.clone());
            let mut n = triggered(
                notice(
                    NoticeKind::StepFailed,
                    plan.epoch,
                    Some(plan.from.clone()),
                    Some(plan.to.clone()),
                    msg,
                ),
                plan.trigger,
            );
            if let Effect::Notify(n) = &mut n {
                (n.changes, n.pending) = step_lists(plan);
            }
            fx.push(n);
            Ok(())
        }
    }
}

fn operator_move(
    s: &mut State,
    to: &str,
    now: u64,
    policy: &Policy,
    steps: &StepNames,
    fx: &mut Vec<Effect>,
    kind: Kind,
) -> Result<(), String> {
    if !s.health.contains_key(to) {
        return Err(format!("unknown region `{to}`"));
    }
    if s.paused {
        return Err("the responder is paused; resume it first".into());
    }
    match &s.plan {
        Some(p) if p.status != PlanStatus::Failed => {
            return Err(format!(
                "plan {} ({} -> {}) is still in progress",
                p.epoch, p.from, p.to
            ))
        }
        Some(p) if p.to == to => {
            // Retry the failed plan now, keeping what is done.
            let mut p = s.plan.take().expect("present");
            p.trigger = Trigger::Operator;
            restart(&mut p, fx);
            s.plan = Some(p);
            s.pinned = kind == Kind::Failover && to != policy.home();
            return Ok(());
        }
        _ => {}
    }
    if s.plan.is_none() && s.active == to {
        return Err(format!("traffic is already in {to}"));
    }
    let from = s.active.clone();
    let reason = match kind {
        Kind::Failover => format!("operator requested failover to {to}"),
        Kind::Failback => format!("operator requested failback to {to}"),
    };
    s.plan = None;
    start(
        s,
        kind,
        &from,
        to,
        Trigger::Operator,
        reason,
        now,
        steps,
        fx,
    );
    s.pinned = kind == Kind::Failover && to != policy.home();
    Ok(())
}

/// Recomputes the health map from the alert instances.
fn refresh_health(s: &mut State, now: u64) {
    for (region, h) in s.health.iter_mut() {
        let down = s.alerts.values().any(|a| a.firing && a.region == *region);
        if down != h.down {
            h.down = down;
            h.since_ms = now;
        }
    }
}

/// After any event: start, defer or retry a move if the health picture asks for one.
fn reconcile(s: &mut State, now: u64, policy: &Policy, steps: &StepNames, fx: &mut Vec<Effect>) {
    if let Some(plan) = &s.plan {
        if plan.status == PlanStatus::Failed && !s.paused {
            let waited = now.saturating_sub(plan.failed_ms.unwrap_or(now));
            let backoff = policy
                .retry_backoff_ms
                .saturating_mul(1 << plan.attempts.saturating_sub(1).min(4));
            if waited >= backoff {
                let mut p = s.plan.take().expect("present");
                // The target may have gone down meanwhile: then drop the plan and choose again.
                if s.is_down(&p.to) {
                    fx.push(triggered(
                        notice(
                            NoticeKind::TargetRejected,
                            p.epoch,
                            Some(p.from.clone()),
                            Some(p.to.clone()),
                            format!("failed plan to {} dropped: {} is now down", p.to, p.to),
                        ),
                        p.trigger,
                    ));
                } else {
                    restart(&mut p, fx);
                    s.plan = Some(p);
                    return;
                }
            } else {
                return;
            }
        } else {
            return;
        }
    }

    let wanted = wanted_move(s, now, policy);
    let Some((kind, to, trigger, reason)) = wanted else {
        if let Some(was) = s.blocked.take() {
            fx.push(notice(
                NoticeKind::Recovered,
                s.epoch,
                None,
                None,
                format!("no longer blocked ({was})"),
            ));
        }
        return;
    };
    let blocked = match &to {
        Err(why) => Some(why.clone()),
        Ok(_) if s.paused => Some(format!(
            "paused: would {} ({reason})",
            describe(kind, s, &to)
        )),
        Ok(_) => match s.last_transition_ms {
            Some(t) if now.saturating_sub(t) < policy.min_interval_ms => Some(format!(
                "waiting for the minimum interval between transitions before it may {} ({reason})",
                describe(kind, s, &to)
            )),
            _ => None,
        },
    };
    if let Some(why) = blocked {
        if s.blocked.as_deref() != Some(why.as_str()) {
            fx.push(triggered(
                notice(
                    NoticeKind::Blocked,
                    s.epoch,
                    Some(s.active.clone()),
                    to.as_ref().ok().cloned(),
                    why.clone(),
                ),
                trigger,
            ));
            s.blocked = Some(why);
        }
        return;
    }
    s.blocked = None;
    let to = to.expect("blocked above");
    let from = s.active.clone();
    start(s, kind, &from, &to, trigger, reason, now, steps, fx);
}

/// The move the health picture asks for, if any: `Err` says why it cannot be made.
#[allow(clippy::type_complexity)]
fn wanted_move(
    s: &State,
    now: u64,
    policy: &Policy,
) -> Option<(Kind, Result<String, String>, Trigger, String)> {
    let usable = |r: &str| {
        s.health
            .get(r)
            .is_some_and(|h| !h.down && h.live_failed_ms.is_none())
    };
    if s.is_down(&s.active) {
        let reason = format!("{} is unavailable (region-down alert firing)", s.active);
        let target = policy
            .regions
            .iter()
            .find(|r| **r != s.active && usable(r))
            .cloned()
            .ok_or_else(|| {
                format!(
                    "{} is unavailable and no other region is healthy; traffic stays in {}",
                    s.active, s.active
                )
            });
        return Some((Kind::Failover, target, Trigger::Alert, reason));
    }
    if !policy.auto_failback || s.pinned || s.active == policy.home() {
        return None;
    }
    let active_rank = policy.rank(&s.active);
    let better = policy.regions.iter().take(active_rank).find(|r| {
        usable(r)
            && s.health
                .get(*r)
                .is_some_and(|h| now.saturating_sub(h.since_ms) >= policy.stabilisation_ms)
    })?;
    let kind = if better == policy.home() {
        Kind::Failback
    } else {
        Kind::Failover
    };
    let reason = format!(
        "{better} has been healthy for the stabilisation window ({} s)",
        policy.stabilisation_ms / 1000
    );
    Some((kind, Ok(better.clone()), Trigger::Stabilised, reason))
}

#[allow(clippy::too_many_arguments)]
fn start(
    s: &mut State,
    kind: Kind,
    from: &str,
    to: &str,
    trigger: Trigger,
    reason: String,
    now: u64,
    steps: &StepNames,
    fx: &mut Vec<Effect>,
) {
    s.epoch += 1;
    s.blocked = None;
    let plan = Plan {
        epoch: s.epoch,
        kind,
        from: from.to_string(),
        to: to.to_string(),
        trigger,
        reason: reason.clone(),
        created_ms: now,
        status: PlanStatus::Checking,
        attempts: 1,
        steps: steps
            .iter()
            .map(|n| StepState {
                name: n.clone(),
                done: false,
                detail: None,
            })
            .collect(),
        failed_ms: None,
        last_error: None,
    };
    fx.push(triggered(
        notice(
            NoticeKind::Started,
            plan.epoch,
            Some(plan.from.clone()),
            Some(plan.to.clone()),
            reason,
        ),
        trigger,
    ));
    fx.push(Effect::CheckTarget { epoch: plan.epoch });
    s.plan = Some(plan);
}

fn restart(p: &mut Plan, fx: &mut Vec<Effect>) {
    p.status = PlanStatus::Checking;
    p.attempts += 1;
    p.failed_ms = None;
    fx.push(Effect::CheckTarget { epoch: p.epoch });
}

fn finish(s: &mut State, plan: Plan, now: u64, fx: &mut Vec<Effect>) {
    s.active = plan.to.clone();
    s.app_region = plan.to.clone();
    s.last_transition_ms = Some(now);
    let retried = plan.attempts > 1;
    s.history.push_front(Transition {
        epoch: plan.epoch,
        kind: plan.kind,
        from: plan.from.clone(),
        to: plan.to.clone(),
        trigger: plan.trigger,
        reason: plan.reason.clone(),
        started_ms: plan.created_ms,
        finished_ms: now,
    });
    s.history.truncate(HISTORY_LEN);
    let (changes, _) = step_lists(&plan);
    let trigger = plan.trigger;
    let mut n = notice(
        if retried {
            NoticeKind::Recovered
        } else {
            NoticeKind::Completed
        },
        plan.epoch,
        Some(plan.from),
        Some(plan.to),
        plan.reason,
    );
    if let Effect::Notify(n) = &mut n {
        n.changes = changes;
        n.trigger = Some(trigger);
    }
    fx.push(n);
}

/// Done steps (with what they did) and pending step names.
fn step_lists(plan: &Plan) -> (Vec<String>, Vec<String>) {
    let done = plan
        .steps
        .iter()
        .filter(|s| s.done)
        .map(|s| s.detail.clone().unwrap_or_else(|| s.name.clone()))
        .collect();
    let pending = plan
        .steps
        .iter()
        .filter(|s| !s.done)
        .map(|s| s.name.clone())
        .collect();
    (done, pending)
}

fn notice(
    kind: NoticeKind,
    epoch: u64,
    from: Option<String>,
    to: Option<String>,
    reason: String,
) -> Effect {
    Effect::Notify(Notice {
        kind,
        epoch,
        from,
        to,
        reason,
        changes: Vec::new(),
        pending: Vec::new(),
        trigger: None,
    })
}

/// `e` with the trigger of the move it tells about.
fn triggered(mut e: Effect, trigger: Trigger) -> Effect {
    if let Effect::Notify(n) = &mut e {
        n.trigger = Some(trigger);
    }
    e
}

fn kind_word(k: Kind) -> &'static str {
    match k {
        Kind::Failover => "failover",
        Kind::Failback => "failback",
    }
}

fn describe(kind: Kind, s: &State, to: &Result<String, String>) -> String {
    match to {
        Ok(t) => format!("{} {} -> {}", kind_word(kind), s.active, t),
        Err(_) => kind_word(kind).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 10_000_000;
    const MIN: u64 = 60_000;

    fn policy() -> Policy {
        Policy {
            regions: vec!["a".into(), "b".into(), "c".into()],
            min_interval_ms: MIN,
            stabilisation_ms: 2 * MIN,
            auto_failback: true,
            retry_backoff_ms: 30_000,
            live_check_cooldown_ms: MIN,
        }
    }

    fn steps() -> StepNames {
        vec![
            crate::failover::APP_CONFIG_STEP.into(),
            "load_balancer:x".into(),
            "dns:example.com/1".into(),
        ]
    }

    fn run(s: &State, e: Event, now: u64) -> Decision {
        decide(s, &e, now, &policy(), &steps())
    }

    fn fire(region: &str) -> Event {
        Event::Alert {
            fingerprint: format!("f-{region}"),
            region: region.into(),
            firing: true,
            starts_at_ms: 100,
        }
    }

    fn resolve(region: &str) -> Event {
        Event::Alert {
            fingerprint: format!("f-{region}"),
            region: region.into(),
            firing: false,
            starts_at_ms: 100,
        }
    }

    /// Applies events in order at `now`, as the engine does.
    fn feed(mut s: State, events: &[Event], now: u64) -> State {
        for e in events {
            let d = run(&s, e.clone(), now);
            assert!(d.rejected.is_none(), "{e:?} rejected: {:?}", d.rejected);
            s = d.state;
        }
        s
    }

    fn steady_home() -> State {
        State::initial(&policy(), 0)
    }

    fn steady_away() -> State {
        let mut s = steady_home();
        s.active = "b".into();
        s.app_region = "b".into();
        s.epoch = 3;
        s.last_transition_ms = Some(NOW - 10 * MIN);
        // Home is up again, but only for 30 s: not yet stable.
        s.health.get_mut("a").unwrap().since_ms = NOW - 30_000;
        s
    }

    fn checking() -> State {
        let s = feed(steady_home(), &[fire("a")], NOW - 1000);
        assert_eq!(s.plan.as_ref().unwrap().status, PlanStatus::Checking);
        s
    }

    fn running() -> State {
        feed(
            checking(),
            &[
                Event::LiveCheck {
                    epoch: 1,
                    ok: true,
                    detail: "ok".into(),
                },
                Event::StepDone {
                    epoch: 1,
                    index: 0,
                    detail: "wrote".into(),
                },
            ],
            NOW - 1000,
        )
    }

    fn failed() -> State {
        feed(
            running(),
            &[Event::StepFailed {
                epoch: 1,
                index: 1,
                detail: "503".into(),
            }],
            NOW - 1000,
        )
    }

    fn paused() -> State {
        feed(steady_home(), &[Event::Pause], NOW - 1000)
    }

    fn blocked() -> State {
        let s = feed(
            steady_home(),
            &[fire("b"), fire("c"), fire("a")],
            NOW - 1000,
        );
        assert!(s.blocked.is_some() && s.plan.is_none());
        s
    }

    /// A short name for what a decision did, most significant first.
    fn outcome(before: &State, d: &Decision) -> &'static str {
        if d.rejected.is_some() {
            return "reject";
        }
        let s = &d.state;
        let has = |f: &dyn Fn(&Effect) -> bool| d.effects.iter().any(f);
        if s.epoch > before.epoch && has(&|e| matches!(e, Effect::CheckTarget { .. })) {
            return "plan";
        }
        if has(&|e| matches!(e, Effect::CheckTarget { .. })) {
            return "retry";
        }
        if has(&|e| matches!(e, Effect::RunSteps { .. })) {
            return "run";
        }
        if s.history.len() > before.history.len() {
            return "done";
        }
        if s.plan
            .as_ref()
            .is_some_and(|p| p.status == PlanStatus::Failed)
            && before
                .plan
                .as_ref()
                .is_some_and(|p| p.status != PlanStatus::Failed)
        {
            return "fail";
        }
        if has(&|e| matches!(e, Effect::Notify(n) if n.kind == NoticeKind::Blocked)) {
            return "block";
        }
        if s != before || !d.effects.is_empty() {
            return "note";
        }
        "noop"
    }

    #[test]
    fn every_state_and_event_pair_has_the_intended_outcome() {
        let states: Vec<(&str, State)> = vec![
            ("steady_home", steady_home()),
            ("steady_away", steady_away()),
            ("checking", checking()),
            ("running", running()),
            ("failed", failed()),
            ("paused", paused()),
            ("blocked", blocked()),
        ];
        let events = |s: &State| -> Vec<(&'static str, Event)> {
            let other = if s.active == "a" { "b" } else { "a" };
            let e = s.epoch;
            let next = s
                .plan
                .as_ref()
                .and_then(|p| p.steps.iter().position(|x| !x.done))
                .unwrap_or(0);
            vec![
                ("fire_active", fire(&s.active)),
                ("fire_other", fire(other)),
                ("resolve_active", resolve(&s.active)),
                ("tick", Event::Tick),
                ("failover_b", Event::Failover { to: "b".into() }),
                ("failback", Event::Failback),
                ("pause", Event::Pause),
                ("resume", Event::Resume),
                (
                    "live_ok",
                    Event::LiveCheck {
                        epoch: e,
                        ok: true,
                        detail: "ok".into(),
                    },
                ),
                (
                    "live_fail",
                    Event::LiveCheck {
                        epoch: e,
                        ok: false,
                        detail: "timeout".into(),
                    },
                ),
                (
                    "step_done",
                    Event::StepDone {
                        epoch: e,
                        index: next,
                        detail: "ok".into(),
                    },
                ),
                (
                    "step_failed",
                    Event::StepFailed {
                        epoch: e,
                        index: next,
                        detail: "503".into(),
                    },
                ),
                (
                    "stale_step",
                    Event::StepDone {
                        epoch: e.wrapping_sub(1),
                        index: next,
                        detail: "late".into(),
                    },
                ),
            ]
        };
        // Rows: states; columns: the events above, in order.
        let expected: &[(&str, [&str; 13])] = &[
            (
                "steady_home",
                [
                    "plan", "note", "note", "noop", "plan", "reject", "note", "noop", "noop",
                    "noop", "noop", "noop", "noop",
                ],
            ),
            (
                "steady_away",
                [
                    "plan", "note", "note", "noop", "reject", "plan", "note", "noop", "noop",
                    "noop", "noop", "noop", "noop",
                ],
            ),
            (
                "checking",
                [
                    "noop", "note", "note", "noop", "reject", "reject", "note", "noop", "run",
                    "plan", "noop", "noop", "noop",
                ],
            ),
            (
                "running",
                [
                    "noop", "note", "note", "noop", "reject", "reject", "note", "noop", "noop",
                    "noop", "note", "fail", "noop",
                ],
            ),
            (
                "failed",
                [
                    "noop", "note", "note", "noop", "retry", "plan", "note", "noop", "noop",
                    "noop", "noop", "noop", "noop",
                ],
            ),
            (
                "paused",
                [
                    "block", "note", "note", "noop", "reject", "reject", "noop", "note", "noop",
                    "noop", "noop", "noop", "noop",
                ],
            ),
            (
                "blocked",
                [
                    "noop", "noop", "note", "noop", "plan", "reject", "note", "noop", "noop",
                    "noop", "noop", "noop", "noop",
                ],
            ),
        ];
        let mut wrong = Vec::new();
        for ((name, state), (row, want)) in states.iter().zip(expected) {
            assert_eq!(name, row);
            for ((ev_name, ev), want) in events(state).into_iter().zip(want) {
                let d = run(state, ev, NOW);
                let got = outcome(state, &d);
                if got != *want {
                    wrong.push(format!("{name} x {ev_name}: got {got}, want {want}"));
                }
                // Invariants that hold for every pair.
                assert!(
                    d.state.epoch >= state.epoch,
                    "{name} x {ev_name}: epoch went back"
                );
                if d.rejected.is_some() {
                    assert_eq!(
                        &d.state, state,
                        "{name} x {ev_name}: a refusal changed the state"
                    );
                }
                for e in &d.effects {
                    if let Effect::CheckTarget { epoch } | Effect::RunSteps { epoch } = e {
                        assert_eq!(
                            Some(*epoch),
                            d.state.plan.as_ref().map(|p| p.epoch),
                            "{name} x {ev_name}: an effect for a plan that is not current"
                        );
                    }
                }
            }
        }
        assert!(
            wrong.is_empty(),
            "unexpected outcomes:\n{}",
            wrong.join("\n")
        );
    }

    #[test]
    fn a_failing_target_is_skipped_for_the_next_region_in_priority_order() {
        let s = checking();
        let d = run(
            &s,
            Event::LiveCheck {
                epoch: 1,
                ok: false,
                detail: "timeout".into(),
            },
            NOW,
        );
        let p = d.state.plan.as_ref().unwrap();
        assert_eq!((p.to.as_str(), p.epoch), ("c", 2));
        assert!(d.state.health["b"].live_failed_ms.is_some());
        // And when c fails too, it stays and says so.
        let d = run(
            &d.state,
            Event::LiveCheck {
                epoch: 2,
                ok: false,
                detail: "refused".into(),
            },
            NOW,
        );
        assert!(d.state.plan.is_none());
        assert_eq!(d.state.active, "a");
        assert!(d
            .state
            .blocked
            .as_deref()
            .unwrap()
            .contains("no other region is healthy"));
    }

    #[test]
    fn completing_every_step_moves_traffic_and_records_the_transition() {
        let s = feed(
            running(),
            &[
                Event::StepDone {
                    epoch: 1,
                    index: 1,
                    detail: "lb".into(),
                },
                Event::StepDone {
                    epoch: 1,
                    index: 2,
                    detail: "dns".into(),
                },
            ],
            NOW,
        );
        assert!(s.plan.is_none());
        assert_eq!((s.active.as_str(), s.app_region.as_str()), ("b", "b"));
        assert_eq!(s.history[0].to, "b");
        assert_eq!(s.history[0].trigger, Trigger::Alert);
        assert_eq!(s.last_transition_ms, Some(NOW));
    }

    #[test]
    fn the_app_region_changes_when_the_app_config_step_is_done() {
        let s = checking();
        assert_eq!(s.app_region, "a");
        assert_eq!(running().app_region, "b");
    }

    fn moved_to_b(at: u64) -> State {
        feed(
            steady_home(),
            &[
                fire("a"),
                Event::LiveCheck {
                    epoch: 1,
                    ok: true,
                    detail: "ok".into(),
                },
                Event::StepDone {
                    epoch: 1,
                    index: 0,
                    detail: "".into(),
                },
                Event::StepDone {
                    epoch: 1,
                    index: 1,
                    detail: "".into(),
                },
                Event::StepDone {
                    epoch: 1,
                    index: 2,
                    detail: "".into(),
                },
            ],
            at,
        )
    }

    #[test]
    fn failback_waits_for_the_stabilisation_window_and_the_minimum_interval() {
        let t0 = NOW;
        let s = moved_to_b(t0);
        let s = feed(s, &[resolve("a")], t0 + 1000);
        // Stable for less than the window: nothing.
        let d = run(&s, Event::Tick, t0 + 1000 + 2 * MIN - 1);
        assert!(d.state.plan.is_none());
        // Window passed: failback to home.
        let d = run(&s, Event::Tick, t0 + 1000 + 2 * MIN);
        let p = d.state.plan.as_ref().unwrap();
        assert_eq!(
            (p.kind, p.to.as_str(), p.trigger),
            (Kind::Failback, "a", Trigger::Stabilised)
        );
    }

    #[test]
    fn a_home_region_that_flaps_is_never_failed_back_to() {
        let t0 = NOW;
        let mut s = moved_to_b(t0);
        let mut t = t0;
        // Down/up cycles of 90 s (shorter than the 120 s window) for half an hour.
        for cycle in 0..20u64 {
            t += 45_000;
            s = feed(
                s,
                &[Event::Alert {
                    fingerprint: "f-a".into(),
                    region: "a".into(),
                    firing: false,
                    starts_at_ms: 100 + cycle,
                }],
                t,
            );
            s = feed(s, &[Event::Tick], t + 30_000);
            assert!(
                s.plan.is_none(),
                "failback started while home flaps (cycle {cycle})"
            );
            t += 45_000;
            s = feed(
                s,
                &[Event::Alert {
                    fingerprint: "f-a".into(),
                    region: "a".into(),
                    firing: true,
                    starts_at_ms: 101 + cycle,
                }],
                t,
            );
        }
        assert_eq!(s.active, "b");
        assert_eq!(s.history.len(), 1);
    }

    #[test]
    fn with_automatic_failback_off_only_an_operator_fails_back() {
        let mut p = policy();
        p.auto_failback = false;
        let s = moved_to_b(NOW);
        let s = decide(&s, &resolve("a"), NOW + 1000, &p, &steps()).state;
        let d = decide(&s, &Event::Tick, NOW + 100 * MIN, &p, &steps());
        assert!(d.state.plan.is_none());
        let d = decide(&s, &Event::Failback, NOW + 100 * MIN, &p, &steps());
        let plan = d.state.plan.as_ref().unwrap();
        assert_eq!((plan.to.as_str(), plan.trigger), ("a", Trigger::Operator));
    }

    #[test]
    fn a_resolved_that_overtakes_its_firing_causes_no_transition() {
        let s = feed(steady_home(), &[resolve("a")], NOW);
        let d = run(&s, fire("a"), NOW + 10);
        assert!(d.state.plan.is_none() && d.effects.is_empty());
        assert!(!d.state.health["a"].down);
        // A later episode (a new startsAt) does count.
        let d = run(
            &s,
            Event::Alert {
                fingerprint: "f-a".into(),
                region: "a".into(),
                firing: true,
                starts_at_ms: 200,
            },
            NOW + 20,
        );
        assert!(d.state.plan.is_some());
    }

    #[test]
    fn the_known_alert_shortcut_agrees_with_decide() {
        let states = [
            steady_home(),
            checking(),
            running(),
            failed(),
            paused(),
            blocked(),
            feed(steady_home(), &[resolve("a")], NOW),
        ];
        let mut events = Vec::new();
        for region in ["a", "b", "c", "mars"] {
            for firing in [true, false] {
                for starts_at_ms in [50, 100, 150] {
                    for fp in [format!("f-{region}"), "f-other".to_string()] {
                        events.push(Event::Alert {
                            fingerprint: fp,
                            region: region.into(),
                            firing,
                            starts_at_ms,
                        });
                    }
                }
            }
        }
        for s in &states {
            for e in &events {
                if is_known_alert(s, e) {
                    let mut probe = s.clone();
                    let mut fx = Vec::new();
                    apply(&mut probe, e, NOW, &policy(), &steps(), &mut fx).unwrap();
                    assert_eq!(&probe, s, "{e:?} is called known but changes the state");
                    assert!(fx.is_empty());
                }
            }
        }
        // And it does recognise the common case.
        assert!(is_known_alert(&checking(), &fire("a")));
        assert!(!is_known_alert(&steady_home(), &fire("a")));
    }

    #[test]
    fn repeats_and_duplicates_change_nothing() {
        let s = checking();
        for _ in 0..50 {
            let d = run(&s, fire("a"), NOW);
            assert_eq!(d.state, s);
            assert!(d.effects.is_empty());
        }
    }

    #[test]
    fn a_failed_plan_is_retried_after_its_backoff_keeping_done_steps() {
        let s = failed();
        let failed_at = s.plan.as_ref().unwrap().failed_ms.unwrap();
        let d = run(&s, Event::Tick, failed_at + 29_999);
        assert_eq!(d.state.plan.as_ref().unwrap().status, PlanStatus::Failed);
        let d = run(&s, Event::Tick, failed_at + 30_000);
        let p = d.state.plan.as_ref().unwrap();
        assert_eq!(
            (p.status, p.attempts, p.epoch),
            (PlanStatus::Checking, 2, 1)
        );
        assert!(p.steps[0].done && !p.steps[1].done);
    }

    #[test]
    fn an_operator_failover_pins_the_region_against_automatic_failback() {
        let s = feed(steady_home(), &[Event::Failover { to: "b".into() }], NOW);
        let s = feed(
            s,
            &[
                Event::LiveCheck {
                    epoch: 1,
                    ok: true,
                    detail: "".into(),
                },
                Event::StepDone {
                    epoch: 1,
                    index: 0,
                    detail: "".into(),
                },
                Event::StepDone {
                    epoch: 1,
                    index: 1,
                    detail: "".into(),
                },
                Event::StepDone {
                    epoch: 1,
                    index: 2,
                    detail: "".into(),
                },
            ],
            NOW,
        );
        assert!(s.pinned && s.active == "b");
        let d = run(&s, Event::Tick, NOW + 100 * MIN);
        assert!(d.state.plan.is_none());
        // But if the pinned region goes down, safety wins.
        let d = run(&s, fire("b"), NOW + 100 * MIN);
        assert_eq!(d.state.plan.as_ref().unwrap().to, "a");
    }

    #[test]
    fn paused_decides_and_notifies_but_moves_nothing() {
        let s = paused();
        let d = run(&s, fire("a"), NOW);
        assert!(d.state.plan.is_none());
        let why = d.state.blocked.clone().unwrap();
        assert!(why.contains("paused: would failover a -> b"), "{why}");
        // Resuming makes the move.
        let d = run(&d.state, Event::Resume, NOW);
        assert_eq!(d.state.plan.as_ref().unwrap().to, "b");
    }

    /// Drives a plan to its end the way the executor does after a restart: a checking plan is
    /// checked again, a running plan applies its first step not done. Counts step applications.
    fn resume_to_end(mut s: State, applied: &mut Vec<usize>) -> State {
        while let Some(p) = s.plan.clone() {
            let e = match p.status {
                PlanStatus::Checking => Event::LiveCheck {
                    epoch: p.epoch,
                    ok: true,
                    detail: "ok".into(),
                },
                PlanStatus::Running => {
                    let i = p.steps.iter().position(|x| !x.done).unwrap();
                    applied.push(i);
                    Event::StepDone {
                        epoch: p.epoch,
                        index: i,
                        detail: format!("step {i}"),
                    }
                }
                PlanStatus::Failed => unreachable!(),
            };
            s = run(&s, e, NOW).state;
        }
        s
    }

    #[test]
    fn replaying_a_plan_from_every_intermediate_state_reaches_the_same_end_without_repeating_steps()
    {
        // Record every stored state of one uninterrupted failover.
        let mut stored = vec![run(&steady_home(), fire("a"), NOW).state];
        let mut applied = Vec::new();
        let end = {
            let mut s = stored[0].clone();
            while let Some(p) = s.plan.clone() {
                let e = match p.status {
                    PlanStatus::Checking => Event::LiveCheck {
                        epoch: p.epoch,
                        ok: true,
                        detail: "ok".into(),
                    },
                    _ => {
                        let i = p.steps.iter().position(|x| !x.done).unwrap();
                        applied.push(i);
                        Event::StepDone {
                            epoch: p.epoch,
                            index: i,
                            detail: format!("step {i}"),
                        }
                    }
                };
                s = run(&s, e, NOW).state;
                stored.push(s.clone());
            }
            s
        };
        assert_eq!(applied, vec![0, 1, 2]);
        for (k, crashed_at) in stored.iter().enumerate() {
            let mut again = Vec::new();
            let resumed = resume_to_end(crashed_at.clone(), &mut again);
            assert_eq!(
                resumed, end,
                "resuming from stored state {k} ended elsewhere"
            );
            let not_done: Vec<usize> = crashed_at
                .plan
                .as_ref()
                .map(|p| {
                    p.steps
                        .iter()
                        .enumerate()
                        .filter(|(_, s)| !s.done)
                        .map(|(i, _)| i)
                        .collect()
                })
                .unwrap_or_default();
            assert_eq!(
                again, not_done,
                "resuming from stored state {k} repeated a finished step"
            );
        }
    }

    #[test]
    fn adopting_a_new_region_list_keeps_known_health() {
        let mut s = steady_home();
        s.health.get_mut("b").unwrap().down = true;
        let mut p = policy();
        p.regions = vec!["a".into(), "b".into(), "d".into()];
        let s = s.adopt(&p, NOW);
        assert!(s.health["b"].down);
        assert!(s.health.contains_key("d") && !s.health.contains_key("c"));
    }
}
