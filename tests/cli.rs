//! The binary's command line: config errors name the key and stop before anything starts.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_dynamo-failover");

fn write_config(text: &str) -> tempfile::NamedTempFile {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), text).unwrap();
    f
}

const GOOD: &str = r#"
[prober]
id = "vantage-a"

[exporter]
listen = "127.0.0.1:0"

[[region]]
name = "us-east-1"
priority = 1

[[region]]
name = "us-west-2"
endpoint = "http://127.0.0.1:1"
priority = 2

[[table]]
name = "wordpress_posts"
"#;

#[test]
fn check_config_prints_the_effective_settings_with_defaults_filled() {
    let f = write_config(GOOD);
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(f.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("is valid"), "{text}");
    assert!(text.contains("interval = \"5s\""), "{text}");
    assert!(text.contains("us-west-2"), "{text}");
}

#[test]
fn check_config_validates_the_shipped_example_and_lists_secrets_it_cannot_read() {
    // The README's first check-config command, on a machine without the example's token files.
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/example.toml");
    let out = Command::new(BIN)
        .args(["check-config", "--config", example])
        .env_remove("DYNAMO_FAILOVER_WEBHOOK_TOKEN")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("is valid"), "{text}");
    assert!(
        text.contains("could not be read here") && text.contains("responder.webhook"),
        "{text}"
    );
    assert!(!text.contains("unreadable-secret-stand-in"), "{text}");
    // The roles themselves still refuse a config whose secrets they cannot read.
    let out = Command::new(BIN)
        .args(["responder", "--config", example])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot read"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn check_config_accepts_an_unreadable_slack_url_file() {
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/example.toml"))
            .unwrap();
    let with_slack = example.replace("# slack_webhook_url_file = ", "slack_webhook_url_file = ");
    assert_ne!(
        with_slack, example,
        "the example documents slack_webhook_url_file"
    );
    let f = write_config(&with_slack);
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(f.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("slack_webhook_url_file"), "{text}");
}

#[test]
fn an_unknown_key_stops_every_role_with_the_key_named() {
    let bad = GOOD.replace(
        "id = \"vantage-a\"",
        "id = \"vantage-a\"\ninterval_seconds = 5",
    );
    let f = write_config(&bad);
    for role in ["check-config", "exporter", "responder", "serve"] {
        let out = Command::new(BIN)
            .args([role, "--config"])
            .arg(f.path())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{role}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("interval_seconds"), "{role}: {err}");
    }
}

#[test]
fn an_invalid_value_names_its_key_and_the_problem() {
    let bad = GOOD.replace("priority = 2", "priority = 1");
    let f = write_config(&bad);
    let out = Command::new(BIN)
        .args(["exporter", "--config"])
        .arg(f.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("region[1].priority") && err.contains("distinct"),
        "{err}"
    );
}

#[test]
fn a_missing_config_file_is_a_clear_error() {
    let out = Command::new(BIN)
        .args([
            "check-config",
            "--config",
            "/nonexistent/dynamo-failover.toml",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/dynamo-failover.toml"));
}

#[test]
fn version_prints_the_package_version() {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
}
