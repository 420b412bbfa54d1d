//! The engine and its plan driver in-process, on small fakes of the ports: a recording step, a
//! store that can fail, a lease held elsewhere, a live check that answers as told. These reach the
//! paths the process tests reach only by timing (a store failing between two steps, a replica
//! without the lease, a stop in the middle of a step).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use super::*;
use crate::failover::lease::Ha;
use crate::failover::machine::Policy;
use crate::failover::notices::{self, Channels, Links};
use crate::failover::state::StepKind;
use crate::ports::{
    FailReason, Lease, LeaseError, LeaseView, Placement, StepCtx, StepError, SystemClock, Versioned,
};

/// A state store in memory whose saves can be made to fail.
#[derive(Default)]
struct MemStore {
    stored: Mutex<Option<Versioned>>,
    failing: AtomicBool,
}

impl MemStore {
    fn plan_steps_done(&self) -> usize {
        self.stored
            .lock()
            .unwrap()
            .as_ref()
            .and_then(|v| v.state.plan.as_ref())
            .map_or(0, |p| p.steps.iter().filter(|s| s.done).count())
    }
}

#[async_trait]
impl StateStore for MemStore {
    async fn load(&self) -> Result<Option<Versioned>, StoreError> {
        Ok(self.stored.lock().unwrap().clone())
    }

    async fn save(&self, state: &State, expected: u64) -> Result<u64, StoreError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("the test cut the store off".into()));
        }
        let mut s = self.stored.lock().unwrap();
        let found = s.as_ref().map_or(0, |v| v.version);
        if found != expected {
            return Err(StoreError::Conflict { expected, found });
        }
        *s = Some(Versioned {
            version: expected + 1,
            state: state.clone(),
        });
        Ok(expected + 1)
    }
}

/// What the steps did, in order: `name@steps-done-in-the-store-when-applied`.
type Journal = Arc<Mutex<Vec<String>>>;

struct RecordingStep {
    name: &'static str,
    kind: StepKind,
    journal: Journal,
    store: Arc<MemStore>,
    fail: AtomicBool,
    /// While set, the step holds until it is cleared (a slow request in flight).
    hold: Arc<AtomicBool>,
}

#[async_trait]
impl Step for RecordingStep {
    fn name(&self) -> String {
        self.name.to_string()
    }

    fn kind(&self) -> StepKind {
        self.kind
    }

    async fn apply(&self, to: &str, ctx: &StepCtx<'_>) -> Result<String, StepError> {
        ctx.check()?;
        self.journal.lock().unwrap().push(format!(
            "{}@{}",
            self.name,
            self.store.plan_steps_done()
        ));
        while self.hold.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if self.fail.load(Ordering::SeqCst) {
            return Err(StepError::new(FailReason::ServerError, "503", true));
        }
        Ok(format!("{} now points at {to}", self.name))
    }

    async fn placement(&self, _ctx: &StepCtx<'_>) -> Result<Placement, StepError> {
        Ok(Placement::Unclear("a test step".into()))
    }
}

struct FakeLive {
    ok: bool,
    calls: AtomicUsize,
}

#[async_trait]
impl LiveCheck for FakeLive {
    async fn check(&self, to: &str, _from: &str, _failback: bool) -> Result<String, String> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.ok {
            Ok(format!("{to} answered"))
        } else {
            Err(format!("{to}: timeout"))
        }
    }
}

/// A lease always held by another replica.
struct HeldElsewhere;

#[async_trait]
impl Lease for HeldElsewhere {
    async fn acquire(
        &self,
        _holder: &str,
        _now_ms: u64,
        _duration: Duration,
    ) -> Result<LeaseView, LeaseError> {
        Err(LeaseError::HeldElsewhere)
    }
    async fn release(&self, _holder: &str) {}
}

struct Rig {
    engine: Arc<Engine>,
    store: Arc<MemStore>,
    journal: Journal,
    steps: Vec<Arc<RecordingStep>>,
    live: Arc<FakeLive>,
    hold: Arc<AtomicBool>,
}

fn policy() -> Policy {
    Policy {
        regions: vec!["a".into(), "b".into()],
        min_interval_ms: 0,
        stabilisation_ms: 60_000,
        auto_failback: true,
        retry_backoff_ms: 60_000,
        live_check_cooldown_ms: 60_000,
        alert_expiry_ms: 1_200_000,
        agents: Default::default(),
    }
}

