//! The whole chain for real: three exporter processes (three probers) -> Prometheus (the fast
//! profile derived from prometheus/) -> Alertmanager (derived from alertmanager/) -> the
//! responder's webhook -> the fake DigitalOcean API and the application's env file.

use std::time::{Duration, Instant};

use serde_json::Value;
use testkit::chain::Chain;
use testkit::stack::*;
use testkit::*;

/// The fast profile's fault-to-verified-move budget: probe interval 1 s + scrape 1 s + evaluation
/// 1 s + the 3 s window + Alertmanager and the responder, with room for a loaded 2-core machine.
const MOVE_BUDGET: Duration = Duration::from_secs(12);

async fn steady(s: &Stack) -> Value {
    s.state().await
}

#[tokio::test]
async fn a_dead_home_region_fails_over_once_and_back_once_through_prometheus_and_alertmanager() {
    let mut c = Chain::start(&[], false).await;
    let s = &c.stack;
    assert_eq!(s.active_region().await, EAST);

    let fault = Instant::now();
    c.stack.east.stop().await;
    let s = &c.stack;
    wait_until(
        MOVE_BUDGET,
        "the verified move to us-west-2 within the budget",
        || async {
            let st = steady(s).await;
            st["active_region"] == WEST && st["plan"].is_null()
        },
    )
    .await;
    let moved = fault.elapsed();
    println!("fault to verified move: {:.2} s", moved.as_secs_f64());
    assert_eq!(s.active_region().await, WEST);
    assert_eq!(s.env_value().as_deref(), Some(WEST));
    assert_eq!(s.fake.load_balancer("lb-tag").unwrap()["tag"], "wp-west");
    assert_eq!(
        s.fake.record("example.com", 1001).unwrap()["data"],
        "192.0.2.20"
    );
    wait_until(Duration::from_secs(5), "a completion notice", || async {
        !s.inbox.titled("completed").is_empty()
    })
    .await;
    let st = steady(s).await;
    assert_eq!(st["transitions"][0]["trigger"], "alert");
    assert!(c.log("alertmanager").contains("level=") || !c.log("alertmanager").is_empty());

    // The region comes back: failback once, after the stabilisation window.
    let back = Instant::now();
    c.stack.east.restart().await;
    let s = &c.stack;
    create_table(&client(EAST, &s.east.endpoint()).await, TABLE, true).await;
    wait_until(
        Duration::from_secs(40),
        "the failback to us-east-1",
        || async {
            let st = steady(s).await;
            st["active_region"] == EAST && st["plan"].is_null()
        },
    )
    .await;
    assert!(
        back.elapsed() >= Duration::from_secs(3),
        "failed back before the stabilisation window"
    );
    assert_eq!(s.env_value().as_deref(), Some(EAST));
    assert_eq!(
        s.fake.record("example.com", 1001).unwrap()["data"],
        "192.0.2.10"
    );
    // Nothing else happens afterwards.
    tokio::time::sleep(Duration::from_secs(4)).await; // an observation window for "no other transition"
    let st = steady(s).await;
    assert_eq!(st["transitions"].as_array().unwrap().len(), 2, "{st}");
    assert_eq!(st["epoch"], 2);

    // Every dashboard panel's query returns data from this Prometheus.
    let dash: Value =
        serde_json::from_str(include_str!("../grafana/dashboards/dynamo-failover.json")).unwrap();
    let mut empty = Vec::new();
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            let q = t["expr"].as_str().unwrap();
            if c.query(q).await.is_empty() {
                empty.push(format!("{}: {q}", p["title"]));
            }
        }
    }
    for a in dash["annotations"]["list"].as_array().unwrap() {
        let q = a["expr"].as_str().unwrap();
        let r = reqwest::Client::new()
            .get(format!("{}/api/v1/query_range", c.prom))
            .query(&[
                ("query", q),
                ("start", &format!("{}", unix_now() - 120)),
                ("end", &format!("{}", unix_now())),
                ("step", "1"),
            ])
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap();
        if r["data"]["result"].as_array().is_none_or(|a| a.is_empty()) {
            empty.push(format!("annotation: {q}"));
        }
    }
    assert!(
        empty.is_empty(),
        "dashboard queries without data:\n{}",
        empty.join("\n")
    );
    c.stack.assert_no_secrets();
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn one_prober_cut_off_from_the_home_region_moves_nothing() {
    let c = Chain::start(&["p3"], false).await;
    // p3 votes failing, the other two do not.
    wait_until(
        Duration::from_secs(20),
        "p3 to vote us-east-1 failing",
        || async {
            c.value("dynamodb:region_prober:failing{prober=\"p3\",region=\"us-east-1\"}")
                .await
                == Some(1.0)
        },
    )
    .await;
    assert_eq!(
        c.value("dynamodb:region:failing_probers{region=\"us-east-1\"}")
            .await,
        Some(1.0)
    );
    // Hold that for well past the 3 s window: no alert, no move.
    let until = Instant::now() + Duration::from_secs(8);
    while Instant::now() < until {
        let alerts = c
            .query("ALERTS{alertname=\"DynamoDBRegionUnavailable\"}")
            .await;
        assert!(alerts.is_empty(), "the region alert went {alerts:?}");
        tokio::time::sleep(Duration::from_millis(500)).await; // sampling cadence of the observation
    }
    let st = c.stack.state().await;
    assert_eq!(
        (st["active_region"].as_str(), st["epoch"].as_u64()),
        (Some(EAST), Some(0))
    );
    assert!(c.stack.fake.changes().is_empty());
}

#[tokio::test]
async fn a_home_region_that_refuses_writes_but_serves_reads_fails_over_once() {
    let c = Chain::start(&[], true).await;
    let s = &c.stack;
    let fault = Instant::now();
    c.gate.as_ref().unwrap().refuse_writes(true);
    wait_until(
        MOVE_BUDGET,
        "the verified move to us-west-2 within the budget",
        || async {
            let st = steady(s).await;
            st["active_region"] == WEST && st["plan"].is_null()
        },
    )
    .await;
    println!(
        "write-only outage to verified move: {:.2} s",
        fault.elapsed().as_secs_f64()
    );
    // Reads kept working the whole time: it was the writes that voted.
    assert_eq!(
        c.value("max(dynamodb:region_prober_operation:failing{region=\"us-east-1\",operation=\"read\"})")
            .await,
        Some(0.0)
    );
    let started = s.inbox.titled("started");
    assert!(
        started.iter().any(|n| n["text"]
            .as_str()
            .is_some_and(|t| t.contains("write failing"))),
        "the notice does not say which operation failed: {started:?}"
    );
    // The writes stay down: nothing else moves.
    tokio::time::sleep(Duration::from_secs(4)).await; // an observation window for "no other transition"
    let st = steady(s).await;
    assert_eq!(st["transitions"].as_array().unwrap().len(), 1, "{st}");
    assert_eq!(st["epoch"], 1);
}
