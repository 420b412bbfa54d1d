//! Reads the last replication lag measured out of a region from Prometheus, for the "data at
//! risk" line of a failover notice.

use async_trait::async_trait;

use crate::ports::LagSource;

pub struct PrometheusLag {
    http: reqwest::Client,
    base: String,
}

impl PrometheusLag {
    pub fn new(base: &str) -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(2))
                .build()
                .unwrap_or_default(),
            base: base.to_string(),
        }
    }
}

#[async_trait]
impl LagSource for PrometheusLag {
    async fn last_lag_out_of(&self, region: &str) -> Option<f64> {
        let query = format!("max(last_over_time(dynamodb_replication_lag_seconds{{source_region=\"{region}\"}}[1h]))");
        let v: serde_json::Value = self
            .http
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
