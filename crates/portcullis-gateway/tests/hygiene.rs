//! Hostile HTTP/1.1 on raw sockets: requests a client library would refuse to send or
//! would repair. Each must be refused with its status, the connection closed, and nothing
//! of it may reach the upstream (no smuggling, no desync).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use portcullis_testkit::gateway::{GatewayCmd, GatewayProcess};
use portcullis_testkit::http::{Client, raw_exchange};
use portcullis_testkit::upstream::Upstream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn gateway(up: &Upstream, env: &[(&str, &str)]) -> GatewayProcess {
    let mut cmd = GatewayCmd::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["serve", "--upstream", &up.url()])
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .env("PORTCULLIS_RATE_LIMIT_ENABLED", "false");
    for (k, v) in env {
        cmd = cmd.env(k, v);
    }
    cmd.start()
}

/// (name, raw request, expected status)
const CASES: &[(&str, &str, u16)] = &[
    (
        "Content-Length and Transfer-Encoding",
        "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        400,
    ),
    (
        "Transfer-Encoding and Content-Length, the other order",
        "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 30\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        400,
    ),
    (
        "two different Content-Lengths",
        "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 40\r\n\r\nabcd",
        400,
    ),
    (
        "two equal Content-Lengths",
        "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\nabcd",
        400,
    ),
    (
        "a Content-Length list",
        "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 4, 4\r\n\r\nabcd",
        400,
    ),
    (
        "a signed Content-Length",
        "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: +4\r\n\r\nabcd",
        400,
    ),
    (
        "a Content-Length with spaces inside",
        "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 4 4\r\n\r\nabcd",
        400,
    ),
    (
        "an unknown transfer coding",
        "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        501,
    ),
    (
        "a repeated chunked coding",
        "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    (
        "Transfer-Encoding in two fields",
        "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    (
        "a coding that is not chunked last",
        "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n\r\n",
        501,
    ),
    (
        "an obfuscated chunked",
        "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
        501,
    ),
    (
        "Transfer-Encoding on HTTP/1.0",
        "POST /a HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    (
        "whitespace before the colon",
        "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    (
        "obsolete line folding",
        "GET /a HTTP/1.1\r\nHost: x\r\nX-A: one\r\n two\r\n\r\n",
        400,
    ),
    (
        "a bare CR in a field",
        "GET /a HTTP/1.1\r\nHost: x\r\nX-A: one\rtwo\r\n\r\n",
        400,
    ),
    (
        "a bare LF ending a field",
        "GET /a HTTP/1.1\r\nHost: x\nX-A: b\r\n\r\n",
        400,
    ),
    (
        "a NUL in a field",
        "GET /a HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n",
        400,
    ),
    (
        "a NUL in the target",
        "GET /a\0b HTTP/1.1\r\nHost: x\r\n\r\n",
        400,
    ),
    (
        "a space in the target",
        "GET /a b HTTP/1.1\r\nHost: x\r\n\r\n",
        400,
    ),
    (
        "an invalid field name",
        "GET /a HTTP/1.1\r\nHost: x\r\nX(A): b\r\n\r\n",
        400,
    ),
    ("no Host", "GET /a HTTP/1.1\r\n\r\n", 400),
    (
        "two Hosts",
        "GET /a HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
        400,
    ),
    (
        "a Host that is not a host",
        "GET /a HTTP/1.1\r\nHost: x/y@z\r\n\r\n",
        400,
    ),
    (
        "an absolute target naming another host",
        "GET http://other/a HTTP/1.1\r\nHost: x\r\n\r\n",
        400,
    ),
    (
        "a chunk size that overflows",
        "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff1\r\na\r\n0\r\n\r\n",
        400,
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_are_refused_closed_and_never_forwarded() {
    let up = Upstream::start();
    let gw = gateway(&up, &[]);
    let mut failures = Vec::new();
    for (name, raw, want) in CASES {
        let r = raw_exchange(gw.listen, raw.as_bytes(), Duration::from_secs(2)).await;
        let got = r.status();
        if got != Some(*want) || !r.closed {
            failures.push(format!(
                "{name}: got {got:?}, closed {}, want {want} and closed:\n{}",
                r.closed,
                r.text().lines().take(3).collect::<Vec<_>>().join(" | ")
            ));
        }
    }
    let seen = up.requests().await;
    assert!(
        failures.is_empty(),
        "{} of {} cases:\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n")
    );
    assert!(seen.is_empty(), "reached the upstream: {seen:?}");
    // The gateway still serves after all that.
    let r = Client::new().get(&gw.url("/after")).await.unwrap();
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn well_formed_edge_cases_pass() {
    let up = Upstream::start();
    let gw = gateway(&up, &[]);
    for (name, raw) in [
        (
            "chunked with an extension and a trailer",
            "POST /chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n4;ext=1\r\nabcd\r\n0\r\nX-T: 1\r\n\r\n",
        ),
        (
            "Host with a port",
            "GET /port HTTP/1.1\r\nHost: example.com:8080\r\n\r\n",
        ),
        (
            "Host as an IPv6 literal",
            "GET /v6 HTTP/1.1\r\nHost: [::1]:80\r\n\r\n",
        ),
        (
            "an absolute target naming the Host",
            "GET http://x/abs HTTP/1.1\r\nHost: x\r\n\r\n",
        ),
        ("HTTP/1.0 without Host", "GET /ten HTTP/1.0\r\n\r\n"),
    ] {
        let r = raw_exchange(gw.listen, raw.as_bytes(), Duration::from_millis(500)).await;
        assert_eq!(r.status(), Some(200), "{name}: {}", r.text());
    }
    let paths: Vec<String> = up
        .requests()
        .await
        .iter()
        .map(|r| r["path"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(paths, ["/chunked", "/port", "/v6", "/abs", "/ten"]);
}

/// Connections that send their request head a byte at a time do not keep a normal
/// client from being served, and are dropped after `limits.header_timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_connections_are_dropped_and_others_served() {
    let up = Upstream::start();
    let gw = gateway(&up, &[("PORTCULLIS_LIMITS_HEADER_TIMEOUT", "1s")]);
    let addr: SocketAddr = gw.listen;
    let slow: Vec<_> = (0..200)
        .map(|_| {
            tokio::spawn(async move {
                let Ok(mut s) = TcpStream::connect(addr).await else {
                    return None;
                };
                let start = Instant::now();
                let head = b"GET /slow HTTP/1.1\r\nHost: x\r\nX-Drip: ";
                for b in head.iter().chain(std::iter::repeat(&b'a')) {
                    if s.write_all(&[*b]).await.is_err() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    if start.elapsed() > Duration::from_secs(5) {
                        return None;
                    }
                }
                // Written into a closed connection: read what the gateway said.
                let mut buf = Vec::new();
                let _ = tokio::time::timeout(Duration::from_secs(1), s.read_to_end(&mut buf)).await;
                Some(start.elapsed())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = Instant::now();
    let r = Client::new().get(&gw.url("/normal")).await.unwrap();
    assert_eq!(r.status, 200, "a normal client is served during the drip");
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "served in {:?}",
        t.elapsed()
    );
    for s in slow {
        let dropped = s.await.unwrap().expect("the drip was cut off within 5 s");
        assert!(
            dropped < Duration::from_secs(3),
            "dropped after {dropped:?}"
        );
    }
    let paths: Vec<String> = up
        .requests()
        .await
        .iter()
        .map(|r| r["path"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(paths, ["/normal"]);
}

/// A body dripped slower than `limits.body_min_rate` gets 408 and the connection closed,
/// long before `limits.request_timeout`; the same body sent at once passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_post_bodies_are_408_and_closed() {
    let up = Upstream::start();
    let gw = gateway(
        &up,
        &[
            ("PORTCULLIS_LIMITS_HEADER_TIMEOUT", "500ms"),
            ("PORTCULLIS_LIMITS_BODY_MIN_RATE", "1KiB"),
            ("PORTCULLIS_LIMITS_REQUEST_TIMEOUT", "60s"),
        ],
    );
    let mut s = TcpStream::connect(gw.listen).await.unwrap();
    let start = Instant::now();
    s.write_all(b"POST /drip HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
        .await
        .unwrap();
    // 10 bytes every 100 ms: 100 B/s, a tenth of the minimum.
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        if start.elapsed() > Duration::from_secs(10) {
            break false;
        }
        let _ = s.write_all(b"0123456789").await;
        match tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => reply.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    };
    let text = String::from_utf8_lossy(&reply);
    assert!(closed, "the connection is closed: {text}");
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("request-timeout"), "{text}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "cut off by the rate, not the request timeout: {:?}",
        start.elapsed()
    );

    // The same size at once is served.
    let mut raw = b"POST /fast HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n".to_vec();
    raw.extend(std::iter::repeat_n(b'a', 100_000));
    let r = raw_exchange(gw.listen, &raw, Duration::from_millis(500)).await;
    assert_eq!(r.status(), Some(200), "{}", r.text());
}

/// At `limits.max_connections` open connections, a new one is not served until one of
/// them closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_maximum_wait_for_a_free_slot() {
    let up = Upstream::start();
    let gw = gateway(&up, &[("PORTCULLIS_LIMITS_MAX_CONNECTIONS", "2")]);
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(gw.listen).await.unwrap();
        s.write_all(b"GET /held HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        held.push(s);
    }
    // The kernel accepts the third connection, the gateway does not serve it yet.
    let third = raw_exchange(
        gw.listen,
        b"GET /third HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        Duration::from_millis(700),
    )
    .await;
    assert_eq!(third.status(), None, "{}", third.text());
    drop(held.pop());
    let fourth = raw_exchange(
        gw.listen,
        b"GET /fourth HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(fourth.status(), Some(200), "{}", fourth.text());
}
