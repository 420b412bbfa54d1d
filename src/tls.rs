//! TLS on every listener and on the clients that call them, with rustls and the aws-lc-rs
//! provider (the one the AWS SDK already links).
//!
//! - **Listeners** ([`ServerTls`]): a certificate and key from PEM files, TLS 1.2 and 1.3 only,
//!   and with `client_ca_file` a client certificate required (mutual TLS). The files are stat'ed
//!   at most once a second, on new connections: a rotated certificate (an ACME client renewing
//!   it, an operator replacing it) is served from the next connection on, without a restart. A
//!   rotation that does not load (a key that does not match yet, half-written files) keeps the
//!   last good certificate and says why; it is tried again until it loads.
//! - **Clients** ([`client`]): verify the server against the system roots or a CA bundle and
//!   present a client certificate when configured. There is no switch to turn verification off.
//! - **Plain HTTP** stays for loopback; a listener on any other address needs TLS, or the config
//!   saying so explicitly ([`check_listener`]).
//! - [`inspect`] reads a listener's files the way start-up does, for `check-config`: parses them,
//!   checks the key matches the certificate and says how many days it has left.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

use crate::config::types::{ClientTls, ServerTls as ServerTlsConfig};

/// How often the files are looked at for a rotation (on a new connection, not on a timer).
const RECHECK: Duration = Duration::from_secs(1);

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A plain listener is for loopback; anywhere else what it carries (`carries`: "its tokens",
/// "its metrics") would cross the network in cleartext, unauthenticated, so it needs TLS or
/// `allow_plain_http = true` (something else encrypts the path).
pub fn check_listener(
    section: &str,
    listen: SocketAddr,
    tls: Option<&ServerTlsConfig>,
    allow_plain_http: bool,
    carries: &str,
) -> Result<(), String> {
    if tls.is_none() && !listen.ip().is_loopback() && !allow_plain_http {
        return Err(format!(
            "{listen} is not a loopback address and [{section}.tls] is not set: {carries} would \
             cross the network in cleartext. Configure [{section}.tls] (cert_file, key_file), or \
             set {section}.allow_plain_http = true if something else encrypts the path (a TLS \
             proxy on this machine, a VPN)"
        ));
    }
    Ok(())
}

/// Whether `url` is plain HTTP to anything but this machine (a token sent there is readable on
/// the way).
pub fn cleartext_off_machine(url: &str) -> bool {
    let Ok(u) = reqwest::Url::parse(url) else {
        return false;
    };
    u.scheme() == "http"
        && match u.host() {
            Some(url::Host::Ipv4(ip)) => !ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => !ip.is_loopback(),
            Some(url::Host::Domain(d)) => d != "localhost",
            None => true,
        }
}

/// What [`inspect`] found in a listener's files.
#[derive(Debug, Clone)]
pub struct CertSummary {
    /// The certificate's notAfter, in Unix seconds.
    pub not_after: i64,
    pub not_before: i64,
    /// Certificates in the chain file.
    pub chain_len: usize,
    /// CAs in the client CA file, when mutual TLS is on.
    pub client_cas: Option<usize>,
}

impl CertSummary {
    pub fn days_left(&self, now: i64) -> i64 {
        (self.not_after - now).div_euclid(86_400)
    }

    /// One line for people: valid how long, or expired since when.
    pub fn describe(&self, now: i64) -> String {
        let mtls = match self.client_cas {
            Some(n) => format!("; client certificates required ({n} CA(s))"),
            None => String::new(),
        };
        if self.not_after <= now {
            format!(
                "EXPIRED {} day(s) ago (notAfter {}){mtls}",
                (now - self.not_after).div_euclid(86_400),
                unix_text(self.not_after)
            )
        } else if self.not_before > now {
            format!("not valid before {}{mtls}", unix_text(self.not_before))
        } else {
            format!(
                "valid for {} more day(s) (notAfter {}){mtls}",
                self.days_left(now),
                unix_text(self.not_after)
            )
        }
    }
}

fn unix_text(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| t.to_string())
}

pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Reads the listener's files as start-up does: parses them, checks the key matches the
/// certificate; the error names the file and what is wrong with it.
pub fn inspect(files: &ServerTlsConfig) -> Result<CertSummary, String> {
    build(files).map(|(_, s)| s)
}

/// What `check-config` says of one section's TLS files.
#[derive(Debug)]
pub enum FileCheck {
    /// Every file read and checked: the line to print.
    Good(String),
    /// Some files cannot be read here (they live on the production machine): which, and why.
    Unreadable(Vec<String>),
    /// Read but wrong: unparseable, a key that does not match, expired or not yet valid.
    Bad(String),
}

fn unreadable(paths: &[(&str, Option<&PathBuf>)]) -> Vec<String> {
    paths
        .iter()
        .filter_map(|(what, p)| {
            let p = (*p)?;
            std::fs::File::open(p)
                .err()
                .map(|e| format!("{what} {}: {e}", p.display()))
        })
        .collect()
}

/// A listener's files as start-up would load them, and the certificate valid now.
pub fn check_server_files(files: &ServerTlsConfig, now: i64) -> FileCheck {
    let missing = unreadable(&[
        ("cert_file", Some(&files.cert_file)),
        ("key_file", Some(&files.key_file)),
        ("client_ca_file", files.client_ca_file.as_ref()),
    ]);
    if !missing.is_empty() {
        return FileCheck::Unreadable(missing);
    }
    match inspect(files) {
        Err(e) => FileCheck::Bad(e),
        Ok(s) if s.not_after <= now || s.not_before > now => FileCheck::Bad(format!(
            "cert_file {}: {}",
            files.cert_file.display(),
            s.describe(now)
        )),
        Ok(s) => FileCheck::Good(format!(
            "cert_file {}: {}",
            files.cert_file.display(),
            s.describe(now)
        )),
    }
}

/// A client's CA bundle parses, and its certificate matches its key and is valid now.
pub fn check_client_files(tls: &ClientTls, now: i64) -> FileCheck {
    let missing = unreadable(&[
        ("ca_file", tls.ca_file.as_ref()),
        ("cert_file", tls.cert_file.as_ref()),
        ("key_file", tls.key_file.as_ref()),
    ]);
    if !missing.is_empty() {
        return FileCheck::Unreadable(missing);
    }
    let mut said = Vec::new();
    if let Some(ca) = &tls.ca_file {
        match roots(ca, "ca_file") {
            Ok(r) => said.push(format!("ca_file {}: {} CA(s)", ca.display(), r.len())),
            Err(e) => return FileCheck::Bad(e),
        }
    }
    if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
        // The same checks as a listener's certificate: parse, match, dates.
        let as_server = ServerTlsConfig {
            cert_file: cert.clone(),
            key_file: key.clone(),
            client_ca_file: None,
        };
        match check_server_files(&as_server, now) {
            FileCheck::Good(line) => said.push(line),
            other => return other,
        }
    }
    FileCheck::Good(said.join("; "))
}

fn certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{what} {}: {}", path.display(), pem_error(e)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{what} {}: {}", path.display(), pem_error(e)))?;
    if certs.is_empty() {
        return Err(format!(
            "{what} {}: no PEM certificate (-----BEGIN CERTIFICATE-----) in it",
            path.display()
        ));
    }
    Ok(certs)
}

fn pem_error(e: rustls::pki_types::pem::Error) -> String {
    match e {
        rustls::pki_types::pem::Error::Io(e) => e.to_string(),
        other => format!("not valid PEM ({other:?})"),
    }
}

fn roots(path: &Path, what: &str) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    for c in certs(path, what)? {
        store
            .add(c)
            .map_err(|e| format!("{what} {}: {e}", path.display()))?;
    }
    Ok(store)
}

