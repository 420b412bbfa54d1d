//! A stateful fake of the DigitalOcean API v2 endpoints dynamo-failover calls, enforcing the real
//! API's rules as its public OpenAPI spec states them:
//!
//! - every `/v2` request needs `Authorization: Bearer <token>` (401 otherwise);
//! - 250 requests a minute per token (configurable), with `ratelimit-limit`, `ratelimit-remaining`
//!   and `ratelimit-reset` on every answer, then 429;
//! - `PUT /v2/load_balancers/{id}` replaces the whole object: it needs `region` (a slug; a GLOBAL
//!   load balancer needs `glb_settings` instead), at least one `forwarding_rules` entry, and exactly
//!   one of `droplet_ids` / `tag` (for non-GLOBAL types); otherwise 422;
//! - `POST` / `DELETE /v2/load_balancers/{id}/droplets` take `{"droplet_ids": [...]}`, answer 204,
//!   and 422 on a tag-based load balancer;
//! - `PATCH /v2/domains/{domain}/records/{id}` needs `type` (matching the record), TTL at least 30.
//! - `GET /v2/account` answers the token's account; `GET /v2/droplets/{id}` a seeded droplet
//!   (status and a region object), 404 otherwise.
//! - The lists `GET /v2/load_balancers`, `GET /v2/droplets` and
//!   `GET /v2/domains/{domain}/records` are paginated as the real API is: `page` (from 1) and
//!   `per_page` (default 20, at most 200), `links.pages.next` / `last` when there are more, and
//!   `meta.total`.
//!
//! Faults can be injected for the next N requests: a status (5xx), 429 with `retry-after`, a slow
//! answer, or a "load balancer busy" refusal. Every request is logged in order for the tests.

// Handlers answer `Result<_, Response>`: the error is the HTTP answer itself, built once.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

/// A fault applied to the next matching requests.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer this status (e.g. 500, 503) with an error body.
    Status(u16),
    /// Answer 429 with `retry-after` seconds.
    RateLimited { retry_after: u64 },
    /// Wait this long before handling the request normally.
    Slow(Duration),
    /// Refuse a change as a load balancer still applying an earlier one does (422).
    Busy,
}

#[derive(Debug, Clone)]
struct Armed {
    fault: Fault,
    remaining: u32,
    /// Only requests with this method (None: any).
    method: Option<Method>,
    /// Only requests whose path ends with this (None: any).
    path: Option<String>,
}

/// One logged request.
#[derive(Debug, Clone)]
pub struct Logged {
    pub method: String,
    pub path: String,
    pub status: u16,
    pub body: Value,
    /// When the request arrived, in milliseconds since the Unix epoch (wall clock).
    pub at_ms: u64,
    /// The `x-dynamo-failover-replica` header: who sent it.
    pub replica: Option<String>,
    /// The `x-dynamo-failover-epoch` header: for which plan.
    pub epoch: Option<u64>,
    pub user_agent: Option<String>,
}

/// What is logged of a request as it arrives.
#[derive(Debug, Clone)]
struct Meta {
    at_ms: u64,
    replica: Option<String>,
    epoch: Option<u64>,
    user_agent: Option<String>,
}

impl Meta {
    fn of(headers: &HeaderMap) -> Meta {
        let text = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        Meta {
            at_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            replica: text("x-dynamo-failover-replica"),
            epoch: text("x-dynamo-failover-epoch").and_then(|e| e.parse().ok()),
            user_agent: text("user-agent"),
        }
    }
}

#[derive(Default)]
struct World {
    load_balancers: BTreeMap<String, Value>,
    droplets: BTreeMap<u64, Value>,
    records: BTreeMap<(String, u64), Value>,
    faults: VecDeque<Armed>,
    log: Vec<Logged>,
    window_start: Option<Instant>,
    window_count: u32,
}

#[derive(Clone)]
struct Shared {
    token: Arc<String>,
    limit_per_minute: u32,
    world: Arc<Mutex<World>>,
}

