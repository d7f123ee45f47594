//! Every configuration key, declared once.
//!
//! This table is the single definition that the loader reads values by, that
//! `check-config` validates against, that unknown keys and `PORTCULLIS_*` variables are
//! checked against, and that `portcullis config-reference` (and so
//! `docs/configuration.md`) is generated from. A key that is not here does not exist.

use std::time::Duration;

/// The type of a key's value, with the bounds that the loader enforces and the
/// reference documents.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Ty {
    /// `true` or `false`.
    Bool,
    /// An integer in `min..=max`.
    Int { min: i64, max: i64 },
    /// A number in `min..=max`.
    Float { min: f64, max: f64 },
    /// A duration such as `"250ms"`, `"15m"` or `"1h30m"`, in `min..=max`.
    Duration { min: Duration, max: Duration },
    /// A size such as `"16KiB"` or `"1MiB"`, in `min..=max` bytes.
    Size { min: u64, max: u64 },
    /// A socket address such as `"127.0.0.1:8080"` or `"[::1]:8080"`.
    Addr,
    /// An `http://` or `https://` URL (empty: unset).
    HttpUrl,
    /// A `redis://` or `rediss://` URL (empty: unset).
    RedisUrl,
    /// A file path (empty: unset).
    Path,
    /// Free text.
    Str,
    /// One of the listed words.
    Enum(&'static [&'static str]),
    /// A list of strings (from the environment: comma-separated).
    StrList,
    /// A list of networks in CIDR notation, or single addresses.
    CidrList,
    /// A list of HTTP methods, or `["*"]` for all.
    Methods,
    /// A path glob: `*` within a segment, `**` any number of segments.
    Glob,
}

/// One key.
#[derive(Debug)]
pub(crate) struct KeyDef {
    /// Dotted key, e.g. `limits.body`; inside an array of tables, the field name.
    pub(crate) key: &'static str,
    pub(crate) ty: Ty,
    /// The default, as a TOML value (`"10s"`, `100`, `[]`, `true`).
    pub(crate) default: &'static str,
    /// What the key means, for the reference.
    pub(crate) doc: &'static str,
    /// Never echo the value in messages (it may hold a password).
    pub(crate) secret: bool,
    /// Required: no meaningful default (arrays of tables only).
    pub(crate) required: bool,
}

const fn key(key: &'static str, ty: Ty, default: &'static str, doc: &'static str) -> KeyDef {
    KeyDef {
        key,
        ty,
        default,
        doc,
        secret: false,
        required: false,
    }
}

const fn secret(key: &'static str, ty: Ty, default: &'static str, doc: &'static str) -> KeyDef {
    KeyDef {
        key,
        ty,
        default,
        doc,
        secret: true,
        required: false,
    }
}

const fn required(key: &'static str, ty: Ty, doc: &'static str) -> KeyDef {
    KeyDef {
        key,
        ty,
        default: "\"\"",
        doc,
        secret: false,
        required: true,
    }
}

/// The default of a key that has none: read with `Loader::opt_int`.
pub(crate) const UNSET: &str = "unset";

const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;
const DAY: u64 = 86_400;

