//! TLS on real processes, with a throwaway CA made when each test starts (rcgen): the real
//! Alertmanager delivering to a responder that requires client certificates, an agent and the
//! operator commands over mutual TLS, clients refused with a clear reason (wrong CA, no client
//! certificate, an expired server certificate), a rotated certificate served without a restart,
//! and plain HTTP refused off loopback.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::json;
use testkit::pki::{rotate, Ca, Use};
use testkit::stack::*;
use testkit::{sample, wait_until};

fn mtls() -> Knobs {
    Knobs {
        tls: true,
        readiness_interval: "1h",
        ..Knobs::default()
    }
}

fn tls(s: &Stack) -> &StackTls {
    s.tls.as_ref().expect("a TLS stack")
}

/// `status` against the stack's first responder with these client flags: (success, output).
fn status_with(s: &Stack, flags: &[String]) -> (bool, String) {
    let out = Command::new(testkit::binary())
        .args(["status", "--url", &s.base(), "--config"])
        .arg(s.path("config.toml"))
        .args(flags)
        .env_remove("DYNAMO_FAILOVER_CA_FILE")
        .env_remove("DYNAMO_FAILOVER_CERT_FILE")
        .env_remove("DYNAMO_FAILOVER_KEY_FILE")
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn flags(ca: &Path, pair: Option<&testkit::pki::Pair>) -> Vec<String> {
    let mut f = vec!["--ca-file".to_string(), ca.display().to_string()];
    if let Some(p) = pair {
        f.extend([
            "--cert-file".to_string(),
            p.cert.display().to_string(),
            "--key-file".to_string(),
            p.key.display().to_string(),
        ]);
    }
    f
}

#[tokio::test]
async fn alertmanager_delivers_to_the_responder_over_mutual_tls() {
    let s = Stack::start(mtls()).await;
    let t = tls(&s);
    // Alertmanager's certificate files where the shipped config names them, under one directory.
    let am_tls = s.path("am-tls");
    std::fs::create_dir(&am_tls).unwrap();
    let am_client = t.ca.issue("alertmanager", Use::Client);
    std::fs::copy(t.ca.cert_path(), am_tls.join("ca.pem")).unwrap();
    std::fs::copy(&am_client.cert, am_tls.join("client.pem")).unwrap();
    std::fs::copy(&am_client.key, am_tls.join("client-key.pem")).unwrap();
    let profile = s.path("profile");
    let out = Command::new("python3")
        .arg(testkit::root().join("scripts/lib/profile.py"))
        .arg(&profile)
        .arg("--fast")
        .arg("--tls")
        .arg(&am_tls)
        .args(["--responder", &format!("127.0.0.1:{}", s.port)])
        .arg("--webhook-token-file")
        .arg(s.path("webhook.token"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let am_config = std::fs::read_to_string(profile.join("alertmanager.yml")).unwrap();
    assert!(
        am_config.contains(&format!("url: https://127.0.0.1:{}/alerts", s.port))
            && am_config.contains(&format!("ca_file: {}/ca.pem", am_tls.display())),
        "{am_config}"
    );
    let mut am = testkit::chain::spawn_logged(
        s.dir.path(),
        "alertmanager",
        tokio::process::Command::new("prometheus-alertmanager")
            .arg(format!(
                "--config.file={}",
                profile.join("alertmanager.yml").display()
            ))
            .arg(format!("--storage.path={}", s.path("am-data").display()))
            .arg("--web.listen-address=127.0.0.1:0")
            .arg("--cluster.listen-address="),
    );
    let am_port = testkit::wait_listening(&mut am, "Alertmanager").await;
    let am_url = format!("http://127.0.0.1:{am_port}");
    testkit::chain::wait_http_ok(&format!("{am_url}/-/ready"), "Alertmanager to be ready").await;
    // East is down, as Prometheus would say it: Alertmanager routes it to the responder's
    // webhook, which only speaks TLS and wants Alertmanager's client certificate.
    let posted = reqwest::Client::new()
        .post(format!("{am_url}/api/v2/alerts"))
        .json(&json!([{
            "labels": {
                "alertname": "DynamoDBRegionUnavailable",
                "region": EAST,
                "action": "failover",
                "severity": "page"
            },
            "annotations": { "summary": "us-east-1 is down" }
        }]))
        .send()
        .await
        .unwrap();
    assert!(posted.status().is_success(), "{}", posted.status());
    s.wait_steady_in(WEST, Duration::from_secs(30)).await;
    let m = s.metrics().await;
    assert_eq!(
        sample(
            &m,
            "tls_handshake_failures_total",
            &[("listener", "responder")]
        ),
        Some(0.0),
        "every handshake succeeded"
    );
    s.assert_no_secrets();
}

/// Waits until the log at `path` has `text` in it.
async fn log_says(path: &Path, text: &str) {
    wait_until(
        Duration::from_secs(30),
        &format!("the log to say {text:?}"),
        || async {
            std::fs::read_to_string(path)
                .unwrap_or_default()
                .contains(text)
        },
    )
    .await;
}

/// The agent's `/metrics`, over TLS with the stack's client.
async fn agent_metrics(s: &Stack, port: u16) -> String {
    s.http
        .get(format!("https://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn an_agent_and_the_operator_commands_work_over_mutual_tls() {
    let mut s = Stack::start(Knobs {
        agents: vec![("wp-west", WEST)],
        step_deadline: "15s",
        ..mtls()
    })
    .await;
    s.spawn_agent("wp-west").await;
    wait_until(
        Duration::from_secs(20),
        "the agent's first acknowledgement",
        || async { s.state().await["agents"]["wp-west"]["ack"]["epoch"] == 0 },
    )
    .await;
    let (ok, out) = s.cli(&["failover", "--to", WEST]);
    assert!(ok, "{out}");
    s.wait_steady_in(WEST, Duration::from_secs(30)).await;
    assert_eq!(s.agent_env("wp-west").0.as_deref(), Some(WEST));
    let (ok, out) = s.cli(&["status"]);
    assert!(ok && out.contains(WEST), "{out}");
    // The agent's own /metrics is served over TLS too, and not in plain HTTP.
    let port = s.agents[0].port;
    let m = agent_metrics(&s, port).await;
    assert!(m.contains("dynamo_failover_agent_applied_epoch"), "{m}");
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await;
    assert!(!plain.is_ok_and(|r| r.status().is_success()));
    // Its client certificate is renewed without a restart: an expired one is refused (the log
    // says why), a fresh one works again, and its expiry is exported.
    let t = tls(&s);
    let client_expiry = |m: &str| {
        sample(
            m,
            "tls_certificate_expiry_timestamp_seconds",
            &[("listener", "agent-client")],
        )
        .unwrap_or(0.0)
    };
    let before = client_expiry(&m);
    assert!(before > dynamo_failover::tls::now_unix() as f64, "{m}");
    let agent_log = s.path("agent-wp-west-1.log");
    let expired = t.ca.issue_for("agent-expired", Use::Client, -30, -1);
    rotate(&expired, &t.client);
    log_says(&agent_log, "refused this client's certificate").await;
    let renewed = t.ca.issue_for("agent-renewed", Use::Client, -1, 30);
    rotate(&renewed, &t.client);
    let (ok, out) = s.cli(&["failback"]);
    assert!(ok, "{out}");
    s.wait_steady_in(EAST, Duration::from_secs(30)).await;
    wait_until(
        Duration::from_secs(30),
        "the agent, renewed, to follow the failback",
        || async { s.agent_env("wp-west").0.as_deref() == Some(EAST) },
    )
    .await;
    let m = agent_metrics(&s, port).await;
    let after = client_expiry(&m);
    assert!(
        after < before && after > dynamo_failover::tls::now_unix() as f64 + 29.0 * 86400.0,
        "{m}"
    );
    assert_eq!(s.agents[0].starts, 1, "no restart");
    // The same agent without its client certificate is refused, and its log says why (the TLS
    // 1.3 refusal comes after the handshake; the agent reads the server's alert).
    let cfg = std::fs::read_to_string(s.path("agent-wp-west.toml")).unwrap();
    let without: String = cfg
        .lines()
        .filter(|l| {
            !(l.starts_with("cert_file") || l.starts_with("key_file"))
                || !cfg[..cfg.find(l).unwrap()].contains("[agent.responder_tls]")
        })
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(
        without.contains("[agent.responder_tls]\nca_file"),
        "{without}"
    );
    assert!(
        !without.contains(&tls(&s).client.cert.display().to_string()),
        "{without}"
    );
    std::fs::write(s.path("agent-nocert.toml"), without).unwrap();
    let log = s.path("agent-nocert.log");
    let _agent = testkit::chain::spawn_logged(
        s.dir.path(),
        "agent-nocert",
        tokio::process::Command::new(testkit::binary())
            .args(["agent", "--config"])
            .arg(s.path("agent-nocert.toml")),
    );
    log_says(&log, "requires a client certificate").await;
    s.assert_no_secrets();
}

#[tokio::test]
async fn clients_without_the_right_ca_or_certificate_are_refused_with_a_clear_reason() {
    let s = Stack::start(mtls()).await;
    let t = tls(&s);
    // The right CA and client certificate: answered.
    let (ok, out) = status_with(&s, &flags(&t.ca.cert_path(), Some(&t.client)));
    assert!(ok, "{out}");
    // No CA given: the system roots do not know the stack's CA.
    let (ok, out) = status_with(&s, &[]);
    assert!(
        !ok && out.contains("not signed by a CA this client trusts"),
        "{out}"
    );
    // Another CA: the same.
    let other = Ca::new(s.dir.path(), "other");
    let (ok, out) = status_with(&s, &flags(&other.cert_path(), Some(&t.client)));
    assert!(
        !ok && out.contains("not signed by a CA this client trusts"),
        "{out}"
    );
    // The right CA but no client certificate: the responder requires one.
    let (ok, out) = status_with(&s, &flags(&t.ca.cert_path(), None));
    assert!(
        !ok && out.contains("requires a client certificate"),
        "{out}"
    );
    // A client certificate from a CA the responder does not accept.
    let stranger = other.issue("stranger", Use::Client);
    let (ok, out) = status_with(&s, &flags(&t.ca.cert_path(), Some(&stranger)));
    assert!(
        !ok && out.contains("refused this client's certificate"),
        "{out}"
    );
    // Plain HTTP to the TLS port gets nothing.
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{}/v1/state", s.port))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
    // Each refusal is counted where the operator can see it.
    let m = s.metrics().await;
    let failed = sample(
        &m,
        "tls_handshake_failures_total",
        &[("listener", "responder")],
    )
    .unwrap();
    assert!(failed >= 5.0, "{failed}\n{m}");
    s.assert_no_secrets();
}

/// `/metrics` of the stack's responder over a new connection, trusting `ca`.
async fn metrics_trusting(s: &Stack, ca: &Path) -> String {
    let t = tls(s);
    let mut id = std::fs::read(&t.client.cert).unwrap();
    id.extend(std::fs::read(&t.client.key).unwrap());
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap()])
        .identity(reqwest::Identity::from_pem(&id).unwrap())
        .build()
        .unwrap()
        .get(format!("{}/metrics", s.base()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

fn reloads(m: &str, result: &str) -> f64 {
    sample(
        m,
        "tls_certificate_reloads_total",
        &[("listener", "responder"), ("result", result)],
    )
    .unwrap_or(-1.0)
}

/// Writes `from` over `to` as a careful rotation does: beside it, then renamed over it.
fn write_over(from: &Path, to: &Path) {
    let tmp = to.with_extension("rotating");
    std::fs::copy(from, &tmp).unwrap();
    std::fs::rename(&tmp, to).unwrap();
}

#[tokio::test]
async fn a_rotated_certificate_is_served_without_a_restart_and_an_expired_one_is_refused() {
    let s = Stack::start(mtls()).await;
    let t = tls(&s);
    let ca = t.ca.cert_path();
    let good = flags(&ca, Some(&t.client));
    let pid = s.replicas[0].child.as_ref().unwrap().id();
    let expiry = |m: &str| {
        sample(
            m,
            "tls_certificate_expiry_timestamp_seconds",
            &[("listener", "responder")],
        )
        .unwrap()
    };
    let now = dynamo_failover::tls::now_unix() as f64;
    let day = 86400.0;
    assert!(expiry(&metrics_trusting(&s, &ca).await) > now + 85.0 * day);
    // Half a rotation: the new key is in, its certificate not yet. It does not load; the old
    // certificate is still served, and the failure is counted once however often it is retried.
    let next = t.ca.issue_for("next", Use::Server, -1, 60);
    write_over(&next.key, &t.server.key);
    wait_until(
        Duration::from_secs(15),
        "the failed reload to be counted",
        || async {
            // Each status is a new connection, the moment the listener looks at its files.
            assert!(
                status_with(&s, &good).0,
                "the old certificate is still served"
            );
            reloads(&metrics_trusting(&s, &ca).await, "error") == 1.0
        },
    )
    .await;
    for _ in 0..3 {
        assert!(status_with(&s, &good).0);
        tokio::time::sleep(Duration::from_millis(400)).await; // looks at least a second apart
    }
    let m = metrics_trusting(&s, &ca).await;
    assert_eq!(reloads(&m, "error"), 1.0, "said once: {m}");
    assert_eq!(reloads(&m, "ok"), 0.0);
    // The certificate arrives: the retry loads it (60 days, not 90), no restart.
    write_over(&next.cert, &t.server.cert);
    wait_until(
        Duration::from_secs(15),
        "the completed rotation to be served",
        || async {
            status_with(&s, &good).0 && expiry(&metrics_trusting(&s, &ca).await) < now + 61.0 * day
        },
    )
    .await;
    // An expired certificate replaces it: clients refuse it, saying why.
    let expired = t.ca.issue_for("expired", Use::Server, -30, -1);
    rotate(&expired, &t.server);
    wait_until(
        Duration::from_secs(15),
        "the expired certificate to be served",
        || async {
            let (ok, out) = status_with(&s, &good);
            !ok && out.contains("the server's certificate has expired")
        },
    )
    .await;
    // A new certificate from a new CA, as after a CA change: served from the next connections.
    let new_ca = Ca::new(s.dir.path(), "new");
    let fresh = new_ca.issue("fresh", Use::Server);
    rotate(&fresh, &t.server);
    let with_new_ca = flags(&new_ca.cert_path(), Some(&t.client));
    wait_until(
        Duration::from_secs(15),
        "the new certificate to be served",
        || async { status_with(&s, &with_new_ca).0 },
    )
    .await;
    let (ok, out) = status_with(&s, &good);
    assert!(
        !ok && out.contains("not signed by a CA this client trusts"),
        "{out}"
    );
    // The same process all along; three loads, one failure said once.
    assert_eq!(s.replicas[0].child.as_ref().unwrap().id(), pid);
    let m = metrics_trusting(&s, &new_ca.cert_path()).await;
    assert_eq!(reloads(&m, "ok"), 3.0, "{m}");
    assert_eq!(reloads(&m, "error"), 1.0, "{m}");
    assert!(expiry(&m) > now + 85.0 * day);
    assert!(
        s.logs().contains("do not load"),
        "the failed reload is logged"
    );
}

/// A minimal responder config around `extra` (listen, TLS), with readable tokens.
fn config(dir: &Path, responder_extra: &str, exporter_extra: &str) -> std::path::PathBuf {
    std::fs::write(dir.join("w.token"), "webhook-token-0123456789").unwrap();
    std::fs::write(dir.join("a.token"), "admin-token-0123456789ab").unwrap();
    std::fs::write(dir.join("do.token"), "do-token-0123456789abcdef").unwrap();
    let text = format!(
        r#"[prober]
id = "p"

[[region]]
name = "us-east-1"
priority = 1
[region.digitalocean]
slug = "nyc1"

[[region]]
name = "us-west-2"
priority = 2
[region.digitalocean]
slug = "sfo3"

[[table]]
name = "app"

[exporter]
{exporter_extra}

[responder]
state_file = "{d}/state.json"
webhook_token_file = "{d}/w.token"
admin_token_file = "{d}/a.token"
{responder_extra}

[responder.app]
env_file = "{d}/app.env"
"#,
        d = dir.display()
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn check_config(path: &Path) -> (Option<i32>, String) {
    let out = Command::new(testkit::binary())
        .args(["check-config", "--config"])
        .arg(path)
        .output()
        .unwrap();
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn tls_section(section: &str, pair: &testkit::pki::Pair) -> String {
    format!(
        "[{section}]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        pair.cert.display(),
        pair.key.display()
    )
}

#[tokio::test]
async fn plain_http_is_refused_off_loopback_and_check_config_validates_the_certificate_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = Ca::new(d, "cc");
    // Plain HTTP on every address but loopback is refused, for each listener, unless asked for.
    for (responder, exporter, key) in [
        ("listen = \"0.0.0.0:9465\"", "", "responder.listen"),
        ("", "listen = \"0.0.0.0:9464\"", "exporter.listen"),
    ] {
        let (code, out) = check_config(&config(d, responder, exporter));
        assert_eq!(code, Some(2), "{out}");
        assert!(out.contains(key) && out.contains("cleartext"), "{out}");
        let allowed = |x: &str| {
            if x.is_empty() {
                String::new()
            } else {
                format!("{x}\nallow_plain_http = true")
            }
        };
        let (code, out) = check_config(&config(d, &allowed(responder), &allowed(exporter)));
        assert_eq!(code, Some(0), "{out}");
    }
    // With TLS, a good certificate: valid, and how long for.
    let good = ca.issue("good", Use::Server);
    let listen = "listen = \"0.0.0.0:9465\"\n";
    let (code, out) = check_config(&config(
        d,
        &format!("{listen}\n{}", tls_section("responder.tls", &good)),
        "",
    ));
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("[responder.tls]")
            && (out.contains("valid for 89 more day(s)")
                || out.contains("valid for 90 more day(s)")),
        "{out}"
    );
    // Expired.
    let old = ca.issue_for("old", Use::Server, -100, -3);
    let (code, out) = check_config(&config(
        d,
        &format!("{listen}\n{}", tls_section("responder.tls", &old)),
        "",
    ));
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("EXPIRED 3 day(s) ago"), "{out}");
    // A key that is not the certificate's.
    let mixed = testkit::pki::Pair {
        cert: good.cert.clone(),
        key: old.key.clone(),
    };
    let (code, out) = check_config(&config(
        d,
        &format!("{listen}\n{}", tls_section("responder.tls", &mixed)),
        "",
    ));
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("does not match the certificate"), "{out}");
    // Not PEM at all.
    std::fs::write(d.join("junk.pem"), "not a certificate").unwrap();
    let junk = testkit::pki::Pair {
        cert: d.join("junk.pem"),
        key: good.key.clone(),
    };
    let (code, out) = check_config(&config(
        d,
        &format!("{listen}\n{}", tls_section("responder.tls", &junk)),
        "",
    ));
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("no PEM certificate"), "{out}");
    // Files that are not on this machine are listed, like secrets, and do not fail the check.
    let absent = testkit::pki::Pair {
        cert: d.join("absent.pem"),
        key: d.join("absent-key.pem"),
    };
    let (code, out) = check_config(&config(
        d,
        &format!("{listen}\n{}", tls_section("responder.tls", &absent)),
        "",
    ));
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("could not be read here") && out.contains("absent.pem"),
        "{out}"
    );
    // The role itself refuses to start on them, naming the file (on loopback: the test binds
    // nothing else).
    let on_loopback = config(
        d,
        &format!(
            "listen = \"127.0.0.1:0\"\n{}",
            tls_section("responder.tls", &absent)
        ),
        "",
    );
    let out = Command::new(testkit::binary())
        .args(["responder", "--config"])
        .arg(&on_loopback)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && text.contains("absent.pem"),
        "{text}"
    );
    // Nor does the responder send its own tokens in cleartext: DigitalOcean's API over plain
    // HTTP to another machine is refused, unless said.
    let do_section = format!(
        "[responder.digitalocean]\napi_url = \"http://192.0.2.9\"\ntoken_file = \"{}/do.token\"\n\
         [[responder.digitalocean.load_balancer]]\nid = \"lb-global\"\nmode = \"global\"\n",
        d.display()
    );
    let with_do = |extra: &str| {
        let path = config(d, "", "");
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, format!("{text}\n{extra}{do_section}")).unwrap();
        path
    };
    let (code, out) = check_config(&with_do(""));
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("responder.digitalocean.api_url") && out.contains("the DigitalOcean token"),
        "{out}"
    );
    let (code, out) = check_config(&with_do(
        "[responder.outbound_tls]\nallow_plain_http = true\n\n",
    ));
    assert_eq!(code, Some(0), "{out}");
    // The operator commands never send the admin token in cleartext to another machine; the
    // refusal comes before any connection (the address is a documentation one, unrouted).
    let out = Command::new(testkit::binary())
        .args(["status", "--url", "http://192.0.2.7:9465", "--config"])
        .arg(d.join("config.toml"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && text.contains("cleartext"),
        "{text}"
    );
    // Nor do agents: a plain http:// responder on another machine is refused.
    std::fs::write(d.join("agent.token"), "agent-token-0123456789").unwrap();
    let agent = d.join("agent.toml");
    std::fs::write(
        &agent,
        format!(
            "[agent]\nname = \"wp\"\nresponders = [\"http://failover-1.example.com:9465\"]\n\
             token_file = \"{d}/agent.token\"\nenv_file = \"{d}/wp.env\"\n",
            d = d.display()
        ),
    )
    .unwrap();
    let out = Command::new(testkit::binary())
        .args(["agent", "--check", "--config"])
        .arg(&agent)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains("agent.responders") && text.contains("cleartext"),
        "{text}"
    );
}
