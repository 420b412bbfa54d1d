//! Readiness, on real processes: a responder against two moto regions (each behind the test kit's
//! Global Tables front), the fake DigitalOcean API and a notification receiver. A healthy path
//! passes every check; each test then breaks exactly one thing and asserts its row in
//! `dynamo-failover preflight` (and its exit status), and where the responder can see it change,
//! its `failover_readiness` series going to 0 and back after the repair, with one notice each way.

use std::time::Duration;

use serde_json::{json, Value};
use testkit::stack::*;
use testkit::{sample, wait_until};

fn fast() -> Knobs {
    Knobs {
        readiness_interval: "2s",
        ..Knobs::default()
    }
}

/// The responder evaluates at start only: a test that counts DigitalOcean calls sees its own.
fn quiet() -> Knobs {
    Knobs {
        readiness_interval: "1h",
        ..Knobs::default()
    }
}

/// Requests preflight sent (its User-Agent says so), from index `from` of the fake's log.
fn preflight_requests(s: &Stack, from: usize) -> Vec<fake_digitalocean::Logged> {
    s.fake.log()[from..]
        .iter()
        .filter(|l| {
            l.user_agent
                .as_deref()
                .is_some_and(|a| a.contains("(preflight"))
        })
        .cloned()
        .collect()
}

/// `preflight`'s exit status and output.
async fn preflight(s: &Stack) -> (Option<i32>, String) {
    preflight_with(s, &s.path("config.toml"), &[]).await
}

/// Runs as a child process without blocking the test's runtime, which serves the fake
/// DigitalOcean API and the Global Tables fronts.
async fn preflight_with(
    s: &Stack,
    config: &std::path::Path,
    env: &[(&str, &str)],
) -> (Option<i32>, String) {
    let mut cmd = tokio::process::Command::new(testkit::binary());
    cmd.args(["preflight", "--url", &s.base(), "--config"])
        .arg(config)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().await.unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

/// The line of `check` for `target` in preflight's table.
fn row<'a>(out: &'a str, check: &str, target: &str) -> &'a str {
    out.lines()
        .find(|l| {
            l.strip_prefix(check)
                .map(str::trim_start)
                .and_then(|rest| rest.strip_prefix(target))
                .is_some_and(|rest| rest.starts_with("  "))
        })
        .unwrap_or_else(|| panic!("no row {check} {target} in:\n{out}"))
}

fn failed(out: &str, check: &str, target: &str) -> bool {
    row(out, check, target).contains(" FAILED ")
}

/// Waits until the responder's `failover_readiness{check, target}` is `value`.
async fn readiness_metric(s: &Stack, check: &str, target: &str, value: f64) {
    wait_until(
        Duration::from_secs(20),
        &format!("failover_readiness{{check={check}, target={target}}} to be {value}"),
        || async {
            sample(
                &s.metrics().await,
                "failover_readiness",
                &[("check", check), ("target", target)],
            ) == Some(value)
        },
    )
    .await;
}

/// Breaks something, sees the row fail in preflight and in the responder's metric, repairs it,
/// sees both pass again, and one notice each way.
async fn broken_then_repaired(
    s: &Stack,
    check: &str,
    target: &str,
    detail: &str,
    br: impl Fn(),
    repair: impl Fn(),
) {
    readiness_metric(s, check, target, 1.0).await;
    br();
    let (code, out) = preflight(s).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(failed(&out, check, target), "{out}");
    assert!(row(&out, check, target).contains(detail), "{out}");
    readiness_metric(s, check, target, 0.0).await;
    wait_until(Duration::from_secs(10), "the broken notice", || async {
        !s.inbox.titled("Failover path broken").is_empty()
    })
    .await;
    let st = s.state().await;
    let rows = st["readiness"]["rows"].as_array().unwrap();
    assert!(
        rows.iter()
            .any(|r| r["check"] == check && r["target"] == target && r["ok"] == false),
        "{st}"
    );
    repair();
    readiness_metric(s, check, target, 1.0).await;
    let (code, out) = preflight(s).await;
    assert_eq!(code, Some(0), "{out}");
    wait_until(Duration::from_secs(10), "the repaired notice", || async {
        !s.inbox.titled("Failover path repaired").is_empty()
    })
    .await;
    // Once each way, not on every evaluation: two more evaluations add nothing.
    let last = || async {
        sample(
            &s.metrics().await,
            "failover_readiness_last_evaluation_timestamp_seconds",
            &[],
        )
        .unwrap_or(0.0)
    };
    let t0 = last().await;
    wait_until(Duration::from_secs(10), "two more evaluations", || async {
        last().await >= t0 + 1.5
    })
    .await;
    assert_eq!(s.inbox.titled("Failover path broken").len(), 1);
    assert_eq!(s.inbox.titled("Failover path repaired").len(), 1);
    s.assert_no_secrets();
}