/// Scalar keys, in the order the reference lists them. Section headers in the
/// reference come from the first dotted part.
pub(crate) static KEYS: &[KeyDef] = &[
    key(
        "listen",
        Ty::Addr,
        "\"127.0.0.1:8080\"",
        "Address of the main listener: every request here is protected, then proxied.",
    ),
    key(
        "admin_listen",
        Ty::Addr,
        "\"127.0.0.1:9090\"",
        "Address of the admin listener: `/livez`, `/readyz`, `/metrics`. Keep it off the public network.",
    ),
    key(
        "upstream",
        Ty::HttpUrl,
        "\"\"",
        "The protected service, e.g. `http://127.0.0.1:3000`; a path prefix is kept (`http://10.0.0.5/api`). Required by `serve`.",
    ),
    key(
        "trusted_proxies",
        Ty::CidrList,
        "[]",
        "Networks (CIDR) whose `X-Forwarded-For`, `X-Forwarded-Proto`, `X-Forwarded-Host` and `X-Request-Id` are believed. `/0` is refused.",
    ),
    key(
        "instances",
        Ty::Int {
            min: 1,
            max: 10_000,
        },
        "1",
        "How many gateway instances share the store; local-fallback quotas are divided by this.",
    ),
    key(
        "shutdown_grace",
        Ty::Duration {
            min: Duration::ZERO,
            max: secs(3600),
        },
        "\"10s\"",
        "On SIGTERM or SIGINT: stop accepting, then let in-flight requests finish for this long.",
    ),
    key(
        "tls.cert_file",
        Ty::Path,
        "\"\"",
        "PEM certificate chain of the main listener. With `tls.key_file`, the listener speaks TLS (HTTP/2 and HTTP/1.1 by ALPN).",
    ),
    key(
        "tls.key_file",
        Ty::Path,
        "\"\"",
        "PEM private key matching `tls.cert_file`.",
    ),
    key(
        "tls.upstream_ca_file",
        Ty::Path,
        "\"\"",
        "PEM file of extra CA certificates trusted for an `https://` upstream, besides the system's roots.",
    ),
    secret(
        "redis.url",
        Ty::RedisUrl,
        "\"\"",
        "Redis holding the shared state, e.g. `redis://10.0.0.7:6379/0` or `rediss://:password@host:6380`. Empty: state in memory, for one instance. The value is never printed.",
    ),
    key(
        "redis.key_prefix",
        Ty::Str,
        "\"portcullis\"",
        "Prefix of every key the gateway writes, so several deployments can share one Redis.",
    ),
    key(
        "redis.command_timeout",
        Ty::Duration {
            min: Duration::from_millis(1),
            max: secs(10),
        },
        "\"50ms\"",
        "Bound on every Redis call, connecting included: no request waits on Redis longer. A timed-out connection is discarded.",
    ),
    key(
        "redis.connect_timeout",
        Ty::Duration {
            min: Duration::from_millis(1),
            max: secs(60),
        },
        "\"200ms\"",
        "Bound on one connection attempt (made in the background; callers wait at most `command_timeout`).",
    ),
    key(
        "redis.breaker.failure_rate",
        Ty::Float {
            min: 0.01,
            max: 1.0,
        },
        "0.5",
        "Open the breaker when this share of the calls in `window` failed or were slower than `slow_call`.",
    ),
    key(
        "redis.breaker.slow_call",
        Ty::Duration {
            min: Duration::from_millis(1),
            max: secs(10),
        },
        "\"20ms\"",
        "A call slower than this counts as a failure. Must stay below `redis.command_timeout`.",
    ),
    key(
        "redis.breaker.min_calls",
        Ty::Int {
            min: 1,
            max: 1_000_000,
        },
        "10",
        "Calls the window must hold before the failure rate is judged, so one or two blips do not open the breaker.",
    ),
    key(
        "redis.breaker.window",
        Ty::Duration {
            min: Duration::from_millis(100),
            max: secs(3600),
        },
        "\"10s\"",
        "Length of the sliding window the failure rate is measured over.",
    ),
    key(
        "redis.breaker.open_for",
        Ty::Duration {
            min: Duration::from_millis(10),
            max: secs(3600),
        },
        "\"5s\"",
        "How long the breaker stays open (no call reaches Redis; features use their fallback) before probing. Up to 10 % jitter is added.",
    ),
    key(
        "redis.breaker.max_open_for",
        Ty::Duration {
            min: Duration::from_millis(10),
            max: secs(86_400),
        },
        "\"60s\"",
        "The open period doubles each time probes fail, up to this.",
    ),
    key(
        "redis.breaker.half_open_probes",
        Ty::Int { min: 1, max: 1000 },
        "3",
        "Trial calls let through when half-open; all succeeding closes the breaker, any failing reopens it.",
    ),
    key(
        "auth.enabled",
        Ty::Bool,
        "true",
        "Verify access tokens, serve `/auth/*` and enforce route `roles`. Off: the gateway neither reads nor forwards identity.",
    ),
    key(
        "auth.issuer",
        Ty::Str,
        "\"portcullis\"",
        "`iss` of the access tokens the gateway issues, and the only one accepted from its own keys.",
    ),
    key(
        "auth.audience",
        Ty::Str,
        "\"api\"",
        "`aud` of the access tokens the gateway issues and requires.",
    ),
    secret(
        "auth.signing_key_file",
        Ty::Path,
        "\"\"",
        "Ed25519 private keys (PKCS#8 PEM, one or more): the last signs, all verify, so a new key can be added before the old one goes. Each `kid` is the key's JWK thumbprint. Empty: a new key at every start (tokens die with a restart; a warning says so).",
    ),
    key(
        "auth.access_ttl",
        Ty::Duration {
            min: Duration::from_secs(10),
            max: secs(3600),
        },
        "\"10m\"",
        "Lifetime of an access token. At most 1h: it bounds how long a stolen token or a missed revocation lasts.",
    ),
    key(
        "auth.refresh_ttl",
        Ty::Duration {
            min: secs(60),
            max: secs(90 * DAY),
        },
        "\"7d\"",
        "Absolute lifetime of a refresh family (a login session).",
    ),
    key(
        "auth.refresh_idle_ttl",
        Ty::Duration {
            min: secs(60),
            max: secs(90 * DAY),
        },
        "\"24h\"",
        "A refresh family unused this long ends.",
    ),
    key(
        "auth.refresh_reuse_grace",
        Ty::Duration {
            min: Duration::ZERO,
            max: secs(300),
        },
        "\"10s\"",
        "Within this time after a refresh, the spent token gets back the same successor (retries, parallel tabs); later, presenting it revokes the family. 0 for single-threaded clients.",
    ),
    key(
        "auth.users_file",
        Ty::Path,
        "\"\"",
        "Users and argon2id password hashes, managed by `portcullis users`. Used by `POST /auth/login` unless `auth.credentials_upstream` is set.",
    ),
    key(
        "auth.credentials_upstream",
        Ty::Str,
        "\"\"",
        "A path on the upstream that checks credentials instead of the users file: the gateway POSTs `{\"username\",\"password\"}`; 200 `{\"subject\",\"roles\"}` accepts, 401/403 refuses, anything else is 502.",
    ),
    key(
        "auth.cookies",
        Ty::Bool,
        "false",
        "Also set the tokens as `__Host-` cookies (`Secure; HttpOnly; SameSite=Strict; Path=/`) and read them back, for browser apps.",
    ),
    key(
        "auth.lockout.max_failures",
        Ty::Int {
            min: 1,
            max: 10_000,
        },
        "5",
        "Failed logins per (account, source) within `window` that lock that pair.",
    ),
    key(
        "auth.lockout.window",
        Ty::Duration {
            min: secs(1),
            max: secs(DAY),
        },
        "\"15m\"",
        "How long failures are remembered after the last one; also the per-source window.",
    ),
    key(
        "auth.lockout.lock_for",
        Ty::Duration {
            min: secs(1),
            max: secs(DAY),
        },
        "\"1m\"",
        "The first lock of a pair; each further lock of the pair doubles it.",
    ),
    key(
        "auth.lockout.max_lock",
        Ty::Duration {
            min: secs(1),
            max: secs(7 * DAY),
        },
        "\"15m\"",
        "The longest lock.",
    ),
    key(
        "auth.lockout.account_max_failures",
        Ty::Int {
            min: 1,
            max: 1_000_000,
        },
        "100",
        "Failed logins per account per hour, all sources together: a hard ceiling (ASVS: at most 100 an hour).",
    ),
    key(
        "auth.lockout.ip_max_failures",
        Ty::Int {
            min: 1,
            max: 1_000_000,
        },
        "20",
        "Failed logins per source within `window`, all accounts together: credential stuffing from one address stops here.",
    ),
    key(
        "rate_limit.enabled",
        Ty::Bool,
        "true",
        "Apply the tier quotas and the routes' `rate_limit`s.",
    ),
    key(
        "rate_limit.algorithm",
        Ty::Enum(&["gcra", "sliding_window"]),
        "\"gcra\"",
        "`gcra`: at most `burst` at once, then one every `per / limit`, exact at every instant. `sliding_window`: at most about `limit` in any window of `per` (the previous window weighted by its overlap).",
    ),
    key(
        "rate_limit.headers",
        Ty::Enum(&["draft", "legacy", "both", "none"]),
        "\"draft\"",
        "Which headers tell clients their quota: `draft` = `RateLimit-Policy` and `RateLimit` (draft-ietf-httpapi-ratelimit-headers-10), `legacy` = `X-RateLimit-Limit`, `-Remaining`, `-Reset` (Unix seconds, as express-rate-limit sends it).",
    ),
    key(
        "rate_limit.ipv6_prefix",
        Ty::Int { min: 32, max: 128 },
        "56",
        "Clients keyed by address are keyed by this IPv6 network (an end site gets a /56 or /64), so one client is not a billion keys. IPv4 addresses are keyed whole.",
    ),
    key(
        "rate_limit.on_redis_down",
        Ty::Enum(&["local", "allow", "deny"]),
        "\"local\"",
        "While Redis is unavailable: `local` = limits in this instance's memory, quotas divided by `instances`; `allow` = no limit; `deny` = 503 with `Retry-After`. A route's `on_redis_down` overrides it.",
    ),
    key(
        "csrf.enabled",
        Ty::Bool,
        "true",
        "Refuse state-changing requests (not `GET`, `HEAD`, `OPTIONS`) that carry cookies unless they come from this site and present a CSRF token: first `Sec-Fetch-Site`, then `Origin` (or `Referer`), then the token. Requests with an `Authorization` header and no cookies are exempt.",
    ),
    key(
        "csrf.token_ttl",
        Ty::Duration {
            min: secs(60),
            max: secs(DAY),
        },
        "\"2h\"",
        "Lifetime of a CSRF token. A session keeps one token, shared by its tabs, renewed after half its lifetime; the previous ones stay valid until they expire.",
    ),
    key(
        "csrf.header",
        Ty::Str,
        "\"x-csrf-token\"",
        "Request header that carries the token.",
    ),
    key(
        "csrf.form_field",
        Ty::Str,
        "\"_csrf\"",
        "Form field that carries the token in `application/x-www-form-urlencoded` and `multipart/form-data` bodies (never the query string or a JSON body). The body still reaches the upstream unchanged.",
    ),
    key(
        "csrf.trusted_origins",
        Ty::StrList,
        "[]",
        "Other origins (`https://admin.example`) whose pages may send state-changing requests, besides the gateway's own.",
    ),
    key(
        "csrf.on_redis_down",
        Ty::Enum(&["stateless", "deny"]),
        "\"stateless\"",
        "While Redis is unavailable: `stateless` = the token's signature, session binding and expiry are still checked (a logout during the outage is not seen); `deny` = 503 with `Retry-After`.",
    ),
    key(
        "csrf.session_cookie",
        Ty::Str,
        "\"\"",
        "Name of the upstream's own session cookie (e.g. `connect.sid`): tokens for requests without a gateway session are bound to its value. Empty: they are bound to a `__Host-csrf-session` cookie the gateway sets with the first token.",
    ),
    key(
        "csrf.secret_file",
        Ty::Path,
        "\"\"",
        "File holding the secret (at least 32 bytes) that signs CSRF tokens; every instance needs the same. Empty: derived from the keys of `auth.signing_key_file`, and when that is empty too, a new secret each start (a warning says so).",
    ),
    key(
        "headers.profile",
        Ty::Enum(&["api", "web", "off"]),
        "\"api\"",
        "Security headers on every response, refusals included: `api` = a CSP that allows nothing, `nosniff`, `X-Frame-Options: DENY`, `Referrer-Policy: no-referrer`, `Cross-Origin-Resource-Policy: same-origin`, `Cache-Control: no-store` when the upstream sent none; `web` = helmet 8's defaults exactly; `off` = none. Profile headers replace the upstream's; unless `off`, the upstream's `Server`, `X-Powered-By`, `X-AspNet-Version` and `X-AspNetMvc-Version` are removed. A route's `headers` overrides it.",
    ),
    key(
        "headers.hsts",
        Ty::Bool,
        "true",
        "Send `Strict-Transport-Security: max-age=31536000; includeSubDomains` (with `api` and `web`), only on requests that came over TLS or from a trusted proxy saying `X-Forwarded-Proto: https`.",
    ),
    key(
        "cors.allowed_origins",
        Ty::StrList,
        "[]",
        "Origins (`https://app.example`, exact; `*` for any, only without credentials) whose pages may read responses. An allowed origin is echoed, never `*`; `null` is never allowed. Empty: no CORS headers at all. When set, every response has `Vary: Origin` and preflights are answered by the gateway, before auth, rate limits and CSRF, never proxied.",
    ),
    key(
        "cors.allowed_methods",
        Ty::Methods,
        "[\"GET\", \"HEAD\", \"POST\", \"PUT\", \"PATCH\", \"DELETE\"]",
        "Methods a preflight may ask for.",
    ),
    key(
        "cors.allowed_headers",
        Ty::StrList,
        "[\"authorization\", \"content-type\", \"x-csrf-token\", \"x-request-id\"]",
        "Request headers a preflight may ask for.",
    ),
    key(
        "cors.exposed_headers",
        Ty::StrList,
        "[\"x-request-id\", \"ratelimit\", \"ratelimit-policy\", \"retry-after\"]",
        "Response headers scripts of an allowed origin may read.",
    ),
    key(
        "cors.allow_credentials",
        Ty::Bool,
        "false",
        "Let allowed origins send cookies and read the answers (`Access-Control-Allow-Credentials: true`). Refused together with `*` in `cors.allowed_origins`.",
    ),
    key(
        "cors.max_age",
        Ty::Duration {
            min: secs(0),
            max: secs(DAY),
        },
        "\"10m\"",
        "How long browsers may cache a preflight answer.",
    ),
    key(
        "trace.otlp_endpoint",
        Ty::HttpUrl,
        "\"\"",
        "OpenTelemetry collector to export spans to over OTLP/HTTP (protobuf), as a base URL: spans are `POST`ed to `{endpoint}/v1/traces`, e.g. `http://127.0.0.1:4318`. When this key is unset, `OTEL_EXPORTER_OTLP_ENDPOINT` is used. Empty: no spans are made at all.",
    ),
    key(
        "trace.service_name",
        Ty::Str,
        "\"portcullis\"",
        "`service.name` of the exported spans.",
    ),
    key(
        "trace.sample_ratio",
        Ty::Float { min: 0.0, max: 1.0 },
        "1.0",
        "Share of new traces recorded and exported. A request continuing a client's `traceparent` follows the client's sampled flag instead (parent-based sampling).",
    ),
    key(
        "audit.file",
        Ty::Path,
        "\"\"",
        "Audit log: hash-chained JSON lines (`seq`, `ts`, `action`, `actor`, `target`, `outcome`, `request_id`, `prev_hash`, `hash`) of admin-API changes, login outcomes, refresh reuse, lockouts and unlocks, and requests to routes with `audit = true`, each flushed before its response; check it with `portcullis audit verify FILE`. Empty: audit records go only to the log stream (target `portcullis::audit`).",
    ),
    key(
        "alerts.webhook_url",
        Ty::HttpUrl,
        "\"\"",
        "Security events are `POST`ed here as JSON `{\"kind\", \"severity\", \"summary\", \"key\", \"count\", \"first_seen\", \"last_seen\"}`, de-duplicated per kind and key, retried with back-off (1 s doubling to 60 s) for at least 10 minutes, from a bounded queue that never slows a request. Empty: no alerts.",
    ),
    key(
        "alerts.dedup_window",
        Ty::Duration {
            min: secs(1),
            max: secs(DAY),
        },
        "\"1m\"",
        "Events of the same kind and key within this window after one was sent are folded into one alert at the window's end whose `count` says how many; that alert opens the next window, and a window with nothing folded ends silently. At most one alert per kind and key per window.",
    ),
    key(
        "alerts.suspicious_per_minute",
        Ty::Int {
            min: 0,
            max: 100_000,
        },
        "20",
        "Raise a `suspicious_activity` alert when one source causes this many `invalid_token` or `csrf_rejected` events within a minute. 0: off.",
    ),
    key(
        "cache.enabled",
        Ty::Bool,
        "false",
        "Cache the `GET` and `HEAD` answers of every route that the upstream marks fresh (`s-maxage`, `max-age`, `Expires`), as a shared HTTP cache would; anonymous requests only. Routes with `cache = {…}` are cached whatever this says.",
    ),
    key(
        "cache.max_entries",
        Ty::Int {
            min: 1,
            max: 100_000_000,
        },
        "10000",
        "Entries each instance keeps in memory; the least useful are evicted beyond.",
    ),
    key(
        "cache.max_body",
        Ty::Size { min: 1, max: GIB },
        "\"1MiB\"",
        "Largest response body stored; larger answers stream through uncached.",
    ),
    key(
        "cache.max_memory",
        Ty::Size {
            min: MIB,
            max: 64 * GIB,
        },
        "\"64MiB\"",
        "Memory the in-memory tier may use for entries (bodies, headers, keys), counting each entry as at least `max_memory / max_entries`.",
    ),
    key(
        "memory.max_keys",
        Ty::Int {
            min: 1000,
            max: 100_000_000,
        },
        "1000000",
        "Most entries the in-memory store holds (the state itself without Redis, the fallback with it). When full, the entries closest to expiry are evicted, so a key flood cannot grow memory. About 80 bytes per entry (a million keys: ~75 MiB).",
    ),
    key(
        "limits.body",
        Ty::Size {
            min: 1,
            max: 64 * GIB,
        },
        "\"1MiB\"",
        "Largest request body; 413 beyond. Enforced while streaming, with or without `Content-Length`.",
    ),
    key(
        "limits.header_bytes",
        Ty::Size { min: 1, max: MIB },
        "\"16KiB\"",
        "Largest total size of request header fields; 431 beyond.",
    ),
    key(
        "limits.header_count",
        Ty::Int {
            min: 1,
            max: 10_000,
        },
        "100",
        "Most request header fields; 431 beyond.",
    ),
    key(
        "limits.uri_bytes",
        Ty::Size { min: 1, max: MIB },
        "\"8KiB\"",
        "Longest request target (path and query); 414 beyond.",
    ),
    key(
        "limits.json_depth",
        Ty::Int { min: 1, max: 127 },
        "32",
        "Deepest nesting accepted in JSON bodies of routes that validate them.",
    ),
    key(
        "limits.request_timeout",
        Ty::Duration {
            min: Duration::from_millis(1),
            max: secs(DAY),
        },
        "\"30s\"",
        "Bounds the whole exchange: a slow client gets 408, a slow upstream 504, a stalled response is cut off.",
    ),
    key(
        "limits.header_timeout",
        Ty::Duration {
            min: Duration::from_millis(100),
            max: secs(300),
        },
        "\"10s\"",
        "Time a client has to send a whole request head (for every request on a connection); a client dripping its headers (slowloris) is disconnected. Also the grace before `limits.body_min_rate` applies.",
    ),
    key(
        "limits.body_min_rate",
        Ty::Size { min: 0, max: GIB },
        "\"500B\"",
        "Slowest average request-body rate, in bytes per second, counted from `limits.header_timeout` after the body starts (as Apache's mod_reqtimeout does); slower clients get 408 and are disconnected. `0B`: no minimum.",
    ),
    key(
        "limits.max_connections",
        Ty::Int {
            min: 1,
            max: 1_000_000,
        },
        "10000",
        "Most client connections open at once on the main listener; more wait in the kernel's accept queue until one closes. Keep it below the process's file-descriptor limit.",
    ),
    key(
        "log.format",
        Ty::Enum(&["json", "pretty"]),
        "\"json\"",
        "`json`: one JSON object per line. `pretty`: for a terminal.",
    ),
    key(
        "log.level",
        Ty::Str,
        "\"info\"",
        "`error`, `warn`, `info`, `debug` or `trace`, or a filter such as `info,portcullis=debug`. Access logs are at `info`.",
    ),
    key(
        "log.file",
        Ty::Path,
        "\"\"",
        "Write logs to this file (rotated) instead of standard output.",
    ),
    key(
        "log.rotation",
        Ty::Enum(&["hourly", "daily", "never"]),
        "\"daily\"",
        "When `log.file` rotates, in UTC: `daily` writes `{file}.YYYY-MM-DD`, `hourly` `{file}.YYYY-MM-DD-HH`, `never` `{file}`. Each line goes to the file of its own `ts`.",
    ),
    key(
        "log.retain",
        Ty::Int {
            min: 1,
            max: 10_000,
        },
        "14",
        "How many log files to keep, the current one included; older ones are deleted.",
    ),
    key(
        "log.redact_headers",
        Ty::StrList,
        "[\"authorization\", \"proxy-authorization\", \"cookie\", \"set-cookie\", \"x-api-key\", \"x-csrf-token\"]",
        "Header names whose values are logged as `[redacted]`.",
    ),
    key(
        "log.redact_fields",
        Ty::StrList,
        "[\"password\", \"passwd\", \"secret\", \"token\", \"access_token\", \"refresh_token\", \"client_secret\", \"card_number\", \"cvv\"]",
        "Query parameter and JSON field names whose values are logged as `[redacted]`, at any depth.",
    ),
];

