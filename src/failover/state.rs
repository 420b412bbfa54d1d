//! The persisted state: everything the responder knows, written by the state store after every
//! change, with the schema version both stores write beside it. The decision
//! ([`super::machine::decide`]) reads and answers these types; nothing here does I/O.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::machine::Policy;

/// The version of the stored shape. Raise it when a stored field changes meaning; [`decode`]
/// reads every older version it knows how to migrate.
pub const SCHEMA_VERSION: u32 = 1;

/// Reads a stored state body written with `schema` (this build's or an older one it can migrate).
pub fn decode(schema: u64, body: serde_json::Value) -> Result<State, String> {
    if schema != u64::from(SCHEMA_VERSION) {
        return Err(format!(
            "the stored state has schema version {schema}, this build reads {SCHEMA_VERSION}"
        ));
    }
    serde_json::from_value(body).map_err(|e| format!("the stored state is unreadable: {e}"))
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

    pub(crate) fn is_down(&self, region: &str) -> bool {
        self.health.get(region).is_some_and(|h| h.down)
    }
}