async fn rig(store: Arc<MemStore>, live_ok: bool, ha: Option<Ha>) -> Rig {
    let journal = Journal::default();
    let hold = Arc::new(AtomicBool::new(false));
    let steps: Vec<Arc<RecordingStep>> = [
        ("app_config", StepKind::AppConfig),
        ("load_balancer:x", StepKind::LoadBalancer),
        ("dns:example.com/1", StepKind::Dns),
    ]
    .into_iter()
    .map(|(name, kind)| {
        Arc::new(RecordingStep {
            name,
            kind,
            journal: journal.clone(),
            store: store.clone(),
            fail: AtomicBool::new(false),
            hold: hold.clone(),
        })
    })
    .collect();
    let registry = prometheus::Registry::new();
    let metrics = ResponderMetrics::register(
        &registry,
        &["a".to_string(), "b".to_string()],
        &["app_config", "load_balancer", "dns", "live_check"],
    )
    .unwrap();
    let live = Arc::new(FakeLive {
        ok: live_ok,
        calls: AtomicUsize::new(0),
    });
    let notices = notices::spawn(Channels {
        notifiers: Vec::new(),
        lag: None,
        links: Links::default(),
        policy: policy(),
        metrics: metrics.clone(),
    });
    let engine = Engine::start(Parts {
        policy: policy(),
        steps: steps.iter().map(|s| s.clone() as Arc<dyn Step>).collect(),
        store: store.clone(),
        live: live.clone(),
        notices,
        clock: Arc::new(SystemClock),
        metrics,
        step_deadline: Duration::from_secs(5),
        ha,
    })
    .await
    .unwrap();
    engine.spawn_driver();
    Rig {
        engine,
        store,
        journal,
        steps,
        live,
        hold,
    }
}

fn fire(region: &str) -> Event {
    Event::Alert {
        fingerprint: format!("f-{region}"),
        region: region.into(),
        firing: true,
        starts_at_ms: 1,
        detail: None,
        app: false,
    }
}

async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn journal(r: &Rig) -> Vec<String> {
    r.journal.lock().unwrap().clone()
}

#[tokio::test]
async fn a_failover_checks_the_target_then_applies_every_step_in_order_each_outcome_stored_first() {
    let r = rig(Arc::new(MemStore::default()), true, None).await;
    r.engine.submit(&[fire("a")]).await.unwrap();
    until("traffic in b", || {
        let s = r.engine.snapshot();
        s.active == "b" && s.plan.is_none()
    })
    .await;
    assert_eq!(r.live.calls.load(Ordering::SeqCst), 1);
    // Each step found the previous one's outcome already stored.
    assert_eq!(
        journal(&r),
        ["app_config@0", "load_balancer:x@1", "dns:example.com/1@2"]
    );
    let stored = r.store.stored.lock().unwrap().clone().unwrap().state;
    assert_eq!((stored.active.as_str(), stored.epoch), ("b", 1));
}

#[tokio::test]
async fn a_failing_step_fails_the_plan_and_no_later_step_runs() {
    let r = rig(Arc::new(MemStore::default()), true, None).await;
    r.steps[1].fail.store(true, Ordering::SeqCst);
    r.engine.submit(&[fire("a")]).await.unwrap();
    until("the plan to fail", || {
        r.engine
            .snapshot()
            .plan
            .as_ref()
            .is_some_and(|p| p.status == PlanStatus::Failed)
    })
    .await;
    assert_eq!(journal(&r), ["app_config@0", "load_balancer:x@1"]);
    let s = r.engine.snapshot();
    let p = s.plan.as_ref().unwrap();
    assert!(p.last_error.as_deref().unwrap().contains("503"));
    assert_eq!(s.app_region, "b", "the application step was done");
    assert_eq!(s.active, "a", "traffic has not completely moved");
}

#[tokio::test]
async fn a_failing_target_runs_no_step() {
    let r = rig(Arc::new(MemStore::default()), false, None).await;
    r.engine.submit(&[fire("a")]).await.unwrap();
    until("the target to be dropped", || {
        let s = r.engine.snapshot();
        s.plan.is_none() && s.blocked.is_some()
    })
    .await;
    assert!(journal(&r).is_empty());
}