fn build(files: &ServerTlsConfig) -> Result<(Arc<ServerConfig>, CertSummary), String> {
    let chain = certs(&files.cert_file, "cert_file")?;
    let (not_before, not_after) = validity(&chain[0]).ok_or_else(|| {
        format!(
            "cert_file {}: the first certificate is not an X.509 certificate",
            files.cert_file.display()
        )
    })?;
    let key = PrivateKeyDer::from_pem_file(&files.key_file).map_err(|e| {
        format!(
            "key_file {}: {}",
            files.key_file.display(),
            match e {
                rustls::pki_types::pem::Error::NoItemsFound =>
                    "no PEM private key (-----BEGIN PRIVATE KEY-----) in it".to_string(),
                other => pem_error(other),
            }
        )
    })?;
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?;
    let (builder, client_cas) = match &files.client_ca_file {
        None => (builder.with_no_client_auth(), None),
        Some(ca) => {
            let store = roots(ca, "client_ca_file")?;
            let n = store.len();
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(store), provider)
                .build()
                .map_err(|e| format!("client_ca_file {}: {e}", ca.display()))?;
            (builder.with_client_cert_verifier(verifier), Some(n))
        }
    };
    let chain_len = chain.len();
    let mut config = builder.with_single_cert(chain, key).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => format!(
            "key_file {} does not match the certificate in cert_file {}",
            files.key_file.display(),
            files.cert_file.display()
        ),
        other => format!(
            "cert_file {} / key_file {}: {other}",
            files.cert_file.display(),
            files.key_file.display()
        ),
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((
        Arc::new(config),
        CertSummary {
            not_after,
            not_before,
            chain_len,
            client_cas,
        },
    ))
}

/// What a file looks like now, to notice a rotation: device, inode, size, modification and change
/// times, mode and owner of each (through symlinks, so a swapped link counts; the change time and
/// mode so a `chmod` or `chgrp` that makes a key readable counts too).
type Stamp = Vec<Option<[i64; 10]>>;

fn stamp(paths: &[&PathBuf]) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    paths
        .iter()
        .map(|p| {
            std::fs::metadata(p).ok().map(|m| {
                [
                    m.dev() as i64,
                    m.ino() as i64,
                    m.size() as i64,
                    m.mtime(),
                    m.mtime_nsec(),
                    m.ctime(),
                    m.ctime_nsec(),
                    m.mode() as i64,
                    m.uid() as i64,
                    m.gid() as i64,
                ]
            })
        })
        .collect()
}

