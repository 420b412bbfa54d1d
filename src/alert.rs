//! Alertmanager webhook payloads (version 4) turned into domain events, and nothing else.
//! Unknown fields are accepted (Alertmanager adds fields over time); missing required ones, a
//! version other than "4" and unreadable timestamps are errors that name the field.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::config::responder::AlertsConfig;
use crate::failover::machine::Event;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Payload {
    pub version: String,
    pub status: String,
    #[serde(default)]
    pub receiver: String,
    #[serde(default)]
    pub group_key: String,
    #[serde(default)]
    pub truncated_alerts: u64,
    pub alerts: Vec<Alert>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    pub status: String,
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    pub starts_at: String,
    #[serde(default)]
    pub ends_at: String,
    #[serde(default)]
    pub fingerprint: String,
}

/// What a payload means for the responder.
#[derive(Debug, Default)]
pub struct Parsed {
    pub events: Vec<Event>,
    /// Alerts that mean nothing here, with the reason (other alert names, unknown regions).
    pub ignored: Vec<String>,
    pub truncated: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PayloadError {
    #[error("body is not an Alertmanager webhook payload: {0}")]
    Shape(String),
    #[error("unsupported webhook version `{0}` (this responder reads version 4)")]
    Version(String),
    #[error("alerts[{index}].{field}: {problem}")]
    Field {
        index: usize,
        field: &'static str,
        problem: String,
    },
}

/// Parses the body bytes.
pub fn parse(body: &[u8]) -> Result<Payload, PayloadError> {
    let p: Payload =
        serde_json::from_slice(body).map_err(|e| PayloadError::Shape(e.to_string()))?;
    if p.version != "4" {
        return Err(PayloadError::Version(p.version));
    }
    if p.status != "firing" && p.status != "resolved" {
        return Err(PayloadError::Shape(format!(
            "status `{}` is neither firing nor resolved",
            p.status
        )));
    }
    Ok(p)
}

/// Longest fingerprint accepted (Alertmanager's are 16 hex digits).
pub const MAX_FINGERPRINT: usize = 64;

/// A 16-hex-digit fingerprint of a label set (FNV-1a over `name=value` pairs in name order), for
/// senders that leave `fingerprint` out.
fn label_fingerprint(labels: &BTreeMap<String, String>) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (k, v) in labels {
        for b in k.bytes().chain([b'=']).chain(v.bytes()).chain([0xff]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

/// Parses an RFC 3339 timestamp to milliseconds since the Unix epoch.
pub fn rfc3339_ms(text: &str) -> Option<u64> {
    let t =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

impl TryFrom<(&Payload, &AlertsConfig, &[String])> for Parsed {
    type Error = PayloadError;

    fn try_from(
        (p, cfg, regions): (&Payload, &AlertsConfig, &[String]),
    ) -> Result<Self, Self::Error> {
        let mut out = Parsed {
            truncated: p.truncated_alerts,
            ..Parsed::default()
        };
        for (index, a) in p.alerts.iter().enumerate() {
            let firing = match a.status.as_str() {
                "firing" => true,
                "resolved" => false,
                other => {
                    return Err(PayloadError::Field {
                        index,
                        field: "status",
                        problem: format!("`{other}` is neither firing nor resolved"),
                    })
                }
            };
            let starts_at_ms = rfc3339_ms(&a.starts_at).ok_or_else(|| PayloadError::Field {
                index,
                field: "startsAt",
                problem: format!("`{}` is not an RFC 3339 timestamp", a.starts_at),
            })?;
            let name = a.labels.get("alertname").map(String::as_str).unwrap_or("");
            let app = cfg.app_down.iter().any(|n| n == name);
            if !app && !cfg.region_down.iter().any(|n| n == name) {
                out.ignored.push(format!(
                    "alerts[{index}]: `{name}` is neither a region-down nor an application-down alert"
                ));
                continue;
            }
            let Some(region) = a.labels.get(&cfg.region_label) else {
                out.ignored.push(format!(
                    "alerts[{index}]: `{name}` has no `{}` label",
                    cfg.region_label
                ));
                continue;
            };
            if !regions.iter().any(|r| r == region) {
                out.ignored
                    .push(format!("alerts[{index}]: unknown region `{region}`"));
                continue;
            }
            let fingerprint = if a.fingerprint.is_empty() {
                // Alertmanager always sends one; a stable stand-in from the labels, as short.
                label_fingerprint(&a.labels)
            } else if a.fingerprint.len() > MAX_FINGERPRINT {
                return Err(PayloadError::Field {
                    index,
                    field: "fingerprint",
                    problem: format!(
                        "{} bytes long; Alertmanager's are 16 hex digits, at most {MAX_FINGERPRINT} are accepted",
                        a.fingerprint.len()
                    ),
                });
            } else {
                a.fingerprint.clone()
            };
            out.events.push(Event::Alert {
                fingerprint,
                region: region.clone(),
                firing,
                starts_at_ms,
                detail: a.annotations.get(&cfg.detail_annotation).cloned(),
                app,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape of a real Alertmanager 0.25 body, with a region-down alert.
    pub const FIRING: &str = r#"{"receiver":"responder","status":"firing","alerts":[{"status":"firing","labels":{"alertname":"DynamoDBRegionUnavailable","region":"us-east-1","action":"failover","severity":"page"},"annotations":{"summary":"us-east-1 down"},"startsAt":"2026-11-26T05:49:21.749Z","endsAt":"0001-01-01T00:00:00Z","generatorURL":"http://127.0.0.1:9090/graph","fingerprint":"085e38554bedb1a6"}],"groupLabels":{"alertname":"DynamoDBRegionUnavailable","region":"us-east-1"},"commonLabels":{},"commonAnnotations":{},"externalURL":"http://127.0.0.1:9093","version":"4","groupKey":"{}:{alertname=\"DynamoDBRegionUnavailable\"}","truncatedAlerts":0}"#;

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

    #[test]
    fn a_real_firing_body_becomes_one_alert_event() {
        let p = parse(FIRING.as_bytes()).unwrap();
        let parsed = Parsed::try_from((&p, &cfg(), regions().as_slice())).unwrap();
        assert_eq!(
            parsed.events,
            vec![Event::Alert {
                fingerprint: "085e38554bedb1a6".into(),
                region: "us-east-1".into(),
                firing: true,
                starts_at_ms: 1_795_672_161_749,
                detail: None,
                app: false,
            }]
        );
    }

    #[test]
    fn other_alerts_and_unknown_regions_are_ignored_with_a_reason() {
        let body = FIRING.replace(
            "DynamoDBRegionUnavailable\",\"region\":\"us-east-1\",\"action",
            "DynamoDBRegionUnavailable\",\"region\":\"mars-1\",\"action",
        );
        let p = parse(body.as_bytes()).unwrap();
        let parsed = Parsed::try_from((&p, &cfg(), regions().as_slice())).unwrap();
        assert!(parsed.events.is_empty());
        assert!(parsed.ignored[0].contains("mars-1"));
        let body = FIRING.replace(
            "\"alertname\":\"DynamoDBRegionUnavailable\"",
            "\"alertname\":\"AppDown\"",
        );
        let p = parse(body.as_bytes()).unwrap();
        let parsed = Parsed::try_from((&p, &cfg(), regions().as_slice())).unwrap();
        assert!(parsed.events.is_empty() && parsed.ignored[0].contains("AppDown"));
    }

    #[test]
    fn a_grouped_body_with_firing_and_resolved_alerts_for_two_regions_gives_every_event() {
        let body = r#"{"version":"4","status":"firing","receiver":"r","groupKey":"{}:{}","truncatedAlerts":2,
          "alerts":[
            {"status":"firing","labels":{"alertname":"DynamoDBRegionUnavailable","region":"us-east-1"},"startsAt":"2026-11-26T05:00:00Z","endsAt":"0001-01-01T00:00:00Z","fingerprint":"a"},
            {"status":"resolved","labels":{"alertname":"DynamoDBRegionUnavailable","region":"us-west-2"},"startsAt":"2026-11-26T04:00:00Z","endsAt":"2026-11-26T04:30:00Z","fingerprint":"b"},
            {"status":"firing","labels":{"alertname":"DynamoDBRegionDegraded","region":"us-west-2"},"startsAt":"2026-11-26T04:00:00Z","fingerprint":"c"}]}"#;
        let p = parse(body.as_bytes()).unwrap();
        let parsed = Parsed::try_from((&p, &cfg(), regions().as_slice())).unwrap();
        assert_eq!(parsed.truncated, 2);
        assert_eq!(parsed.events.len(), 2);
        assert!(
            matches!(&parsed.events[0], Event::Alert { region, firing: true, .. } if region == "us-east-1")
        );
        assert!(
            matches!(&parsed.events[1], Event::Alert { region, firing: false, .. } if region == "us-west-2")
        );
        assert_eq!(parsed.ignored.len(), 1);
    }

    #[test]
    fn bad_bodies_name_the_problem() {
        assert!(matches!(parse(b"{}"), Err(PayloadError::Shape(_))));
        assert!(matches!(parse(b"not json"), Err(PayloadError::Shape(_))));
        let v3 = FIRING.replace("\"version\":\"4\"", "\"version\":\"3\"");
        assert_eq!(
            parse(v3.as_bytes()).unwrap_err(),
            PayloadError::Version("3".into())
        );
        let bad_time = FIRING.replace("2026-11-26T05:49:21.749Z", "yesterday");
        let p = parse(bad_time.as_bytes()).unwrap();
        let e = Parsed::try_from((&p, &cfg(), regions().as_slice())).unwrap_err();
        assert!(e.to_string().contains("alerts[0].startsAt"), "{e}");
    }

    #[test]
    fn fingerprints_are_bounded_and_a_missing_one_is_a_short_stable_hash() {
        let long = FIRING.replace("085e38554bedb1a6", &"f".repeat(MAX_FINGERPRINT + 1));
        let p = parse(long.as_bytes()).unwrap();
        let e = Parsed::try_from((&p, &cfg(), regions().as_slice())).unwrap_err();
        assert!(e.to_string().contains("alerts[0].fingerprint"), "{e}");
        let none = FIRING.replace(r#","fingerprint":"085e38554bedb1a6""#, "");
        let fp = |body: &str| {
            let p = parse(body.as_bytes()).unwrap();
            match &Parsed::try_from((&p, &cfg(), regions().as_slice()))
                .unwrap()
                .events[0]
            {
                Event::Alert { fingerprint, .. } => fingerprint.clone(),
                e => panic!("{e:?}"),
            }
        };
        assert_eq!(fp(&none).len(), 16);
        assert_eq!(fp(&none), fp(&none));
        assert_ne!(
            fp(&none),
            fp(&none.replace("us-east-1\",\"action", "us-west-2\",\"action"))
        );
    }
}
