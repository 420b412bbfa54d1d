//! The responder's test stack: two moto regions (for the live check), the fake DigitalOcean API,
//! a notification receiver, and the real binary as a child process with its logs captured.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use axum::Router;
use fake_digitalocean::{FakeDo, Fault};
use serde_json::{json, Value};
use tokio::process::{Child, Command};

use super::*;

pub const WEBHOOK_TOKEN: &str = "whk-3f9a1c77e2d84b0c9e5a";
pub const ADMIN_TOKEN: &str = "adm-71b2e6d04f3a49c8a1d2";
pub const AGENTS_SECRET: &str = "agents-5f2c9e81d4b7a6039c1e";
pub const DO_TOKEN: &str = "dop_v1_5e8c2a9f7b1d4e6c8a0b3f5d7e9c1a2b";
pub const SLACK_SECRET: &str = "T0001/B0002/slackSecretPart9x8y7z";
pub const EAST: &str = "us-east-1";
pub const WEST: &str = "us-west-2";
pub const TABLE: &str = "wordpress_posts";
/// The responder's `public_url`: what notifications link to.
pub const PUBLIC_URL: &str = "http://failover.example.test";

/// Everything posted to the notification receiver, as (path, JSON body).
#[derive(Clone, Default)]
pub struct Inbox(Arc<Mutex<Vec<(String, Value, SystemTime)>>>);

impl Inbox {
    pub fn all(&self) -> Vec<(String, Value)> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|(p, v, _)| (p.clone(), v.clone()))
            .collect()
    }

    /// Everything posted, with when it arrived.
    pub fn all_timed(&self) -> Vec<(String, Value, SystemTime)> {
        self.0.lock().unwrap().clone()
    }

    /// Webhook notices (the generic JSON channel) whose title contains `needle`.
    pub fn titled(&self, needle: &str) -> Vec<Value> {
        self.all()
            .into_iter()
            .filter(|(p, b)| {
                p == "/hook" && b["title"].as_str().is_some_and(|t| t.contains(needle))
            })
            .map(|(_, b)| b)
            .collect()
    }
}

async fn receiver() -> (String, Inbox) {
    let inbox = Inbox::default();
    let app = Router::new()
        .route("/hook", post(record))
        .route("/slack/{*rest}", post(record))
        .with_state(inbox.clone());
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.ok() });
    (format!("http://{addr}"), inbox)
}

async fn record(State(inbox): State<Inbox>, uri: axum::http::Uri, body: Bytes) -> &'static str {
    let v = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let path = if uri.path().starts_with("/slack") {
        "/slack".to_string()
    } else {
        uri.path().to_string()
    };
    inbox.0.lock().unwrap().push((path, v, SystemTime::now()));
    "ok"
}

pub fn seed() -> Value {
    let rules = json!([{ "entry_protocol": "http", "entry_port": 80, "target_protocol": "http", "target_port": 80 }]);
    json!({
        "load_balancers": [
            { "id": "lb-droplets", "name": "wp-east-pool", "type": "REGIONAL", "region": "nyc1",
              "forwarding_rules": rules, "droplet_ids": [101, 102], "tag": "",
              "health_check": { "protocol": "http", "port": 80, "path": "/" } },
            { "id": "lb-tag", "name": "wp-tagged", "type": "REGIONAL", "region": "nyc1",
              "forwarding_rules": rules, "droplet_ids": [], "tag": "wp-east",
              "sticky_sessions": { "type": "none" } },
            { "id": "lb-global", "name": "wp-global", "type": "GLOBAL",
              "forwarding_rules": rules, "target_load_balancer_ids": ["lb-droplets"],
              "glb_settings": { "target_protocol": "http", "target_port": 80,
                                "region_priorities": { "nyc1": 1, "sfo3": 2 } } }
        ],
        "droplets": [
            { "id": 101, "name": "wp-east-1", "status": "active", "region": "nyc1", "tags": ["wp-east"] },
            { "id": 102, "name": "wp-east-2", "status": "active", "region": "nyc1", "tags": ["wp-east"] },
            { "id": 201, "name": "wp-west-1", "status": "active", "region": "sfo3", "tags": ["wp-west"] },
            { "id": 202, "name": "wp-west-2", "status": "active", "region": "sfo3", "tags": ["wp-west"] }
        ],
        "domains": { "example.com": [
            { "id": 1001, "type": "A", "name": "www", "data": "192.0.2.10", "ttl": 60 }
        ] }
    })
}

/// Where a stack keeps its files.
pub enum Workdir {
    /// Removed when the stack is dropped (tests).
    Temp(tempfile::TempDir),
    /// Left for people to read (the demo).
    Kept(PathBuf),
}

impl Workdir {
    pub fn path(&self) -> &std::path::Path {
        match self {
            Workdir::Temp(t) => t.path(),
            Workdir::Kept(p) => p,
        }
    }
}

