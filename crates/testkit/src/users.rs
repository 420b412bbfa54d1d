//! The users' side of the chain: an application stand-in per region (`app-standin`, the region's
//! droplets, reconfigured by its own agent), users writing every 100 ms to whichever instance
//! DigitalOcean routes to (the DNS record), and a replication stand-in copying items between the
//! two moto regions with a lag (Global Tables' replication, which moto does not do). Together they
//! measure what users see: how long until writes succeed again, and which acknowledged writes
//! never reached the region traffic moved to.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use aws_sdk_dynamodb::types::AttributeValue;
use tokio::process::{Child, Command};

use crate::stack::{Stack, EAST, TABLE, WEST};
use crate::{client, listening_ports, wait_listening, Moto};

/// A binary of this workspace built beside the running one (`app-standin`, `drill`): `cargo test`
/// does not build another package's binaries, so `scripts/test` builds them first (`cargo build
/// --workspace --bins`); one older than the sources it is built from is refused, never used.
pub fn workspace_binary(name: &str) -> PathBuf {
    let bin = crate::binary().with_file_name(name);
    let fix = "build it first: cargo build -p testkit --bins (scripts/test does)";
    let built = std::fs::metadata(&bin)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| panic!("{} not found: {fix}", bin.display()));
    let root = crate::root();
    // The other binaries' sources are not this one's: cargo does not rebuild it for them.
    let bins = root.join("crates/testkit/src/bin");
    let own = bins.join(format!("{name}.rs"));
    let theirs = |p: &std::path::Path| p.starts_with(&bins) && p != own;
    let newest = ["crates/testkit/src", "src"]
        .iter()
        .filter_map(|d| newest_file(&root.join(d), &theirs))
        .max();
    if let Some(src) = newest {
        assert!(
            src <= built,
            "{} is older than its sources: {fix}",
            bin.display()
        );
    }
    bin
}

/// The modification time of the newest file under `dir`, leaving out those `skip` names.
fn newest_file(
    dir: &std::path::Path,
    skip: &dyn Fn(&std::path::Path) -> bool,
) -> Option<SystemTime> {
    let mut newest = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let t = if path.is_dir() {
            newest_file(&path, skip)
        } else if skip(&path) {
            None
        } else {
            entry.metadata().and_then(|m| m.modified()).ok()
        };
        newest = newest.max(t);
    }
    newest
}

/// One application stand-in process.
pub struct AppStandin {
    pub region: String,
    pub port: u16,
    pub pid_file: PathBuf,
    child: Child,
}

impl AppStandin {
    /// Starts region `region`'s instance, reading `env_file`, able to reach both moto regions.
    pub async fn start(stack: &Stack, region: &str, env_file: &std::path::Path) -> AppStandin {
        let pid_file = stack.path(&format!("app-{region}.pid"));
        let log = std::fs::File::create(stack.path(&format!("app-{region}.log"))).unwrap();
        let mut child = Command::new(workspace_binary("app-standin"))
            .arg("--env-file")
            .arg(env_file)
            .arg("--pid-file")
            .arg(&pid_file)
            .args(["--region", &format!("{EAST}={}", stack.east.endpoint())])
            .args(["--region", &format!("{WEST}={}", stack.west.endpoint())])
            .args(["--table", TABLE])
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .expect("start the application stand-in");
        let port = wait_listening(&mut child, "the application stand-in").await;
        AppStandin {
            region: region.to_string(),
            port,
            pid_file,
            child,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// SIGHUP: it reads its env file again (what its agent's reload command does).
    pub fn reload(&self) {
        let pid = self.child.id().expect("the application stand-in runs");
        let ok = std::process::Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "could not send SIGHUP to the application stand-in");
    }

    /// Whether it still runs (and listens).
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_none()
            && self
                .child
                .id()
                .is_some_and(|p| !listening_ports(p).is_empty())
    }
}

/// One user write: which instance it went to and whether it was acknowledged.
#[derive(Debug, Clone)]
pub struct UserWrite {
    pub id: u64,
    pub at: SystemTime,
    /// `at` on the monotonic clock.
    pub sent: Instant,
    /// The region whose instance DigitalOcean routed the user to.
    pub routed: String,
    /// The region the instance said it wrote to, when it acknowledged.
    pub wrote: Option<String>,
}