#[tokio::test]
async fn a_healthy_path_passes_every_check_and_preflight_exits_0() {
    let s = Stack::start(fast()).await;
    let (code, out) = preflight(&s).await;
    assert_eq!(code, Some(0), "{out}");
    for (check, target) in [
        ("do.token", "account"),
        ("do.load_balancer", "lb-droplets"),
        ("do.load_balancer", "lb-tag"),
        ("do.load_balancer", "lb-global"),
        ("do.droplet", "101"),
        ("do.droplet", "202"),
        ("do.dns_record", "example.com/1001"),
        ("do.rate_limit", "account"),
        ("aws.credentials", "default chain"),
        ("dynamodb.table", &format!("{EAST}/{TABLE}")),
        ("dynamodb.replicas", &format!("{WEST}/{TABLE}")),
        ("dynamodb.health_item", &format!("{WEST}/{TABLE}")),
        ("app.env_file", &s.path("app.env").display().to_string()),
        (
            "app.env_file_readable",
            &s.path("app.env").display().to_string(),
        ),
        ("app.reload_command", "sh"),
        ("notify.url", "slack"),
        ("notify.url", "webhook"),
    ] {
        assert!(
            row(&out, check, target).contains(" ok "),
            "{check} {target}:\n{out}"
        );
    }
    assert!(out.contains("0 failing"), "{out}");
    // One read per kind of object (and per DNS domain), whatever their number.
    assert!(out.contains("; 4 DigitalOcean calls;"), "{out}");
    // The responder evaluated at start and exports every row; /v1/state and status show them.
    let m = s.metrics().await;
    assert_eq!(
        sample(
            &m,
            "failover_readiness",
            &[("check", "do.load_balancer"), ("target", "lb-global")]
        ),
        Some(1.0)
    );
    assert!(
        sample(
            &m,
            "failover_readiness_last_evaluation_timestamp_seconds",
            &[]
        )
        .unwrap()
            > 1e9
    );
    assert!(sample(&m, "failover_readiness_evaluation_duration_seconds", &[]).is_some());
    let (ok, status) = s.cli(&["status"]);
    assert!(ok && status.contains("checks pass"), "{status}");
    // Read-only: nothing was changed at DigitalOcean, and nothing was sent to people.
    assert!(s.fake.changes().is_empty(), "{:?}", s.fake.changes());
    assert!(s.inbox.all().is_empty(), "{:?}", s.inbox.all());
    s.assert_no_secrets();
}

#[tokio::test]
async fn a_deleted_load_balancer_fails_its_row_until_it_is_back() {
    let s = Stack::start(fast()).await;
    let saved = s.fake.load_balancer("lb-global").unwrap();
    broken_then_repaired(
        &s,
        "do.load_balancer",
        "lb-global",
        "no such load balancer",
        || {
            s.fake.delete_load_balancer("lb-global");
        },
        || s.fake.put_load_balancer(saved.clone()),
    )
    .await;
}

