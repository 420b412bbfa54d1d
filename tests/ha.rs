//! More than one responder: the DynamoDB state store with a lease, replicas receiving every
//! delivery, kill -9 of the acting replica between steps, an unreachable state store, and the
//! Alertmanager sequences and parser limits of the fault campaign.

use std::time::{Duration, Instant};

use axum::http::Method;
use fake_digitalocean::Fault;
use serde_json::json;
use testkit::stack::*;
use testkit::{sample, wait_until, Link};

const T0: &str = "2026-11-26T05:49:00.000Z";

fn ha(replicas: usize) -> Knobs {
    Knobs {
        replicas,
        lease: "3s",
        step_deadline: "20s",
        ..Knobs::default()
    }
}

fn assert_moved_to_west(s: &Stack) {
    let lb = s.fake.load_balancer("lb-droplets").unwrap();
    let mut ids: Vec<u64> = lb["droplet_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, vec![201, 202]);
    assert_eq!(s.fake.load_balancer("lb-tag").unwrap()["tag"], "wp-west");
    assert_eq!(
        s.fake.load_balancer("lb-global").unwrap()["glb_settings"]["region_priorities"],
        json!({"sfo3": 1, "nyc1": 2})
    );
    assert_eq!(
        s.fake.record("example.com", 1001).unwrap()["data"],
        "192.0.2.20"
    );
    assert_eq!(s.env_value().as_deref(), Some(WEST));
}

async fn post_to(s: &Stack, i: usize, body: &str) -> u16 {
    s.post_to(i, "/alerts", body).await.0
}

#[tokio::test]
async fn two_or_three_replicas_receiving_every_delivery_make_exactly_one_transition() {
    for n in [2, 3] {
        every_replica_gets_every_delivery(n).await;
    }
}

async fn every_replica_gets_every_delivery(n: usize) {
    let s = Stack::start(ha(n)).await;
    let leader = s.leader().await;
    let roles = s.roles().await;
    assert_eq!(
        roles.iter().filter(|(_, r)| r == "ready: follower").count(),
        n - 1,
        "{roles:?}"
    );
    let body = alert_body(EAST, true, T0);
    // Alertmanager (an HA pair) sends every notification to every replica, repeatedly.
    let mut sends = Vec::new();
    for _ in 0..10 {
        for i in 0..n {
            let (http, base, body) = (s.http.clone(), s.base_of(i), body.clone());
            sends.push(tokio::spawn(async move {
                http.post(format!("{base}/alerts"))
                    .bearer_auth(WEBHOOK_TOKEN)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            }));
        }
    }
    for h in sends {
        assert_eq!(h.await.unwrap(), 200);
    }
    s.wait_steady_in(WEST, Duration::from_secs(30)).await;
    assert_moved_to_west(&s);
    for i in 0..n {
        let st = s.state_of(i).await;
        assert_eq!(
            st["role"],
            if i == leader { "leader" } else { "follower" },
            "{n} replicas"
        );
    }
    // Every replica's view converges on the one transition.
    wait_until(
        Duration::from_secs(5),
        "followers to see the transition",
        || async {
            let mut all = true;
            for i in 0..n {
                let st = s.state_of(i).await;
                all &= st["epoch"] == 1 && st["transitions"].as_array().unwrap().len() == 1;
            }
            all
        },
    )
    .await;
    let puts = s
        .fake
        .changes()
        .iter()
        .filter(|c| c.method == "PUT" && c.path.ends_with("lb-tag"))
        .count();
    assert_eq!(puts, 1, "{n} replicas");
    assert_eq!(s.reloads().len(), 1, "{n} replicas");
    let m = reqwest::get(format!("{}/metrics", s.base_of(leader)))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(sample(&m, "failover_leader", &[]), Some(1.0));
    s.assert_no_secrets();
}

/// Pause points: the path of the first request of each step after app_config.
const PAUSES: [(&str, usize); 4] = [
    ("/v2/load_balancers/lb-droplets", 1),
    ("/v2/load_balancers/lb-tag", 2),
    ("/v2/load_balancers/lb-global", 3),
    ("/v2/domains/example.com/records/1001", 4),
];

async fn kill_leader_while_paused(s: &mut Stack, done_before: usize) -> usize {
    let leader = s.leader().await;
    assert_eq!(post_to(s, leader, &alert_body(EAST, true, T0)).await, 200);
    wait_until(
        Duration::from_secs(20),
        "the plan to reach the pause",
        || async {
            let st = s.state().await;
            let steps = st["plan"]["steps"].as_array().cloned().unwrap_or_default();
            steps.len() == 5
                && (0..done_before).all(|k| steps[k]["done"] == true)
                && steps[done_before]["done"] == false
                && st["plan"]["status"] == "running"
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await; // let the paused request reach the fake
    s.kill_replica(leader).await;
    leader
}

#[tokio::test]
async fn kill_9_of_the_acting_replica_between_any_two_steps_lets_another_finish_the_plan() {
    // Inside the app-config step (its reload command is slow the first time).
    {
        let mut s = Stack::start(Knobs {
            slow_first_reload: true,
            ..ha(2)
        })
        .await;
        let dead = kill_leader_while_paused(&mut s, 0).await;
        let killed = Instant::now();
        s.wait_steady_in(WEST, Duration::from_secs(30)).await;
        println!(
            "app_config: plan finished {:.1} s after the kill",
            killed.elapsed().as_secs_f64()
        );
        assert_moved_to_west(&s);
        assert_eq!(s.leader().await, 1 - dead);
        let st = s.state().await;
        assert_eq!(
            (
                st["epoch"].as_u64(),
                st["transitions"].as_array().unwrap().len()
            ),
            (Some(1), 1)
        );
    }
    for (path, step) in PAUSES {
        let mut s = Stack::start(ha(2)).await;
        s.fake.inject_at(
            Fault::Slow(Duration::from_secs(8)),
            1,
            Some(Method::GET),
            Some(path),
        );
        let dead = kill_leader_while_paused(&mut s, step).await;
        let killed = Instant::now();
        s.wait_steady_in(WEST, Duration::from_secs(30)).await;
        println!(
            "step {step}: plan finished {:.1} s after the kill",
            killed.elapsed().as_secs_f64()
        );
        assert_moved_to_west(&s);
        assert_eq!(s.leader().await, 1 - dead, "step {step}");
        // Steps finished before the kill were not applied again.
        assert_eq!(
            s.reloads().len(),
            1,
            "step {step}: the app-config step ran twice"
        );
        let posts = s
            .fake
            .changes()
            .iter()
            .filter(|c| c.method == "POST")
            .count();
        assert_eq!(posts, 1, "step {step}: droplets were added twice");
        let st = s.state().await;
        assert_eq!(
            (
                st["epoch"].as_u64(),
                st["transitions"].as_array().unwrap().len()
            ),
            (Some(1), 1),
            "step {step}"
        );
        assert!(
            s.logs().contains("resuming an unfinished plan"),
            "step {step}"
        );
        s.assert_no_secrets();
    }
}

/// The lease's safety margin in the test stack: DigitalOcean request timeout 1 s +
/// `max_clock_skew` 200 ms.
const MARGIN_MS: u64 = 1_200;
/// Between the fence check and the request's arrival at the fake on loopback, on a loaded machine.
const SEND_SLACK_MS: u64 = 250;

#[tokio::test]
async fn a_leader_cut_off_from_the_state_store_sends_nothing_after_its_lease_and_the_other_finishes(
) {
    let s = Stack::start(Knobs {
        store_proxies: true,
        ..ha(2)
    })
    .await;
    let c = s.cut_off_the_leader(T0).await;
    println!(
        "cut-off to the new leader's first change: {} ms; the old leader's last request {} ms before its lease's expiry",
        c.first_new_change_ms.saturating_sub(c.cut_ms),
        c.old_expiry_ms as i64 - c.last_old_ms as i64
    );
    assert!(
        c.last_old_ms <= c.old_expiry_ms - MARGIN_MS + SEND_SLACK_MS,
        "the old leader sent a request {} ms after its lease's expiry minus the margin",
        c.last_old_ms as i64 - (c.old_expiry_ms - MARGIN_MS) as i64
    );
    let log = s.fake.log();
    // Every request names its replica; every change the plan's epoch (the start-up reads of a
    // first start say epoch 0).
    assert!(log.iter().all(|l| l.replica.is_some()));
    assert!(log
        .iter()
        .filter(|l| l.method != "GET")
        .all(|l| l.epoch == Some(1)
            && l.user_agent
                .as_deref()
                .is_some_and(|a| a.contains("epoch 1"))));
    // The load balancer's final state is the new leader's, from its one accepted PUT.
    let puts: Vec<_> = s
        .fake
        .changes()
        .into_iter()
        .filter(|c| c.method == "PUT" && c.path.ends_with("lb-tag"))
        .collect();
    assert_eq!(puts.len(), 1, "{puts:?}");
    assert_eq!(
        puts[0].replica.as_deref(),
        Some(format!("r{}", c.new).as_str())
    );
    assert_moved_to_west(&s);
    s.assert_no_secrets();
}

#[tokio::test]
async fn sigterm_lets_the_step_in_flight_finish_before_the_lease_is_handed_over() {
    // The first reload command takes 4 s: the leader is inside the app-config step.
    let mut s = Stack::start(Knobs {
        slow_first_reload: true,
        ..ha(2)
    })
    .await;
    let old = s.leader().await;
    let new = 1 - old;
    assert_eq!(post_to(&s, old, &alert_body(EAST, true, T0)).await, 200);
    let marker = s.path("slowed");
    wait_until(
        Duration::from_secs(20),
        "the slow reload to start",
        || async { marker.exists() },
    )
    .await;
    let mut child = s.replicas[old].child.take().unwrap();
    let pid = child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("the old leader exits")
        .unwrap();
    assert!(status.success(), "{status}");
    wait_until(
        Duration::from_secs(30),
        "the new leader to finish",
        || async {
            let st = s.state_of(new).await;
            st["active_region"] == WEST && st["plan"].is_null()
        },
    )
    .await;
    // The step in flight was finished and recorded by the old leader before it let the lease go:
    // the new leader did not run it again.
    let old_log = std::fs::read_to_string(s.path(&format!("responder-{old}-1.log"))).unwrap();
    if s.reloads().len() != 1 {
        println!(
            "{}",
            std::fs::read_to_string(s.path(&format!("responder-{new}-1.log"))).unwrap()
        );
    }
    assert_eq!(s.reloads(), vec![format!("{WEST} epoch 1")]);
    let done = old_log
        .find("step done")
        .expect("the old leader finished its step");
    let released = old_log
        .find("lease released on shutdown")
        .expect("the old leader released the lease");
    assert!(
        done < released,
        "the lease was released before the step ended"
    );
    assert_moved_to_west(&s);
}

#[tokio::test]
async fn a_slow_state_store_gets_503s_that_alertmanager_retries_and_each_delivery_counts_once() {
    let s = Stack::start(Knobs {
        store_proxies: true,
        request_timeout: "1s",
        ..ha(2)
    })
    .await;
    // Replica 0's path to the state store answers after 1 s: each save times out (300 ms), and
    // deliveries queue for the state behind each other past the request timeout.
    s.proxies[0].set(Link::Slow(Duration::from_secs(1)));
    let bodies: Vec<String> = (0..8)
        .map(|i| alert_body_with(EAST, &format!("fp-east-{i}"), true, T0))
        .collect();
    let mut sends = Vec::new();
    for b in &bodies {
        let (http, base, b) = (s.http.clone(), s.base_of(0), b.clone());
        sends.push(tokio::spawn(async move {
            let r = http
                .post(format!("{base}/alerts"))
                .bearer_auth(WEBHOOK_TOKEN)
                .header("content-type", "application/json")
                .body(b)
                .send()
                .await
                .unwrap();
            let retry = r.headers().get("retry-after").is_some();
            (r.status().as_u16(), retry)
        }));
    }
    for h in sends {
        let (status, retry_after) = h.await.unwrap();
        assert_eq!(status, 503, "a refusal Alertmanager would not retry");
        assert!(retry_after, "a 503 without Retry-After");
    }
    let m = reqwest::get(format!("{}/metrics", s.base_of(0)))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let refused = ["busy", "unavailable"]
        .iter()
        .map(|r| sample(&m, "failover_webhook_requests_total", &[("result", r)]).unwrap())
        .sum::<f64>();
    assert_eq!(refused, 8.0, "every refusal counted under its result");
    // Alertmanager retries once the store answers again: every delivery is recorded once, and
    // the one region-down they report moves traffic once.
    s.proxies[0].set(Link::Up);
    for b in &bodies {
        wait_until(
            Duration::from_secs(10),
            "a retried delivery to be accepted",
            || async { post_to(&s, 0, b).await == 200 },
        )
        .await;
    }
    wait_until(Duration::from_secs(30), "traffic to move once", || async {
        let st = s.state_of(1).await;
        st["active_region"] == WEST && st["plan"].is_null()
    })
    .await;
    let st = s.state().await;
    assert_eq!(st["epoch"], 1);
    assert_eq!(st["transitions"].as_array().unwrap().len(), 1);
    assert_moved_to_west(&s);
}

#[tokio::test]
async fn a_flood_of_distinct_alerts_keeps_the_stored_item_bounded_and_the_real_alert_moves_once() {
    let s = Stack::start(ha(2)).await;
    let leader = s.leader().await;
    let took = s.flood(leader, WEST, T0).await;
    println!("flood bodies answered in {took:?} ms");
    let c = testkit::client("eu-west-1", &s.state_store.as_ref().unwrap().endpoint()).await;
    let item = c
        .get_item()
        .table_name(STATE_TABLE)
        .key(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S("state".into()),
        )
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    let size = item["state"].as_s().unwrap().len();
    println!("state item after the flood: {size} bytes");
    assert!(size < 128 * 1024, "{size} bytes");
    let st = s.state().await;
    assert_eq!(
        st["regions"][WEST]["down"], false,
        "the resolved flood left west down"
    );
    assert_eq!(post_to(&s, leader, &alert_body(EAST, true, T0)).await, 200);
    s.wait_steady_in(WEST, Duration::from_secs(30)).await;
    let st = s.state().await;
    assert_eq!(st["epoch"], 1);
    assert_eq!(st["transitions"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn an_unreachable_state_store_in_the_middle_of_a_plan_stops_every_replica() {
    let mut s = Stack::start(ha(2)).await;
    // The tag step's GET keeps timing out (1 s request timeout) for about 4.5 s, then answers.
    s.fake.inject_at(
        Fault::Slow(Duration::from_millis(1500)),
        4,
        Some(Method::GET),
        Some("/v2/load_balancers/lb-tag"),
    );
    let leader = s.leader().await;
    assert_eq!(post_to(&s, leader, &alert_body(EAST, true, T0)).await, 200);
    wait_until(
        Duration::from_secs(20),
        "the plan to reach the tag load balancer",
        || async { s.state().await["plan"]["steps"][1]["done"] == true },
    )
    .await;
    let before = s.fake.changes().len();
    s.state_store.as_mut().unwrap().stop().await;
    // When the GET finally answers, the lease has lapsed unrenewed, so the PUT that would
    // follow is fenced off. Nobody can take the lease either.
    wait_until(
        Duration::from_secs(15),
        "both replicas to stand down",
        || async {
            let roles = s.roles().await;
            roles.len() == 2 && roles.iter().all(|(_, r)| r == "ready: follower")
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await; // an observation window: nothing may change
    if s.fake.changes().len() != before {
        for l in s
            .logs()
            .lines()
            .filter(|l| l.contains("lease") || l.contains("step") || l.contains("leader"))
        {
            println!("{l}");
        }
    }
    assert_eq!(
        s.fake.changes().len(),
        before,
        "a side effect happened without the lease: {:?}",
        s.fake.changes()
    );
    assert_eq!(s.fake.load_balancer("lb-tag").unwrap()["tag"], "wp-east");
    // Webhooks cannot be recorded: 503, so Alertmanager retries.
    assert_eq!(post_to(&s, 0, &alert_body(WEST, true, T0)).await, 503);
    for i in 0..2 {
        let m = reqwest::get(format!("{}/metrics", s.base_of(i)))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(sample(&m, "failover_leader", &[]), Some(0.0), "replica {i}");
        assert!(
            sample(
                &m,
                "failover_state_store_errors_total",
                &[("operation", "lease")]
            )
            .unwrap()
                > 0.0
        );
    }
    let logs = s.logs();
    assert!(logs.contains("cannot renew the lease"));
    assert!(
        logs.contains("no longer the leader") || logs.contains("may no longer act"),
        "the fence did not report"
    );
    s.assert_no_secrets();
}

#[tokio::test]
async fn a_plan_that_fails_past_the_deadline_says_what_is_done_and_a_retry_finishes_it() {
    let s = Stack::start(Knobs {
        step_deadline: "2s",
        ..Knobs::default()
    })
    .await;
    s.fake.inject_at(
        Fault::Status(503),
        10_000,
        Some(Method::PATCH),
        Some("/records/1001"),
    );
    assert_eq!(s.alert(&alert_body(EAST, true, T0)).await.0, 200);
    wait_until(
        Duration::from_secs(20),
        "the plan to fail at the DNS step",
        || async { s.state().await["phase"] == "failed" },
    )
    .await;
    let st = s.state().await;
    let steps = st["plan"]["steps"].as_array().unwrap();
    let done: Vec<bool> = steps.iter().map(|x| x["done"] == true).collect();
    assert_eq!(done, vec![true, true, true, true, false]);
    assert!(
        st["plan"]["last_error"]
            .as_str()
            .unwrap()
            .contains("dns:example.com/1001"),
        "{st}"
    );
    wait_until(Duration::from_secs(5), "a FAILED notice", || async {
        !s.inbox.titled("FAILED").is_empty()
    })
    .await;
    let failed = &s.inbox.titled("FAILED")[0];
    assert!(
        failed["text"]
            .as_str()
            .unwrap()
            .contains("Not done yet: dns:example.com/1001"),
        "{failed}"
    );
    // DigitalOcean recovers: the automatic retry (backoff 1 s) finishes the plan.
    s.fake.clear_faults();
    s.wait_steady_in(WEST, Duration::from_secs(30)).await;
    assert_eq!(
        s.fake.record("example.com", 1001).unwrap()["data"],
        "192.0.2.20"
    );
    assert_eq!(
        s.reloads().len(),
        1,
        "the finished app-config step ran again"
    );
    // The notice follows the stored completion; under load it can arrive a moment later.
    wait_until(
        Duration::from_secs(10),
        "the completed-after-a-retry notice",
        || async { !s.inbox.titled("after a retry").is_empty() },
    )
    .await;
}

#[tokio::test]
async fn alertmanager_sequences_move_traffic_only_when_they_should() {
    let s = Stack::start(Knobs::default()).await;
    // A grouped, truncated payload: west (not the active region) firing, an unknown region, and
    // an unrelated alert. West is marked down; nothing moves.
    let grouped = json!({
        "receiver": "dynamo-failover", "status": "firing", "version": "4", "groupKey": "{}:{}", "truncatedAlerts": 3,
        "alerts": [
            {"status": "firing", "labels": {"alertname": "DynamoDBRegionUnavailable", "region": WEST}, "startsAt": T0, "fingerprint": "w"},
            {"status": "firing", "labels": {"alertname": "DynamoDBRegionUnavailable", "region": "ap-south-9"}, "startsAt": T0, "fingerprint": "x"},
            {"status": "firing", "labels": {"alertname": "DynamoDBRegionDegraded", "region": EAST}, "startsAt": T0, "fingerprint": "y"}
        ]
    });
    let (code, body) = s.alert(&grouped.to_string()).await;
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (
            v["accepted"].as_u64(),
            v["ignored"].as_array().unwrap().len(),
            v["truncated"].as_u64()
        ),
        (Some(1), 2, Some(3))
    );
    let st = s.state().await;
    assert_eq!(
        (st["epoch"].as_u64(), st["regions"][WEST]["down"].as_bool()),
        (Some(0), Some(true))
    );
    // Home goes down while the only other region is down: blocked, loudly.
    assert_eq!(s.alert(&alert_body(EAST, true, T0)).await.0, 200);
    assert_eq!(s.state().await["phase"], "blocked");
    // West recovers: now the move happens.
    let west_back = json!({"receiver": "r", "status": "resolved", "version": "4", "groupKey": "{}:{}", "truncatedAlerts": 0,
        "alerts": [{"status": "resolved", "labels": {"alertname": "DynamoDBRegionUnavailable", "region": WEST}, "startsAt": T0, "endsAt": T0, "fingerprint": "w"}]});
    assert_eq!(s.alert(&west_back.to_string()).await.0, 200);
    s.wait_steady_in(WEST, Duration::from_secs(20)).await;
    // Repeats at repeat_interval change nothing.
    for _ in 0..5 {
        assert_eq!(s.alert(&alert_body(EAST, true, T0)).await.0, 200);
    }
    let st = s.state().await;
    assert_eq!(
        (
            st["epoch"].as_u64(),
            st["transitions"].as_array().unwrap().len()
        ),
        (Some(1), 1)
    );
}

#[tokio::test]
async fn a_slow_drip_body_is_cut_off_and_changes_nothing() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = Stack::start(Knobs {
        request_timeout: "1s",
        ..Knobs::default()
    })
    .await;
    let mut conn = tokio::net::TcpStream::connect(format!("127.0.0.1:{}", s.port))
        .await
        .unwrap();
    let head = format!(
        "POST /alerts HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {WEBHOOK_TOKEN}\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n{{\"version\""
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let mut answer = String::new();
    let mut buf = [0u8; 1024];
    // Drip one byte every 200 ms; the responder must give up within its 1 s request timeout.
    loop {
        tokio::select! {
            n = conn.read(&mut buf) => {
                let n = n.unwrap_or(0);
                answer.push_str(&String::from_utf8_lossy(&buf[..n]));
                break;
            }
            _ = tokio::time::sleep(Duration::from_millis(200)) => {
                if conn.write_all(b" ").await.is_err() { break; }
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the slow body was never cut off"
        );
    }
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(s.state().await["epoch"], 0);
}

#[tokio::test]
async fn check_config_checks_that_the_state_table_can_hold_the_lease() {
    let s = Stack::start(ha(2)).await;
    let (ok, out) = s.cli(&["check-config"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("can hold the lease") && out.contains("backend = \"dynamodb\""),
        "{out}"
    );
    assert!(
        !out.contains(WEBHOOK_TOKEN) && out.contains("[redacted]"),
        "{out}"
    );
    let cfg = std::fs::read_to_string(s.path("config.toml")).unwrap();
    std::fs::write(
        s.path("config.toml"),
        cfg.replace(STATE_TABLE, "no-such-table"),
    )
    .unwrap();
    let (ok, out) = s.cli(&["check-config"]);
    assert!(!ok, "{out}");
    assert!(out.contains("responder.state.table"), "{out}");
}

/// Sends `body` to every replica, as an Alertmanager HA pair does.
async fn broadcast(s: &Stack, body: &str) {
    for i in 0..s.replicas.len() {
        assert_eq!(post_to(s, i, body).await, 200);
    }
}

#[tokio::test]
async fn a_home_region_flapping_for_a_minute_is_failed_over_from_once_and_not_back_until_stable() {
    let s = Stack::start(ha(2)).await; // stabilisation 3 s, minimum interval 1 s
    broadcast(&s, &alert_body(EAST, true, "2026-11-26T05:00:00.000Z")).await;
    s.wait_steady_in(WEST, Duration::from_secs(30)).await;
    // One minute of down/up cycles shorter than the stabilisation window: 20 cycles of 3 s
    // (1.5 s up, 1.5 s down), each a new alert episode with its own startsAt.
    let flapping_until = Instant::now() + Duration::from_secs(60);
    let mut i = 0u32;
    while Instant::now() < flapping_until {
        let prev = format!("2026-11-26T06:{:02}:{:02}.000Z", i / 60, i % 60);
        let next = format!("2026-11-26T06:{:02}:{:02}.000Z", (i + 1) / 60, (i + 1) % 60);
        let starts = if i == 0 {
            "2026-11-26T05:00:00.000Z".to_string()
        } else {
            prev
        };
        broadcast(&s, &alert_body(EAST, false, &starts)).await;
        tokio::time::sleep(Duration::from_millis(1500)).await; // the up half of a flap
        broadcast(&s, &alert_body(EAST, true, &next)).await;
        tokio::time::sleep(Duration::from_millis(1500)).await; // the down half
        let st = s.state().await;
        assert_eq!(
            st["active_region"], WEST,
            "failed back while home flaps (cycle {i})"
        );
        assert!(
            st["plan"].is_null(),
            "a plan started while home flaps (cycle {i}): {st}"
        );
        i += 1;
    }
    // Home recovers for good: one failback, after the window.
    let last = format!("2026-11-26T06:{:02}:{:02}.000Z", i / 60, i % 60);
    let resolved = Instant::now();
    broadcast(&s, &alert_body(EAST, false, &last)).await;
    s.wait_steady_in(EAST, Duration::from_secs(30)).await;
    assert!(resolved.elapsed() >= Duration::from_secs(3));
    let st = s.state().await;
    assert_eq!(st["transitions"].as_array().unwrap().len(), 2, "{st}");
    s.assert_no_secrets();
}
