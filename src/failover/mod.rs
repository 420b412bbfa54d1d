//! Failover: the pure decision ([`machine`]) and the executor that carries decisions out
//! ([`executor`]).

pub mod executor;
pub mod machine;
pub mod state;
