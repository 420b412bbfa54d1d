//! The application servers' agents, on real processes: a responder (or two replicas) and agent
//! processes, each with its own env file. A failover switches every agent's file and the agents
//! step completes only when the target region's agents have acknowledged; a silent agent fails the
//! step by name and the retry completes once it is back; restarts catch up; a stale answer never
//! rolls an agent back; tokens speak for one agent only; no secret in any log.

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use serde_json::{json, Value};
use testkit::stack::*;
use testkit::wait_until;

const T0: &str = "2026-11-29T05:49:00.000Z";

fn with_agents(agents: Vec<(&'static str, &'static str)>) -> Knobs {
    Knobs {
        agents,
        step_deadline: "15s",
        ..Knobs::default()
    }
}

/// Waits until agent `name`'s file says `region` at `epoch`.
async fn applied(s: &Stack, name: &str, region: &str, epoch: u64) {
    wait_until(
        Duration::from_secs(20),
        &format!("{name} to apply {region} epoch {epoch}"),
        || async { s.agent_env(name) == (Some(region.to_string()), Some(epoch)) },
    )
    .await;
}

/// Waits until the responder has agent `name`'s acknowledgement of `epoch`.
async fn acknowledged(s: &Stack, name: &str, epoch: u64) {
    wait_until(
        Duration::from_secs(20),
        &format!("the responder to hold {name}'s acknowledgement of epoch {epoch}"),
        || async { s.state().await["agents"][name]["ack"]["epoch"] == epoch },
    )
    .await;
}

#[tokio::test]
async fn a_failover_switches_every_agents_file_and_completes_only_after_the_last_acknowledgement() {
    let mut s = Stack::start(with_agents(vec![
        ("wp-1", WEST),
        ("wp-2", WEST),
        ("wp-3", WEST),
        ("wp-east", EAST),
    ]))
    .await;
    for a in ["wp-1", "wp-2", "wp-east"] {
        s.spawn_agent(a).await;
    }
    for a in ["wp-1", "wp-2", "wp-east"] {
        applied(&s, a, EAST, 0).await;
        acknowledged(&s, a, 0).await;
    }
    assert_eq!(s.alert(&alert_body(EAST, true, T0)).await.0, 200);
    for a in ["wp-1", "wp-2", "wp-east"] {
        applied(&s, a, WEST, 1).await;
        acknowledged(&s, a, 1).await;
    }
    // Two of west's three agents have applied: the plan waits at its agents step.
    let st = s.state().await;
    let steps = st["plan"]["steps"].as_array().cloned().unwrap_or_default();
    let agents_step = steps
        .iter()
        .find(|x| x["kind"] == "agents")
        .expect("an agents step");
    assert_eq!(agents_step["done"], false, "{st}");
    assert_eq!(st["active_region"], EAST);
    // The third comes up, catches up and acknowledges: the plan completes.
    s.spawn_agent("wp-3").await;
    applied(&s, "wp-3", WEST, 1).await;
    s.wait_steady_in(WEST, Duration::from_secs(20)).await;
    let st = s.state().await;
    let detail = st["transitions"][0]["reason"].as_str().unwrap_or_default();
    assert!(!detail.is_empty());
    for a in ["wp-1", "wp-2", "wp-3", "wp-east"] {
        assert_eq!(st["agents"][a]["ack"]["epoch"], 1, "{a}");
        // Each applied epoch 1 exactly once.
        let reloads = s.agent_reloads(a);
        assert_eq!(
            reloads.iter().filter(|r| r.ends_with("epoch 1")).count(),
            1,
            "{a}: {reloads:?}"
        );
        // Written with the configured mode and group.
        let m = std::fs::metadata(s.agent_env_path(a)).unwrap();
        assert_eq!(m.mode() & 0o777, 0o640, "{a}");
        let gid = dynamo_failover::config::agent::group_id(
            if std::fs::read_to_string("/proc/self/status")
                .unwrap()
                .lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
            {
                "nogroup"
            } else {
                "0"
            },
        );
        if let Some(g) = gid.filter(|g| *g != 0) {
            assert_eq!(m.gid(), g, "{a}");
        }
    }
    let m = s.metrics().await;
    assert_eq!(
        testkit::sample(&m, "failover_agent_applied_epoch", &[("agent", "wp-3")]),
        Some(1.0)
    );
    assert!(
        testkit::sample(
            &m,
            "failover_agent_last_seen_timestamp_seconds",
            &[("agent", "wp-1")]
        )
        .unwrap()
            > 0.0
    );
    s.assert_no_secrets();
}