fn server_paths(files: &ServerTlsConfig) -> Vec<&PathBuf> {
    [
        Some(&files.cert_file),
        Some(&files.key_file),
        files.client_ca_file.as_ref(),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// When files that changed are loaded: once they have looked the same at two looks a
/// [`RECHECK`] apart (a rotation writes several files; loading halfway would fail, or count a
/// failure, for nothing), and again at every look while they do not load.
struct Watch {
    /// The files as last loaded.
    loaded: Stamp,
    /// Changed files seen at the last look and not loaded yet.
    candidate: Option<Stamp>,
    checked: Instant,
    /// The last load error said, so a file that keeps failing is said once, not every second.
    last_error: Option<String>,
}

enum Look {
    Unchanged,
    /// The files changed and settled: load them.
    Load(Stamp),
}

impl Watch {
    fn new(loaded: Stamp) -> Watch {
        Watch {
            loaded,
            candidate: None,
            checked: Instant::now(),
            last_error: None,
        }
    }

    fn look(&mut self, paths: &[&PathBuf]) -> Look {
        if self.checked.elapsed() < RECHECK {
            return Look::Unchanged;
        }
        self.checked = Instant::now();
        let now = stamp(paths);
        if now == self.loaded {
            self.candidate = None;
            self.last_error = None;
            return Look::Unchanged;
        }
        if self.candidate.as_ref() == Some(&now) {
            return Look::Load(now);
        }
        // New files: whatever they fail with is news, even the same words as last time.
        self.candidate = Some(now);
        self.last_error = None;
        Look::Unchanged
    }

    fn loaded(&mut self, stamp: Stamp) {
        self.loaded = stamp;
        self.candidate = None;
        self.last_error = None;
    }

    /// Answers whether this error is new (to be said and counted).
    fn failed(&mut self, error: &str) -> bool {
        let new = self.last_error.as_deref() != Some(error);
        self.last_error = Some(error.to_string());
        new
    }
}

/// A listener's TLS: the current certificate, and the files to reload it from.
pub struct ServerTls {
    listener: &'static str,
    files: ServerTlsConfig,
    current: Mutex<(tokio_rustls::TlsAcceptor, Watch)>,
    metrics: Option<TlsMetrics>,
}

/// The TLS metric families of one registry (one process role).
#[derive(Clone)]
pub struct TlsFamilies {
    expiry: prometheus::IntGaugeVec,
    reloads: prometheus::IntCounterVec,
    failures: prometheus::IntCounterVec,
}

impl TlsFamilies {
    pub fn register(registry: &prometheus::Registry) -> prometheus::Result<Self> {
        use prometheus::{IntCounterVec, IntGaugeVec, Opts};
        let expiry = IntGaugeVec::new(
            Opts::new(
                "tls_certificate_expiry_timestamp_seconds",
                "notAfter of the certificate in use, in Unix seconds: a listener's (listener = \
                 its role) or a client's (listener = ROLE-client).",
            ),
            &["listener"],
        )?;
        let reloads = IntCounterVec::new(
            Opts::new(
                "tls_certificate_reloads_total",
                "Certificate files that changed and were loaded (ok), or do not load and leave \
                 the last good ones in use (error, once per distinct problem).",
            ),
            &["listener", "result"],
        )?;
        let failures = IntCounterVec::new(
            Opts::new(
                "tls_handshake_failures_total",
                "Connections closed because their TLS handshake failed or timed out (a client \
                 that does not trust the certificate, no or a refused client certificate, plain \
                 HTTP sent to a TLS port).",
            ),
            &["listener"],
        )?;
        registry.register(Box::new(expiry.clone()))?;
        registry.register(Box::new(reloads.clone()))?;
        registry.register(Box::new(failures.clone()))?;
        Ok(Self {
            expiry,
            reloads,
            failures,
        })
    }

    pub fn of(&self, listener: &str) -> TlsMetrics {
        TlsMetrics {
            expiry: self.expiry.with_label_values(&[listener]),
            reloads_ok: self.reloads.with_label_values(&[listener, "ok"]),
            reloads_failed: self.reloads.with_label_values(&[listener, "error"]),
            handshake_failures: self.failures.with_label_values(&[listener]),
        }
    }
}

/// One listener's (or client's) TLS metrics.
#[derive(Clone)]
pub struct TlsMetrics {
    pub expiry: prometheus::IntGauge,
    pub reloads_ok: prometheus::IntCounter,
    pub reloads_failed: prometheus::IntCounter,
    pub handshake_failures: prometheus::IntCounter,
}

/// Says what was loaded: an error when the certificate is not valid now (clients will refuse
/// it), else info.
fn said_loaded(who: &str, what: &str, summary: &CertSummary) {
    let now = now_unix();
    let validity = summary.describe(now);
    if summary.not_after <= now || summary.not_before > now {
        tracing::error!(listener = who, validity = %validity, "{what}, but it is not valid now: the other side will refuse it");
    } else {
        tracing::info!(listener = who, validity = %validity, "{what}");
    }
}

impl ServerTls {
    /// Loads the files; an error names the file and the problem (the role does not start).
    pub fn load(
        listener: &'static str,
        files: &ServerTlsConfig,
        metrics: Option<TlsMetrics>,
    ) -> anyhow::Result<Arc<ServerTls>> {
        let seen = stamp(&server_paths(files));
        let (config, summary) =
            build(files).map_err(|e| anyhow::anyhow!("[{listener}.tls] {e}"))?;
        if let Some(m) = &metrics {
            m.expiry.set(summary.not_after);
        }
        said_loaded(listener, "TLS on", &summary);
        Ok(Arc::new(ServerTls {
            listener,
            files: files.clone(),
            current: Mutex::new((tokio_rustls::TlsAcceptor::from(config), Watch::new(seen))),
            metrics,
        }))
    }

    /// The acceptor for a new connection: the files' latest good contents.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let (acceptor, watch) = &mut *cur;
        if let Look::Load(now) = watch.look(&server_paths(&self.files)) {
            match build(&self.files) {
                Ok((config, summary)) => {
                    *acceptor = tokio_rustls::TlsAcceptor::from(config);
                    watch.loaded(now);
                    if let Some(m) = &self.metrics {
                        m.expiry.set(summary.not_after);
                        m.reloads_ok.inc();
                    }
                    said_loaded(
                        self.listener,
                        "certificate files changed: serving the new certificate",
                        &summary,
                    );
                }
                Err(e) => {
                    if watch.failed(&e) {
                        if let Some(m) = &self.metrics {
                            m.reloads_failed.inc();
                        }
                        tracing::warn!(listener = self.listener, error = %e,
                            "certificate files changed but do not load: still serving the last good certificate; trying again every second");
                    }
                }
            }
        }
        acceptor.clone()
    }

    pub fn handshake_failed(&self, error: &str) {
        if let Some(m) = &self.metrics {
            m.handshake_failures.inc();
        }
        tracing::debug!(listener = self.listener, error, "TLS handshake failed");
    }
}

/// An HTTP client whose TLS files are read again when they change (an agent's renewed client
/// certificate is used from its next request on, no restart). Rebuilt by the same rule as a
/// listener's certificate: once the files have settled, and again every second while they do
/// not load; the last good client is used meanwhile.
pub struct Client {
    who: &'static str,
    tls: ClientTls,
    roots: Roots,
    make: Box<dyn Fn() -> reqwest::ClientBuilder + Send + Sync>,
    current: Mutex<(reqwest::Client, Watch)>,
    metrics: Option<TlsMetrics>,
}

impl Client {
    /// Builds the client from `make()` and `tls`; an error names the file.
    pub fn new(
        who: &'static str,
        tls: &ClientTls,
        roots: Roots,
        make: impl Fn() -> reqwest::ClientBuilder + Send + Sync + 'static,
        metrics: Option<TlsMetrics>,
    ) -> anyhow::Result<Arc<Client>> {
        let paths = client_paths(tls);
        let seen = stamp(&paths);
        let http = client(make(), tls, roots)?.build()?;
        let c = Client {
            who,
            tls: tls.clone(),
            roots,
            make: Box::new(make),
            current: Mutex::new((http, Watch::new(seen))),
            metrics,
        };
        c.said_certificate("client certificate in use");
        Ok(Arc::new(c))
    }

    /// The client for the next request.
    pub fn get(&self) -> reqwest::Client {
        let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let (http, watch) = &mut *cur;
        if let Look::Load(now) = watch.look(&client_paths(&self.tls)) {
            match client((self.make)(), &self.tls, self.roots).and_then(|b| Ok(b.build()?)) {
                Ok(new) => {
                    *http = new;
                    watch.loaded(now);
                    if let Some(m) = &self.metrics {
                        m.reloads_ok.inc();
                    }
                    self.said_certificate("TLS files changed: the new ones are in use");
                }
                Err(e) => {
                    let e = format!("{e:#}");
                    if watch.failed(&e) {
                        if let Some(m) = &self.metrics {
                            m.reloads_failed.inc();
                        }
                        tracing::warn!(client = self.who, error = %e,
                            "TLS files changed but do not load: still using the last good ones; trying again every second");
                    }
                }
            }
        }
        http.clone()
    }

    /// Sets the expiry gauge from the client certificate, and says it.
    fn said_certificate(&self, what: &str) {
        let Some(cert) = &self.tls.cert_file else {
            return;
        };
        let Ok(chain) = certs(cert, "cert_file") else {
            return;
        };
        let Some((not_before, not_after)) = validity(&chain[0]) else {
            return;
        };
        if let Some(m) = &self.metrics {
            m.expiry.set(not_after);
        }
        said_loaded(
            self.who,
            what,
            &CertSummary {
                not_after,
                not_before,
                chain_len: chain.len(),
                client_cas: None,
            },
        );
    }
}

fn client_paths(tls: &ClientTls) -> Vec<&PathBuf> {
    [
        tls.ca_file.as_ref(),
        tls.cert_file.as_ref(),
        tls.key_file.as_ref(),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// Whose roots a client trusts when a CA bundle is configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Roots {
    /// Only the bundle: the client talks to our own services, signed by our own CA.
    BundleOnly,
    /// The system roots and the bundle: the client also calls public APIs (DigitalOcean).
    SystemAndBundle,
}

/// Applies `tls` to a client: TLS 1.2 or newer, the CA bundle, the client certificate. Without a
/// bundle the system roots verify the server. Errors name the file.
pub fn client(
    builder: reqwest::ClientBuilder,
    tls: &ClientTls,
    roots: Roots,
) -> anyhow::Result<reqwest::ClientBuilder> {
    let mut b = builder.tls_version_min(reqwest::tls::Version::TLS_1_2);
    if let Some(ca) = &tls.ca_file {
        let pem = read(ca, "ca_file")?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| anyhow::anyhow!("ca_file {}: {e}", ca.display()))?;
        if certs.is_empty() {
            anyhow::bail!("ca_file {}: no PEM certificate in it", ca.display());
        }
        b = match roots {
            Roots::BundleOnly => b.tls_certs_only(certs),
            Roots::SystemAndBundle => b.tls_certs_merge(certs),
        };
    }
    if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
        let mut pem = read(cert, "cert_file")?;
        pem.push(b'\n');
        pem.extend(read(key, "key_file")?);
        let id = reqwest::Identity::from_pem(&pem).map_err(|e| {
            anyhow::anyhow!(
                "cert_file {} / key_file {}: {e}",
                cert.display(),
                key.display()
            )
        })?;
        b = b.identity(id);
    }
    Ok(b)
}

