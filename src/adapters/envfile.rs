//! The application's env file and reload commands, done the way the operator would do them by
//! hand: the file is rewritten atomically (a temporary file beside it, fsync, rename, fsync of the
//! directory) keeping every other line, its mode, owner and group, and a symlink is written
//! through to its target; reload commands run with a clean environment (PATH, the region
//! variable, the epoch and the variables the config passes through), never the responder's own,
//! which holds its tokens.

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::ports::{FailReason, StepError};

/// The value of `key` in env-file text, if set.
pub fn read_value(text: &str, key: &str) -> Option<String> {
    text.lines().rev().find_map(|l| {
        let l = l
            .trim_start()
            .strip_prefix("export ")
            .unwrap_or(l.trim_start());
        l.strip_prefix(key)
            .and_then(|rest| rest.strip_prefix('='))
            .map(|v| v.trim().trim_matches('"').trim_matches('\'').to_string())
    })
}

/// `text` with `key` set to `value` (replacing every assignment of it, or appending one).
pub fn with_value(text: &str, key: &str, value: &str) -> String {
    let mut out = String::with_capacity(text.len() + key.len() + value.len() + 2);
    let mut set = false;
    for l in text.lines() {
        let exported = l.trim_start().starts_with("export ");
        let t = l
            .trim_start()
            .strip_prefix("export ")
            .unwrap_or(l.trim_start());
        if t.strip_prefix(key).is_some_and(|r| r.starts_with('=')) {
            if !set {
                // Written the way it was: a shell-sourced file keeps its `export`.
                let export = if exported { "export " } else { "" };
                out.push_str(&format!("{export}{key}={value}\n"));
                set = true;
            }
        } else {
            out.push_str(l);
            out.push('\n');
        }
    }
    if !set {
        out.push_str(&format!("{key}={value}\n"));
    }
    out
}

/// The directory holding `path` (`.` for a bare file name), for the fsync after a rename.
pub fn dir_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// `path` with `suffix` appended to its file name (`state.json` -> `state.json.lock`): names
/// derived this way never equal the path or each other, whatever the path's own extension.
pub fn beside(path: &Path, suffix: &str) -> PathBuf {
    let mut name: OsString = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

/// Who owns a rewritten file and how it may be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ownership {
    /// Whatever the file has now (a new file: mode 0644 and this process's user and group).
    Keep,
    /// This mode, and this group when given (the agent's configured mode and group).
    Set { mode: u32, gid: Option<u32> },
}

/// Writes `body` to `path` atomically. A symlink is followed and its target rewritten (the link
/// stays a link); the target's mode, owner and group are kept (or set, per `ownership`).
pub fn write_atomically(path: &Path, body: &str, ownership: Ownership) -> std::io::Result<()> {
    let target = match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => std::fs::canonicalize(path)?,
        _ => path.to_path_buf(),
    };
    let dir = dir_of(&target);
    std::fs::create_dir_all(dir)?;
    let existing = std::fs::metadata(&target).ok();
    let (mode, owner) = match (ownership, &existing) {
        (Ownership::Set { mode, gid }, _) => (mode, gid.map(|g| (None, Some(g)))),
        (Ownership::Keep, Some(m)) => (
            m.permissions().mode() & 0o7777,
            Some((Some(m.uid()), Some(m.gid()))),
        ),
        (Ownership::Keep, None) => (0o644, None),
    };
    let tmp = beside(&target, ".dynamo-failover.tmp");
    let _ = std::fs::remove_file(&tmp);
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(body.as_bytes())?;
        if let Some((uid, gid)) = owner {
            // Only what differs, so an unprivileged writer that already owns the file succeeds.
            let now = f.metadata()?;
            let uid = uid.filter(|u| *u != now.uid());
            let gid = gid.filter(|g| *g != now.gid());
            if uid.is_some() || gid.is_some() {
                std::os::unix::fs::fchown(&f, uid, gid).map_err(|e| {
                    std::io::Error::new(
                        e.kind(),
                        format!(
                            "cannot give the new {} the owner/group of the old one ({e}); \
                             run as a user that may, or make this user the file's owner",
                            target.display()
                        ),
                    )
                })?;
            }
        }
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.sync_all()
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    if let Err(e) = std::fs::rename(&tmp, &target) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::File::open(dir)?.sync_all()
}