#[tokio::test]
async fn a_silent_agent_fails_the_step_by_name_and_the_retry_completes_once_it_is_back() {
    let mut s = Stack::start(Knobs {
        step_deadline: "3s",
        ..with_agents(vec![("wp-1", WEST), ("wp-2", WEST)])
    })
    .await;
    s.spawn_agent("wp-1").await;
    acknowledged(&s, "wp-1", 0).await;
    assert_eq!(s.alert(&alert_body(EAST, true, T0)).await.0, 200);
    wait_until(
        Duration::from_secs(20),
        "the plan to fail at the agents step",
        || async { s.state().await["plan"]["status"] == "failed" },
    )
    .await;
    let err = s.state().await["plan"]["last_error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(err.contains("wp-2 (never heard from)"), "{err}");
    assert!(!err.contains("wp-1 ("), "{err}");
    wait_until(Duration::from_secs(10), "a FAILED notice", || async {
        !s.inbox.titled("FAILED").is_empty()
    })
    .await;
    // wp-2 comes up; the plan's retry (after its backoff) completes.
    s.spawn_agent("wp-2").await;
    s.wait_steady_in(WEST, Duration::from_secs(30)).await;
    assert_eq!(s.agent_env("wp-2"), (Some(WEST.into()), Some(1)));
}

#[tokio::test]
async fn agents_restarted_before_or_after_applying_catch_up_without_applying_twice() {
    let mut s = Stack::start(with_agents(vec![("wp-1", WEST), ("wp-2", WEST)])).await;
    s.spawn_agent("wp-1").await;
    s.spawn_agent("wp-2").await;
    acknowledged(&s, "wp-1", 0).await;
    acknowledged(&s, "wp-2", 0).await;
    // wp-2 is down when the placement changes.
    s.kill_agent("wp-2").await;
    assert_eq!(s.alert(&alert_body(EAST, true, T0)).await.0, 200);
    applied(&s, "wp-1", WEST, 1).await;
    s.spawn_agent("wp-2").await;
    s.wait_steady_in(WEST, Duration::from_secs(30)).await;
    assert_eq!(s.agent_env("wp-2"), (Some(WEST.into()), Some(1)));
    // wp-1 restarts after applying: it reads its file and does not apply epoch 1 again.
    s.kill_agent("wp-1").await;
    s.spawn_agent("wp-1").await;
    wait_until(
        Duration::from_secs(10),
        "wp-1 to reach a responder again",
        || async {
            s.agent_logs().matches("agent started").count() >= 4
                && reqwest::get(format!(
                    "http://127.0.0.1:{}/healthz",
                    s.agents.iter().find(|a| a.name == "wp-1").unwrap().port
                ))
                .await
                .is_ok_and(|r| r.status() == 200)
        },
    )
    .await;
    let reloads = s.agent_reloads("wp-1");
    assert_eq!(
        reloads.iter().filter(|r| r.ends_with("epoch 1")).count(),
        1,
        "{reloads:?}"
    );
}

#[tokio::test]
async fn with_two_replicas_the_agents_follow_whichever_answers() {
    let mut s = Stack::start(Knobs {
        replicas: 2,
        lease: "3s",
        ..with_agents(vec![("wp-1", WEST), ("wp-2", WEST)])
    })
    .await;
    s.spawn_agent("wp-1").await;
    s.spawn_agent("wp-2").await;
    acknowledged(&s, "wp-1", 0).await;
    acknowledged(&s, "wp-2", 0).await;
    // The first replica in every agent's list goes away; the other answers.
    s.kill_replica(0).await;
    let (status, _) = s.post_to(1, "/alerts", &alert_body(EAST, true, T0)).await;
    assert_eq!(status, 200);
    for a in ["wp-1", "wp-2"] {
        applied(&s, a, WEST, 1).await;
    }
    wait_until(Duration::from_secs(30), "the plan to complete", || async {
        let st = s.state_of(1).await;
        st["active_region"] == WEST && st["plan"].is_null()
    })
    .await;
}

#[tokio::test]
async fn an_agent_token_speaks_for_its_own_agent_only_and_nothing_it_sends_moves_traffic() {
    let mut s = Stack::start(with_agents(vec![("wp-1", WEST), ("wp-2", WEST)])).await;
    s.spawn_agent("wp-1").await;
    acknowledged(&s, "wp-1", 0).await;
    let token = |name: &str| {
        dynamo_failover::failover::agents::agent_token(
            &dynamo_failover::secret::Secret::new(AGENTS_SECRET),
            name,
        )
    };
    let get = |name: &str, tok: Option<String>| {
        let mut r = s
            .http
            .get(format!("{}/v1/agents/{name}/placement", s.base()));
        if let Some(t) = tok {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    assert_eq!(get("wp-1", None).await.unwrap().status(), 401);
    assert_eq!(
        get("wp-2", Some(token("wp-1"))).await.unwrap().status(),
        401
    );
    assert_eq!(
        get("wp-9", Some(token("wp-9"))).await.unwrap().status(),
        401
    );
    assert_eq!(
        get("wp-1", Some(WEBHOOK_TOKEN.into()))
            .await
            .unwrap()
            .status(),
        401
    );
    let ok = get("wp-1", Some(token("wp-1"))).await.unwrap();
    assert_eq!(ok.status(), 200);
    let p: Value = ok.json().await.unwrap();
    assert_eq!(
        (p["region"].as_str(), p["epoch"].as_u64()),
        (Some(EAST), Some(0))
    );
    // wp-1's token cannot acknowledge for wp-2, and an acknowledgement of a region moves nothing.
    let ack = |name: &str, tok: String| {
        s.http
            .post(format!("{}/v1/agents/{name}/ack", s.base()))
            .bearer_auth(tok)
            .json(&json!({"epoch": 9, "region": WEST, "ok": true, "detail": "made up", "lineage": p["lineage"]}))
            .send()
    };
    assert_eq!(ack("wp-2", token("wp-1")).await.unwrap().status(), 401);
    assert_eq!(ack("wp-1", token("wp-1")).await.unwrap().status(), 200);
    let st = s.state().await;
    assert_eq!(
        (st["active_region"].as_str(), st["epoch"].as_u64()),
        (Some(EAST), Some(0))
    );
    assert!(st["plan"].is_null());
    assert_eq!(st["placement"]["region"], EAST);
    s.assert_no_secrets();
}

/// A stand-in responder that answers a newer placement, then an older one (a replica behind).
#[tokio::test]
async fn a_stale_lower_epoch_answer_never_rolls_an_agent_back() {
    use axum::routing::{get, post};
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let c2 = calls.clone();
    let app = axum::Router::new()
        .route(
            "/v1/agents/{name}/placement",
            get(move || {
                let n = c2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                async move {
                    if n == 0 {
                        axum::Json(json!({"region": WEST, "epoch": 5, "acked": false}))
                    } else {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        axum::Json(json!({"region": EAST, "epoch": 3, "acked": false}))
                    }
                }
            }),
        )
        .route(
            "/v1/agents/{name}/ack",
            post(|| async { axum::Json(json!({"recorded": true})) }),
        );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(l, app).await.ok() });
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    std::fs::write(dir.path().join("token"), "t-0123456789abcdef").unwrap();
    let cfg = format!(
        "[agent]\nname = \"wp-1\"\nresponders = [\"http://127.0.0.1:{port}\"]\ntoken_file = \"{d}/token\"\n\
         listen = \"127.0.0.1:0\"\npoll_wait = \"1s\"\nenv_file = \"{d}/app.env\"\n"
    );
    std::fs::write(dir.path().join("agent.toml"), cfg).unwrap();
    let mut child = tokio::process::Command::new(testkit::binary())
        .args(["agent", "--config"])
        .arg(dir.path().join("agent.toml"))
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let env = dir.path().join("app.env");
    wait_until(
        Duration::from_secs(20),
        "the agent to apply epoch 5",
        || async {
            std::fs::read_to_string(&env).is_ok_and(|t| t.contains("DYNAMO_FAILOVER_EPOCH=5"))
        },
    )
    .await;
    // Several stale answers later, the file still says west at epoch 5.
    wait_until(Duration::from_secs(20), "three stale answers", || async {
        calls.load(std::sync::atomic::Ordering::SeqCst) >= 4
    })
    .await;
    let text = std::fs::read_to_string(&env).unwrap();
    assert!(
        text.contains(&format!("DYNAMODB_REGION={WEST}"))
            && text.contains("DYNAMO_FAILOVER_EPOCH=5"),
        "{text}"
    );
    child.kill().await.ok();
}

#[tokio::test]
async fn after_the_state_is_lost_the_agents_follow_the_new_one_whatever_its_epochs() {
    let mut s = Stack::start(with_agents(vec![("wp-1", WEST)])).await;
    s.spawn_agent("wp-1").await;
    acknowledged(&s, "wp-1", 0).await;
    // Away and back: the agent's file says us-east-1 at epoch 2.
    assert_eq!(s.alert(&alert_body(EAST, true, T0)).await.0, 200);
    applied(&s, "wp-1", WEST, 1).await;
    s.wait_steady_in(WEST, Duration::from_secs(20)).await;
    assert_eq!(s.alert(&alert_body(EAST, false, T0)).await.0, 200);
    applied(&s, "wp-1", EAST, 2).await;
    s.wait_steady_in(EAST, Duration::from_secs(20)).await;
    let before = s.state().await["placement"]["lineage"].clone();
    // The state is lost with traffic at home: a new one starts again at epoch 0.
    s.kill().await;
    std::fs::remove_file(s.path("state.json")).unwrap();
    s.spawn().await;
    let st = s.state().await;
    assert_eq!(st["epoch"], 0);
    assert_ne!(st["placement"]["lineage"], before, "{st}");
    // The new responder listens on a new port: the agent is pointed at it (its file is kept).
    s.kill_agent("wp-1").await;
    s.spawn_agent("wp-1").await;
    acknowledged(&s, "wp-1", 0).await;
    // us-east-1 fails again: epoch 1, below the 2 the agent applied, and it still follows.
    assert_eq!(s.alert(&alert_body(EAST, true, T0)).await.0, 200);
    applied(&s, "wp-1", WEST, 1).await;
    s.wait_steady_in(WEST, Duration::from_secs(20)).await;
}

#[tokio::test]
async fn a_newer_placement_request_of_an_agent_releases_the_one_it_held() {
    let mut s = Stack::start(with_agents(vec![("wp-1", WEST)])).await;
    s.spawn_agent("wp-1").await;
    acknowledged(&s, "wp-1", 0).await;
    // The agent stops; its token is used by hand (as a second process holding it would).
    s.kill_agent("wp-1").await;
    let token = std::fs::read_to_string(s.path("agent-wp-1.token")).unwrap();
    let lineage = s.state().await["placement"]["lineage"]
        .as_str()
        .unwrap()
        .to_string();
    let url = format!(
        "{}/v1/agents/wp-1/placement?applied=0&wait_ms=30000&lineage={lineage}",
        s.base()
    );
    let poll = |url: String, token: String| async move {
        let started = std::time::Instant::now();
        let r = reqwest::Client::new()
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        started.elapsed()
    };
    let first = tokio::spawn(poll(url.clone(), token.clone()));
    // Nothing is new for it: it is held (an observation window of half a second).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!first.is_finished(), "the first request was not held");
    let second = tokio::spawn(poll(url, token));
    let held = tokio::time::timeout(Duration::from_secs(5), first)
        .await
        .expect("the first request is answered once the second arrives")
        .unwrap();
    assert!(held < Duration::from_secs(10), "{held:?}");
    // The second is the one held now.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!second.is_finished());
    second.abort();
}