#[tokio::test]
async fn a_load_balancer_of_the_wrong_kind_and_a_global_one_missing_a_region_fail() {
    let s = Stack::start(fast()).await;
    let tag = s.fake.load_balancer("lb-tag").unwrap();
    let mut ids = tag.clone();
    ids["tag"] = json!("");
    ids["droplet_ids"] = json!([101]);
    ids["region"] = json!("nyc1");
    broken_then_repaired(
        &s,
        "do.load_balancer",
        "lb-tag",
        "targets droplet ids, not a tag",
        || s.fake.put_load_balancer(ids.clone()),
        || {
            let mut t = tag.clone();
            t["region"] = json!("nyc1");
            s.fake.put_load_balancer(t)
        },
    )
    .await;
    let mut global = s.fake.load_balancer("lb-global").unwrap();
    global["glb_settings"]["region_priorities"] = json!({ "nyc1": 1 });
    s.fake.put_load_balancer(global);
    let (code, out) = preflight(&s).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        failed(&out, "do.load_balancer", "lb-global")
            && row(&out, "do.load_balancer", "lb-global").contains("sfo3 not among"),
        "{out}"
    );
}

#[tokio::test]
async fn a_droplet_in_another_region_or_off_fails_its_row() {
    let s = Stack::start(fast()).await;
    broken_then_repaired(
        &s,
        "do.droplet",
        "202",
        "in nyc1, but listed for us-west-2",
        || {
            s.fake
                .put_droplet(json!({ "id": 202, "name": "wp-west-2", "region": "nyc1" }))
        },
        || {
            s.fake
                .put_droplet(json!({ "id": 202, "name": "wp-west-2", "region": "sfo3" }))
        },
    )
    .await;
    s.fake
        .put_droplet(json!({ "id": 101, "name": "wp-east-1", "region": "nyc1", "status": "off" }));
    let (code, out) = preflight(&s).await;
    assert_eq!(code, Some(1));
    assert!(
        row(&out, "do.droplet", "101").contains("status off, not active"),
        "{out}"
    );
}

#[tokio::test]
async fn a_dns_record_of_another_type_fails_its_row() {
    let s = Stack::start(fast()).await;
    let rec = s.fake.record("example.com", 1001).unwrap();
    let mut aaaa = rec.clone();
    aaaa["type"] = json!("AAAA");
    broken_then_repaired(
        &s,
        "do.dns_record",
        "example.com/1001",
        "the record is AAAA, the config says A",
        || s.fake.put_record("example.com", aaaa.clone()),
        || s.fake.put_record("example.com", rec.clone()),
    )
    .await;
}

#[tokio::test]
async fn a_rejected_token_is_named_and_stops_the_other_digitalocean_reads() {
    let s = Stack::start(fast()).await;
    let cfg = s.path("config.toml");
    std::fs::write(s.path("do.token"), "dop_v1_not-the-right-token").unwrap();
    let (code, out) = preflight_with(&s, &cfg, &[]).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        failed(&out, "do.token", "account")
            && row(&out, "do.token", "account").contains("not accepted"),
        "{out}"
    );
    assert!(
        row(&out, "do.load_balancer", "lb-tag").contains("not checked: the token is not accepted"),
        "{out}"
    );
    assert!(!out.contains("dop_v1_not-the-right-token"), "{out}");
}

#[tokio::test]
async fn a_low_rate_limit_budget_skips_reads_and_fails_its_row() {
    let s = Stack::start(quiet()).await;
    // Something else spends the token's budget: 240 of the minute's 250 calls.
    let http = reqwest::Client::new();
    for _ in 0..240 {
        let _ = http
            .get(format!("{}/v2/account", s.fake.url()))
            .bearer_auth(DO_TOKEN)
            .send()
            .await;
    }
    let before = s.fake.log().len();
    let (code, out) = preflight(&s).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        failed(&out, "do.rate_limit", "account")
            && row(&out, "do.rate_limit", "account").contains("checks skipped"),
        "{out}"
    );
    // It backed off after the first answer said the budget was low: the plan's share is kept.
    let spent = preflight_requests(&s, before).len();
    assert!(spent <= 2, "preflight spent {spent} calls on a low budget");
}

