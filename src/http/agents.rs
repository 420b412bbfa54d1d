//! The agents' door into the responder: `GET /v1/agents/{name}/placement` (a long poll: answered
//! at once when the placement's epoch is newer than the one the agent applied, else when it
//! changes or after the wait) and `POST /v1/agents/{name}/ack` (what the agent applied). An agent
//! authenticates with its own token ([`crate::failover::agents::agent_token`]) for the name in the
//! path, checked from the headers before any body byte is read, so it can read the placement and
//! acknowledge for itself and nothing else; nothing it sends changes the placement.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::responder::{read_body, record, ApiError, ResponderState};
use crate::failover::agents::agent_token;
use crate::failover::machine::{placement, Event};
use crate::secret::Secret;

/// The longest a placement request is held.
const MAX_WAIT: Duration = Duration::from_secs(60);

/// Who may come in, and when each last did (this replica's view).
pub struct AgentDoor {
    secret: Secret,
    names: BTreeSet<String>,
    last_seen: Mutex<BTreeMap<String, SystemTime>>,
    /// Each agent's newest placement request: a newer one answers the one held before it at
    /// once, so one agent (or one stolen token) holds one connection, not many.
    polls: Mutex<BTreeMap<String, (u64, Arc<tokio::sync::Notify>)>>,
}

impl AgentDoor {
    pub fn new(secret: Secret, names: impl IntoIterator<Item = String>) -> Self {
        Self {
            secret,
            names: names.into_iter().collect(),
            last_seen: Mutex::default(),
            polls: Mutex::default(),
        }
    }

    /// Registers a new placement request of `name`, releasing the one held before it; answers
    /// its number and what tells it a newer one came.
    fn new_poll(&self, name: &str) -> (u64, Arc<tokio::sync::Notify>) {
        let mut polls = self.polls.lock().unwrap_or_else(|p| p.into_inner());
        let entry = polls
            .entry(name.to_string())
            .or_insert_with(|| (0, Arc::new(tokio::sync::Notify::new())));
        entry.0 += 1;
        entry.1.notify_waiters();
        (entry.0, entry.1.clone())
    }

    /// Whether request `n` of `name` is still the newest.
    fn newest_poll(&self, name: &str, n: u64) -> bool {
        let polls = self.polls.lock().unwrap_or_else(|p| p.into_inner());
        polls.get(name).is_some_and(|(newest, _)| *newest == n)
    }

