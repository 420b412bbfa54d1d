//! Production implementations of the [`crate::ports`] traits.

pub mod app_config;
pub mod digitalocean;
pub mod envfile;
pub mod live_check;
pub mod notify;
pub mod prometheus;
pub mod state_dynamodb;
pub mod state_file;
