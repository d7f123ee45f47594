//! Routes that validate their bodies: `schema`, `sanitize_html` and `body_limit`, through
//! the gateway process to a recording upstream.

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use portcullis_testkit::TempDir;
use portcullis_testkit::gateway::{GatewayCmd, GatewayProcess};
use portcullis_testkit::http::{Client, Reply, raw_exchange};
use portcullis_testkit::upstream::Upstream;
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(20);

const SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "properties": {
    "name": { "type": "string", "maxLength": 20 },
    "password": { "type": "string", "minLength": 20 },
    "qty": { "type": "integer", "minimum": 1 }
  },
  "required": ["name", "qty"],
  "additionalProperties": false
}"#;

fn config(upstream: &str) -> String {
    format!(
        r#"upstream = "{upstream}"
[rate_limit]
enabled = false
[limits]
json_depth = 8

[[routes]]
name = "orders"
path = "/orders"
methods = ["POST", "PUT", "GET"]
schema = "schemas/order.json"

[[routes]]
name = "comments"
path = "/comments"
sanitize_html = ["comment", "author/bio", "replies/*/text"]

[[routes]]
name = "uploads"
path = "/uploads"
body_limit = "4MiB"

[[routes]]
name = "small"
path = "/small"
body_limit = "16B"
"#
    )
}

struct Setup {
    _dir: TempDir,
    up: Upstream,
    gw: GatewayProcess,
}

fn setup() -> Setup {
    let dir = TempDir::new("validation");
    dir.write("schemas/order.json", SCHEMA);
    let up = Upstream::start();
    let cfg = dir.write("gw.toml", config(&up.url()));
    let gw = GatewayCmd::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["serve", "--config", cfg.to_str().unwrap()])
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .start();
    Setup { _dir: dir, up, gw }
}

async fn post(s: &Setup, path: &str, content_type: &str, body: &[u8]) -> Reply {
    Client::new()
        .send(
            Request::post(s.gw.url(path))
                .header("content-type", content_type)
                .body(Full::new(Bytes::copy_from_slice(body)))
                .unwrap(),
        )
        .await
        .unwrap()
}