    /// When each agent last reached this replica.
    pub fn last_seen(&self) -> BTreeMap<String, SystemTime> {
        self.last_seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

fn refused(reason: &str) -> Response {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", reason).into_response()
}

/// The agent token for the name in the path, from the headers alone.
pub async fn agent_auth(
    State(s): State<Arc<ResponderState>>,
    req: Request,
    next: Next,
) -> Response {
    let Some(door) = &s.agents else {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "this responder has no [responder.agents]",
        )
        .into_response();
    };
    // /v1/agents/{name}/...
    let name = req
        .uri()
        .path()
        .split('/')
        .nth(3)
        .unwrap_or_default()
        .to_string();
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let Some(given) = given else {
        return refused("an agent token is required");
    };
    // Unknown names and wrong tokens look the same from outside.
    let expected = Secret::new(agent_token(&door.secret, &name));
    if !door.names.contains(&name) || !expected.matches(given.trim().as_bytes()) {
        tracing::warn!(agent = %name.chars().take(64).collect::<String>(), "agent request refused: not this agent's token");
        return refused("the token is not this agent's");
    }
    let now = SystemTime::now();
    door.last_seen
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(name.clone(), now);
    let at = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    s.metrics
        .agent_last_seen
        .with_label_values(&[&name])
        .set(at);
    next.run(req).await
}

#[derive(Deserialize)]
pub struct PlacementQuery {
    /// The epoch the agent applied last (absent: nothing yet).
    applied: Option<u64>,
    /// How long to hold the request for a change, in milliseconds.
    #[serde(default)]
    wait_ms: u64,
    /// The lineage of the state whose placement the agent applied last.
    #[serde(default)]
    lineage: Option<String>,
}

/// The placement for `name`: `{"region", "epoch", "acked"}`.
pub async fn get_placement(
    State(s): State<Arc<ResponderState>>,
    Path((name, _)): Path<(String, String)>,
    Query(q): Query<PlacementQuery>,
) -> Response {
    let mut seen = s.engine.subscribe();
    let wait = Duration::from_millis(q.wait_ms).min(MAX_WAIT);
    let deadline = tokio::time::Instant::now() + wait;
    let (n, newer) = match &s.agents {
        Some(door) => door.new_poll(&name),
        None => (0, Arc::new(tokio::sync::Notify::new())),
    };
    loop {
        let st = seen.borrow_and_update().clone();
        let (region, epoch) = placement(&st);
        let acked = st
            .agents
            .get(&name)
            .is_some_and(|a| a.ok && a.epoch == epoch && a.region == region);
        // News: a newer placement, or one applied whose acknowledgement was not recorded. A
        // replica behind the agent (an older epoch) is waited on, not answered at once, so an
        // agent never spins on a stale replica.
        // A state that began afresh (another lineage) is news whatever its epochs.
        let other_lineage = q.lineage.as_deref().unwrap_or("") != st.lineage;
        let news = match q.applied {
            None => true,
            Some(applied) => other_lineage || epoch > applied || (epoch == applied && !acked),
        };
        let answer = || {
            Json(json!({ "region": region, "epoch": epoch, "acked": acked, "lineage": st.lineage }))
                .into_response()
        };
        // Listening before looking, so a newer request in between is not missed.
        let released = newer.notified();
        let superseded = s
            .agents
            .as_ref()
            .is_some_and(|door| !door.newest_poll(&name, n));
        if news || superseded || tokio::time::Instant::now() >= deadline {
            return answer();
        }
        tokio::select! {
            changed = tokio::time::timeout_at(deadline, seen.changed()) => match changed {
                Ok(Ok(())) => continue,
                _ => return answer(),
            },
            _ = released => return answer(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AckBody {
    epoch: u64,
    region: String,
    ok: bool,
    #[serde(default)]
    detail: String,
    /// The lineage of the state whose placement this acknowledges.
    #[serde(default)]
    lineage: String,
}

/// What agent `name` applied.
pub async fn post_ack(
    State(s): State<Arc<ResponderState>>,
    Path((name, _)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let body = match read_body(&s, &headers, body).await {
        Ok(b) => b,
        Err(e) => return e.into_api(&s).into_response(),
    };
    let ack: AckBody = match serde_json::from_slice(&body) {
        Ok(a) => a,
        Err(e) => {
            return ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("expected {{\"epoch\", \"region\", \"ok\", \"detail\"}}: {e}"),
            )
            .into_response()
        }
    };
    let lineage = s.engine.subscribe().borrow().lineage.clone();
    if ack.lineage != lineage {
        return ApiError::new(
            StatusCode::CONFLICT,
            "other_lineage",
            "this acknowledges a placement of a state that no longer exists; poll again",
        )
        .into_response();
    }
    if !s.regions.contains(&ack.region) {
        return ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("unknown region `{}`", ack.region),
        )
        .into_response();
    }
    let event = Event::AgentAck {
        agent: name.clone(),
        epoch: ack.epoch,
        region: ack.region.clone(),
        ok: ack.ok,
        detail: ack.detail,
    };
    match record(&s, std::slice::from_ref(&event)).await {
        Ok(_) => {
            tracing::info!(agent = %name, epoch = ack.epoch, region = %ack.region, ok = ack.ok, "agent acknowledged");
            Json(json!({ "recorded": true })).into_response()
        }
        Err((_, e)) => e.into_response(),
    }
}
