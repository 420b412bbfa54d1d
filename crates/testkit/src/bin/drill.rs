//! The failover drill of `scripts/demo`: the chain the end-to-end test runs (two moto regions,
//! three probers, Prometheus, Alertmanager, the responder, the fake DigitalOcean API), with the
//! fast profile; the home region dies and comes back, narrated as it happens, and a summary with
//! the recovery times. The application is there too: one stand-in per region reconfigured by its
//! agent, users writing every 100 ms where DNS points, replication between the regions with a
//! lag; the drill measures when users' writes succeed again and which acknowledged writes were
//! lost, next to the data at risk the failover notice claimed.
//!
//! ```text
//! drill [--dir DIR] [--keep] [--repeat N] [--replication-lag SECONDS]
//! ```

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use testkit::chain::{Chain, ChainOpts};
use testkit::stack::*;
use testkit::*;

struct Args {
    dir: PathBuf,
    keep: bool,
    repeat: usize,
    lag: Duration,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        dir: root().join(".cache/demo"),
        keep: false,
        repeat: 1,
        lag: Duration::from_secs(2),
    };
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        match x.as_str() {
            "--dir" => a.dir = PathBuf::from(it.next().ok_or("--dir needs a directory")?),
            "--keep" => a.keep = true,
            "--repeat" => {
                a.repeat = it
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|n| *n >= 1)
                    .ok_or("--repeat needs a number of drills, 1 or more")?
            }
            "--replication-lag" => {
                a.lag = it
                    .next()
                    .and_then(|n| n.parse::<f64>().ok())
                    .filter(|n| (0.0..=30.0).contains(n))
                    .map(Duration::from_secs_f64)
                    .ok_or("--replication-lag needs seconds, 0 to 30")?
            }
            other => {
                return Err(format!(
                    "unknown argument {other} (--dir DIR, --keep, --repeat N, --replication-lag SECONDS)"
                ))
            }
        }
    }
    Ok(a)
}