fn read(path: &PathBuf, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| anyhow::anyhow!("{what} {}: {e}", path.display()))
}

/// Why a request failed, in words, when TLS was the reason: the rustls error deep in the chain
/// turned into what to do about it. `None` when it was not TLS.
pub fn explain(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    use rustls::{AlertDescription, CertificateError, Error};
    let t = rustls_error(err)?;
    let said = |s: &str| Some(s.to_string());
    match t {
        Error::InvalidCertificate(CertificateError::UnknownIssuer) => said(
            "the server's certificate is not signed by a CA this client trusts (give the client \
             the CA that signed it: ca_file / --ca-file)",
        ),
        Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        ) => said(
            "the server's certificate has expired (renew it; the server picks up the new files \
             without a restart)",
        ),
        Error::InvalidCertificate(
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. },
        ) => said(
            "the server's certificate is not valid yet (its notBefore is in the future: check \
             both machines' clocks)",
        ),
        Error::InvalidCertificate(
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. },
        ) => said(
            "the server's certificate is not for TLS servers (its extended key usage lacks \
             serverAuth)",
        ),
        Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => said(
            "the server's certificate is not valid for the host in the URL (use a name or \
             address the certificate lists)",
        ),
        Error::AlertReceived(AlertDescription::CertificateRequired) => said(
            "the server requires a client certificate (mutual TLS) and none was presented \
             (cert_file and key_file / --cert-file and --key-file)",
        ),
        Error::AlertReceived(
            AlertDescription::UnknownCA
            | AlertDescription::BadCertificate
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::AccessDenied,
        ) => Some(format!(
            "the server refused this client's certificate ({t}): it must be signed by the \
             server's client_ca_file, be valid now and be a client certificate (extended key \
             usage clientAuth)"
        )),
        other => Some(format!("TLS: {other}")),
    }
}