#[tokio::test]
async fn a_replica_without_the_lease_records_the_plan_but_applies_nothing() {
    let ha = Ha {
        lease: Arc::new(HeldElsewhere),
        replica: "r1".into(),
        duration: Duration::from_secs(3),
        renew_every: Duration::from_millis(20),
        margin: Duration::from_secs(1),
    };
    let r = rig(Arc::new(MemStore::default()), true, Some(ha)).await;
    let (_trigger, shutdown) = crate::shutdown::channel();
    let _lease = r.engine.spawn_lease_loop(shutdown, Duration::from_secs(1));
    r.engine.submit(&[fire("a")]).await.unwrap();
    assert_eq!(
        r.store
            .stored
            .lock()
            .unwrap()
            .as_ref()
            .unwrap()
            .state
            .plan
            .as_ref()
            .map(|p| p.epoch),
        Some(1),
        "the follower records the plan for the leader"
    );
    // Several renewal rounds pass: nothing is checked or applied.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(r.live.calls.load(Ordering::SeqCst), 0);
    assert!(journal(&r).is_empty());
    assert_eq!(r.engine.role(), "follower");
}

#[tokio::test]
async fn an_outcome_that_cannot_be_stored_holds_the_plan_until_the_store_answers() {
    let r = rig(Arc::new(MemStore::default()), true, None).await;
    r.hold.store(true, Ordering::SeqCst);
    r.engine.submit(&[fire("a")]).await.unwrap();
    until("the first step to start", || journal(&r).len() == 1).await;
    r.store.failing.store(true, Ordering::SeqCst);
    r.hold.store(false, Ordering::SeqCst);
    // The first step's outcome cannot be stored: the second step must not start.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        journal(&r).iter().all(|j| j.starts_with("app_config")),
        "a step ran after an unstored outcome: {:?}",
        journal(&r)
    );
    r.store.failing.store(false, Ordering::SeqCst);
    until("traffic in b", || r.engine.snapshot().active == "b").await;
    let j = journal(&r);
    assert_eq!(
        &j[j.len() - 2..],
        ["load_balancer:x@1", "dns:example.com/1@2"],
        "{j:?}"
    );
}

#[tokio::test]
async fn an_engine_started_over_an_unfinished_plan_applies_only_the_steps_not_done() {
    let store = Arc::new(MemStore::default());
    {
        let r = rig(store.clone(), true, None).await;
        r.steps[2].fail.store(true, Ordering::SeqCst);
        r.engine.submit(&[fire("a")]).await.unwrap();
        until("the plan to fail at dns", || {
            r.engine
                .snapshot()
                .plan
                .as_ref()
                .is_some_and(|p| p.status == PlanStatus::Failed)
        })
        .await;
        r.engine.stop(Duration::from_secs(1)).await;
    }
    // A restart: the stored plan is marked running again as a crash inside its last step would
    // have left it.
    {
        let mut s = store.stored.lock().unwrap();
        let plan = s.as_mut().unwrap().state.plan.as_mut().unwrap();
        plan.status = PlanStatus::Running;
    }
    let r = rig(store, true, None).await;
    until("traffic in b", || r.engine.snapshot().active == "b").await;
    assert_eq!(journal(&r), ["dns:example.com/1@2"]);
}

#[tokio::test]
async fn stop_lets_the_step_in_flight_end_and_starts_no_other() {
    let r = rig(Arc::new(MemStore::default()), true, None).await;
    r.hold.store(true, Ordering::SeqCst);
    r.engine.submit(&[fire("a")]).await.unwrap();
    until("the first step to start", || journal(&r).len() == 1).await;
    let engine = r.engine.clone();
    let stopping = tokio::spawn(async move { engine.stop(Duration::from_secs(2)).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        !stopping.is_finished(),
        "stop must wait for the step in flight"
    );
    r.hold.store(false, Ordering::SeqCst);
    assert!(stopping.await.unwrap(), "the driver ended within the grace");
    assert_eq!(journal(&r), ["app_config@0"]);
    assert!(!r.engine.authority().may_act());
}
