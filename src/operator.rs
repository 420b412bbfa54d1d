//! The operator commands (`status`, `failover`, `failback`, `pause`, `resume`): calls to the
//! responder's admin API, printed as readable tables.

use anyhow::{bail, Context};
use dynamo_failover::config::types::ClientTls;
use dynamo_failover::config::Config;
use serde_json::Value;

pub enum Action {
    Status,
    Failover(String),
    Failback,
    Pause,
    Resume,
}

/// How the operator commands reach the responder: its URL and the TLS settings of the call.
pub struct Target {
    pub url: Option<String>,
    /// With `allow_plain_http` from --allow-plain-http.
    pub tls: ClientTls,
}

impl Target {
    /// The base URL (the config's listener by default) and a client that verifies it. The admin
    /// token is never sent in cleartext to another machine unless asked for.
    fn connect(
        &self,
        r: &dynamo_failover::config::responder::ResponderConfig,
    ) -> anyhow::Result<(String, reqwest::Client)> {
        let base = self.url.clone().unwrap_or_else(|| r.local_url());
        let base = base.trim_end_matches('/').to_string();
        // The config's own listener, said to be plain on purpose (allow_plain_http), is this
        // machine's: no need to say it twice.
        let own_plain = self.url.is_none() && r.allow_plain_http;
        if dynamo_failover::tls::cleartext_off_machine(&base)
            && !self.tls.allow_plain_http
            && !own_plain
        {
            bail!(
                "{base} is plain HTTP to another machine: the admin token would cross the network \
                 in cleartext. Use https:// (the responder's [responder.tls]), or pass \
                 --allow-plain-http if something else encrypts the path"
            );
        }
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            bail!("--cert-file and --key-file go together: give both, or neither");
        }
        // The admin token goes only to the URL: no proxy from the environment in between.
        let http = dynamo_failover::tls::client(
            reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(10))
                .no_proxy(),
            &self.tls,
            dynamo_failover::tls::Roots::BundleOnly,
        )?
        .build()?;
        Ok((base, http))
    }

    /// Why a request to the responder failed, in words: the TLS reason when there is one,
    /// found by a handshake of its own when the error does not carry it.
    async fn why(&self, base: &str, e: &reqwest::Error) -> String {
        if let Some(t) = dynamo_failover::tls::explain(e) {
            return t;
        }
        match dynamo_failover::tls::diagnose(
            base,
            &self.tls,
            dynamo_failover::tls::Roots::BundleOnly,
        )
        .await
        {
            Some(t) => t,
            None => dynamo_failover::tls::describe(e),
        }
    }
}

pub async fn call(config: Config, target: Target, action: Action) -> anyhow::Result<()> {
    let r = config.responder.as_ref().context(
        "the config has no [responder] section (needed for its address and admin token)",
    )?;
    let (base, http) = target.connect(r)?;
    let req = match &action {
        Action::Status => http.get(format!("{base}/v1/state")),
        Action::Failover(to) => http
            .post(format!("{base}/v1/failover"))
            .json(&serde_json::json!({ "to": to })),
        Action::Failback => http.post(format!("{base}/v1/failback")),
        Action::Pause => http.post(format!("{base}/v1/pause")),
        Action::Resume => http.post(format!("{base}/v1/resume")),
    };
    let resp = req.bearer_auth(r.admin_token.expose()).send().await;
    let resp = match resp {
        Ok(r) => r,
        Err(e) => bail!(
            "cannot reach the responder at {base}: {}",
            target.why(&base, &e).await
        ),
    };
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!(
            "the responder refused ({}): {}",
            status.as_u16(),
            body["reason"].as_str().unwrap_or("no reason given")
        );
    }
    match action {
        Action::Status => print_state(&body),
        _ => {
            println!("accepted; epoch {}", body["epoch"]);
            if let Some(p) = body["plan"].as_object() {
                println!(
                    "plan {}: {} -> {} ({})",
                    p["epoch"],
                    p["from"].as_str().unwrap_or("?"),
                    p["to"].as_str().unwrap_or("?"),
                    p["status"].as_str().unwrap_or("?")
                );
            }
            if body["paused"] == Value::Bool(true) {
                println!("automatic moves are paused");
            }
        }
    }
    Ok(())
}

fn ms_to_text(ms: &Value) -> String {
    ms.as_u64()
        .and_then(|m| time::OffsetDateTime::from_unix_timestamp((m / 1000) as i64).ok())
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "-".into())
}

