//! DigitalOcean API v2: a client that keeps to the API's limits, and the load-balancer and DNS
//! steps built on it.
//!
//! The client honours `ratelimit-remaining` / `ratelimit-reset` (it waits for the reset rather than
//! spend the last request), waits `retry-after` on 429, and retries 5xx answers, timeouts,
//! connection errors and "load balancer busy with an earlier change" refusals with backoff, all
//! within the step's deadline. It is the one retry layer of a step, and it asks the fence before
//! every attempt. The token is sent in the `Authorization` header and nowhere else; every request
//! names the acting replica and the plan's epoch.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::config::responder::{
    DigitalOceanConfig, DnsRecordConfig, LbMode, LoadBalancerConfig, RecordType,
};
use crate::config::RegionConfig;
use crate::failover::state::StepKind;
use crate::ports::{FailReason, Placement, Step, StepCtx, StepError};
use crate::secret::Secret;

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

pub struct DoClient {
    http: std::sync::Arc<crate::tls::Client>,
    base: String,
    token: Secret,
    /// Do not send before this instant (rate limit exhausted until its reset).
    gate: Mutex<Option<Instant>>,
}

/// Request headers that say who acts: the replica and the plan's epoch. DigitalOcean keeps the
/// User-Agent of each API call in its account's audit trail; the custom headers are for proxies
/// and stand-ins that log them.
pub const REPLICA_HEADER: &str = "x-dynamo-failover-replica";
pub const EPOCH_HEADER: &str = "x-dynamo-failover-epoch";

impl DoClient {
    pub fn new(
        c: &DigitalOceanConfig,
        tls: &crate::config::types::ClientTls,
    ) -> anyhow::Result<Self> {
        let timeout = c.request_timeout;
        let http = crate::tls::Client::new(
            "digitalocean",
            tls,
            crate::tls::Roots::SystemAndBundle,
            move || {
                reqwest::Client::builder()
                    .timeout(timeout)
                    .connect_timeout(timeout)
            },
            None,
        )?;
        Ok(Self {
            http,
            base: c.api_url.clone(),
            token: c.token.clone(),
            gate: Mutex::new(None),
        })
    }

