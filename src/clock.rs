//! Wall-clock helpers. Durations inside the process use `tokio::time::Instant`; wall time is only
//! for exported timestamps and canary items.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch, as Prometheus timestamps are written.
pub fn unix_seconds_f64() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Microseconds since the Unix epoch.
pub fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}
