//! The responder as a real process: real Alertmanager-shaped webhooks over HTTP, real moto regions
//! for the live check, the fake DigitalOcean API, a notification receiver, captured logs.

use std::time::Duration;

use fake_digitalocean::Fault;
use serde_json::{json, Value};
use testkit::stack::*;
use testkit::{sample, wait_until};

const T0: &str = "2026-11-26T05:49:00.000Z";

fn droplets(fake: &fake_digitalocean::FakeDo) -> Vec<u64> {
    let mut v: Vec<u64> = fake.load_balancer("lb-droplets").unwrap()["droplet_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect();
    v.sort();
    v
}

/// The full picture of "traffic is in `region`".
fn assert_do_points_at(s: &Stack, region: &str) {
    let (ids, tag, prio, ip) = if region == EAST {
        (
            vec![101, 102],
            "wp-east",
            json!({"nyc1": 1, "sfo3": 2}),
            "192.0.2.10",
        )
    } else {
        (
            vec![201, 202],
            "wp-west",
            json!({"sfo3": 1, "nyc1": 2}),
            "192.0.2.20",
        )
    };
    assert_eq!(droplets(&s.fake), ids);
    assert_eq!(s.fake.load_balancer("lb-tag").unwrap()["tag"], tag);
    assert_eq!(
        s.fake.load_balancer("lb-global").unwrap()["glb_settings"]["region_priorities"],
        prio
    );
    let rec = s.fake.record("example.com", 1001).unwrap();
    assert_eq!(
        (rec["data"].as_str(), rec["ttl"].as_u64()),
        (Some(ip), Some(60))
    );
}

#[tokio::test]
async fn a_real_firing_body_moves_traffic_everywhere_and_says_so() {
    let s = Stack::start(Knobs::default()).await;
    assert_eq!(s.active_region().await, EAST);
    let (code, body) = s.alert(&alert_body(EAST, true, T0)).await;
    assert_eq!(code, 200, "{body}");
    s.wait_steady_in(WEST, Duration::from_secs(20)).await;

    assert_do_points_at(&s, WEST);
    assert_eq!(s.env_value().as_deref(), Some(WEST));
    let env = std::fs::read_to_string(s.path("app.env")).unwrap();
    assert!(
        env.contains("WP_ENV=production"),
        "other settings were lost: {env}"
    );
    assert_eq!(s.reloads(), vec![format!("{WEST} epoch 1")]);
    assert_eq!(s.active_region().await, WEST);

    // Add before remove: the droplet pool is never empty.
    let changes = s.fake.changes();
    let add = changes
        .iter()
        .position(|c| c.method == "POST")
        .expect("droplets added");
    let remove = changes
        .iter()
        .position(|c| c.method == "DELETE")
        .expect("droplets removed");
    assert!(add < remove, "{changes:?}");
    // The tag load balancer got a whole object, built from what GET answered.
    let put = changes
        .iter()
        .find(|c| c.method == "PUT" && c.path.ends_with("lb-tag"))
        .unwrap();
    assert_eq!(put.body["sticky_sessions"]["type"], "none");
    assert_eq!(put.body["region"], "nyc1");

    let st = s.state().await;
    assert_eq!(st["epoch"], 1);
    assert_eq!(st["transitions"][0]["from"], EAST);
    assert_eq!(st["transitions"][0]["trigger"], "alert");
    assert_eq!(st["regions"][EAST]["down"], true);

    wait_until(Duration::from_secs(5), "completion notices", || async {
        !s.inbox.titled("completed").is_empty()
    })
    .await;
    let done = &s.inbox.titled("completed")[0];
    let text = done["text"].as_str().unwrap();
    assert!(
        done["title"].as_str().unwrap().contains("epoch 1"),
        "{done}"
    );
    assert!(text.contains("Data at risk"), "{text}");
    assert!(
        text.contains("lb-droplets") && text.contains("example.com"),
        "{text}"
    );
    assert!(text.contains(&format!("{PUBLIC_URL}/v1/state")), "{text}");
    assert!(text.contains("Next:"), "{text}");
    assert!(
        s.inbox.all().iter().any(|(p, _)| p == "/slack"),
        "nothing reached Slack"
    );

    let m = s.metrics().await;
    assert_eq!(
        sample(&m, "failover_active_region", &[("region", WEST)]),
        Some(1.0)
    );
    assert_eq!(
        sample(&m, "failover_active_region", &[("region", EAST)]),
        Some(0.0)
    );
    assert_eq!(sample(&m, "failover_epoch", &[]), Some(1.0));
    assert_eq!(
        sample(
            &m,
            "failover_transitions_total",
            &[
                ("from", EAST),
                ("to", WEST),
                ("trigger", "alert"),
                ("result", "completed")
            ]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &m,
            "failover_webhook_requests_total",
            &[("result", "accepted")]
        ),
        Some(1.0)
    );
    assert!(
        sample(
            &m,
            "failover_step_duration_seconds_count",
            &[("step", "load_balancer")]
        )
        .unwrap()
            >= 3.0
    );
    assert!(
        sample(
            &m,
            "failover_notifications_total",
            &[("channel", "webhook"), ("result", "sent")]
        )
        .unwrap()
            >= 2.0
    );
    s.assert_no_secrets();
}

#[tokio::test]
async fn fifty_duplicates_from_two_senders_make_one_transition() {
    let s = Stack::start(Knobs::default()).await;
    let body = alert_body(EAST, true, T0);
    let mut sends = Vec::new();
    for _ in 0..2 {
        for _ in 0..25 {
            let (http, base, body) = (s.http.clone(), s.base(), body.clone());
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
    s.wait_steady_in(WEST, Duration::from_secs(20)).await;
    // And 50 more after the move (Alertmanager's repeat_interval): nothing new is even written.
    let version = |s: &Stack| -> u64 {
        let v: Value =
            serde_json::from_str(&std::fs::read_to_string(s.path("state.json")).unwrap()).unwrap();
        v["version"].as_u64().unwrap()
    };
    let before = version(&s);
    for _ in 0..50 {
        assert_eq!(s.alert(&body).await.0, 200);
    }
    assert_eq!(
        version(&s),
        before,
        "a duplicate delivery was recorded again"
    );
    let st = s.state().await;
    assert_eq!(st["epoch"], 1);
    assert_eq!(st["transitions"].as_array().unwrap().len(), 1);
    let puts = s
        .fake
        .changes()
        .iter()
        .filter(|c| c.method == "PUT" && c.path.ends_with("lb-tag"))
        .count();
    assert_eq!(puts, 1);
    assert_eq!(s.reloads().len(), 1);
}

#[tokio::test]
async fn a_resolved_that_overtakes_its_firing_makes_no_transition() {
    let s = Stack::start(Knobs::default()).await;
    assert_eq!(s.alert(&alert_body(EAST, false, T0)).await.0, 200);
    assert_eq!(s.alert(&alert_body(EAST, true, T0)).await.0, 200);
    // Decisions are made before the webhook answers: a move would already be planned.
    let st = s.state().await;
    assert_eq!(st["epoch"], 0);
    assert!(st["plan"].is_null());
    assert_eq!(st["regions"][EAST]["down"], false);
    assert!(s.fake.changes().is_empty());
}

#[tokio::test]
async fn a_failing_target_blocks_the_move_and_alerts_loudly() {
    let mut s = Stack::start(Knobs::default()).await;
    s.west.stop().await;
    assert_eq!(s.alert(&alert_body(EAST, true, T0)).await.0, 200);
    wait_until(
        Duration::from_secs(15),
        "the move to be blocked",
        || async { s.state().await["phase"] == "blocked" },
    )
    .await;
    let st = s.state().await;
    assert_eq!(st["active_region"], EAST);
    assert!(
        st["blocked"]
            .as_str()
            .unwrap()
            .contains("no other region is healthy"),
        "{st}"
    );
    assert!(
        s.fake.changes().is_empty(),
        "DigitalOcean was changed: {:?}",
        s.fake.changes()
    );
    assert_eq!(s.env_value().as_deref(), Some(EAST));
    wait_until(Duration::from_secs(5), "a BLOCKED notice", || async {
        !s.inbox.titled("BLOCKED").is_empty()
    })
    .await;
    assert!(!s.inbox.titled("failed its live check").is_empty());
    let m = s.metrics().await;
    assert_eq!(sample(&m, "failover_blocked", &[]), Some(1.0));
    assert!(
        sample(
            &m,
            "failover_transitions_total",
            &[("result", "target_rejected")]
        )
        .unwrap()
            >= 1.0
    );
    s.assert_no_secrets();
}

#[tokio::test]
async fn automatic_failback_waits_out_a_flapping_home_and_the_stabilisation_window() {
    let s = Stack::start(Knobs::default()).await; // stabilisation 3 s
    assert_eq!(
        s.alert(&alert_body(EAST, true, "2026-11-26T05:49:00.000Z"))
            .await
            .0,
        200
    );
    s.wait_steady_in(WEST, Duration::from_secs(20)).await;
    // Home flaps: up and down every 1.5 s (shorter than the window), five times.
    for i in 1..=5 {
        let starts = format!("2026-11-26T05:5{i}:00.000Z");
        let prev = format!("2026-11-26T05:5{}:00.000Z", i - 1).replace("05:50:00", "05:49:00");
        assert_eq!(s.alert(&alert_body(EAST, false, &prev)).await.0, 200);
        tokio::time::sleep(Duration::from_millis(1500)).await; // the flap's up phase
        assert_eq!(s.alert(&alert_body(EAST, true, &starts)).await.0, 200);
        let st = s.state().await;
        assert_eq!(st["active_region"], WEST, "failed back while home flaps");
        assert!(
            st["plan"].is_null(),
            "a plan started while home flaps: {st}"
        );
    }
    // Home recovers for good.
    let resolved_at = std::time::Instant::now();
    assert_eq!(
        s.alert(&alert_body(EAST, false, "2026-11-26T05:55:00.000Z"))
            .await
            .0,
        200
    );
    s.wait_steady_in(EAST, Duration::from_secs(20)).await;
    assert!(
        resolved_at.elapsed() >= Duration::from_secs(3),
        "failed back before the window"
    );
    let st = s.state().await;
    assert_eq!(st["transitions"].as_array().unwrap().len(), 2);
    assert_eq!(st["transitions"][0]["trigger"], "stabilised");
    assert_do_points_at(&s, EAST);
    assert_eq!(s.env_value().as_deref(), Some(EAST));
}

#[tokio::test]
async fn with_automatic_failback_off_it_waits_for_an_operator() {
    let s = Stack::start(Knobs {
        auto_failback: false,
        ..Knobs::default()
    })
    .await;
    assert_eq!(s.alert(&alert_body(EAST, true, T0)).await.0, 200);
    s.wait_steady_in(WEST, Duration::from_secs(20)).await;
    assert_eq!(s.alert(&alert_body(EAST, false, T0)).await.0, 200);
    // Three stabilisation windows and more: no failback.
    tokio::time::sleep(Duration::from_secs(4)).await; // the window that must pass without a move
    assert_eq!(s.state().await["active_region"], WEST);
    assert!(s.state().await["plan"].is_null());
    let (code, body) = s
        .post(
            "/v1/failback",
            Some(ADMIN_TOKEN),
            "application/json",
            String::new(),
        )
        .await;
    assert_eq!(code, 202, "{body}");
    s.wait_steady_in(EAST, Duration::from_secs(20)).await;
    assert_eq!(s.state().await["transitions"][0]["trigger"], "operator");
    assert_do_points_at(&s, EAST);
}

#[tokio::test]
async fn paused_it_records_and_notifies_but_moves_nothing_until_resumed() {
    let s = Stack::start(Knobs::default()).await;
    assert_eq!(
        s.post(
            "/v1/pause",
            Some(ADMIN_TOKEN),
            "application/json",
            String::new()
        )
        .await
        .0,
        202
    );
    assert_eq!(s.alert(&alert_body(EAST, true, T0)).await.0, 200);
    let st = s.state().await;
    assert_eq!(st["phase"], "paused");
    assert!(
        st["blocked"]
            .as_str()
            .unwrap()
            .contains("paused: would failover"),
        "{st}"
    );
    assert_eq!(st["regions"][EAST]["down"], true);
    wait_until(Duration::from_secs(5), "a paused notice", || async {
        !s.inbox.titled("BLOCKED").is_empty()
    })
    .await;
    assert_eq!(
        sample(&s.metrics().await, "failover_paused", &[]),
        Some(1.0)
    );
    assert!(s.fake.changes().is_empty());
    assert_eq!(s.env_value().as_deref(), Some(EAST));
    // An operator move is refused while paused.
    let (code, _) = s
        .post(
            "/v1/failover",
            Some(ADMIN_TOKEN),
            "application/json",
            json!({"to": WEST}).to_string(),
        )
        .await;
    assert_eq!(code, 409);
    assert_eq!(
        s.post(
            "/v1/resume",
            Some(ADMIN_TOKEN),
            "application/json",
            String::new()
        )
        .await
        .0,
        202
    );
    s.wait_steady_in(WEST, Duration::from_secs(20)).await;
    assert_do_points_at(&s, WEST);
}

#[tokio::test]
async fn every_digitalocean_fault_kind_is_survived() {
    let s = Stack::start(Knobs {
        step_deadline: "30s",
        ..Knobs::default()
    })
    .await;
    use axum::http::Method;
    s.fake.inject(Fault::Status(503), 2, Some(Method::GET));
    s.fake
        .inject(Fault::RateLimited { retry_after: 1 }, 1, Some(Method::POST));
    s.fake.inject(Fault::Busy, 2, Some(Method::PUT));
    s.fake.inject(
        Fault::Slow(Duration::from_millis(1500)),
        1,
        Some(Method::PATCH),
    ); // over the 1 s request timeout
    s.fake.inject(Fault::Status(500), 1, Some(Method::DELETE));
    assert_eq!(s.alert(&alert_body(EAST, true, T0)).await.0, 200);
    s.wait_steady_in(WEST, Duration::from_secs(40)).await;
    assert_do_points_at(&s, WEST);
    let statuses: Vec<u16> = s.fake.log().iter().map(|l| l.status).collect();
    for code in [503, 429, 422, 500] {
        assert!(
            statuses.contains(&code),
            "fault {code} was never hit: {statuses:?}"
        );
    }
    let st = s.state().await;
    assert_eq!(st["transitions"].as_array().unwrap().len(), 1);
    s.assert_no_secrets();
}

#[tokio::test]
async fn a_restart_in_the_middle_of_a_plan_resumes_it_without_repeating_finished_steps() {
    let mut s = Stack::start(Knobs {
        step_deadline: "30s",
        ..Knobs::default()
    })
    .await;
    use axum::http::Method;
    // The tag load balancer's GET keeps timing out (1 s request timeout) for a few seconds: the
    // plan is held inside its third step, after two finished ones, while the responder is killed.
    s.fake.inject_at(
        Fault::Slow(Duration::from_secs(8)),
        3,
        Some(Method::GET),
        Some("/v2/load_balancers/lb-tag"),
    );
    assert_eq!(s.alert(&alert_body(EAST, true, T0)).await.0, 200);
    wait_until(
        Duration::from_secs(20),
        "the plan to reach the tag load balancer",
        || async {
            let st = s.state().await;
            st["plan"]["steps"][0]["done"] == true && st["plan"]["steps"][1]["done"] == true
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await; // let the held GET reach the fake
    s.kill().await;
    let stored: Value =
        serde_json::from_str(&std::fs::read_to_string(s.path("state.json")).unwrap()).unwrap();
    assert_eq!(
        stored["state"]["plan"]["status"], "running",
        "the intent must be on disk"
    );
    s.spawn().await;
    s.wait_steady_in(WEST, Duration::from_secs(40)).await;
    assert_do_points_at(&s, WEST);
    // The app-config step finished before the kill: it did not run again.
    assert_eq!(s.reloads(), vec![format!("{WEST} epoch 1")]);
    // Nor did the droplet move.
    let posts = s
        .fake
        .changes()
        .iter()
        .filter(|c| c.method == "POST")
        .count();
    assert_eq!(posts, 1);
    let st = s.state().await;
    assert_eq!(
        (
            st["epoch"].as_u64(),
            st["transitions"].as_array().unwrap().len()
        ),
        (Some(1), 1)
    );
    assert!(s.logs().contains("resuming an unfinished plan"));
    // The step held at the kill was finished by the restarted process: one PUT of the tag.
    let puts = s
        .fake
        .changes()
        .iter()
        .filter(|c| c.method == "PUT" && c.path.ends_with("lb-tag"))
        .count();
    assert_eq!(puts, 1);
}

#[tokio::test]
async fn bad_inputs_get_clear_codes_and_change_nothing() {
    let s = Stack::start(Knobs::default()).await;
    let good = alert_body(EAST, true, T0);
    let oversized = format!("{{\"pad\": \"{}\"}}", "x".repeat(2 * 1024 * 1024));
    let before = std::fs::read_to_string(s.path("state.json")).unwrap();
    let cases: Vec<(&str, Option<&str>, &str, String, u16)> = vec![
        ("no token", None, "application/json", good.clone(), 401),
        (
            "wrong token",
            Some("whk-guess"),
            "application/json",
            good.clone(),
            401,
        ),
        (
            "admin token on webhook",
            Some(ADMIN_TOKEN),
            "application/json",
            good.clone(),
            401,
        ),
        (
            "wrong content type",
            Some(WEBHOOK_TOKEN),
            "text/plain",
            good.clone(),
            415,
        ),
        (
            "not json",
            Some(WEBHOOK_TOKEN),
            "application/json",
            "{\"alerts\": [".into(),
            400,
        ),
        (
            "wrong version",
            Some(WEBHOOK_TOKEN),
            "application/json",
            good.replace("\"version\":\"4\"", "\"version\":\"3\""),
            400,
        ),
        (
            "bad timestamp",
            Some(WEBHOOK_TOKEN),
            "application/json",
            good.replace(T0, "soon"),
            400,
        ),
        (
            "too large",
            Some(WEBHOOK_TOKEN),
            "application/json",
            oversized.clone(),
            413,
        ),
    ];
    for (what, token, ct, body, want) in cases {
        let (code, text) = s.post("/alerts", token, ct, body).await;
        assert_eq!(code, want, "{what}: {text}");
        if want == 400 {
            let v: Value = serde_json::from_str(&text).unwrap();
            assert!(
                !v["reason"].as_str().unwrap().is_empty(),
                "{what}: no reason"
            );
        }
    }
    // A refusal sent with the body half read closes the connection, so a
    // pooling client does not reuse a socket the server is closing.
    let r = reqwest::Client::new()
        .post(format!("{}/alerts", s.base()))
        .bearer_auth(WEBHOOK_TOKEN)
        .header("content-type", "application/json")
        .body(oversized)
        .send()
        .await
        .expect("oversized request");
    assert_eq!(r.status().as_u16(), 413);
    assert_eq!(
        r.headers().get("connection").map(|v| v.to_str().unwrap()),
        Some("close")
    );
    // The admin API: its own token, clear refusals.
    let admin_cases = [
        (
            "/v1/failover",
            WEBHOOK_TOKEN,
            json!({"to": WEST}).to_string(),
            401,
        ),
        (
            "/v1/failover",
            ADMIN_TOKEN,
            json!({"to": "mars-1"}).to_string(),
            400,
        ),
        (
            "/v1/failover",
            ADMIN_TOKEN,
            json!({"region": WEST}).to_string(),
            400,
        ),
        ("/v1/failback", ADMIN_TOKEN, String::new(), 409),
    ];
    for (path, token, body, want) in admin_cases {
        let (code, text) = s
            .post(path, Some(token), "application/json", body.clone())
            .await;
        assert_eq!(code, want, "{path} {body}: {text}");
    }
    let r = s
        .http
        .get(format!("{}/v1/state", s.base()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        std::fs::read_to_string(s.path("state.json")).unwrap(),
        before,
        "a refused request changed the state"
    );
    let m = s.metrics().await;
    assert_eq!(
        sample(
            &m,
            "failover_webhook_requests_total",
            &[("result", "unauthorized")]
        ),
        Some(3.0)
    );
    assert_eq!(
        sample(
            &m,
            "failover_webhook_requests_total",
            &[("result", "too_large")]
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &m,
            "failover_webhook_requests_total",
            &[("result", "accepted")]
        ),
        Some(0.0)
    );
    s.assert_no_secrets();
}

#[tokio::test]
async fn the_operator_commands_drive_the_admin_api_and_print_tables() {
    let s = Stack::start(Knobs::default()).await;
    let (ok, out) = s.cli(&["status"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("active region   us-east-1")
            && out.contains("REGION")
            && out.contains("phase           steady"),
        "{out}"
    );
    let (ok, out) = s.cli(&["failover", "--to", WEST]);
    assert!(ok, "{out}");
    assert!(out.contains("accepted; epoch 1"), "{out}");
    s.wait_steady_in(WEST, Duration::from_secs(20)).await;
    let (ok, out) = s.cli(&["status"]);
    assert!(
        ok && out.contains("operator") && out.contains("us-east-1 -> us-west-2"),
        "{out}"
    );
    // Refusals are errors with the reason.
    let (ok, out) = s.cli(&["failover", "--to", WEST]);
    assert!(!ok && out.contains("already in us-west-2"), "{out}");
    let (ok, out) = s.cli(&["pause"]);
    assert!(ok && out.contains("paused"), "{out}");
    assert_eq!(s.state().await["paused"], true);
    let (ok, _) = s.cli(&["resume"]);
    assert!(ok);
    let (ok, out) = s.cli(&["failback"]);
    assert!(ok, "{out}");
    s.wait_steady_in(EAST, Duration::from_secs(20)).await;
    assert_do_points_at(&s, EAST);
    s.assert_no_secrets();
}

#[tokio::test]
async fn a_failing_notifier_never_blocks_or_undoes_a_step() {
    let s = Stack::start(Knobs {
        notifiers_down: true,
        ..Knobs::default()
    })
    .await;
    assert_eq!(s.alert(&alert_body(EAST, true, T0)).await.0, 200);
    s.wait_steady_in(WEST, Duration::from_secs(20)).await;
    assert_do_points_at(&s, WEST);
    wait_until(
        Duration::from_secs(10),
        "failed notifications to be counted",
        || async {
            sample(
                &s.metrics().await,
                "failover_notifications_total",
                &[("channel", "webhook"), ("result", "failed")],
            )
            .unwrap_or(0.0)
                >= 2.0
        },
    )
    .await;
    assert_eq!(s.env_value().as_deref(), Some(WEST));
    s.assert_no_secrets();
}

#[tokio::test]
async fn serve_runs_both_roles_in_one_process() {
    let mut s = Stack::start(Knobs::default()).await;
    s.kill().await;
    let exporter = format!("http://127.0.0.1:{}", s.spawn_serve().await);
    wait_until(Duration::from_secs(20), "both roles to answer", || async {
        let probes = reqwest::get(format!("{exporter}/metrics")).await.ok();
        let probes = match probes {
            Some(r) => r.text().await.unwrap_or_default(),
            None => return false,
        };
        let ready = reqwest::get(format!("{}/readyz", s.base()))
            .await
            .is_ok_and(|r| r.status() == 200);
        ready
            && sample(
                &probes,
                "dynamodb_probe_success",
                &[("region", WEST), ("operation", "read")],
            ) == Some(1.0)
    })
    .await;
    assert_eq!(s.alert(&alert_body(EAST, true, T0)).await.0, 200);
    s.wait_steady_in(WEST, Duration::from_secs(20)).await;
}

#[tokio::test]
async fn a_flood_of_distinct_alerts_keeps_the_state_file_bounded_and_the_real_alert_moves_once() {
    let s = Stack::start(Knobs::default()).await;
    let took = s.flood(0, WEST, T0).await;
    println!("flood bodies answered in {took:?} ms");
    let size = std::fs::metadata(s.path("state.json")).unwrap().len();
    println!("state file after the flood: {size} bytes");
    assert!(size < 128 * 1024, "{size} bytes");
    assert_eq!(s.state().await["regions"][WEST]["down"], false);
    assert_eq!(s.alert(&alert_body(EAST, true, T0)).await.0, 200);
    s.wait_steady_in(WEST, Duration::from_secs(30)).await;
    let st = s.state().await;
    assert_eq!(st["epoch"], 1);
    assert_eq!(st["transitions"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn with_its_state_lost_while_traffic_is_away_it_refuses_to_start_until_the_placement_is_adopted(
) {
    let mut s = Stack::start(Knobs::default()).await;
    s.kill().await;
    std::fs::remove_file(s.path("state.json")).unwrap();
    // The application's env file says west.
    let app_env = s.path("app.env");
    let env = |region: &str| {
        std::fs::write(
            &app_env,
            format!("# WordPress\nWP_ENV=production\nDYNAMODB_REGION={region}\n"),
        )
        .unwrap()
    };
    env(WEST);
    let (status, out) = s.spawn_expecting_exit(0).await;
    assert!(!status.success(), "{out}");
    assert!(
        out.contains("app_config points at us-west-2")
            && out.contains("dynamo-failover adopt --region us-west-2"),
        "{out}"
    );
    assert!(
        !s.path("state.json").exists(),
        "a refused start stored a state"
    );
    // A load balancer alone says west.
    env(EAST);
    let mut lb = s.fake.load_balancer("lb-tag").unwrap();
    lb["tag"] = json!("wp-west");
    lb["region"] = json!("nyc1");
    s.fake.put_load_balancer(lb);
    let (status, out) = s.spawn_expecting_exit(0).await;
    assert!(!status.success(), "{out}");
    assert!(
        out.contains("load_balancer:lb-tag points at us-west-2"),
        "{out}"
    );
    // Adopted, it starts with traffic in west.
    let (ok, out) = s.cli(&["adopt", "--region", WEST]);
    assert!(ok, "{out}");
    s.spawn().await;
    let st = s.state().await;
    assert_eq!(
        (st["active_region"].as_str(), st["epoch"].as_u64()),
        (Some(WEST), Some(0))
    );
    // There is a state now: adopt refuses.
    let (ok, out) = s.cli(&["adopt", "--region", EAST]);
    assert!(!ok, "{out}");
}

#[tokio::test]
async fn a_target_whose_application_does_not_serve_is_rejected_until_it_does() {
    // us-west-2's DynamoDB is healthy; its application stand-in names no database region yet,
    // so its health URL answers 503.
    let mut s = Stack::prepare(Knobs::default()).await;
    let env = s.path("app-west.env");
    std::fs::write(&env, "# not configured yet\n").unwrap();
    let app = testkit::users::AppStandin::start(&s, WEST, &env).await;
    s.launch(&[(WEST, format!("{}/healthz", app.url()))]).await;
    assert_eq!(s.alert(&alert_body(EAST, true, T0)).await.0, 200);
    wait_until(
        Duration::from_secs(15),
        "the move to be blocked",
        || async { s.state().await["phase"] == "blocked" },
    )
    .await;
    let st = s.state().await;
    assert!(
        st["blocked"]
            .as_str()
            .unwrap()
            .contains("us-west-2: failed its live check"),
        "{st}"
    );
    assert!(s.fake.changes().is_empty(), "{:?}", s.fake.changes());
    wait_until(Duration::from_secs(5), "the rejection notice", || async {
        s.inbox.titled("failed its live check").iter().any(|n| {
            n["text"]
                .as_str()
                .unwrap_or("")
                .contains("application check app0 of us-west-2: bad_status")
        })
    })
    .await;
    // The application serves again: the next live check passes and traffic moves.
    std::fs::write(&env, "DYNAMODB_REGION=us-west-2\n").unwrap();
    app.reload();
    s.wait_steady_in(WEST, Duration::from_secs(20)).await;
    assert_eq!(s.fake.load_balancer("lb-tag").unwrap()["tag"], "wp-west");
    assert!(
        s.logs().contains("and 1 application check(s)"),
        "the passing live check does not mention the application check"
    );
    s.assert_no_secrets();
}

#[tokio::test]
async fn an_application_down_alert_never_moves_traffic_and_keeps_traffic_out_of_its_region() {
    let s = Stack::start(Knobs::default()).await;
    let app_down = |region: &str, firing: bool| {
        named_alert_body(
            "AppRegionUnavailable",
            region,
            &format!("app-{region}"),
            firing,
            T0,
        )
    };
    // On the active region: recorded, and nothing moves.
    assert_eq!(s.alert(&app_down(EAST, true)).await.0, 200);
    let st = s.state().await;
    assert_eq!(st["regions"][EAST]["app_down"], true, "{st}");
    assert_eq!(st["regions"][EAST]["down"], false, "{st}");
    // An observation window: several responder ticks (200 ms) in which a move could start.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let st = s.state().await;
    assert!(st["plan"].is_null() && st["blocked"].is_null(), "{st}");
    assert_eq!(st["active_region"], EAST);
    assert_eq!(s.alert(&app_down(EAST, false)).await.0, 200);

    // On the only other region: DynamoDB failing in us-east-1 cannot move traffic there.
    assert_eq!(s.alert(&app_down(WEST, true)).await.0, 200);
    assert_eq!(s.alert(&alert_body(EAST, true, T0)).await.0, 200);
    wait_until(
        Duration::from_secs(10),
        "the move to be blocked",
        || async { s.state().await["phase"] == "blocked" },
    )
    .await;
    let st = s.state().await;
    assert!(
        st["blocked"]
            .as_str()
            .unwrap()
            .contains("us-west-2: application-down alert firing"),
        "{st}"
    );
    assert!(s.fake.changes().is_empty(), "{:?}", s.fake.changes());
    // Its application comes back: the move goes ahead.
    assert_eq!(s.alert(&app_down(WEST, false)).await.0, 200);
    s.wait_steady_in(WEST, Duration::from_secs(15)).await;
    s.assert_no_secrets();
}
