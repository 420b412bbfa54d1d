//! Property tests of the request parsers: whatever bytes arrive, the webhook and admin parsers
//! answer a value or an error and never panic. 10,000 cases per property (20,000 for raw bytes).

use dynamo_failover::alert::{parse, Parsed};
use dynamo_failover::config::responder::AlertsConfig;
use dynamo_failover::http::responder::parse_failover_body;
use proptest::prelude::*;

fn cfg() -> AlertsConfig {
    AlertsConfig {
        region_down: vec!["DynamoDBRegionUnavailable".into()],
        region_label: "region".into(),
        firing_expiry: std::time::Duration::from_secs(1200),
        detail_annotation: "operation".into(),
        app_down: vec!["AppRegionUnavailable".into()],
    }
}

fn regions() -> Vec<String> {
    vec!["us-east-1".into(), "us-west-2".into()]
}

fn webhook(bytes: &[u8]) {
    if let Ok(p) = parse(bytes) {
        let _ = Parsed::try_from((&p, &cfg(), regions().as_slice()));
    }
}

/// Alertmanager-shaped JSON with fields drawn from awkward values.
fn shaped() -> impl Strategy<Value = String> {
    let text = prop_oneof![
        Just("firing".to_string()),
        Just("resolved".to_string()),
        Just("".to_string()),
        Just("DynamoDBRegionUnavailable".to_string()),
        Just("us-east-1".to_string()),
        Just("2026-11-26T05:49:21.749Z".to_string()),
        Just("0001-01-01T00:00:00Z".to_string()),
        Just("9999-99-99T99:99:99Z".to_string()),
        "\\PC{0,40}",
    ];
    let alert = (
        text.clone(),
        text.clone(),
        text.clone(),
        text.clone(),
        text.clone(),
    )
        .prop_map(|(status, name, region, starts, fp)| {
            serde_json::json!({"status": status, "labels": {"alertname": name, "region": region},
                "startsAt": starts, "endsAt": starts, "fingerprint": fp})
        });
    (
        prop_oneof![Just("4".to_string()), text.clone()],
        text,
        prop::collection::vec(alert, 0..6),
        any::<u64>(),
    )
        .prop_map(|(version, status, alerts, truncated)| {
            serde_json::json!({"version": version, "status": status, "alerts": alerts,
                "truncatedAlerts": truncated, "groupKey": "{}"})
            .to_string()
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(20_000))]
    #[test]
    fn the_webhook_parser_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        webhook(&bytes);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(10_000))]
    #[test]
    fn the_webhook_parser_never_panics_on_alertmanager_shaped_json(body in shaped()) {
        webhook(body.as_bytes());
    }

    #[test]
    fn the_failover_body_parser_never_panics_and_accepts_only_a_region(body in prop_oneof![
        "\\PC{0,64}",
        "[a-z0-9-]{0,20}".prop_map(|r| format!("{{\"to\": \"{r}\"}}")),
    ]) {
        if let Ok(to) = parse_failover_body(body.as_bytes()) {
            prop_assert!(!to.is_empty());
        }
    }
}