#[tokio::test]
async fn missing_aws_credentials_are_named_as_such() {
    let s = Stack::start(fast()).await;
    let home = tempfile::tempdir().unwrap();
    let mut cmd = tokio::process::Command::new(testkit::binary());
    cmd.args(["preflight", "--url", &s.base(), "--config"])
        .arg(s.path("config.toml"))
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .env("HOME", home.path())
        .env("AWS_CONFIG_FILE", home.path().join("config"))
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            home.path().join("credentials"),
        )
        .env("AWS_EC2_METADATA_DISABLED", "true");
    let out = cmd.output().await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        failed(&text, "aws.credentials", "default chain")
            && row(&text, "aws.credentials", "default chain").contains("no credentials"),
        "{text}"
    );
}

#[tokio::test]
async fn a_table_missing_in_a_region_a_missing_replica_and_a_deleted_health_item_fail_their_rows() {
    let s = Stack::start(fast()).await;
    // A replica removed from the global table (us-west-2 no longer lists us-east-1).
    let west = format!("{WEST}/{TABLE}");
    broken_then_repaired(
        &s,
        "dynamodb.replicas",
        &west,
        "no replica in us-east-1",
        || s.fronts[1].set_replicas(&[WEST]),
        || s.fronts[1].set_replicas(&[EAST, WEST]),
    )
    .await;
    // The health item deleted (in one region: moto does not replicate).
    let east = format!("{EAST}/{TABLE}");
    let c = testkit::client(EAST, &s.east.endpoint()).await;
    c.delete_item()
        .table_name(TABLE)
        .key(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S("dynamo-failover-health".into()),
        )
        .send()
        .await
        .unwrap();
    let (code, out) = preflight(&s).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        failed(&out, "dynamodb.health_item", &east)
            && row(&out, "dynamodb.health_item", &east)
                .contains("no item with pk = dynamo-failover-health"),
        "{out}"
    );
    // The table gone from us-west-2.
    let w = testkit::client(WEST, &s.west.endpoint()).await;
    w.delete_table().table_name(TABLE).send().await.unwrap();
    let (code, out) = preflight(&s).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        failed(&out, "dynamodb.table", &west)
            && row(&out, "dynamodb.table", &west).contains("does not exist in us-west-2"),
        "{out}"
    );
}

#[tokio::test]
async fn a_missing_env_directory_and_reload_command_fail_their_rows() {
    let s = Stack::start(fast()).await;
    let cfg = std::fs::read_to_string(s.path("config.toml")).unwrap();
    let env = s.path("app.env").display().to_string();
    // The env file's directory is a regular file: nothing can be created there (a check that
    // holds even for root, which may write anywhere else).
    std::fs::write(s.path("not-a-dir"), "").unwrap();
    let bad_env = s.path("not-a-dir").join("app.env").display().to_string();
    let broken = cfg.replace(&env, &bad_env).replace(
        "reload_commands = [[\"sh\"",
        "reload_commands = [[\"no-such-reload-command\"",
    );
    assert_ne!(broken, cfg);
    let path = s.path("broken.toml");
    std::fs::write(&path, broken).unwrap();
    let (code, out) = preflight_with(&s, &path, &[]).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        failed(&out, "app.env_file", &bad_env)
            && row(&out, "app.env_file", &bad_env).contains("not a directory"),
        "{out}"
    );
    assert!(
        failed(&out, "app.reload_command", "no-such-reload-command")
            && row(&out, "app.reload_command", "no-such-reload-command")
                .contains("not found in PATH"),
        "{out}"
    );
}

