//! Failover: the pure decision ([`machine`]) and the executor that carries decisions out
//! ([`executor`]).

pub mod executor;
pub mod machine;
pub mod state;

/// The name of the application-config step; when it is done the active region the application
/// reads (`/v1/active-region`) changes.
pub const APP_CONFIG_STEP: &str = "app_config";
