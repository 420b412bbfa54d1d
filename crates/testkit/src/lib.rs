//! The test kit: real moto servers standing in for DynamoDB regions, the exporter spawned on
//! port 0, a blackhole endpoint, a TCP proxy that can slow or cut a path, a DynamoDB gate that can
//! refuse writes, and polling with deadlines instead of sleeps. [`stack`] runs the responder
//! processes against moto and the fake DigitalOcean API. Shared by the integration tests, the
//! benchmarks and the demo's drill, so each describes its topology once.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType,
};
use aws_sdk_dynamodb::Client;
use tokio::net::TcpListener;
use tokio::process::{Child, Command};
use tokio::time::Instant;

use dynamo_failover::config::Config;
use dynamo_failover::shutdown::{self, ShutdownTrigger};

pub mod chain;
pub mod pki;
pub mod stack;
pub mod users;

/// The repository's root directory.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The `dynamo-failover` binary: `DYNAMO_FAILOVER_BIN`, or the one Cargo built beside the
/// running test, benchmark or drill (`target/<profile>/dynamo-failover`).
pub fn binary() -> PathBuf {
    if let Ok(p) = std::env::var("DYNAMO_FAILOVER_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("the running executable");
    let mut dir = exe.parent().expect("a directory").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let bin = dir.join("dynamo-failover");
    assert!(
        bin.exists(),
        "{} not found: build it first (cargo build), or set DYNAMO_FAILOVER_BIN",
        bin.display()
    );
    bin
}

/// The moto server binary: `MOTO_SERVER`, or the venv `scripts/test` creates.
pub fn moto_bin() -> PathBuf {
    if let Ok(p) = std::env::var("MOTO_SERVER") {
        return PathBuf::from(p);
    }
    let p = root().join(".cache/venv/bin/moto_server");
    assert!(
        p.exists(),
        "moto_server not found at {}: run the tests through scripts/test, which installs it",
        p.display()
    );
    p
}

/// How long a child process may take to start listening. Generous: on a loaded 2-core machine a
/// debug binary's start (or Python importing moto) can take seconds, and a child that exits early
/// is reported at once anyway.
pub const START_LIMIT: Duration = Duration::from_secs(90);

/// The TCP ports process `pid` listens on, read from /proc: for children started on port 0, so
/// no port is ever picked by bind-and-release and taken by someone else in between.
pub fn listening_ports(pid: u32) -> Vec<u16> {
    let mut inodes = std::collections::HashSet::new();
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        for e in dir.flatten() {
            if let Ok(link) = std::fs::read_link(e.path()) {
                let l = link.to_string_lossy();
                if let Some(n) = l.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')) {
                    inodes.insert(n.to_string());
                }
            }
        }
    }
    let mut ports = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        for line in std::fs::read_to_string(table)
            .unwrap_or_default()
            .lines()
            .skip(1)
        {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address is HEXIP:HEXPORT, st 0A is LISTEN, the inode is the tenth field.
            if f.len() > 9 && f[3] == "0A" && inodes.contains(f[9]) {
                if let Some(port) = f[1]
                    .rsplit_once(':')
                    .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
                {
                    ports.push(port);
                }
            }
        }
    }
    ports
}

/// Waits until `child` listens on a port and answers it; panics at once if it exits first.
pub async fn wait_listening(child: &mut Child, what: &str) -> u16 {
    let pid = child.id().expect("a running child");
    wait_listening_pid(pid, what, || match child.try_wait() {
        Ok(Some(status)) => Some(status.to_string()),
        _ => None,
    })
    .await
}