    /// One API call with the retry rules above, within `ctx`'s deadline. The fence is asked
    /// before every attempt (and again after every wait), so a replica that loses its lease sends
    /// nothing more, retries included. Answers the JSON body (Null for 204).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        ctx: &StepCtx<'_>,
    ) -> Result<Value, StepError> {
        let deadline = ctx.deadline;
        let mut backoff = FIRST_BACKOFF;
        let mut last: Option<StepError> = None;
        let agent = format!(
            "dynamo-failover/{} (replica {}; epoch {})",
            env!("CARGO_PKG_VERSION"),
            ctx.replica,
            ctx.epoch
        );
        loop {
            ctx.check()?;
            let gate = *self.gate.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(g) = gate {
                if g > deadline {
                    return Err(StepError::new(
                        FailReason::RateLimited,
                        format!(
                            "{method} {path}: rate limit exhausted until after the step deadline"
                        ),
                        true,
                    ));
                }
                tokio::time::sleep_until(g).await;
                ctx.check()?;
            }
            if Instant::now() >= deadline {
                return Err(last.unwrap_or_else(|| {
                    StepError::new(
                        FailReason::Timeout,
                        format!("{method} {path}: deadline passed"),
                        true,
                    )
                }));
            }
            let url = format!("{}{}", self.base, path);
            let mut req = self
                .http
                .get()
                .request(method.clone(), &url)
                .bearer_auth(self.token.expose())
                .header(reqwest::header::USER_AGENT, &agent)
                .header(REPLICA_HEADER, ctx.replica)
                .header(EPOCH_HEADER, ctx.epoch);
            if let Some(b) = body {
                req = req.json(b);
            }
            let wait = match req.send().await {
                Err(e) => {
                    let reason = if e.is_timeout() {
                        FailReason::Timeout
                    } else {
                        FailReason::Io
                    };
                    last = Some(StepError::new(
                        reason,
                        format!("{method} {path}: {}", without_url(&e)),
                        true,
                    ));
                    backoff
                }
                Ok(resp) => {
                    let status = resp.status();
                    let headers = resp.headers().clone();
                    self.note_rate_limit(&headers);
                    let text = resp.text().await.unwrap_or_default();
                    let parsed: Value = if text.is_empty() {
                        Value::Null
                    } else {
                        serde_json::from_str(&text).unwrap_or(Value::Null)
                    };
                    if status.is_success() {
                        return Ok(parsed);
                    }
                    let message = parsed["message"].as_str().unwrap_or("").to_string();
                    let what = format!("{method} {path}: {} {message}", status.as_u16());
                    match status {
                        StatusCode::TOO_MANY_REQUESTS => {
                            last = Some(StepError::new(FailReason::RateLimited, what, true));
                            retry_after(&headers).unwrap_or(backoff)
                        }
                        s if s.is_server_error() => {
                            last = Some(StepError::new(FailReason::ServerError, what, true));
                            backoff
                        }
                        StatusCode::FORBIDDEN
                        | StatusCode::CONFLICT
                        | StatusCode::UNPROCESSABLE_ENTITY
                            if is_busy(&message) =>
                        {
                            last = Some(StepError::new(FailReason::Busy, what, true));
                            backoff
                        }
                        StatusCode::UNAUTHORIZED => {
                            return Err(StepError::new(FailReason::Unauthorized, what, false))
                        }
                        StatusCode::NOT_FOUND => {
                            return Err(StepError::new(FailReason::NotFound, what, false))
                        }
                        _ => return Err(StepError::new(FailReason::Rejected, what, false)),
                    }
                }
            };
            let e = last.as_ref().expect("set on every retry path");
            if Instant::now() + wait >= deadline {
                return Err(e.clone());
            }
            (ctx.on_retry)(e.reason);
            tracing::warn!(epoch = ctx.epoch, error = %e.message, retry_in_ms = wait.as_millis() as u64,
                "DigitalOcean call will be retried");
            tokio::time::sleep(wait).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    fn note_rate_limit(&self, headers: &reqwest::header::HeaderMap) {
        let num = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        let mut gate = self.gate.lock().unwrap_or_else(|p| p.into_inner());
        match (num("ratelimit-remaining"), num("ratelimit-reset")) {
            (Some(0), Some(reset)) => {
                let now = crate::clock::unix_micros() / 1_000_000;
                let wait = Duration::from_secs(reset.saturating_sub(now).min(3600));
                *gate = Some(Instant::now() + wait);
            }
            _ => *gate = None,
        }
    }
}

/// reqwest's error text without the URL (which is ours, but keeps log lines short).
fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    if let Some(u) = e.url() {
        s = s.replace(&format!(" for url ({u})"), "");
    }
    s
}

fn retry_after(h: &reqwest::header::HeaderMap) -> Option<Duration> {
    h.get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| Duration::from_secs(s.min(300)))
}

/// DigitalOcean's refusals while a load balancer is still applying an earlier change.
fn is_busy(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "busy",
        "try again",
        "in progress",
        "being updated",
        "pending",
        "currently processing",
    ]
    .iter()
    .any(|w| m.contains(w))
}

fn region<'a>(regions: &'a [RegionConfig], name: &str) -> Result<&'a RegionConfig, StepError> {
    regions.iter().find(|r| r.name == name).ok_or_else(|| {
        StepError::new(
            FailReason::Rejected,
            format!("unknown region {name}"),
            false,
        )
    })
}

/// The load-balancer step, in one of three modes.
pub struct LoadBalancerStep {
    client: std::sync::Arc<DoClient>,
    lb: LoadBalancerConfig,
    regions: Vec<RegionConfig>,
}

impl LoadBalancerStep {
    pub fn new(
        client: std::sync::Arc<DoClient>,
        lb: LoadBalancerConfig,
        regions: Vec<RegionConfig>,
    ) -> Self {
        Self {
            client,
            lb,
            regions,
        }
    }

    async fn get(&self, ctx: &StepCtx<'_>) -> Result<Value, StepError> {
        let v = self
            .client
            .call(
                Method::GET,
                &format!("/v2/load_balancers/{}", self.lb.id),
                None,
                ctx,
            )
            .await?;
        if !v["load_balancer"].is_object() {
            return Err(StepError::new(
                FailReason::Rejected,
                "GET load balancer answered without a load_balancer object",
                true,
            ));
        }
        Ok(v["load_balancer"].clone())
    }