/// A running fake. Dropping it stops the server.
pub struct FakeDo {
    addr: SocketAddr,
    shared: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeDo {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeDo {
    /// Starts on a free loopback port.
    pub async fn start(token: &str) -> std::io::Result<FakeDo> {
        Self::start_with_limit("127.0.0.1:0", token, 250).await
    }

    pub async fn start_on(addr: &str, token: &str) -> std::io::Result<FakeDo> {
        Self::start_with_limit(addr, token, 250).await
    }

    pub async fn start_with_limit(
        addr: &str,
        token: &str,
        limit_per_minute: u32,
    ) -> std::io::Result<FakeDo> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Shared {
            token: Arc::new(token.to_string()),
            limit_per_minute,
            world: Arc::default(),
        };
        let app = Router::new()
            .route("/v2/load_balancers/{id}", get(get_lb).put(put_lb))
            .route(
                "/v2/load_balancers/{id}/droplets",
                post(add_droplets).delete(remove_droplets),
            )
            .route(
                "/v2/domains/{domain}/records/{id}",
                get(get_record).patch(patch_record),
            )
            .route("/v2/account", get(get_account))
            .route("/v2/droplets/{id}", get(get_droplet))
            .route("/v2/droplets", get(list_droplets))
            .route("/v2/load_balancers", get(list_lbs))
            .route("/v2/domains/{domain}/records", get(list_records))
            .route("/fake/state", get(fake_state))
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(FakeDo { addr, shared, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.shared.world.lock().unwrap()
    }

    /// Loads `{"load_balancers": [...], "domains": {"d": [records]}}`.
    pub fn seed(&self, seed: &Value) {
        for lb in seed["load_balancers"].as_array().into_iter().flatten() {
            self.put_load_balancer(lb.clone());
        }
        for d in seed["droplets"].as_array().into_iter().flatten() {
            self.put_droplet(d.clone());
        }
        if let Some(domains) = seed["domains"].as_object() {
            for (d, recs) in domains {
                for r in recs.as_array().into_iter().flatten() {
                    self.put_record(d, r.clone());
                }
            }
        }
    }

    /// Stores a load balancer as GET will answer it (fills `status`, region object).
    pub fn put_load_balancer(&self, mut lb: Value) {
        let id = lb["id"]
            .as_str()
            .expect("load balancer needs an id")
            .to_string();
        if let Some(slug) = lb["region"].as_str().map(str::to_string) {
            lb["region"] = json!({ "slug": slug, "name": slug, "available": true });
        }
        if lb.get("status").is_none() {
            lb["status"] = json!("active");
        }
        self.world().load_balancers.insert(id, lb);
    }

    /// Stores a droplet as GET will answer it: `{"id", "name", "status", "region": "slug"}` (the
    /// region slug becomes the API's region object).
    pub fn put_droplet(&self, mut d: Value) {
        let id = d["id"].as_u64().expect("droplet needs a numeric id");
        if let Some(slug) = d["region"].as_str().map(str::to_string) {
            d["region"] = json!({ "slug": slug, "name": slug, "available": true });
        }
        if d.get("status").is_none() {
            d["status"] = json!("active");
        }
        self.world().droplets.insert(id, d);
    }

    /// Removes a load balancer (as deleting it in the control panel does).
    pub fn delete_load_balancer(&self, id: &str) -> Option<Value> {
        self.world().load_balancers.remove(id)
    }

    pub fn put_record(&self, domain: &str, rec: Value) {
        let id = rec["id"].as_u64().expect("record needs a numeric id");
        self.world().records.insert((domain.to_string(), id), rec);
    }

    pub fn load_balancer(&self, id: &str) -> Option<Value> {
        self.world().load_balancers.get(id).cloned()
    }

    pub fn record(&self, domain: &str, id: u64) -> Option<Value> {
        self.world().records.get(&(domain.to_string(), id)).cloned()
    }

    /// Arms `fault` for the next `count` requests (of `method`, if given).
    pub fn inject(&self, fault: Fault, count: u32, method: Option<Method>) {
        self.inject_at(fault, count, method, None);
    }

    /// Like [`FakeDo::inject`], only for requests whose path ends with `path`.
    pub fn inject_at(&self, fault: Fault, count: u32, method: Option<Method>, path: Option<&str>) {
        self.world().faults.push_back(Armed {
            fault,
            remaining: count,
            method,
            path: path.map(str::to_string),
        });
    }

    /// Disarms every fault not yet used.
    pub fn clear_faults(&self) {
        self.world().faults.clear();
    }

    /// Every request so far, in order.
    pub fn log(&self) -> Vec<Logged> {
        self.world().log.clone()
    }

    /// Requests that changed something (not GET), in order.
    pub fn changes(&self) -> Vec<Logged> {
        self.log()
            .into_iter()
            .filter(|l| l.method != "GET" && (200..300).contains(&l.status))
            .collect()
    }
}

fn error(status: StatusCode, id: &str, message: impl Into<String>) -> Response {
    (status, Json(json!({ "id": id, "message": message.into() }))).into_response()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Authentication, rate limit and injected faults, shared by every `/v2` handler. Answers either
/// the response to send now or the rate-limit headers to attach to the real answer.
async fn gate(
    s: &Shared,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
) -> Result<HeaderMap, Response> {
    let auth_ok = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| t == s.token.as_str());
    // Fault and rate-limit decisions under the lock; sleeping after it is released.
    let (fault, rl) = {
        let mut w = s.world.lock().unwrap();
        let now = Instant::now();
        let start = *w.window_start.get_or_insert(now);
        if now.duration_since(start) >= Duration::from_secs(60) {
            w.window_start = Some(now);
            w.window_count = 0;
        }
        w.window_count += 1;
        let used = w.window_count;
        let reset = unix_now()
            + 60u64.saturating_sub(now.duration_since(w.window_start.unwrap()).as_secs());
        let mut rl = HeaderMap::new();
        rl.insert("ratelimit-limit", HeaderValue::from(s.limit_per_minute));
        rl.insert(
            "ratelimit-remaining",
            HeaderValue::from(s.limit_per_minute.saturating_sub(used)),
        );
        rl.insert("ratelimit-reset", HeaderValue::from(reset));
        if used > s.limit_per_minute {
            let mut r = error(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_requests",
                "API rate limit exceeded",
            );
            r.headers_mut().extend(rl);
            return Err(r);
        }
        let mut fault = None;
        if let Some(i) = w.faults.iter().position(|f| {
            f.method.as_ref().is_none_or(|m| m == method)
                && f.path.as_deref().is_none_or(|p| path.ends_with(p))
        }) {
            let f = &mut w.faults[i];
            fault = Some(f.fault.clone());
            f.remaining -= 1;
            if f.remaining == 0 {
                w.faults.remove(i);
            }
        }
        (fault, rl)
    };
    if !auth_ok {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Unable to authenticate you",
        ));
    }
    match fault {
        None => Ok(rl),
        Some(Fault::Slow(d)) => {
            tokio::time::sleep(d).await;
            Ok(rl)
        }
        Some(Fault::Status(code)) => Err(error(
            StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            "server_error",
            "Server was unable to give you a response.",
        )),
        Some(Fault::RateLimited { retry_after }) => {
            let mut r = error(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_requests",
                "API rate limit exceeded",
            );
            r.headers_mut()
                .insert("retry-after", HeaderValue::from(retry_after));
            Err(r)
        }
        Some(Fault::Busy) => Err(error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unprocessable_entity",
            "Load balancer is currently being updated, please try again later",
        )),
    }
}