/// An array of tables (`[[routes]]`): file only.
#[derive(Debug)]
pub(crate) struct TableArrayDef {
    pub(crate) key: &'static str,
    pub(crate) doc: &'static str,
    pub(crate) fields: &'static [KeyDef],
}

pub(crate) static ROUTE_FIELDS: &[KeyDef] = &[
    required(
        "path",
        Ty::Glob,
        "Path glob the route covers, e.g. `/admin/**` or `/api/*/items`. Matched against the normalised path, ignoring ASCII case and a trailing slash.",
    ),
    key(
        "name",
        Ty::Str,
        "\"\"",
        "Name in logs and metrics (letters, digits, `.`, `_`, `-`). Default: `route-N`, N its position from 0.",
    ),
    key(
        "methods",
        Ty::Methods,
        "[\"*\"]",
        "Methods the route covers; `[\"*\"]` for all.",
    ),
    key(
        "roles",
        Ty::StrList,
        "[]",
        "Roles that may use the route; a caller needs one of them. Without an identity: 401; without the role: 403; the upstream is not reached. Empty: no identity required.",
    ),
    key(
        "rate_limit.limit",
        Ty::Int {
            min: 1,
            max: 1_000_000_000,
        },
        UNSET,
        "This route's own quota, replacing the caller's tier quota: requests per `rate_limit.per`. Written `rate_limit = { limit = 30, per = \"1m\", key = \"subject\" }`. Unset: the tier quota applies.",
    ),
    key(
        "rate_limit.per",
        Ty::Duration {
            min: Duration::from_millis(1),
            max: secs(DAY),
        },
        "\"1m\"",
        "The window of the route's quota.",
    ),
    key(
        "rate_limit.burst",
        Ty::Int {
            min: 1,
            max: 1_000_000_000,
        },
        UNSET,
        "Requests allowed at once (GCRA). Default: `limit`.",
    ),
    key(
        "rate_limit.key",
        Ty::Enum(&["subject", "ip", "subject_or_ip"]),
        "\"subject_or_ip\"",
        "Whom the route's quota counts: `subject` = each verified subject (callers without an identity get the `anonymous` tier instead, by address); `ip` = each client address; `subject_or_ip` = the subject when there is one, else the address.",
    ),
    key(
        "count",
        Ty::Enum(&["all", "failures"]),
        "\"all\"",
        "`failures`: only answers with status 400 or above use up the quota (for login-like routes); requests are still refused once it is used up.",
    ),
    key(
        "on_redis_down",
        Ty::Enum(&["default", "local", "allow", "deny"]),
        "\"default\"",
        "This route's rate-limit fail mode while Redis is unavailable; `default` = `rate_limit.on_redis_down`. Use `deny` for routes that must never run unlimited (503 with `Retry-After`).",
    ),
    key(
        "audit",
        Ty::Bool,
        "false",
        "Write an audit record (`route.request`, the caller, the method and path, the status) for every request to this route.",
    ),
    key(
        "headers",
        Ty::Enum(&["default", "api", "web", "off"]),
        "\"default\"",
        "This route's security-header profile; `default` = `headers.profile`.",
    ),
    key(
        "body_limit",
        Ty::Size {
            min: 1,
            max: 64 * GIB,
        },
        UNSET,
        "This route's largest request body, replacing `limits.body` (larger or smaller); 413 beyond. Unset: `limits.body`.",
    ),
    key(
        "schema",
        Ty::Path,
        "\"\"",
        "A JSON Schema (Draft 2020-12) file that request bodies on this route must match; a relative path is read from the configuration file's directory. Compiled at start (an invalid schema is a configuration error); remote `$ref`s are never fetched. Requests with a body (and every `POST`, `PUT` and `PATCH`) must then be `application/json` or `+json` in UTF-8 (415), strict JSON no deeper than `limits.json_depth` (400), and match the schema (422 listing each failing location, never the values). The body is read whole, up to the route's body limit, before it is forwarded.",
    ),
    key(
        "sanitize_html",
        Ty::StrList,
        "[]",
        "JSON string fields rewritten with an allow-list HTML sanitizer (ammonia) before forwarding, `Content-Length` updated; everything else is forwarded byte for byte. Each entry names a field from the top-level object, `/` between levels (`comment`, `author/bio`), `*` for every element of an array or member of an object (`items/*/note`). Bodies are read and checked as with `schema` (without one, only as strict JSON).",
    ),
    key(
        "cache.ttl",
        Ty::Duration {
            min: secs(1),
            max: secs(DAY),
        },
        UNSET,
        "Cache this route's `GET` and `HEAD` answers: `ttl` caps the upstream's freshness and is the freshness of 200, 203 and 204 answers that state none (errors are stored only with explicit freshness). Written `cache = { ttl = \"30s\", tags = [\"products\"] }`; any `cache` key turns caching on for the route. Responses with `Set-Cookie`, `private`, `no-store` or `no-cache` are never stored; answers carry `X-Cache: HIT|MISS|BYPASS` and hits `Age`. Unset: only the upstream's explicit freshness.",
    ),
    key(
        "cache.tags",
        Ty::StrList,
        "[]",
        "Tags of this route's entries, for `POST /admin/cache/purge {\"tag\": …}`.",
    ),
    key(
        "cache.per_subject",
        Ty::Bool,
        "false",
        "Also cache answers to authenticated requests, one entry per verified subject (`private` answers included). Without it, requests with credentials bypass the cache.",
    ),
    key(
        "login.username_field",
        Ty::Str,
        "\"\"",
        "Put account lockout in front of the upstream's own login route: the username is read from this JSON or form field of the request body; the upstream's 401 and 403 count as failures. Written `login = { username_field = \"email\" }`.",
    ),
];

