//! Responder benchmark (run through `scripts/bench/run responder`):
//!
//! 1. Overhead from a webhook (or operator request) sent to every step verified, over 200
//!    failover/failback cycles against the fake DigitalOcean API (three load balancers, one DNS
//!    record, the env file), with the live target probe's own time reported separately.
//! 2. Acknowledgement time of 5,000 duplicate webhook deliveries from 50 concurrent senders, and
//!    the number of transitions they caused (must be exactly one); ten runs, each printed, with
//!    the first delivery of each sender apart (it waits for the alert's durable write) and a
//!    control storm right after (the same alert, stored already: no write, no plan). Then the
//!    same storm paced below saturation.
//!
//! 3. Webhook to every step verified over TLS next to plain HTTP, each with keep-alive and with
//!    a new connection (so a new handshake) per request: a second responder, with
//!    `[responder.tls]` and a certificate of a CA made for the run, against the same stand-ins.
//!
//! 4. One readiness evaluation (the work of `preflight` and of the responder's periodic check)
//!    with 3 load balancers, 2 DNS records, 4 droplets and 2 regions x 3 tables: its time and
//!    its DigitalOcean calls.
//!
//! The live check probes two moto regions (the test kit's, at nice 10).

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use testkit::{client, create_table, sdk_config, Moto};

const TOKEN: &str = "bench-webhook-token";
const ADMIN: &str = "bench-admin-token";
const DO_TOKEN: &str = "bench-do-token";