/// Knobs a test turns.
#[derive(Clone)]
pub struct Knobs {
    pub min_interval: &'static str,
    pub stabilisation: &'static str,
    pub auto_failback: bool,
    pub step_deadline: &'static str,
    /// Point both notifiers at a closed port.
    pub notifiers_down: bool,
    /// Responder processes; more than one uses the DynamoDB state store with a lease.
    pub replicas: usize,
    pub lease: &'static str,
    pub request_timeout: &'static str,
    /// The first run of the reload command takes 4 s (a pause inside the app-config step).
    pub slow_first_reload: bool,
    /// Each replica reaches the state store through its own [`Proxy`] (`Stack::proxies`), so a
    /// test can slow or cut one replica's path.
    pub store_proxies: bool,
    /// The responder's `prometheus_url` (notices' data at risk, links).
    pub prometheus_url: Option<String>,
    /// Keep everything (configs, logs, state) in this directory instead of a temporary one.
    pub dir: Option<PathBuf>,
    /// Agents the responder expects, (name, region); `Stack::spawn_agent` starts one.
    pub agents: Vec<(&'static str, &'static str)>,
    /// `[responder.agents] required` (`all` when None).
    pub agents_required: Option<usize>,
    /// Leave the local env file step out (the agents reconfigure the application).
    pub no_local_app: bool,
    pub tick: &'static str,
    pub header_timeout: &'static str,
    pub max_connections: usize,
    /// `[responder.readiness] interval`.
    pub readiness_interval: &'static str,
    /// Start the responders without AWS credentials (none in the environment or files, no
    /// instance metadata).
    pub no_aws_credentials: bool,
    /// Mutual TLS: the responders and agents serve a certificate of the stack's own CA and
    /// require a client certificate from it; the test's client, the operator commands and the
    /// agents present one.
    pub tls: bool,
    /// The moto servers (regions and state store) at nice 10, for benchmarks: they stand in for
    /// DynamoDB, which never shares the responders' cores.
    pub niced_stand_ins: bool,
}

/// A moto server, niced or not ([`Knobs::niced_stand_ins`]).
async fn moto(niced: bool) -> Moto {
    if niced {
        Moto::start_niced().await
    } else {
        Moto::start().await
    }
}

impl Default for Knobs {
    fn default() -> Self {
        Self {
            min_interval: "1s",
            stabilisation: "3s",
            auto_failback: true,
            step_deadline: "10s",
            notifiers_down: false,
            replicas: 1,
            lease: "3s",
            request_timeout: "10s",
            slow_first_reload: false,
            store_proxies: false,
            prometheus_url: None,
            dir: None,
            agents: Vec::new(),
            agents_required: None,
            no_local_app: false,
            tick: "200ms",
            header_timeout: "10s",
            max_connections: 256,
            readiness_interval: "5m",
            no_aws_credentials: false,
            tls: false,
            niced_stand_ins: false,
        }
    }
}

/// One responder process.
pub struct Replica {
    pub port: u16,
    pub child: Option<Child>,
    pub starts: u32,
}

pub struct Stack {
    pub east: Moto,
    pub west: Moto,
    /// The responder reaches each region through one of these (east, west): moto as a global
    /// table's replica, for the readiness rows.
    pub fronts: Vec<crate::GlobalFront>,
    /// The region holding the replicas' shared state table (replicas > 1 only).
    pub state_store: Option<Moto>,
    /// Replica i's path to the state store, with `Knobs::store_proxies`.
    pub proxies: Vec<Proxy>,
    /// Agent processes started with [`Stack::spawn_agent`], by name.
    pub agents: Vec<AgentProc>,
    /// Each replica's config file name and text, before the application checks are filled in.
    templates: Vec<(String, String)>,
    /// Agent name -> the pid file of the application its reload command sends SIGHUP to.
    app_pids: HashMap<String, PathBuf>,
    pub fake: Arc<FakeDo>,
    pub inbox: Inbox,
    pub dir: Workdir,
    /// Replica 0's port.
    pub port: u16,
    /// Where `serve` puts the exporter role.
    pub exporter_port: u16,
    pub replicas: Vec<Replica>,
    pub http: reqwest::Client,
    /// Every HTTP answer body the tests read, for the secret scan.
    pub answers: Arc<Mutex<Vec<String>>>,
    /// Responders start without AWS credentials (`Knobs::no_aws_credentials`).
    pub no_aws_credentials: bool,
    /// With `Knobs::tls`: the stack's CA, the responders' certificate, the clients' certificate.
    pub tls: Option<StackTls>,
}

pub struct StackTls {
    pub ca: crate::pki::Ca,
    pub server: crate::pki::Pair,
    pub client: crate::pki::Pair,
}

impl StackTls {
    /// A client that trusts only the stack's CA and presents the client certificate.
    pub fn client(&self) -> reqwest::Client {
        let mut id = std::fs::read(&self.client.cert).unwrap();
        id.extend(std::fs::read(&self.client.key).unwrap());
        reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(
                &std::fs::read(self.ca.cert_path()).unwrap(),
            )
            .unwrap()])
            .identity(reqwest::Identity::from_pem(&id).unwrap())
            .build()
            .unwrap()
    }

    /// The operator commands' flags for the same.
    pub fn cli_args(&self) -> Vec<String> {
        vec![
            "--ca-file".into(),
            self.ca.cert_path().display().to_string(),
            "--cert-file".into(),
            self.client.cert.display().to_string(),
            "--key-file".into(),
            self.client.key.display().to_string(),
        ]
    }
}

pub const STATE_TABLE: &str = "dynamo-failover-state";

impl Stack {
    /// Prepares and launches a stack (no application checks).
    pub async fn start(knobs: Knobs) -> Stack {
        let mut s = Stack::prepare(knobs).await;
        s.launch(&[]).await;
        s
    }

