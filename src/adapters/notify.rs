//! Notifiers: a Slack incoming webhook and a generic JSON webhook. A failing notifier is counted
//! and logged; it never blocks or undoes a step.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::json;

use crate::config::responder::NotifyConfig;
use crate::ports::{Message, Notifier};
use crate::secret::Secret;

fn client(
    timeout: std::time::Duration,
    tls: &crate::config::types::ClientTls,
) -> anyhow::Result<Arc<crate::tls::Client>> {
    crate::tls::Client::new(
        "notify",
        tls,
        crate::tls::Roots::SystemAndBundle,
        move || reqwest::Client::builder().timeout(timeout),
        None,
    )
}

async fn post(req: reqwest::RequestBuilder) -> Result<(), String> {
    match req.send().await {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => Err(format!("answered {}", r.status().as_u16())),
        // No URL in the error: a Slack webhook URL is itself a secret.
        Err(e) if e.is_timeout() => Err("timed out".into()),
        Err(e) if e.is_connect() => Err("could not connect".into()),
        Err(_) => Err("request failed".into()),
    }
}

pub struct Slack {
    http: Arc<crate::tls::Client>,
    url: Secret,
}

#[async_trait]
impl Notifier for Slack {
    fn channel(&self) -> &'static str {
        "slack"
    }

    async fn send(&self, m: &Message) -> Result<(), String> {
        let body = json!({
            "text": format!("*{}*\n{}", m.title, m.text),
        });
        post(self.http.get().post(self.url.expose()).json(&body)).await
    }
}

pub struct Webhook {
    http: Arc<crate::tls::Client>,
    url: String,
    token: Option<Secret>,
}

#[async_trait]
impl Notifier for Webhook {
    fn channel(&self) -> &'static str {
        "webhook"
    }

    async fn send(&self, m: &Message) -> Result<(), String> {
        let mut req = self.http.get().post(&self.url).json(m);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t.expose());
        }
        post(req).await
    }
}

/// The notifiers the config asks for, verifying servers as `tls` says.
pub fn from_config(
    c: &NotifyConfig,
    tls: &crate::config::types::ClientTls,
) -> anyhow::Result<Vec<Box<dyn Notifier>>> {
    let mut out: Vec<Box<dyn Notifier>> = Vec::new();
    if let Some(url) = &c.slack_webhook_url {
        out.push(Box::new(Slack {
            http: client(c.timeout, tls)?,
            url: url.clone(),
        }));
    }
    if let Some(url) = &c.webhook_url {
        out.push(Box::new(Webhook {
            http: client(c.timeout, tls)?,
            url: url.clone(),
            token: c.webhook_token.clone(),
        }));
    }
    Ok(out)
}