#[tokio::test]
async fn an_env_file_the_application_cannot_read_fails_its_row_until_its_mode_is_fixed() {
    use std::os::unix::fs::PermissionsExt;
    let s = Stack::start(fast()).await;
    // The stack's application reads the file as group root, which owns it (the tests run as
    // root; the check reads the mode bits, not this process's access).
    let env = s.path("app.env");
    let chmod =
        |mode| std::fs::set_permissions(&env, std::fs::Permissions::from_mode(mode)).unwrap();
    chmod(0o640);
    broken_then_repaired(
        &s,
        "app.env_file_readable",
        &env.display().to_string(),
        ":root cannot read it (mode 0600",
        || chmod(0o600),
        || chmod(0o640),
    )
    .await;
}

#[tokio::test]
async fn a_notification_url_that_cannot_be_used_fails_its_row_and_nothing_is_sent() {
    let s = Stack::start(quiet()).await;
    let cfg = std::fs::read_to_string(s.path("config.toml")).unwrap();
    // A URL with no host: nothing to resolve, and nothing may be sent to find out (the check
    // never sends; a host that does not resolve is the same row, but needs a resolver off this
    // machine to show).
    let start = cfg.find("webhook_url = \"").unwrap();
    let end = start + cfg[start..].find('\n').unwrap();
    let broken = format!(
        "{}webhook_url = \"http://:1/hook\"{}",
        &cfg[..start],
        &cfg[end..]
    );
    let path = s.path("broken.toml");
    std::fs::write(&path, broken).unwrap();
    let (code, out) = preflight_with(&s, &path, &[]).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        failed(&out, "notify.url", "webhook")
            && row(&out, "notify.url", "webhook").contains("not a valid URL"),
        "{out}"
    );
    assert!(row(&out, "notify.url", "slack").contains(" ok "), "{out}");
    assert!(s.inbox.all().is_empty(), "{:?}", s.inbox.all());
}

#[tokio::test]
async fn an_application_check_that_fails_fails_its_row() {
    let mut s = Stack::prepare(fast()).await;
    // us-west-2's application answers nothing (a closed port).
    s.launch(&[(WEST, "http://127.0.0.1:1/health".to_string())])
        .await;
    let (code, out) = preflight(&s).await;
    assert_eq!(code, Some(1), "{out}");
    let r = s.state().await;
    let app_rows: Vec<&Value> = r["readiness"]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["check"] == "app.check")
        .collect();
    assert_eq!(app_rows.len(), 1, "{r}");
    assert_eq!(app_rows[0]["ok"], false);
    let target = app_rows[0]["target"].as_str().unwrap().to_string();
    assert!(target.starts_with("us-west-2/"), "{target}");
    assert!(
        failed(&out, "app.check", &target)
            && row(&out, "app.check", &target).contains("connect_error"),
        "{out}"
    );
    readiness_metric(&s, "app.check", &target, 0.0).await;
}

#[tokio::test]
async fn agents_are_read_from_the_responder_and_a_responder_out_of_reach_is_said() {
    let s = Stack::start(Knobs {
        agents: vec![("wp-east-1", EAST)],
        readiness_interval: "1s",
        ..Knobs::default()
    })
    .await;
    // Not heard from yet, but the responder has just started: not a failure yet.
    let (_, out) = preflight(&s).await;
    assert!(
        row(&out, "agents.agent", "wp-east-1").contains("not heard from yet"),
        "{out}"
    );
    // With the responder out of reach, the agents cannot be judged: said, and failed.
    let mut cmd = tokio::process::Command::new(testkit::binary());
    let out = cmd
        .args(["preflight", "--url", "http://127.0.0.1:1", "--config"])
        .arg(s.path("config.toml"))
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        failed(&text, "agents.agent", "wp-east-1")
            && row(&text, "agents.agent", "wp-east-1").contains("cannot reach the responder"),
        "{text}"
    );
}

