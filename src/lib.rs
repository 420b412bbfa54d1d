//! `dynamo-failover` keeps a multi-region application serving when one region's DynamoDB fails.
//!
//! The binary has two roles. The **exporter** probes every region's DynamoDB (a consistent read of
//! a health item, a conditional canary write, and a read-back of other regions' canaries for
//! replication lag) and publishes the results as Prometheus metrics. Prometheus rules decide when a
//! region is down, and Alertmanager's webhook calls the **responder**, which moves traffic.
//!
//! # Layout
//!
//! - [`config`]: the TOML file (unknown keys rejected) and the validated [`config::Config`];
//!   secrets through [`secret`].
//! - [`aws`]: every DynamoDB client (probes, live check, state store), with explicit timeouts.
//! - [`probe`]: one file per probe kind behind one shape, the [`probe::scheduler`] that runs them,
//!   and their metric families ([`probe::metrics`]). [`exporter`] wires them to a listener.
//! - [`alert`]: Alertmanager webhook payloads to [`failover::machine::Event`]s, nothing else.
//! - [`failover`]: the responder's core. [`failover::state`] is what is stored;
//!   [`failover::machine::decide`] is the pure decision; [`failover::executor`] records events and
//!   publishes the state; [`failover::driver`] carries the current plan out;
//!   [`failover::lease`] says who may act; [`failover::notices`] tells people;
//!   [`failover::metrics`] are its metric families.
//! - [`ports`]: the small traits the engine drives (store, lease, steps, live check, notifiers);
//!   [`adapters`]: their implementations (state file and DynamoDB store, env file and reload
//!   commands, DigitalOcean, notifications, live check, Prometheus).
//! - [`http`]: the listener loop every role uses ([`http::serve`]) and the routers.
//! - [`responder`]: the responder role, wiring the above; [`metrics`], [`shutdown`], [`clock`]:
//!   small shared pieces.
//!
//! # Who may import whom
//!
//! `config` imports nothing of the rest (the failover side builds its `Policy` from it).
//! `failover::machine` and `failover::state` do no I/O and import only each other and `config`
//! types. `ports` imports `failover::state`; `adapters` import `ports`, `config`, `aws` and (the
//! live check) `probe`, never the engine. `probe` and `metrics` do not import each other's
//! families (`metrics` holds only what every role shares). `responder` and `exporter` are the
//! only modules that build everything.
//!
//! # How a webhook becomes a DigitalOcean call
//!
//! 1. [`http::responder`] checks the token from the headers, reads the bounded body, and
//!    [`alert`] turns it into events.
//! 2. [`failover::executor::Engine::submit`] decides each event ([`failover::machine::decide`]),
//!    stores the new state (a plan with a new epoch, its intent) and only then answers 200, queues
//!    the notices and wakes the driver.
//! 3. [`failover::driver`] reads the stored plan: it runs the live check of the target, records the
//!    outcome, then each step not done, recording each outcome before the next.
//! 4. A DigitalOcean step ([`adapters::digitalocean`]) reads the object, changes only what differs,
//!    and reads it back; its client asks the fence ([`failover::lease`]) before every attempt.

pub mod adapters;
pub mod agent;
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
pub mod readiness;
pub mod responder;
pub mod secret;
pub mod shutdown;
pub mod tls;
