//! The persisted state: everything the responder knows, written by the state store after every
//! change, with the schema version both stores write beside it. The decision
//! ([`super::machine::decide`]) reads and answers these types; nothing here does I/O.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::machine::Policy;

/// The version of the stored shape. Raise it when a stored field changes meaning; [`decode`]
/// reads every older version it knows how to migrate.
///
/// - 1: the first release.
/// - 2: every plan step carries its [`StepKind`].
/// - 3: every alert instance records when Alertmanager last sent it (`seen_ms`).
pub const SCHEMA_VERSION: u32 = 3;

/// Reads a stored state body written with `schema` (this build's or an older one it can migrate).
pub fn decode(schema: u64, mut body: serde_json::Value) -> Result<State, String> {
    match schema {
        1 => {
            migrate_v1(&mut body);
            migrate_v2(&mut body);
        }
        2 => migrate_v2(&mut body),
        s if s == u64::from(SCHEMA_VERSION) => {}
        s => {
            return Err(format!(
            "the stored state has schema version {s}, this build reads {SCHEMA_VERSION} and older"
        ))
        }
    }
    serde_json::from_value(body).map_err(|e| format!("the stored state is unreadable: {e}"))
}

/// Version 1 named a step's kind only in its name (`app_config`, `load_balancer:<id>`,
/// `dns:<domain>/<id>`), the names that release gave its steps; this is the one place that reads
/// a kind from a name.
fn migrate_v1(body: &mut serde_json::Value) {
    let Some(steps) = body
        .get_mut("plan")
        .and_then(|p| p.get_mut("steps"))
        .and_then(|s| s.as_array_mut())
    else {
        return;
    };
    for step in steps {
        let name = step["name"].as_str().unwrap_or_default();
        let kind = if name.starts_with("load_balancer:") {
            "load_balancer"
        } else if name.starts_with("dns:") {
            "dns"
        } else {
            "app_config"
        };
        step["kind"] = serde_json::Value::String(kind.into());
    }
}

/// Version 2 did not record when an alert was last sent (its repeats changed nothing): 0 marks
/// it unknown, and [`State::adopt`] counts it as sent at load time, so a long-firing alert does
/// not expire at the first tick after an upgrade.
fn migrate_v2(body: &mut serde_json::Value) {
    let Some(alerts) = body.get_mut("alerts").and_then(|a| a.as_object_mut()) else {
        return;
    };
    for a in alerts.values_mut() {
        a["seen_ms"] = serde_json::json!(0);
    }
}

/// What a plan step reconfigures: the bounded `step` metric label, and what the decision needs
/// to know of a step (the application's region changes when an application step is done).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    /// The local env file and its reload commands.
    AppConfig,
    /// The application servers' agents: done when enough of the target region's agents have
    /// acknowledged the plan's epoch.
    Agents,
    LoadBalancer,
    Dns,
}

impl StepKind {
    pub const ALL: [StepKind; 4] = [
        StepKind::AppConfig,
        StepKind::Agents,
        StepKind::LoadBalancer,
        StepKind::Dns,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StepKind::AppConfig => "app_config",
            StepKind::Agents => "agents",
            StepKind::LoadBalancer => "load_balancer",
            StepKind::Dns => "dns",
        }
    }

    /// Whether finishing this step points the application at the plan's target.
    pub fn moves_the_application(self) -> bool {
        matches!(self, StepKind::AppConfig | StepKind::Agents)
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
    /// The epoch of the plan that last pointed the application at `app_region` (0: never moved).
    #[serde(default)]
    pub app_epoch: u64,
    /// Each configured agent's last acknowledgement (what it applied, and whether it worked).
    #[serde(default)]
    pub agents: BTreeMap<String, AgentAck>,
    /// Which history this state is (when it began, Unix ms): a state created afresh after the
    /// old one was lost starts its epochs again, and agents that applied epochs of the old one
    /// tell the two apart by this. Empty for a state from before it existed.
    #[serde(default)]
    pub lineage: String,
}

