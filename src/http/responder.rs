//! The responder's HTTP surface: the Alertmanager webhook (`POST /alerts`), the admin API under
//! `/v1/`, and `/metrics`, `/healthz`, `/readyz`. Every refusal is answered before anything is
//! recorded, with a reason in the body and no internals.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use prometheus::Registry;
use serde::Deserialize;
use serde_json::json;

use crate::alert::{self, Parsed};
use crate::config::responder::AlertsConfig;
use crate::failover::executor::Engine;
use crate::failover::machine::Event;
use crate::failover::machine::Refusal;
use crate::failover::state::PlanStatus;
use crate::metrics::{ResponderMetrics, WebhookResult};
use crate::secret::Secret;

/// What the responder's handlers read.
#[derive(Clone)]
pub struct ResponderState {
    pub engine: Arc<Engine>,
    pub registry: Registry,
    pub metrics: ResponderMetrics,
    pub alerts: Arc<AlertsConfig>,
    pub webhook_token: Secret,
    pub admin_token: Secret,
    pub regions: Arc<Vec<String>>,
}

/// An API refusal: status, a stable error code and a human reason.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    reason: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, reason: impl Into<String>) -> Self {
        Self {
            status,
            code,
            reason: reason.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (
            self.status,
            Json(json!({ "error": self.code, "reason": self.reason })),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        r
    }
}

pub fn router(state: ResponderState, max_body: usize, request_timeout: Duration) -> Router {
    Router::new()
        .route("/alerts", post(webhook))
        .route("/v1/state", get(get_state))
        .route("/v1/active-region", get(active_region))
        .route("/v1/failover", post(failover))
        .route("/v1/failback", post(failback))
        .route("/v1/pause", post(pause))
        .route("/v1/resume", post(resume))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .layer(DefaultBodyLimit::max(max_body))
        // Cuts off slow-drip bodies and stuck clients.
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            request_timeout,
        ))
        .layer(axum::middleware::map_response(close_if_body_unread))
        .with_state(state)
}

/// A refusal sent before the whole body was read (too large, too slow)
/// leaves bytes on the wire, so the connection cannot carry another
/// request: say so, or a pooling client sends its next request into a
/// socket the server is about to close.
async fn close_if_body_unread(mut r: Response) -> Response {
    if matches!(
        r.status(),
        StatusCode::PAYLOAD_TOO_LARGE | StatusCode::REQUEST_TIMEOUT
    ) {
        r.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
    }
    r
}

fn authorize(headers: &HeaderMap, token: &Secret) -> Result<(), ApiError> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a bearer token is required",
            )
        })?;
    if token.matches(given.trim().as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the bearer token is not valid",
        ))
    }
}

fn json_content(headers: &HeaderMap) -> Result<(), ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ct.split(';').next().unwrap_or("").trim();
    if mime.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("content-type must be application/json, not `{ct}`"),
        ))
    }
}

async fn webhook(
    State(s): State<ResponderState>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let count = |r: WebhookResult| s.metrics.webhook(r);
    if let Err(e) = authorize(&headers, &s.webhook_token) {
        count(WebhookResult::Unauthorized);
        return e.into_response();
    }
    if let Err(e) = json_content(&headers) {
        count(WebhookResult::UnsupportedMediaType);
        return e.into_response();
    }
    let body = match body {
        Ok(b) => b,
        Err(rej) => {
            let status = rej.status();
            if status == StatusCode::PAYLOAD_TOO_LARGE {
                count(WebhookResult::TooLarge);
                return ApiError::new(status, "too_large", "the body is over the size limit")
                    .into_response();
            }
            count(WebhookResult::BadRequest);
            return ApiError::new(status, "bad_request", rej.body_text()).into_response();
        }
    };
    let parsed = alert::parse(&body)
        .and_then(|p| Parsed::try_from((&p, s.alerts.as_ref(), s.regions.as_slice())));
    let parsed = match parsed {
        Ok(p) => p,
        Err(e) => {
            count(WebhookResult::BadRequest);
            tracing::warn!(error = %e, "webhook body refused");
            return ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.to_string())
                .into_response();
        }
    };
    for why in &parsed.ignored {
        tracing::warn!(reason = %why, "webhook alert ignored");
    }
    if parsed.truncated > 0 {
        tracing::warn!(truncated = parsed.truncated,
            "Alertmanager truncated this group; the missing alerts arrive with the next notification");
    }
    match s.engine.submit(&parsed.events).await {
        Ok(done) => {
            count(WebhookResult::Accepted);
            if done.changed {
                tracing::info!(status = %payload_status(&parsed), alerts = parsed.events.len(),
                    ignored = parsed.ignored.len(), "webhook received");
            } else {
                tracing::debug!(
                    alerts = parsed.events.len(),
                    "webhook received: nothing new"
                );
            }
            (
                StatusCode::OK,
                Json(json!({
                    "accepted": parsed.events.len(),
                    "ignored": parsed.ignored,
                    "truncated": parsed.truncated,
                })),
            )
                .into_response()
        }
        Err(e) => {
            count(WebhookResult::Unavailable);
            tracing::error!(error = %e, "cannot record webhook events; Alertmanager will retry");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the state store cannot record the event now",
            )
            .into_response()
        }
    }
}