/// The rustls error somewhere in `err`'s chain. It sits inside io::Errors, which do not list
/// their inner error as a source: descend into them explicitly.
pub fn rustls_error<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut cur = Some(err);
    while let Some(c) = cur {
        if let Some(t) = c.downcast_ref::<rustls::Error>() {
            return Some(t);
        }
        cur = match c.downcast_ref::<std::io::Error>() {
            Some(io) => io
                .get_ref()
                .map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => c.source(),
        };
    }
    None
}

/// Why a request to `url` failed when its error does not say. With TLS 1.3 the server judges
/// the client's certificate after the client considers the handshake done, so its refusal can
/// reach the client as a closed connection, not as the alert. This opens one connection with
/// the same settings, completes the handshake and reads: a refusal arrives as the alert, which
/// [`explain`] turns into words. Sends no request (and no token). `None` when nothing is wrong
/// at the TLS level, or it cannot tell.
pub async fn diagnose(url: &str, tls: &ClientTls, roots: Roots) -> Option<String> {
    use rustls_platform_verifier::BuilderVerifierExt;
    use tokio::io::AsyncReadExt;
    let u = reqwest::Url::parse(url).ok()?;
    if u.scheme() != "https" {
        return None;
    }
    let host = u.host_str()?.trim_start_matches('[').trim_end_matches(']');
    let port = u.port_or_known_default()?;
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .ok()?;
    let builder = match (&tls.ca_file, roots) {
        (Some(ca), Roots::BundleOnly) => builder.with_root_certificates(roots_of(ca).ok()?),
        (Some(ca), Roots::SystemAndBundle) => {
            let extra = certs(ca, "ca_file").ok()?;
            let verifier =
                rustls_platform_verifier::Verifier::new_with_extra_roots(extra, provider()).ok()?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier))
        }
        (None, _) => builder.with_platform_verifier().ok()?,
    };
    let config = match (&tls.cert_file, &tls.key_file) {
        (Some(c), Some(k)) => {
            let chain = certs(c, "cert_file").ok()?;
            let key = PrivateKeyDer::from_pem_file(k).ok()?;
            builder.with_client_auth_cert(chain, key).ok()?
        }
        _ => builder.with_no_client_auth(),
    };
    let name = rustls::pki_types::ServerName::try_from(host.to_string()).ok()?;
    let limit = Duration::from_secs(3);
    let tcp = tokio::time::timeout(limit, tokio::net::TcpStream::connect((host, port)))
        .await
        .ok()?
        .ok()?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let mut stream = match tokio::time::timeout(limit, connector.connect(name, tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return explain(&e),
        Err(_) => return None,
    };
    let mut byte = [0u8; 1];
    match tokio::time::timeout(Duration::from_millis(500), stream.read(&mut byte)).await {
        Ok(Err(e)) => explain(&e),
        _ => None,
    }
}

