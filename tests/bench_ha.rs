//! Replica benchmarks (ignored in the normal test run; `scripts/bench/run ha` runs them in
//! release mode and they print their figures):
//! - takeover: kill -9 of the acting replica in the middle of a plan, time until the other
//!   replica resumes the plan; 10 runs, lease 3 s;
//! - storm: 10,000 deliveries of one alert spread over three replicas by 50 concurrent senders.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::Method;
use fake_digitalocean::Fault;
use testkit::stack::*;
use testkit::wait_until;

const T0: &str = "2026-11-26T05:49:00.000Z";

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn unix_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Seconds since the epoch of the first log line of `text` with `message`.
fn logged_at(text: &str, message: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let v: serde_json::Value = serde_json::from_str(l).ok()?;
        if v["message"] != message {
            return None;
        }
        let t = time::OffsetDateTime::parse(
            v["timestamp"].as_str()?,
            &time::format_description::well_known::Rfc3339,
        )
        .ok()?;
        Some(t.unix_timestamp_nanos() as f64 / 1e9)
    })
}

#[tokio::test]
#[ignore = "benchmark: scripts/bench/run ha"]
async fn takeover_after_kill_9_of_the_acting_replica() {
    let runs = 10;
    let mut takeovers = Vec::new();
    for run in 0..runs {
        let mut s = Stack::start(Knobs {
            replicas: 2,
            lease: "3s",
            step_deadline: "20s",
            ..Knobs::default()
        })
        .await;
        s.fake.inject_at(
            Fault::Slow(Duration::from_secs(8)),
            1,
            Some(Method::GET),
            Some("/v2/load_balancers/lb-tag"),
        );
        let leader = s.leader().await;
        let r = s
            .http
            .post(format!("{}/alerts", s.base_of(leader)))
            .bearer_auth(WEBHOOK_TOKEN)
            .header("content-type", "application/json")
            .body(alert_body(EAST, true, T0))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        wait_until(
            Duration::from_secs(20),
            "the plan to pause at the tag step",
            || async { s.state().await["plan"]["steps"][1]["done"] == true },
        )
        .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        s.kill_replica(leader).await;
        let killed = unix_s();
        s.wait_steady_in(WEST, Duration::from_secs(30)).await;
        let other = 1 - leader;
        let log = std::fs::read_to_string(s.path(&format!("responder-{other}-1.log"))).unwrap();
        let resumed =
            logged_at(&log, "resuming an unfinished plan").expect("the survivor resumed the plan");
        let took = resumed - killed;
        println!("run {run}: plan resumed {took:.3} s after kill -9");
        takeovers.push(took);
    }
    takeovers.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!("\n## takeover after kill -9 of the acting replica ({runs} runs, lease 3 s, renewed every 1 s)");
    println!(
        "kill -9 -> plan resumed by the other replica: median {:.2} s, max {:.2} s (floor: under lease + 1 s = 4 s)",
        pct(&takeovers, 0.5),
        takeovers[takeovers.len() - 1]
    );
    assert!(
        takeovers[takeovers.len() - 1] < 4.0,
        "takeover slower than the lease plus 1 s"
    );
}

