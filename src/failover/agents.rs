//! The agents step: the application servers reconfigure themselves (the `agent` role on each
//! watches the placement, writes its env file, reloads and acknowledges), and the step is done when
//! enough of the target region's agents have acknowledged the plan's epoch. The decision to call
//! it done is [`super::machine::decide`]'s, on each acknowledgement; this step only waits for that,
//! within the step deadline, and says which agents did not answer when it gives up.
//!
//! An agent proves its name with a token derived from the responders' agents secret
//! ([`agent_token`]), so one agent's token cannot acknowledge for another.

use std::sync::Arc;

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use tokio::sync::watch;

use super::machine::{agents_of, placement, Policy};
use super::state::{PlanStatus, State, StepKind};
use crate::ports::{FailReason, Placement, Step, StepCtx, StepError};
use crate::secret::Secret;

/// The step's name in plans.
pub const AGENTS_STEP: &str = "agents";

/// The token agent `name` presents: HMAC-SHA256 of its name under the agents secret, in hex.
pub fn agent_token(secret: &Secret, name: &str) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.expose().as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(b"dynamo-failover agent ");
    mac.update(name.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub struct AgentsStep {
    published: watch::Receiver<Arc<State>>,
    policy: Policy,
}

impl AgentsStep {
    pub fn new(published: watch::Receiver<Arc<State>>, policy: Policy) -> Self {
        Self { published, policy }
    }

    /// Why the step is not done yet, naming the agents still missing and what they last said.
    fn missing(&self, s: &State, to: &str, epoch: u64) -> String {
        let (acked, waiting) = agents_of(s, &self.policy, to, epoch);
        let said: Vec<String> = waiting
            .iter()
            .map(|name| match s.agents.get(name) {
                Some(a) if a.epoch == epoch && !a.ok => format!("{name} (failed: {})", a.detail),
                Some(a) => format!("{name} (last applied epoch {} for {})", a.epoch, a.region),
                None => format!("{name} (never heard from)"),
            })
            .collect();
        format!(
            "agents of {to} that did not acknowledge epoch {epoch}: {} ({} of {} did)",
            said.join(", "),
            acked.len(),
            acked.len() + waiting.len()
        )
    }
}

#[async_trait]
impl Step for AgentsStep {
    fn name(&self) -> String {
        AGENTS_STEP.to_string()
    }

    fn kind(&self) -> StepKind {
        StepKind::Agents
    }

    /// Waits until the stored plan shows this step done (the acknowledgements arrive through the
    /// webhook-independent agent API) or the step's deadline passes.
    async fn apply(&self, to: &str, ctx: &StepCtx<'_>) -> Result<String, StepError> {
        let mut seen = self.published.clone();
        let done = |s: &State| -> Option<String> {
            match &s.plan {
                Some(p) if p.epoch == ctx.epoch => p
                    .steps
                    .iter()
                    .find(|st| st.kind == StepKind::Agents && st.done)
                    .map(|st| st.detail.clone().unwrap_or_default()),
                // The plan finished (this was its last step), or was superseded.
                _ => s
                    .history
                    .iter()
                    .any(|t| t.epoch == ctx.epoch)
                    .then(|| "acknowledged".to_string()),
            }
        };
        let wait = async {
            loop {
                let snap = seen.borrow_and_update().clone();
                if let Some(detail) = done(&snap) {
                    return Ok(detail);
                }
                if snap
                    .plan
                    .as_ref()
                    .is_none_or(|p| p.epoch != ctx.epoch || p.status != PlanStatus::Running)
                {
                    return Err(StepError::fenced());
                }
                if seen.changed().await.is_err() {
                    return Err(StepError::fenced());
                }
            }
        };
        match tokio::time::timeout_at(ctx.deadline, wait).await {
            Ok(r) => r,
            Err(_) => Err(StepError::new(
                FailReason::Timeout,
                self.missing(&self.published.borrow(), to, ctx.epoch),
                false,
            )),
        }
    }

    async fn placement(&self, _ctx: &StepCtx<'_>) -> Result<Placement, StepError> {
        let (region, epoch) = placement(&self.published.borrow());
        Ok(if epoch == 0 {
            Placement::Unclear("no agent has been told a placement yet".into())
        } else {
            Placement::Region(region)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agent_token_belongs_to_one_name_and_one_secret() {
        let s = Secret::new("a-secret-of-sixteen-bytes-or-more");
        let t = agent_token(&s, "wp-1");
        assert_eq!(t.len(), 64);
        assert_eq!(t, agent_token(&s, "wp-1"));
        assert_ne!(t, agent_token(&s, "wp-2"));
        assert_ne!(
            t,
            agent_token(&Secret::new("another-secret-of-sixteen"), "wp-1")
        );
    }
}
