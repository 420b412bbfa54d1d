//! Write probe: a conditional PutItem of this prober's canary in one region. The canary carries an
//! increasing sequence number (microseconds since the epoch, never reused) and the write succeeds
//! only if it is newer than what is stored, so a region that serves reads but refuses writes, and
//! two probers configured with the same id, both show up.

use aws_sdk_dynamodb::types::AttributeValue;

use super::{canary_key, classify, ProbeResult, Target};

/// Attribute names of a canary item.
pub const SEQ_ATTR: &str = "canary_seq";
pub const WRITTEN_AT_ATTR: &str = "canary_written_at_ms";
pub const PROBER_ATTR: &str = "canary_prober";

pub async fn probe(target: &Target, prefix: &str, prober: &str, seq: u64) -> ProbeResult {
    let key = canary_key(prefix, prober, &target.region);
    let answer = target
        .client
        .put_item()
        .table_name(&target.table.name)
        .item(&target.table.key_attribute, AttributeValue::S(key))
        .item(SEQ_ATTR, AttributeValue::N(seq.to_string()))
        .item(WRITTEN_AT_ATTR, AttributeValue::N((seq / 1000).to_string()))
        .item(PROBER_ATTR, AttributeValue::S(prober.to_string()))
        .condition_expression("attribute_not_exists(#k) OR #seq < :seq")
        .expression_attribute_names("#k", &target.table.key_attribute)
        .expression_attribute_names("#seq", SEQ_ATTR)
        .expression_attribute_values(":seq", AttributeValue::N(seq.to_string()))
        .send()
        .await;
    match answer {
        Ok(_) => ProbeResult::Success,
        Err(e) => classify(&e),
    }
}

/// Hands out strictly increasing sequence numbers that also increase across restarts.
#[derive(Debug, Default)]
pub struct Sequence {
    last: u64,
}

impl Sequence {
    pub fn next(&mut self, now_micros: u64) -> u64 {
        self.last = now_micros.max(self.last + 1);
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_increase_even_when_the_clock_stands_still_or_goes_back() {
        let mut s = Sequence::default();
        assert_eq!(s.next(100), 100);
        assert_eq!(s.next(100), 101);
        assert_eq!(s.next(50), 102);
        assert_eq!(s.next(500), 500);
    }
}