/// `HH:MM:SS.d` (UTC) of a Unix time in seconds.
fn stamp(t: f64) -> String {
    let s = t as u64;
    format!(
        "{:02}:{:02}:{:02}.{}",
        (s / 3600) % 24,
        (s / 60) % 60,
        s % 60,
        ((t.fract()) * 10.0) as u64
    )
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn say(what: &str) {
    println!("  {}  {what}", stamp(now()));
}

/// Watches the probers, Prometheus, the responder's log and the notifications, and tells each
/// change once, in the order it happened (by each source's own timestamp where it has one).
struct Narrator {
    seen: BTreeSet<String>,
    queue: Vec<(f64, String)>,
    log_lines: usize,
    notes: usize,
    phase: &'static str,
}

impl Narrator {
    fn add(&mut self, key: String, when: f64, what: String) {
        if self.seen.insert(key) {
            self.queue.push((when, what));
        }
    }

    fn flush(&mut self, everything: bool) {
        let cutoff = if everything { f64::MAX } else { now() - 1.0 };
        self.queue.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
        let (ready, rest): (Vec<_>, Vec<_>) = self.queue.drain(..).partition(|(w, _)| *w <= cutoff);
        self.queue = rest;
        for (when, what) in ready {
            println!("  {}  {what}", stamp(when));
        }
    }

    fn start_phase(&mut self, phase: &'static str) {
        self.flush(true);
        self.seen.clear();
        self.phase = phase;
    }

    async fn poll(&mut self, c: &Chain) {
        let t = now();
        let ph = self.phase;
        for (i, e) in c.exporters.iter().enumerate() {
            let p = format!("p{}", i + 1);
            let Ok(r) = reqwest::get(format!("http://{e}/metrics")).await else {
                continue;
            };
            let text = r.text().await.unwrap_or_default();
            let ok = sample(
                &text,
                "dynamodb_probe_success",
                &[("region", EAST), ("operation", "read")],
            );
            match (ok, ph) {
                (Some(0.0), "fault") => self.add(
                    format!("fail-{p}"),
                    t,
                    format!("probe: {p} sees {EAST} failing"),
                ),
                (Some(1.0), "restore") => self.add(
                    format!("ok-{p}"),
                    t,
                    format!("probe: {p} sees {EAST} healthy again"),
                ),
                _ => {}
            }
        }
        if let Ok(r) = reqwest::get(format!("{}/api/v1/alerts", c.prom)).await {
            let v: Value = r.json().await.unwrap_or(Value::Null);
            let mine: Vec<&Value> = v["data"]["alerts"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|a| a["labels"]["alertname"] == "DynamoDBRegionUnavailable")
                .collect();
            for a in &mine {
                if a["state"] == "pending" {
                    let at = a["activeAt"]
                        .as_str()
                        .and_then(dynamo_failover::alert::rfc3339_ms)
                        .map_or(t, |ms| ms as f64 / 1000.0);
                    self.add(
                        "pending".into(),
                        at,
                        "Prometheus: DynamoDBRegionUnavailable pending (a quorum of probers agree; the 3 s window runs)".into(),
                    );
                } else if ph == "fault" {
                    let op = a["annotations"]["operation"].as_str().unwrap_or("?");
                    self.add(
                        "firing".into(),
                        t,
                        format!("Prometheus: DynamoDBRegionUnavailable firing ({op} failing) -> Alertmanager"),
                    );
                }
            }
            if mine.is_empty() && ph == "restore" {
                self.add(
                    "resolved".into(),
                    t,
                    "Prometheus: DynamoDBRegionUnavailable resolved".into(),
                );
            }
        }
        let notes = c.stack.inbox.all_timed();
        for (_, n, at) in notes
            .iter()
            .skip(self.notes)
            .filter(|(p, _, _)| p == "/hook")
        {
            let at = at.duration_since(UNIX_EPOCH).map_or(t, |d| d.as_secs_f64());
            self.queue.push((
                at,
                format!("notification: {}", n["title"].as_str().unwrap_or("")),
            ));
        }
        self.notes = notes.len();
        let log = c.stack.logs();
        let lines: Vec<&str> = log.lines().collect();
        for line in lines.iter().skip(self.log_lines) {
            let Ok(e) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            let when = e["timestamp"]
                .as_str()
                .and_then(dynamo_failover::alert::rfc3339_ms)
                .map_or(t, |ms| ms as f64 / 1000.0);
            let f = |k: &str| {
                e[k].as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| e[k].to_string())
            };
            let what = match e["message"].as_str().unwrap_or("") {
                "webhook received" => format!("responder: webhook received ({})", f("status")),
                m @ ("live check passed" | "live check failed") => {
                    format!("responder: {m} for {} (epoch {})", f("to"), f("epoch"))
                }
                "agent acknowledged" => format!(
                    "agent {}: applied {} (epoch {}){}",
                    f("agent"),
                    f("region"),
                    f("epoch"),
                    if e["ok"] == true { "" } else { " FAILED" }
                ),
                "step done" => format!(
                    "responder: step verified: {} (epoch {})",
                    f("step"),
                    f("epoch")
                ),
                "step failed" => format!("responder: step failed: {}: {}", f("step"), f("error")),
                _ => continue,
            };
            self.queue.push((when, what));
        }
        self.log_lines = lines.len();
        self.flush(false);
    }
}

async fn settled_in(s: &Stack, region: &str) -> bool {
    let st = s.state().await;
    st["active_region"] == region && st["plan"].is_null()
}