/// The default PATH for reload commands when the process has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Runs one reload command (`cmd[0]` with arguments) within `timeout`, with a clean
/// environment: PATH, `vars`, and the variables named in `pass_env` that are set. Answers its
/// standard output's tail.
/// `still_allowed` is asked every 100 ms while it runs; when it says no (a replica's lease is
/// ending) the command and what it started are stopped and the answer is
/// [`StepError::fenced`].
pub async fn run_command(
    cmd: &[String],
    vars: &[(&str, String)],
    pass_env: &[String],
    timeout: Duration,
    still_allowed: &(dyn Fn() -> bool + Sync),
) -> Result<String, StepError> {
    let mut c = tokio::process::Command::new(&cmd[0]);
    c.args(&cmd[1..])
        .env_clear()
        .env(
            "PATH",
            std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into()),
        )
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for name in pass_env {
        if let Some(v) = std::env::var_os(name) {
            c.env(name, v);
        }
    }
    for (k, v) in vars {
        c.env(k, v);
    }
    // Its own process group, so a timeout stops what it started too.
    c.process_group(0)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = c.spawn().map_err(|e| {
        StepError::new(
            FailReason::CommandFailed,
            format!("reload command `{}` could not start: {e}", cmd.join(" ")),
            false,
        )
    })?;
    let pid = child.id();
    let kill_group = || {
        if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
            // SAFETY: killpg only sends a signal to the process group this function created.
            unsafe {
                libc::killpg(pid, libc::SIGKILL);
            }
        }
    };
    let watch = async {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if !still_allowed() {
                return;
            }
        }
    };
    let waited = tokio::select! {
        w = tokio::time::timeout(timeout, child.wait_with_output()) => w,
        _ = watch => {
            kill_group();
            return Err(StepError::fenced());
        }
    };
    let out = match waited {
        Err(_) => {
            kill_group();
            return Err(StepError::new(
                FailReason::Timeout,
                format!(
                    "reload command `{}` did not finish within {timeout:?}",
                    cmd.join(" ")
                ),
                true,
            ));
        }
        Ok(Err(e)) => {
            return Err(StepError::new(
                FailReason::CommandFailed,
                format!("reload command `{}` failed: {e}", cmd.join(" ")),
                true,
            ))
        }
        Ok(Ok(o)) => o,
    };
    if !out.status.success() {
        return Err(StepError::new(
            FailReason::CommandFailed,
            format!(
                "reload command `{}` exited with {}: {}",
                cmd.join(" "),
                out.status,
                tail(&out.stderr)
            ),
            true,
        ));
    }
    Ok(tail(&out.stdout))
}

