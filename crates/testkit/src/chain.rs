//! The whole chain for real: three exporter processes (three probers) -> Prometheus (the fast
//! profile derived from prometheus/) -> Alertmanager (derived from alertmanager/) -> the
//! responder's webhook -> the fake DigitalOcean API and the application's env file. Every process
//! binds port 0; the ports are read back.

use std::path::Path;
use std::process::Stdio;

use serde_json::Value;
use tokio::process::{Child, Command};

use crate::stack::*;
use crate::*;

pub struct Chain {
    pub stack: Stack,
    procs: Vec<Child>,
    /// Prometheus' base URL.
    pub prom: String,
    /// Alertmanager's base URL.
    pub alertmanager: String,
    /// The probers' /metrics addresses.
    pub exporters: Vec<String>,
    pub dir: Workdir,
    /// Between every prober and us-east-1, with `east_gated`: can refuse writes.
    pub gate: Option<WriteGate>,
    /// With `ChainOpts::users`: one application stand-in per agent (the agent's region's
    /// droplets), in agent order.
    pub apps: Vec<crate::users::AppStandin>,
    /// With `ChainOpts::users`: users writing every 100 ms where the DNS record points.
    pub users: Option<crate::users::Users>,
    /// With `ChainOpts::users`: Global Tables' replication between the moto regions.
    pub replicator: Option<crate::users::Replicator>,
}

/// Starts `cmd` with its output in `DIR/NAME.log`, killed when dropped.
pub fn spawn_logged(dir: &Path, name: &str, cmd: &mut Command) -> Child {
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    cmd.stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {name}: {e} (run the tests through scripts/test)"))
}