fn finish(
    s: &Shared,
    meta: Meta,
    method: &Method,
    path: String,
    body: Value,
    mut resp: Response,
    rl: Option<HeaderMap>,
) -> Response {
    if let Some(rl) = rl {
        resp.headers_mut().extend(rl);
    }
    s.world.lock().unwrap().log.push(Logged {
        method: method.to_string(),
        path,
        status: resp.status().as_u16(),
        body,
        at_ms: meta.at_ms,
        replica: meta.replica,
        epoch: meta.epoch,
        user_agent: meta.user_agent,
    });
    resp
}

fn parse_body(body: &Bytes) -> Result<Value, Response> {
    serde_json::from_slice::<Value>(body)
        .ok()
        .filter(Value::is_object)
        .ok_or_else(|| {
            error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "request body must be a JSON object",
            )
        })
}

macro_rules! gated {
    ($s:expr, $meta:expr, $method:expr, $headers:expr, $path:expr, $body:expr) => {
        match gate(&$s, &$method, &$path, &$headers).await {
            Ok(rl) => rl,
            Err(r) => return finish(&$s, $meta, &$method, $path, $body, r, None),
        }
    };
}

async fn get_lb(
    State(s): State<Shared>,
    method: Method,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let path = format!("/v2/load_balancers/{id}");
    let meta = Meta::of(&headers);
    let rl = gated!(s, meta.clone(), method, headers, path.clone(), Value::Null);
    let lb = s.world.lock().unwrap().load_balancers.get(&id).cloned();
    let resp = match lb {
        Some(lb) => Json(json!({ "load_balancer": lb })).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "not_found",
            "The resource you were accessing could not be found.",
        ),
    };
    finish(&s, meta, &method, path, Value::Null, resp, Some(rl))
}