/// The last 300 characters of a command's output, trimmed.
fn tail(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    let s = s.trim();
    let skip = s.chars().count().saturating_sub(300);
    s.chars().skip(skip).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setting_a_value_keeps_every_other_line() {
        let text = "# app\nDB_HOST=x\nDYNAMODB_REGION=us-east-1\nOTHER=1\n";
        let out = with_value(text, "DYNAMODB_REGION", "us-west-2");
        assert_eq!(
            out,
            "# app\nDB_HOST=x\nDYNAMODB_REGION=us-west-2\nOTHER=1\n"
        );
        assert_eq!(
            read_value(&out, "DYNAMODB_REGION").as_deref(),
            Some("us-west-2")
        );
    }

    #[test]
    fn a_missing_key_is_appended_and_a_prefix_is_not_mistaken_for_it() {
        let text = "DYNAMODB_REGION_X=1";
        assert_eq!(read_value(text, "DYNAMODB_REGION"), None);
        let out = with_value(text, "DYNAMODB_REGION", "b");
        assert_eq!(out, "DYNAMODB_REGION_X=1\nDYNAMODB_REGION=b\n");
    }

    #[test]
    fn quoted_and_exported_values_are_read_and_an_export_is_kept() {
        assert_eq!(read_value("export K=\"v\"", "K").as_deref(), Some("v"));
        assert_eq!(with_value("export K=a\n", "K", "b"), "export K=b\n");
    }

    #[test]
    fn side_files_never_collide_with_the_file_or_each_other_and_a_bare_name_has_a_directory() {
        for p in [
            "state.json",
            "state",
            "state.lock",
            "state.tmp",
            "/var/lib/x/s.json",
        ] {
            let p = Path::new(p);
            let lock = beside(p, ".lock");
            let tmp = beside(p, ".tmp");
            assert!(lock != p && tmp != p && lock != tmp, "{p:?}");
        }
        assert_eq!(dir_of(Path::new("state.json")), Path::new("."));
        assert_eq!(dir_of(Path::new("/a/b")), Path::new("/a"));
    }

    #[test]
    fn a_rewrite_keeps_the_mode_and_writes_through_a_symlink() {
        let d = tempfile::tempdir().unwrap();
        let real = d.path().join("real.env");
        std::fs::write(&real, "A=1\n").unwrap();
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o640)).unwrap();
        let link = d.path().join("app.env");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        write_atomically(&link, "A=2\n", Ownership::Keep).unwrap();
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read_to_string(&real).unwrap(), "A=2\n");
        assert_eq!(
            std::fs::metadata(&real).unwrap().permissions().mode() & 0o777,
            0o640
        );
        // A set mode is applied, to a new file too.
        let new = d.path().join("new.env");
        write_atomically(
            &new,
            "B=1\n",
            Ownership::Set {
                mode: 0o604,
                gid: None,
            },
        )
        .unwrap();
        assert_eq!(
            std::fs::metadata(&new).unwrap().permissions().mode() & 0o777,
            0o604
        );
    }

    #[tokio::test]
    async fn a_reload_command_sees_only_a_clean_environment() {
        // cargo runs tests with CARGO_* variables set: one stands for a token that must not leak,
        // another is passed through by name. (No set_var: other tests run in parallel.)
        let leak = std::env::var("CARGO_PKG_DESCRIPTION").expect("set by cargo");
        let pass = std::env::var("CARGO_PKG_NAME").expect("set by cargo");
        let out = run_command(
            &["sh".into(), "-c".into(), "env".into()],
            &[("DYNAMODB_REGION", "us-west-2".into())],
            &["CARGO_PKG_NAME".into()],
            Duration::from_secs(5),
            &|| true,
        )
        .await
        .unwrap();
        assert!(out.contains("DYNAMODB_REGION=us-west-2"), "{out}");
        assert!(out.contains(&format!("CARGO_PKG_NAME={pass}")), "{out}");
        assert!(out.contains("PATH="), "{out}");
        assert!(!out.contains(&leak), "{out}");
    }

    #[tokio::test]
    async fn a_reload_command_past_its_time_is_stopped_with_what_it_started() {
        let d = tempfile::tempdir().unwrap();
        let marker = d.path().join("grandchild-lived");
        let script = format!("(sleep 1; touch {}) & sleep 5", marker.display());
        let started = std::time::Instant::now();
        let e = run_command(
            &["sh".into(), "-c".into(), script],
            &[],
            &[],
            Duration::from_millis(200),
            &|| true,
        )
        .await
        .unwrap_err();
        assert_eq!(e.reason, FailReason::Timeout);
        assert!(started.elapsed() < Duration::from_secs(2));
        tokio::time::sleep(Duration::from_millis(1500)).await; // longer than the grandchild's sleep
        assert!(
            !marker.exists(),
            "a process the command started outlived it"
        );
    }

    #[tokio::test]
    async fn a_reload_command_is_stopped_when_the_lease_ends_under_it() {
        let allowed = std::sync::atomic::AtomicBool::new(true);
        let started = std::time::Instant::now();
        let cmd = ["sleep".to_string(), "5".to_string()];
        let still = || allowed.load(std::sync::atomic::Ordering::SeqCst);
        let run = run_command(&cmd, &[], &[], Duration::from_secs(10), &still);
        let revoke = async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            allowed.store(false, std::sync::atomic::Ordering::SeqCst);
        };
        let (e, ()) = tokio::join!(run, revoke);
        assert_eq!(e.unwrap_err().reason, FailReason::Fenced);
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
