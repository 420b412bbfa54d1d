//! The failover decision, as a pure function: [`decide`] takes the state, one event, the time and
//! the policy, and answers the next state and the effects to carry out. It never reads the clock
//! and does no I/O, so every state x event pair is unit-tested and a plan can be replayed from any
//! intermediate state.
//!
//! The decision is level-triggered: after applying an event it reconciles the state against the
//! health picture (which regions are down, since when), so a deferred move happens on a later
//! `Tick` without the event that caused it being delivered again.

use serde::Serialize;

use super::state::{
    AgentAck, AlertInstance, Kind, Plan, PlanStatus, State, StepKind, StepState, Transition,
    Trigger,
};

/// How many finished transitions the state keeps.
pub const HISTORY_LEN: usize = 50;
/// Resolved alerts are forgotten this long after they resolved.
const ALERT_MEMORY_MS: u64 = 7 * 24 * 3600 * 1000;
/// Alert instances kept per region, whatever is sent: past it the oldest resolved one is
/// forgotten first, then the firing one not sent for longest. A region is down while any kept
/// instance fires, so a flood of distinct instances changes nothing but what is remembered.
pub const MAX_ALERTS_PER_REGION: usize = 16;
/// Longest text from outside (a step's or live check's detail) kept in the state, in bytes.
pub const MAX_TEXT: usize = 512;

/// An alert's detail as kept: one short line.
fn clip_detail(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default().trim();
    let mut end = line.len().min(64);
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    line[..end].to_string()
}

/// `text` cut to [`MAX_TEXT`] bytes at a character boundary, marked when cut.
pub fn clip(text: &str) -> String {
    if text.len() <= MAX_TEXT {
        return text.to_string();
    }
    let mut end = MAX_TEXT - 3;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

/// The decision policy of a validated config (the config knows nothing of the decision).
impl crate::config::ResponderConfig {
    pub fn policy(&self, regions: &[crate::config::RegionConfig]) -> Policy {
        Policy {
            regions: regions.iter().map(|r| r.name.clone()).collect(),
            min_interval_ms: self.policy.min_interval.as_millis() as u64,
            stabilisation_ms: self.policy.stabilisation.as_millis() as u64,
            auto_failback: self.policy.auto_failback,
            retry_backoff_ms: self.policy.retry_backoff.as_millis() as u64,
            live_check_cooldown_ms: self.policy.live_check_cooldown.as_millis() as u64,
            alert_expiry_ms: self.alerts.firing_expiry.as_millis() as u64,
            agents: self
                .agents
                .as_ref()
                .map_or_else(AgentPolicy::default, |a| AgentPolicy {
                    expected: a
                        .agents
                        .iter()
                        .map(|e| (e.name.clone(), e.region.clone()))
                        .collect(),
                    required: match a.required {
                        crate::config::responder::Required::All => None,
                        crate::config::responder::Required::AtLeast(n) => Some(n),
                    },
                }),
        }
    }
}

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
    /// A firing alert that Alertmanager has not sent again for this long is treated as resolved
    /// (a lost `resolved` must not pin a region down forever).
    pub alert_expiry_ms: u64,
    /// The application servers' agents, when the application is reconfigured by them.
    pub agents: AgentPolicy,
}

/// Which agents exist and how many must acknowledge a move.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentPolicy {
    /// Every expected agent, with the region whose application servers it runs on.
    pub expected: std::collections::BTreeMap<String, String>,
    /// How many of the target region's agents must acknowledge a plan's epoch: None for all of
    /// them. Agents of other regions follow too but are never waited for (their region may be the
    /// one that is down).
    pub required: Option<usize>,
}

impl Policy {
    pub fn home(&self) -> &str {
        &self.regions[0]
    }

    /// A repeat of a firing alert is written (to refresh when it was last sent) at most this
    /// often; repeats in between change nothing and need no write.
    fn refresh_after_ms(&self) -> u64 {
        self.alert_expiry_ms / 4
    }