/// The PUT rules of the real API.
fn check_put(body: &Value, existing: &Value) -> Result<(), String> {
    let global = body["type"].as_str().or(existing["type"].as_str()) == Some("GLOBAL");
    if global {
        if !body["glb_settings"].is_object() {
            return Err("glb_settings is required for a GLOBAL load balancer".into());
        }
    } else if !body["region"].is_string() {
        return Err("region is required (a region slug)".into());
    }
    if body["forwarding_rules"]
        .as_array()
        .is_none_or(|a| a.is_empty())
    {
        return Err("forwarding_rules must contain at least one rule".into());
    }
    if !global {
        let has_ids = body.get("droplet_ids").is_some_and(|v| !v.is_null());
        let has_tag = body["tag"].as_str().is_some_and(|t| !t.is_empty());
        if has_ids == has_tag {
            return Err("exactly one of droplet_ids or tag must be provided".into());
        }
    }
    if let Some(p) = body["glb_settings"]["region_priorities"].as_object() {
        if p.values().any(|v| v.as_u64().is_none()) {
            return Err("glb_settings.region_priorities values must be integers".into());
        }
    }
    Ok(())
}

async fn put_lb(
    State(s): State<Shared>,
    method: Method,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let path = format!("/v2/load_balancers/{id}");
    let logged = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let meta = Meta::of(&headers);
    let rl = gated!(
        s,
        meta.clone(),
        method,
        headers,
        path.clone(),
        logged.clone()
    );
    let resp = (|| {
        let body = parse_body(&body)?;
        let mut w = s.world.lock().unwrap();
        let Some(existing) = w.load_balancers.get(&id).cloned() else {
            return Err(error(
                StatusCode::NOT_FOUND,
                "not_found",
                "The resource you were accessing could not be found.",
            ));
        };
        check_put(&body, &existing)
            .map_err(|m| error(StatusCode::UNPROCESSABLE_ENTITY, "unprocessable_entity", m))?;
        let mut next = body.clone();
        for k in ["id", "ip", "status", "created_at", "type"] {
            if let Some(v) = existing.get(k) {
                next[k] = v.clone();
            }
        }
        if let Some(slug) = body["region"].as_str() {
            next["region"] = json!({ "slug": slug, "name": slug, "available": true });
        }
        if next["tag"].as_str().is_some_and(|t| !t.is_empty()) {
            next["droplet_ids"] = json!([]);
        }
        w.load_balancers.insert(id.clone(), next.clone());
        Ok(Json(json!({ "load_balancer": next })).into_response())
    })()
    .unwrap_or_else(|r| r);
    finish(&s, meta, &method, path, logged, resp, Some(rl))
}

async fn change_droplets(
    s: Shared,
    method: Method,
    headers: HeaderMap,
    id: String,
    body: Bytes,
    add: bool,
) -> Response {
    let path = format!("/v2/load_balancers/{id}/droplets");
    let logged = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let meta = Meta::of(&headers);
    let rl = gated!(
        s,
        meta.clone(),
        method,
        headers,
        path.clone(),
        logged.clone()
    );
    let resp = (|| {
        let body = parse_body(&body)?;
        let ids: Vec<u64> = body["droplet_ids"]
            .as_array()
            .filter(|a| !a.is_empty())
            .and_then(|a| a.iter().map(Value::as_u64).collect())
            .ok_or_else(|| {
                error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "unprocessable_entity",
                    "droplet_ids must be a non-empty list of integers",
                )
            })?;
        let mut w = s.world.lock().unwrap();
        let Some(lb) = w.load_balancers.get_mut(&id) else {
            return Err(error(
                StatusCode::NOT_FOUND,
                "not_found",
                "The resource you were accessing could not be found.",
            ));
        };
        if lb["tag"].as_str().is_some_and(|t| !t.is_empty()) {
            return Err(error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unprocessable_entity",
                "droplets cannot be added to or removed from a load balancer that uses a tag",
            ));
        }
        let mut current: Vec<u64> = lb["droplet_ids"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_u64)
            .collect();
        if add {
            for i in ids {
                if !current.contains(&i) {
                    current.push(i);
                }
            }
        } else {
            current.retain(|c| !ids.contains(c));
        }
        lb["droplet_ids"] = json!(current);
        Ok(StatusCode::NO_CONTENT.into_response())
    })()
    .unwrap_or_else(|r| r);
    finish(&s, meta, &method, path, logged, resp, Some(rl))
}

