//! The small traits the executor drives. Production adapters live in [`crate::adapters`]; the
//! engine's unit tests (`failover/executor/tests.rs`) drive in-memory fakes of them. Each error
//! says whether retrying can help and carries a bounded `reason` used as a metric label.

use async_trait::async_trait;

use crate::failover::state::{State, StepKind};

/// A stored state and the version it was stored at.
#[derive(Debug, Clone)]
pub struct Versioned {
    pub version: u64,
    pub state: State,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Someone else stored a newer version: reload before deciding again.
    #[error("state was changed elsewhere (expected version {expected}, found {found})")]
    Conflict { expected: u64, found: u64 },
    #[error("state store unavailable: {0}")]
    Unavailable(String),
    #[error("stored state is unreadable: {0}")]
    Corrupt(String),
}

/// Durable state with optimistic concurrency: a save succeeds only over the version it read. A
/// DynamoDB-backed store maps this to a conditional write on the version attribute, and adds a
/// lease whose epoch fences every side effect.
#[async_trait]
pub trait StateStore: Send + Sync {
    async fn load(&self) -> Result<Option<Versioned>, StoreError>;
    /// Stores `state` if the stored version is still `expected` (0: nothing stored yet) and
    /// answers the new version.
    async fn save(&self, state: &State, expected: u64) -> Result<u64, StoreError>;
}

/// Why a step failed, as a bounded metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailReason {
    Timeout,
    RateLimited,
    ServerError,
    Busy,
    Rejected,
    Io,
    CommandFailed,
    VerifyFailed,
    NotFound,
    Unauthorized,
    Fenced,
}

impl FailReason {
    pub const ALL: [FailReason; 11] = [
        FailReason::Timeout,
        FailReason::RateLimited,
        FailReason::ServerError,
        FailReason::Busy,
        FailReason::Rejected,
        FailReason::Io,
        FailReason::CommandFailed,
        FailReason::VerifyFailed,
        FailReason::NotFound,
        FailReason::Unauthorized,
        FailReason::Fenced,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FailReason::Timeout => "timeout",
            FailReason::RateLimited => "rate_limited",
            FailReason::ServerError => "server_error",
            FailReason::Busy => "busy",
            FailReason::Rejected => "rejected",
            FailReason::Io => "io",
            FailReason::CommandFailed => "command_failed",
            FailReason::VerifyFailed => "verify_failed",
            FailReason::NotFound => "not_found",
            FailReason::Unauthorized => "unauthorized",
            FailReason::Fenced => "fenced",
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct StepError {
    pub reason: FailReason,
    pub message: String,
    /// False when repeating the same request cannot succeed (a 4xx that is not busy).
    pub retryable: bool,
}

impl StepError {
    pub fn new(reason: FailReason, message: impl Into<String>, retryable: bool) -> Self {
        Self {
            reason,
            message: message.into(),
            retryable,
        }
    }
}

/// Asked before every attempt of every side effect: may this replica still act? (It holds the
/// lease with the safety margin to spare and the plan is still the current one.) Cheap and local:
/// it reads atomics and the monotonic clock, never the network. A step that is told no stops at
/// once.
pub trait Fence: Send + Sync {
    fn may_act(&self) -> bool;
    /// How much longer this replica may act, if that is bounded (a replica's lease): a local
    /// side effect that runs for a while (a reload command) is cut off at it.
    fn acting_for(&self) -> Option<std::time::Duration> {
        None
    }
}

/// What a step attempt carries: who acts, for which plan, until when, and the fence to ask before
/// every request, file write and command.
pub struct StepCtx<'a> {
    /// The plan's epoch (the fencing token of the transition).
    pub epoch: u64,
    /// The acting replica's name (`single` for a lone responder), sent with every API request so
    /// an audit of the provider's log can tell who changed what.
    pub replica: &'a str,
    /// The step's deadline: no attempt starts after it.
    pub deadline: tokio::time::Instant,
    pub fence: &'a dyn Fence,
    /// Told of every failed attempt that will be retried (for the failure metric).
    pub on_retry: &'a (dyn Fn(FailReason) + Sync),
}

impl StepCtx<'_> {
    /// Answers [`StepError::fenced`] unless the fence allows acting: call it right before every
    /// side effect, each retry included.
    pub fn check(&self) -> Result<(), StepError> {
        if self.fence.may_act() {
            Ok(())
        } else {
            Err(StepError::fenced())
        }
    }
}

