//! The exporter against real DynamoDB stand-ins, scraped over HTTP. The probe scenarios run once
//! against moto and once against dynalite (a second, independent implementation of the API), so a
//! result that only one of them produces fails one of the pair.

use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use testkit::*;

const T: &str = "wordpress_posts";

fn labels<'a>(prober: &'a str, region: &'a str, op: &'a str) -> [(&'a str, &'a str); 4] {
    [
        ("prober", prober),
        ("region", region),
        ("table", T),
        ("operation", op),
    ]
}

testkit::on_both!(
    probes_of_healthy_regions_publish_success_with_the_right_labels,
    a_stopped_region_fails_with_connect_errors_while_the_other_keeps_its_rate,
    a_missing_health_item_and_a_refused_write_are_told_apart,
    a_missing_table_is_table_not_found_and_never_a_dead_region,
    replication_lag_follows_the_copies_the_test_makes,
);

async fn two_regions_of(kind: Ddb) -> (DdbServer, DdbServer) {
    let (a, b) = tokio::join!(DdbServer::start(kind), DdbServer::start(kind));
    for (m, r) in [(&a, "us-east-1"), (&b, "us-west-2")] {
        create_table(&client(r, &m.endpoint()).await, T, true).await;
    }
    (a, b)
}

async fn two_regions() -> (DdbServer, DdbServer) {
    two_regions_of(Ddb::Moto).await
}

async fn wait_success(e: &Exporter, prober: &str, region: &str, op: &str) {
    let l = labels(prober, region, op);
    wait_until(
        Duration::from_secs(20),
        &format!("{region} {op} probe to succeed"),
        || async { e.value("dynamodb_probe_success", &l).await == Some(1.0) },
    )
    .await;
}

async fn probes_of_healthy_regions_publish_success_with_the_right_labels(kind: Ddb) {
    let (a, b) = two_regions_of(kind).await;
    let e = Exporter::spawn(&exporter_config(
        "vantage-a",
        &[("us-east-1", &a.endpoint()), ("us-west-2", &b.endpoint())],
        &[T],
    ))
    .await;
    for r in ["us-east-1", "us-west-2"] {
        for op in ["read", "write", "replication"] {
            wait_success(&e, "vantage-a", r, op).await;
        }
    }
    let text = e.scrape().await;
    let ok = [
        ("prober", "vantage-a"),
        ("region", "us-east-1"),
        ("table", T),
        ("operation", "read"),
        ("result", "success"),
    ];
    assert!(sample(&text, "dynamodb_probe_total", &ok).unwrap() >= 1.0);
    let failed = [
        ("region", "us-east-1"),
        ("operation", "read"),
        ("result", "connect_error"),
    ];
    assert_eq!(sample(&text, "dynamodb_probe_total", &failed), Some(0.0));
    let count = sample(
        &text,
        "dynamodb_probe_duration_seconds_count",
        &labels("vantage-a", "us-east-1", "read"),
    )
    .unwrap();
    assert!(count >= 1.0);
    let last = sample(
        &text,
        "dynamodb_probe_last_success_timestamp_seconds",
        &labels("vantage-a", "us-west-2", "write"),
    )
    .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        (now - last).abs() < 30.0,
        "last success {last} vs now {now}"
    );
    assert_eq!(sample(&text, "dynamo_failover_build_info", &[]), Some(1.0));
    assert!(sample(&text, "process_resident_memory_bytes", &[]).unwrap() > 0.0);
    assert!(sample(&text, "process_cpu_seconds_total", &[]).is_some());
    assert_eq!(
        sample(
            &text,
            "dynamodb_probe_slots_missed_total",
            &[("region", "us-east-1"), ("table", T)]
        ),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &text,
            "dynamodb_probe_table_required",
            &[
                ("prober", "vantage-a"),
                ("region", "us-west-2"),
                ("table", T)
            ]
        ),
        Some(1.0),
        "tables are required unless the config says otherwise"
    );
    assert_eq!(
        sample(
            &text,
            "dynamodb_probe_interval_seconds",
            &[("prober", "vantage-a")]
        ),
        Some(0.3),
        "the lag's resolution is the configured interval (300ms in the test kit)"
    );
    let h = e.get("/healthz").await;
    assert_eq!(h.status(), 200);
}

