//! The listener loop every role uses: HTTP/1.1 on hyper with the limits a service on an untrusted
//! network needs, so a client without a token cannot exhaust it.
//!
//! - **Header read timeout:** a connection has `header_timeout` to send a request's headers once
//!   it starts waiting for one. hyper starts that timer whenever the connection waits for the next
//!   request, so the same bound closes a keep-alive connection that sits idle.
//! - **Connection cap:** at most `max_connections` open at once; beyond that a new connection is
//!   closed as soon as it is accepted (counted), and the ones already open carry on.
//! - Bodies are bounded by the handlers (size, and the time to arrive), and requests that need a
//!   token are refused before any body byte is read ([`super::responder`]).
//!
//! - **TLS** when the role has a certificate ([`crate::tls::ServerTls`]): the handshake runs in
//!   the connection's own task, after its slot is taken, and must finish within `header_timeout`.
//!
//! On shutdown the listener stops accepting, open connections finish the request in progress
//! and close, and the loop returns once they have (or after `drain`).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tower::ServiceExt;

use crate::shutdown::Shutdown;
use crate::tls::ServerTls;

/// What one listener allows.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Time to send a request's headers, counted from when the connection waits for one (so it
    /// also bounds an idle keep-alive connection).
    pub header_timeout: Duration,
    /// Connections open at once.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            max_connections: 256,
        }
    }
}

/// Counters a listener keeps, exported by the role that owns it.
#[derive(Clone)]
pub struct ConnMetrics {
    pub open: prometheus::IntGauge,
    pub refused: prometheus::IntCounter,
}

/// How long a shutdown waits for open connections to finish their request.
const DRAIN: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` (over TLS with `tls`) until `shutdown` fires.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    metrics: Option<ConnMetrics>,
    tls: Option<Arc<ServerTls>>,
    mut shutdown: Shutdown,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut conns = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.wait() => break,
        };
        while conns.try_join_next().is_some() {}
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                // Out of file descriptors and the like: keep serving the connections we have.
                tracing::warn!(error = %e, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            if let Some(m) = &metrics {
                m.refused.inc();
            }
            tracing::debug!(
                max = limits.max_connections,
                "connection refused: too many open"
            );
            drop(stream);
            continue;
        };
        // Answers are small and latency matters more than packet count: no Nagle delay.
        let _ = stream.set_nodelay(true);
        let svc = TowerToHyperService::new(
            app.clone()
                .map_request(|r: hyper::Request<Incoming>| r.map(axum::body::Body::new)),
        );
        let metrics = metrics.clone();
        let stop = shutdown.clone();
        let tls = tls.clone();
        conns.spawn(async move {
            let _slot = slot;
            if let Some(m) = &metrics {
                m.open.inc();
            }
            match tls {
                None => serve_connection(TokioIo::new(stream), svc, limits, stop).await,
                Some(tls) => {
                    let acceptor = tls.acceptor();
                    match tokio::time::timeout(limits.header_timeout, acceptor.accept(stream)).await
                    {
                        Ok(Ok(s)) => serve_connection(TokioIo::new(s), svc, limits, stop).await,
                        Ok(Err(e)) => tls.handshake_failed(&e.to_string()),
                        Err(_) => tls.handshake_failed("no handshake within header_timeout"),
                    }
                }
            }
            if let Some(m) = &metrics {
                m.open.dec();
            }
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(DRAIN, async { while conns.join_next().await.is_some() {} }).await;
    Ok(())
}

/// One connection's requests, until it closes or a shutdown lets its request in progress end.
async fn serve_connection<I, S>(io: I, svc: S, limits: Limits, mut stop: Shutdown)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<Incoming> + Send,
    S::ResBody: 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let conn = builder.serve_connection(io, svc);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = stop.wait() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}