/// Users writing every 100 ms to whichever instance the DNS record points at.
pub struct Users {
    pub log: Arc<Mutex<Vec<UserWrite>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Users {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Users {
    /// `instances`: the address the DNS record carries for a region -> (region, instance URL).
    pub fn start(
        fake: Arc<fake_digitalocean::FakeDo>,
        instances: HashMap<String, (String, String)>,
    ) -> Users {
        let log: Arc<Mutex<Vec<UserWrite>>> = Arc::default();
        let l = log.clone();
        let task = tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_millis(900))
                .build()
                .unwrap();
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            // A stalled process sends no burst of catch-up writes afterwards: users do not.
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut id = 0u64;
            loop {
                tick.tick().await;
                id += 1;
                let data = fake
                    .record("example.com", 1001)
                    .and_then(|r| r["data"].as_str().map(str::to_string))
                    .unwrap_or_default();
                let Some((region, url)) = instances.get(&data).cloned() else {
                    continue;
                };
                let (at, sent) = (SystemTime::now(), Instant::now());
                let http = http.clone();
                let l = l.clone();
                // Each user is independent: a slow answer does not hold the next one back.
                tokio::spawn(async move {
                    let wrote = match http.post(format!("{url}/write?id={id}")).send().await {
                        Ok(r) if r.status().is_success() => {
                            r.text().await.ok().map(|t| t.trim().to_string())
                        }
                        _ => None,
                    };
                    l.lock().unwrap().push(UserWrite {
                        id,
                        at,
                        sent,
                        routed: region,
                        wrote,
                    });
                });
            }
        });
        Users { log, task }
    }

    pub fn writes(&self) -> Vec<UserWrite> {
        let mut w = self.log.lock().unwrap().clone();
        w.sort_by_key(|x| x.id);
        w
    }

    /// The first write acknowledged at or after `t`, as far as the answers so far tell.
    pub fn first_success_after(&self, t: SystemTime) -> Option<UserWrite> {
        self.writes()
            .into_iter()
            .find(|w| w.at >= t && w.wrote.is_some())
    }

    /// The first write sent at or after `t` that was acknowledged, once every write sent before
    /// it has been answered (each gives up after its 0.9 s timeout), waiting up to `limit`.
    pub async fn recovered_after(&self, t: SystemTime, limit: Duration) -> Option<UserWrite> {
        let deadline = Instant::now() + limit;
        loop {
            if self.first_success_after(t).is_some() {
                // Writes still in flight that were sent earlier could still succeed.
                tokio::time::sleep(Duration::from_secs(1)).await; // the users' request timeout, 0.9 s
                return self.first_success_after(t);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Global Tables' replication, played between two moto regions: the probers' canaries and the
/// users' writes acknowledged by one region are copied to the other once they are `lag` old
/// (so the probers measure the lag). What a region holds when it dies and had not copied yet is
/// lost, as with the real thing. It reads the items it copies by key (the canaries' keys are
/// known, the users' writes are in their log) rather than scanning a growing table.
pub struct Replicator {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Per source region, each pass's end and the time since the previous pass's end, for the
    /// passes that followed another one reaching the source (the stand-in's own slowness on a
    /// loaded machine: a canary may wait up to one such gap to be seen and one more to be
    /// copied). A pass that found the source refusing connections (it is down) starts afresh.
    passes: Passes,
}

impl Drop for Replicator {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

type Item = HashMap<String, AttributeValue>;

/// Per source region: each pass's end and the time since the previous one's.
type Passes = Arc<Mutex<HashMap<&'static str, Vec<(Instant, Duration)>>>>;

/// The canaries' key prefix in the chain's prober configs (the default).
const CANARY_PREFIX: &str = "dynamo-failover-canary";

impl Replicator {
    pub async fn start(
        east: &Moto,
        west: &Moto,
        lag: Duration,
        probers: &[&str],
        users: Arc<Mutex<Vec<UserWrite>>>,
    ) -> Replicator {
        let mut tasks = Vec::new();
        let passes = Passes::default();
        for (from, from_ep, to, to_ep) in [
            (EAST, east.endpoint(), WEST, west.endpoint()),
            (WEST, west.endpoint(), EAST, east.endpoint()),
        ] {
            let src = client(from, &from_ep).await;
            let dst = client(to, &to_ep).await;
            let canaries: Vec<String> = probers
                .iter()
                .map(|p| dynamo_failover::probe::canary_key(CANARY_PREFIX, p, from))
                .collect();
            let users = users.clone();
            let passes = passes.clone();
            tasks.push(tokio::spawn(async move {
                // Canary key -> its versions not copied yet (when first seen, the item), and
                // the content of the newest version seen.
                let mut versions: HashMap<String, VecDeque<(Instant, Item)>> = HashMap::new();
                let mut latest: HashMap<String, String> = HashMap::new();
                // Users' writes to `from` not copied yet: key -> when the user sent it.
                let mut pending: HashMap<String, Instant> = HashMap::new();
                let mut cursor = 0;
                // When the last pass that read the source ended.
                let mut last_end: Option<Instant> = None;
                loop {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    {
                        let log = users.lock().unwrap();
                        for w in &log[cursor..] {
                            if w.wrote.as_deref() == Some(from) {
                                pending.insert(format!("user-write#{:08}", w.id), w.sent);
                            }
                        }
                        cursor = log.len();
                    }
                    let now = Instant::now();
                    let due: Vec<String> = pending
                        .iter()
                        .filter(|(_, at)| now.duration_since(**at) >= lag)
                        .map(|(k, _)| k.clone())
                        .take(90)
                        .collect();
                    let mut keys = canaries.clone();
                    keys.extend(due.iter().cloned());
                    let mut req =
                        aws_sdk_dynamodb::types::KeysAndAttributes::builder().consistent_read(true);
                    for k in &keys {
                        req = req.keys(HashMap::from([(
                            "pk".to_string(),
                            AttributeValue::S(k.clone()),
                        )]));
                    }
                    let Ok(req) = req.build() else { continue };
                    let out = match tokio::time::timeout(
                        Duration::from_millis(800),
                        src.batch_get_item().request_items(TABLE, req).send(),
                    )
                    .await
                    {
                        Ok(Ok(out)) => out,
                        // Slow, not down: the pass counts, and its time with the next one.
                        Err(_) => continue,
                        Ok(Err(_)) => {
                            last_end = None;
                            continue; // the source is down: nothing more leaves it
                        }
                    };
                    let items = out
                        .responses
                        .and_then(|mut r| r.remove(TABLE))
                        .unwrap_or_default();
                    // A due write the source no longer has (it died and came back empty) is
                    // lost: stop looking for it.
                    for k in &due {
                        let found = items
                            .iter()
                            .any(|i| matches!(i.get("pk"), Some(AttributeValue::S(x)) if x == k));
                        if !found {
                            pending.remove(k);
                        }
                    }
                    let now = Instant::now();
                    for item in items {
                        let Some(AttributeValue::S(key)) = item.get("pk") else {
                            continue;
                        };
                        let key = key.clone();
                        let copy = if pending.contains_key(&key) {
                            Some(item) // a user's write whose lag has passed
                        } else {
                            // A canary: every version it shows is copied once it is `lag` old
                            // (the newest such, skipping older ones), as replication would.
                            let mut fields: Vec<String> =
                                item.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
                            fields.sort();
                            let content = fields.join(",");
                            let q = versions.entry(key.clone()).or_default();
                            if latest.get(&key) != Some(&content) {
                                latest.insert(key.clone(), content);
                                q.push_back((now, item));
                            }
                            q.iter()
                                .rposition(|(t, _)| now.duration_since(*t) >= lag)
                                .map(|pos| {
                                    let v = q[pos].1.clone();
                                    q.drain(..=pos);
                                    v
                                })
                        };
                        let Some(copy) = copy else { continue };
                        let put = dst.put_item().table_name(TABLE).set_item(Some(copy)).send();
                        if let Ok(Ok(_)) =
                            tokio::time::timeout(Duration::from_millis(800), put).await
                        {
                            pending.remove(&key);
                        }
                    }
                    let end = Instant::now();
                    if let Some(prev) = last_end {
                        let mut p = passes.lock().unwrap();
                        p.entry(from).or_default().push((end, end - prev));
                    }
                    last_end = Some(end);
                }
            }));
        }
        Replicator { tasks, passes }
    }

    /// The longest gap between two consecutive passes copying out of `region` that ended
    /// within `from..=to` (reading `region`: its replication, not the copies into it).
    pub fn slowest_pass_from(&self, region: &str, from: Instant, to: Instant) -> Duration {
        self.passes
            .lock()
            .unwrap()
            .get(region)
            .into_iter()
            .flatten()
            .filter(|(end, _)| (from..=to).contains(end))
            .map(|(_, gap)| *gap)
            .max()
            .unwrap_or_default()
    }
}

/// Which of `writes` (acknowledged by `region`'s DynamoDB) are missing from `other`.
pub async fn missing_in(other: &Moto, other_region: &str, writes: &[UserWrite]) -> Vec<u64> {
    let c = client(other_region, &other.endpoint()).await;
    let mut missing = Vec::new();
    for w in writes {
        let got = c
            .get_item()
            .table_name(TABLE)
            .key("pk", AttributeValue::S(format!("user-write#{:08}", w.id)))
            .consistent_read(true)
            .send()
            .await;
        if got.map(|o| o.item.is_none()).unwrap_or(true) {
            missing.push(w.id);
        }
    }
    missing
}
