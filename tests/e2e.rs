//! The whole chain for real: three exporter processes (three probers) -> Prometheus (the fast
//! profile derived from prometheus/) -> Alertmanager (derived from alertmanager/) -> the
//! responder's webhook -> the fake DigitalOcean API and the application's env file.

use std::time::{Duration, Instant};

use serde_json::Value;
use testkit::chain::{Chain, ChainOpts};
use testkit::stack::*;
use testkit::*;

/// The fast profile's fault-to-verified-move budget: probe interval 1 s + scrape 1 s + evaluation
/// 1 s + the 3 s window + Alertmanager and the responder, with room for a loaded 2-core machine.
const MOVE_BUDGET: Duration = Duration::from_secs(12);

/// How far behind the replication stand-in copies items between the regions.
const REPLICATION_LAG: Duration = Duration::from_secs(3);

async fn steady(s: &Stack) -> Value {
    s.state().await
}

#[tokio::test]
async fn a_dead_home_region_fails_over_once_and_back_once_through_prometheus_and_alertmanager() {
    // The application too: one stand-in per region reconfigured by its agent, users writing
    // where DNS points, and replication between the regions 3 s behind.
    let mut c = Chain::start_with(ChainOpts {
        knobs: Knobs {
            agents: vec![("wp-east", EAST), ("wp-west", WEST)],
            ..Knobs::default()
        },
        users: Some(REPLICATION_LAG),
        ..ChainOpts::default()
    })
    .await;
    let s = &c.stack;
    assert_eq!(s.active_region().await, EAST);
    let users = c.users.as_ref().unwrap();
    // The lag is known once a canary has waited it out: before that the probers' figure is
    // still climbing (the first canary's age), and a notice can only say what was measured.
    // Waited on by how long it has been measured, not by its value (a prober whose read follows
    // its write by a fraction of a second may never read more than the lag less that fraction):
    // the lag, two slow passes of the stand-in, a probe interval and one more second, at one
    // sample a second.
    wait_until(
        Duration::from_secs(30),
        "users' writes to succeed in us-east-1 and the replication lag to be measured",
        || async {
            users
                .first_success_after(std::time::SystemTime::now() - Duration::from_secs(1))
                .is_some_and(|w| w.wrote.as_deref() == Some(EAST))
                && c.value(&format!(
                    "count_over_time(dynamodb_replication_lag_seconds{{source_region=\"{EAST}\"}}[20s]) >= {}",
                    REPLICATION_LAG.as_secs() + 7
                ))
                .await
                .is_some()
        },
    )
    .await;

    let fault = Instant::now();
    let fault_at = std::time::SystemTime::now();
    c.stack.east.stop().await;
    let s = &c.stack;
    let users = c.users.as_ref().unwrap();
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
    // What users see: their writes succeed again, in us-west-2, within the budget.
    let first = users
        .recovered_after(fault_at, MOVE_BUDGET)
        .await
        .expect("a user's write succeeded again within the budget");
    let recovered = first.at.duration_since(fault_at).unwrap();
    println!(
        "fault to first successful user write: {:.2} s",
        recovered.as_secs_f64()
    );
    assert_eq!(first.wrote.as_deref(), Some(WEST), "{first:?}");
    assert!(recovered <= MOVE_BUDGET, "{recovered:?}");
    // Users failed in between: the fault was real to them.
    let failed = users
        .writes()
        .iter()
        .filter(|w| w.at >= fault_at && w.at < first.at && w.wrote.is_none())
        .count();
    assert!(
        failed > 0,
        "no user write failed between the fault and the move"
    );

    // Writes lost: acknowledged by us-east-1, never copied to us-west-2; they are the last
    // REPLICATION_LAG or so before the fault, and the notice's data at risk says as much.
    let acked_east: Vec<_> = users
        .writes()
        .into_iter()
        .filter(|w| w.wrote.as_deref() == Some(EAST))
        .collect();
    let lost = testkit::users::missing_in(&s.west, WEST, &acked_east).await;
    let oldest_lost = acked_east
        .iter()
        .filter(|w| lost.contains(&w.id))
        .map(|w| w.at)
        .min()
        .expect("the writes of the last seconds before the fault were lost");
    let window = fault_at.duration_since(oldest_lost).unwrap().as_secs_f64();
    wait_until(Duration::from_secs(5), "a completion notice", || async {
        !s.inbox.titled("completed").is_empty()
    })
    .await;
    let notice = &s.inbox.titled("completed")[0];
    let at_risk = notice["fields"]["replication_lag_seconds"]
        .as_f64()
        .unwrap_or_else(|| panic!("no data at risk in {notice}"));
    // The stand-in's own slowness: a canary waits up to one pass to be seen and one more to be
    // copied, which the probers measure as lag (0.1 to 0.4 s here, up to 1 s on a loaded 2-core
    // machine). Only the passes the notice's figure looks at count: those of the 20 s before
    // the fault, and the lag before them.
    let pass = c
        .replicator
        .as_ref()
        .unwrap()
        .slowest_pass_from(
            EAST,
            fault - Duration::from_secs(20) - REPLICATION_LAG,
            fault,
        )
        .as_secs_f64();
    println!(
        "writes lost: {} (acknowledged by {EAST} in the last {window:.2} s before the fault); data at risk in the notice: {at_risk:.2} s; slowest replication pass {pass:.2} s",
        lost.len()
    );
    // The notice bounds the loss from above, by no more than one canary interval (1 s here, the
    // lag's resolution), two passes of the replication stand-in and one user interval.
    assert!(
        at_risk + 0.3 >= window && at_risk <= window + 1.0 + 2.0 * pass + 0.3,
        "lost {window:.2} s of writes, the notice claimed {at_risk:.2} s (slowest pass {pass:.2} s)"
    );
    // Only the writes of the last REPLICATION_LAG before the fault were lost (plus one pass of
    // the replication stand-in and one user interval): nothing older went missing.
    assert!(
        window <= REPLICATION_LAG.as_secs_f64() + pass + 0.2,
        "writes {window:.2} s older than the fault were lost"
    );
    assert_eq!(s.active_region().await, WEST);
    assert_eq!(s.env_value().as_deref(), Some(WEST));
    assert_eq!(s.fake.load_balancer("lb-tag").unwrap()["tag"], "wp-west");
    assert_eq!(
        s.fake.record("example.com", 1001).unwrap()["data"],
        "192.0.2.20"
    );
    let st = steady(s).await;
    assert_eq!(st["transitions"][0]["trigger"], "alert");
    for name in ["wp-east", "wp-west"] {
        assert_eq!(s.agent_env(name).0.as_deref(), Some(WEST), "{name}");
    }
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

    // Readiness, on the same running stack: a load balancer deleted under it pages through
    // Prometheus and Alertmanager within the fast window, and resolves once it is back.
    assert!(!alertmanager_has(&c, "FailoverPathBroken").await);
    let saved = c.stack.fake.load_balancer("lb-global").unwrap();
    c.stack.fake.delete_load_balancer("lb-global");
    let broke = Instant::now();
    wait_until(
        Duration::from_secs(20),
        "FailoverPathBroken for lb-global at Alertmanager",
        || async { alertmanager_has(&c, "FailoverPathBroken").await },
    )
    .await;
    println!(
        "load balancer deleted to FailoverPathBroken at Alertmanager: {:.1} s",
        broke.elapsed().as_secs_f64()
    );
    c.stack.fake.put_load_balancer(saved);
    wait_until(
        Duration::from_secs(20),
        "FailoverPathBroken to resolve",
        || async {
            !alertmanager_has(&c, "FailoverPathBroken").await
                && c.query("ALERTS{alertname=\"FailoverPathBroken\"}")
                    .await
                    .is_empty()
        },
    )
    .await;
    assert!(c.stack.fake.changes().is_empty(), "readiness only reads");
}

/// Whether Alertmanager holds an active `name` alert for lb-global.
async fn alertmanager_has(c: &Chain, name: &str) -> bool {
    let alerts: Value = reqwest::Client::new()
        .get(format!("{}/api/v2/alerts", c.alertmanager))
        .query(&[("filter", format!("alertname=\"{name}\""))])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    alerts
        .as_array()
        .into_iter()
        .flatten()
        .any(|a| a["labels"]["target"] == "lb-global" && a["status"]["state"] != "resolved")
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