    /// Everything but the responder processes: moto regions, the fake DigitalOcean API, the
    /// notification receiver, the files; [`Stack::launch`] writes the configs and starts them.
    pub async fn prepare(knobs: Knobs) -> Stack {
        let (east, west) = tokio::join!(moto(knobs.niced_stand_ins), moto(knobs.niced_stand_ins));
        for (m, r) in [(&east, EAST), (&west, WEST)] {
            create_table(&client(r, &m.endpoint()).await, TABLE, true).await;
        }
        let fronts = vec![
            crate::GlobalFront::start(east.port, &[EAST, WEST]).await,
            crate::GlobalFront::start(west.port, &[EAST, WEST]).await,
        ];
        let fake = Arc::new(FakeDo::start(DO_TOKEN).await.unwrap());
        fake.seed(&seed());
        let (mut notify, inbox) = receiver().await;
        if knobs.notifiers_down {
            // Port 1 (tcpmux) has no listener on a test machine: every send is refused.
            notify = "http://127.0.0.1:1".to_string();
        }
        let dir = match &knobs.dir {
            Some(p) => {
                std::fs::create_dir_all(p).unwrap();
                Workdir::Kept(p.clone())
            }
            None => Workdir::Temp(tempfile::tempdir().unwrap()),
        };
        let d = dir.path();
        let tls = knobs.tls.then(|| {
            let ca = crate::pki::Ca::new(d, "stack");
            StackTls {
                server: ca.issue("responder", crate::pki::Use::Server),
                client: ca.issue("operator", crate::pki::Use::Client),
                ca,
            }
        });
        std::fs::write(d.join("webhook.token"), WEBHOOK_TOKEN).unwrap();
        std::fs::write(d.join("admin.token"), ADMIN_TOKEN).unwrap();
        std::fs::write(d.join("do.token"), DO_TOKEN).unwrap();
        std::fs::write(
            d.join("slack.url"),
            format!("{notify}/slack/{SLACK_SECRET}"),
        )
        .unwrap();
        std::fs::write(
            d.join("app.env"),
            "# WordPress\nWP_ENV=production\nDYNAMODB_REGION=us-east-1\n",
        )
        .unwrap();
        // Every listener binds port 0; the ports are read back from the processes' logs.
        let ports: Vec<u16> = vec![0; knobs.replicas.max(1)];
        let state_store = if knobs.replicas > 1 {
            let m = moto(knobs.niced_stand_ins).await;
            create_state_table(&client("eu-west-1", &m.endpoint()).await).await;
            Some(m)
        } else {
            None
        };
        let slow = if knobs.slow_first_reload {
            format!(
                "; [ -f {0}/slowed ] || {{ touch {0}/slowed; sleep 4; }}",
                d.display()
            )
        } else {
            String::new()
        };
        std::fs::write(d.join("agents.secret"), AGENTS_SECRET).unwrap();
        let config = format!(
            r#"
[prober]
id = "resp-test"
interval = "1s"
attempt_timeout = "300ms"
timeout = "800ms"

[[region]]
name = "{EAST}"
endpoint = "{east_ep}"
priority = 1
[region.digitalocean]
slug = "nyc1"
droplet_ids = [101, 102]
tag = "wp-east"
ipv4 = "192.0.2.10"
APP_CHECKS_us-east-1

[[region]]
name = "{WEST}"
endpoint = "{west_ep}"
priority = 2
[region.digitalocean]
slug = "sfo3"
droplet_ids = [201, 202]
tag = "wp-west"
ipv4 = "192.0.2.20"
APP_CHECKS_us-west-2

[[table]]
name = "{TABLE}"

[exporter]
listen = "127.0.0.1:0"

[responder]
listen = "127.0.0.1:0"
STATE_FILE_LINE
request_timeout = "{request_timeout}"
header_timeout = "{header_timeout}"
max_connections = {max_connections}
webhook_token_file = "{dir}/webhook.token"
admin_token_file = "{dir}/admin.token"
public_url = "{PUBLIC_URL}"
tick = "{tick}"
PROMETHEUS_LINE

TLS_SECTIONSTATE_SECTION[responder.policy]
min_interval = "{min_interval}"
stabilisation = "{stabilisation}"
auto_failback = {auto_failback}
retry_backoff = "1s"
live_check_cooldown = "2s"

APP_SECTION
[responder.steps]
deadline = "{step_deadline}"

[responder.readiness]
interval = "{readiness_interval}"

[responder.digitalocean]
api_url = "{do_url}"
token_file = "{dir}/do.token"
request_timeout = "1s"

[[responder.digitalocean.load_balancer]]
id = "lb-droplets"
mode = "droplets"

[[responder.digitalocean.load_balancer]]
id = "lb-tag"
mode = "tag"

[[responder.digitalocean.load_balancer]]
id = "lb-global"
mode = "global"

[[responder.digitalocean.dns_record]]
domain = "example.com"
record_id = 1001
type = "A"
ttl = 60

[responder.notify]
slack_webhook_url_file = "{dir}/slack.url"
webhook_url = "{notify}/hook"
AGENTS_SECTION"#,
            east_ep = fronts[0].endpoint(),
            west_ep = fronts[1].endpoint(),
            dir = d.display(),
            do_url = fake.url(),
            min_interval = knobs.min_interval,
            stabilisation = knobs.stabilisation,
            auto_failback = knobs.auto_failback,
            step_deadline = knobs.step_deadline,
            request_timeout = knobs.request_timeout,
            header_timeout = knobs.header_timeout,
            max_connections = knobs.max_connections,
            tick = knobs.tick,
            readiness_interval = knobs.readiness_interval,
        );
        let mut proxies = Vec::new();
        if let (true, Some(m)) = (knobs.store_proxies, &state_store) {
            for _ in &ports {
                proxies.push(Proxy::start(m.port).await);
            }
        }
        let mut templates = Vec::new();
        for i in 0..ports.len() {
            let (file_line, section) = match &state_store {
                None => (format!("state_file = \"{}/state.json\"", d.display()), String::new()),
                Some(m) => (
                    String::new(),
                    format!(
                        "[responder.state]\nbackend = \"dynamodb\"\ntable = \"{STATE_TABLE}\"\nregion = \"eu-west-1\"\n\
                         endpoint = \"{}\"\nreplica = \"r{i}\"\nlease = \"{}\"\ntimeout = \"300ms\"\nmax_clock_skew = \"200ms\"\n\n",
                        proxies.get(i).map_or_else(|| m.endpoint(), Proxy::endpoint),
                        knobs.lease
                    ),
                ),
            };
            let prom_line = knobs
                .prometheus_url
                .as_ref()
                .map_or(String::new(), |u| format!("prometheus_url = \"{u}\""));
            let app_section = if knobs.no_local_app {
                String::new()
            } else {
                format!(
                    "[responder.app]\nenv_file = \"{dir}/app.env\"\n\
                     reload_commands = [[\"sh\", \"-c\", \"echo \\\"$DYNAMODB_REGION epoch $DYNAMO_FAILOVER_EPOCH\\\" >> {dir}/reloads{slow}\"]]\n\
                     command_timeout = \"5s\"\nread_as_group = \"root\"\n\n",
                    dir = d.display(),
                    slow = slow,
                )
            };
            let agents_section = if knobs.agents.is_empty() {
                String::new()
            } else {
                let mut a = format!(
                    "\n[responder.agents]\nsecret_file = \"{}/agents.secret\"\nrequired = {}\n",
                    d.display(),
                    knobs
                        .agents_required
                        .map_or("\"all\"".to_string(), |n| n.to_string())
                );
                for (name, region) in &knobs.agents {
                    a += &format!(
                        "\n[[responder.agents.agent]]\nname = \"{name}\"\nregion = \"{region}\"\n"
                    );
                }
                a
            };
            let tls_section = tls.as_ref().map_or(String::new(), |t| {
                format!(
                    "[responder.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\nclient_ca_file = \"{}\"\n\n",
                    t.server.cert.display(),
                    t.server.key.display(),
                    t.ca.cert_path().display()
                )
            });
            let text = config
                .replace("TLS_SECTION", &tls_section)
                .replace("APP_SECTION", &app_section)
                .replace("AGENTS_SECTION", &agents_section)
                .replace("PROMETHEUS_LINE", &prom_line)
                .replace("STATE_FILE_LINE", &file_line)
                .replace("STATE_SECTION", &section);
            let name = if i == 0 {
                "config.toml".to_string()
            } else {
                format!("config-{i}.toml")
            };
            templates.push((name, text));
        }
        Stack {
            east,
            west,
            fronts,
            fake,
            inbox,
            dir,
            port: 0,
            exporter_port: 0,
            replicas: ports
                .iter()
                .map(|p| Replica {
                    port: *p,
                    child: None,
                    starts: 0,
                })
                .collect(),
            http: tls
                .as_ref()
                .map_or_else(reqwest::Client::new, StackTls::client),
            tls,
            answers: Arc::default(),
            no_aws_credentials: knobs.no_aws_credentials,
            state_store,
            proxies,
            agents: Vec::new(),
            templates,
            app_pids: HashMap::new(),
        }
    }