fn assert_problem(r: &Reply, status: u16, slug: &str) -> Value {
    assert_eq!(
        r.status.as_u16(),
        status,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    let p = r.json();
    assert!(
        p["type"].as_str().unwrap().ends_with(slug),
        "type {} is not {slug}",
        p["type"]
    );
    assert_eq!(p["status"], status);
    assert_eq!(
        p["request_id"].as_str(),
        r.header("x-request-id"),
        "the problem names the request"
    );
    p
}

/// The bodies the upstream received, in order.
async fn bodies(up: &Upstream) -> Vec<String> {
    up.requests()
        .await
        .iter()
        .map(|r| r["body"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_route_forwards_valid_bodies_byte_for_byte_and_refuses_the_rest() {
    let s = setup();
    // Valid, with spacing and order the upstream must see unchanged.
    let valid = "{ \"qty\" : 2,\n  \"name\": \"tea\\u00e9\" }";
    let r = post(
        &s,
        "/orders",
        "application/json; charset=utf-8",
        valid.as_bytes(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let r = post(&s, "/orders", "application/vnd.shop+json", valid.as_bytes()).await;
    assert_eq!(r.status, 200);
    assert_eq!(bodies(&s.up).await, [valid, valid]);

    // 415: not JSON, or not UTF-8, or compressed.
    for ct in [
        "text/plain",
        "application/json; charset=latin1",
        "application/jsonp",
    ] {
        let r = post(&s, "/orders", ct, valid.as_bytes()).await;
        assert_problem(&r, 415, "unsupported-media-type");
    }
    let r = Client::new()
        .send(
            Request::post(s.gw.url("/orders"))
                .header("content-type", "application/json")
                .header("content-encoding", "gzip")
                .body(Full::new(Bytes::from_static(b"\x1f\x8b")))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_problem(&r, 415, "unsupported-media-type");

    // 400: not strict JSON.
    for (body, what) in [
        (&br#"{"name":"a","qty":1,"qty":2}"#[..], "duplicate name"),
        (b"\xef\xbb\xbf{\"name\":\"a\",\"qty\":1}", "byte order mark"),
        (br#"{"name":"a","qty":1,}"#, "trailing comma"),
        (br#"{"name":"a","qty":NaN}"#, "NaN"),
        (br#"{"name":"\ud800","qty":1}"#, "lone surrogate"),
        (br#"{"name":"a" /* c */,"qty":1}"#, "comment"),
        (b"[[[[[[[[[[1]]]]]]]]]]", "deeper than json_depth"),
        (b"{\"name\":\"a\xff\",\"qty\":1}", "invalid UTF-8"),
        (b"", "empty"),
    ] {
        let r = post(&s, "/orders", "application/json", body).await;
        let p = assert_problem(&r, 400, "invalid-body");
        assert!(p["detail"].is_string(), "{what}: {p}");
    }

    // 422: each failing place listed, the submitted values never.
    let secret = "hunter2-SECRET";
    let body = format!(
        r#"{{"name":"{}","password":"{secret}","qty":0,"extra":"{secret}"}}"#,
        "n".repeat(30)
    );
    let r = post(&s, "/orders", "application/json", body.as_bytes()).await;
    let p = assert_problem(&r, 422, "invalid-body");
    let mut pointers: Vec<&str> = p["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["pointer"].as_str().unwrap())
        .collect();
    pointers.sort_unstable();
    assert_eq!(pointers, ["/extra", "/name", "/password", "/qty"], "{p}");
    let text = String::from_utf8_lossy(&r.body);
    assert!(!text.contains(secret), "a value leaked: {text}");
    assert!(!text.contains("nnnnnnnnnn"), "a value leaked: {text}");

    // A GET without a body passes; nothing refused reached the upstream.
    let r = Client::new().get(&s.gw.url("/orders")).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(s.up.requests().await.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_fields_are_sanitized_and_the_rest_left_alone() {
    let s = setup();
    let body = r#"{"comment":"<b>hi</b><script>alert(1)</script>","keep":"<script>x</script>","author":{"bio":"<img src=x onerror=alert(1)>me"},"replies":[{"text":"<a href=\"javascript:alert(1)\">l</a>"},{"text":"fine"}]}"#;
    let r = post(&s, "/comments", "application/json", body.as_bytes()).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let rec = &s.up.requests().await[0];
    let got: Value = serde_json::from_str(rec["body"].as_str().unwrap()).unwrap();
    assert_eq!(got["comment"], "<b>hi</b>");
    assert_eq!(
        got["keep"], "<script>x</script>",
        "unnamed fields are untouched"
    );
    let bio = got["author"]["bio"].as_str().unwrap();
    assert!(!bio.contains("onerror") && bio.ends_with("me"), "{bio}");
    let link = got["replies"][0]["text"].as_str().unwrap();
    assert!(!link.contains("javascript"), "{link}");
    assert_eq!(got["replies"][1]["text"], "fine");
    // Content-Length names the new length, and no chunked framing is left.
    let len: usize = rec["headers"]["content-length"][0]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(len, rec["body"].as_str().unwrap().len());
    assert_eq!(rec["body_bytes"].as_u64(), Some(len as u64));
    assert!(rec["headers"].get("transfer-encoding").is_none());

    // Nothing to sanitize: the exact bytes.
    let clean = "{\"comment\" : \"plain\" , \"n\":1.50}";
    post(&s, "/comments", "application/json", clean.as_bytes()).await;
    assert_eq!(bodies(&s.up).await[1], clean);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_body_limits_replace_the_global_one_also_when_validating_chunked_bodies() {
    let s = setup();
    // 2 MiB: over `limits.body` (1 MiB) but within the route's 4 MiB.
    let big = vec![b'a'; 2 * 1024 * 1024];
    let r = post(&s, "/uploads", "application/octet-stream", &big).await;
    assert_eq!(r.status, 200);
    // Elsewhere `limits.body` holds (refused on the declared length, so sent raw: a
    // client library would still be writing the body when the connection closes).
    let raw = b"POST /elsewhere HTTP/1.1\r\nHost: x\r\nContent-Length: 2097152\r\n\r\n";
    let r = raw_exchange(s.gw.listen, raw, Duration::from_secs(3)).await;
    assert_eq!(r.status(), Some(413), "{}", r.text());
    let r = post(&s, "/small", "text/plain", b"seventeen bytes!!").await;
    assert_problem(&r, 413, "payload-too-large");

    // A chunked JSON body over the limit on a validating route: 413 while reading,
    // nothing forwarded.
    let mut raw =
        b"POST /orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            .to_vec();
    raw.extend_from_slice(b"1\r\n[\r\n");
    for _ in 0..300 {
        let chunk = format!("{:x}\r\n{}\r\n", 4096, "1,".repeat(2048));
        raw.extend_from_slice(chunk.as_bytes());
    }
    raw.extend_from_slice(b"1\r\n1\r\n1\r\n]\r\n0\r\n\r\n");
    let r = raw_exchange(s.gw.listen, &raw, Duration::from_secs(3)).await;
    assert_eq!(r.status(), Some(413), "{}", r.text());
    assert!(r.closed);
    // A chunked valid body is forwarded with a Content-Length.
    let raw = b"POST /orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n8\r\n{\"qty\":1\r\nb\r\n,\"name\":\"\"}\r\n0\r\n\r\n";
    let r = raw_exchange(s.gw.listen, raw, Duration::from_secs(3)).await;
    assert_eq!(r.status(), Some(200), "{}", r.text());
    let recs = s.up.requests().await;
    let last = recs.last().unwrap();
    assert_eq!(last["path"], "/orders");
    assert_eq!(last["body"], "{\"qty\":1,\"name\":\"\"}");
    assert_eq!(last["headers"]["content-length"][0], "19");
    assert_eq!(recs.iter().filter(|r| r["path"] == "/orders").count(), 1);
}

#[test]
fn invalid_schemas_and_field_paths_are_configuration_errors_naming_the_route() {
    let dir = TempDir::new("validation-bad");
    dir.write(
        "broken.json",
        r#"{"type": "object", "properties": {"a": {"type": 12}}}"#,
    );
    dir.write(
        "remote.json",
        r#"{"$ref": "https://example.invalid/s.json"}"#,
    );
    dir.write("notjson.json", "{ type: object }");
    let cfg = dir.write(
        "gw.toml",
        r#"upstream = "http://127.0.0.1:3000"
[[routes]]
path = "/a"
schema = "broken.json"
[[routes]]
path = "/b"
schema = "remote.json"
[[routes]]
path = "/c"
schema = "notjson.json"
[[routes]]
path = "/d"
schema = "missing.json"
[[routes]]
path = "/e"
sanitize_html = ["a//b"]
[[routes]]
path = "/f"
body_limit = "lots"
"#,
    );
    let out = GatewayCmd::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["check-config", "--config", cfg.to_str().unwrap()])
        .run(LIMIT);
    assert_eq!(out.code, Some(2), "{out:?}");
    for needle in [
        "routes[0].schema",
        "broken.json",
        "routes[1].schema",
        "routes[2].schema",
        "routes[3].schema",
        "missing.json",
        "routes[4].sanitize_html",
        "routes[5].body_limit",
    ] {
        assert!(
            out.stderr.contains(needle),
            "stderr lacks {needle:?}:\n{}",
            out.stderr
        );
    }
}

/// The example schema of `docs/requests.md`: an order with a customer, addresses by
/// `$ref`, an array of line items, formats, patterns, enums and `dependentRequired`.
const ORDER_SCHEMA: &str = include_str!("../../../docs/examples/order.schema.json");

fn shop() -> Setup {
    let dir = TempDir::new("validation-shop");
    let schema = dir.write("order.schema.json", ORDER_SCHEMA);
    let up = Upstream::start();
    let cfg = dir.write(
        "gw.toml",
        format!(
            "upstream = \"{}\"\n[rate_limit]\nenabled = false\n[[routes]]\nname = \"orders\"\npath = \"/shop/orders\"\nschema = \"{}\"\n",
            up.url(),
            schema.display()
        ),
    );
    let gw = GatewayCmd::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["serve", "--config", cfg.to_str().unwrap()])
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .start();
    Setup { _dir: dir, up, gw }
}

fn order() -> Value {
    serde_json::json!({
        "order_id": "ord_A1b2C3d4",
        "currency": "EUR",
        "customer": { "email": "ada@example.com", "name": "Ada", "phone": "+441234567890" },
        "shipping": { "line1": "1 Main St", "city": "London", "country": "GB" },
        "items": [
            { "sku": "TEA-001", "qty": 2, "unit_price": 4.5 },
            { "sku": "MUG-22", "qty": 1, "unit_price": 12.99, "note": "gift wrap" }
        ],
        "coupon": null,
        "gift": true,
        "delivery_date": "2026-12-24",
        "tags": ["xmas", "priority"]
    })
}

/// Sets `pointer` in a copy of the valid order (`None`: removes it).
fn with(pointer: &str, value: Option<Value>) -> Value {
    let mut o = order();
    let (parent, last) = pointer.rsplit_once('/').unwrap();
    let target = o.pointer_mut(parent).unwrap();
    match (target, value) {
        (Value::Object(m), Some(v)) => {
            m.insert(last.to_owned(), v);
        }
        (Value::Object(m), None) => {
            m.remove(last);
        }
        (Value::Array(a), Some(v)) => a[last.parse::<usize>().unwrap()] = v,
        (Value::Array(a), None) => {
            a.remove(last.parse::<usize>().unwrap());
        }
        _ => panic!("{pointer}"),
    }
    o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_realistic_schema_passes_good_orders_and_names_each_failing_place() {
    use serde_json::json;
    let s = shop();
    let accepted = [
        ("the example", order()),
        (
            "no optional fields",
            json!({"currency": "USD", "customer": {"email": "a@b.co", "name": "B"}, "items": [{"sku": "ABCD", "qty": 1, "unit_price": 0.01}]}),
        ),
        ("a coupon string", with("/coupon", Some(json!("XMAS10")))),
        ("no gift, no shipping", {
            let mut o = with("/gift", None);
            o.as_object_mut().unwrap().remove("shipping");
            o
        }),
        (
            "100 items",
            with(
                "/items",
                Some(Value::Array(vec![
                    json!({"sku": "ABCD", "qty": 1, "unit_price": 1});
                    100
                ])),
            ),
        ),
        (
            "a billing address",
            with(
                "/billing",
                Some(json!({"line1": "x", "city": "y", "country": "FR", "postcode": "75001"})),
            ),
        ),
    ];
    let refused: Vec<(&str, Value, &[&str])> = vec![
        ("no customer", with("/customer", None), &[""]),
        ("no items", with("/items", None), &[""]),
        ("empty items", with("/items", Some(json!([]))), &["/items"]),
        (
            "101 items",
            with(
                "/items",
                Some(Value::Array(vec![
                    json!({"sku": "ABCD", "qty": 1, "unit_price": 1});
                    101
                ])),
            ),
            &["/items"],
        ),
        (
            "unknown currency",
            with("/currency", Some(json!("BTC"))),
            &["/currency"],
        ),
        (
            "bad email",
            with("/customer/email", Some(json!("not-an-email"))),
            &["/customer/email"],
        ),
        (
            "empty name",
            with("/customer/name", Some(json!(""))),
            &["/customer/name"],
        ),
        (
            "bad phone",
            with("/customer/phone", Some(json!("0123"))),
            &["/customer/phone"],
        ),
        (
            "short password",
            with("/customer/password", Some(json!("hunter2"))),
            &["/customer/password"],
        ),
        (
            "unknown customer field",
            with("/customer/ssn", Some(json!("078-05-1120"))),
            &["/customer/ssn"],
        ),
        (
            "bad order id",
            with("/order_id", Some(json!("order-1"))),
            &["/order_id"],
        ),
        (
            "qty zero",
            with("/items/0/qty", Some(json!(0))),
            &["/items/0/qty"],
        ),
        (
            "qty fraction",
            with("/items/0/qty", Some(json!(1.5))),
            &["/items/0/qty"],
        ),
        (
            "qty as a string",
            with("/items/0/qty", Some(json!("2"))),
            &["/items/0/qty"],
        ),
        (
            "free item",
            with("/items/1/unit_price", Some(json!(0))),
            &["/items/1/unit_price"],
        ),
        (
            "price in mills",
            with("/items/1/unit_price", Some(json!(1.005))),
            &["/items/1/unit_price"],
        ),
        (
            "lower-case sku",
            with("/items/0/sku", Some(json!("tea-1"))),
            &["/items/0/sku"],
        ),
        (
            "item without sku",
            with("/items/1/sku", None),
            &["/items/1"],
        ),
        (
            "long note",
            with("/items/1/note", Some(json!("n".repeat(501)))),
            &["/items/1/note"],
        ),
        (
            "shipping without city",
            with("/shipping/city", None),
            &["/shipping"],
        ),
        (
            "lower-case country",
            with("/shipping/country", Some(json!("gb"))),
            &["/shipping/country"],
        ),
        (
            "a date that is not",
            with("/delivery_date", Some(json!("2026-02-30"))),
            &["/delivery_date"],
        ),
        (
            "repeated tags",
            with("/tags", Some(json!(["a", "a"]))),
            &["/tags"],
        ),
        (
            "coupon a number",
            with("/coupon", Some(json!(10))),
            &["/coupon"],
        ),
        ("gift without shipping", with("/shipping", None), &[""]),
        ("an object that is an array", json!([order()]), &[""]),
        (
            "two failures at once",
            {
                let o = with("/items/0/qty", Some(json!(0)));
                let mut o = o;
                o["customer"]["email"] = json!("nope");
                o
            },
            &["/customer/email", "/items/0/qty"],
        ),
    ];
    assert!(refused.len() >= 20);
    for (what, body) in &accepted {
        let r = post(
            &s,
            "/shop/orders",
            "application/json",
            body.to_string().as_bytes(),
        )
        .await;
        assert_eq!(
            r.status,
            200,
            "{what}: {}",
            String::from_utf8_lossy(&r.body)
        );
    }
    for (what, body, want) in &refused {
        let r = post(
            &s,
            "/shop/orders",
            "application/json",
            body.to_string().as_bytes(),
        )
        .await;
        let p = assert_problem(&r, 422, "invalid-body");
        let mut got: Vec<&str> = p["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["pointer"].as_str().unwrap())
            .collect();
        got.sort_unstable();
        got.dedup();
        assert_eq!(got, *want, "{what}: {p}");
        for e in p["errors"].as_array().unwrap() {
            let reason = e["reason"].as_str().unwrap();
            assert!(!reason.is_empty(), "{what}: {p}");
            for secret in ["hunter2", "078-05-1120", "not-an-email", "BTC", "order-1"] {
                assert!(!reason.contains(secret), "{what}: a value leaked: {p}");
            }
        }
    }
    assert_eq!(s.up.requests().await.len(), accepted.len());
}

/// Bodies built to cost a parser time or memory, each within the 1 MiB body limit: refused
/// (or, for valid JSON, answered), with the gateway's memory staying bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_bombs_are_refused_with_bounded_memory() {
    let s = shop();
    let near_limit = 1024 * 1024 - 16;
    let deep = "[".repeat(near_limit);
    let mut numbers = String::from("[0");
    while numbers.len() < near_limit - 2 {
        numbers.push_str(",0");
    }
    numbers.push(']');
    let mut empties = String::from("[{}");
    while empties.len() < near_limit - 3 {
        empties.push_str(",{}");
    }
    empties.push(']');
    let mut keys = String::from("{");
    let mut i = 0;
    while keys.len() < near_limit - 32 {
        if i > 0 {
            keys.push(',');
        }
        keys.push_str(&format!("\"k{i}\":0"));
        i += 1;
    }
    keys.push('}');
    let mut dups = String::from("{\"a\":0");
    while dups.len() < near_limit - 8 {
        dups.push_str(",\"a\":0");
    }
    dups.push('}');
    let mut escapes = String::from("{\"customer\":\"");
    while escapes.len() < near_limit - 8 {
        escapes.push_str("\\u00e9");
    }
    escapes.push_str("\"}");

    let before = s.gw.peak_rss().expect("/proc is readable");
    let mut after_first = 0;
    for round in 0..12 {
        for (what, body, status) in [
            ("deep nesting", &deep, 400),
            ("half a million numbers", &numbers, 422),
            ("a third of a million objects", &empties, 422),
            ("a hundred thousand members", &keys, 422),
            ("a duplicate name repeated", &dups, 400),
            ("a string of escapes", &escapes, 422),
        ] {
            assert!(body.len() <= 1024 * 1024, "{what} is within the limit");
            let r = post(&s, "/shop/orders", "application/json", body.as_bytes()).await;
            assert_eq!(
                r.status.as_u16(),
                status,
                "{what}: {}",
                String::from_utf8_lossy(&r.body)
            );
            assert!(
                r.body.len() < 16 * 1024,
                "{what}: the refusal is bounded ({} bytes)",
                r.body.len()
            );
        }
        if round == 5 {
            after_first = s.gw.peak_rss().unwrap();
        }
    }
    let after = s.gw.peak_rss().unwrap();
    eprintln!(
        "peak RSS: {} KiB at start, +{} KiB after six rounds, +{} KiB after six more",
        before / 1024,
        after_first.saturating_sub(before) / 1024,
        after.saturating_sub(after_first) / 1024
    );
    // One body at a time costs a bounded multiple of its size (the allocator keeps what
    // it freed for reuse, per thread), however many bombs come: 72 one-MiB bombs here.
    let grown = after.saturating_sub(before);
    assert!(
        grown < 176 * 1024 * 1024,
        "peak memory grew by {} MiB over 72 bombs of 1 MiB",
        grown / (1024 * 1024)
    );
    assert!(s.up.requests().await.is_empty());
}
