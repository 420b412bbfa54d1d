//! Secrets (tokens, webhook URLs): loaded from a file or an environment variable, never from the
//! config file, and never printed. `Debug`, `Display` and `Serialize` all show `[redacted]`; the
//! value is reachable only through [`Secret::expose`], and comparisons run in constant time.

use std::fmt;

use subtle::ConstantTimeEq;

#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Compares with `candidate` in time independent of where they differ.
    pub fn matches(&self, candidate: &[u8]) -> bool {
        // Length is not secret-dependent in a useful way for random tokens, but compare
        // fixed-size digests anyway so the time does not depend on the length either.
        let a = digest(self.0.as_bytes());
        let b = digest(candidate);
        a.ct_eq(&b).into()
    }

    /// Reads a secret from `file` if given, else from the environment variable `env`.
    /// `key` names the config key in errors. Surrounding whitespace is trimmed.
    pub fn load(key: &str, file: Option<&str>, env: &str) -> Result<Secret, String> {
        let value = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("`{key}`: cannot read {path}: {e}"))?;
                warn_if_readable_by_others(key, path);
                text
            }
            None => std::env::var(env).unwrap_or_default(),
        };
        let value = value.trim().to_string();
        if value.is_empty() {
            return Err(match file {
                Some(path) => format!("`{key}`: {path} is empty"),
                None => format!("`{key}` is not set and the environment variable {env} is empty"),
            });
        }
        Ok(Secret(value))
    }
}

/// A secret file others can read is a secret others may have: say so (it still loads).
fn warn_if_readable_by_others(key: &str, path: &str) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = std::fs::metadata(path) {
        let mode = m.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                key,
                path,
                mode = format!("{mode:o}"),
                "a secret file is readable by its group or by others; `chmod 600` it"
            );
        }
    }
}

/// A 64-bit FNV-1a digest spread over 32 bytes: enough to make the comparison length-blind.
fn digest(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (lane, chunk) in out.chunks_mut(8).enumerate() {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ (lane as u64);
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h ^= bytes.len() as u64;
        chunk.copy_from_slice(&h.to_le_bytes());
    }
    out
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_never_shows_its_value() {
        let s = Secret::new("hunter2-token");
        assert_eq!(format!("{s}"), "[redacted]");
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"[redacted]\"");
    }

    #[test]
    fn matching_is_exact() {
        let s = Secret::new("abc123");
        assert!(s.matches(b"abc123"));
        assert!(!s.matches(b"abc124"));
        assert!(!s.matches(b"abc12"));
        assert!(!s.matches(b""));
    }
}
