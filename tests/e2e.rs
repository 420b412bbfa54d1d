//! The whole chain for real: three exporter processes (three probers) -> Prometheus (the fast
//! profile derived from prometheus/) -> Alertmanager (derived from alertmanager/) -> the
//! responder's webhook -> the fake DigitalOcean API and the application's env file.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::stack::*;
use common::*;
use serde_json::Value;
use tokio::process::{Child, Command};

/// The fast profile's fault-to-verified-move budget: probe interval 1 s + scrape 1 s + evaluation
/// 1 s + the 3 s window + Alertmanager and the responder, with room for a loaded 2-core machine.
const MOVE_BUDGET: Duration = Duration::from_secs(12);

struct Chain {
    stack: Stack,
    procs: Vec<Child>,
    prom: String,
    dir: tempfile::TempDir,
    /// Between every prober and us-east-1, with `east_gated`: can refuse writes.
    gate: Option<WriteGate>,
}

fn spawn_logged(dir: &Path, name: &str, cmd: &mut Command) -> Child {
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    cmd.stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {name}: {e} (run the tests through scripts/test)"))
}

async fn wait_http_ok(url: &str, what: &str) {
    let http = reqwest::Client::new();
    wait_until(START_LIMIT, what, || {
        let (http, url) = (http.clone(), url.to_string());
        async move {
            http.get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        }
    })
    .await;
}

impl Chain {
    /// Starts everything. `blackhole_east_for` names probers whose path to us-east-1 is cut;
    /// with `east_gated` every prober reaches us-east-1 through a [`WriteGate`].
    async fn start(blackhole_east_for: &[&str], east_gated: bool) -> Chain {
        let stack = Stack::start(Knobs::default()).await;
        let gate = if east_gated {
            Some(WriteGate::start(stack.east.port).await)
        } else {
            None
        };
        let dir = tempfile::tempdir().unwrap();
        let (hole, _h) = blackhole().await;
        std::mem::forget(_h); // the blackhole lives as long as the test
        let mut procs = Vec::new();
        let mut exporters = Vec::new();
        // Every process binds port 0; the ports are read back from its log or from /proc.
        for prober in ["p1", "p2", "p3"] {
            let east = if blackhole_east_for.contains(&prober) {
                hole.clone()
            } else if let Some(g) = &gate {
                g.endpoint()
            } else {
                stack.east.endpoint()
            };
            let cfg = format!(
                "[prober]\nid = \"{prober}\"\ninterval = \"1s\"\nattempt_timeout = \"300ms\"\ntimeout = \"800ms\"\n\n\
                 [exporter]\nlisten = \"127.0.0.1:0\"\n\n\
                 [[region]]\nname = \"{EAST}\"\nendpoint = \"{east}\"\npriority = 1\n\n\
                 [[region]]\nname = \"{WEST}\"\nendpoint = \"{west}\"\npriority = 2\n\n\
                 [[table]]\nname = \"{TABLE}\"\n",
                west = stack.west.endpoint()
            );
            let path = dir.path().join(format!("{prober}.toml"));
            std::fs::write(&path, cfg).unwrap();
            let mut child = spawn_logged(
                dir.path(),
                prober,
                Command::new(BIN)
                    .args(["exporter", "--log-format", "json", "--config"])
                    .arg(&path)
                    .env("AWS_ACCESS_KEY_ID", "testing")
                    .env("AWS_SECRET_ACCESS_KEY", "testing")
                    .env("AWS_EC2_METADATA_DISABLED", "true"),
            );
            let log = dir.path().join(format!("{prober}.log"));
            let port = wait_logged_port(&mut child, &log, "exporter started").await;
            procs.push(child);
            exporters.push(format!("127.0.0.1:{port}"));
        }
        let profile = dir.path().join("profile");
        // The monitoring files, derived from the shipped ones; Prometheus needs Alertmanager's
        // address, known once Alertmanager listens.
        let derive = |alertmanager: &str| {
            let out = std::process::Command::new("python3")
                .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/lib/profile.py"))
                .arg(&profile)
                .args(["--fast", "--exporters", &exporters.join(",")])
                .args(["--responder", &format!("127.0.0.1:{}", stack.port)])
                .args(["--alertmanager", alertmanager])
                .arg("--webhook-token-file")
                .arg(stack.path("webhook.token"))
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "profile.py: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        derive("127.0.0.1:9");
        let mut am = spawn_logged(
            dir.path(),
            "alertmanager",
            Command::new("prometheus-alertmanager")
                .arg(format!(
                    "--config.file={}",
                    profile.join("alertmanager.yml").display()
                ))
                .arg(format!(
                    "--storage.path={}",
                    dir.path().join("am-data").display()
                ))
                .arg("--web.listen-address=127.0.0.1:0")
                .arg("--cluster.listen-address="),
        );
        let am_port = wait_listening(&mut am, "Alertmanager").await;
        procs.push(am);
        derive(&format!("127.0.0.1:{am_port}"));
        let mut prometheus = spawn_logged(
            dir.path(),
            "prometheus",
            Command::new("prometheus")
                .arg(format!(
                    "--config.file={}",
                    profile.join("prometheus.yml").display()
                ))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("prom-data").display()
                ))
                .arg("--web.listen-address=127.0.0.1:0"),
        );
        let prom_port = wait_listening(&mut prometheus, "Prometheus").await;
        procs.push(prometheus);
        let prom = format!("http://127.0.0.1:{prom_port}");
        wait_http_ok(
            &format!("http://127.0.0.1:{am_port}/-/ready"),
            "Alertmanager to be ready",
        )
        .await;
        wait_http_ok(&format!("{prom}/-/ready"), "Prometheus to be ready").await;
        let chain = Chain {
            stack,
            procs,
            prom,
            dir,
            gate,
        };
        wait_until(
            Duration::from_secs(30),
            "every target up and three probers reporting",
            || async {
                chain.value("count(up == 1)").await == Some(4.0)
                    && chain
                        .value("dynamodb:region:reporting_probers{region=\"us-east-1\"}")
                        .await
                        == Some(3.0)
            },
        )
        .await;
        chain
    }

    async fn query(&self, q: &str) -> Vec<Value> {
        let r: Value = reqwest::Client::new()
            .get(format!("{}/api/v1/query", self.prom))
            .query(&[("query", q)])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(r["status"], "success", "query {q}: {r}");
        r["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    async fn value(&self, q: &str) -> Option<f64> {
        self.query(q).await.first()?["value"][1]
            .as_str()?
            .parse()
            .ok()
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default()
    }
}

impl Drop for Chain {
    fn drop(&mut self) {
        for p in &mut self.procs {
            let _ = p.start_kill();
        }
    }
}

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