#[tokio::test]
async fn lists_are_read_page_by_page_from_the_configured_api_only() {
    let s = Stack::start(quiet()).await;
    // 456 other droplets around ours: three pages of 200, ours on the first two.
    for id in (1..=460u64).filter(|i| ![101, 102, 201, 202].contains(i)) {
        s.fake
            .put_droplet(json!({ "id": id, "name": format!("other-{id}"), "region": "ams3" }));
    }
    let before = s.fake.log().len();
    let (code, out) = preflight(&s).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(
        row(&out, "do.droplet", "202").contains("active in sfo3"),
        "{out}"
    );
    let pages: Vec<String> = preflight_requests(&s, before)
        .iter()
        .filter(|l| l.path == "/v2/droplets")
        .map(|l| l.path.clone())
        .collect();
    assert_eq!(pages.len(), 3, "{:?}", s.fake.log());
    assert!(out.contains("; 6 DigitalOcean calls;"), "{out}");
}

#[tokio::test]
async fn droplets_recreated_without_their_tag_fail_the_tag_row() {
    let s = Stack::start(fast()).await;
    let untagged =
        |id: u64, name: &str| json!({ "id": id, "name": name, "region": "sfo3", "tags": [] });
    let tagged = |id: u64, name: &str| json!({ "id": id, "name": name, "region": "sfo3", "tags": ["wp-west"] });
    broken_then_repaired(
        &s,
        "do.droplet_tag",
        "wp-west",
        "no active droplet in sfo3 carries it",
        || {
            s.fake.put_droplet(untagged(201, "wp-west-1"));
            s.fake.put_droplet(untagged(202, "wp-west-2"));
        },
        || {
            s.fake.put_droplet(tagged(201, "wp-west-1"));
            s.fake.put_droplet(tagged(202, "wp-west-2"));
        },
    )
    .await;
}

#[tokio::test]
async fn a_token_that_may_not_read_the_account_still_checks_everything_else() {
    let s = Stack::start(quiet()).await;
    // A custom-scoped token without account:read: 403 on /v2/account only.
    s.fake.inject_at(
        fake_digitalocean::Fault::Status(403),
        1,
        Some(axum::http::Method::GET),
        Some("/v2/account"),
    );
    let (code, out) = preflight(&s).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        failed(&out, "do.token", "account")
            && row(&out, "do.token", "account").contains("may not read the account"),
        "{out}"
    );
    assert!(
        row(&out, "do.load_balancer", "lb-tag").contains(" ok "),
        "{out}"
    );
    assert!(
        row(&out, "do.dns_record", "example.com/1001").contains(" ok "),
        "{out}"
    );
}

#[tokio::test]
async fn a_region_that_is_down_is_not_checked_and_nobody_is_told_about_it() {
    let s = Stack::start(fast()).await;
    let west = format!("{WEST}/{TABLE}");
    readiness_metric(&s, "dynamodb.table", &west, 1.0).await;
    // A region-down alert for us-west-2 (not the active region: nothing moves).
    assert_eq!(
        s.alert(&alert_body(WEST, true, "2026-11-29T05:49:00.000Z"))
            .await
            .0,
        200
    );
    wait_until(Duration::from_secs(10), "us-west-2 marked down", || async {
        s.state().await["regions"][WEST]["down"] == true
    })
    .await;
    // Its table goes away: an outage's doing, not the failover path's.
    let w = testkit::client(WEST, &s.west.endpoint()).await;
    w.delete_table().table_name(TABLE).send().await.unwrap();
    wait_until(Duration::from_secs(20), "the row withdrawn", || async {
        sample(
            &s.metrics().await,
            "failover_readiness",
            &[("check", "dynamodb.table"), ("target", &west)],
        )
        .is_none()
    })
    .await;
    let (code, out) = preflight(&s).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(
        row(&out, "dynamodb.table", &west).contains("not checked while us-west-2 is down"),
        "{out}"
    );
    let st = s.state().await;
    assert_eq!(st["active_region"], EAST);
    assert!(
        s.inbox.titled("Failover path").is_empty(),
        "{:?}",
        s.inbox.all()
    );
}

