//! Values that parse themselves: each deserializes from the config's text straight into its type
//! (or fails with the reason; the loader adds the key's path), and serializes back to the same
//! text for `check-config`.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A duration written as `<number><unit>`: `250ms`, `5s`, `2m`, `1h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur(pub Duration);

impl Dur {
    pub const fn secs(s: u64) -> Dur {
        Dur(Duration::from_secs(s))
    }

    pub const fn millis(ms: u64) -> Dur {
        Dur(Duration::from_millis(ms))
    }
}

/// Parses `250ms`, `5s`, `2m`, `1h` (one whole number and one unit); the reason when it cannot.
pub fn parse_duration_text(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("`{text}` has no unit (use ms, s, m or h)"))?;
    let (num, unit) = text.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{text}` does not start with a whole number"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => {
            return Err(format!(
                "`{text}` has unknown unit `{unit}` (use ms, s, m or h)"
            ))
        }
    };
    if d.is_zero() {
        return Err("must be greater than zero".into());
    }
    Ok(d)
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Dur, D::Error> {
        let text = String::deserialize(d)?;
        parse_duration_text(&text)
            .map(Dur)
            .map_err(de::Error::custom)
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::fmt_duration(self.0))
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&super::fmt_duration(self.0))
    }
}

/// A closed set of words in the config; `ALL` lists them for the error message.
macro_rules! words {
    ($(#[$m:meta])* $name:ident, $what:literal, $hint:literal, { $($(#[$vm:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vm])* $variant),+
        }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<$name, D::Error> {
                struct V;
                impl Visitor<'_> for V {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($hint)
                    }
                    fn visit_str<E: de::Error>(self, v: &str) -> Result<$name, E> {
                        match v {
                            $($text => Ok($name::$variant),)+
                            other => Err(E::custom(format!(concat!($what, " ({})"), other, $hint))),
                        }
                    }
                }
                d.deserialize_str(V)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
    };
}

words!(
    /// How a load balancer is pointed at a region.
    LbMode, "unknown mode `{}`", "droplets, tag or global", {
        /// Add the target region's droplets, then remove the others'.
        Droplets = "droplets",
        /// Point the load balancer at the region's droplet tag.
        Tag = "tag",
        /// Set a GLOBAL load balancer's region priorities.
        Global = "global",
    }
);

words!(
    /// The DNS record types a region's address can be written to.
    RecordType, "`{}` is not supported", "A or AAAA", {
        A = "A",
        #[allow(clippy::upper_case_acronyms)]
        AAAA = "AAAA",
    }
);

words!(
    /// One probe kind of the exporter.
    ProbeKind, "unknown probe `{}`", "known: read, write, replication", {
        Read = "read",
        Write = "write",
        Replication = "replication",
    }
);

words!(
    /// What the responder does when no other region is healthy.
    OnNoHealthyTarget, "`{}` is not supported", "the only safe choice is \"stay\": keep traffic where it is and alert", {
        Stay = "stay",
    }
);

/// An `http://` or `https://` URL, kept without its trailing slash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct HttpUrl(String);

impl HttpUrl {
    pub fn parse(text: &str) -> Result<HttpUrl, String> {
        if !(text.starts_with("http://") || text.starts_with("https://")) {
            return Err(format!("`{text}` must start with http:// or https://"));
        }
        Ok(HttpUrl(text.trim_end_matches('/').to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for HttpUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<HttpUrl, D::Error> {
        HttpUrl::parse(&String::deserialize(d)?).map_err(de::Error::custom)
    }
}

impl fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An environment variable name: letters, digits and `_`, not starting with a digit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct EnvName(String);

impl EnvName {
    pub fn parse(s: &str) -> Result<EnvName, String> {
        if s.is_empty()
            || !s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            || s.starts_with(|c: char| c.is_ascii_digit())
        {
            return Err(format!("`{s}` is not a valid environment variable name"));
        }
        Ok(EnvName(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for EnvName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<EnvName, D::Error> {
        EnvName::parse(&String::deserialize(d)?).map_err(de::Error::custom)
    }
}

/// `[<role>.tls]`: the listener speaks TLS with this certificate. The files are read at start and
/// again whenever they change (certificate rotation needs no restart).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ServerTls {
    /// PEM: the certificate first, then its intermediates.
    pub cert_file: std::path::PathBuf,
    /// PEM: its private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: std::path::PathBuf,
    /// PEM: the CAs whose client certificates are accepted. Set, every client must present one
    /// (mutual TLS); the tokens are still required.
    #[serde(default)]
    pub client_ca_file: Option<std::path::PathBuf>,
}

/// How a client verifies the servers it calls and which certificate it presents.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClientTls {
    /// PEM: the CAs to trust (see each use for whether they replace or join the system roots).
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
    /// PEM: the client certificate to present when a server asks (mutual TLS), and its key.
    #[serde(default)]
    pub cert_file: Option<std::path::PathBuf>,
    #[serde(default)]
    pub key_file: Option<std::path::PathBuf>,
    /// Send tokens over plain http:// to another machine (a path something else encrypts).
    /// Refused otherwise.
    #[serde(default)]
    pub allow_plain_http: bool,
}

impl ClientTls {
    /// Refuses `url` (named `what`) when it is plain HTTP to another machine, unless
    /// `allow_plain_http`.
    pub fn check_url(&self, section: &str, what: &str, url: &str) -> Result<(), String> {
        if !self.allow_plain_http && crate::tls::cleartext_off_machine(url) {
            // Scheme and host only: some of these URLs are secrets (Slack's).
            let shown = reqwest::Url::parse(url)
                .ok()
                .and_then(|u| Some(format!("http://{}", u.host_str()?)))
                .unwrap_or_else(|| "the URL".into());
            return Err(format!(
                "{shown}/... is plain HTTP to another machine: {what} would cross the network in \
                 cleartext. Use https://, or set {section}.allow_plain_http = true if something \
                 else encrypts the path"
            ));
        }
        Ok(())
    }

    /// Both halves of the client certificate, or neither.
    pub fn check(&self, section: &str) -> Result<(), String> {
        match (&self.cert_file, &self.key_file) {
            (Some(_), None) => Err(format!(
                "{section}.cert_file is set but {section}.key_file is not"
            )),
            (None, Some(_)) => Err(format!(
                "{section}.key_file is set but {section}.cert_file is not"
            )),
            _ => Ok(()),
        }
    }
}