    fn rank(&self, region: &str) -> usize {
        self.regions
            .iter()
            .position(|r| r == region)
            .unwrap_or(usize::MAX)
    }
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
        /// What the alert says failed (its detail annotation, e.g. `write`), for notices.
        detail: Option<String>,
        /// An application-down alert (the region's application tier, not its DynamoDB): it makes
        /// the region ineligible as a target while it fires, and never starts a move.
        app: bool,
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
    /// An agent applied a placement (or failed to).
    AgentAck {
        agent: String,
        epoch: u64,
        region: String,
        ok: bool,
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
    /// Every step is applied and verified, after at least one failed attempt of the plan.
    CompletedAfterRetry,
    /// A move that was blocked is no longer wanted or no longer blocked.
    Unblocked,
    Paused,
    Resumed,
}

impl NoticeKind {
    /// Whether this notice reports a finished transition.
    pub fn completes_a_move(self) -> bool {
        matches!(
            self,
            NoticeKind::Completed | NoticeKind::CompletedAfterRetry
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            NoticeKind::Started => "started",
            NoticeKind::Completed => "completed",
            NoticeKind::Blocked => "blocked",
            NoticeKind::TargetRejected => "target_rejected",
            NoticeKind::StepFailed => "step_failed",
            NoticeKind::CompletedAfterRetry => "completed_after_retry",
            NoticeKind::Unblocked => "unblocked",
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
    pub rejected: Option<Refusal>,
}

/// Why an operator request was refused. The HTTP layer maps each to its status code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("unknown region `{0}`")]
    UnknownRegion(String),
    #[error("the responder is paused; resume it first")]
    Paused,
    #[error("plan {epoch} ({from} -> {to}) is still in progress")]
    PlanInProgress {
        epoch: u64,
        from: String,
        to: String,
    },
    #[error("traffic is already in {0}")]
    AlreadyThere(String),
}

/// How an alert event relates to what the state remembers of its instance.
enum Seen {
    /// Unknown, or news (a new episode, a change of status, an expired instance firing again).
    New,
    /// A late copy of an older episode, or a firing overtaken by its resolved: ignored.
    Stale,
    /// The same as remembered; `refresh` when a firing one's last sighting should be recorded.
    Repeat { refresh: bool },
}

fn seen(
    s: &State,
    fingerprint: &str,
    region: &str,
    firing: bool,
    starts: u64,
    now: u64,
    p: &Policy,
) -> Seen {
    let Some(a) = s.alerts.get(fingerprint) else {
        return Seen::New;
    };
    if a.starts_at_ms > starts || (a.starts_at_ms == starts && !a.firing && !a.expired && firing) {
        return Seen::Stale;
    }
    // Alertmanager's own resolved for an episode that expired here: recorded, so a late
    // firing copy after it is stale again.
    if a.expired && !firing {
        return Seen::New;
    }
    if a.starts_at_ms == starts && a.firing == firing && a.region == region {
        return Seen::Repeat {
            refresh: firing && now.saturating_sub(a.seen_ms) >= p.refresh_after_ms(),
        };
    }
    Seen::New
}

/// True when `event` is an alert the state already accounts for: a duplicate, a repeat, a late
/// copy of an older episode, a firing overtaken by its resolved, or an unknown region. Applying it
/// changes nothing, so it needs no write. (It reads the same `seen` as `apply`; a test checks
/// the two agree.)
pub fn is_known_alert(s: &State, event: &Event, now: u64, policy: &Policy) -> bool {
    let Event::Alert {
        fingerprint,
        region,
        firing,
        starts_at_ms,
        ..
    } = event
    else {
        return false;
    };
    if !s.health.contains_key(region) {
        return true;
    }
    match seen(s, fingerprint, region, *firing, *starts_at_ms, now, policy) {
        Seen::Stale | Seen::Repeat { refresh: false } => true,
        Seen::New | Seen::Repeat { refresh: true } => false,
    }
}

/// Keeps at most [`MAX_ALERTS_PER_REGION`] instances of `region`.
fn bound_alerts(s: &mut State, region: &str) {
    while s.alerts.values().filter(|a| a.region == region).count() > MAX_ALERTS_PER_REGION {
        let victim = s
            .alerts
            .iter()
            .filter(|(_, a)| a.region == region)
            .min_by_key(|(fp, a)| {
                let last = if a.firing { a.seen_ms } else { a.updated_ms };
                (a.firing, last, fp.as_str())
            })
            .map(|(fp, _)| fp.clone())
            .expect("more than the bound, so not empty");
        s.alerts.remove(&victim);
    }
}

/// A configured step as a plan records it: its unique name (e.g. `load_balancer:<id>`) and kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepSpec {
    pub name: String,
    pub kind: StepKind,
}

/// Decides what `event` means at `now` under `policy`. Pure.
pub fn decide(
    state: &State,
    event: &Event,
    now: u64,
    policy: &Policy,
    steps: &[StepSpec],
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

/// Applies the event itself. Answers `Err` to refuse an operator request.
fn apply(
    s: &mut State,
    event: &Event,
    now: u64,
    policy: &Policy,
    steps: &[StepSpec],
    fx: &mut Vec<Effect>,
) -> Result<(), Refusal> {
    match event {
        Event::Alert {
            fingerprint,
            region,
            firing,
            starts_at_ms,
            detail,
            app,
        } => {
            if !s.health.contains_key(region) {
                return Ok(()); // unknown regions are reported by the caller and change nothing
            }
            match seen(s, fingerprint, region, *firing, *starts_at_ms, now, policy) {
                Seen::Stale | Seen::Repeat { refresh: false } => return Ok(()),
                Seen::Repeat { refresh: true } => {
                    if let Some(a) = s.alerts.get_mut(fingerprint) {
                        a.seen_ms = now;
                    }
                }
                Seen::New => {
                    s.alerts.insert(
                        fingerprint.clone(),
                        AlertInstance {
                            region: region.clone(),
                            starts_at_ms: *starts_at_ms,
                            firing: *firing,
                            updated_ms: now,
                            seen_ms: now,
                            expired: false,
                            detail: detail.as_deref().map(clip_detail),
                            app: *app,
                        },
                    );
                    bound_alerts(s, region);
                }
            }
            refresh_health(s, now);
            Ok(())
        }
        Event::Tick => {
            s.alerts
                .retain(|_, a| a.firing || now.saturating_sub(a.updated_ms) < ALERT_MEMORY_MS);
            let mut expired = false;
            for a in s.alerts.values_mut() {
                if a.firing && now.saturating_sub(a.seen_ms) >= policy.alert_expiry_ms {
                    a.firing = false;
                    a.expired = true;
                    a.updated_ms = now;
                    expired = true;
                }
            }
            if expired {
                refresh_health(s, now);
            }
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
                let plan = drop_plan(s).expect("checked above");
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
                            "{} to {} dropped: the live check of {} failed ({})",
                            kind_word(plan.kind),
                            plan.to,
                            plan.to,
                            clip(detail)
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
            if s.plan.as_ref().is_some_and(|p| p.epoch == *epoch) {
                step_done(s, *index, detail, now, fx);
            }
            Ok(())
        }
        Event::AgentAck {
            agent,
            epoch,
            region,
            ok,
            detail,
        } => {
            if !policy.agents.expected.contains_key(agent) {
                return Ok(()); // only configured agents are recorded (the state stays bounded)
            }
            if let Some(had) = s.agents.get(agent) {
                // An older epoch delivered late never replaces a newer one; a repeat of the same
                // outcome changes nothing (the state is not written again for it).
                if *epoch < had.epoch
                    || (*epoch == had.epoch
                        && had.region == *region
                        && had.ok == *ok
                        && had.detail == clip_detail(detail))
                {
                    return Ok(());
                }
            }
            s.agents.insert(
                agent.clone(),
                AgentAck {
                    epoch: *epoch,
                    region: region.clone(),
                    ok: *ok,
                    detail: clip_detail(detail),
                    at_ms: now,
                },
            );
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
            let msg = format!("step {} failed: {}", plan.steps[*index].name, clip(detail));
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
    steps: &[StepSpec],
    fx: &mut Vec<Effect>,
    kind: Kind,
) -> Result<(), Refusal> {
    if !s.health.contains_key(to) {
        return Err(Refusal::UnknownRegion(to.to_string()));
    }
    if s.paused {
        return Err(Refusal::Paused);
    }
    match &s.plan {
        Some(p) if p.status != PlanStatus::Failed => {
            return Err(Refusal::PlanInProgress {
                epoch: p.epoch,
                from: p.from.clone(),
                to: p.to.clone(),
            })
        }
        Some(p) if p.to == to => {
            // Retry the failed plan now, keeping what is done.
            let mut p = s.plan.take().expect("present");
            p.trigger = Trigger::Operator;
            restart(&mut p, steps, fx);
            s.plan = Some(p);
            s.pinned = kind == Kind::Failover && to != policy.home();
            return Ok(());
        }
        _ => {}
    }
    if s.plan.is_none() && s.active == to {
        return Err(Refusal::AlreadyThere(to.to_string()));
    }
    let from = s.active.clone();
    let reason = match kind {
        Kind::Failover => format!("operator requested failover to {to}"),
        Kind::Failback => format!("operator requested failback to {to}"),
    };
    drop_plan(s);
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
        let firing = |app: bool| {
            s.alerts
                .values()
                .any(|a| a.firing && a.region == *region && a.app == app)
        };
        let (down, app_down) = (firing(false), firing(true));
        if down != h.down || app_down != h.app_down {
            h.since_ms = now;
        }
        h.down = down;
        h.app_down = app_down;
    }
}

/// After any event: start, defer or retry a move if the health picture asks for one.
fn reconcile(s: &mut State, now: u64, policy: &Policy, steps: &[StepSpec], fx: &mut Vec<Effect>) {
    announce(s);
    if let Some((index, detail)) = agents_step_ready(s, policy) {
        step_done(s, index, &detail, now, fx);
    }
    if let Some(plan) = &s.plan {
        if plan.status == PlanStatus::Failed && !s.paused {
            let waited = now.saturating_sub(plan.failed_ms.unwrap_or(now));
            let backoff = policy
                .retry_backoff_ms
                .saturating_mul(1 << plan.attempts.saturating_sub(1).min(4));
            if waited >= backoff {
                // The target may have gone down meanwhile: then drop the plan and choose again.
                if s.plan.as_ref().is_some_and(|p| s.is_down(&p.to)) {
                    let p = drop_plan(s).expect("present");
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
                    let mut p = s.plan.take().expect("present");
                    restart(&mut p, steps, fx);
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
                NoticeKind::Unblocked,
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
            .is_some_and(|h| !h.down && !h.app_down && h.live_failed_ms.is_none())
    };
    if s.is_down(&s.active) {
        let failing: std::collections::BTreeSet<&str> = s
            .alerts
            .values()
            .filter(|a| a.firing && !a.app && a.region == s.active)
            .filter_map(|a| a.detail.as_deref())
            .collect();
        let reason = if failing.is_empty() {
            format!("{} is unavailable (region-down alert firing)", s.active)
        } else {
            let what = failing.into_iter().collect::<Vec<_>>().join("; ");
            format!(
                "{} is unavailable (region-down alert firing: {what} failing)",
                s.active
            )
        };
        let target = policy
            .regions
            .iter()
            .find(|r| **r != s.active && usable(r))
            .cloned()
            .ok_or_else(|| {
                // Why each other region is not a target, for the notice and `status`.
                let why: Vec<String> = policy
                    .regions
                    .iter()
                    .filter(|r| **r != s.active)
                    .filter_map(|r| {
                        let h = s.health.get(r)?;
                        let mut w = Vec::new();
                        if h.down {
                            w.push("region-down alert firing");
                        }
                        if h.app_down {
                            w.push("application-down alert firing");
                        }
                        if h.live_failed_ms.is_some() {
                            w.push("failed its live check");
                        }
                        Some(format!("{r}: {}", w.join(", ")))
                    })
                    .collect();
                format!(
                    "{} is unavailable and no other region is healthy ({}); traffic stays in {}",
                    s.active,
                    why.join("; "),
                    s.active
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
    steps: &[StepSpec],
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
        announced: false,
        attempts: 1,
        steps: steps
            .iter()
            .map(|n| StepState {
                name: n.name.clone(),
                kind: n.kind,
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

/// Retries a failed plan. Its steps are rebuilt from the configured ones (a step removed from the
/// config is dropped, an added one is to do), keeping what is done by name.
fn restart(p: &mut Plan, steps: &[StepSpec], fx: &mut Vec<Effect>) {
    p.steps = steps
        .iter()
        .map(|spec| {
            p.steps
                .iter()
                .find(|st| st.name == spec.name)
                .cloned()
                .unwrap_or(StepState {
                    name: spec.name.clone(),
                    kind: spec.kind,
                    done: false,
                    detail: None,
                })
        })
        .collect();
    p.status = PlanStatus::Checking;
    p.attempts += 1;
    p.failed_ms = None;
    fx.push(Effect::CheckTarget { epoch: p.epoch });
}

fn finish(s: &mut State, plan: Plan, now: u64, fx: &mut Vec<Effect>) {
    s.active = plan.to.clone();
    s.app_region = plan.to.clone();
    s.app_epoch = plan.epoch;
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
            NoticeKind::CompletedAfterRetry
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

/// Marks step `index` of the running plan done; the plan finishes with its last step.
fn step_done(s: &mut State, index: usize, detail: &str, now: u64, fx: &mut Vec<Effect>) {
    let Some(plan) = s.plan.as_mut() else {
        return;
    };
    if plan.status != PlanStatus::Running || index >= plan.steps.len() {
        return;
    }
    let step = &mut plan.steps[index];
    step.done = true;
    step.detail = Some(clip(detail));
    if step.kind.moves_the_application() {
        s.app_region = plan.to.clone();
        s.app_epoch = plan.epoch;
    }
    if plan.steps.iter().all(|st| st.done) {
        let plan = s.plan.take().expect("present");
        finish(s, plan, now, fx);
    }
}

/// The agents step of the running plan, when it is the next step not done and enough of the
/// target region's agents have acknowledged the plan's epoch: its index and what to record.
fn agents_step_ready(s: &State, policy: &Policy) -> Option<(usize, String)> {
    let plan = s
        .plan
        .as_ref()
        .filter(|p| p.status == PlanStatus::Running)?;
    let index = plan.steps.iter().position(|st| !st.done)?;
    if plan.steps[index].kind != StepKind::Agents {
        return None;
    }
    let (acked, waiting) = agents_of(s, policy, &plan.to, plan.epoch);
    let needed = policy
        .agents
        .required
        .map_or(acked.len() + waiting.len(), |n| {
            n.min(acked.len() + waiting.len())
        });
    (acked.len() >= needed).then(|| {
        let detail = format!(
            "{} of {}'s agents applied epoch {}: {}",
            acked.len(),
            plan.to,
            plan.epoch,
            if acked.is_empty() {
                "none needed".to_string()
            } else {
                acked.join(", ")
            }
        );
        (index, detail)
    })
}

/// The target region's agents that acknowledged `epoch` for it, and those that did not yet.
pub fn agents_of(
    s: &State,
    policy: &Policy,
    region: &str,
    epoch: u64,
) -> (Vec<String>, Vec<String>) {
    policy
        .agents
        .expected
        .iter()
        .filter(|(_, r)| *r == region)
        .map(|(name, _)| name.clone())
        .partition(|name| {
            s.agents
                .get(name)
                .is_some_and(|a| a.ok && a.epoch == epoch && a.region == region)
        })
}

/// Where the application servers should point now, and under which epoch: the running plan's
/// target once its agents step is due (every step before it done), else the application's
/// region as of the last plan that moved it.
pub fn placement(s: &State) -> (String, u64) {
    match &s.plan {
        Some(p) if p.announced => (p.to.clone(), p.epoch),
        _ => (s.app_region.clone(), s.app_epoch),
    }
}

/// Marks the plan announced once its live check has passed and every step before its agents
/// step is done.
fn announce(s: &mut State) {
    if let Some(p) = s.plan.as_mut() {
        if !p.announced && p.status == PlanStatus::Running {
            if let Some(i) = p.steps.iter().position(|st| st.kind == StepKind::Agents) {
                p.announced = p.steps[..i].iter().all(|st| st.done);
            }
        }
    }
}

/// Takes the plan away unfinished. If its target was announced to the agents, the active region
/// is announced again under a new epoch (agents only ever apply newer epochs), so that no
/// application server is left on a target traffic never moved to.
fn drop_plan(s: &mut State) -> Option<Plan> {
    let plan = s.plan.take()?;
    if plan.announced {
        s.epoch += 1;
        s.app_region = s.active.clone();
        s.app_epoch = s.epoch;
    }
    Some(plan)
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
mod tests;