/// Waits until process `pid` listens on a port and answers it; panics at once if `exited`
/// answers how it exited.
async fn wait_listening_pid(
    pid: u32,
    what: &str,
    mut exited: impl FnMut() -> Option<String>,
) -> u16 {
    let deadline = Instant::now() + START_LIMIT;
    loop {
        if let Some(port) = listening_ports(pid).first() {
            return *port;
        }
        if let Some(status) = exited() {
            panic!("{what} exited before listening: {status}");
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not listen within {START_LIMIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until our binary's JSON log at `log` has a line whose message is `message` (e.g.
/// `responder started`), and answers the port of its `listen` field; panics at once if `child`
/// exits first, with the log.
pub async fn wait_logged_port(child: &mut Child, log: &std::path::Path, message: &str) -> u16 {
    let deadline = Instant::now() + START_LIMIT;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        for line in text.lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            if v["message"] == message {
                if let Some(port) = v["listen"]
                    .as_str()
                    .and_then(|a| a.rsplit_once(':'))
                    .and_then(|(_, p)| p.parse().ok())
                {
                    return port;
                }
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("exited ({status}) before logging `{message}`:\n{text}");
        }
        assert!(
            Instant::now() < deadline,
            "no `{message}` within {START_LIMIT:?}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `cond` every 50 ms until it is true or `limit` passes; panics with `what` on timeout.
pub async fn wait_until<F, Fut>(limit: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if cond().await {
            return;
        }
        if Instant::now() > deadline {
            panic!("timed out after {limit:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One moto server: one stand-in region.
pub struct Moto {
    pub port: u16,
    child: Option<MotoProcess>,
}

/// A moto server's process: a child of ours, or a fork of the warm moto process
/// (`scripts/lib/moto_fork.py`), held by a pidfd so a signal can never reach another process that
/// was given the same pid later.
enum MotoProcess {
    Child(Child),
    Forked {
        pid: u32,
        pidfd: std::os::fd::OwnedFd,
    },
}

impl MotoProcess {
    fn pid(&self) -> u32 {
        match self {
            MotoProcess::Child(c) => c.id().expect("a running child"),
            MotoProcess::Forked { pid, .. } => *pid,
        }
    }

    /// Whether it has exited (a fork's pidfd is readable once it has).
    fn exited(&mut self) -> bool {
        match self {
            MotoProcess::Child(c) => !matches!(c.try_wait(), Ok(None)),
            MotoProcess::Forked { pidfd, .. } => {
                use std::os::fd::AsRawFd;
                let mut p = libc::pollfd {
                    fd: pidfd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd, no wait.
                unsafe { libc::poll(&mut p, 1, 0) == 1 }
            }
        }
    }

    fn kill(&mut self) {
        match self {
            MotoProcess::Child(c) => {
                let _ = c.start_kill();
            }
            MotoProcess::Forked { pidfd, .. } => {
                use std::os::fd::AsRawFd;
                // SAFETY: a pidfd we own; no siginfo.
                unsafe {
                    libc::syscall(
                        libc::SYS_pidfd_send_signal,
                        pidfd.as_raw_fd(),
                        libc::SIGKILL,
                        std::ptr::null::<libc::siginfo_t>(),
                        0,
                    );
                }
            }
        }
    }

    /// Kills it and waits until it is gone (its port is free again).
    async fn stop(&mut self) {
        self.kill();
        let deadline = Instant::now() + START_LIMIT;
        while !self.exited() {
            assert!(Instant::now() < deadline, "moto did not exit after SIGKILL");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Drop for MotoProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The warm moto process of this test binary, started at its first use; None where it cannot
/// run (`moto_server` is not a Python entry point, or the process did not start in time), and
/// moto servers are then started one process each.
fn moto_forker() -> Option<&'static std::sync::Mutex<Forker>> {
    static FORKER: std::sync::OnceLock<Option<std::sync::Mutex<Forker>>> =
        std::sync::OnceLock::new();
    FORKER
        .get_or_init(|| Forker::start().map(std::sync::Mutex::new))
        .as_ref()
}

struct Forker {
    input: std::process::ChildStdin,
    output: std::io::BufReader<std::process::ChildStdout>,
    _process: std::process::Child,
}

impl Forker {
    fn start() -> Option<Forker> {
        use std::io::BufRead;
        // Only for a moto_server that is a Python entry point (a wrapper script in MOTO_SERVER
        // is run as it is, one process per server), with the interpreter it names.
        let script = std::fs::read(moto_bin()).ok()?;
        let first = script.split(|b| *b == b'\n').next()?;
        let python = PathBuf::from(std::str::from_utf8(first.strip_prefix(b"#!")?).ok()?.trim());
        let is_python = python
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("python"));
        if !is_python || !python.exists() {
            return None;
        }
        // No kill on drop and no parent-death signal (that follows the thread that started it,
        // which may be one test's): it exits when its input closes, with this process.
        let mut process = std::process::Command::new(python)
            .arg(root().join("scripts/lib/moto_fork.py"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .ok()?;
        let input = process.stdin.take()?;
        let mut output = std::io::BufReader::new(process.stdout.take()?);
        // `ready` once moto is imported, within the limit any child has to start.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let ok = output.read_line(&mut line).is_ok() && line.trim() == "ready";
            let _ = tx.send(ok.then_some(output));
        });
        match rx.recv_timeout(START_LIMIT) {
            Ok(Some(output)) => Some(Forker {
                input,
                output,
                _process: process,
            }),
            _ => {
                eprintln!(
                    "testkit: the moto fork server did not start; one process per moto server"
                );
                let _ = process.kill();
                None
            }
        }
    }

    /// A new server on `port` (0: the kernel's choice): its pid.
    fn fork(&mut self, port: u16) -> std::io::Result<u32> {
        use std::io::{BufRead, Write};
        writeln!(self.input, "{port}")?;
        self.input.flush()?;
        let mut line = String::new();
        self.output.read_line(&mut line)?;
        line.trim()
            .parse()
            .map_err(|_| std::io::Error::other(format!("the moto fork server answered {line:?}")))
    }
}

/// A moto server forked from the warm process, or None where there is none.
async fn fork_moto(port: u16) -> Option<MotoProcess> {
    // Off the runtime: the first call waits for Python to import moto.
    tokio::task::spawn_blocking(move || {
        let mut forker = moto_forker()?.lock().unwrap_or_else(|p| p.into_inner());
        let pid = forker.fork(port).expect("the moto fork server");
        // At once, before the server could exit and its pid be given to another process.
        // SAFETY: pidfd_open has no memory arguments; a negative answer is an error.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        assert!(
            fd >= 0,
            "moto_server (pid {pid}, port {port}) exited before listening: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: a new descriptor, ours alone.
        let pidfd =
            unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) };
        Some(MotoProcess::Forked { pid, pidfd })
    })
    .await
    .expect("the fork request")
}

impl Moto {
    /// Starts on a port of its own choosing (port 0).
    pub async fn start() -> Moto {
        Self::start_on(0).await
    }

    /// Starts a fresh (empty) moto on the port of one that was stopped: the region comes back.
    pub async fn restart(&mut self) {
        self.stop().await;
        *self = Self::start_on(self.port).await;
    }

    /// Starts on `port` (0: any free port, read back from the process).
    pub async fn start_on(port: u16) -> Moto {
        Self::spawn(port, false).await
    }

    /// Starts at a lower scheduling priority (nice 10): for benchmarks, where moto stands in for
    /// DynamoDB, which would not share the measured process's cores.
    pub async fn start_niced() -> Moto {
        Self::spawn(0, true).await
    }

    async fn spawn(port: u16, niced: bool) -> Moto {
        let forked = if niced { None } else { fork_moto(port).await };
        let mut process = match forked {
            Some(p) => p,
            None => {
                let mut cmd = if niced {
                    let mut c = Command::new("nice");
                    c.args(["-n", "10"]).arg(moto_bin());
                    c
                } else {
                    Command::new(moto_bin())
                };
                let child = cmd
                    .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .kill_on_drop(true)
                    .spawn()
                    .expect("start moto_server");
                MotoProcess::Child(child)
            }
        };
        let pid = process.pid();
        let port = wait_listening_pid(pid, "moto_server", || {
            process
                .exited()
                .then(|| "killed or failed at start".to_string())
        })
        .await;
        let m = Moto {
            port,
            child: Some(process),
        };
        let url = format!("{}/moto-api/", m.endpoint());
        let http = reqwest::Client::new();
        wait_until(START_LIMIT, "moto to answer", || {
            let (http, url) = (http.clone(), url.clone());
            async move { http.get(&url).send().await.is_ok() }
        })
        .await;
        m
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Kills the server (the region goes dark: connections are refused).
    pub async fn stop(&mut self) {
        if let Some(mut p) = self.child.take() {
            p.stop().await;
        }
    }
}

/// The node_modules holding dynalite: `DYNALITE_MODULES`, or where `scripts/test` installs it.
pub fn dynalite_modules() -> PathBuf {
    let p = std::env::var("DYNALITE_MODULES")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root().join(".cache/dynalite/node_modules"));
    assert!(
        p.join("dynalite").exists(),
        "dynalite not found in {}: run the tests through scripts/test, which installs it",
        p.display()
    );
    p
}

/// One dynalite server (in memory): a second, independent implementation of DynamoDB's API,
/// started by `scripts/lib/dynalite/serve.js` on a port of its own choosing.
pub struct Dynalite {
    pub port: u16,
    child: Option<Child>,
}

impl Dynalite {
    pub async fn start() -> Dynalite {
        Self::spawn(false).await
    }

    /// At nice 10, for benchmarks (as [`Moto::start_niced`]).
    pub async fn start_niced() -> Dynalite {
        Self::spawn(true).await
    }

    async fn spawn(niced: bool) -> Dynalite {
        let script = root().join("scripts/lib/dynalite/serve.js");
        let mut cmd = if niced {
            let mut c = Command::new("nice");
            c.args(["-n", "10", "node"]);
            c
        } else {
            Command::new("node")
        };
        let mut child = cmd
            .arg(script)
            .env("NODE_PATH", dynalite_modules())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start dynalite (node)");
        let port = wait_listening(&mut child, "dynalite").await;
        Dynalite {
            port,
            child: Some(child),
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub async fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
    }
}

/// One test per DynamoDB implementation for each scenario named: `on_both!(scenario, ...)`, with
/// `async fn scenario(kind: Ddb)` beside it, makes `scenario::moto` and `scenario::dynalite`.
#[macro_export]
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn moto() {
                super::$name($crate::Ddb::Moto).await
            }
            #[tokio::test]
            async fn dynalite() {
                super::$name($crate::Ddb::Dynalite).await
            }
        }
    )*};
}

/// Which DynamoDB implementation a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ddb {
    Moto,
    Dynalite,
}

/// A running DynamoDB stand-in of either kind.
pub enum DdbServer {
    Moto(Moto),
    Dynalite(Dynalite),
}

impl DdbServer {
    pub async fn start(kind: Ddb) -> DdbServer {
        match kind {
            Ddb::Moto => DdbServer::Moto(Moto::start().await),
            Ddb::Dynalite => DdbServer::Dynalite(Dynalite::start().await),
        }
    }

    pub fn endpoint(&self) -> String {
        match self {
            DdbServer::Moto(m) => m.endpoint(),
            DdbServer::Dynalite(d) => d.endpoint(),
        }
    }

    pub fn port(&self) -> u16 {
        match self {
            DdbServer::Moto(m) => m.port,
            DdbServer::Dynalite(d) => d.port,
        }
    }

    pub async fn stop(&mut self) {
        match self {
            DdbServer::Moto(m) => m.stop().await,
            DdbServer::Dynalite(d) => d.stop().await,
        }
    }
}

/// Static test credentials and no instance-metadata look-ups.
pub async fn sdk_config() -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .credentials_provider(Credentials::new("testing", "testing", None, None, "tests"))
        .region(Region::new("us-east-1"))
        .load()
        .await
}

/// A plain client for the test's own setup and replication copies.
pub async fn client(region: &str, endpoint: &str) -> Client {
    let shared = sdk_config().await;
    let conf = aws_sdk_dynamodb::config::Builder::from(&shared)
        .region(Region::new(region.to_string()))
        .endpoint_url(endpoint)
        .build();
    Client::from_conf(conf)
}

/// Creates `table` (partition key `pk`, type S) and, if `health_item`, the health item.
pub async fn create_table(c: &Client, table: &str, health_item: bool) {
    c.create_table()
        .table_name(table)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("pk")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("pk")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .expect("create table");
    if health_item {
        c.put_item()
            .table_name(table)
            .item("pk", AttributeValue::S("dynamo-failover-health".into()))
            .item("note", AttributeValue::S("read by the probes".into()))
            .send()
            .await
            .expect("put health item");
    }
}

/// A TCP endpoint that accepts connections and never answers.
pub async fn blackhole() -> (String, tokio::task::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let h = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    (format!("http://{addr}"), h)
}

/// A running exporter, stopped when dropped.
pub struct Exporter {
    pub addr: SocketAddr,
    trigger: ShutdownTrigger,
    http: reqwest::Client,
}

impl Exporter {
    pub async fn spawn(config_text: &str) -> Exporter {
        Self::spawn_with(config_text, sdk_config().await).await
    }

    /// [`Exporter::spawn`] with this AWS configuration (credentials) instead of the test one.
    pub async fn spawn_with(config_text: &str, shared: aws_config::SdkConfig) -> Exporter {
        let config = Config::parse(config_text).expect("test config is valid");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (trigger, stop) = shutdown::channel();
        tokio::spawn(dynamo_failover::exporter::run(
            config, shared, listener, stop,
        ));
        Exporter {
            addr,
            trigger,
            http: reqwest::Client::new(),
        }
    }

    pub async fn scrape(&self) -> String {
        self.http
            .get(format!("http://{}/metrics", self.addr))
            .send()
            .await
            .expect("scrape")
            .text()
            .await
            .unwrap()
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("http://{}{path}", self.addr))
            .send()
            .await
            .expect("request")
    }

    /// The value of the sample `name` whose labels include all of `labels`.
    pub async fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        sample(&self.scrape().await, name, labels)
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.trigger.fire();
    }
}

/// Finds a sample in Prometheus text format by name and a subset of its labels.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let (series, value) = match line.rsplit_once(' ') {
            Some(x) => x,
            None => continue,
        };
        let (metric, label_text) = match series.split_once('{') {
            Some((m, rest)) => (m, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if metric != name {
            continue;
        }
        let have: HashMap<&str, &str> = label_text
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k, v.trim_matches('"')))
            .collect();
        if labels.iter().all(|(k, v)| have.get(k) == Some(v)) {
            return value.parse().ok();
        }
    }
    None
}