#[tokio::test]
async fn the_replicas_state_table_is_checked() {
    let s = Stack::start(Knobs {
        replicas: 2,
        readiness_interval: "1h",
        ..Knobs::default()
    })
    .await;
    let (code, out) = preflight(&s).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(
        row(&out, "state.table", STATE_TABLE).contains("can hold the replicas' lease"),
        "{out}"
    );
    let cfg = std::fs::read_to_string(s.path("config.toml")).unwrap();
    let path = s.path("other-table.toml");
    std::fs::write(&path, cfg.replace(STATE_TABLE, "no-such-state-table")).unwrap();
    let (code, out) = preflight_with(&s, &path, &[]).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(failed(&out, "state.table", "no-such-state-table"), "{out}");
}

#[tokio::test]
async fn a_responder_without_aws_credentials_says_so_in_readiness_and_in_its_live_check() {
    let s = Stack::start(Knobs {
        no_aws_credentials: true,
        readiness_interval: "1h",
        ..Knobs::default()
    })
    .await;
    let st = s.state().await;
    let creds = st["readiness"]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["check"] == "aws.credentials")
        .cloned()
        .unwrap();
    assert_eq!(creds["ok"], false, "{creds}");
    assert!(
        creds["detail"].as_str().unwrap().contains("no credentials"),
        "{creds}"
    );
    // An operator's failover: the live check names the missing credentials, not a dead region.
    let (ok, out) = s.cli(&["failover", "--to", WEST]);
    assert!(ok, "{out}");
    wait_until(
        Duration::from_secs(20),
        "the rejected target's notice",
        || async { !s.inbox.titled("failed its live check").is_empty() },
    )
    .await;
    let notice = &s.inbox.titled("failed its live check")[0];
    assert!(
        notice["text"]
            .as_str()
            .unwrap()
            .contains("no AWS credentials on this responder"),
        "{notice}"
    );
    assert_eq!(s.state().await["active_region"], EAST);
}

#[tokio::test]
async fn an_agent_behind_the_placement_fails_its_row_until_it_applies_it() {
    let mut s = Stack::start(Knobs {
        agents: vec![("wp-west-1", WEST)],
        step_deadline: "30s",
        readiness_interval: "1h",
        ..Knobs::default()
    })
    .await;
    s.spawn_agent("wp-west-1").await;
    wait_until(
        Duration::from_secs(20),
        "wp-west-1's acknowledgement",
        || async { s.state().await["agents"]["wp-west-1"]["ack"]["epoch"] == 0 },
    )
    .await;
    let (code, out) = preflight(&s).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(
        row(&out, "agents.agent", "wp-west-1").contains("applied epoch 0"),
        "{out}"
    );
    // The agent stops; a failover into its region announces epoch 1 and waits for it.
    s.kill_agent("wp-west-1").await;
    assert_eq!(
        s.alert(&alert_body(EAST, true, "2026-11-29T05:49:00.000Z"))
            .await
            .0,
        200
    );
    wait_until(
        Duration::from_secs(20),
        "the placement of epoch 1",
        || async { s.state().await["placement"]["epoch"] == 1 },
    )
    .await;
    let (code, out) = preflight(&s).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        failed(&out, "agents.agent", "wp-west-1")
            && row(&out, "agents.agent", "wp-west-1")
                .contains("applied epoch 0, the placement is epoch 1"),
        "{out}"
    );
    // Back, it applies the placement and the row passes.
    s.spawn_agent("wp-west-1").await;
    wait_until(
        Duration::from_secs(30),
        "wp-west-1 to apply epoch 1",
        || async { s.state().await["agents"]["wp-west-1"]["ack"]["epoch"] == 1 },
    )
    .await;
    let (_, out) = preflight(&s).await;
    assert!(
        row(&out, "agents.agent", "wp-west-1").contains("applied epoch 1"),
        "{out}"
    );
}
