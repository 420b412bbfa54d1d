//! HTTP surface. [`exporter_router`] serves `/metrics` and `/healthz` for the prober role; each
//! role's router is built from its state so tests and `serve` can mount them on any listener.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus::Registry;

use crate::probe::scheduler::LoopHealth;

pub mod agents;
pub mod responder;
pub mod serve;

/// What the exporter's handlers read.
#[derive(Clone)]
pub struct ExporterState {
    pub registry: Registry,
    pub health: Arc<LoopHealth>,
}

pub fn exporter_router(state: ExporterState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state(state)
}

async fn metrics(State(s): State<ExporterState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::metrics::render(&s.registry),
    )
        .into_response()
}

async fn healthz(State(s): State<ExporterState>) -> Response {
    let stale = s.health.stale_loops();
    if stale == 0 {
        (
            StatusCode::OK,
            format!("ok: {} probe loops running\n", s.health.loops()),
        )
            .into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "unhealthy: {stale} of {} probe loops have not finished a round recently\n",
                s.health.loops()
            ),
        )
            .into_response()
    }
}