pub(crate) static ISSUER_FIELDS: &[KeyDef] = &[
    required(
        "issuer",
        Ty::Str,
        "The `iss` of the issuer's tokens, e.g. `https://idp.example`.",
    ),
    required(
        "jwks_url",
        Ty::HttpUrl,
        "Where the issuer publishes its keys (JWK Set). Fetched at start, every 10 minutes, and when a token names an unknown `kid` (at most every 30 s).",
    ),
    key(
        "audience",
        Ty::Str,
        "\"\"",
        "The `aud` its tokens must carry. Default: `auth.audience`.",
    ),
    key(
        "algorithms",
        Ty::StrList,
        "[\"RS256\"]",
        "Algorithms accepted from this issuer: `RS256`, `RS384`, `RS512`, `PS256`, `PS384`, `PS512`, `ES256`, `ES384`, `EdDSA` (never HMAC: a published key is public).",
    ),
    key(
        "roles_claim",
        Ty::Str,
        "\"roles\"",
        "The claim holding the roles: a list, or a space-separated string.",
    ),
];

/// A table of named tables (`[rate_limit.tiers]`): file only.
#[derive(Debug)]
pub(crate) struct MapDef {
    pub(crate) key: &'static str,
    pub(crate) doc: &'static str,
    /// The entries present when the file names none.
    pub(crate) defaults: &'static [(&'static str, &'static str)],
    pub(crate) fields: &'static [KeyDef],
}

