//! The responder's listener against clients that hold it: a wrong token with a large declared
//! body, headers that never end, an idle keep-alive connection, more connections than the cap.
//! Raw TCP, so the test controls every byte; the real binary.

use std::time::{Duration, Instant};

use testkit::stack::*;
use testkit::{sample, wait_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn connect(s: &Stack) -> TcpStream {
    TcpStream::connect(("127.0.0.1", s.port)).await.unwrap()
}

/// Reads until the peer closes or `limit` passes; answers what arrived and whether it closed.
async fn read_until_closed(c: &mut TcpStream, limit: Duration) -> (String, bool) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, c.read(&mut buf)).await {
            Err(_) => return (String::from_utf8_lossy(&got).into(), false),
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&got).into(), true),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn a_wrong_token_with_a_declared_megabyte_body_is_refused_at_once_unread() {
    let s = Stack::start(Knobs::default()).await;
    for (name, auth) in [
        (
            "wrong token",
            "Authorization: Bearer whk-not-the-token-at-all\r\n",
        ),
        ("no token", ""),
    ] {
        let mut c = connect(&s).await;
        let started = Instant::now();
        // Headers only: the 1 MiB body is declared and never sent.
        c.write_all(
            format!(
                "POST /alerts HTTP/1.1\r\nHost: responder\r\n{auth}Content-Type: application/json\r\nContent-Length: 1048576\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let (answer, closed) = read_until_closed(&mut c, Duration::from_secs(5)).await;
        let took = started.elapsed();
        println!("{name}: 401 after {} ms", took.as_millis());
        assert!(answer.starts_with("HTTP/1.1 401"), "{name}: {answer}");
        assert!(
            answer.to_ascii_lowercase().contains("connection: close"),
            "{name}: {answer}"
        );
        assert!(closed, "{name}: the connection stays open");
        assert!(took < Duration::from_secs(2), "{name}: took {took:?}");
    }
    let m = s.metrics().await;
    assert_eq!(
        sample(
            &m,
            "failover_webhook_requests_total",
            &[("result", "unauthorized")]
        ),
        Some(2.0)
    );
}

#[tokio::test]
async fn unfinished_headers_and_idle_keep_alive_connections_are_closed_after_the_header_timeout() {
    let s = Stack::start(Knobs {
        header_timeout: "1s",
        ..Knobs::default()
    })
    .await;
    // Headers that never end.
    let mut c = connect(&s).await;
    let started = Instant::now();
    c.write_all(b"POST /alerts HTTP/1.1\r\nHost: responder\r\nX-Slow: ")
        .await
        .unwrap();
    let (_, closed) = read_until_closed(&mut c, Duration::from_secs(5)).await;
    let took = started.elapsed();
    println!("unfinished headers: closed after {} ms", took.as_millis());
    assert!(
        closed,
        "a client that never finished its headers is still connected"
    );
    assert!(
        took >= Duration::from_millis(900),
        "closed too early: {took:?}"
    );

    // A keep-alive connection that served a request, then sits idle.
    let mut c = connect(&s).await;
    c.write_all(b"GET /healthz HTTP/1.1\r\nHost: responder\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = c.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let idle = Instant::now();
    let (_, closed) = read_until_closed(&mut c, Duration::from_secs(5)).await;
    println!(
        "idle keep-alive: closed after {} ms",
        idle.elapsed().as_millis()
    );
    assert!(closed, "an idle keep-alive connection is still open");
}

#[tokio::test]
async fn connections_beyond_the_cap_are_closed_and_the_open_ones_still_work() {
    let s = Stack::start(Knobs {
        max_connections: 4,
        ..Knobs::default()
    })
    .await;
    // Take slots until a connection is closed at once: the cap is reached. (The stack's own
    // pooled client may hold a slot too.)
    let mut held = Vec::new();
    loop {
        let mut c = connect(&s).await;
        let (_, closed) = read_until_closed(&mut c, Duration::from_secs(1)).await;
        if closed {
            break;
        }
        held.push(c);
        assert!(
            held.len() <= 4,
            "more connections than the cap were kept open"
        );
    }
    assert!(!held.is_empty());
    // A held connection still serves.
    held[0]
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: responder\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = held[0].read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // One is let go: a new client gets in again.
    held.pop();

    wait_until(Duration::from_secs(5), "a free slot", || async {
        let mut c = connect(&s).await;
        let sent = c
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: responder\r\nConnection: close\r\n\r\n")
            .await;
        let got = read_until_closed(&mut c, Duration::from_secs(2)).await;
        sent.is_ok() && got.0.starts_with("HTTP/1.1 200")
    })
    .await;
    // Scraped over a held connection: the refusals were counted.
    held[0]
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: responder\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let (m, _) = read_until_closed(&mut held[0], Duration::from_secs(5)).await;
    let refused = m
        .lines()
        .find(|l| l.starts_with("failover_http_connections_refused_total"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap();
    assert!(refused >= 1.0, "{refused}");
}