    async fn put(&self, body: &Value, ctx: &StepCtx<'_>) -> Result<(), StepError> {
        self.client
            .call(
                Method::PUT,
                &format!("/v2/load_balancers/{}", self.lb.id),
                Some(body),
                ctx,
            )
            .await
            .map(|_| ())
    }

    fn droplet_set(lb: &Value) -> BTreeSet<u64> {
        lb["droplet_ids"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_u64).collect())
            .unwrap_or_default()
    }

    async fn apply_droplets(&self, to: &str, ctx: &StepCtx<'_>) -> Result<String, StepError> {
        let lb = self.get(ctx).await?;
        if lb["tag"].as_str().is_some_and(|t| !t.is_empty()) {
            return Err(StepError::new(
                FailReason::Rejected,
                format!(
                    "load balancer {} targets a tag; configure mode = \"tag\" for it",
                    self.lb.id
                ),
                false,
            ));
        }
        let want: BTreeSet<u64> = region(&self.regions, to)?
            .digitalocean
            .droplet_ids
            .iter()
            .copied()
            .collect();
        let others: BTreeSet<u64> = self
            .regions
            .iter()
            .filter(|r| r.name != to)
            .flat_map(|r| r.digitalocean.droplet_ids.iter().copied())
            .collect();
        let current = Self::droplet_set(&lb);
        let add: Vec<u64> = want.difference(&current).copied().collect();
        let remove: Vec<u64> = current.intersection(&others).copied().collect();
        let path = format!("/v2/load_balancers/{}/droplets", self.lb.id);
        // Add first, then remove: the pool is never empty in between.
        if !add.is_empty() {
            self.client
                .call(
                    Method::POST,
                    &path,
                    Some(&json!({ "droplet_ids": add })),
                    ctx,
                )
                .await?;
        }
        if !remove.is_empty() {
            self.client
                .call(
                    Method::DELETE,
                    &path,
                    Some(&json!({ "droplet_ids": remove })),
                    ctx,
                )
                .await?;
        }
        let after = Self::droplet_set(&self.get(ctx).await?);
        if !want.is_subset(&after) || !after.is_disjoint(&others) {
            return Err(StepError::new(
                FailReason::VerifyFailed,
                format!(
                    "load balancer {} has droplets {after:?} after the move, wanted {want:?}",
                    self.lb.id
                ),
                true,
            ));
        }
        Ok(if add.is_empty() && remove.is_empty() {
            format!("load balancer {} already had droplets {want:?}", self.lb.id)
        } else {
            format!(
                "load balancer {}: added {add:?}, removed {remove:?}",
                self.lb.id
            )
        })
    }

    /// The whole object for PUT, built from what GET answered: read-only fields dropped, the
    /// region object replaced by its slug, everything else kept so no setting is lost.
    fn put_body(lb: &Value) -> Value {
        let mut body = lb.clone();
        if let Some(o) = body.as_object_mut() {
            for k in ["id", "ip", "ipv6", "status", "created_at"] {
                o.remove(k);
            }
            if let Some(slug) = lb["region"]["slug"].as_str() {
                o.insert("region".into(), Value::String(slug.to_string()));
            }
        }
        body
    }

    async fn apply_tag(&self, to: &str, ctx: &StepCtx<'_>) -> Result<String, StepError> {
        let want = region(&self.regions, to)?
            .digitalocean
            .tag
            .clone()
            .unwrap_or_default();
        let lb = self.get(ctx).await?;
        if lb["tag"].as_str() == Some(want.as_str()) {
            return Ok(format!(
                "load balancer {} already targets tag {want}",
                self.lb.id
            ));
        }
        let mut body = Self::put_body(&lb);
        body["tag"] = Value::String(want.clone());
        if let Some(o) = body.as_object_mut() {
            o.remove("droplet_ids");
        }
        self.put(&body, ctx).await?;
        let after = self.get(ctx).await?;
        if after["tag"].as_str() != Some(want.as_str()) {
            return Err(StepError::new(
                FailReason::VerifyFailed,
                format!(
                    "load balancer {} has tag {} after the PUT, wanted {want}",
                    self.lb.id, after["tag"]
                ),
                true,
            ));
        }
        Ok(format!(
            "load balancer {} now targets tag {want}",
            self.lb.id
        ))
    }

    fn priorities(&self, to: &str) -> BTreeMap<String, u64> {
        let mut order: Vec<&RegionConfig> = self.regions.iter().collect();
        order.sort_by_key(|r| (r.name != to, r.priority));
        order
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.digitalocean.slug.clone().map(|s| (s, i as u64 + 1)))
            .collect()
    }

    async fn apply_global(&self, to: &str, ctx: &StepCtx<'_>) -> Result<String, StepError> {
        let lb = self.get(ctx).await?;
        if lb["type"].as_str() != Some("GLOBAL") {
            return Err(StepError::new(
                FailReason::Rejected,
                format!(
                    "load balancer {} is not of type GLOBAL; mode = \"global\" needs one",
                    self.lb.id
                ),
                false,
            ));
        }
        let want = self.priorities(to);
        let have: BTreeMap<String, u64> =
            serde_json::from_value(lb["glb_settings"]["region_priorities"].clone())
                .unwrap_or_default();
        if have == want {
            return Ok(format!(
                "global load balancer {} already prefers {to}",
                self.lb.id
            ));
        }
        let mut body = Self::put_body(&lb);
        body["glb_settings"]["region_priorities"] = json!(want);
        self.put(&body, ctx).await?;
        let after = self.get(ctx).await?;
        let got: BTreeMap<String, u64> =
            serde_json::from_value(after["glb_settings"]["region_priorities"].clone())
                .unwrap_or_default();
        if got != want {
            return Err(StepError::new(
                FailReason::VerifyFailed,
                format!(
                    "global load balancer {} has priorities {got:?}, wanted {want:?}",
                    self.lb.id
                ),
                true,
            ));
        }
        Ok(format!(
            "global load balancer {} priorities now {want:?}",
            self.lb.id
        ))
    }
}

