//! The plan driver: one task per responder that carries the current plan out. Until the plan
//! ends it runs the live check of the target or the next step not done, one at a time, and
//! records each outcome through the engine before looking at the plan again. It is
//! level-triggered: it reads what to do from the stored state, so a plan decided here, recorded
//! by another replica, or left unfinished by a crash is picked up the same way.
//!
//! A step gets one deadline and one retry layer (the DigitalOcean client's, which knows the
//! API's rate limits); the fence is asked before every attempt. A step stopped by its fence
//! records nothing: the replica that may act resumes it from the start (steps are idempotent).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::executor::Engine;
use super::machine::Event;
use super::state::{Kind, PlanStatus, State};
use crate::ports::{FailReason, Fence, StepCtx, StepError};

/// The next piece of plan work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Work {
    Check {
        epoch: u64,
        to: String,
        from: String,
        failback: bool,
    },
    Step {
        epoch: u64,
        index: usize,
        name: String,
        to: String,
    },
}

/// What the stored state asks for now, if anything.
pub(crate) fn next_work(s: &State) -> Option<Work> {
    let plan = s.plan.as_ref()?;
    match plan.status {
        PlanStatus::Failed => None, // its retry is the decision's (a Tick after the backoff)
        PlanStatus::Checking => Some(Work::Check {
            epoch: plan.epoch,
            to: plan.to.clone(),
            from: plan.from.clone(),
            failback: plan.kind == Kind::Failback,
        }),
        PlanStatus::Running => {
            let index = plan.steps.iter().position(|st| !st.done)?;
            Some(Work::Step {
                epoch: plan.epoch,
                index,
                name: plan.steps[index].name.clone(),
                to: plan.to.clone(),
            })
        }
    }
}

/// How one piece of work ended.
enum Outcome {
    Recorded,
    /// The fence said no: nothing recorded, nothing more done.
    Fenced,
    /// The outcome could not be stored; the work is repeated after a pause.
    NotRecorded,
}

const FIRST_PAUSE: Duration = Duration::from_millis(250);
const MAX_PAUSE: Duration = Duration::from_secs(5);

/// Runs until the engine stops acting for good (shutdown).
pub(super) async fn run(engine: Arc<Engine>) {
    let mut seen = engine.subscribe();
    let mut pause = FIRST_PAUSE;
    let mut warned_epoch = 0;
    loop {
        if engine.authority().stopping() {
            break;
        }
        let snap = seen.borrow_and_update().clone();
        let work = engine
            .authority()
            .may_act()
            .then(|| next_work(&snap))
            .flatten();
        let Some(work) = work else {
            tokio::select! {
                _ = seen.changed() => {}
                _ = engine.driver_woken() => {}
            }
            continue;
        };
        if let Some(plan) = snap.plan.as_ref().filter(|p| p.epoch != warned_epoch) {
            warned_epoch = plan.epoch;
            // First sight of a plan already past its live check: it was left unfinished by a
            // crash, a restart or another replica.
            if plan.status == PlanStatus::Running {
                tracing::warn!(epoch = plan.epoch, from = %plan.from, to = %plan.to,
                    replica = engine.replica_name(), "resuming an unfinished plan");
            }
            if !engine.plan_matches_config(plan) {
                tracing::warn!(epoch = plan.epoch,
                    "the plan's steps differ from the configured steps; it runs with the stored steps");
            }
        }
        match perform(&engine, work).await {
            Outcome::Recorded | Outcome::Fenced => pause = FIRST_PAUSE,
            Outcome::NotRecorded => {
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = engine.driver_woken() => {}
                }
                pause = (pause * 2).min(MAX_PAUSE);
            }
        }
    }
    engine.driver_finished();
}

async fn perform(engine: &Arc<Engine>, work: Work) -> Outcome {
    let lease_epoch = engine.authority().lease_epoch();
    let (epoch, event) = match work {
        Work::Check {
            epoch,
            to,
            from,
            failback,
        } => {
            tracing::info!(epoch, to = %to, "checking the target live");
            let started = Instant::now();
            let res = engine.live().check(&to, &from, failback).await;
            engine.observe_duration("live_check", started);
            let (ok, detail) = match res {
                Ok(d) => {
                    tracing::info!(epoch, to = %to, detail = %d, "live check passed");
                    (true, d)
                }
                Err(d) => {
                    tracing::warn!(epoch, to = %to, detail = %d, "live check failed");
                    engine.count_step_failure("live_check", "target_unhealthy");
                    (false, d)
                }
            };
            (epoch, Event::LiveCheck { epoch, ok, detail })
        }
        Work::Step {
            epoch,
            index,
            name,
            to,
        } => match step(engine, epoch, &name, &to).await {
            Ok(detail) => {
                tracing::info!(epoch, step = %name, to = %to, detail = %detail, "step done");
                (
                    epoch,
                    Event::StepDone {
                        epoch,
                        index,
                        detail,
                    },
                )
            }
            Err(e) if e.reason == FailReason::Fenced => {
                tracing::error!(epoch, step = %name, "this replica may no longer act; stopped before the next side effect");
                return Outcome::Fenced;
            }
            Err(e) => {
                tracing::error!(epoch, step = %name, to = %to, reason = e.reason.as_str(), error = %e.message, "step failed");
                (
                    epoch,
                    Event::StepFailed {
                        epoch,
                        index,
                        detail: e.message,
                    },
                )
            }
        },
    };
    // Only the replica that still leads, under the lease it did the work under, records the
    // outcome: a deposed leader's late failure must not fail the new leader's plan. (The new
    // leader repeats the work; it is idempotent.)
    if !engine.authority().holds() || engine.authority().lease_epoch() != lease_epoch {
        tracing::error!(
            epoch,
            "the lease changed hands during this work; its outcome is left to the current leader"
        );
        return Outcome::Fenced;
    }
    match engine.submit(std::slice::from_ref(&event)).await {
        Ok(_) => Outcome::Recorded,
        Err(e) => {
            tracing::error!(epoch, error = %e, "cannot record a plan outcome; it is repeated once the state store answers");
            Outcome::NotRecorded
        }
    }
}

