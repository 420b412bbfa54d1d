//! The responder section: policy, steps, secrets and tokens, each error naming its key.
use crate::config::Config;
use crate::secret::Secret;

const BASE: &str = r#"
[prober]
id = "p"

[[region]]
name = "us-east-1"
priority = 1
[region.digitalocean]
slug = "nyc1"
droplet_ids = [1]
tag = "east"
ipv4 = "192.0.2.1"

[[region]]
name = "us-west-2"
priority = 2
[region.digitalocean]
slug = "sfo3"
droplet_ids = [2]
tag = "west"
ipv4 = "192.0.2.2"

[[table]]
name = "wordpress_posts"

[responder]
state_file = "/tmp/state.json"

[responder.policy]
min_interval = "1m"

[responder.app]
env_file = "/tmp/app.env"

[responder.digitalocean]
[[responder.digitalocean.load_balancer]]
id = "lb"
mode = "droplets"
[[responder.digitalocean.dns_record]]
domain = "example.com"
record_id = 1
type = "A"
"#;

fn parse(text: &str) -> Result<Config, String> {
    // A distinct, long enough secret per key.
    let secrets = |key: &str, _: Option<&str>, _: &str| Ok(Secret::new(format!("s3cr3t-{key}")));
    Config::parse_with_secrets(text, &secrets).map_err(|e| e.to_string())
}

#[test]
fn a_complete_responder_section_builds_its_policy() {
    let c = parse(BASE).unwrap();
    let r = c.responder.as_ref().unwrap();
    let p = r.policy(&c.regions);
    assert_eq!(p.regions, vec!["us-east-1", "us-west-2"]);
    assert_eq!(p.min_interval_ms, 60_000);
    assert!(p.auto_failback);
    // Secrets never show in the effective config.
    let shown = c.to_pretty();
    assert!(
        !shown.contains("s3cr3t") && shown.contains("[redacted]"),
        "{shown}"
    );
}

#[test]
fn policy_and_step_errors_name_their_key() {
    let cases = [
        (
            BASE.replace("min_interval = \"1m\"", "min_interval = \"soon\""),
            "responder.policy.min_interval",
        ),
        (
            BASE.replace(
                "min_interval = \"1m\"",
                "min_interval = \"1m\"\non_no_healthy_target = \"random\"",
            ),
            "responder.policy.on_no_healthy_target",
        ),
        (
            BASE.replace(
                "min_interval = \"1m\"",
                "min_interval = \"1m\"\nmax_failback_lag = \"5\"",
            ),
            "responder.policy.max_failback_lag",
        ),
        (
            BASE.replace("mode = \"droplets\"", "mode = \"weighted\""),
            "load_balancer[0].mode",
        ),
        (
            BASE.replace("droplet_ids = [2]", "droplet_ids = []"),
            "region[1].digitalocean.droplet_ids",
        ),
        (
            BASE.replace("droplet_ids = [2]", "droplet_ids = [1]"),
            "droplet 1 is listed for both",
        ),
        (
            BASE.replace("ipv4 = \"192.0.2.2\"", "ipv4 = \"not-an-ip\""),
            "region[1].digitalocean.ipv4",
        ),
        (
            BASE.replace("type = \"A\"", "type = \"CNAME\""),
            "dns_record[0].type",
        ),
        (
            BASE.replace("type = \"A\"", "type = \"A\"\nttl = 10"),
            "minimum TTL is 30",
        ),
        (
            BASE.replace(
                "env_file = \"/tmp/app.env\"",
                "env_file = \"/tmp/app.env\"\nenv_key = \"1BAD\"",
            ),
            "responder.app.env_key",
        ),
        (
            BASE.replace(
                "env_file = \"/tmp/app.env\"",
                "env_file = \"/tmp/app.env\"\nreload_commands = [[]]",
            ),
            "reload_commands[0]",
        ),
        (
            BASE.replace("[responder]", "[responder]\nlisten = \"nowhere\""),
            "responder.listen",
        ),
        (
            BASE.replace("[responder]", "[responder]\nmax_body_bytes = 10"),
            "responder.max_body_bytes",
        ),
        (
            BASE.replace("[responder.policy]", "[responder.policy]\nfailback = true"),
            "failback",
        ),
        (
            BASE.replace(
                "[responder.policy]",
                "[responder.alerts]\napp_down = [\"DynamoDBRegionUnavailable\"]\n\n[responder.policy]",
            ),
            "responder.alerts.app_down",
        ),
        (
            BASE.replace("[responder]", "[responder]\nmax_connections = 3")
                + "\n[responder.agents]\nsecret_file = \"/tmp/agents\"\n[[responder.agents.agent]]\nname = \"a\"\nregion = \"us-east-1\"\n[[responder.agents.agent]]\nname = \"b\"\nregion = \"us-west-2\"\n",
            "responder.max_connections",
        ),
    ];
    for (text, want) in cases {
        let e = parse(&text).unwrap_err();
        assert!(e.contains(want), "want `{want}` in: {e}");
    }
}

#[test]
fn one_region_is_not_enough_for_a_responder() {
    let start = BASE.find("[[region]]\nname = \"us-west-2\"").unwrap();
    let end = BASE.find("[[table]]").unwrap();
    let text = format!("{}{}", &BASE[..start], &BASE[end..]);
    assert!(parse(&text).unwrap_err().contains("at least two"));
}

#[test]
fn a_missing_secret_names_its_key_and_variable() {
    let secrets = |k: &str, f: Option<&str>, env: &str| Secret::load(k, f, env);
    let text = BASE.replace(
        "[responder]",
        "[responder]\nwebhook_token_file = \"/nonexistent/token\"",
    );
    let e = Config::parse_with_secrets(&text, &secrets)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("responder.webhook_token_file") && e.contains("/nonexistent/token"),
        "{e}"
    );
}

#[test]
fn tokens_must_be_long_enough_and_the_admin_token_not_the_webhook_token() {
    let short = |key: &str, _: Option<&str>, _: &str| {
        Ok(Secret::new(if key.contains("admin") {
            "short"
        } else {
            "w-0123456789abcdef"
        }))
    };
    let e = Config::parse_with_secrets(BASE, &short)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("responder.admin_token_file") && e.contains("16 bytes"),
        "{e}"
    );
    let same = |_: &str, _: Option<&str>, _: &str| Ok(Secret::new("the-same-token-0123456789"));
    let e = Config::parse_with_secrets(BASE, &same)
        .unwrap_err()
        .to_string();
    assert!(e.contains("equals the webhook token"), "{e}");
}