#[async_trait]
impl Step for LoadBalancerStep {
    fn name(&self) -> String {
        format!("load_balancer:{}", self.lb.id)
    }

    fn kind(&self) -> StepKind {
        StepKind::LoadBalancer
    }

    async fn apply(&self, to: &str, ctx: &StepCtx<'_>) -> Result<String, StepError> {
        match self.lb.mode {
            LbMode::Droplets => self.apply_droplets(to, ctx).await,
            LbMode::Tag => self.apply_tag(to, ctx).await,
            LbMode::Global => self.apply_global(to, ctx).await,
        }
    }

    async fn placement(&self, ctx: &StepCtx<'_>) -> Result<Placement, StepError> {
        let lb = self.get(ctx).await?;
        let id = &self.lb.id;
        Ok(match self.lb.mode {
            LbMode::Droplets => {
                let have = Self::droplet_set(&lb);
                let serving: Vec<&RegionConfig> = self
                    .regions
                    .iter()
                    .filter(|r| r.digitalocean.droplet_ids.iter().any(|d| have.contains(d)))
                    .collect();
                match serving.as_slice() {
                    [r] => Placement::Region(r.name.clone()),
                    [] => Placement::Unclear(format!(
                        "load balancer {id} has none of the configured droplets ({have:?})"
                    )),
                    many => Placement::Unclear(format!(
                        "load balancer {id} has droplets of {}",
                        many.iter()
                            .map(|r| r.name.as_str())
                            .collect::<Vec<_>>()
                            .join(" and ")
                    )),
                }
            }
            LbMode::Tag => {
                let tag = lb["tag"].as_str().unwrap_or_default();
                match self
                    .regions
                    .iter()
                    .find(|r| r.digitalocean.tag.as_deref() == Some(tag))
                {
                    Some(r) => Placement::Region(r.name.clone()),
                    None => Placement::Unclear(format!(
                        "load balancer {id} targets tag `{tag}`, no configured region's"
                    )),
                }
            }
            LbMode::Global => {
                let prio: BTreeMap<String, u64> =
                    serde_json::from_value(lb["glb_settings"]["region_priorities"].clone())
                        .unwrap_or_default();
                let first = prio.iter().min_by_key(|(_, p)| **p).map(|(s, _)| s.clone());
                match first.as_deref().and_then(|slug| {
                    self.regions
                        .iter()
                        .find(|r| r.digitalocean.slug.as_deref() == Some(slug))
                }) {
                    Some(r) => Placement::Region(r.name.clone()),
                    None => Placement::Unclear(format!(
                        "global load balancer {id} prefers {first:?}, no configured region's slug"
                    )),
                }
            }
        })
    }
}