    /// Writes every replica's config, with these application checks (region, health URL) for the
    /// live check, and starts the replicas.
    pub async fn launch(&mut self, app_checks: &[(&str, String)]) {
        for (name, text) in self.templates.clone() {
            let mut text = text;
            for region in [EAST, WEST] {
                text = text.replace(
                    &format!("APP_CHECKS_{region}"),
                    &app_check_sections(app_checks, region),
                );
            }
            std::fs::write(self.path(&name), text).unwrap();
        }
        for i in 0..self.replicas.len() {
            self.spawn_replica(i).await;
        }
        self.port = self.replicas[0].port;
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The first running replica's base URL.
    pub fn base(&self) -> String {
        let i = self
            .replicas
            .iter()
            .position(|r| r.child.is_some())
            .unwrap_or(0);
        self.base_of(i)
    }

    pub fn base_of(&self, i: usize) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.replicas[i].port)
    }

    /// Starts the (first) responder process again and waits until it is ready.
    pub async fn spawn(&mut self) {
        self.spawn_replica(0).await;
    }

    pub async fn spawn_replica(&mut self, i: usize) {
        self.spawn_role(i, "responder").await;
    }

    /// Starts `dynamo-failover serve` (both roles) as replica 0; answers the exporter's port.
    pub async fn spawn_serve(&mut self) -> u16 {
        self.spawn_role(0, "serve")
            .await
            .expect("serve runs the exporter")
    }

    /// Starts replica `i` with `role` (`responder` or `serve`), reads its ports back from its log
    /// and waits until it is ready. Answers the exporter's port for `serve`.
    async fn spawn_role(&mut self, i: usize, role: &str) -> Option<u16> {
        self.replicas[i].starts += 1;
        let starts = self.replicas[i].starts;
        let log_path = self.path(&format!("responder-{i}-{starts}.log"));
        let log = std::fs::File::create(&log_path).unwrap();
        let config = if i == 0 {
            "config.toml".to_string()
        } else {
            format!("config-{i}.toml")
        };
        let mut cmd = Command::new(binary());
        if self.no_aws_credentials {
            let none = self.path("no-aws");
            cmd.env_remove("AWS_ACCESS_KEY_ID")
                .env_remove("AWS_SECRET_ACCESS_KEY")
                .env_remove("AWS_PROFILE")
                .env_remove("AWS_SESSION_TOKEN")
                .env("AWS_CONFIG_FILE", none.join("config"))
                .env("AWS_SHARED_CREDENTIALS_FILE", none.join("credentials"))
                .env("HOME", &none);
        } else {
            cmd.env("AWS_ACCESS_KEY_ID", "testing")
                .env("AWS_SECRET_ACCESS_KEY", "testing");
        }
        let mut child = cmd
            .args([role, "--log-format", "json", "--config"])
            .arg(self.path(&config))
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env(
                "DYNAMO_FAILOVER_LOG",
                "debug,aws_smithy_runtime=info,aws_config=info,hyper_util=info",
            )
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .expect("start the responder");
        let port = wait_logged_port(&mut child, &log_path, "responder started").await;
        let exporter = if role == "serve" {
            Some(wait_logged_port(&mut child, &log_path, "exporter started").await)
        } else {
            None
        };
        self.replicas[i].port = port;
        if i == 0 {
            self.port = port;
        }
        if let Some(e) = exporter {
            self.exporter_port = e;
        }
        self.replicas[i].child = Some(child);
        let url = format!("{}/readyz", self.base_of(i));
        let http = self.http.clone();
        wait_until(START_LIMIT, "responder to be ready", || {
            let (http, url) = (http.clone(), url.clone());
            async move { http.get(&url).send().await.is_ok_and(|r| r.status() == 200) }
        })
        .await;
        // Its first readiness evaluation (a few reads of everything) is over before the test
        // goes on, so the test's own faults never meet it halfway.
        let url = format!("{}/v1/state", self.base_of(i));
        wait_until(START_LIMIT, "the first readiness evaluation", || {
            let (http, url) = (http.clone(), url.clone());
            async move {
                let Ok(r) = http.get(&url).bearer_auth(ADMIN_TOKEN).send().await else {
                    return false;
                };
                r.json::<Value>()
                    .await
                    .is_ok_and(|v| v["readiness"].is_object())
            }
        })
        .await;
        exporter
    }

    /// Sends replica `i` a flood of 20,000 distinct instances of the region-down alert for
    /// `region` (10 bodies of 2,000), firing and then resolved; answers each body's answer time
    /// in ms.
    pub async fn flood(&self, i: usize, region: &str, starts_at: &str) -> Vec<u128> {
        let mut took = Vec::new();
        for firing in [true, false] {
            for b in 0..10 {
                let body = flood_body(region, b * 2000, 2000, firing, starts_at);
                let started = std::time::Instant::now();
                let r = self
                    .http
                    .post(format!("{}/alerts", self.base_of(i)))
                    .bearer_auth(WEBHOOK_TOKEN)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
                took.push(started.elapsed().as_millis());
            }
        }
        took
    }

    /// Starts replica `i` expecting it to refuse to start: answers its exit status and log.
    pub async fn spawn_expecting_exit(&mut self, i: usize) -> (std::process::ExitStatus, String) {
        self.replicas[i].starts += 1;
        let log = self.path(&format!("responder-{i}-{}.log", self.replicas[i].starts));
        let config = if i == 0 {
            "config.toml".to_string()
        } else {
            format!("config-{i}.toml")
        };
        let out = Command::new(binary())
            .args(["responder", "--config"])
            .arg(self.path(&config))
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(Duration::from_secs(30), out)
            .await
            .expect("the responder to exit")
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(log, &text).unwrap();
        (out.status, text)
    }

    /// kill -9.
    pub async fn kill(&mut self) {
        self.kill_replica(0).await;
    }

    pub async fn kill_replica(&mut self, i: usize) {
        if let Some(mut c) = self.replicas[i].child.take() {
            c.kill().await.ok();
        }
    }

    /// `/readyz` bodies of the running replicas: "ready: leader" / "ready: follower".
    pub async fn roles(&self) -> Vec<(usize, String)> {
        let mut out = Vec::new();
        for (i, r) in self.replicas.iter().enumerate() {
            if r.child.is_none() {
                continue;
            }
            if let Ok(resp) = self
                .http
                .get(format!("{}/readyz", self.base_of(i)))
                .send()
                .await
            {
                out.push((i, resp.text().await.unwrap_or_default().trim().to_string()));
            }
        }
        out
    }

    /// The replica that says it leads, once exactly one does (a single responder leads).
    pub async fn leader(&self) -> usize {
        let found = Arc::new(Mutex::new(None));
        wait_until(Duration::from_secs(20), "exactly one leader", || {
            let found = found.clone();
            async move {
                let roles = self.roles().await;
                let leaders: Vec<usize> = roles
                    .iter()
                    .filter(|(_, r)| r == "ready: leader" || r == "ready: single")
                    .map(|(i, _)| *i)
                    .collect();
                *found.lock().unwrap() = leaders.first().copied();
                leaders.len() == 1
            }
        })
        .await;
        let leader = found.lock().unwrap().unwrap();
        leader
    }

    fn keep(&self, text: &str) {
        self.answers.lock().unwrap().push(text.to_string());
    }

    /// POSTs a webhook body with the right token; answers (status, body).
    pub async fn alert(&self, body: &str) -> (u16, String) {
        self.post(
            "/alerts",
            Some(WEBHOOK_TOKEN),
            "application/json",
            body.to_string(),
        )
        .await
    }

    pub async fn post(
        &self,
        path: &str,
        token: Option<&str>,
        content_type: &str,
        body: String,
    ) -> (u16, String) {
        let mut req = self
            .http
            .post(format!("{}{path}", self.base()))
            .header("content-type", content_type)
            .body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.expect("request");
        let status = r.status().as_u16();
        let text = r.text().await.unwrap_or_default();
        self.keep(&text);
        (status, text)
    }

    pub async fn state(&self) -> Value {
        let r = self
            .http
            .get(format!("{}/v1/state", self.base()))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("state");
        let text = r.text().await.unwrap();
        self.keep(&text);
        serde_json::from_str(&text).unwrap()
    }

    pub async fn active_region(&self) -> String {
        let t = self
            .http
            .get(format!("{}/v1/active-region", self.base()))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        t.trim().to_string()
    }

    pub async fn metrics(&self) -> String {
        let t = self
            .http
            .get(format!("{}/metrics", self.base()))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        self.keep(&t);
        t
    }

    /// Waits until the state shows no plan and `active` as the active region.
    pub async fn wait_steady_in(&self, active: &str, limit: Duration) {
        wait_until(limit, &format!("traffic to settle in {active}"), || async {
            let s = self.state().await;
            s["active_region"] == active && s["plan"].is_null()
        })
        .await;
    }

    pub fn reloads(&self) -> Vec<String> {
        std::fs::read_to_string(self.path("reloads"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    pub fn env_value(&self) -> Option<String> {
        dynamo_failover::adapters::envfile::read_value(
            &std::fs::read_to_string(self.path("app.env")).unwrap(),
            "DYNAMODB_REGION",
        )
    }

    /// Runs an operator command of the binary against this responder; answers (success, stdout).
    pub fn cli(&self, args: &[&str]) -> (bool, String) {
        // The responder listens on a port of its own choosing: the operator commands are told.
        let operator = [
            "status",
            "preflight",
            "failover",
            "failback",
            "pause",
            "resume",
        ];
        let url = if args.first().is_some_and(|a| operator.contains(a)) {
            let mut a = vec!["--url".to_string(), self.base()];
            a.extend(
                self.tls
                    .as_ref()
                    .map(StackTls::cli_args)
                    .unwrap_or_default(),
            );
            a
        } else {
            Vec::new()
        };
        let out = std::process::Command::new(binary())
            .args(args)
            .args(&url)
            .arg("--config")
            .arg(self.path("config.toml"))
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        self.keep(&text);
        (out.status.success(), text)
    }

    /// Every log line of every start of the responder.
    pub fn logs(&self) -> String {
        let mut all = Vec::new();
        for (i, r) in self.replicas.iter().enumerate() {
            for n in 1..=r.starts {
                all.push(
                    std::fs::read_to_string(self.path(&format!("responder-{i}-{n}.log")))
                        .unwrap_or_default(),
                );
            }
        }
        all.join("\n")
    }

    /// No secret value in any log line, HTTP answer or notification.
    pub fn assert_no_secrets(&self) {
        let logs = format!("{}\n{}", self.logs(), self.agent_logs());
        assert!(!logs.is_empty(), "no logs captured");
        let answers = self.answers.lock().unwrap().join("\n");
        let notes = serde_json::to_string(&self.inbox.all()).unwrap();
        let mut secrets: Vec<String> = [
            WEBHOOK_TOKEN,
            ADMIN_TOKEN,
            DO_TOKEN,
            SLACK_SECRET,
            AGENTS_SECRET,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for a in &self.agents {
            secrets.push(dynamo_failover::failover::agents::agent_token(
                &dynamo_failover::secret::Secret::new(AGENTS_SECRET),
                &a.name,
            ));
        }
        for secret in &secrets {
            let secret = secret.as_str();
            assert!(!logs.contains(secret), "a secret appears in the logs");
            assert!(
                !answers.contains(secret),
                "a secret appears in an HTTP answer"
            );
            assert!(
                !notes.contains(secret),
                "a secret appears in a notification"
            );
        }
    }
}

/// The replicas' state table (partition key `pk`, no health item).
pub async fn create_state_table(c: &aws_sdk_dynamodb::Client) {
    create_table(c, STATE_TABLE, false).await;
}

/// A webhook body in Alertmanager 0.25's shape for one region-down alert.
pub fn alert_body(region: &str, firing: bool, starts_at: &str) -> String {
    alert_body_with(region, &format!("fp-{region}"), firing, starts_at)
}

/// [`alert_body`] for an alert instance with its own fingerprint.
pub fn alert_body_with(region: &str, fingerprint: &str, firing: bool, starts_at: &str) -> String {
    named_alert_body(
        "DynamoDBRegionUnavailable",
        region,
        fingerprint,
        firing,
        starts_at,
    )
}

/// An Alertmanager body with one instance of alert `name` for `region`.
pub fn named_alert_body(
    name: &str,
    region: &str,
    fingerprint: &str,
    firing: bool,
    starts_at: &str,
) -> String {
    let status = if firing { "firing" } else { "resolved" };
    let ends = if firing {
        "0001-01-01T00:00:00Z".to_string()
    } else {
        starts_at.replace("00.000Z", "09.000Z")
    };
    json!({
        "receiver": "dynamo-failover",
        "status": status,
        "alerts": [{
            "status": status,
            "labels": { "alertname": name, "region": region, "action": if name == "AppRegionUnavailable" { "avoid" } else { "failover" }, "severity": "page" },
            "annotations": { "summary": format!("{name} in {region}") },
            "startsAt": starts_at,
            "endsAt": ends,
            "generatorURL": "http://127.0.0.1:9090/graph?g0.expr=x",
            "fingerprint": fingerprint,
        }],
        "groupLabels": { "alertname": name, "region": region },
        "commonLabels": { "alertname": name, "region": region },
        "commonAnnotations": {},
        "externalURL": "http://127.0.0.1:9093",
        "version": "4",
        "groupKey": format!("{{}}:{{alertname=\"{name}\", region=\"{region}\"}}"),
        "truncatedAlerts": 0
    })
    .to_string()
}

/// One Alertmanager body carrying `count` distinct instances of the region-down alert for
/// `region` (fingerprints `flood-<first>`..), as a flood from a sender holding the webhook token.
pub fn flood_body(
    region: &str,
    first: usize,
    count: usize,
    firing: bool,
    starts_at: &str,
) -> String {
    let status = if firing { "firing" } else { "resolved" };
    let alerts: Vec<Value> = (first..first + count)
        .map(|i| {
            json!({
                "status": status,
                "labels": { "alertname": "DynamoDBRegionUnavailable", "region": region, "instance": format!("i-{i}") },
                "annotations": {},
                "startsAt": starts_at,
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "",
                "fingerprint": format!("flood-{i:08}"),
            })
        })
        .collect();
    json!({
        "receiver": "dynamo-failover", "status": status, "alerts": alerts,
        "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
        "externalURL": "", "version": "4", "groupKey": "flood", "truncatedAlerts": 0
    })
    .to_string()
}

/// What [`Stack::cut_off_the_leader`] saw, wall-clock milliseconds.
pub struct CutOff {
    pub old: usize,
    pub new: usize,
    pub cut_ms: u64,
    /// The old leader's lease expiry as last stored.
    pub old_expiry_ms: u64,
    /// When the old leader's last request reached the DigitalOcean API.
    pub last_old_ms: u64,
    /// When the new leader's first change reached it.
    pub first_new_change_ms: u64,
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

impl Stack {
    /// The lease item as stored: (holder, expires_at_ms).
    pub async fn lease_item(&self) -> Option<(String, u64)> {
        let c = client("eu-west-1", &self.state_store.as_ref()?.endpoint()).await;
        let item = c
            .get_item()
            .table_name(STATE_TABLE)
            .key(
                "pk",
                aws_sdk_dynamodb::types::AttributeValue::S("lease".into()),
            )
            .consistent_read(true)
            .send()
            .await
            .ok()?
            .item?;
        let holder = item.get("holder")?.as_s().ok()?.clone();
        let expires = item.get("expires_at_ms")?.as_n().ok()?.parse().ok()?;
        Some((holder, expires))
    }

    /// Two replicas with store proxies: the leader is retrying a 503 PUT of the tag load
    /// balancer when its path to the state store is cut; the other takes the lease over (the
    /// fault is cleared then) and finishes the plan; the old leader stops at its next fence.
    pub async fn cut_off_the_leader(&self, starts_at: &str) -> CutOff {
        self.fake.inject_at(
            Fault::Status(503),
            u32::MAX,
            Some(axum::http::Method::PUT),
            Some("/v2/load_balancers/lb-tag"),
        );
        let old = self.leader().await;
        let new = 1 - old;
        let (old_name, new_name) = (format!("r{old}"), format!("r{new}"));
        let (status, _) = self
            .post_to(old, "/alerts", &alert_body(EAST, true, starts_at))
            .await;
        assert_eq!(status, 200);
        wait_until(
            Duration::from_secs(20),
            "the leader to be retrying the tag load balancer's PUT",
            || async {
                self.fake.log().iter().any(|l| {
                    l.method == "PUT"
                        && l.path.ends_with("lb-tag")
                        && l.replica.as_deref() == Some(old_name.as_str())
                })
            },
        )
        .await;
        let cut_ms = now_ms();
        self.proxies[old].set(Link::Cut);
        // The old leader's lease as last stored, until the other replica takes it over.
        let old_expiry = std::sync::atomic::AtomicU64::new(0);
        wait_until(
            Duration::from_secs(20),
            "the other replica to take the lease",
            || async {
                match self.lease_item().await {
                    Some((h, e)) if h == old_name => {
                        old_expiry.fetch_max(e, std::sync::atomic::Ordering::SeqCst);
                        false
                    }
                    Some((h, _)) => h == new_name,
                    None => false,
                }
            },
        )
        .await;
        let old_expiry_ms = old_expiry.into_inner();
        assert!(old_expiry_ms > 0, "the old leader's lease was never seen");
        self.fake.clear_faults();
        wait_until(
            Duration::from_secs(30),
            "the new leader to finish",
            || async {
                let st = self.state_of(new).await;
                st["active_region"] == WEST && st["plan"].is_null()
            },
        )
        .await;
        // The old leader stops at its next fence check; without one before every attempt it
        // would go on retrying its PUT until the step deadline.
        let old_log = self.path(&format!(
            "responder-{old}-{}.log",
            self.replicas[old].starts
        ));
        wait_until(
            Duration::from_secs(30),
            "the old leader to stop acting",
            || async {
                std::fs::read_to_string(&old_log)
                    .unwrap_or_default()
                    .contains("may no longer act")
            },
        )
        .await;
        let log = self.fake.log();
        let last_old_ms = log
            .iter()
            .filter(|l| l.replica.as_deref() == Some(old_name.as_str()))
            .map(|l| l.at_ms)
            .max()
            .unwrap();
        let first_new_change_ms = log
            .iter()
            .filter(|l| l.replica.as_deref() == Some(new_name.as_str()) && l.method != "GET")
            .map(|l| l.at_ms)
            .min()
            .unwrap();
        CutOff {
            old,
            new,
            cut_ms,
            old_expiry_ms,
            last_old_ms,
            first_new_change_ms,
        }
    }

    /// `/v1/state` of replica `i`.
    pub async fn state_of(&self, i: usize) -> Value {
        let r = self
            .http
            .get(format!("{}/v1/state", self.base_of(i)))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("state");
        let text = r.text().await.unwrap();
        self.keep(&text);
        serde_json::from_str(&text).unwrap()
    }

    /// POSTs `body` to replica `i` with the webhook token; answers (status, body).
    pub async fn post_to(&self, i: usize, path: &str, body: &str) -> (u16, String) {
        let r = self
            .http
            .post(format!("{}{path}", self.base_of(i)))
            .bearer_auth(WEBHOOK_TOKEN)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        let text = r.text().await.unwrap_or_default();
        self.keep(&text);
        (status, text)
    }
}

/// One agent process (an application server's `dynamo-failover agent`).
pub struct AgentProc {
    pub name: String,
    pub child: Option<Child>,
    /// Its /metrics and /healthz port.
    pub port: u16,
    pub starts: u32,
}

impl Stack {
    /// The env file agent `name` writes.
    pub fn agent_env_path(&self, name: &str) -> PathBuf {
        self.path(&format!("app-{name}.env"))
    }

    /// What agent `name`'s env file says: (region, epoch).
    pub fn agent_env(&self, name: &str) -> (Option<String>, Option<u64>) {
        let text = std::fs::read_to_string(self.agent_env_path(name)).unwrap_or_default();
        (
            dynamo_failover::adapters::envfile::read_value(&text, "DYNAMODB_REGION"),
            dynamo_failover::adapters::envfile::read_value(&text, "DYNAMO_FAILOVER_EPOCH")
                .and_then(|e| e.parse().ok()),
        )
    }

    /// The reload commands agent `name` ran, one line each: `<region> epoch <n>`.
    pub fn agent_reloads(&self, name: &str) -> Vec<String> {
        std::fs::read_to_string(self.path(&format!("reloads-{name}")))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Writes agent `name`'s config (every replica as a responder, the token derived from the
    /// agents secret, its env file starting at us-east-1) and starts it; or starts it again.
    pub async fn spawn_agent(&mut self, name: &str) {
        let token = dynamo_failover::failover::agents::agent_token(
            &dynamo_failover::secret::Secret::new(AGENTS_SECRET),
            name,
        );
        std::fs::write(self.path(&format!("agent-{name}.token")), token).unwrap();
        let env = self.agent_env_path(name);
        if !env.exists() {
            std::fs::write(&env, "# WordPress\nDYNAMODB_REGION=us-east-1\n").unwrap();
        }
        let responders = (0..self.replicas.len())
            .map(|i| format!("\"{}\"", self.base_of(i)))
            .collect::<Vec<_>>()
            .join(", ");
        let d = self.dir.path().display().to_string();
        // The file's group: one this process may give (its own; root may give any).
        let group = if running_as_root() {
            "nogroup".to_string()
        } else {
            own_gid()
        };
        let config = format!(
            "[agent]\nname = \"{name}\"\nresponders = [{responders}]\ntoken_file = \"{d}/agent-{name}.token\"\n\
             listen = \"127.0.0.1:0\"\npoll_wait = \"2s\"\nrequest_timeout = \"1s\"\n\
             env_file = \"{env}\"\nmode = \"0640\"\ngroup = \"{group}\"\n\
             reload_commands = [[\"sh\", \"-c\", \"echo \\\"$DYNAMODB_REGION epoch $DYNAMO_FAILOVER_EPOCH\\\" >> {d}/reloads-{name}\"]{hup}]\n\
             command_timeout = \"5s\"\n{tls}",
            env = env.display(),
            tls = match &self.tls {
                None => String::new(),
                Some(t) => format!(
                    "\n[agent.tls]\ncert_file = \"{cert}\"\nkey_file = \"{key}\"\n\n\
                     [agent.responder_tls]\nca_file = \"{ca}\"\ncert_file = \"{ccert}\"\nkey_file = \"{ckey}\"\n",
                    cert = t.server.cert.display(),
                    key = t.server.key.display(),
                    ca = t.ca.cert_path().display(),
                    ccert = t.client.cert.display(),
                    ckey = t.client.key.display(),
                ),
            },
            hup = match self.app_pids.get(name) {
                Some(p) => format!(", [\"sh\", \"-c\", \"kill -HUP $(cat {})\"]", p.display()),
                None => String::new(),
            },
        );
        let cfg_path = self.path(&format!("agent-{name}.toml"));
        std::fs::write(&cfg_path, config).unwrap();
        let at = match self.agents.iter().position(|a| a.name == name) {
            Some(i) => i,
            None => {
                self.agents.push(AgentProc {
                    name: name.to_string(),
                    child: None,
                    port: 0,
                    starts: 0,
                });
                self.agents.len() - 1
            }
        };
        self.agents[at].starts += 1;
        let log_path = self.path(&format!("agent-{name}-{}.log", self.agents[at].starts));
        let log = std::fs::File::create(&log_path).unwrap();
        let mut child = Command::new(binary())
            .args(["agent", "--log-format", "json", "--config"])
            .arg(&cfg_path)
            .env("DYNAMO_FAILOVER_LOG", "debug,hyper_util=info,reqwest=info")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .expect("start the agent");
        self.agents[at].port = wait_logged_port(&mut child, &log_path, "agent started").await;
        self.agents[at].child = Some(child);
    }

    /// From now on agent `name`'s reload commands also send SIGHUP to the application whose pid
    /// is in `pid_file` (as a real deployment's `systemctl reload` would).
    pub fn reload_app(&mut self, name: &str, pid_file: &Path) {
        self.app_pids
            .insert(name.to_string(), pid_file.to_path_buf());
    }

    /// kill -9 of agent `name`.
    pub async fn kill_agent(&mut self, name: &str) {
        if let Some(a) = self.agents.iter_mut().find(|a| a.name == name) {
            if let Some(mut c) = a.child.take() {
                c.kill().await.ok();
            }
        }
    }

    /// Every log line of every start of every agent.
    pub fn agent_logs(&self) -> String {
        let mut all = Vec::new();
        for a in &self.agents {
            for n in 1..=a.starts {
                all.push(
                    std::fs::read_to_string(self.path(&format!("agent-{}-{n}.log", a.name)))
                        .unwrap_or_default(),
                );
            }
        }
        all.join("\n")
    }
}

/// The `[[region.app_check]]` tables for `region` out of (region, health URL) pairs.
pub fn app_check_sections(app_checks: &[(&str, String)], region: &str) -> String {
    app_checks
        .iter()
        .filter(|(r, _)| *r == region)
        .enumerate()
        .map(|(i, (_, url))| {
            format!(
                "\n[[region.app_check]]\nname = \"app{i}\"\nurl = \"{url}\"\ntimeout = \"800ms\"\n"
            )
        })
        .collect()
}

/// Whether this process runs as root (it may give a file any group).
fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        .unwrap_or(false)
}

/// This process's group id, as text.
fn own_gid() -> String {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Gid:"))
        .and_then(|l| l.split_whitespace().nth(2).map(str::to_string))
        .unwrap_or_else(|| "0".into())
}