async fn a_stopped_region_fails_with_connect_errors_while_the_other_keeps_its_rate(kind: Ddb) {
    let (mut a, b) = two_regions_of(kind).await;
    let e = Exporter::spawn(&exporter_config(
        "vantage-a",
        &[("us-east-1", &a.endpoint()), ("us-west-2", &b.endpoint())],
        &[T],
    ))
    .await;
    wait_success(&e, "vantage-a", "us-east-1", "read").await;
    wait_success(&e, "vantage-a", "us-west-2", "read").await;

    a.stop().await;
    let east_refused = [
        ("region", "us-east-1"),
        ("operation", "read"),
        ("result", "connect_error"),
    ];
    wait_until(Duration::from_secs(10), "east read to fail", || async {
        let t = e.scrape().await;
        sample(
            &t,
            "dynamodb_probe_success",
            &labels("vantage-a", "us-east-1", "read"),
        ) == Some(0.0)
            && sample(&t, "dynamodb_probe_total", &east_refused).unwrap_or(0.0) >= 2.0
    })
    .await;
    let text = e.scrape().await;
    assert_eq!(
        sample(
            &text,
            "dynamodb_probe_success",
            &labels("vantage-a", "us-east-1", "write")
        ),
        Some(0.0)
    );

    // West keeps its schedule: about one probe per 300 ms interval over a 3 s window.
    let west_ok = [
        ("region", "us-west-2"),
        ("operation", "read"),
        ("result", "success"),
    ];
    let before = e.value("dynamodb_probe_total", &west_ok).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await; // a measurement window, not synchronisation
    let text = e.scrape().await;
    let after = sample(&text, "dynamodb_probe_total", &west_ok).unwrap();
    assert!(
        after - before >= 8.0,
        "west ran {} successful reads in 3 s at a 300 ms interval",
        after - before
    );
    assert_eq!(
        sample(
            &text,
            "dynamodb_probe_success",
            &labels("vantage-a", "us-west-2", "read")
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "dynamodb_probe_slots_missed_total",
            &[("region", "us-west-2")]
        ),
        Some(0.0)
    );
}

#[tokio::test]
async fn a_blackholed_endpoint_fails_as_timeout_within_the_configured_bound() {
    let a = Moto::start().await;
    create_table(&client("us-east-1", &a.endpoint()).await, T, true).await;
    let (hole, _h) = blackhole().await;
    let e = Exporter::spawn(&exporter_config(
        "vantage-a",
        &[("us-east-1", &a.endpoint()), ("eu-west-1", &hole)],
        &[T],
    ))
    .await;
    let timeouts = [
        ("region", "eu-west-1"),
        ("operation", "read"),
        ("result", "timeout"),
    ];
    wait_until(
        Duration::from_secs(10),
        "void reads to time out",
        || async {
            e.value("dynamodb_probe_total", &timeouts)
                .await
                .unwrap_or(0.0)
                >= 3.0
        },
    )
    .await;
    let text = e.scrape().await;
    // Configured overall timeout is 250 ms: every probe of the blackhole ended within 500 ms.
    let l = labels("vantage-a", "eu-west-1", "read");
    let count = sample(&text, "dynamodb_probe_duration_seconds_count", &l).unwrap();
    let mut within = l.to_vec();
    within.push(("le", "0.5"));
    let fast = sample(&text, "dynamodb_probe_duration_seconds_bucket", &within).unwrap();
    assert_eq!(fast, count, "some blackhole probes took longer than 500 ms");
    let mut too_fast = l.to_vec();
    too_fast.push(("le", "0.1"));
    assert_eq!(
        sample(&text, "dynamodb_probe_duration_seconds_bucket", &too_fast),
        Some(0.0),
        "a blackhole probe ended before the timeout could have fired"
    );
    assert_eq!(
        sample(
            &text,
            "dynamodb_probe_success",
            &labels("vantage-a", "us-east-1", "read")
        ),
        Some(1.0)
    );
}