impl StepError {
    /// The error a step answers when its fence says no.
    pub fn fenced() -> Self {
        StepError::new(
            FailReason::Fenced,
            "this replica may no longer act (lease lost or plan superseded); stopped before the side effect",
            false,
        )
    }
}

/// One idempotent reconfiguration: read what is there, change only what differs, read back.
#[async_trait]
pub trait Step: Send + Sync {
    /// Unique name within a plan, e.g. `load_balancer:<id>`.
    fn name(&self) -> String;
    /// What it reconfigures (also the bounded `step` metric label).
    fn kind(&self) -> StepKind;
    /// Makes the target region active; answers what it did ("unchanged" included). Calls
    /// [`StepCtx::check`] right before every change it makes (each retry included).
    async fn apply(&self, to: &str, ctx: &StepCtx<'_>) -> Result<String, StepError>;
    /// Reads (never changes) where the object points now: a region, or why it points at none.
    /// `ctx` carries a [`Reading`] fence.
    async fn placement(&self, ctx: &StepCtx<'_>) -> Result<Placement, StepError>;
}

/// Where a step's object points now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// Exactly at this region's settings.
    Region(String),
    /// At no configured region, or at several (what it says, for people).
    Unclear(String),
}

/// The fence of read-only work (placement checks, readiness): it never refuses, because the
/// work it guards changes nothing.
pub struct Reading;

impl Fence for Reading {
    fn may_act(&self) -> bool {
        true
    }
}

/// Probes a region live before traffic moves there.
#[async_trait]
pub trait LiveCheck: Send + Sync {
    /// `Ok(detail)` if `to` serves reads and writes now (and, for a failback with a lag bound,
    /// `from`'s writes reach `to` within the bound).
    async fn check(&self, to: &str, from: &str, failback: bool) -> Result<String, String>;
}

/// A message for people, already rendered.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Message {
    pub title: String,
    pub text: String,
    pub fields: serde_json::Value,
}

#[async_trait]
pub trait Notifier: Send + Sync {
    /// The bounded `channel` metric label.
    fn channel(&self) -> &'static str;
    async fn send(&self, message: &Message) -> Result<(), String>;
}

/// Where the last measured replication lag out of a region comes from (Prometheus).
#[async_trait]
pub trait LagSource: Send + Sync {
    async fn last_lag_out_of(&self, region: &str) -> Option<f64>;
}

/// Wall time in milliseconds since the Unix epoch; a trait so tests can pin it.
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> u64;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        crate::clock::unix_micros() / 1000
    }
}

/// What a replica knows of the lease it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseView {
    /// Raised each time the lease changes hands: a fencing token.
    pub epoch: u64,
    pub expires_at_ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("the lease is held by another replica")]
    HeldElsewhere,
    #[error("lease store unavailable: {0}")]
    Unavailable(String),
}

/// The one-actor lease of responder replicas: taken when free or expired, renewed only by its
/// holder, both with conditional writes.
#[async_trait]
pub trait Lease: Send + Sync {
    /// Renews the lease if `holder` has it, or takes it if it is free or expired.
    async fn acquire(
        &self,
        holder: &str,
        now_ms: u64,
        duration: std::time::Duration,
    ) -> Result<LeaseView, LeaseError>;
    /// Gives the lease up (on a clean shutdown), so another replica need not wait for expiry.
    async fn release(&self, holder: &str);
}
