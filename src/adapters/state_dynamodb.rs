//! The DynamoDB-backed state store and lease, for running several responder replicas.
//!
//! One table (partition key `pk`, type S) in one region holds two items:
//! - `pk = "state"`: the JSON state, its `version` and schema version. A save is a PutItem
//!   conditioned on the version it read (`attribute_not_exists(pk)` for the first), so two
//!   replicas can never both write over the same version.
//! - `pk = "lease"`: `holder`, `expires_at_ms` and `lease_epoch`. A replica takes the lease when it
//!   is free or expired (the lease epoch rises by one), and renews it only while it still holds
//!   it; both are conditional writes. The lease epoch fences: a replica acts only while its own
//!   view of the lease is valid, and stops before its next side effect when it cannot renew.
//!
//! The table must be strongly consistent for these conditions to mean anything: a single-region
//! table (or a multi-region table with strong consistency). A last-writer-wins global table can
//! hold two leases at once, and `check_table` refuses one it can see.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use aws_sdk_dynamodb::Client;

use crate::failover::state::{self, State};
use crate::ports::{Lease, LeaseError, LeaseView, StateStore, StoreError, Versioned};

const STATE_KEY: &str = "state";
const LEASE_KEY: &str = "lease";

pub struct DynamoStore {
    client: Client,
    table: String,
    /// Bound on one call, so an unreachable store fails fast instead of hanging a plan.
    timeout: Duration,
}

fn unavailable<E: ProvideErrorMetadata + std::fmt::Debug, R>(
    what: &str,
    e: &SdkError<E, R>,
) -> String {
    let code = match e {
        SdkError::ServiceError(s) => s.err().code().unwrap_or("service error").to_string(),
        SdkError::TimeoutError(_) => "timeout".into(),
        SdkError::DispatchFailure(_) => "cannot connect".into(),
        _ => "request failed".into(),
    };
    format!("{what}: {code}")
}

fn is_condition_failure<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> bool {
    matches!(e, SdkError::ServiceError(s) if s.err().code() == Some("ConditionalCheckFailedException"))
}

fn num(item: &std::collections::HashMap<String, AttributeValue>, key: &str) -> Option<u64> {
    match item.get(key) {
        Some(AttributeValue::N(n)) => n.parse().ok(),
        _ => None,
    }
}

impl DynamoStore {
    pub fn new(client: Client, table: &str, timeout: Duration) -> Self {
        Self {
            client,
            table: table.to_string(),
            timeout,
        }
    }

    async fn bounded<T>(
        &self,
        what: &str,
        f: impl std::future::Future<Output = Result<T, String>>,
    ) -> Result<T, String> {
        tokio::time::timeout(self.timeout, f)
            .await
            .unwrap_or_else(|_| Err(format!("{what}: no answer within {:?}", self.timeout)))
    }

    /// Refuses a table that cannot hold a lease: missing, or replicated last-writer-wins.
    pub async fn check_table(&self) -> Result<(), String> {
        let d = self
            .bounded("describing the state table", async {
                self.client
                    .describe_table()
                    .table_name(&self.table)
                    .send()
                    .await
                    .map_err(|e| unavailable("describing the state table", &e))
            })
            .await?;
        let t = d.table.ok_or("the state table has no description")?;
        let replicas = t.replicas.as_deref().unwrap_or_default().len();
        let strong = t
            .multi_region_consistency
            .as_ref()
            .is_some_and(|c| c.as_str() == "STRONG");
        lease_capable(&self.table, replicas, strong)
    }
}

/// A lease needs conditional writes that every replica sees at once: a single-region table, or a
/// multi-region table with strong consistency. A last-writer-wins global table can grant the same
/// lease in two regions.
pub fn lease_capable(
    table: &str,
    replicas: usize,
    strongly_consistent: bool,
) -> Result<(), String> {
    if replicas > 0 && !strongly_consistent {
        return Err(format!(
            "the state table {table} is a global table with {replicas} replica(s) and eventual (last-writer-wins) \
             consistency; a lease needs a single-region table or a multi-region table with strong consistency"
        ));
    }
    Ok(())
}

#[async_trait]
impl StateStore for DynamoStore {
    async fn load(&self) -> Result<Option<Versioned>, StoreError> {
        let out = self
            .bounded("reading the state", async {
                self.client
                    .get_item()
                    .table_name(&self.table)
                    .key("pk", AttributeValue::S(STATE_KEY.into()))
                    .consistent_read(true)
                    .send()
                    .await
                    .map_err(|e| unavailable("reading the state", &e))
            })
            .await
            .map_err(StoreError::Unavailable)?;
        let Some(item) = out.item else {
            return Ok(None);
        };
        let schema = num(&item, "schema_version").unwrap_or(0);
        let version = num(&item, "version")
            .ok_or_else(|| StoreError::Corrupt("the stored state has no version".into()))?;
        let json = match item.get("state") {
            Some(AttributeValue::S(s)) => s,
            _ => return Err(StoreError::Corrupt("the stored state has no body".into())),
        };
        let body = serde_json::from_str(json)
            .map_err(|e| StoreError::Corrupt(format!("the stored state is not JSON: {e}")))?;
        let state = state::decode(schema, body).map_err(StoreError::Corrupt)?;
        Ok(Some(Versioned { version, state }))
    }

