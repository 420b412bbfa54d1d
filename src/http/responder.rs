//! The responder's HTTP surface: the Alertmanager webhook (`POST /alerts`), the admin API under
//! `/v1/`, and `/metrics`, `/healthz`, `/readyz`. Every refusal is answered with a reason in the
//! body and no internals: a missing or wrong token before any body byte is read, a bad body
//! before anything is recorded, and a state that cannot record now with 503 and `Retry-After`
//! (Alertmanager retries only 5xx).

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use prometheus::Registry;
use serde::Deserialize;
use serde_json::json;

use crate::alert::{self, Parsed};
use crate::config::responder::AlertsConfig;
use crate::failover::executor::{Engine, SubmitError, Submitted};
use crate::failover::machine::Event;
use crate::failover::machine::Refusal;
use crate::failover::metrics::{ResponderMetrics, WebhookResult};
use crate::failover::state::PlanStatus;
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
    /// Largest body accepted (413 beyond).
    pub max_body: usize,
    /// Time for a body to arrive (408 beyond), and for the state to be free to record (503
    /// beyond).
    pub request_timeout: Duration,
    /// The application servers' agents, when configured.
    pub agents: Option<Arc<super::agents::AgentDoor>>,
    /// The latest readiness evaluation (None before the first).
    pub readiness: Arc<std::sync::Mutex<Option<crate::readiness::Report>>>,
    /// When this process started serving (Unix ms).
    pub started_ms: u64,
}

/// An API refusal: status, a stable error code and a human reason.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    reason: String,
    /// Seconds after which a retry may succeed (503).
    retry_after: Option<u32>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, reason: impl Into<String>) -> Self {
        Self {
            status,
            code,
            reason: reason.into(),
            retry_after: None,
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
        if let Some(secs) = self.retry_after {
            r.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
        }
        r
    }
}

pub fn router(state: ResponderState) -> Router<()> {
    // Shared behind one Arc: each request's extractors clone a pointer, not the metrics' dozens
    // of handles (that clone was the largest of our own costs in a webhook storm).
    let state = Arc::new(state);
    let webhook = Router::new()
        .route("/alerts", post(webhook))
        .route_layer(middleware::from_fn_with_state(state.clone(), webhook_auth));
    let agents = Router::new()
        .route(
            "/v1/agents/{name}/{what}",
            get(super::agents::get_placement).post(super::agents::post_ack),
        )
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            super::agents::agent_auth,
        ));
    let admin = Router::new()
        .route("/v1/state", get(get_state))
        .route("/v1/failover", post(failover))
        .route("/v1/failback", post(failback))
        .route("/v1/pause", post(pause))
        .route("/v1/resume", post(resume))
        .route_layer(middleware::from_fn_with_state(state.clone(), admin_auth));
    Router::new()
        .merge(webhook)
        .merge(admin)
        .merge(agents)
        .route("/v1/active-region", get(active_region))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .layer(axum::middleware::map_response(close_if_body_unread))
        .with_state(state)
}

/// A refusal sent before the whole body was read (no token, wrong type, too large, too slow)
/// leaves bytes on the wire, so the connection cannot carry another request: say so, or a
/// pooling client sends its next request into a socket the server is about to close.
async fn close_if_body_unread(mut r: Response) -> Response {
    if matches!(
        r.status(),
        StatusCode::UNAUTHORIZED
            | StatusCode::UNSUPPORTED_MEDIA_TYPE
            | StatusCode::PAYLOAD_TOO_LARGE
            | StatusCode::REQUEST_TIMEOUT
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

/// The webhook token, checked from the headers alone: a request without it is answered before
/// any of its body is read.
async fn webhook_auth(State(s): State<Arc<ResponderState>>, req: Request, next: Next) -> Response {
    match authorize(req.headers(), &s.webhook_token) {
        Ok(()) => next.run(req).await,
        Err(e) => {
            s.metrics.webhook(WebhookResult::Unauthorized);
            e.into_response()
        }
    }
}

/// The admin token, checked the same way.
async fn admin_auth(State(s): State<Arc<ResponderState>>, req: Request, next: Next) -> Response {
    match authorize(req.headers(), &s.admin_token) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
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

/// Why a body could not be read.
pub(crate) enum BodyError {
    TooLarge,
    Slow,
    Broken(String),
}

impl BodyError {
    fn result(&self) -> WebhookResult {
        match self {
            BodyError::TooLarge => WebhookResult::TooLarge,
            BodyError::Slow => WebhookResult::BodyTimeout,
            BodyError::Broken(_) => WebhookResult::BadRequest,
        }
    }

    pub(crate) fn into_api(self, s: &ResponderState) -> ApiError {
        match self {
            BodyError::TooLarge => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("the body is over the size limit of {} bytes", s.max_body),
            ),
            BodyError::Slow => ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                format!(
                    "the body did not arrive within {}",
                    crate::config::fmt_duration(s.request_timeout)
                ),
            ),
            BodyError::Broken(why) => ApiError::new(StatusCode::BAD_REQUEST, "bad_request", why),
        }
    }
}

/// Reads a body of at most `max_body` bytes within the request timeout; a declared length over
/// the limit is refused without reading.
pub(crate) async fn read_body(
    s: &ResponderState,
    headers: &HeaderMap,
    body: Body,
) -> Result<Bytes, BodyError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > s.max_body as u64) {
        return Err(BodyError::TooLarge);
    }
    match tokio::time::timeout(s.request_timeout, axum::body::to_bytes(body, s.max_body)).await {
        Err(_) => Err(BodyError::Slow),
        Ok(Ok(b)) => Ok(b),
        Ok(Err(e)) => {
            let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
            while let Some(err) = source {
                if err.is::<http_body_util::LengthLimitError>() {
                    return Err(BodyError::TooLarge);
                }
                source = err.source();
            }
            Err(BodyError::Broken(format!(
                "the body could not be read: {e}"
            )))
        }
    }
}