fn pct(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn alert(region: &str, firing: bool, starts: &str) -> String {
    let status = if firing { "firing" } else { "resolved" };
    json!({"receiver": "r", "status": status, "version": "4", "groupKey": "{}:{}", "truncatedAlerts": 0,
        "alerts": [{"status": status, "startsAt": starts, "endsAt": "0001-01-01T00:00:00Z", "fingerprint": "fp-east",
            "labels": {"alertname": "DynamoDBRegionUnavailable", "region": region}, "annotations": {}}]})
    .to_string()
}

const TLS_CYCLES: usize = 50;

/// The alert of `starts` resolves and an operator fails back; answers once traffic is home.
async fn back_home(http: &reqwest::Client, base: &str, starts: &str) {
    http.post(format!("{base}/alerts"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(alert("us-east-1", false, starts))
        .send()
        .await
        .unwrap();
    http.post(format!("{base}/v1/failback"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    settled(http, base, "us-east-1", Duration::from_millis(5)).await;
}

/// The responder's state, as the operator's `status` reads it.
async fn state(http: &reqwest::Client, base: &str) -> Value {
    http.get(format!("{base}/v1/state"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Polls the state every `pause` until traffic is in `region` with every step verified.
async fn settled(http: &reqwest::Client, base: &str, region: &str, pause: Duration) {
    loop {
        let s = state(http, base).await;
        if s["active_region"] == region && s["plan"].is_null() {
            return;
        }
        tokio::time::sleep(pause).await;
    }
}
const STORMS: usize = 10;

/// 5,000 deliveries of `body` from 50 concurrent senders, 100 each, over plain keep-alive
/// HTTP/1.1 with a prepared request, as a lean client like Alertmanager's does, so the figure is
/// the responder's acknowledgement, not client overhead. Answers the sorted acknowledgement times
/// (ms) and the wall time.
async fn storm(addr: &str, body: &str) -> (Vec<f64>, Duration) {
    let (acks, _, wall) = storm_waves(addr, body).await;
    (acks, wall)
}

/// [`storm`], also answering the first delivery of each sender apart (sorted, ms): the 50 that
/// arrive before the alert is stored wait for its durable write, and are 1 % of the storm.
async fn storm_waves(addr: &str, body: &str) -> (Vec<f64>, Vec<f64>, Duration) {
    let (timed, wall) = storm_paced(addr, body, None).await;
    // Each sender's 100 deliveries are in order, one sender after another.
    let first = sorted(timed.chunks(100).map(|c| c[0].1).collect());
    (
        sorted(timed.into_iter().map(|(_, ms)| ms).collect()),
        first,
        wall,
    )
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v
}

/// [`storm`], but each sender sends every `pace` (50 senders every 10 ms: 5,000 a second, below
/// what the two cores can answer), each acknowledgement timed from its send.
/// Answers (sent at, ms after the start; acknowledgement ms) of every delivery, and the wall time.
async fn storm_paced(
    addr: &str,
    body: &str,
    pace: Option<Duration>,
) -> (Vec<(f64, f64)>, Duration) {
    let request = format!(
        "POST /alerts HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut senders = Vec::new();
    let start = Instant::now();
    for sender in 0..50u32 {
        let (addr, request) = (addr.to_string(), request.clone());
        senders.push(tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
            conn.set_nodelay(true).unwrap();
            let mut buf = vec![0u8; 4096];
            let mut lat = Vec::with_capacity(100);
            for k in 0..100u32 {
                let t = match pace {
                    // Spread over the pace: sender i sends at i/50 of it, then every pace.
                    Some(p) => {
                        // Timed from the send: tokio's timers are 1 ms coarse, and a late wake-up
                        // is the client's, not the responder's.
                        let due = start + p * k + p * sender / 50;
                        tokio::time::sleep_until(due.into()).await;
                        Instant::now()
                    }
                    None => Instant::now(),
                };
                conn.write_all(request.as_bytes()).await.unwrap();
                // Read one whole answer: headers, then Content-Length bytes of body.
                let mut have = 0;
                loop {
                    let n = conn.read(&mut buf[have..]).await.unwrap();
                    assert!(n > 0, "connection closed");
                    have += n;
                    let text = std::str::from_utf8(&buf[..have]).unwrap_or("");
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
                lat.push((
                    t.duration_since(start).as_secs_f64() * 1000.0,
                    t.elapsed().as_secs_f64() * 1000.0,
                ));
            }
            lat
        }));
    }
    let mut timed = Vec::new();
    for s in senders {
        timed.extend(s.await.unwrap());
    }
    let wall = start.elapsed();
    if std::env::var("BENCH_TIMELINE").is_ok() {
        // Where the slow acknowledgements are: by when they were sent, in 10 ms buckets.
        let mut slow = std::collections::BTreeMap::new();
        for (at, ms) in &timed {
            if *ms > 2.0 {
                *slow.entry((*at / 10.0) as u64 * 10).or_insert(0) += 1;
            }
        }
        eprintln!("slow (> 2 ms) by send time, ms bucket -> count: {slow:?}");
    }
    (timed, wall)
}

/// One failover (webhook) and one failback (operator request) through `client`, each timed from
/// sending the request to its answer (the acknowledgement) and to the state polled through `poll`
/// showing every step verified. `day` and `i` make each alert instance new.
async fn cycle(
    client: &reqwest::Client,
    poll: &reqwest::Client,
    base: &str,
    day: &str,
    i: usize,
) -> (Vec<f64>, Vec<f64>) {
    let starts = format!("{day}T{:02}:{:02}:00.000Z", i / 60, i % 60);
    let (mut acks, mut verified) = (Vec::new(), Vec::new());
    let t = Instant::now();
    let r = client
        .post(format!("{base}/alerts"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(alert("us-east-1", true, &starts))
        .send()
        .await
        .unwrap();
    acks.push(t.elapsed().as_secs_f64() * 1000.0);
    assert_eq!(r.status(), 200);
    settled(poll, base, "us-west-2", Duration::from_micros(200)).await;
    verified.push(t.elapsed().as_secs_f64() * 1000.0);
    client
        .post(format!("{base}/alerts"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(alert("us-east-1", false, &starts))
        .send()
        .await
        .unwrap();
    let t = Instant::now();
    let r = client
        .post(format!("{base}/v1/failback"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    acks.push(t.elapsed().as_secs_f64() * 1000.0);
    assert_eq!(r.status(), 202);
    settled(poll, base, "us-east-1", Duration::from_micros(200)).await;
    verified.push(t.elapsed().as_secs_f64() * 1000.0);
    (acks, verified)
}

#[tokio::main]
async fn main() {
    let (mut east_moto, mut west_moto) = (Moto::start_niced().await, Moto::start_niced().await);
    let (east, west) = (east_moto.endpoint(), west_moto.endpoint());
    create_table(&client("us-east-1", &east).await, "wordpress_posts", true).await;
    create_table(&client("us-west-2", &west).await, "wordpress_posts", true).await;
    let fake = fake_digitalocean::FakeDo::start_with_limit("127.0.0.1:0", DO_TOKEN, 1_000_000)
        .await
        .unwrap();
    let rules = json!([{"entry_protocol": "http", "entry_port": 80, "target_protocol": "http", "target_port": 80}]);
    fake.seed(&json!({
        "load_balancers": [
            {"id": "lb-d", "type": "REGIONAL", "region": "nyc1", "forwarding_rules": rules, "droplet_ids": [1, 2]},
            {"id": "lb-t", "type": "REGIONAL", "region": "nyc1", "forwarding_rules": rules, "droplet_ids": [], "tag": "east"},
            {"id": "lb-g", "type": "GLOBAL", "forwarding_rules": rules,
             "glb_settings": {"target_protocol": "http", "target_port": 80, "region_priorities": {"nyc1": 1, "sfo3": 2}}}],
        "domains": {"example.com": [{"id": 7, "type": "A", "name": "www", "data": "192.0.2.1", "ttl": 60}]}
    }));
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    for (f, v) in [("w", TOKEN), ("a", ADMIN), ("do", DO_TOKEN)] {
        std::fs::write(dir.path().join(f), v).unwrap();
    }
    let config_text = |state: &str, tls: &str| {
        format!(
            r#"
[prober]
id = "bench"
interval = "1s"
attempt_timeout = "300ms"
timeout = "800ms"
[[region]]
name = "us-east-1"
endpoint = "{east}"
priority = 1
digitalocean = {{ slug = "nyc1", droplet_ids = [1, 2], tag = "east", ipv4 = "192.0.2.1" }}
[[region]]
name = "us-west-2"
endpoint = "{west}"
priority = 2
digitalocean = {{ slug = "sfo3", droplet_ids = [3, 4], tag = "west", ipv4 = "192.0.2.2" }}
[[table]]
name = "wordpress_posts"
[responder]
listen = "127.0.0.1:0"
state_file = "{d}/{state}.json"
webhook_token_file = "{d}/w"
admin_token_file = "{d}/a"
tick = "1s"
{tls}
[responder.policy]
min_interval = "1ms"
stabilisation = "1h"
auto_failback = false
[responder.app]
env_file = "{d}/{state}.env"
[responder.digitalocean]
api_url = "{do_url}"
token_file = "{d}/do"
[[responder.digitalocean.load_balancer]]
id = "lb-d"
mode = "droplets"
[[responder.digitalocean.load_balancer]]
id = "lb-t"
mode = "tag"
[[responder.digitalocean.load_balancer]]
id = "lb-g"
mode = "global"
[[responder.digitalocean.dns_record]]
domain = "example.com"
record_id = 7
type = "A"
"#,
            do_url = fake.url()
        )
    };
    let config =
        dynamo_failover::config::Config::parse(&config_text("state", "")).expect("bench config");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let shared = sdk_config().await;
    let (trigger, stop) = dynamo_failover::shutdown::channel();
    let stop_tls = stop.clone();
    tokio::spawn(dynamo_failover::responder::run(
        config, shared, listener, stop,
    ));
    let http = reqwest::Client::new();
    for _ in 0..200 {
        if http
            .get(format!("{base}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // 1. Cycles. BENCH_ONLY=storm runs the storms alone (for profiling them).
    let only_storm = std::env::var("BENCH_ONLY").is_ok_and(|v| v == "storm");
    let cycles = if only_storm { 1 } else { 200 };
    let mut over = Vec::with_capacity(cycles);
    let mut back = Vec::with_capacity(cycles);
    for i in 0..cycles {
        let (_, verified) = cycle(&http, &http, &base, "2026-11-26", i).await;
        over.push(verified[0]);
        back.push(verified[1]);
    }
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    let live_ms = 1000.0 * value("failover_step_duration_seconds_sum{step=\"live_check\"}")
        / value("failover_step_duration_seconds_count{step=\"live_check\"}").max(1.0);
    let mut all: Vec<f64> = over.iter().chain(back.iter()).copied().collect();
    all.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!("# responder benchmark\n");
    println!("## webhook received -> every step verified, {} transitions ({cycles} failover/failback cycles)", all.len());
    println!("steps per transition: env file, 3 load balancers (droplets, tag, global), 1 DNS record; fake DigitalOcean API on loopback");
    println!(
        "including the live target check: median {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        pct(&all, 0.5),
        pct(&all, 0.99),
        all[all.len() - 1]
    );
    let mut without: Vec<f64> = all.iter().map(|x| (x - live_ms).max(0.0)).collect();
    without.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!("live target check alone (moto, 2 calls per table): mean {live_ms:.2} ms");
    println!("responder overhead without the live check: median {:.2} ms, p99 {:.2} ms (floor: p99 < 50 ms)", pct(&without, 0.5), pct(&without, 0.99));
    let overhead_ok = pct(&without, 0.99) < 50.0;

    // 2. Storms: 10 runs, each a new alert instance from home, then back home for the next.
    let addr = base.trim_start_matches("http://").to_string();
    let (mut p99s, mut control_p99s) = (Vec::new(), Vec::new());
    let mut storm_ok = true;
    for run in 0..STORMS {
        let starts = format!("2026-11-27T00:{run:02}:00.000Z");
        let before = state(&http, &base).await["epoch"].as_u64().unwrap();
        let (acks, first, wall) = storm_waves(&addr, &alert("us-east-1", true, &starts)).await;
        settled(&http, &base, "us-west-2", Duration::from_millis(5)).await;
        // The control: the same storm again, once the alert is stored and its plan done. Nothing
        // is written and no plan runs, so this is what the acknowledgements cost by themselves.
        let (control, _) = storm(&addr, &alert("us-east-1", true, &starts)).await;
        let after = state(&http, &base).await["epoch"].as_u64().unwrap();
        if run == 0 {
            println!(
                "\n## webhook storm: {} duplicate deliveries from 50 concurrent senders, {STORMS} runs (each a new alert, traffic home before it)",
                acks.len()
            );
        }
        println!(
            "run {:>2}: {:.2} s, acknowledgement median {:.2} ms, p99 {:.2} ms, max {:.2} ms; transitions caused by it and its control: {} (must be exactly 1)",
            run + 1,
            wall.as_secs_f64(),
            pct(&acks, 0.5),
            pct(&acks, 0.99),
            acks[acks.len() - 1],
            after - before
        );
        println!(
            "        first delivery of each sender (waits for the durable write): median {:.2} ms, max {:.2} ms; \
             control (the same storm once stored, no plan): median {:.2} ms, p99 {:.2} ms",
            pct(&first, 0.5),
            first[first.len() - 1],
            pct(&control, 0.5),
            pct(&control, 0.99),
        );
        p99s.push(pct(&acks, 0.99));
        control_p99s.push(pct(&control, 0.99));
        storm_ok &= after - before == 1;
        // Home again: the alert resolves, an operator fails back.
        back_home(&http, &base, &starts).await;
    }
    // The same storm paced below saturation: what an acknowledgement costs while the plan it
    // started runs, without the queueing of 50 senders that never wait.
    let mut paced_p99s = Vec::new();
    for run in 0..STORMS {
        let starts = format!("2026-11-27T01:{run:02}:00.000Z");
        let (timed, _) = storm_paced(
            &addr,
            &alert("us-east-1", true, &starts),
            Some(Duration::from_millis(10)),
        )
        .await;
        // The plan (live check, 4 API steps, 7 fsyncs) runs in the first ~100 ms of each run.
        let during = sorted(timed.iter().filter(|t| t.0 < 150.0).map(|t| t.1).collect());
        let acks = sorted(timed.into_iter().map(|t| t.1).collect());
        settled(&http, &base, "us-west-2", Duration::from_millis(5)).await;
        if run == 0 {
            println!("\n## the same storm paced: 50 senders each every 10 ms (5,000 a second, 1 s), {STORMS} runs");
        }
        println!(
            "run {:>2}: acknowledgement median {:.2} ms, p99 {:.2} ms, max {:.2} ms; while the plan runs (first 150 ms, {} deliveries): median {:.2} ms, p99 {:.2} ms",
            run + 1,
            pct(&acks, 0.5),
            pct(&acks, 0.99),
            acks[acks.len() - 1],
            during.len(),
            pct(&during, 0.5),
            pct(&during, 0.99),
        );
        paced_p99s.push(pct(&acks, 0.99));
        back_home(&http, &base, &starts).await;
    }
    println!(
        "paced: p99 under 2 ms in {} of {STORMS} runs",
        paced_p99s.iter().filter(|p| **p < 2.0).count()
    );
    let under = p99s.iter().filter(|p| **p < 2.0).count();
    println!(
        "p99 under 2 ms in {under} of {STORMS} runs (floor: at least 9); under 5 ms in {}",
        p99s.iter().filter(|p| **p < 5.0).count()
    );
    println!(
        "control storms (no write, no plan): p99 under 2 ms in {} of {STORMS} runs",
        control_p99s.iter().filter(|p| **p < 2.0).count()
    );
    storm_ok &= under >= 9;

    if only_storm {
        trigger.fire();
        east_moto.stop().await;
        west_moto.stop().await;
        std::process::exit(if storm_ok { 0 } else { 1 });
    }
    // 3. TLS. Traffic is home (a responder with no state refuses objects pointing away).
    let ca = testkit::pki::Ca::new(dir.path(), "bench");
    let cert = ca.issue("responder", testkit::pki::Use::Server);
    let tls_config = dynamo_failover::config::Config::parse(&config_text(
        "tls-state",
        &format!(
            "[responder.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"",
            cert.cert.display(),
            cert.key.display()
        ),
    ))
    .expect("bench TLS config");
    let tls_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tls_base = format!(
        "https://localhost:{}",
        tls_listener.local_addr().unwrap().port()
    );
    tokio::spawn(dynamo_failover::responder::run(
        tls_config,
        sdk_config().await,
        tls_listener,
        stop_tls,
    ));
    let ca_pem = reqwest::Certificate::from_pem(&std::fs::read(ca.cert_path()).unwrap()).unwrap();
    let tls_client = |keep_alive: bool| {
        let b = reqwest::Client::builder().tls_certs_only([ca_pem.clone()]);
        if keep_alive {
            b
        } else {
            b.pool_max_idle_per_host(0)
        }
        .build()
        .unwrap()
    };
    let tls_poll = tls_client(true);
    for _ in 0..200 {
        if tls_poll
            .get(format!("{tls_base}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let plain_new = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    println!("\n## webhook received -> every step verified, TLS next to plain HTTP ({TLS_CYCLES} failover/failback cycles each)");
    println!("TLS 1.3, ECDSA P-256 certificate, no client certificate; the state is polled over a kept-alive connection");
    println!(
        "{:<34} {:>17} {:>17} {:>22}",
        "transport", "ack median ms", "ack p99 ms", "verified median/p99 ms"
    );
    let modes = [
        (
            "plain HTTP, keep-alive",
            http.clone(),
            base.clone(),
            http.clone(),
            "2026-11-28",
        ),
        (
            "plain HTTP, new connection each",
            plain_new,
            base.clone(),
            http.clone(),
            "2026-11-29",
        ),
        (
            "TLS, keep-alive",
            tls_client(true),
            tls_base.clone(),
            tls_poll.clone(),
            "2026-11-28",
        ),
        (
            "TLS, new handshake each",
            tls_client(false),
            tls_base.clone(),
            tls_poll.clone(),
            "2026-11-29",
        ),
    ];
    for (name, client, b, poll, day) in modes {
        let (mut acks, mut verified) = (Vec::new(), Vec::new());
        for i in 0..TLS_CYCLES {
            let (a, v) = cycle(&client, &poll, &b, day, i).await;
            acks.extend(a);
            verified.extend(v);
        }
        acks.sort_by(|a, b| a.partial_cmp(b).unwrap());
        verified.sort_by(|a, b| a.partial_cmp(b).unwrap());
        println!(
            "{name:<34} {:>17.2} {:>17.2} {:>14.2} / {:.2}",
            pct(&acks, 0.5),
            pct(&acks, 0.99),
            pct(&verified, 0.5),
            pct(&verified, 0.99)
        );
    }
    readiness(&east_moto, &west_moto, &fake).await;
    println!(
        "\nfloors: {}",
        if overhead_ok && storm_ok {
            "MET"
        } else {
            "NOT MET"
        }
    );
    trigger.fire();
    // process::exit skips destructors: stop the moto servers first.
    east_moto.stop().await;
    west_moto.stop().await;
    std::process::exit(if overhead_ok && storm_ok { 0 } else { 1 });
}

/// One readiness evaluation, 20 times: 3 load balancers, 2 DNS records (two domains), 4
/// droplets, 2 regions x 3 tables, each region behind the test kit's Global Tables front.
async fn readiness(east: &Moto, west: &Moto, fake: &fake_digitalocean::FakeDo) {
    let tables = ["wordpress_posts", "wordpress_users", "wordpress_sessions"];
    for t in &tables[1..] {
        create_table(&client("us-east-1", &east.endpoint()).await, t, true).await;
        create_table(&client("us-west-2", &west.endpoint()).await, t, true).await;
    }
    for (id, slug, tag) in [
        (1, "nyc1", "east"),
        (2, "nyc1", "east"),
        (3, "sfo3", "west"),
        (4, "sfo3", "west"),
    ] {
        fake.put_droplet(
            json!({"id": id, "name": format!("wp-{id}"), "region": slug, "tags": [tag]}),
        );
    }
    fake.put_record(
        "example.org",
        json!({"id": 8, "type": "A", "name": "@", "data": "192.0.2.1", "ttl": 60}),
    );
    let fronts = [
        testkit::GlobalFront::start(east.port, &["us-east-1", "us-west-2"]).await,
        testkit::GlobalFront::start(west.port, &["us-east-1", "us-west-2"]).await,
    ];
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    for (f, v) in [("w", TOKEN), ("a", ADMIN), ("do", DO_TOKEN)] {
        std::fs::write(dir.path().join(f), v).unwrap();
    }
    let tables_toml: String = tables
        .iter()
        .map(|t| format!("[[table]]\nname = \"{t}\"\n"))
        .collect();
    let config = format!(
        r#"
[prober]
id = "bench"
[[region]]
name = "us-east-1"
endpoint = "{east}"
priority = 1
digitalocean = {{ slug = "nyc1", droplet_ids = [1, 2], tag = "east", ipv4 = "192.0.2.1" }}
[[region]]
name = "us-west-2"
endpoint = "{west}"
priority = 2
digitalocean = {{ slug = "sfo3", droplet_ids = [3, 4], tag = "west", ipv4 = "192.0.2.2" }}
{tables_toml}
[responder]
listen = "127.0.0.1:0"
state_file = "{d}/state.json"
webhook_token_file = "{d}/w"
admin_token_file = "{d}/a"
[responder.app]
env_file = "{d}/app.env"
reload_commands = [["true"]]
[responder.digitalocean]
api_url = "{do_url}"
token_file = "{d}/do"
[[responder.digitalocean.load_balancer]]
id = "lb-d"
mode = "droplets"
[[responder.digitalocean.load_balancer]]
id = "lb-t"
mode = "tag"
[[responder.digitalocean.load_balancer]]
id = "lb-g"
mode = "global"
[[responder.digitalocean.dns_record]]
domain = "example.com"
record_id = 7
type = "A"
[[responder.digitalocean.dns_record]]
domain = "example.org"
record_id = 8
type = "A"
"#,
        east = fronts[0].endpoint(),
        west = fronts[1].endpoint(),
        do_url = fake.url()
    );
    let config = dynamo_failover::config::Config::parse(&config).expect("readiness bench config");
    let shared = sdk_config().await;
    let eval = dynamo_failover::readiness::Evaluator::new(&config, &shared, "bench").unwrap();
    let mut took = Vec::new();
    let mut last = None;
    for _ in 0..20 {
        let t = Instant::now();
        let r = eval
            .evaluate(
                dynamo_failover::readiness::Agents::View(Default::default()),
                &[],
            )
            .await;
        took.push(t.elapsed().as_secs_f64() * 1000.0);
        last = Some(r);
    }
    let r = last.unwrap();
    took.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "\n## readiness: one evaluation of 3 load balancers, 2 DNS records, 4 droplets, 2 regions x 3 tables ({} rows, {} failing)",
        r.rows.len(),
        r.failing().count()
    );
    println!(
        "time: median {:.1} ms, max {:.1} ms over 20; DigitalOcean calls: {} per evaluation ({} an hour at the default 5 min interval)",
        pct(&took, 0.5),
        took[took.len() - 1],
        r.digitalocean_calls,
        r.digitalocean_calls * 12
    );
    for row in r.failing() {
        println!("  failing: {} {}: {}", row.check, row.target, row.detail);
    }
}