/// Narrates until traffic has settled in `region`; the reason when it does not in time.
async fn follow(n: &mut Narrator, c: &Chain, region: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        n.poll(c).await;
        if settled_in(&c.stack, region).await {
            tokio::time::sleep(Duration::from_millis(300)).await;
            n.poll(c).await;
            n.flush(true);
            return Ok(());
        }
        if Instant::now() > deadline {
            n.flush(true);
            return Err(format!(
                "traffic did not settle in {region} in time; the logs are in {}",
                c.dir.path().display()
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One drill's figures.
struct Row {
    cycle: usize,
    /// Fault to the verified move, seconds.
    moved: f64,
    /// Fault to the first user write that succeeded, seconds.
    user_recovery: f64,
    /// Restore to the verified failback, seconds.
    failed_back: f64,
    /// User writes acknowledged by the failed region that never reached the other.
    lost: usize,
    /// How far before the fault the oldest of them was acknowledged, seconds.
    window: f64,
    /// The data at risk the completion notice claimed, seconds.
    at_risk: Option<f64>,
    /// The replication stand-in's slowest pass out of the failed region in the notice's
    /// look-back, seconds: a canary waits up to one pass to be seen and one more to be copied,
    /// and the probers measure that as lag too.
    pass: f64,
}

impl Row {
    /// The notice's figure bounds the loss, by no more than one probe interval (1 s), two passes
    /// of the replication stand-in and the 0.3 s tests/e2e.rs allows for users' writes.
    fn agrees(&self) -> bool {
        self.at_risk.is_some_and(|r| {
            r + 0.3 >= self.window && r <= self.window + 1.0 + 2.0 * self.pass + 0.3
        })
    }
}

fn secs_between(a: SystemTime, b: SystemTime) -> f64 {
    b.duration_since(a).unwrap_or_default().as_secs_f64()
}

/// User writes acknowledged by us-east-1 between `since` (this drill's start) and `fault_at` and missing from us-west-2 (the
/// replication stand-in has stopped copying out of the dead region), and how far before the
/// fault the oldest of them was.
async fn lost_writes(c: &Chain, since: SystemTime, fault_at: SystemTime) -> (usize, f64) {
    let users = c.users.as_ref().expect("the drill runs users");
    let acked: Vec<_> = users
        .writes()
        .into_iter()
        .filter(|w| w.wrote.as_deref() == Some(EAST) && w.at >= since && w.at < fault_at)
        .collect();
    let lost = testkit::users::missing_in(&c.stack.west, WEST, &acked).await;
    let window = acked
        .iter()
        .filter(|w| lost.contains(&w.id))
        .map(|w| secs_between(w.at, fault_at))
        .fold(0.0, f64::max);
    (lost.len(), window)
}

/// The data at risk (seconds) of the completion notice of the move to us-west-2 after `fault_at`.
fn data_at_risk(c: &Chain, fault_at: SystemTime) -> Option<f64> {
    c.stack
        .inbox
        .all_timed()
        .into_iter()
        .filter(|(p, b, at)| {
            p == "/hook"
                && *at >= fault_at
                && b["fields"]["to"] == WEST
                && b["fields"]["kind"]
                    .as_str()
                    .is_some_and(|k| k.starts_with("completed"))
        })
        .find_map(|(_, b, _)| b["fields"]["replication_lag_seconds"].as_f64())
}

fn range(v: &[f64]) -> String {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{lo:.2}-{hi:.2} s")
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("drill: {e}");
            std::process::exit(2);
        }
    };
    // Ctrl-C or SIGTERM drop the drill, and with it every process it started.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("a SIGTERM handler");
    let failed = tokio::select! {
        r = drill(a) => r.err(),
        _ = tokio::signal::ctrl_c() => Some("interrupted".to_string()),
        _ = term.recv() => Some("terminated".to_string()),
    };
    // Everything the drill started is stopped by now (dropped with it).
    if let Some(why) = failed {
        eprintln!("drill: {why}");
        std::process::exit(1);
    }
}

async fn drill(a: Args) -> Result<(), String> {
    if a.dir.exists() {
        std::fs::remove_dir_all(&a.dir).expect("clear the run directory");
    }
    println!("==> starting the stack on 127.0.0.1 (fast profile: 1 s probes, scrapes and evaluation, 3 s window)");
    let mut c = Chain::start_with(ChainOpts {
        knobs: Knobs {
            min_interval: "2s",
            stabilisation: "5s",
            tick: "250ms",
            dir: Some(a.dir.clone()),
            // The application servers are reconfigured by their agents, one per region.
            agents: vec![("wp-east", EAST), ("wp-west", WEST)],
            no_local_app: true,
            ..Knobs::default()
        },
        users: Some(a.lag),
        ..ChainOpts::default()
    })
    .await;
    // The rules have judged the region healthy for a while, as in any running system.
    wait_until(
        Duration::from_secs(90),
        "Prometheus to evaluate the rules for 10 s",
        || async {
            c.value(&format!(
                "count_over_time(dynamodb:region:reporting_probers{{region=\"{EAST}\"}}[10s]) >= 9"
            ))
            .await
            .is_some()
        },
    )
    .await;
    // The first drill's data at risk needs a canary to have waited out the lag (as in e2e): the
    // lag, two slow passes of the stand-in, a probe interval and a second, at a sample a second.
    let measured = a.lag.as_secs() + 7;
    wait_until(
        Duration::from_secs(90) + a.lag,
        "the probers to measure the replication lag",
        || async {
            c.value(&format!(
                "count_over_time(dynamodb_replication_lag_seconds{{source_region=\"{EAST}\"}}[{}s]) >= {measured}",
                measured + 10
            ))
            .await
            .is_some()
        },
    )
    .await;
    println!(
        "
    Prometheus      {}/alerts
    Alertmanager    {}
    Responder       {}/v1/active-region   (state: /v1/state, admin token in {})
    Probers         {}
    Logs, configs   {}/
",
        c.prom,
        c.alertmanager,
        c.stack.base(),
        c.stack.path("admin.token").display(),
        c.exporters
            .iter()
            .map(|e| format!("http://{e}/metrics"))
            .collect::<Vec<_>>()
            .join("  "),
        a.dir.display()
    );
    // Before any drill: the whole failover path, checked read-only, as an operator would.
    println!("==> readiness of the failover path (dynamo-failover preflight)");
    let out = tokio::process::Command::new(testkit::binary())
        .args(["preflight", "--url", &c.stack.base(), "--config"])
        .arg(c.stack.path("config.toml"))
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .await
        .map_err(|e| format!("cannot run preflight: {e}"))?;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        println!("    {line}");
    }
    if !out.status.success() {
        return Err(format!(
            "the failover path is not ready (preflight exited {:?}): {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let mut n = Narrator {
        seen: BTreeSet::new(),
        queue: Vec::new(),
        log_lines: 0,
        notes: 0,
        phase: "fault",
    };
    n.poll(&c).await;
    n.queue.clear();
    let mut rows: Vec<Row> = Vec::new();
    let mut since = UNIX_EPOCH;
    for cycle in 1..=a.repeat {
        println!("==> drill {cycle}: stopping {EAST} (its DynamoDB stand-in is killed)");
        n.start_phase("fault");
        c.stack.east.stop().await;
        let fault = Instant::now();
        let fault_at = SystemTime::now();
        say(&format!("FAULT: {EAST} is down; users' writes there fail"));
        follow(&mut n, &c, WEST).await?;
        let moved = fault.elapsed().as_secs_f64();
        say(&format!(
            "MOVED: traffic verified in {WEST} fault_to_verified={moved:.2}s"
        ));
        let users = c.users.as_ref().expect("the drill runs users");
        let first = users
            .recovered_after(fault_at, Duration::from_secs(30))
            .await
            .ok_or("no user write succeeded within 30 s of the fault")?;
        let user_recovery = secs_between(fault_at, first.at);
        say(&format!(
            "USERS: writes succeed again, in {} fault_to_first_user_write={user_recovery:.2}s",
            first.wrote.as_deref().unwrap_or("?")
        ));
        let (lost, window) = lost_writes(&c, since, fault_at).await;
        let at_risk = data_at_risk(&c, fault_at);
        let pass = c.replicator.as_ref().map_or(0.0, |r| {
            r.slowest_pass_from(EAST, fault - Duration::from_secs(20) - a.lag, fault)
                .as_secs_f64()
        });
        say(&format!(
            "LOST: {lost} acknowledged writes never reached {WEST} (the last {window:.1} s before the fault); the notice said {}",
            at_risk.map_or("data at risk unknown".into(), |r| format!("last {r:.1} s at risk")),
        ));
        println!("==> drill {cycle}: restoring {EAST}");
        n.start_phase("restore");
        c.stack.east.restart().await;
        create_table(&client(EAST, &c.stack.east.endpoint()).await, TABLE, true).await;
        let back = Instant::now();
        say(&format!(
            "RESTORED: {EAST} answers again; failback waits for the 5 s stabilisation window"
        ));
        follow(&mut n, &c, EAST).await?;
        let failed_back = back.elapsed().as_secs_f64();
        since = SystemTime::now();
        say(&format!(
            "FAILED BACK: traffic verified in {EAST} restore_to_verified={failed_back:.2}s"
        ));
        rows.push(Row {
            cycle,
            moved,
            user_recovery,
            failed_back,
            lost,
            window,
            at_risk,
            pass,
        });
        // Running steadily again before the next drill, as before an unrelated incident: the
        // replication lag measured over the 20 s the data at risk looks back on holds nothing of
        // this outage.
        if cycle < a.repeat {
            println!(
                "==> drill {cycle}: {EAST} runs steadily for {:.0} s before the next drill",
                22.0 + a.lag.as_secs_f64()
            );
            tokio::time::sleep(a.lag + Duration::from_secs(22)).await;
        }
    }

    let st = c.stack.state().await;
    println!("\n==> summary");
    println!(
        "  {:>5}  {:>14}  {:>16}  {:>16}  {:>22}",
        "drill", "fault -> moved", "fault -> users", "restore -> back", "writes lost / at risk"
    );
    for r in &rows {
        println!(
            "  {:>5}  {:>12.2} s  {:>14.2} s  {:>14.2} s  {:>6} ({:.1} s) / {}",
            r.cycle,
            r.moved,
            r.user_recovery,
            r.failed_back,
            r.lost,
            r.window,
            r.at_risk.map_or("unknown".into(), |v| format!("{v:.1} s")),
        );
    }
    let col = |f: fn(&Row) -> f64| rows.iter().map(f).collect::<Vec<f64>>();
    let (moves, users, backs) = (
        col(|r| r.moved),
        col(|r| r.user_recovery),
        col(|r| r.failed_back),
    );
    println!(
        "  median fault -> verified move: {:.2} s (range {}) over {} drill(s) (seed article: 3 x 60 s probes = 180 s or more, flapping back on the first good probe)",
        median(&moves),
        range(&moves),
        moves.len()
    );
    println!(
        "  median user-visible recovery: {:.2} s (range {}): fault to the first user write that succeeded, in {WEST}",
        median(&users),
        range(&users)
    );
    println!(
        "  median restore -> failed back: {:.2} s (range {})",
        median(&backs),
        range(&backs)
    );
    let agree = rows.iter().filter(|r| r.agrees()).count();
    println!(
        "  writes lost vs data at risk: {} writes lost in all (each drill: the last {} before the fault); the notice's data at risk bounded the loss within one probe interval and two replication passes in {agree} of {} drill(s)",
        rows.iter().map(|r| r.lost).sum::<usize>(),
        range(&col(|r| r.window)),
        rows.len()
    );
    println!(
        "  transitions: {}, epoch {}, active region now {}",
        st["transitions"].as_array().map_or(0, Vec::len),
        st["epoch"],
        st["active_region"].as_str().unwrap_or("?")
    );
    let tag = c
        .stack
        .fake
        .load_balancer("lb-tag")
        .and_then(|lb| lb["tag"].as_str().map(str::to_string));
    let dns = c
        .stack
        .fake
        .record("example.com", 1001)
        .and_then(|r| r["data"].as_str().map(str::to_string));
    println!(
        "  load balancer lb-tag targets tag {}; DNS www.example.com -> {}",
        tag.unwrap_or_default(),
        dns.unwrap_or_default(),
    );
    for (name, region) in [("wp-east", EAST), ("wp-west", WEST)] {
        let (applied, epoch) = c.stack.agent_env(name);
        println!(
            "  agent {name} ({region}'s application server): {} says DYNAMODB_REGION={} at epoch {}; reloads run: {}",
            c.stack.agent_env_path(name).display(),
            applied.unwrap_or_default(),
            epoch.map_or("-".to_string(), |e| e.to_string()),
            c.stack.agent_reloads(name).len()
        );
    }
    let notices: HashMap<String, usize> =
        c.stack
            .inbox
            .all()
            .iter()
            .fold(HashMap::new(), |mut m, (p, _)| {
                *m.entry(p.clone()).or_default() += 1;
                m
            });
    println!(
        "  notifications received: {} (webhook) and {} (Slack)",
        notices.get("/hook").unwrap_or(&0),
        notices.get("/slack").unwrap_or(&0),
    );
    if a.keep {
        println!("\n==> the stack keeps running (Ctrl-C to stop it)");
        std::future::pending::<()>().await;
    }
    Ok(())
}