/// What an agent (the `agent` role on an application server) last said it applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentAck {
    pub epoch: u64,
    pub region: String,
    /// Whether its env file was written and its reload commands ran.
    pub ok: bool,
    /// What went wrong (or what it did), kept short.
    pub detail: String,
    pub at_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionHealth {
    pub down: bool,
    /// When `down` last changed (or when the state was created).
    pub since_ms: u64,
    /// When the region last failed a live check, if it did recently.
    pub live_failed_ms: Option<u64>,
    /// An application-down alert fires for the region: not a target while it does.
    #[serde(default)]
    pub app_down: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertInstance {
    pub region: String,
    pub starts_at_ms: u64,
    pub firing: bool,
    /// When this record last changed.
    pub updated_ms: u64,
    /// When Alertmanager last sent it (refreshed at most every quarter of the firing expiry, so
    /// repeats stay writeless): a firing alert not sent again within the expiry is treated as
    /// resolved.
    pub seen_ms: u64,
    /// Set when the instance was treated as resolved because it was not sent again in time
    /// (unlike a resolved Alertmanager sent, a later firing copy revives it).
    #[serde(default)]
    pub expired: bool,
    /// What the alert said failed (its detail annotation), kept short.
    #[serde(default)]
    pub detail: Option<String>,
    /// An application-down alert rather than a region-down one.
    #[serde(default)]
    pub app: bool,
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
    /// Its target was announced to the agents (the live check passed and every step before the
    /// agents step is done): from then on the agents are told this target, through retries, and
    /// dropping the plan announces the active region again under a new epoch.
    #[serde(default)]
    pub announced: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepState {
    pub name: String,
    pub kind: StepKind,
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
                            app_down: false,
                        },
                    )
                })
                .collect(),
            alerts: BTreeMap::new(),
            blocked: None,
            history: VecDeque::new(),
            app_epoch: 0,
            agents: BTreeMap::new(),
            lineage: now.to_string(),
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
                    app_down: false,
                });
        }
        self.health.retain(|r, _| policy.regions.contains(r));
        for a in self.alerts.values_mut() {
            if a.seen_ms == 0 {
                a.seen_ms = now; // migrated from a version that did not record it
            }
        }
        self
    }

    pub(crate) fn is_down(&self, region: &str) -> bool {
        self.health.get(region).is_some_and(|h| h.down)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_1_state_is_read_with_each_step_given_its_kind() {
        let v1 = serde_json::json!({
            "epoch": 4, "active": "a", "app_region": "b", "paused": false, "pinned": false,
            "plan": {
                "epoch": 4, "kind": "failover", "from": "a", "to": "b", "trigger": "alert",
                "reason": "a is down", "created_ms": 1, "status": "running", "attempts": 1,
                "steps": [
                    {"name": "app_config", "done": true, "detail": "wrote"},
                    {"name": "load_balancer:lb-1", "done": false, "detail": null},
                    {"name": "dns:example.com/7", "done": false, "detail": null}
                ],
                "failed_ms": null, "last_error": null
            },
            "last_transition_ms": null, "health": {}, "alerts": {}, "blocked": null, "history": []
        });
        let s = decode(1, v1).unwrap();
        let kinds: Vec<StepKind> = s.plan.unwrap().steps.iter().map(|s| s.kind).collect();
        assert_eq!(
            kinds,
            [StepKind::AppConfig, StepKind::LoadBalancer, StepKind::Dns]
        );
        let e = decode(99, serde_json::json!({})).unwrap_err();
        assert!(e.contains("schema version 99"), "{e}");
    }

    #[test]
    fn a_version_2_alert_counts_as_sent_when_loaded() {
        let v2 = serde_json::json!({
            "epoch": 0, "active": "a", "app_region": "a", "paused": false, "pinned": false,
            "plan": null, "last_transition_ms": null, "health": {}, "blocked": null, "history": [],
            "alerts": {"f": {"region": "b", "starts_at_ms": 1, "firing": true, "updated_ms": 5}}
        });
        let s = decode(2, v2).unwrap();
        assert_eq!(s.alerts["f"].seen_ms, 0);
        let policy = super::super::machine::Policy {
            regions: vec!["a".into(), "b".into()],
            min_interval_ms: 0,
            stabilisation_ms: 0,
            auto_failback: true,
            retry_backoff_ms: 0,
            live_check_cooldown_ms: 0,
            alert_expiry_ms: 1000,
            agents: Default::default(),
        };
        assert_eq!(s.adopt(&policy, 777).alerts["f"].seen_ms, 777);
    }
}