    async fn save(&self, state: &State, expected: u64) -> Result<u64, StoreError> {
        let body = serde_json::to_string(state)
            .map_err(|e| StoreError::Corrupt(format!("encoding state: {e}")))?;
        let next = expected + 1;
        let mut put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", AttributeValue::S(STATE_KEY.into()))
            .item("version", AttributeValue::N(next.to_string()))
            .item(
                "schema_version",
                AttributeValue::N(state::SCHEMA_VERSION.to_string()),
            )
            .item("epoch", AttributeValue::N(state.epoch.to_string()))
            .item("state", AttributeValue::S(body));
        put = if expected == 0 {
            put.condition_expression("attribute_not_exists(pk)")
        } else {
            put.condition_expression("version = :v")
                .expression_attribute_values(":v", AttributeValue::N(expected.to_string()))
        };
        let res = tokio::time::timeout(self.timeout, put.send()).await;
        match res {
            Err(_) => Err(StoreError::Unavailable(format!(
                "writing the state: no answer within {:?}",
                self.timeout
            ))),
            Ok(Ok(_)) => Ok(next),
            Ok(Err(e)) if is_condition_failure(&e) => {
                let found = self
                    .load()
                    .await
                    .ok()
                    .flatten()
                    .map(|v| v.version)
                    .unwrap_or(0);
                Err(StoreError::Conflict { expected, found })
            }
            Ok(Err(e)) => Err(StoreError::Unavailable(unavailable(
                "writing the state",
                &e,
            ))),
        }
    }
}

#[async_trait]
impl Lease for DynamoStore {
    async fn acquire(
        &self,
        holder: &str,
        now_ms: u64,
        duration: Duration,
    ) -> Result<LeaseView, LeaseError> {
        let expires = now_ms + duration.as_millis() as u64;
        // Renew if it is ours and still valid.
        let renew = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(LEASE_KEY.into()))
            .update_expression("SET expires_at_ms = :exp")
            .condition_expression("holder = :me AND expires_at_ms >= :now")
            .expression_attribute_values(":me", AttributeValue::S(holder.into()))
            .expression_attribute_values(":now", AttributeValue::N(now_ms.to_string()))
            .expression_attribute_values(":exp", AttributeValue::N(expires.to_string()))
            .return_values(ReturnValue::AllNew)
            .send();
        match tokio::time::timeout(self.timeout, renew).await {
            Err(_) => {
                return Err(LeaseError::Unavailable(
                    "renewing the lease: no answer".into(),
                ))
            }
            Ok(Ok(out)) => {
                let item = out.attributes.unwrap_or_default();
                return Ok(LeaseView {
                    epoch: num(&item, "lease_epoch").unwrap_or(0),
                    expires_at_ms: expires,
                });
            }
            Ok(Err(e)) if is_condition_failure(&e) => {}
            Ok(Err(e)) => {
                return Err(LeaseError::Unavailable(unavailable(
                    "renewing the lease",
                    &e,
                )))
            }
        }
        // Take it if it is free or expired.
        let take = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(LEASE_KEY.into()))
            .update_expression("SET holder = :me, expires_at_ms = :exp, lease_epoch = if_not_exists(lease_epoch, :zero) + :one")
            .condition_expression("attribute_not_exists(pk) OR expires_at_ms < :now")
            .expression_attribute_values(":me", AttributeValue::S(holder.into()))
            .expression_attribute_values(":now", AttributeValue::N(now_ms.to_string()))
            .expression_attribute_values(":exp", AttributeValue::N(expires.to_string()))
            .expression_attribute_values(":zero", AttributeValue::N("0".into()))
            .expression_attribute_values(":one", AttributeValue::N("1".into()))
            .return_values(ReturnValue::AllNew)
            .send();
        match tokio::time::timeout(self.timeout, take).await {
            Err(_) => Err(LeaseError::Unavailable(
                "taking the lease: no answer".into(),
            )),
            Ok(Ok(out)) => {
                let item = out.attributes.unwrap_or_default();
                Ok(LeaseView {
                    epoch: num(&item, "lease_epoch").unwrap_or(0),
                    expires_at_ms: expires,
                })
            }
            Ok(Err(e)) if is_condition_failure(&e) => Err(LeaseError::HeldElsewhere),
            Ok(Err(e)) => Err(LeaseError::Unavailable(unavailable("taking the lease", &e))),
        }
    }

    async fn release(&self, holder: &str) {
        let _ = tokio::time::timeout(
            self.timeout,
            self.client
                .update_item()
                .table_name(&self.table)
                .key("pk", AttributeValue::S(LEASE_KEY.into()))
                .update_expression("SET expires_at_ms = :zero")
                .condition_expression("holder = :me")
                .expression_attribute_values(":me", AttributeValue::S(holder.into()))
                .expression_attribute_values(":zero", AttributeValue::N("0".into()))
                .send(),
        )
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::lease_capable;

    #[test]
    fn a_last_writer_wins_global_table_is_refused_and_the_others_accepted() {
        assert!(lease_capable("t", 0, false).is_ok());
        assert!(lease_capable("t", 2, true).is_ok());
        let e = lease_capable("t", 2, false).unwrap_err();
        assert!(e.contains("last-writer-wins"), "{e}");
    }
}
