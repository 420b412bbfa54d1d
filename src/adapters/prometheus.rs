//! Reads the replication lag out of a region as it stood at its last acknowledged write, from
//! Prometheus, for the "data at risk" line of a failover notice.

use async_trait::async_trait;

use crate::ports::LagSource;

pub struct PrometheusLag {
    http: std::sync::Arc<crate::tls::Client>,
    base: String,
}

impl PrometheusLag {
    pub fn new(base: &str, tls: &crate::config::types::ClientTls) -> anyhow::Result<Self> {
        Ok(Self {
            http: crate::tls::Client::new(
                "prometheus",
                tls,
                crate::tls::Roots::SystemAndBundle,
                || reqwest::Client::builder().timeout(std::time::Duration::from_secs(2)),
                None,
            )?,
            base: base.to_string(),
        })
    }
}

#[async_trait]
impl LagSource for PrometheusLag {
    async fn last_lag_out_of(&self, region: &str) -> Option<f64> {
        // The lag as it stood while `region` still acknowledged writes: once it stops, the lag
        // of what it never shipped keeps growing, but nothing more is at risk. Each prober's lag
        // is a sawtooth (the age of its oldest unseen canary, read once per round): a target
        // that lacks that canary may lack the writes since the one before it too, so the lag
        // understates by up to one probe interval, which is added (exporters too old to export
        // it count without). The peak over the 20 s before the prober's last successful write to
        // the region bounds the writes lost from above. Within 20 s (plus the lag) of coming back
        // from an earlier outage the window still holds what that outage lost: the figure then
        // overstates the risk, never understates it.
        let peak = format!(
            "max_over_time(dynamodb_replication_lag_seconds{{source_region=\"{region}\"}}[20s])"
        );
        let query = format!(
            "max(last_over_time(((({peak} + on(prober) group_left() max by(prober) (dynamodb_probe_interval_seconds)) or {peak}) \
             and on(prober, table) (dynamodb_probe_success{{region=\"{region}\", operation=\"write\"}} == 1))[1h:1s]))"
        );
        let v: serde_json::Value = self
            .http
            .get()
            .get(format!("{}/api/v1/query", self.base))
            .query(&[("query", query)])
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }
}