/// Waits until `url` answers a success status.
pub async fn wait_http_ok(url: &str, what: &str) {
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

/// What a chain is made of, beyond the defaults.
#[derive(Default)]
pub struct ChainOpts {
    /// Probers whose path to us-east-1 is cut (a blackhole endpoint).
    pub blackhole_east_for: Vec<&'static str>,
    /// Every prober reaches us-east-1 through a [`WriteGate`] (`Chain::gate`).
    pub east_gated: bool,
    /// The responder stack's knobs (the chain fills in `prometheus_url`).
    pub knobs: Knobs,
    /// Users and the application: an application stand-in per agent (`knobs.agents`, reloaded
    /// by its agent), checked by the probers and by the responder's live check, users writing
    /// through the DNS record, and replication between the regions with this lag.
    pub users: Option<std::time::Duration>,
}

impl Chain {
    /// Starts everything with the defaults.
    pub async fn start(blackhole_east_for: &[&'static str], east_gated: bool) -> Chain {
        Self::start_with(ChainOpts {
            blackhole_east_for: blackhole_east_for.to_vec(),
            east_gated,
            ..ChainOpts::default()
        })
        .await
    }

    /// Starts everything. Order: Prometheus first (the responder reads the data at risk from
    /// it), then the responder stack, the probers and Alertmanager; then Prometheus is told
    /// where they all are (a config reload).
    pub async fn start_with(opts: ChainOpts) -> Chain {
        // One directory for everything: the stack's (kept for the demo) or a temporary one.
        let dir = match &opts.knobs.dir {
            Some(p) => {
                std::fs::create_dir_all(p).unwrap();
                Workdir::Kept(p.clone())
            }
            None => Workdir::Temp(tempfile::tempdir().unwrap()),
        };
        let profile = dir.path().join("profile");
        std::fs::create_dir_all(&profile).unwrap();
        std::fs::write(
            profile.join("prometheus.yml"),
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n",
        )
        .unwrap();
        let mut procs = Vec::new();
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
                .arg("--web.listen-address=127.0.0.1:0")
                .arg("--web.enable-lifecycle"),
        );
        let prom_port = wait_listening(&mut prometheus, "Prometheus").await;
        procs.push(prometheus);
        let prom = format!("http://127.0.0.1:{prom_port}");
        let agents = opts.knobs.agents.clone();
        let mut stack = Stack::prepare(Knobs {
            prometheus_url: Some(prom.clone()),
            dir: Some(dir.path().to_path_buf()),
            // The fast profile's readiness interval: every 3 s, 4 DigitalOcean reads (80 of the
            // API's 250 a minute), the rest left for the plans.
            readiness_interval: "3s",
            ..opts.knobs
        })
        .await;
        // The application first (the responder's live check and the probers reach it), each
        // instance reading the env file its agent will manage and reloaded by it.
        let mut apps = Vec::new();
        let mut app_checks: Vec<(&str, String)> = Vec::new();
        if opts.users.is_some() {
            for (name, region) in &agents {
                let env = stack.agent_env_path(name);
                std::fs::write(&env, "# WordPress\nDYNAMODB_REGION=us-east-1\n").unwrap();
                let app = crate::users::AppStandin::start(&stack, region, &env).await;
                stack.reload_app(name, &app.pid_file);
                app_checks.push((region, format!("{}/healthz", app.url())));
                apps.push(app);
            }
        }
        stack.launch(&app_checks).await;
        for (name, _) in agents {
            stack.spawn_agent(name).await;
        }
        // Users and replication start before the probers, so that the replication lag the
        // probers measure is the configured one from their first canary on.
        let users = opts.users.map(|_| {
            let ips = [(EAST, "192.0.2.10"), (WEST, "192.0.2.20")];
            let instances = apps
                .iter()
                .filter_map(|a| {
                    let ip = ips.iter().find(|(r, _)| *r == a.region)?.1;
                    Some((ip.to_string(), (a.region.clone(), a.url())))
                })
                .collect();
            crate::users::Users::start(stack.fake.clone(), instances)
        });
        let replicator = match (opts.users, &users) {
            (Some(lag), Some(u)) => Some(
                crate::users::Replicator::start(
                    &stack.east,
                    &stack.west,
                    lag,
                    &["p1", "p2", "p3"],
                    u.log.clone(),
                )
                .await,
            ),
            _ => None,
        };
        let gate = if opts.east_gated {
            Some(WriteGate::start(stack.east.port).await)
        } else {
            None
        };
        let (hole, _h) = blackhole().await;
        std::mem::forget(_h); // the blackhole lives as long as the process
        let mut exporters = Vec::new();
        for prober in ["p1", "p2", "p3"] {
            let east = if opts.blackhole_east_for.contains(&prober) {
                hole.clone()
            } else if let Some(g) = &gate {
                g.endpoint()
            } else {
                stack.east.endpoint()
            };
            let cfg = format!(
                "[prober]\nid = \"{prober}\"\ninterval = \"1s\"\nattempt_timeout = \"300ms\"\ntimeout = \"800ms\"\n\n\
                 [exporter]\nlisten = \"127.0.0.1:0\"\n\n\
                 [[region]]\nname = \"{EAST}\"\nendpoint = \"{east}\"\npriority = 1\n{east_checks}\n\
                 [[region]]\nname = \"{WEST}\"\nendpoint = \"{west}\"\npriority = 2\n{west_checks}\n\
                 [[table]]\nname = \"{TABLE}\"\n",
                west = stack.west.endpoint(),
                east_checks = app_check_sections(&app_checks, EAST),
                west_checks = app_check_sections(&app_checks, WEST),
            );
            let path = stack.path(&format!("{prober}.toml"));
            std::fs::write(&path, cfg).unwrap();
            let mut child = spawn_logged(
                stack.dir.path(),
                prober,
                Command::new(binary())
                    .args(["exporter", "--log-format", "json", "--config"])
                    .arg(&path)
                    .env("AWS_ACCESS_KEY_ID", "testing")
                    .env("AWS_SECRET_ACCESS_KEY", "testing")
                    .env("AWS_EC2_METADATA_DISABLED", "true"),
            );
            let log = stack.path(&format!("{prober}.log"));
            let port = wait_logged_port(&mut child, &log, "exporter started").await;
            procs.push(child);
            exporters.push(format!("127.0.0.1:{port}"));
        }
        // The monitoring files, derived from the shipped ones (profile.py); Alertmanager's own
        // config does not depend on its address, Prometheus' does.
        let derive = |alertmanager: &str| {
            let out = std::process::Command::new("python3")
                .arg(root().join("scripts/lib/profile.py"))
                .arg(&profile)
                .args(["--fast", "--plain", "--exporters", &exporters.join(",")])
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
        // Prometheus runs on its first config until the reload below.
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
        wait_http_ok(
            &format!("http://127.0.0.1:{am_port}/-/ready"),
            "Alertmanager to be ready",
        )
        .await;
        wait_http_ok(&format!("{prom}/-/ready"), "Prometheus to be ready").await;
        let reload = reqwest::Client::new()
            .post(format!("{prom}/-/reload"))
            .send()
            .await
            .unwrap();
        assert!(
            reload.status().is_success(),
            "Prometheus refused the reload"
        );
        let chain = Chain {
            stack,
            procs,
            prom,
            alertmanager: format!("http://127.0.0.1:{am_port}"),
            exporters,
            dir,
            gate,
            apps,
            users,
            replicator,
        };
        wait_until(
            START_LIMIT,
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

    pub async fn query(&self, q: &str) -> Vec<Value> {
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

    pub async fn value(&self, q: &str) -> Option<f64> {
        self.query(q).await.first()?["value"][1]
            .as_str()?
            .parse()
            .ok()
    }

    pub fn log(&self, name: &str) -> String {
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
