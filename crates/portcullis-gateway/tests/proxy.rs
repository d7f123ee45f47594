//! End to end: the gateway binary in front of the recording upstream process.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use portcullis_testkit::gateway::{GatewayCmd, GatewayProcess};
use portcullis_testkit::http::{Client, raw_exchange};
use portcullis_testkit::upstream::Upstream;
use serde_json::Value;

fn gateway(upstream: &str, env: &[(&str, &str)]) -> GatewayProcess {
    let mut cmd = GatewayCmd::new(env!("CARGO_BIN_EXE_portcullis")).args([
        "serve",
        "--upstream",
        upstream,
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
    ]);
    // Proxy behaviour, not quotas: these tests send more than the anonymous burst from
    // one address (rate limits are tested in ratelimit.rs).
    if !env
        .iter()
        .any(|(k, _)| *k == "PORTCULLIS_RATE_LIMIT_ENABLED")
    {
        cmd = cmd.env("PORTCULLIS_RATE_LIMIT_ENABLED", "false");
    }
    for (k, v) in env {
        cmd = cmd.env(k, v);
    }
    cmd.start()
}

fn first<'a>(rec: &'a Value, header: &str) -> Option<&'a str> {
    rec["headers"][header][0].as_str()
}

fn assert_problem(reply: &portcullis_testkit::http::Reply, status: u16, slug: &str) {
    assert_eq!(
        reply.status.as_u16(),
        status,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(
        reply.header("content-type"),
        Some("application/problem+json")
    );
    let body = reply.json();
    assert_eq!(body["status"], status);
    assert!(body["type"].as_str().unwrap().ends_with(slug), "{body}");
    let id = reply.header("x-request-id").expect("x-request-id");
    assert_eq!(body["request_id"], id);
    assert!(body["title"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_with_request_id_and_forwarding_headers() {
    let up = Upstream::start();
    let gw = gateway(&up.url(), &[]);
    let client = Client::new();
    let req = Request::get(gw.url("/hello/world?q=1"))
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-forwarded-host", "evil.example")
        .header("forwarded", "for=6.6.6.6")
        .header("x-real-ip", "6.6.6.6")
        .header("x-request-id", "client-chosen-id")
        .header("x-auth-subject", "admin")
        .header("x_auth_roles", "admin")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "1")
        .header("keep-alive", "timeout=5")
        .header("proxy-authorization", "Basic eDp5")
        .header("upgrade", "websocket")
        .header("x-upstream-set", "connection: x-resp-hop")
        .header("x-upstream-set", "x-resp-hop: 1")
        .header("x-upstream-set", "keep-alive: timeout=9")
        .header("x-upstream-set", "x-resp-kept: 1")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let reply = client.send(req).await.unwrap();
    assert_eq!(reply.status, 200);
    let id = reply.header("x-request-id").unwrap().to_owned();
    assert_ne!(id, "client-chosen-id", "an untrusted peer's id is replaced");
    assert!(
        reply.header("x-resp-hop").is_none(),
        "response header named in Connection leaked"
    );
    assert!(reply.header("keep-alive").is_none());
    assert_eq!(reply.header("x-resp-kept"), Some("1"));

    let recs = up.requests().await;
    assert_eq!(recs.len(), 1);
    let rec = &recs[0];
    assert_eq!(rec["path"], "/hello/world");
    assert_eq!(rec["query"], "q=1");
    assert_eq!(first(rec, "x-request-id"), Some(id.as_str()));
    assert_eq!(
        first(rec, "x-forwarded-for"),
        Some("127.0.0.1"),
        "spoofed XFF must be replaced"
    );
    assert_eq!(
        rec["headers"]["x-forwarded-for"].as_array().unwrap().len(),
        1
    );
    assert_eq!(first(rec, "x-forwarded-proto"), Some("http"));
    assert_eq!(
        first(rec, "x-forwarded-host"),
        Some(gw.listen.to_string().as_str())
    );
    assert_eq!(first(rec, "host"), Some(up.addr.to_string().as_str()));
    for gone in [
        "forwarded",
        "x-real-ip",
        "x-auth-subject",
        "x_auth_roles",
        "x-hop",
        "keep-alive",
        "proxy-authorization",
        "upgrade",
    ] {
        assert!(
            rec["headers"].get(gone).is_none(),
            "{gone} reached the upstream: {rec}"
        );
    }

    // The access log line for it.
    let line = gw
        .wait_for_line(Duration::from_secs(5), |v| v["request_id"] == id.as_str())
        .expect("access log line");
    for field in [
        "ts",
        "level",
        "method",
        "path",
        "status",
        "duration_ms",
        "client_ip",
    ] {
        assert!(
            line.get(field).is_some(),
            "access log lacks {field}: {line}"
        );
    }
    assert_eq!(line["path"], "/hello/world", "path excludes the query");
    assert_eq!(line["status"], 200);
    assert!(line["ts"].as_str().unwrap().ends_with('Z'));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_proxy_headers_are_believed_and_appended() {
    let up = Upstream::start();
    let gw = gateway(&up.url(), &[("PORTCULLIS_TRUSTED_PROXIES", "127.0.0.0/8")]);
    let req = Request::get(gw.url("/x"))
        .header("x-forwarded-for", "203.0.113.7")
        .header("x-forwarded-proto", "https")
        .header("x-request-id", "edge-id.42")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let reply = Client::new().send(req).await.unwrap();
    assert_eq!(reply.header("x-request-id"), Some("edge-id.42"));
    let rec = &up.requests().await[0];
    assert_eq!(
        first(rec, "x-forwarded-for"),
        Some("203.0.113.7, 127.0.0.1")
    );
    assert_eq!(first(rec, "x-forwarded-proto"), Some("https"));
    let line = gw
        .wait_for_line(Duration::from_secs(5), |v| v["request_id"] == "edge-id.42")
        .unwrap();
    assert_eq!(line["client_ip"], "203.0.113.7");

    // A trusted proxy's invalid id is replaced.
    let req = Request::get(gw.url("/x"))
        .header("x-request-id", "bad id with spaces")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let reply = Client::new().send(req).await.unwrap();
    assert_ne!(reply.header("x-request-id"), Some("bad id with spaces"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_down_is_502_and_slow_is_504() {
    let dead = portcullis_testkit::ports::free_addr();
    let gw = gateway(&format!("http://{dead}"), &[]);
    let reply = Client::new().get(&gw.url("/x")).await.unwrap();
    assert_problem(&reply, 502, "upstream-unavailable");
    assert!(
        !String::from_utf8_lossy(&reply.body).contains(&dead.port().to_string()),
        "502 leaks the upstream address"
    );

    let up = Upstream::start();
    let gw = gateway(&up.url(), &[("PORTCULLIS_LIMITS_REQUEST_TIMEOUT", "300ms")]);
    let start = Instant::now();
    let req = Request::get(gw.url("/slow"))
        .header("x-upstream-delay", "3s")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let reply = Client::new().send(req).await.unwrap();
    assert_problem(&reply, 504, "upstream-timeout");
    assert!(start.elapsed() < Duration::from_secs(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_client_body_is_408_and_closed() {
    let up = Upstream::start();
    let gw = gateway(&up.url(), &[("PORTCULLIS_LIMITS_REQUEST_TIMEOUT", "300ms")]);
    let raw = b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nonly ten b";
    let reply = raw_exchange(gw.listen, raw, Duration::from_secs(3)).await;
    assert_eq!(reply.status(), Some(408), "{}", reply.text());
    assert!(reply.text().contains("request-timeout"));
    assert!(reply.closed, "the connection must be closed after a 408");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_cut_short_or_stalled_are_aborted_not_passed_off() {
    let up = Upstream::start();
    let gw = gateway(&up.url(), &[("PORTCULLIS_LIMITS_REQUEST_TIMEOUT", "800ms")]);
    // Upstream promises 1 MB, sends 100 KB, drops the connection.
    let raw = b"GET /cut HTTP/1.1\r\nHost: a\r\nx-upstream-body-bytes: 1000000\r\nx-upstream-cut-after: 100000\r\n\r\n";
    let reply = raw_exchange(gw.listen, raw, Duration::from_secs(3)).await;
    assert_eq!(reply.status(), Some(200));
    assert!(reply.closed);
    let text = reply.text();
    let head_end = text.find("\r\n\r\n").unwrap() + 4;
    assert!(
        text[..head_end]
            .to_ascii_lowercase()
            .contains("content-length: 1000000")
    );
    let got = reply.bytes.len() - head_end;
    assert!(
        got < 1_000_000,
        "a truncated body must not arrive complete ({got} bytes)"
    );

    // Upstream sends 1000 bytes then stalls: cut off at the request timeout.
    let start = Instant::now();
    let raw = b"GET /stall HTTP/1.1\r\nHost: a\r\nx-upstream-body-bytes: 1000000\r\nx-upstream-stall-after: 1000\r\n\r\n";
    let reply = raw_exchange(gw.listen, raw, Duration::from_secs(5)).await;
    assert_eq!(reply.status(), Some(200));
    assert!(reply.closed, "a stalled response must be cut off");
    assert!(start.elapsed() < Duration::from_secs(4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_problems_with_request_ids() {
    let up = Upstream::start();
    let gw = gateway(
        &up.url(),
        &[
            ("PORTCULLIS_LIMITS_URI_BYTES", "64"),
            ("PORTCULLIS_LIMITS_HEADER_COUNT", "20"),
            ("PORTCULLIS_LIMITS_HEADER_BYTES", "2KiB"),
            ("PORTCULLIS_LIMITS_BODY", "1KiB"),
        ],
    );
    let client = Client::new();
    let r = client
        .send(
            Request::builder()
                .method("TRACE")
                .uri(gw.url("/"))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_problem(&r, 405, "method-not-allowed");
    let r = client
        .get(&gw.url(&format!("/{}", "a".repeat(100))))
        .await
        .unwrap();
    assert_problem(&r, 414, "uri-too-long");
    let mut req = Request::get(gw.url("/x"));
    for i in 0..30 {
        req = req.header(format!("x-h{i}"), "1");
    }
    let r = client
        .send(req.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    assert_problem(&r, 431, "headers-too-large");
    let r = client
        .send(
            Request::get(gw.url("/x"))
                .header("x-big", "v".repeat(3000))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_problem(&r, 431, "headers-too-large");
    let r = client
        .send(
            Request::post(gw.url("/x"))
                .body(Full::new(Bytes::from(vec![b'a'; 2048])))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_problem(&r, 413, "payload-too-large");
    // A chunked body over the limit, without Content-Length, is cut off while streaming.
    let mut raw = b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..4 {
        raw.extend_from_slice(b"200\r\n");
        raw.extend_from_slice(&[b'b'; 512]);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    let r = raw_exchange(gw.listen, &raw, Duration::from_secs(2)).await;
    assert_eq!(r.status(), Some(413), "{}", r.text());
    assert!(
        up.requests()
            .await
            .iter()
            .all(|rec| rec["body_bytes"].as_u64().unwrap_or(0) <= 1024)
    );
    let r = client
        .get(&gw.url("/a/..%2f..%2fetc/passwd"))
        .await
        .unwrap();
    assert_problem(&r, 400, "bad-request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_spelling_of_a_route_path_matches_it_or_is_refused() {
    let up = Upstream::start();
    let dir = portcullis_testkit::TempDir::new("routes");
    let cfg = dir.write(
        "p.toml",
        "[[routes]]\nname = \"admin\"\npath = \"/admin/**\"\n\n[[routes]]\nname = \"api\"\npath = \"/api/*/items\"\nmethods = [\"GET\"]\n",
    );
    let gw = GatewayCmd::new(env!("CARGO_BIN_EXE_portcullis"))
        .args([
            "serve",
            "--config",
            cfg.to_str().unwrap(),
            "--upstream",
            &up.url(),
        ])
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .start();
    let matched: &[(&str, &str)] = &[
        ("/admin/users", "/admin/users"),
        ("/ADMIN/users", "/ADMIN/users"),
        ("/Admin/Users/", "/Admin/Users/"),
        ("//admin//users", "/admin/users"),
        ("/./admin/./users", "/admin/users"),
        ("/x/../admin/users", "/admin/users"),
        ("/%61dmin/users", "/admin/users"),
        ("/%2e/admin/users", "/admin/users"),
        ("/x/%2e%2e/admin/users", "/admin/users"),
        ("/admin", "/admin"),
    ];
    for (i, (spelling, upstream_path)) in matched.iter().enumerate() {
        up.clear().await;
        let id = format!("spelling-{i}");
        let raw = format!("GET {spelling} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        let r = raw_exchange(gw.listen, raw.as_bytes(), Duration::from_secs(3)).await;
        assert_eq!(r.status(), Some(200), "{spelling}: {}", r.text());
        let recs = up.requests().await;
        assert_eq!(recs[0]["path"], *upstream_path, "{spelling}");
        let rid = first(&recs[0], "x-request-id").unwrap().to_owned();
        let line = gw
            .wait_for_line(Duration::from_secs(5), |v| v["request_id"] == rid.as_str())
            .unwrap_or_else(|| panic!("no log line for {id}"));
        assert_eq!(line["route"], "admin", "{spelling} dodged the admin route");
    }
    up.clear().await;
    for spelling in [
        "/admin%2fusers",
        "/admin;x=1/users",
        "/%2e%2e/admin",
        "/admin%5cusers",
        "/adm%00in",
        "/..%2fadmin",
    ] {
        let raw = format!("GET {spelling} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        let r = raw_exchange(gw.listen, raw.as_bytes(), Duration::from_secs(3)).await;
        assert_eq!(r.status(), Some(400), "{spelling}: {}", r.text());
        assert!(r.text().contains("bad-request"));
    }
    assert!(
        up.requests().await.is_empty(),
        "refused paths reached the upstream"
    );
    // Methods narrow a route.
    let r = raw_exchange(
        gw.listen,
        b"GET /api/v1/items HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(r.status(), Some(200));
    let r = raw_exchange(
        gw.listen,
        b"DELETE /api/v1/items HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(r.status(), Some(200));
    std::thread::sleep(Duration::from_millis(200));
    let routes: Vec<String> = gw
        .json_lines()
        .iter()
        .filter(|v| v["method"].is_string() && v["path"] == "/api/v1/items")
        .map(|v| {
            format!(
                "{} {}",
                v["method"].as_str().unwrap(),
                v["route"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(routes, ["GET api", "DELETE default"]);

    // Metrics are labelled by route name, never by raw path.
    let metrics = Client::new().get(&gw.admin_url("/metrics")).await.unwrap();
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.contains("portcullis_requests_total{route=\"admin\",status=\"200\"} 10"),
        "{text}"
    );
    assert!(
        text.contains("portcullis_request_duration_seconds_bucket{route=\"admin\""),
        "{text}"
    );
    assert!(!text.contains("/admin"), "a raw path became a label");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_listener_answers_health_and_404s_as_problems() {
    let up = Upstream::start();
    let gw = gateway(&up.url(), &[]);
    let c = Client::new();
    let r = c.get(&gw.admin_url("/livez")).await.unwrap();
    assert_eq!(r.status, 200);
    let r = c.get(&gw.admin_url("/readyz")).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "ok");
    assert!(r.json()["components"].is_object());
    let r = c.get(&gw.admin_url("/nope")).await.unwrap();
    assert_problem(&r, 404, "not-found");
}

/// Samples the gateway's RSS every 20 ms until told to stop; returns the peak.
fn watch_rss(
    pid: u32,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut peak = 0;
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let rss: u64 = status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or(0);
            peak = peak.max(rss);
            std::thread::sleep(Duration::from_millis(20));
        }
        peak
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200_mib_body_streams_both_ways_in_flat_memory() {
    use hyper::body::Frame;
    const SIZE: u64 = 200 * 1024 * 1024;
    let up = Upstream::start();
    let gw = gateway(
        &up.url(),
        &[
            ("PORTCULLIS_LIMITS_BODY", "1GiB"),
            ("PORTCULLIS_LOG_LEVEL", "warn,portcullis_gateway=info"),
        ],
    );
    // Warm up so allocator pools exist before the baseline.
    let _ = Client::new().get(&gw.url("/warm")).await.unwrap();
    let base = gw.rss_kib();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = watch_rss(gw.pid(), stop.clone());

    // Upload: a streamed body the client never holds whole.
    let stream = tokio::net::TcpStream::connect(gw.listen).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let chunk = Bytes::from(vec![b'u'; 256 * 1024]);
    let chunks = (SIZE / chunk.len() as u64) as usize;
    let body = http_body_util::StreamBody::new(futures_util::stream::iter(
        (0..chunks).map(move |_| Ok::<_, std::io::Error>(Frame::data(chunk.clone()))),
    ));
    let req = Request::post("/upload")
        .header("host", "a")
        .header("content-length", SIZE.to_string())
        .body(body)
        .unwrap();
    let res = sender.send_request(req).await.unwrap();
    assert_eq!(res.status(), 200);
    let echoed: Value =
        serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(echoed["body_bytes"], SIZE);

    // Download: counted as it arrives.
    let req = Request::get("/download")
        .header("host", "a")
        .header("x-upstream-body-bytes", SIZE.to_string())
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let stream = tokio::net::TcpStream::connect(gw.listen).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let res = sender.send_request(req).await.unwrap();
    assert_eq!(res.status(), 200);
    let mut body = res.into_body();
    let mut got = 0u64;
    while let Some(frame) = body.frame().await {
        got += frame.unwrap().data_ref().map_or(0, |d| d.len() as u64);
    }
    assert_eq!(got, SIZE);

    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let peak = sampler.join().unwrap();
    let growth_mib = peak.saturating_sub(base) as f64 / 1024.0;
    eprintln!(
        "200 MiB up and down: gateway RSS baseline {:.1} MiB, peak {:.1} MiB, growth {growth_mib:.1} MiB",
        base as f64 / 1024.0,
        peak as f64 / 1024.0
    );
    assert!(
        growth_mib < 32.0,
        "memory grew by {growth_mib:.1} MiB while streaming 200 MiB"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_and_exits_zero() {
    let up = Upstream::start();
    let mut gw = gateway(&up.url(), &[("PORTCULLIS_SHUTDOWN_GRACE", "5s")]);
    let url = gw.url("/slow");
    let in_flight = tokio::spawn(async move {
        let req = Request::get(url)
            .header("x-upstream-delay", "1500ms")
            .body(Full::new(Bytes::new()))
            .unwrap();
        Client::new().send(req).await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    gw.terminate();
    // /readyz says 503 at once, while the admin listener keeps answering.
    let mut saw_down = false;
    for _ in 0..50 {
        if let Ok(r) = Client::new().get(&gw.admin_url("/readyz")).await
            && r.status == 503
            && r.json()["status"] == "down"
        {
            saw_down = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(saw_down, "/readyz did not turn 503 during the drain");
    // New connections are refused.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        tokio::net::TcpStream::connect(gw.listen).await.is_err(),
        "still accepting during the drain"
    );
    let reply = in_flight
        .await
        .unwrap()
        .expect("in-flight request finished");
    assert_eq!(reply.status, 200);
    let status = gw.wait_exit(Duration::from_secs(10)).expect("exited");
    assert!(status.success(), "exit status {status:?}");
    let lines = gw.json_lines();
    assert!(
        lines.iter().any(|v| v["msg"] == "stopped"),
        "logs not flushed before exit"
    );
    assert!(
        lines
            .iter()
            .any(|v| v["path"] == "/slow" && v["status"] == 200)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_redact_secret_headers_and_escape_controls() {
    let up = Upstream::start();
    let gw = gateway(&up.url(), &[("PORTCULLIS_LOG_LEVEL", "debug")]);
    // A bearer token that is refused must not reach the log either.
    let refused = raw_exchange(
        gw.listen,
        b"GET /x HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer canary-bearer\r\nConnection: close\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(refused.status(), Some(401));
    let raw = b"GET /logged?password=canary-query HTTP/1.1\r\nHost: a\r\nAuthorization: Basic canary-token\r\nCookie: sid=canary-cookie\r\nX-Api-Key: canary-key\r\nX-Test: a\xc2\x85b\xe2\x80\xa8cd\r\nConnection: close\r\n\r\n";
    let r = raw_exchange(gw.listen, raw, Duration::from_secs(3)).await;
    assert_eq!(r.status(), Some(200), "{}", r.text());
    let line = gw
        .wait_for_line(Duration::from_secs(5), |v| {
            v["msg"] == "request headers"
                && v["headers"].as_str().is_some_and(|h| h.contains("x-test"))
        })
        .expect("a debug line with the headers");
    let headers: Value = serde_json::from_str(line["headers"].as_str().unwrap()).unwrap();
    assert_eq!(headers["authorization"], "[redacted]");
    assert_eq!(headers["cookie"], "[redacted]");
    assert_eq!(headers["x-api-key"], "[redacted]");
    assert_eq!(headers["x-test"], "a\u{85}b\u{2028}cd");
    std::thread::sleep(Duration::from_millis(200));
    for raw_line in gw.stdout_lines() {
        assert!(
            !raw_line.contains("canary"),
            "a secret reached the log: {raw_line}"
        );
        assert!(
            !raw_line.contains('\u{2028}')
                && !raw_line.contains('\u{85}')
                && !raw_line.contains('\u{7f}'),
            "unescaped control in {raw_line}"
        );
        serde_json::from_str::<Value>(&raw_line).expect("every log line is JSON");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_are_reused_and_stale_ones_replaced() {
    let up = Upstream::start();
    let gw = gateway(&up.url(), &[]);
    let client = Client::new();
    for i in 0..20 {
        let r = client.get(&gw.url(&format!("/seq/{i}"))).await.unwrap();
        assert_eq!(r.status, 200);
    }
    // Bodies of several sizes and a streamed one also hand their connection back.
    let req = Request::get(gw.url("/big"))
        .header("x-upstream-body-bytes", "300000")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(client.send(req).await.unwrap().body.len(), 300_000);
    let r = client.get(&gw.url("/after-big")).await.unwrap();
    assert_eq!(r.status, 200);
    let peers: std::collections::HashSet<String> = up
        .requests()
        .await
        .iter()
        .map(|r| r["peer"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        peers.len(),
        1,
        "sequential requests should share one upstream connection: {peers:?}"
    );

    // The upstream goes away and comes back on the same port: the pooled connection is
    // dead, and the next request still succeeds on a fresh one.
    let addr = up.addr;
    drop(up);
    let up = Upstream::start_on(addr);
    let r = client.get(&gw.url("/after-restart")).await.unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(up.requests().await.len(), 1);
}
