//! Failover: the pure decision ([`machine`]) over the persisted [`state`], the [`executor`] that
//! records events and publishes the state, the [`driver`] that carries a plan out, the [`lease`]
//! that says who may act, and the [`notices`] for people.

pub mod agents;
pub mod driver;
pub mod executor;
pub mod lease;
pub mod machine;
pub mod metrics;
pub mod notices;
pub mod state;
