//! Read probe: a strongly consistent GetItem of the table's health item. A missing item is its own
//! result, so a table that lost its data is not mistaken for a healthy one.

use aws_sdk_dynamodb::types::AttributeValue;

use super::{classify, ProbeResult, Target};

pub async fn probe(target: &Target) -> ProbeResult {
    let answer = target
        .client
        .get_item()
        .table_name(&target.table.name)
        .key(
            &target.table.key_attribute,
            AttributeValue::S(target.table.health_key.clone()),
        )
        .consistent_read(true)
        .send()
        .await;
    match answer {
        Ok(out) if out.item.is_some() => ProbeResult::Success,
        Ok(_) => ProbeResult::MissingItem,
        Err(e) => classify(&e),
    }
}