/// The fence of one plan: this replica may act and the plan is still current and running.
struct PlanFence<'a> {
    engine: &'a Engine,
    epoch: u64,
}

impl Fence for PlanFence<'_> {
    fn may_act(&self) -> bool {
        self.engine.authority().may_act()
            && self
                .engine
                .snapshot()
                .plan
                .as_ref()
                .is_some_and(|p| p.epoch == self.epoch && p.status == PlanStatus::Running)
    }

    fn acting_for(&self) -> Option<Duration> {
        self.engine.authority().acting_for()
    }
}

/// Applies one step within the step deadline.
async fn step(engine: &Arc<Engine>, epoch: u64, name: &str, to: &str) -> Result<String, StepError> {
    let Some(step) = engine.step(name) else {
        return Err(StepError::new(
            FailReason::Rejected,
            format!("step {name} is no longer configured"),
            false,
        ));
    };
    let kind = step.kind().as_str();
    let limit = engine.step_deadline();
    let fence = PlanFence { engine, epoch };
    let on_retry = |r: FailReason| engine.count_step_failure(kind, r.as_str());
    let ctx = StepCtx {
        epoch,
        replica: engine.replica_name(),
        deadline: Instant::now() + limit,
        fence: &fence,
        on_retry: &on_retry,
    };
    ctx.check()?;
    let started = Instant::now();
    let res = match tokio::time::timeout(limit, step.apply(to, &ctx)).await {
        Ok(r) => r,
        Err(_) => Err(StepError::new(
            FailReason::Timeout,
            format!("no result within the step deadline of {limit:?}"),
            false,
        )),
    };
    engine.observe_duration(kind, started);
    if let Err(e) = &res {
        if e.reason != FailReason::Fenced {
            engine.count_step_failure(kind, e.reason.as_str());
        }
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failover::machine::{decide, Policy, StepSpec};
    use crate::failover::state::StepKind;

    #[test]
    fn the_work_follows_the_plan_status_and_the_first_step_not_done() {
        let policy = Policy {
            regions: vec!["a".into(), "b".into()],
            min_interval_ms: 0,
            stabilisation_ms: 0,
            auto_failback: true,
            retry_backoff_ms: 1000,
            live_check_cooldown_ms: 0,
            alert_expiry_ms: 1_200_000,
            agents: Default::default(),
        };
        let steps = vec![
            StepSpec {
                name: "app_config".into(),
                kind: StepKind::AppConfig,
            },
            StepSpec {
                name: "dns:x/1".into(),
                kind: StepKind::Dns,
            },
        ];
        let s = State::initial(&policy, 0);
        assert_eq!(next_work(&s), None);
        let fire = Event::Alert {
            fingerprint: "f".into(),
            region: "a".into(),
            firing: true,
            starts_at_ms: 1,
            detail: None,
            app: false,
        };
        let s = decide(&s, &fire, 10, &policy, &steps).state;
        assert_eq!(
            next_work(&s),
            Some(Work::Check {
                epoch: 1,
                to: "b".into(),
                from: "a".into(),
                failback: false
            })
        );
        let ok = Event::LiveCheck {
            epoch: 1,
            ok: true,
            detail: "ok".into(),
        };
        let s = decide(&s, &ok, 20, &policy, &steps).state;
        let done = Event::StepDone {
            epoch: 1,
            index: 0,
            detail: "wrote".into(),
        };
        let s = decide(&s, &done, 30, &policy, &steps).state;
        assert_eq!(
            next_work(&s),
            Some(Work::Step {
                epoch: 1,
                index: 1,
                name: "dns:x/1".into(),
                to: "b".into()
            })
        );
        let failed = Event::StepFailed {
            epoch: 1,
            index: 1,
            detail: "503".into(),
        };
        let s = decide(&s, &failed, 40, &policy, &steps).state;
        assert_eq!(next_work(&s), None, "a failed plan waits for its retry");
    }
}