fn roots_of(ca: &Path) -> Result<RootCertStore, String> {
    roots(ca, "ca_file")
}

/// A request's error in one line: the TLS reason when there is one, else the error chain.
pub fn describe(err: &reqwest::Error) -> String {
    explain(err).unwrap_or_else(|| {
        let mut text = err.to_string();
        let mut cur = std::error::Error::source(err);
        while let Some(e) = cur {
            text.push_str(": ");
            text.push_str(&e.to_string());
            cur = e.source();
        }
        text
    })
}

// ---------------------------------------------------------------------------------------------
// The validity dates of an X.509 certificate, read from its DER: the only fields we need, so a
// few lines of DER walking instead of a parser crate.
// ---------------------------------------------------------------------------------------------

/// One DER element: (tag, contents, what follows).
fn der(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |l, &b| l << 8 | b as usize);
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// (notBefore, notAfter) in Unix seconds.
pub fn validity(cert: &[u8]) -> Option<(i64, i64)> {
    const SEQUENCE: u8 = 0x30;
    let (SEQUENCE, certificate, _) = der(cert)? else {
        return None;
    };
    let (SEQUENCE, tbs, _) = der(certificate)? else {
        return None;
    };
    // version [0] EXPLICIT (optional), serialNumber, signature, issuer, validity.
    let (tag, _, mut rest) = der(tbs)?;
    if tag == 0xa0 {
        rest = der(rest)?.2; // the serial number
    }
    let rest = der(rest)?.2; // signature algorithm
    let rest = der(rest)?.2; // issuer
    let (SEQUENCE, validity, _) = der(rest)? else {
        return None;
    };
    let (t1, nb, rest) = der(validity)?;
    let (t2, na, _) = der(rest)?;
    Some((asn1_time(t1, nb)?, asn1_time(t2, na)?))
}