#[tokio::test]
#[ignore = "benchmark: scripts/bench/run ha"]
async fn webhook_storm_against_three_replicas() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = Stack::start(Knobs {
        replicas: 3,
        lease: "3s",
        niced_stand_ins: std::env::var_os("BENCH_UNNICED").is_none(),
        ..Knobs::default()
    })
    .await;
    s.leader().await;
    let body = alert_body(EAST, true, T0);
    let mut senders = Vec::new();
    let start = std::time::Instant::now();
    for i in 0..50 {
        let port = s.replicas[i % 3].port;
        let request = format!(
            "POST /alerts HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {WEBHOOK_TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        senders.push(tokio::spawn(async move {
            let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap();
            conn.set_nodelay(true).unwrap();
            let mut buf = vec![0u8; 8192];
            let mut lat = Vec::with_capacity(200);
            for _ in 0..200 {
                let t = std::time::Instant::now();
                conn.write_all(request.as_bytes()).await.unwrap();
                let mut have = 0;
                loop {
                    let n = conn.read(&mut buf[have..]).await.unwrap();
                    assert!(n > 0, "connection closed");
                    have += n;
                    let text = String::from_utf8_lossy(&buf[..have]).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let len: usize = text[..end]
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse().unwrap())
                            })
                            .unwrap_or(0);
                        if have >= end + 4 + len {
                            assert!(text.starts_with("HTTP/1.1 200"), "{text}");
                            break;
                        }
                    }
                }
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            lat
        }));
    }
    let mut acks = Vec::new();
    for h in senders {
        acks.extend(h.await.unwrap());
    }
    let wall = start.elapsed();
    acks.sort_by(|a, b| a.partial_cmp(b).unwrap());
    s.wait_steady_in(WEST, Duration::from_secs(30)).await;
    // Followers catch up within a renew interval.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let st = s.state().await;
    let transitions = st["transitions"].as_array().unwrap().len();
    println!(
        "\n## webhook storm against three replicas: {} deliveries from 50 senders in {:.2} s",
        acks.len(),
        wall.as_secs_f64()
    );
    println!(
        "acknowledgement: median {:.2} ms, p99 {:.2} ms, max {:.2} ms (floor: p99 < 10 ms); transitions: {transitions} (must be 1)",
        pct(&acks, 0.5),
        pct(&acks, 0.99),
        acks[acks.len() - 1]
    );
    assert_eq!(transitions, 1);
    assert!(pct(&acks, 0.99) < 10.0);
}

#[tokio::test]
#[ignore = "benchmark: scripts/bench/run ha"]
async fn fenced_takeover_after_the_leader_is_cut_off_from_the_state_store() {
    let mut takeovers = Vec::new();
    let mut before_expiry = Vec::new();
    for _ in 0..10 {
        let s = Stack::start(Knobs {
            replicas: 2,
            lease: "3s",
            step_deadline: "20s",
            store_proxies: true,
            ..Knobs::default()
        })
        .await;
        let c = s.cut_off_the_leader(T0).await;
        takeovers.push(c.first_new_change_ms.saturating_sub(c.cut_ms) as f64);
        before_expiry.push(c.old_expiry_ms as f64 - c.last_old_ms as f64);
    }
    takeovers.sort_by(|a, b| a.partial_cmp(b).unwrap());
    before_expiry.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!("\n## fenced takeover: the leader cut off from the state store while retrying a 503 PUT (lease 3 s, margin 1.2 s), 10 runs");
    println!(
        "cut-off to the new leader's first DigitalOcean change: median {:.0} ms, max {:.0} ms",
        pct(&takeovers, 0.5),
        takeovers[takeovers.len() - 1]
    );
    println!(
        "the old leader's last request before its lease's expiry: min {:.0} ms, median {:.0} ms (must be >= the 1,200 ms margin, less loopback delivery)",
        before_expiry[0],
        pct(&before_expiry, 0.5)
    );
    assert!(before_expiry[0] > 1_150.0);
}

/// The stored state's size: the state file, or the DynamoDB item's state attribute.
async fn stored_size(s: &Stack) -> usize {
    let Some(store) = &s.state_store else {
        return std::fs::metadata(s.path("state.json")).unwrap().len() as usize;
    };
    let c = testkit::client("eu-west-1", &store.endpoint()).await;
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
    item["state"].as_s().unwrap().len()
}

/// Webhook to every step verified for the real region alert, polling the state.
async fn real_alert_to_verified(s: &Stack) -> f64 {
    let started = std::time::Instant::now();
    assert_eq!(s.alert(&alert_body(EAST, true, T0)).await.0, 200);
    wait_until(
        Duration::from_secs(30),
        "the failover to complete",
        || async {
            let st = s.state().await;
            st["active_region"] == WEST && st["plan"].is_null()
        },
    )
    .await;
    started.elapsed().as_secs_f64() * 1000.0
}

#[tokio::test]
#[ignore = "benchmark: scripts/bench/run ha"]
async fn a_flood_of_20000_distinct_alerts() {
    for replicas in [1, 2] {
        let store = if replicas == 1 {
            "state file"
        } else {
            "DynamoDB item"
        };
        let knobs = Knobs {
            replicas,
            lease: "3s",
            ..Knobs::default()
        };
        let clean = Stack::start(knobs.clone()).await;
        let before = stored_size(&clean).await;
        let fresh = real_alert_to_verified(&clean).await;
        drop(clean);
        let s = Stack::start(knobs).await;
        let leader = s.leader().await;
        let took = s.flood(leader, WEST, T0).await;
        let after = stored_size(&s).await;
        let flooded = real_alert_to_verified(&s).await;
        println!("\n## 20,000 distinct alerts in 10 bodies (firing, then resolved), {store}");
        println!(
            "state: {before} bytes before, {after} bytes after the flood (bound: 128 KiB); bodies answered in {} to {} ms",
            took.iter().min().unwrap(),
            took.iter().max().unwrap()
        );
        println!("real alert, webhook to every step verified: {fresh:.0} ms on a fresh state, {flooded:.0} ms after the flood");
        assert!(after < 128 * 1024);
    }
}