/// Config text for an exporter probing `regions` (name, endpoint) and `tables` fast.
pub fn exporter_config(prober: &str, regions: &[(&str, &str)], tables: &[&str]) -> String {
    let mut s = format!(
        "[prober]\nid = \"{prober}\"\ninterval = \"300ms\"\nattempt_timeout = \"200ms\"\ntimeout = \"250ms\"\n\n"
    );
    for (i, (name, ep)) in regions.iter().enumerate() {
        s += &format!(
            "[[region]]\nname = \"{name}\"\nendpoint = \"{ep}\"\npriority = {}\n\n",
            i + 1
        );
    }
    for t in tables {
        s += &format!("[[table]]\nname = \"{t}\"\n\n");
    }
    s
}

/// What a [`Proxy`] does with the traffic it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// Forwards everything.
    Up,
    /// Holds every chunk from the client this long before forwarding it (a slow path).
    Slow(Duration),
    /// Drops every open connection and refuses new ones (a cut path).
    Cut,
}

/// A TCP proxy on a loopback port in front of `upstream`, whose link the test can slow or cut:
/// one replica's own path to a shared server.
pub struct Proxy {
    pub port: u16,
    link: tokio::sync::watch::Sender<Link>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream: u16) -> Proxy {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let (link, watch) = tokio::sync::watch::channel(Link::Up);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = l.accept().await {
                if *watch.borrow() == Link::Cut {
                    drop(client);
                    continue;
                }
                tokio::spawn(carry(client, upstream, watch.clone()));
            }
        });
        Proxy { port, link, task }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn set(&self, link: Link) {
        self.link.send_replace(link);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn carry(
    client: tokio::net::TcpStream,
    upstream: u16,
    mut link: tokio::sync::watch::Receiver<Link>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await else {
        return;
    };
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let up = {
        let link = link.clone();
        async move {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                let n = match cr.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                let now = *link.borrow();
                if let Link::Slow(d) = now {
                    tokio::time::sleep(d).await;
                }
                if *link.borrow() == Link::Cut || sw.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    };
    let down = async move {
        let _ = tokio::io::copy(&mut sr, &mut cw).await;
    };
    tokio::select! {
        _ = up => {}
        _ = down => {}
        _ = link.wait_for(|l| *l == Link::Cut) => {}
    }
}

/// An HTTP stand-in in front of one moto region that can refuse every write (PutItem answers
/// 500 InternalServerError) while reads still pass: a region whose write path is down.
pub struct WriteGate {
    pub port: u16,
    refuse: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl WriteGate {
    pub async fn start(upstream: u16) -> WriteGate {
        use axum::body::Bytes;
        use axum::extract::State;
        use axum::http::{HeaderMap, Method, StatusCode, Uri};
        let refuse = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let http = reqwest::Client::new();
        let state = (refuse.clone(), http, upstream);
        type S = (
            std::sync::Arc<std::sync::atomic::AtomicBool>,
            reqwest::Client,
            u16,
        );
        async fn forward(
            State((refuse, http, upstream)): State<S>,
            method: Method,
            uri: Uri,
            headers: HeaderMap,
            body: Bytes,
        ) -> (StatusCode, HeaderMap, Bytes) {
            let target = headers
                .get("x-amz-target")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            if refuse.load(std::sync::atomic::Ordering::SeqCst) && target.ends_with(".PutItem") {
                let mut h = HeaderMap::new();
                h.insert(
                    "content-type",
                    "application/x-amz-json-1.0".parse().unwrap(),
                );
                return (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    h,
                    Bytes::from_static(
                        br#"{"__type":"com.amazonaws.dynamodb.v20120810#InternalServerError","message":"the write path is down"}"#,
                    ),
                );
            }
            pass_to_moto(&http, upstream, method, &uri, &headers, body).await
        }
        let (port, task) =
            serve_on_loopback(axum::Router::new().fallback(forward).with_state(state)).await;
        WriteGate { port, refuse, task }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// From now on every PutItem is answered 500 (`on`), or passed through again.
    pub fn refuse_writes(&self, on: bool) {
        self.refuse.store(on, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for WriteGate {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What Global Tables adds to DynamoDB's answers, in front of one moto region (moto keeps no
/// replicas): `DescribeTable` lists every configured region as a replica, as a global table's
/// description does; everything else passes through untouched. A test can remove a region from
/// the replicas (a replica deleted in the console). When moto is down the front answers 502, so
/// behind it a dead region reads as `server_error` rather than `connect_error`.
pub struct GlobalFront {
    pub port: u16,
    replicas: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl GlobalFront {
    pub async fn start(upstream: u16, replicas: &[&str]) -> GlobalFront {
        use axum::body::Bytes;
        use axum::extract::State;
        use axum::http::{HeaderMap, Method, StatusCode, Uri};
        type Replicas = std::sync::Arc<std::sync::Mutex<Vec<String>>>;
        type S = (Replicas, reqwest::Client, u16);
        let replicas: Replicas = std::sync::Arc::new(std::sync::Mutex::new(
            replicas.iter().map(|r| r.to_string()).collect(),
        ));
        async fn forward(
            State((replicas, http, upstream)): State<S>,
            method: Method,
            uri: Uri,
            headers: HeaderMap,
            body: Bytes,
        ) -> (StatusCode, HeaderMap, Bytes) {
            let describe = headers
                .get("x-amz-target")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|t| t.ends_with(".DescribeTable"));
            let (status, h, bytes) =
                pass_to_moto(&http, upstream, method, &uri, &headers, body).await;
            if !(describe && status.is_success()) {
                return (status, h, bytes);
            }
            let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
                return (status, h, bytes);
            };
            let list: Vec<serde_json::Value> = replicas
                .lock()
                .unwrap()
                .iter()
                .map(|r| serde_json::json!({ "RegionName": r, "ReplicaStatus": "ACTIVE" }))
                .collect();
            if !list.is_empty() {
                v["Table"]["Replicas"] = serde_json::Value::Array(list);
            }
            (status, h, Bytes::from(serde_json::to_vec(&v).unwrap()))
        }
        let state: S = (replicas.clone(), reqwest::Client::new(), upstream);
        let (port, task) =
            serve_on_loopback(axum::Router::new().fallback(forward).with_state(state)).await;
        GlobalFront {
            port,
            replicas,
            task,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The regions DescribeTable lists from now on (none: not a global table).
    pub fn set_replicas(&self, regions: &[&str]) {
        *self.replicas.lock().unwrap() = regions.iter().map(|r| r.to_string()).collect();
    }
}

impl Drop for GlobalFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Sends one request on to the moto server on `upstream` and answers its reply, without the
/// headers that describe the body's framing or checksum (the caller's server sets its own, and
/// may change the body); 502 when moto does not answer.
async fn pass_to_moto(
    http: &reqwest::Client,
    upstream: u16,
    method: axum::http::Method,
    uri: &axum::http::Uri,
    headers: &axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> (
    axum::http::StatusCode,
    axum::http::HeaderMap,
    axum::body::Bytes,
) {
    use axum::http::{HeaderMap, StatusCode};
    let mut req = http.request(
        method,
        format!(
            "http://127.0.0.1:{upstream}{}",
            uri.path_and_query().map_or("/", |p| p.as_str())
        ),
    );
    for (k, v) in headers {
        if k != "host" && k != "content-length" {
            req = req.header(k, v);
        }
    }
    let Ok(r) = req.body(body).send().await else {
        return (
            StatusCode::BAD_GATEWAY,
            HeaderMap::new(),
            Default::default(),
        );
    };
    let status = StatusCode::from_u16(r.status().as_u16()).unwrap();
    let mut h = HeaderMap::new();
    for (k, v) in r.headers() {
        if ![
            "content-length",
            "transfer-encoding",
            "connection",
            "x-amz-crc32",
        ]
        .contains(&k.as_str())
        {
            h.insert(k.clone(), v.clone());
        }
    }
    (status, h, r.bytes().await.unwrap_or_default())
}

/// Serves `app` on a free loopback port until the task is aborted.
async fn serve_on_loopback(app: axum::Router) -> (u16, tokio::task::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    (port, task)
}