pub(crate) static TIER_FIELDS: &[KeyDef] = &[
    required(
        "limit",
        Ty::Int {
            min: 1,
            max: 1_000_000_000,
        },
        "Requests per `per`.",
    ),
    key(
        "per",
        Ty::Duration {
            min: Duration::from_millis(1),
            max: secs(DAY),
        },
        "\"1m\"",
        "The window.",
    ),
    key(
        "burst",
        Ty::Int {
            min: 1,
            max: 1_000_000_000,
        },
        UNSET,
        "Requests allowed at once (GCRA). Default: `limit`.",
    ),
];

pub(crate) static MAPS: &[MapDef] = &[MapDef {
    key: "rate_limit.tiers",
    doc: "Quotas by role, as `role = { limit = N, per = \"1m\", burst = N }`. A caller gets the quota of its best role (the highest rate); callers without an identity get `anonymous`, counted by address; identified callers are counted by subject. One bucket per caller is shared by every route without its own `rate_limit`, `/auth/*` included. Entries in the file replace the defaults of the same name; the others stay.",
    defaults: &[
        ("anonymous", "{ limit = 60, per = \"1m\", burst = 20 }"),
        ("user", "{ limit = 600, per = \"1m\" }"),
        ("admin", "{ limit = 6000, per = \"1m\" }"),
    ],
    fields: TIER_FIELDS,
}];