/// CPU seconds (user + system) and resident memory of a process, from /proc.
fn cpu_and_rss(pid: u32) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, r)| r)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // After the command name: state is field 0, utime 11, stime 12 (clock ticks of 1/100 s).
    let cpu = (ticks(11) + ticks(12)) / 100.0;
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0);
    (cpu, rss)
}

#[tokio::test]
#[ignore = "benchmark: scripts/bench/run ha"]
async fn agents_following_a_move() {
    for n in [3usize, 50] {
        let names: Vec<&'static str> = (0..n)
            .map(|i| &*Box::leak(format!("wp-{i:02}").into_boxed_str()))
            .collect();
        let mut s = Stack::start(Knobs {
            agents: names.iter().map(|a| (*a, WEST)).collect(),
            no_local_app: true,
            min_interval: "1s",
            stabilisation: "1h",
            auto_failback: false,
            ..Knobs::default()
        })
        .await;
        for a in &names {
            s.spawn_agent(a).await;
        }
        let all_at = |st: &serde_json::Value, epoch: u64| {
            names
                .iter()
                .all(|a| st["agents"][*a]["ack"]["epoch"].as_u64() == Some(epoch))
        };
        wait_until(
            Duration::from_secs(60),
            "every agent at epoch 0",
            || async { all_at(&s.state().await, 0) },
        )
        .await;
        // The responder with n agents watching, idle, for 20 s.
        let pid = s.replicas[0].child.as_ref().unwrap().id().unwrap();
        let (c0, _) = cpu_and_rss(pid);
        tokio::time::sleep(Duration::from_secs(20)).await; // the measurement window
        let (c1, rss) = cpu_and_rss(pid);
        // Failover, then an operator failback, five times: webhook (or request) to the last
        // agent's acknowledgement recorded.
        let mut took = Vec::new();
        for cycle in 0..5u64 {
            let starts = format!("2026-11-29T06:{:02}:00.000Z", cycle);
            let epoch = 2 * cycle + 1;
            let t = std::time::Instant::now();
            assert_eq!(s.alert(&alert_body(EAST, true, &starts)).await.0, 200);
            wait_until(
                Duration::from_secs(60),
                "every agent to apply the failover",
                || async { all_at(&s.state().await, epoch) },
            )
            .await;
            took.push(t.elapsed().as_secs_f64() * 1000.0);
            s.wait_steady_in(WEST, Duration::from_secs(30)).await;
            assert_eq!(s.alert(&alert_body(EAST, false, &starts)).await.0, 200);
            tokio::time::sleep(Duration::from_millis(1100)).await; // the minimum interval
            let t = std::time::Instant::now();
            let (code, _) = s
                .post(
                    "/v1/failback",
                    Some(ADMIN_TOKEN),
                    "application/json",
                    String::new(),
                )
                .await;
            assert_eq!(code, 202);
            wait_until(
                Duration::from_secs(60),
                "every agent to apply the failback",
                || async { all_at(&s.state().await, epoch + 1) },
            )
            .await;
            took.push(t.elapsed().as_secs_f64() * 1000.0);
            s.wait_steady_in(EAST, Duration::from_secs(30)).await;
        }
        took.sort_by(|a, b| a.partial_cmp(b).unwrap());
        println!(
            "\n## {n} agents following a move (10 moves, all agents in the target region required)"
        );
        println!(
            "request to the last agent's acknowledgement: median {:.0} ms, max {:.0} ms",
            pct(&took, 0.5),
            took[took.len() - 1]
        );
        println!(
            "responder with {n} agents watching, idle 20 s: {:.2} % of one core, RSS {:.1} MiB",
            (c1 - c0) / 20.0 * 100.0,
            rss as f64 / 1024.0
        );
    }
}