/// UTCTime (YYMMDDHHMMSSZ, years 1950-2049) or GeneralizedTime (YYYYMMDDHHMMSSZ).
fn asn1_time(tag: u8, bytes: &[u8]) -> Option<i64> {
    let digits = bytes.strip_suffix(b"Z")?;
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // ASCII digits only from here, so every slice below is on a character boundary.
    let text = std::str::from_utf8(digits).ok()?;
    let num = |s: &str| s.parse::<i32>().ok();
    let (year, rest) = match tag {
        0x17 if text.len() == 12 => {
            let yy = num(&text[..2])?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, &text[2..])
        }
        0x18 if text.len() == 14 => (num(&text[..4])?, &text[4..]),
        _ => return None,
    };
    let month = time::Month::try_from(num(&rest[..2])? as u8).ok()?;
    let date = time::Date::from_calendar_date(year, month, num(&rest[2..4])? as u8).ok()?;
    let t = time::Time::from_hms(
        num(&rest[4..6])? as u8,
        num(&rest[6..8])? as u8,
        num(&rest[8..10])? as u8,
    )
    .ok()?;
    Some(
        time::PrimitiveDateTime::new(date, t)
            .assume_utc()
            .unix_timestamp(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asn1_times_read_both_forms() {
        assert_eq!(asn1_time(0x17, b"700101000000Z"), Some(0));
        assert_eq!(asn1_time(0x17, b"491231235959Z"), Some(2_524_607_999));
        assert_eq!(asn1_time(0x18, b"20500101000000Z"), Some(2_524_608_000));
        assert_eq!(asn1_time(0x17, b"700101000000"), None);
        assert_eq!(asn1_time(0x18, b"2050010100000Z"), None);
        assert_eq!(asn1_time(0x17, b"701301000000Z"), None);
        // Not digits: refused, never a slice through a multi-byte character.
        assert_eq!(asn1_time(0x17, "€€€€Z".as_bytes()), None);
        assert_eq!(asn1_time(0x18, "2050€0100000Z".as_bytes()), None);
        assert_eq!(asn1_time(0x17, b"7001010000+0Z"), None);
    }

    #[test]
    fn der_lengths_are_bounded_by_the_input() {
        assert_eq!(der(&[0x30, 0x03, 1, 2]), None);
        assert_eq!(
            der(&[0x30, 0x82, 0x00, 0x01, 7]),
            Some((0x30, &[7u8][..], &[][..]))
        );
        assert_eq!(der(&[0x30, 0x85, 0, 0, 0, 0, 1]), None);
        assert_eq!(validity(&[0x30, 0x00]), None);
        assert_eq!(validity(b"not der"), None);
    }

    #[test]
    fn plain_http_is_for_loopback_unless_said_explicitly() {
        let lo: SocketAddr = "127.0.0.1:9465".parse().unwrap();
        let lo6: SocketAddr = "[::1]:9465".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:9465".parse().unwrap();
        let check = |addr, allow| check_listener("responder", addr, None, allow, "its tokens");
        assert!(check(lo, false).is_ok());
        assert!(check(lo6, false).is_ok());
        let e = check(any, false).unwrap_err();
        assert!(
            e.contains("[responder.tls]") && e.contains("allow_plain_http"),
            "{e}"
        );
        assert!(e.contains("its tokens would cross"), "{e}");
        assert!(check(any, true).is_ok());
    }

    #[test]
    fn cleartext_is_plain_http_to_another_machine() {
        assert!(cleartext_off_machine("http://failover-1.example.com:9465"));
        assert!(cleartext_off_machine("http://10.0.0.5:9465"));
        assert!(!cleartext_off_machine("http://127.0.0.1:9465"));
        assert!(!cleartext_off_machine("http://127.3.2.1:9465"));
        assert!(!cleartext_off_machine("http://[::1]:9465"));
        assert!(!cleartext_off_machine("http://localhost:9465"));
        assert!(!cleartext_off_machine(
            "https://failover-1.example.com:9465"
        ));
    }
}