fn print_state(s: &Value) {
    let str_of = |v: &Value| v.as_str().unwrap_or("-").to_string();
    println!("active region   {}", str_of(&s["active_region"]));
    println!("app region      {}", str_of(&s["app_region"]));
    println!("epoch           {}", s["epoch"]);
    println!("phase           {}", str_of(&s["phase"]));
    println!("paused          {}", s["paused"]);
    if let Some(b) = s["blocked"].as_str() {
        println!("blocked         {b}");
    }
    println!();
    println!("{:<16} {:<6} {:<22}", "REGION", "HEALTH", "SINCE");
    if let Some(regions) = s["regions"].as_object() {
        for (name, h) in regions {
            let health = if h["down"] == Value::Bool(true) {
                "DOWN"
            } else {
                "up"
            };
            println!(
                "{:<16} {:<6} {:<22}",
                name,
                health,
                ms_to_text(&h["since_ms"])
            );
        }
    }
    print_readiness(&s["readiness"]);
    if let Some(p) = s["plan"].as_object() {
        println!();
        println!(
            "plan {}: {} {} -> {} ({}), {}",
            p["epoch"],
            str_of(&p["kind"]),
            str_of(&p["from"]),
            str_of(&p["to"]),
            str_of(&p["status"]),
            str_of(&p["reason"])
        );
        for st in p["steps"].as_array().into_iter().flatten() {
            let mark = if st["done"] == Value::Bool(true) {
                "done"
            } else {
                "todo"
            };
            println!("  [{mark}] {}", str_of(&st["name"]));
        }
        if let Some(e) = p["last_error"].as_str() {
            println!("  last error: {e}");
        }
    }
    println!();
    println!(
        "{:<6} {:<9} {:<24} {:<11} {:<22} REASON",
        "EPOCH", "KIND", "MOVE", "TRIGGER", "FINISHED"
    );
    for t in s["transitions"].as_array().into_iter().flatten().take(10) {
        println!(
            "{:<6} {:<9} {:<24} {:<11} {:<22} {}",
            t["epoch"],
            str_of(&t["kind"]),
            format!("{} -> {}", str_of(&t["from"]), str_of(&t["to"])),
            str_of(&t["trigger"]),
            ms_to_text(&t["finished_ms"]),
            str_of(&t["reason"])
        );
    }
    if let Some(agents) = s["agents"].as_object().filter(|a| !a.is_empty()) {
        println!();
        println!(
            "placement       {} (epoch {})",
            str_of(&s["placement"]["region"]),
            s["placement"]["epoch"]
        );
        println!(
            "{:<20} {:<12} {:<14} {:<22} DETAIL",
            "AGENT", "REGION", "APPLIED", "LAST SEEN"
        );
        for (name, a) in agents {
            let ack = &a["ack"];
            let applied = if ack.is_null() {
                "-".to_string()
            } else {
                format!(
                    "{} {}{}",
                    str_of(&ack["region"]),
                    ack["epoch"],
                    if ack["ok"] == true { "" } else { " FAILED" }
                )
            };
            println!(
                "{:<20} {:<12} {:<14} {:<22} {}",
                name,
                str_of(&a["region"]),
                applied,
                ms_to_text(&a["last_seen_ms"]),
                str_of(&ack["detail"])
            );
        }
    }
}

/// The latest readiness evaluation: a line when every check passes, each failing row otherwise.
fn print_readiness(r: &Value) {
    println!();
    let Some(rows) = r["rows"].as_array() else {
        println!("readiness       not evaluated yet");
        return;
    };
    let failing: Vec<&Value> = rows
        .iter()
        .filter(|x| x["ok"] != Value::Bool(true))
        .collect();
    println!(
        "readiness       {} of {} checks pass (evaluated {})",
        rows.len() - failing.len(),
        rows.len(),
        ms_to_text(&r["finished_ms"])
    );
    for f in failing {
        println!(
            "  FAILED {} {}: {}",
            f["check"].as_str().unwrap_or("?"),
            f["target"].as_str().unwrap_or("?"),
            f["detail"].as_str().unwrap_or("")
        );
        if let Some(fix) = f["fix"].as_str().filter(|x| !x.is_empty()) {
            println!("         fix: {fix}");
        }
    }
}

/// `preflight`: every readiness check once, read-only. The agents' rows need the responder's
/// view, asked over its admin API.
pub async fn preflight(config: Config, target: Target) -> anyhow::Result<bool> {
    use dynamo_failover::readiness::{Agents, AgentsView, Evaluator};
    let shared = dynamo_failover::aws::load_shared().await;
    // The responder's state, when it answers: the agents' view, and which regions are down.
    let mut down = Vec::new();
    let agents = match config.responder.as_ref() {
        Some(r) => {
            let (base, http) = target.connect(r)?;
            let got = http
                .get(format!("{base}/v1/state"))
                .bearer_auth(r.admin_token.expose())
                .send()
                .await;
            match got {
                Ok(resp) if resp.status().is_success() => match resp.json::<Value>().await {
                    Ok(v) => {
                        down = v["regions"]
                            .as_object()
                            .map(|m| {
                                m.iter()
                                    .filter(|(_, h)| h["down"] == true || h["app_down"] == true)
                                    .map(|(r, _)| r.clone())
                                    .collect()
                            })
                            .unwrap_or_default();
                        Agents::View(AgentsView::from_state(&v))
                    }
                    Err(e) => {
                        Agents::Unavailable(format!("the responder's state is unreadable: {e}"))
                    }
                },
                Ok(resp) => Agents::Unavailable(format!(
                    "the responder at {base} answered {}",
                    resp.status().as_u16()
                )),
                Err(e) => Agents::Unavailable(format!(
                    "cannot reach the responder at {base}: {}",
                    target.why(&base, &e).await
                )),
            }
        }
        None => Agents::View(AgentsView::default()),
    };
    if let Agents::Unavailable(why) = &agents {
        println!("# {why}: every region is checked as if up, and the agents cannot be judged");
    }
    let report = Evaluator::new(&config, &shared, "preflight")?
        .evaluate(agents, &down)
        .await;
    print!("{}", report.table());
    let failing = report.failing().count();
    println!(
        "\n{} checks, {} failing; {} DigitalOcean calls; {} ms",
        report.rows.len(),
        failing,
        report.digitalocean_calls,
        report.duration_ms
    );
    Ok(failing == 0)
}