/// A table of free names to strings, such as `[headers.set]`.
#[derive(Debug)]
pub(crate) struct StringMapDef {
    pub(crate) key: &'static str,
    pub(crate) doc: &'static str,
    pub(crate) example: &'static str,
}

pub(crate) static STRING_MAPS: &[StringMapDef] = &[StringMapDef {
    key: "headers.set",
    doc: "Response headers set on every response after the profile, replacing the upstream's (also with `headers.profile = \"off\"`); an empty string removes the header.",
    example: "\"Permissions-Policy\" = \"geolocation=()\"\n\"X-Powered-By\" = \"\"",
}];

pub(crate) static TABLE_ARRAYS: &[TableArrayDef] = &[
    TableArrayDef {
        key: "routes",
        doc: "Per-route rules. The first route whose `path` and `methods` match a request applies; routes apply to the gateway's own paths too. Requests matching no route get the global rules.",
        fields: ROUTE_FIELDS,
    },
    TableArrayDef {
        key: "auth.issuers",
        doc: "External issuers whose access tokens are accepted too, verified with their published keys. Their tokens may have any `typ`; they carry no session, so logout does not apply to them.",
        fields: ISSUER_FIELDS,
    },
];

/// Variables that are not keys but are read too.
pub(crate) const ENV_CONFIG_FILE: &str = "PORTCULLIS_CONFIG";