/// Records events for a client: waits for the state at most the request timeout. Every failure
/// is a 503 with `Retry-After`: nothing is known to be stored, and a retry is recognised if it
/// was.
pub(crate) async fn record(
    s: &ResponderState,
    events: &[Event],
) -> Result<Submitted, (WebhookResult, ApiError)> {
    s.engine
        .submit_within(events, Some(s.request_timeout))
        .await
        .map_err(|e| {
            let (result, code, secs) = match &e {
                SubmitError::Busy => (WebhookResult::Busy, "busy", 1),
                SubmitError::Store(_) => (WebhookResult::Unavailable, "unavailable", 5),
            };
            tracing::error!(error = %e, "cannot record now; the client may retry");
            let mut api = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                code,
                match e {
                    SubmitError::Busy => "the state is busy; retry shortly",
                    SubmitError::Store(_) => "the state store cannot record the event now",
                },
            );
            api.retry_after = Some(secs);
            (result, api)
        })
}

async fn webhook(State(s): State<Arc<ResponderState>>, headers: HeaderMap, body: Body) -> Response {
    let count = |r: WebhookResult| s.metrics.webhook(r);
    if let Err(e) = json_content(&headers) {
        count(WebhookResult::UnsupportedMediaType);
        return e.into_response();
    }
    let body = match read_body(&s, &headers, body).await {
        Ok(b) => b,
        Err(e) => {
            count(e.result());
            return e.into_api(&s).into_response();
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
    match record(&s, &parsed.events).await {
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
        Err((result, e)) => {
            count(result);
            e.into_response()
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

async fn get_state(State(s): State<Arc<ResponderState>>) -> Result<Response, ApiError> {
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
    let placement = crate::failover::machine::placement(&st);
    // Each configured agent: its region, what it last acknowledged, when it last reached this
    // replica.
    let seen = s.agents.as_ref().map(|d| d.last_seen()).unwrap_or_default();
    let agents: serde_json::Map<String, serde_json::Value> = s
        .engine
        .policy()
        .agents
        .expected
        .iter()
        .map(|(name, region)| {
            let last_seen_ms = seen.get(name).and_then(|t| {
                t.duration_since(std::time::UNIX_EPOCH)
                    .ok()
                    .map(|d| d.as_millis() as u64)
            });
            (
                name.clone(),
                json!({ "region": region, "ack": st.agents.get(name), "last_seen_ms": last_seen_ms }),
            )
        })
        .collect();
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
        "placement": { "region": placement.0, "epoch": placement.1, "lineage": st.lineage },
        "agents": agents,
        "started_ms": s.started_ms,
        "readiness": *s.readiness.lock().unwrap_or_else(|p| p.into_inner()),
    }))
    .into_response())
}

async fn active_region(State(s): State<Arc<ResponderState>>) -> String {
    format!("{}\n", s.engine.snapshot().app_region)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FailoverBody {
    to: String,
}

async fn operator(s: &ResponderState, event: Event) -> Result<Response, ApiError> {
    let answers = record(s, std::slice::from_ref(&event))
        .await
        .map_err(|(_, e)| e)?;
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
    State(s): State<Arc<ResponderState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    json_content(&headers)?;
    let body = read_body(&s, &headers, body)
        .await
        .map_err(|e| e.into_api(&s))?;
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

async fn failback(State(s): State<Arc<ResponderState>>) -> Result<Response, ApiError> {
    operator(&s, Event::Failback).await
}

async fn pause(State(s): State<Arc<ResponderState>>) -> Result<Response, ApiError> {
    operator(&s, Event::Pause).await
}

async fn resume(State(s): State<Arc<ResponderState>>) -> Result<Response, ApiError> {
    operator(&s, Event::Resume).await
}

async fn metrics(State(s): State<Arc<ResponderState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::metrics::render(&s.registry),
    )
        .into_response()
}

async fn readyz(State(s): State<Arc<ResponderState>>) -> Response {
    if s.engine.ready() {
        // Every replica accepts webhooks; the body tells the acting one from the others.
        (StatusCode::OK, format!("ready: {}\n", s.engine.role())).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "loading state\n").into_response()
    }
}
