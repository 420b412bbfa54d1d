//! Notices for people: [`render`] turns a decision's [`Notice`] into a message (what happened,
//! why, what changed, the data at risk, what to do next, links), and one task sends them, in the
//! order they were decided, to every configured channel.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::machine::{Notice, NoticeKind, Policy};
use super::state::State;
use crate::failover::metrics::ResponderMetrics;
use crate::ports::{LagSource, Message, Notifier};

/// Where people can look, for notification links.
#[derive(Debug, Clone, Default)]
pub struct Links {
    pub responder: Option<String>,
    pub prometheus: Option<String>,
}

/// The channels and what a message needs besides the notice.
pub struct Channels {
    pub notifiers: Vec<Arc<dyn Notifier>>,
    pub lag: Option<Arc<dyn LagSource>>,
    pub links: Links,
    pub policy: Policy,
    pub metrics: ResponderMetrics,
}

/// Hands notices to the sending task; cheap, never blocks the caller.
#[derive(Clone)]
pub struct NoticeQueue(mpsc::UnboundedSender<(Notice, Arc<State>)>);

impl NoticeQueue {
    /// Queues `notice`, decided on `state`. Notices are sent one at a time, in queue order, so a
    /// "completed" never overtakes its "started" however slow a channel is.
    pub fn push(&self, notice: Notice, state: Arc<State>) {
        tracing::info!(epoch = notice.epoch, kind = notice.kind.as_str(), reason = %notice.reason, "notice");
        if self.0.send((notice, state)).is_err() {
            tracing::warn!("the notice sender has stopped; notice dropped");
        }
    }
}

/// Starts the sending task; it ends when every [`NoticeQueue`] clone is dropped.
pub fn spawn(c: Channels) -> NoticeQueue {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Notice, Arc<State>)>();
    tokio::spawn(async move {
        while let Some((n, state)) = rx.recv().await {
            send(&c, &n, &state).await;
        }
    });
    NoticeQueue(tx)
}

async fn send(c: &Channels, n: &Notice, state: &State) {
    if c.notifiers.is_empty() {
        return;
    }
    let lag = match (&c.lag, n.kind, &n.from) {
        (Some(src), NoticeKind::Started | NoticeKind::Completed, Some(from)) => {
            src.last_lag_out_of(from).await
        }
        _ => None,
    };
    let msg = render(n, state, &c.policy, &c.links, lag);
    for notifier in &c.notifiers {
        let result = match notifier.send(&msg).await {
            Ok(()) => "sent",
            Err(e) => {
                tracing::warn!(channel = notifier.channel(), error = %e, "notification failed");
                "failed"
            }
        };
        c.metrics
            .notifications
            .with_label_values(&[notifier.channel(), result])
            .inc();
    }
}

fn secs(ms: u64) -> String {
    if ms.is_multiple_of(60_000) && ms >= 60_000 {
        format!("{} min", ms / 60_000)
    } else {
        format!("{} s", ms / 1000)
    }
}

/// Turns a notice into a message for people: what happened, why, what changed, what to do next.
pub fn render(n: &Notice, s: &State, p: &Policy, links: &Links, lag: Option<f64>) -> Message {
    let from = n.from.as_deref().unwrap_or("-");
    let to = n.to.as_deref().unwrap_or("-");
    let is_failback = n.to.as_deref() == Some(p.home());
    let word = if is_failback { "Failback" } else { "Failover" };
    let title = match n.kind {
        NoticeKind::Started => format!("{word} {from} -> {to} started (epoch {})", n.epoch),
        NoticeKind::Completed => format!("{word} {from} -> {to} completed (epoch {})", n.epoch),
        NoticeKind::CompletedAfterRetry => {
            format!(
                "{word} {from} -> {to} completed after a retry (epoch {})",
                n.epoch
            )
        }
        NoticeKind::Unblocked => "Failover no longer blocked".to_string(),
        NoticeKind::Blocked => format!("Failover BLOCKED: traffic stays in {}", s.active),
        NoticeKind::TargetRejected => format!("{word} to {to} dropped: {to} failed its live check"),
        NoticeKind::StepFailed => {
            format!("{word} {from} -> {to} FAILED at a step (epoch {})", n.epoch)
        }
        NoticeKind::Paused => "Automatic failover paused".to_string(),
        NoticeKind::Resumed => "Automatic failover resumed".to_string(),
    };
    let mut text = format!("Why: {}\n", n.reason);
    if !n.changes.is_empty() {
        text += "Changed:\n";
        for c in &n.changes {
            text += &format!("  - {c}\n");
        }
    }
    if !n.pending.is_empty() {
        text += &format!("Not done yet: {}\n", n.pending.join(", "));
    }
    if matches!(n.kind, NoticeKind::Started | NoticeKind::Completed) && !is_failback {
        text += &match lag {
            Some(l) => format!(
                "Data at risk: writes to {from} in the last {l:.1} s before it failed may not have reached other regions (the highest replication lag out of {from}, plus one canary interval, in the 20 s before its last acknowledged write).\n"
            ),
            None => format!("Data at risk: unknown (no replication lag out of {from} was available).\n"),
        };
    }
    let next = match n.kind {
        NoticeKind::Started => "Nothing yet: the responder is applying the plan and will report when it is verified.".to_string(),
        k if k.completes_a_move() => {
            if is_failback {
                "Nothing: traffic is home. Review the incident.".to_string()
            } else if p.auto_failback {
                format!(
                    "Check the application in {to}. Failback to {} is automatic once it has been healthy for {}.",
                    p.home(),
                    secs(p.stabilisation_ms)
                )
            } else {
                format!(
                    "Check the application in {to}. Automatic failback is off: run `dynamo-failover failback` once {} is healthy.",
                    p.home()
                )
            }
        }
        NoticeKind::Blocked => "Investigate the regions' health (`dynamo-failover status`); the responder moves traffic as soon as it safely can.".to_string(),
        NoticeKind::TargetRejected => "The responder tries the next healthy region in priority order; if none is left it stays and reports BLOCKED.".to_string(),
        NoticeKind::StepFailed => format!(
            "The responder retries with backoff. To retry now after fixing the cause: `dynamo-failover failover --to {to}`."
        ),
        _ => "Nothing.".to_string(),
    };
    text += &format!("Next: {next}\n");
    let mut link_line = Vec::new();
    if let Some(r) = &links.responder {
        link_line.push(format!("state: {r}/v1/state"));
    }
    if let Some(pr) = &links.prometheus {
        link_line.push(format!("alerts: {pr}/alerts"));
    }
    if !link_line.is_empty() {
        text += &format!("Links: {}\n", link_line.join(" | "));
    }
    let fields = serde_json::json!({
        "kind": n.kind.as_str(),
        "trigger": n.trigger,
        "epoch": n.epoch,
        "from": n.from,
        "to": n.to,
        "reason": n.reason,
        "changes": n.changes,
        "pending": n.pending,
        "active_region": s.active,
        "replication_lag_seconds": lag,
    });
    Message {
        title,
        text,
        fields,
    }
}