async fn add_droplets(
    State(s): State<Shared>,
    method: Method,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    change_droplets(s, method, headers, id, body, true).await
}

async fn remove_droplets(
    State(s): State<Shared>,
    method: Method,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    change_droplets(s, method, headers, id, body, false).await
}

async fn get_record(
    State(s): State<Shared>,
    method: Method,
    headers: HeaderMap,
    Path((domain, id)): Path<(String, u64)>,
) -> Response {
    let path = format!("/v2/domains/{domain}/records/{id}");
    let meta = Meta::of(&headers);
    let rl = gated!(s, meta.clone(), method, headers, path.clone(), Value::Null);
    let rec = s.world.lock().unwrap().records.get(&(domain, id)).cloned();
    let resp = match rec {
        Some(r) => Json(json!({ "domain_record": r })).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "not_found",
            "The resource you were accessing could not be found.",
        ),
    };
    finish(&s, meta, &method, path, Value::Null, resp, Some(rl))
}

async fn patch_record(
    State(s): State<Shared>,
    method: Method,
    headers: HeaderMap,
    Path((domain, id)): Path<(String, u64)>,
    body: Bytes,
) -> Response {
    let path = format!("/v2/domains/{domain}/records/{id}");
    let logged = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let meta = Meta::of(&headers);
    let rl = gated!(
        s,
        meta.clone(),
        method,
        headers,
        path.clone(),
        logged.clone()
    );
    let resp = (|| {
        let body = parse_body(&body)?;
        let mut w = s.world.lock().unwrap();
        let Some(rec) = w.records.get_mut(&(domain.clone(), id)) else {
            return Err(error(
                StatusCode::NOT_FOUND,
                "not_found",
                "The resource you were accessing could not be found.",
            ));
        };
        let unprocessable =
            |m: &str| error(StatusCode::UNPROCESSABLE_ENTITY, "unprocessable_entity", m);
        let Some(kind) = body["type"].as_str() else {
            return Err(unprocessable("type is required"));
        };
        if Some(kind) != rec["type"].as_str() {
            return Err(unprocessable("type does not match the record's type"));
        }
        if let Some(ttl) = body.get("ttl") {
            if ttl.as_u64().is_none_or(|t| t < 30) {
                return Err(unprocessable("ttl must be at least 30"));
            }
            rec["ttl"] = ttl.clone();
        }
        if let Some(data) = body.get("data") {
            let ok = match kind {
                "A" => data
                    .as_str()
                    .is_some_and(|d| d.parse::<std::net::Ipv4Addr>().is_ok()),
                "AAAA" => data
                    .as_str()
                    .is_some_and(|d| d.parse::<std::net::Ipv6Addr>().is_ok()),
                _ => data.is_string(),
            };
            if !ok {
                return Err(unprocessable(
                    "data is not a valid address for the record type",
                ));
            }
            rec["data"] = data.clone();
        }
        if let Some(name) = body.get("name") {
            rec["name"] = name.clone();
        }
        Ok(Json(json!({ "domain_record": rec.clone() })).into_response())
    })()
    .unwrap_or_else(|r| r);
    finish(&s, meta, &method, path, logged, resp, Some(rl))
}

/// The token's account (any valid token is an active account here).
async fn get_account(State(s): State<Shared>, method: Method, headers: HeaderMap) -> Response {
    let path = "/v2/account".to_string();
    let meta = Meta::of(&headers);
    let rl = gated!(s, meta.clone(), method, headers, path.clone(), Value::Null);
    let resp = Json(json!({ "account": {
        "droplet_limit": 25, "floating_ip_limit": 3, "email": "sre@example.com",
        "uuid": "b6fr89dbf6d9156cace5f3c78dc9851d957381ef", "email_verified": true,
        "status": "active", "status_message": ""
    }}))
    .into_response();
    finish(&s, meta, &method, path, Value::Null, resp, Some(rl))
}