async fn a_missing_health_item_and_a_refused_write_are_told_apart(kind: Ddb) {
    let (a, b) = tokio::join!(DdbServer::start(kind), DdbServer::start(kind));
    // east: no health item. west: a newer canary of this prober id already stored.
    create_table(&client("us-east-1", &a.endpoint()).await, T, false).await;
    let west = client("us-west-2", &b.endpoint()).await;
    create_table(&west, T, true).await;
    west.put_item()
        .table_name(T)
        .item(
            "pk",
            AttributeValue::S("dynamo-failover-canary#vantage-a#us-west-2".into()),
        )
        .item("canary_seq", AttributeValue::N(u64::MAX.to_string()))
        .send()
        .await
        .unwrap();
    let e = Exporter::spawn(&exporter_config(
        "vantage-a",
        &[("us-east-1", &a.endpoint()), ("us-west-2", &b.endpoint())],
        &[T],
    ))
    .await;
    let missing = [
        ("region", "us-east-1"),
        ("operation", "read"),
        ("result", "missing_item"),
    ];
    let refused = [
        ("region", "us-west-2"),
        ("operation", "write"),
        ("result", "condition_failed"),
    ];
    wait_until(Duration::from_secs(20), "both failures to show", || async {
        let t = e.scrape().await;
        sample(&t, "dynamodb_probe_total", &missing).unwrap_or(0.0) >= 1.0
            && sample(&t, "dynamodb_probe_total", &refused).unwrap_or(0.0) >= 1.0
    })
    .await;
    wait_success(&e, "vantage-a", "us-east-1", "write").await;
    wait_success(&e, "vantage-a", "us-west-2", "read").await;
    let t = e.scrape().await;
    assert_eq!(
        sample(
            &t,
            "dynamodb_probe_success",
            &labels("vantage-a", "us-east-1", "read")
        ),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &t,
            "dynamodb_probe_success",
            &labels("vantage-a", "us-west-2", "write")
        ),
        Some(0.0)
    );
    let cross = [
        ("region", "us-east-1"),
        ("operation", "read"),
        ("result", "condition_failed"),
    ];
    assert_eq!(sample(&t, "dynamodb_probe_total", &cross), Some(0.0));
}

async fn a_missing_table_is_table_not_found_and_never_a_dead_region(kind: Ddb) {
    let (a, b) = tokio::join!(DdbServer::start(kind), DdbServer::start(kind));
    // East has the table; west has none at all (a replica never added there).
    create_table(&client("us-east-1", &a.endpoint()).await, T, true).await;
    let e = Exporter::spawn(&exporter_config(
        "vantage-a",
        &[("us-east-1", &a.endpoint()), ("us-west-2", &b.endpoint())],
        &[T],
    ))
    .await;
    for op in ["read", "write"] {
        let missing = [
            ("region", "us-west-2"),
            ("operation", op),
            ("result", "table_not_found"),
        ];
        wait_until(
            Duration::from_secs(20),
            &format!("west {op} to say table_not_found"),
            || async {
                e.value("dynamodb_probe_total", &missing)
                    .await
                    .unwrap_or(0.0)
                    >= 1.0
            },
        )
        .await;
    }
    wait_success(&e, "vantage-a", "us-east-1", "read").await;
    let t = e.scrape().await;
    // (Not timeouts: moto, a Python server, can miss the test kit's 250 ms bound while a loaded
    // machine starts it, whatever the table.)
    for op in ["read", "write"] {
        for result in ["connect_error", "server_error", "client_error"] {
            assert_eq!(
                sample(
                    &t,
                    "dynamodb_probe_total",
                    &[
                        ("region", "us-west-2"),
                        ("operation", op),
                        ("result", result)
                    ]
                )
                .unwrap_or(0.0),
                0.0,
                "{kind:?}: {op} {result}"
            );
        }
    }
}

/// Copies this prober's east canary into west, as global-table replication would.
async fn replicate(from: &aws_sdk_dynamodb::Client, to: &aws_sdk_dynamodb::Client) -> bool {
    let key = "dynamo-failover-canary#vantage-a#us-east-1";
    let got = from
        .get_item()
        .table_name(T)
        .key("pk", AttributeValue::S(key.into()))
        .consistent_read(true)
        .send()
        .await;
    match got.ok().and_then(|o| o.item) {
        Some(item) => to
            .put_item()
            .table_name(T)
            .set_item(Some(item))
            .send()
            .await
            .is_ok(),
        None => false,
    }
}