fn payload_status(p: &Parsed) -> String {
    let firing = p
        .events
        .iter()
        .filter(|e| matches!(e, Event::Alert { firing: true, .. }))
        .count();
    format!("{firing} firing, {} resolved", p.events.len() - firing)
}

async fn get_state(
    State(s): State<ResponderState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&headers, &s.admin_token)?;
    let st = s.engine.snapshot();
    let phase = match &st.plan {
        None if st.paused => "paused",
        None if st.blocked.is_some() => "blocked",
        None => "steady",
        Some(p) => match p.status {
            PlanStatus::Checking => "checking_target",
            PlanStatus::Running => "moving",
            PlanStatus::Failed => "failed",
        },
    };
    Ok(Json(json!({
        "active_region": st.active,
        "app_region": st.app_region,
        "epoch": st.epoch,
        "phase": phase,
        "paused": st.paused,
        "pinned": st.pinned,
        "blocked": st.blocked,
        "ready": s.engine.ready(),
        "role": s.engine.role(),
        "replica": s.engine.replica(),
        "lease_epoch": s.engine.lease_epoch(),
        "regions": st.health,
        "plan": st.plan,
        "last_transition_ms": st.last_transition_ms,
        "transitions": st.history,
    }))
    .into_response())
}

async fn active_region(State(s): State<ResponderState>) -> String {
    format!("{}\n", s.engine.snapshot().app_region)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FailoverBody {
    to: String,
}

async fn operator(s: &ResponderState, event: Event) -> Result<Response, ApiError> {
    let answers = s
        .engine
        .submit(std::slice::from_ref(&event))
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "cannot record an operator request");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the state store cannot record the request now",
            )
        })?;
    if let Some(Some(refusal)) = answers.refusals.first() {
        let status = match refusal {
            Refusal::UnknownRegion(_) => StatusCode::BAD_REQUEST,
            Refusal::Paused | Refusal::PlanInProgress { .. } | Refusal::AlreadyThere(_) => {
                StatusCode::CONFLICT
            }
        };
        return Err(ApiError::new(status, "refused", refusal.to_string()));
    }
    let st = s.engine.snapshot();
    tracing::info!(event = ?event, epoch = st.epoch, "operator request accepted");
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "accepted": true,
            "epoch": st.epoch,
            "active_region": st.active,
            "paused": st.paused,
            "plan": st.plan,
        })),
    )
        .into_response())
}

async fn failover(
    State(s): State<ResponderState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    authorize(&headers, &s.admin_token)?;
    json_content(&headers)?;
    let to = parse_failover_body(&body)
        .map_err(|reason| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", reason))?;
    operator(&s, Event::Failover { to }).await
}

/// The body of `POST /v1/failover`: `{"to": "<region>"}`, nothing else.
pub fn parse_failover_body(body: &[u8]) -> Result<String, String> {
    let b: FailoverBody = serde_json::from_slice(body)
        .map_err(|e| format!("expected {{\"to\": \"<region>\"}}: {e}"))?;
    if b.to.is_empty() {
        return Err("`to` must name a region".into());
    }
    Ok(b.to)
}

async fn failback(
    State(s): State<ResponderState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&headers, &s.admin_token)?;
    operator(&s, Event::Failback).await
}

async fn pause(State(s): State<ResponderState>, headers: HeaderMap) -> Result<Response, ApiError> {
    authorize(&headers, &s.admin_token)?;
    operator(&s, Event::Pause).await
}

async fn resume(State(s): State<ResponderState>, headers: HeaderMap) -> Result<Response, ApiError> {
    authorize(&headers, &s.admin_token)?;
    operator(&s, Event::Resume).await
}

async fn metrics(State(s): State<ResponderState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::metrics::render(&s.registry),
    )
        .into_response()
}

async fn readyz(State(s): State<ResponderState>) -> Response {
    if s.engine.ready() {
        // Every replica accepts webhooks; the body tells the acting one from the others.
        (StatusCode::OK, format!("ready: {}\n", s.engine.role())).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "loading state\n").into_response()
    }
}