async fn get_droplet(
    State(s): State<Shared>,
    method: Method,
    headers: HeaderMap,
    Path(id): Path<u64>,
) -> Response {
    let path = format!("/v2/droplets/{id}");
    let meta = Meta::of(&headers);
    let rl = gated!(s, meta.clone(), method, headers, path.clone(), Value::Null);
    let d = s.world.lock().unwrap().droplets.get(&id).cloned();
    let resp = match d {
        Some(d) => Json(json!({ "droplet": d })).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "not_found",
            "The resource you were accessing could not be found.",
        ),
    };
    finish(&s, meta, &method, path, Value::Null, resp, Some(rl))
}

/// One page of `items` as the real API lists them, under `key`.
fn page_of(path: &str, key: &str, items: Vec<Value>, query: Option<&str>) -> Response {
    let param = |name: &str| {
        query
            .unwrap_or("")
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == name)
            .and_then(|(_, v)| v.parse::<usize>().ok())
    };
    let per_page = param("per_page").unwrap_or(20).clamp(1, 200);
    let page = param("page").unwrap_or(1).max(1);
    let total = items.len();
    let last = total.div_ceil(per_page).max(1);
    let chunk: Vec<Value> = items
        .into_iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .collect();
    let url = |n: usize| format!("https://api.digitalocean.com{path}?page={n}&per_page={per_page}");
    let mut pages = serde_json::Map::new();
    if page < last {
        pages.insert("next".into(), json!(url(page + 1)));
        pages.insert("last".into(), json!(url(last)));
    }
    if page > 1 {
        pages.insert("first".into(), json!(url(1)));
        pages.insert("prev".into(), json!(url(page - 1)));
    }
    Json(json!({ key: chunk, "links": { "pages": pages }, "meta": { "total": total } }))
        .into_response()
}

async fn list_droplets(
    State(s): State<Shared>,
    method: Method,
    headers: HeaderMap,
    axum::extract::RawQuery(q): axum::extract::RawQuery,
) -> Response {
    let path = "/v2/droplets".to_string();
    let meta = Meta::of(&headers);
    let rl = gated!(s, meta.clone(), method, headers, path.clone(), Value::Null);
    let items = s.world.lock().unwrap().droplets.values().cloned().collect();
    let resp = page_of(&path, "droplets", items, q.as_deref());
    finish(&s, meta, &method, path, Value::Null, resp, Some(rl))
}

async fn list_lbs(
    State(s): State<Shared>,
    method: Method,
    headers: HeaderMap,
    axum::extract::RawQuery(q): axum::extract::RawQuery,
) -> Response {
    let path = "/v2/load_balancers".to_string();
    let meta = Meta::of(&headers);
    let rl = gated!(s, meta.clone(), method, headers, path.clone(), Value::Null);
    let items = s
        .world
        .lock()
        .unwrap()
        .load_balancers
        .values()
        .cloned()
        .collect();
    let resp = page_of(&path, "load_balancers", items, q.as_deref());
    finish(&s, meta, &method, path, Value::Null, resp, Some(rl))
}

async fn list_records(
    State(s): State<Shared>,
    method: Method,
    headers: HeaderMap,
    Path(domain): Path<String>,
    axum::extract::RawQuery(q): axum::extract::RawQuery,
) -> Response {
    let path = format!("/v2/domains/{domain}/records");
    let meta = Meta::of(&headers);
    let rl = gated!(s, meta.clone(), method, headers, path.clone(), Value::Null);
    let items: Vec<Value> = s
        .world
        .lock()
        .unwrap()
        .records
        .iter()
        .filter(|((d, _), _)| *d == domain)
        .map(|(_, r)| r.clone())
        .collect();
    let resp = if items.is_empty() {
        error(
            StatusCode::NOT_FOUND,
            "not_found",
            "The resource you were accessing could not be found.",
        )
    } else {
        page_of(&path, "domain_records", items, q.as_deref())
    };
    finish(&s, meta, &method, path, Value::Null, resp, Some(rl))
}

/// Everything stored, for the demo's summary (no auth: loopback test tool only).
async fn fake_state(State(s): State<Shared>) -> Response {
    let w = s.world.lock().unwrap();
    let records: Vec<Value> = w
        .records
        .iter()
        .map(|((d, _), r)| json!({ "domain": d, "record": r }))
        .collect();
    Json(json!({
        "load_balancers": w.load_balancers,
        "records": records,
        "requests": w.log.len(),
    }))
    .into_response()
}