async fn replication_lag_follows_the_copies_the_test_makes(kind: Ddb) {
    let (a, b) = two_regions_of(kind).await;
    let east = client("us-east-1", &a.endpoint()).await;
    let west = client("us-west-2", &b.endpoint()).await;
    let e = Exporter::spawn(&exporter_config(
        "vantage-a",
        &[("us-east-1", &a.endpoint()), ("us-west-2", &b.endpoint())],
        &[T],
    ))
    .await;
    let lag = [
        ("prober", "vantage-a"),
        ("table", T),
        ("source_region", "us-east-1"),
        ("target_region", "us-west-2"),
    ];
    // Nothing replicates: west falls further and further behind east.
    wait_until(Duration::from_secs(20), "lag to pass 1.5 s", || async {
        e.value("dynamodb_replication_lag_seconds", &lag)
            .await
            .unwrap_or(0.0)
            > 1.5
    })
    .await;

    // Replication resumes with a short delay: the lag falls back under one interval or two.
    let copier = tokio::spawn({
        let (east, west) = (east.clone(), west.clone());
        async move {
            loop {
                replicate(&east, &west).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });
    wait_until(
        Duration::from_secs(10),
        "lag to fall under 0.7 s",
        || async {
            e.value("dynamodb_replication_lag_seconds", &lag)
                .await
                .unwrap_or(99.0)
                < 0.7
        },
    )
    .await;
    // It stays low while copies keep coming.
    for _ in 0..10 {
        let v = e
            .value("dynamodb_replication_lag_seconds", &lag)
            .await
            .unwrap();
        assert!(v < 1.0, "lag {v} while replicating");
        tokio::time::sleep(Duration::from_millis(150)).await; // sampling cadence
    }
    copier.abort();
    // And rises again once they stop.
    wait_until(
        Duration::from_secs(10),
        "lag to rise past 1.5 s again",
        || async {
            e.value("dynamodb_replication_lag_seconds", &lag)
                .await
                .unwrap_or(0.0)
                > 1.5
        },
    )
    .await;
    // The other direction was never copied by anyone and reports its own, separate lag.
    let reverse = [
        ("source_region", "us-west-2"),
        ("target_region", "us-east-1"),
        ("table", T),
    ];
    assert!(
        e.value("dynamodb_replication_lag_seconds", &reverse)
            .await
            .unwrap()
            > 1.0
    );
}

#[tokio::test]
async fn the_metrics_page_passes_promtool_check_metrics() {
    let (a, b) = two_regions().await;
    let e = Exporter::spawn(&exporter_config(
        "vantage-a",
        &[("us-east-1", &a.endpoint()), ("us-west-2", &b.endpoint())],
        &[T],
    ))
    .await;
    wait_success(&e, "vantage-a", "us-west-2", "replication").await;
    let text = e.scrape().await;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool not found: run the tests through scripts/test, which installs it");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool: {said}"
    );
}

/// A credentials provider with nothing to give, like a machine with no role and no keys.
#[derive(Debug)]
struct NoCredentials;

impl aws_credential_types::provider::ProvideCredentials for NoCredentials {
    fn provide_credentials<'a>(
        &'a self,
    ) -> aws_credential_types::provider::future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        aws_credential_types::provider::future::ProvideCredentials::ready(Err(
            aws_credential_types::provider::error::CredentialsError::not_loaded(
                "no credentials in the chain",
            ),
        ))
    }
}

#[tokio::test]
async fn missing_credentials_are_named_no_credentials_not_a_dead_region() {
    let (a, b) = two_regions().await;
    let shared = aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(
            aws_credential_types::provider::SharedCredentialsProvider::new(NoCredentials),
        )
        .build();
    let e = Exporter::spawn_with(
        &exporter_config(
            "keyless",
            &[("us-east-1", &a.endpoint()), ("us-west-2", &b.endpoint())],
            &[T],
        ),
        shared,
    )
    .await;
    let denied = [
        ("prober", "keyless"),
        ("region", "us-east-1"),
        ("operation", "read"),
        ("result", "no_credentials"),
    ];
    wait_until(Duration::from_secs(10), "a no_credentials read", || async {
        e.value("dynamodb_probe_total", &denied)
            .await
            .unwrap_or(0.0)
            >= 1.0
    })
    .await;
    let connect = [
        ("prober", "keyless"),
        ("region", "us-east-1"),
        ("operation", "read"),
        ("result", "connect_error"),
    ];
    assert_eq!(e.value("dynamodb_probe_total", &connect).await, Some(0.0));
}