/// The DNS step: points one A or AAAA record at the region's address.
pub struct DnsStep {
    client: std::sync::Arc<DoClient>,
    rec: DnsRecordConfig,
    regions: Vec<RegionConfig>,
}

impl DnsStep {
    pub fn new(
        client: std::sync::Arc<DoClient>,
        rec: DnsRecordConfig,
        regions: Vec<RegionConfig>,
    ) -> Self {
        Self {
            client,
            rec,
            regions,
        }
    }

    fn path(&self) -> String {
        format!(
            "/v2/domains/{}/records/{}",
            self.rec.domain, self.rec.record_id
        )
    }

    async fn get(&self, ctx: &StepCtx<'_>) -> Result<Value, StepError> {
        let v = self
            .client
            .call(Method::GET, &self.path(), None, ctx)
            .await?;
        Ok(v["domain_record"].clone())
    }
}

#[async_trait]
impl Step for DnsStep {
    fn name(&self) -> String {
        format!("dns:{}/{}", self.rec.domain, self.rec.record_id)
    }

    fn kind(&self) -> StepKind {
        StepKind::Dns
    }

    async fn apply(&self, to: &str, ctx: &StepCtx<'_>) -> Result<String, StepError> {
        let r = region(&self.regions, to)?;
        let want = match self.rec.kind {
            RecordType::A => r.digitalocean.ipv4.clone(),
            RecordType::AAAA => r.digitalocean.ipv6.clone(),
        }
        .unwrap_or_default();
        let rec = self.get(ctx).await?;
        if rec["type"].as_str() != Some(self.rec.kind.as_str()) {
            return Err(StepError::new(
                FailReason::Rejected,
                format!(
                    "record {} is of type {}, the config says {}",
                    self.rec.record_id,
                    rec["type"],
                    self.rec.kind.as_str()
                ),
                false,
            ));
        }
        let ttl = u64::from(self.rec.ttl);
        if rec["data"].as_str() == Some(want.as_str()) && rec["ttl"].as_u64() == Some(ttl) {
            return Ok(format!("{} already points at {want}", self.name()));
        }
        let body = json!({ "type": self.rec.kind.as_str(), "data": want, "ttl": ttl });
        self.client
            .call(Method::PATCH, &self.path(), Some(&body), ctx)
            .await?;
        let after = self.get(ctx).await?;
        if after["data"].as_str() != Some(want.as_str()) {
            return Err(StepError::new(
                FailReason::VerifyFailed,
                format!(
                    "{} has data {} after the PATCH, wanted {want}",
                    self.name(),
                    after["data"]
                ),
                true,
            ));
        }
        Ok(format!("{} now points at {want} (ttl {ttl})", self.name()))
    }

    async fn placement(&self, ctx: &StepCtx<'_>) -> Result<Placement, StepError> {
        let rec = self.get(ctx).await?;
        let data = rec["data"].as_str().unwrap_or_default();
        let addr = |r: &RegionConfig| match self.rec.kind {
            RecordType::A => r.digitalocean.ipv4.clone(),
            RecordType::AAAA => r.digitalocean.ipv6.clone(),
        };
        Ok(
            match self
                .regions
                .iter()
                .find(|r| addr(r).as_deref() == Some(data))
            {
                Some(r) => Placement::Region(r.name.clone()),
                None => Placement::Unclear(format!(
                    "{} points at {data}, no configured region's address",
                    self.name()
                )),
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_refusals_are_recognised() {
        assert!(is_busy(
            "Load balancer is currently being updated, please try again"
        ));
        assert!(is_busy("The load balancer is busy"));
        assert!(!is_busy("forwarding_rules is required"));
    }

    #[test]
    fn the_put_body_keeps_settings_and_replaces_the_region_object() {
        let lb = json!({"id": "x", "status": "active", "name": "lb", "region": {"slug": "nyc1", "name": "New York 1"},
            "forwarding_rules": [{"entry_port": 80}], "droplet_ids": [1], "sticky_sessions": {"type": "none"}});
        let b = LoadBalancerStep::put_body(&lb);
        assert_eq!(b["region"], "nyc1");
        assert!(b.get("id").is_none() && b.get("status").is_none());
        assert_eq!(b["sticky_sessions"]["type"], "none");
        assert_eq!(b["droplet_ids"], json!([1]));
    }
}
