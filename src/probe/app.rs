//! The application probe: one HTTP request to a region's application as its users reach it (the
//! regional load balancer's address or a droplet's, with the user-facing `Host` and TLS server
//! name), judged by its status and, optionally, its body. A failed check is data: a bounded
//! `result` label, never an error.

use std::time::Duration;

use crate::config::AppCheckConfig;

/// What one application check saw, the `result` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AppResult {
    Success,
    /// No complete answer within the check's timeout.
    Timeout,
    /// The connection could not be made or broke.
    ConnectError,
    /// The TLS handshake failed (certificate, name, protocol).
    TlsError,
    /// An answer with a status the check does not expect.
    BadStatus,
    /// The expected status, without the expected text in the body.
    BodyMismatch,
}

impl AppResult {
    pub const ALL: [AppResult; 6] = [
        AppResult::Success,
        AppResult::Timeout,
        AppResult::ConnectError,
        AppResult::TlsError,
        AppResult::BadStatus,
        AppResult::BodyMismatch,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AppResult::Success => "success",
            AppResult::Timeout => "timeout",
            AppResult::ConnectError => "connect_error",
            AppResult::TlsError => "tls_error",
            AppResult::BadStatus => "bad_status",
            AppResult::BodyMismatch => "body_mismatch",
        }
    }
}

/// How much of a body is read looking for `body_contains`.
pub const BODY_LIMIT: usize = 256 * 1024;

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

/// One configured check, with its HTTP client built once.
#[derive(Debug, Clone)]
pub struct AppCheck {
    pub region: String,
    pub config: AppCheckConfig,
    client: reqwest::Client,
}

impl AppCheck {
    pub fn new(region: &str, config: &AppCheckConfig) -> anyhow::Result<AppCheck> {
        let mut b = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            // A new connection every time: connecting and the TLS handshake are what a new user
            // goes through, and a kept-alive connection would stop testing them.
            .pool_max_idle_per_host(0)
            .user_agent(concat!(
                "dynamo-failover/",
                env!("CARGO_PKG_VERSION"),
                " (app check)"
            ));
        if let (Some(addr), Ok(url)) = (config.address, reqwest::Url::parse(config.url.as_str())) {
            if let Some(host) = url.host_str() {
                // Connect to the configured address; Host and TLS server name stay the URL's.
                b = b.resolve(host, addr);
            }
        }
        Ok(AppCheck {
            region: region.to_string(),
            config: config.clone(),
            client: b.build()?,
        })
    }

    /// Runs the check once; answers the result and, for people, what was seen.
    pub async fn probe(&self) -> (AppResult, String) {
        let c = &self.config;
        let resp = match self.client.get(c.url.as_str()).send().await {
            Ok(r) => r,
            Err(e) => return (classify(&e), short(&e)),
        };
        let status = resp.status().as_u16();
        if !c.expect_status.contains(&status) {
            return (AppResult::BadStatus, format!("status {status}"));
        }
        let Some(want) = &c.body_contains else {
            return (AppResult::Success, format!("status {status}"));
        };
        // Read at most BODY_LIMIT bytes, looking for the text as they come.
        let mut resp = resp;
        let mut seen: Vec<u8> = Vec::new();
        let mut read = 0usize;
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    let take = chunk.len().min(BODY_LIMIT - read);
                    read += take;
                    seen.extend_from_slice(&chunk[..take]);
                    if contains(&seen, want.as_bytes()) {
                        return (AppResult::Success, format!("status {status}"));
                    }
                    // Keep only a tail as long as the text, for a match across chunks.
                    let keep = want.len().saturating_sub(1);
                    if seen.len() > keep {
                        seen.drain(..seen.len() - keep);
                    }
                    if read >= BODY_LIMIT {
                        return (
                            AppResult::BodyMismatch,
                            format!("status {status}, no `{want}` in the first {BODY_LIMIT} bytes"),
                        );
                    }
                }
                Ok(None) => {
                    return (
                        AppResult::BodyMismatch,
                        format!("status {status}, the body lacks `{want}`"),
                    )
                }
                Err(e) => return (classify(&e), short(&e)),
            }
        }
    }

    /// The check's timeout plus a little: the scheduler's cut-off.
    pub fn cutoff(&self) -> Duration {
        self.config.timeout + Duration::from_millis(100)
    }
}

fn classify(e: &reqwest::Error) -> AppResult {
    if e.is_timeout() {
        return AppResult::Timeout;
    }
    if crate::tls::rustls_error(e).is_some() {
        return AppResult::TlsError;
    }
    AppResult::ConnectError
}

/// reqwest's error text without the URL (which is in the config).
fn short(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    if let Some(u) = e.url() {
        s = s.replace(&format!(" for url ({u})"), "");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that answers plain HTTP to anything, TLS handshakes included.
    async fn plain_http() -> u16 {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while let Ok((mut s, _)) = l.accept().await {
                let mut b = [0u8; 1024];
                let _ = s.read(&mut b).await;
                let _ = s
                    .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                    .await;
            }
        });
        port
    }

    /// A server answering 200 with `body`.
    async fn serving(body: Vec<u8>) -> u16 {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while let Ok((mut s, _)) = l.accept().await {
                let mut b = [0u8; 1024];
                let _ = s.read(&mut b).await;
                let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len());
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s.write_all(&body).await;
            }
        });
        port
    }

    #[tokio::test]
    async fn the_body_is_searched_across_chunks_and_only_so_far() {
        let check = |port: u16| {
            let text = format!(
                "name = \"c\"\nurl = \"http://127.0.0.1:{port}/\"\nbody_contains = \"wp-submit\"\ntimeout = \"2s\"\n"
            );
            AppCheck::new("r", &toml::from_str(&text).unwrap()).unwrap()
        };
        let mut near = vec![b'x'; 200 * 1024];
        near.extend_from_slice(b"<input id=\"wp-submit\">");
        let (r, _) = check(serving(near).await).probe().await;
        assert_eq!(r, AppResult::Success);
        let mut far = vec![b'x'; BODY_LIMIT + 10];
        far.extend_from_slice(b"wp-submit");
        let (r, seen) = check(serving(far).await).probe().await;
        assert_eq!(r, AppResult::BodyMismatch, "{seen}");
        assert!(seen.contains("first 262144 bytes"), "{seen}");
    }

    fn check(url: &str) -> AppCheck {
        let text = format!("name = \"c\"\nurl = \"{url}\"\ntimeout = \"2s\"\n");
        AppCheck::new("r", &toml::from_str(&text).unwrap()).unwrap()
    }

    #[tokio::test]
    async fn a_tls_handshake_with_a_plain_http_server_is_a_tls_error_and_a_refusal_is_not() {
        let port = plain_http().await;
        let (r, _) = check(&format!("https://127.0.0.1:{port}/")).probe().await;
        assert_eq!(r, AppResult::TlsError);
        let (r, seen) = check(&format!("http://127.0.0.1:{port}/")).probe().await;
        assert_eq!((r, seen.as_str()), (AppResult::BadStatus, "status 400"));
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let (r, _) = check(&format!("https://127.0.0.1:{closed}/")).probe().await;
        assert_eq!(r, AppResult::ConnectError);
    }
}