/// An application stand-in for the checks: `/ok` (200, "WordPress"), `/error` (500), `/slow`
/// (answers after 2 s), `/vhost` (200 only for `Host: www.example.com`).
async fn app_server() -> u16 {
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::get;
    let app = axum::Router::new()
        .route("/ok", get(|| async { "Just another WordPress site" }))
        .route(
            "/error",
            get(|| async {
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "error establishing a database connection",
                )
            }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(2)).await;
                "late"
            }),
        )
        .route(
            "/vhost",
            get(|h: HeaderMap| async move {
                if h.get("host").and_then(|v| v.to_str().ok()) == Some("www.example.com") {
                    (StatusCode::OK, "WordPress")
                } else {
                    (StatusCode::NOT_FOUND, "no such site")
                }
            }),
        );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(l, app).await.ok() });
    port
}

#[tokio::test]
async fn application_checks_tell_every_kind_of_failure_apart() {
    let (a, b) = two_regions().await;
    let port = app_server().await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let checks = [
        (
            "ok",
            format!("url = \"http://127.0.0.1:{port}/ok\"\nbody_contains = \"WordPress\""),
        ),
        ("error", format!("url = \"http://127.0.0.1:{port}/error\"")),
        (
            "body",
            format!("url = \"http://127.0.0.1:{port}/ok\"\nbody_contains = \"Drupal\""),
        ),
        (
            "slow",
            format!("url = \"http://127.0.0.1:{port}/slow\"\ntimeout = \"250ms\""),
        ),
        ("closed", format!("url = \"http://127.0.0.1:{closed}/\"")),
        ("tls", format!("url = \"https://127.0.0.1:{port}/ok\"")),
        // The users' host name, connected to the load balancer's address.
        (
            "vhost",
            format!("url = \"http://www.example.com/vhost\"\naddress = \"127.0.0.1:{port}\""),
        ),
        (
            "status",
            format!("url = \"http://127.0.0.1:{port}/error\"\nexpect_status = [500]"),
        ),
    ];
    let mut cfg = exporter_config(
        "p1",
        &[("us-east-1", &a.endpoint()), ("us-west-2", &b.endpoint())],
        &[T],
    );
    let at = cfg.find("[[region]]\nname = \"us-west-2\"").unwrap();
    let section: String = checks
        .iter()
        .map(|(name, rest)| {
            // The prober's interval is 300 ms: no check may wait longer.
            let timeout = if rest.contains("timeout") {
                ""
            } else {
                "timeout = \"300ms\"\n"
            };
            format!("[[region.app_check]]\nname = \"{name}\"\n{timeout}{rest}\n\n")
        })
        .collect();
    cfg.insert_str(at, &section);
    let e = Exporter::spawn(&cfg).await;
    let want = [
        ("ok", "success"),
        ("error", "bad_status"),
        ("body", "body_mismatch"),
        ("slow", "timeout"),
        ("closed", "connect_error"),
        ("tls", "tls_error"),
        ("vhost", "success"),
        ("status", "success"),
    ];
    for (check, result) in want {
        let l = [
            ("prober", "p1"),
            ("region", "us-east-1"),
            ("check", check),
            ("result", result),
        ];
        wait_until(
            Duration::from_secs(10),
            &format!("check {check} to count a {result}"),
            || async { e.value("app_probe_total", &l).await.unwrap_or(0.0) >= 2.0 },
        )
        .await;
        let m = e.scrape().await;
        // Only that result: the others stay at their pre-created zero.
        for other in dynamo_failover::probe::app::AppResult::ALL {
            let o = other.as_str();
            let v = sample(
                &m,
                "app_probe_total",
                &[
                    ("prober", "p1"),
                    ("region", "us-east-1"),
                    ("check", check),
                    ("result", o),
                ],
            );
            if o == result {
                assert!(v.unwrap() >= 2.0);
            } else {
                assert_eq!(v, Some(0.0), "check {check} counted {o}");
            }
        }
        let success = sample(
            &m,
            "app_probe_success",
            &[("prober", "p1"), ("region", "us-east-1"), ("check", check)],
        );
        assert_eq!(
            success,
            Some(f64::from(u8::from(result == "success"))),
            "{check}"
        );
    }
    // A timed-out check is cut at its timeout, not at the slow answer.
    let m = e.scrape().await;
    let sum = sample(
        &m,
        "app_probe_duration_seconds_sum",
        &[("prober", "p1"), ("region", "us-east-1"), ("check", "slow")],
    )
    .unwrap();
    let count = sample(
        &m,
        "app_probe_duration_seconds_count",
        &[("prober", "p1"), ("region", "us-east-1"), ("check", "slow")],
    )
    .unwrap();
    assert!(
        sum / count < 0.5,
        "slow check took {} s on average",
        sum / count
    );
}
