//! `dynamo-failover` keeps a multi-region application serving when one region's DynamoDB fails.
//!
//! The binary has two roles. The **exporter** probes every region's DynamoDB (a consistent read of
//! a health item, a conditional canary write, and a read-back of other regions' canaries for
//! replication lag) and publishes the results as Prometheus metrics. Prometheus rules decide when a
//! region is down, and Alertmanager's webhook calls the **responder**, which moves traffic.
//!
//! # Layout
//!
//! - [`config`]: raw TOML shape (unknown keys rejected) and the validated [`config::Config`].
//! - [`probe`]: one file per probe kind behind one shape, the [`probe::scheduler`] that runs them,
//!   and the per-region SDK [`probe::client`].
//! - [`metrics`]: metric families with bounded labels.
//! - [`exporter`]: the exporter role, wiring the above to an HTTP listener.
//! - [`alert`]: Alertmanager webhook payloads to domain events.
//! - [`failover`]: the pure decision ([`failover::machine::decide`]) and the executor.
//! - [`ports`]: the small traits the executor drives; [`adapters`]: their implementations
//!   (state file, application config, DigitalOcean, notifications, live check).
//! - [`responder`]: the responder role.
//! - [`secret`]: secrets that never print.
//! - [`http`]: routers and handlers.
//! - [`shutdown`]: one shutdown signal fanned out to every task.
//! - [`clock`]: wall-clock helpers for exported timestamps.

pub mod adapters;
pub mod alert;
pub mod aws;
pub mod clock;
pub mod config;
pub mod exporter;
pub mod failover;
pub mod http;
pub mod metrics;
pub mod ports;
pub mod probe;
pub mod responder;
pub mod secret;
pub mod shutdown;