/// The standard OpenTelemetry variable read for `trace.otlp_endpoint` when the key is
/// unset (not a `PORTCULLIS_*` variable, so never an unknown one).
pub(crate) const ENV_OTLP_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

/// The prefix of every variable the gateway reads.
pub(crate) const ENV_PREFIX: &str = "PORTCULLIS_";

/// The environment variable of a key: `PORTCULLIS_` and the key in upper case, dots and
/// dashes as `_`.
pub(crate) fn env_name(key: &str) -> String {
    let mut s = String::with_capacity(ENV_PREFIX.len() + key.len());
    s.push_str(ENV_PREFIX);
    for c in key.chars() {
        s.push(match c {
            '.' | '-' => '_',
            c => c.to_ascii_uppercase(),
        });
    }
    s
}

/// Whether a key can be set from the environment.
pub(crate) fn from_env(_def: &KeyDef) -> bool {
    // Every scalar key (lists included, comma-separated) has a variable; arrays of tables
    // are not in `KEYS`.
    true
}

/// The key definition for a dotted key.
pub(crate) fn find(defs: &'static [KeyDef], key: &str) -> Option<&'static KeyDef> {
    defs.iter().find(|d| d.key == key)
}

/// The closest of `candidates` to `word`, if it is close enough to be a likely typo.
pub(crate) fn suggest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let word = word.to_ascii_lowercase();
    candidates
        .into_iter()
        .map(|c| (edit_distance(&word, &c.to_ascii_lowercase()), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names_are_unique_and_derived() {
        let mut seen = std::collections::HashSet::new();
        for d in KEYS {
            assert!(
                seen.insert(env_name(d.key)),
                "duplicate env name for {}",
                d.key
            );
        }
        assert_eq!(
            env_name("redis.breaker.failure_rate"),
            "PORTCULLIS_REDIS_BREAKER_FAILURE_RATE"
        );
        assert_eq!(env_name("admin_listen"), "PORTCULLIS_ADMIN_LISTEN");
    }

    #[test]
    fn suggestions() {
        let keys = ["listen", "admin_listen", "upstream"];
        assert_eq!(suggest("upstrem", keys), Some("upstream"));
        assert_eq!(suggest("lisen", keys), Some("listen"));
        assert_eq!(suggest("zzzzzzzz", keys), None);
    }
}
