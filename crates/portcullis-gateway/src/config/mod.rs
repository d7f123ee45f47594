//! Configuration: defaults < TOML file < `PORTCULLIS_*` environment < command-line flags.
//!
//! [`keys`] declares every key once; [`Config::load`] reads them through the
//! [`load::Loader`] into narrow types, validates across keys, and returns either a
//! complete configuration or every problem found. Nothing is bound or connected before
//! this succeeds.

mod keys;
mod load;
pub mod reference;
mod value;

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use http::uri::{Authority, Scheme, Uri};
use portcullis::cors::{Cors, CorsConfig as CorsPolicy};
use portcullis::headers::Profile;
use portcullis::path::PathPattern;
use portcullis::validate::{BodyRules, CompiledSchema, FieldPath, JsonDepth};
use portcullis_core::Secret;
use portcullis_core::breaker::BreakerConfig;
use portcullis_core::net::TrustedProxies;
use portcullis_core::store::RedisConfig;

pub use load::{ConfigError, ConfigErrors, Flag, Origin, Sources};

/// Parses a duration as the configuration writes them (`"250ms"`, `"10m"`, `"1h30m"`).
pub fn parse_duration(s: &str) -> Option<Duration> {
    value::parse_duration(s)
}

use load::Loader;

/// The validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Main listener.
    pub listen: SocketAddr,
    /// Admin listener.
    pub admin_listen: SocketAddr,
    /// The protected service (required by `serve`).
    pub upstream: Option<Upstream>,
    /// Networks whose forwarding headers are believed.
    pub trusted_proxies: TrustedProxies,
    /// Instances sharing the store.
    pub instances: NonZeroU32,
    /// Drain time on shutdown.
    pub shutdown_grace: Duration,
    /// TLS on the main listener.
    pub tls: Option<TlsFiles>,
    /// Extra CA certificates for an `https://` upstream.
    pub upstream_ca_file: Option<PathBuf>,
    /// Shared state.
    pub store: StoreConfig,
    /// Identity.
    pub auth: AuthConfig,
    /// Rate limiting.
    pub rate_limit: RateLimitConfig,
    /// CSRF protection.
    pub csrf: CsrfConfig,
    /// The audit log file.
    pub audit_file: Option<PathBuf>,
    /// The response cache.
    pub cache: crate::cache::CacheConfig,
    /// The alert webhook; `None` without `alerts.webhook_url`.
    pub alerts: Option<crate::alerts::AlertsConfig>,
    /// Security headers.
    pub headers: HeadersConfig,
    /// CORS; `None` when no origin is allowed (no CORS headers at all).
    pub cors: Option<Cors>,
    /// Request limits.
    pub limits: Limits,
    /// Logging.
    pub log: LogConfig,
    /// OpenTelemetry tracing; `None` when no endpoint is set (no spans are made).
    pub trace: Option<TraceConfig>,
    /// Per-route rules, first match wins.
    pub routes: Vec<RouteConfig>,
}

/// `[csrf]`.
#[derive(Clone, Debug)]
pub struct CsrfConfig {
    /// Whether CSRF protection is on.
    pub enabled: bool,
    /// Lifetime of a token.
    pub token_ttl: Duration,
    /// The request header carrying the token.
    pub header: http::HeaderName,
    /// The form field carrying the token.
    pub form_field: String,
    /// Other origins allowed to send state-changing requests.
    pub trusted_origins: Vec<String>,
    /// `true`: 503 while Redis is unavailable; `false`: stateless checks.
    pub deny_when_down: bool,
    /// The upstream's session cookie tokens are bound to, for requests without a
    /// gateway session.
    pub session_cookie: Option<String>,
    /// The secret's file.
    pub secret_file: Option<PathBuf>,
}

/// `[headers]`.
#[derive(Clone, Debug)]
pub struct HeadersConfig {
    /// The default profile.
    pub profile: Profile,
    /// Whether HSTS is sent (on secure requests).
    pub hsts: bool,
    /// `[headers.set]`: `None` removes.
    pub set: Vec<(http::HeaderName, Option<http::HeaderValue>)>,
}

/// Where the protected service is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upstream {
    /// `http` or `https`.
    pub scheme: Scheme,
    /// Host and port.
    pub authority: Authority,
    /// A path prefix without a trailing slash (`""` for none).
    pub base_path: String,
}

impl Upstream {
    /// Parses `http://host:port/prefix`; refuses user info, queries and fragments.
    pub fn parse(s: &str) -> Result<Self, String> {
        let want = "expected an http:// or https:// URL such as \"http://127.0.0.1:3000\"";
        if s.contains('@') {
            return Err(format!(
                "{want}, without user info: the gateway does not send credentials upstream"
            ));
        }
        let uri: Uri = s.trim().parse().map_err(|_| want.to_owned())?;
        let scheme = uri.scheme().cloned().ok_or_else(|| want.to_owned())?;
        if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
            return Err(want.into());
        }
        let authority = uri.authority().cloned().ok_or_else(|| want.to_owned())?;
        if authority.host().is_empty() {
            return Err(want.into());
        }
        if uri.query().is_some() || s.contains('#') {
            return Err(format!("{want}, without a query or fragment"));
        }
        let base_path = uri.path().trim_end_matches('/').to_owned();
        Ok(Self {
            scheme,
            authority,
            base_path,
        })
    }

    /// Whether the upstream speaks TLS.
    pub fn is_https(&self) -> bool {
        self.scheme == Scheme::HTTPS
    }
}

impl std::fmt::Display for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}{}", self.scheme, self.authority, self.base_path)
    }
}

/// Certificate and key of the main listener.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// PEM certificate chain.
    pub cert_file: PathBuf,
    /// PEM private key.
    pub key_file: PathBuf,
}

/// What a rate limit does while Redis is unavailable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RedisDown {
    /// Limits in memory, quotas divided by `instances`.
    Local,
    /// No limit.
    Allow,
    /// 503 with `Retry-After`.
    Deny,
}

impl RedisDown {
    /// The configuration word.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Allow => "allow",
            Self::Deny => "deny",
        }
    }
}

/// Which rate-limit headers to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateLimitHeaders {
    /// `RateLimit-Policy` and `RateLimit`.
    Draft,
    /// `X-RateLimit-*`.
    Legacy,
    /// Both sets.
    Both,
    /// None.
    None,
}

/// Whom a route's quota counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateKey {
    /// The verified subject (by address without one).
    Subject,
    /// The client address.
    Ip,
    /// The subject when there is one, else the address.
    SubjectOrIp,
}

impl RateKey {
    /// The configuration word.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Subject => "subject",
            Self::Ip => "ip",
            Self::SubjectOrIp => "subject_or_ip",
        }
    }
}

/// A tier: a role's quota.
#[derive(Clone, Debug)]
pub struct Tier {
    /// The role (or `anonymous`).
    pub role: String,
    /// Its quota.
    pub quota: portcullis_core::ratelimit::Quota,
}

/// `[rate_limit]`.
#[derive(Clone, Debug)]
pub struct RateLimitConfig {
    /// On or off.
    pub enabled: bool,
    /// The algorithm.
    pub algorithm: portcullis_core::ratelimit::Algorithm,
    /// Which headers.
    pub headers: RateLimitHeaders,
    /// IPv6 grouping.
    pub ipv6_prefix: u8,
    /// Default fail mode.
    pub on_redis_down: RedisDown,
    /// Quotas by role, `anonymous` included.
    pub tiers: Vec<Tier>,
}

/// A route's own rate limit.
#[derive(Clone, Debug)]
pub struct RouteRateLimit {
    /// The quota.
    pub quota: portcullis_core::ratelimit::Quota,
    /// Whom it counts.
    pub key: RateKey,
}

/// Identity (`[auth]`).
#[derive(Clone, Debug)]
pub struct AuthConfig {
    /// Verify tokens, serve `/auth/*`, enforce roles.
    pub enabled: bool,
    /// `iss` of our tokens.
    pub issuer: String,
    /// `aud` of our tokens.
    pub audience: String,
    /// Signing keys, else an ephemeral one.
    pub signing_key_file: Option<PathBuf>,
    /// Access token lifetime.
    pub access_ttl: Duration,
    /// Absolute refresh family lifetime.
    pub refresh_ttl: Duration,
    /// Idle refresh family lifetime.
    pub refresh_idle_ttl: Duration,
    /// Grace for the previous refresh token.
    pub refresh_reuse_grace: Duration,
    /// The users file.
    pub users_file: Option<PathBuf>,
    /// A path on the upstream that checks credentials.
    pub credentials_upstream: Option<String>,
    /// Tokens also as cookies.
    pub cookies: bool,
    /// Lockout settings.
    pub lockout: LockoutConfig,
    /// External issuers.
    pub issuers: Vec<portcullis_core::token::external::IssuerConfig>,
}

/// `[auth.lockout]`.
#[derive(Clone, Debug)]
pub struct LockoutConfig {
    /// Failures per pair within `window` that lock it.
    pub max_failures: u32,
    /// Memory of failures; per-source window.
    pub window: Duration,
    /// First lock.
    pub lock_for: Duration,
    /// Longest lock.
    pub max_lock: Duration,
    /// Per account per hour.
    pub account_max_failures: u32,
    /// Per source per window.
    pub ip_max_failures: u32,
}

/// Where state lives (`[redis]`, `[memory]`).
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// Redis, when `redis.url` is set.
    pub redis: Option<RedisConfig>,
    /// Prefix of every key.
    pub key_prefix: String,
    /// Most entries in the memory store.
    pub memory_max_keys: usize,
}

/// Request limits (`[limits]`).
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest body.
    pub body: u64,
    /// Largest total header bytes.
    pub header_bytes: u64,
    /// Most header fields.
    pub header_count: usize,
    /// Longest request target.
    pub uri_bytes: u64,
    /// Deepest JSON nesting (routes that validate JSON).
    pub json_depth: u32,
    /// Bound on the whole exchange.
    pub request_timeout: Duration,
    /// Time to send a request head; also the grace before `body_min_rate`.
    pub header_timeout: Duration,
    /// Slowest average body rate, bytes per second (0: none).
    pub body_min_rate: u64,
    /// Most open client connections.
    pub max_connections: usize,
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable, for a terminal.
    Pretty,
}

/// When the log file rotates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rotation {
    /// Every hour.
    Hourly,
    /// Every day.
    Daily,
    /// Never.
    Never,
}

/// Logging (`[log]`).
#[derive(Clone, Debug)]
pub struct LogConfig {
    /// Output format.
    pub format: LogFormat,
    /// A level or filter directive, already validated.
    pub level: String,
    /// Log file, else standard output.
    pub file: Option<PathBuf>,
    /// Rotation of the log file.
    pub rotation: Rotation,
    /// Files kept.
    pub retain: usize,
    /// Header names (lower case) whose values are redacted.
    pub redact_headers: Vec<String>,
    /// Query and JSON field names (lower case) whose values are redacted.
    pub redact_fields: Vec<String>,
}

/// Tracing (`[trace]`), when an endpoint is set.
#[derive(Clone, Debug)]
pub struct TraceConfig {
    /// Where spans are `POST`ed: the endpoint with `/v1/traces` appended.
    pub traces_url: String,
    /// `service.name` of the spans.
    pub service_name: String,
    /// Share of new traces sampled, in `0.0..=1.0`.
    pub sample_ratio: f64,
}

/// One `[[routes]]` entry.
#[derive(Clone, Debug)]
pub struct RouteConfig {
    /// Name in logs and metrics.
    pub name: Arc<str>,
    /// The path glob.
    pub path: PathPattern,
    /// Methods covered; `None` for all.
    pub methods: Option<Vec<Method>>,
    /// Roles allowed (one suffices); empty: no identity required.
    pub roles: Vec<String>,
    /// Lockout in front of the upstream's login route: the username field.
    pub login_username_field: Option<String>,
    /// The route's own quota.
    pub rate_limit: Option<RouteRateLimit>,
    /// Count only failed answers (status ≥ 400).
    pub count_failures: bool,
    /// Fail mode override.
    pub on_redis_down: Option<RedisDown>,
    /// Whether every request to the route is audited.
    pub audit: bool,
    /// The route's security-header profile, replacing `headers.profile`.
    pub headers: Option<Profile>,
    /// The route's body limit, replacing `limits.body`.
    pub body_limit: Option<u64>,
    /// Checks on JSON bodies (`schema`, `sanitize_html`); `None`: bodies stream through.
    pub body: Option<Arc<BodyRules>>,
    /// Its response caching (`cache = {…}`).
    pub cache: Option<crate::cache::RouteCache>,
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl Config {
    /// Reads and validates the configuration from `sources`.
    pub fn load(sources: &Sources) -> Result<Config, ConfigErrors> {
        let mut errors = Vec::new();
        let file = sources.config_file();
        let text = match &file {
            Some((path, origin)) => match std::fs::read_to_string(path) {
                Ok(t) => Some(t),
                Err(e) => {
                    errors.push(ConfigError {
                        key: "config file".into(),
                        origin: Some(origin.clone()),
                        message: format!("cannot read {}: {e}", path.display()),
                    });
                    None
                }
            },
            None => None,
        };
        let path_str: Option<Arc<str>> = file
            .as_ref()
            .map(|(p, _)| Arc::from(p.display().to_string()));
        let parsed = text.as_deref().map(toml::de::DeTable::parse_recoverable);
        if let (Some((_, syntax)), Some(text), Some(path)) = (&parsed, &text, &path_str) {
            for e in syntax {
                let line = e.span().map_or(1, |s| {
                    text.as_bytes()[..s.start.min(text.len())]
                        .iter()
                        .filter(|&&b| b == b'\n')
                        .count()
                        + 1
                });
                errors.push(ConfigError {
                    key: "config file".into(),
                    origin: Some(Origin::File {
                        path: path.clone(),
                        line,
                    }),
                    message: format!("not valid TOML: {}", e.message().trim()),
                });
            }
        }
        let file_arg = match (&parsed, &text, &path_str) {
            (Some((table, _)), Some(text), Some(path)) => {
                Some((table.get_ref(), text.as_str(), path.clone()))
            }
            _ => None,
        };
        let mut l = Loader::new(file_arg, &sources.env, &sources.flags);
        let config = read(&mut l);
        errors.append(&mut l.errors);
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(ConfigErrors(errors))
        }
    }
}

fn read(l: &mut Loader<'_>) -> Config {
    let listen = l.addr("listen");
    let admin_listen = l.addr("admin_listen");
    if listen == admin_listen && listen.port() != 0 {
        l.error(
            "admin_listen",
            format!("must differ from listen ({listen})"),
        );
    }
    let upstream_raw = l.string("upstream");
    let upstream = if upstream_raw.trim().is_empty() {
        None
    } else {
        match Upstream::parse(&upstream_raw) {
            Ok(u) => Some(u),
            Err(e) => {
                l.error("upstream", e);
                None
            }
        }
    };
    let trusted_proxies = TrustedProxies::new(l.cidrs("trusted_proxies"));
    let instances =
        NonZeroU32::new(u32::try_from(l.int("instances")).unwrap_or(1)).unwrap_or(NonZeroU32::MIN);
    let shutdown_grace = l.duration("shutdown_grace");

    let cert = l.path("tls.cert_file");
    let key = l.path("tls.key_file");
    let tls = match (cert, key) {
        (Some(cert_file), Some(key_file)) => Some(TlsFiles {
            cert_file,
            key_file,
        }),
        (None, None) => None,
        (Some(_), None) => {
            l.error("tls.key_file", "required when tls.cert_file is set");
            None
        }
        (None, Some(_)) => {
            l.error("tls.cert_file", "required when tls.key_file is set");
            None
        }
    };
    let upstream_ca_file = l.path("tls.upstream_ca_file");

    let store = read_store(l);
    let auth = read_auth(l);
    let rate_limit = read_rate_limit(l);
    let csrf = read_csrf(l);
    let audit_file = l.path("audit.file");
    let alerts = read_alerts(l);
    let cache = crate::cache::CacheConfig {
        enabled: l.boolean("cache.enabled"),
        max_entries: u64::try_from(l.int("cache.max_entries")).unwrap_or(10_000),
        max_body: l.size("cache.max_body"),
        max_memory: l.size("cache.max_memory"),
    };
    let headers = read_headers(l);
    let cors = read_cors(l);

    let limits = Limits {
        body: l.size("limits.body"),
        header_bytes: l.size("limits.header_bytes"),
        header_count: usize::try_from(l.int("limits.header_count")).unwrap_or(100),
        uri_bytes: l.size("limits.uri_bytes"),
        json_depth: u32::try_from(l.int("limits.json_depth")).unwrap_or(32),
        request_timeout: l.duration("limits.request_timeout"),
        header_timeout: l.duration("limits.header_timeout"),
        body_min_rate: l.size("limits.body_min_rate"),
        max_connections: usize::try_from(l.int("limits.max_connections")).unwrap_or(10_000),
    };

    let format = match l.choice("log.format") {
        "pretty" => LogFormat::Pretty,
        _ => LogFormat::Json,
    };
    let level = l.string("log.level");
    if !valid_log_filter(&level) {
        l.error(
            "log.level",
            format!("expected error, warn, info, debug or trace, or a filter such as \"info,portcullis=debug\"; got {level:?}"),
        );
    }
    let rotation = match l.choice("log.rotation") {
        "hourly" => Rotation::Hourly,
        "never" => Rotation::Never,
        _ => Rotation::Daily,
    };
    let log = LogConfig {
        format,
        level,
        file: l.path("log.file"),
        rotation,
        retain: usize::try_from(l.int("log.retain")).unwrap_or(14),
        redact_headers: lower_all(l.list("log.redact_headers")),
        redact_fields: lower_all(l.list("log.redact_fields")),
    };

    let trace = read_trace(l);
    let routes = read_routes(l, limits_json_depth(&limits));

    Config {
        listen,
        admin_listen,
        upstream,
        trusted_proxies,
        instances,
        shutdown_grace,
        tls,
        upstream_ca_file,
        store,
        auth,
        rate_limit,
        csrf,
        audit_file,
        alerts,
        cache,
        headers,
        cors,
        limits,
        log,
        trace,
        routes,
    }
}

fn read_trace(l: &mut Loader<'_>) -> Option<TraceConfig> {
    let from_key = l.string("trace.otlp_endpoint");
    let service_name = l.string("trace.service_name");
    let sample_ratio = l.float("trace.sample_ratio");
    if service_name.trim().is_empty() {
        l.error("trace.service_name", "must not be empty");
    }
    let (endpoint, key) = if l.is_set("trace.otlp_endpoint") {
        (from_key, "trace.otlp_endpoint")
    } else {
        match l.outside_env(keys::ENV_OTLP_ENDPOINT) {
            Some(v) => (v.to_owned(), keys::ENV_OTLP_ENDPOINT),
            None => return None,
        }
    };
    let endpoint = endpoint.trim();
    if endpoint.is_empty() {
        return None;
    }
    if Upstream::parse(endpoint).is_err() {
        let message = "expected the collector's base http:// or https:// URL, such as \"http://127.0.0.1:4318\" (spans go to /v1/traces under it)";
        if key == "trace.otlp_endpoint" {
            l.error(key, message);
        } else {
            l.error_at(key.to_owned(), Origin::Env(key.to_owned()), message);
        }
        return None;
    }
    Some(TraceConfig {
        traces_url: format!("{}/v1/traces", endpoint.trim_end_matches('/')),
        service_name: service_name.trim().to_owned(),
        sample_ratio,
    })
}

/// A level, or comma-separated `target=level` directives, e.g. `info,portcullis=debug`.
/// A bare word that is not a level would silently be taken as a target name; refuse it.
fn valid_log_filter(filter: &str) -> bool {
    const LEVELS: &[&str] = &["trace", "debug", "info", "warn", "error", "off"];
    let directives_ok = !filter.trim().is_empty()
        && filter.split(',').all(|d| {
            let level = d.rsplit_once('=').map_or(d, |(_, l)| l).trim();
            LEVELS.contains(&level.to_ascii_lowercase().as_str())
        });
    directives_ok && tracing_subscriber::EnvFilter::try_new(filter).is_ok()
}

fn valid_role(r: &str) -> bool {
    !r.is_empty()
        && r.len() <= 64
        && r.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-'))
}

fn read_auth(l: &mut Loader<'_>) -> AuthConfig {
    let issuer = l.string("auth.issuer");
    if issuer.trim().is_empty() {
        l.error("auth.issuer", "must not be empty");
    }
    let audience = l.string("auth.audience");
    if audience.trim().is_empty() {
        l.error("auth.audience", "must not be empty");
    }
    let credentials_upstream = l.string("auth.credentials_upstream");
    let credentials_upstream = if credentials_upstream.is_empty() {
        None
    } else if !credentials_upstream.starts_with('/')
        || credentials_upstream.contains(['?', '#', ' '])
    {
        l.error(
            "auth.credentials_upstream",
            format!("expected a path on the upstream such as \"/internal/check-login\"; got {credentials_upstream:?}"),
        );
        None
    } else {
        Some(credentials_upstream)
    };
    let refresh_ttl = l.duration("auth.refresh_ttl");
    let refresh_idle_ttl = l.duration("auth.refresh_idle_ttl");
    let lockout = LockoutConfig {
        max_failures: u32::try_from(l.int("auth.lockout.max_failures")).unwrap_or(5),
        window: l.duration("auth.lockout.window"),
        lock_for: l.duration("auth.lockout.lock_for"),
        max_lock: l.duration("auth.lockout.max_lock"),
        account_max_failures: u32::try_from(l.int("auth.lockout.account_max_failures"))
            .unwrap_or(100),
        ip_max_failures: u32::try_from(l.int("auth.lockout.ip_max_failures")).unwrap_or(20),
    };
    if lockout.max_lock < lockout.lock_for {
        l.error(
            "auth.lockout.max_lock",
            format!(
                "must be at least auth.lockout.lock_for ({})",
                value::fmt_duration(lockout.lock_for)
            ),
        );
    }
    let issuers = read_issuers(l, &audience);
    AuthConfig {
        issuers,
        enabled: l.boolean("auth.enabled"),
        issuer,
        audience,
        signing_key_file: l.path("auth.signing_key_file"),
        access_ttl: l.duration("auth.access_ttl"),
        refresh_ttl,
        refresh_idle_ttl,
        refresh_reuse_grace: l.duration("auth.refresh_reuse_grace"),
        users_file: l.path("auth.users_file"),
        credentials_upstream,
        cookies: l.boolean("auth.cookies"),
        lockout,
    }
}

fn read_issuers(
    l: &mut Loader<'_>,
    default_audience: &str,
) -> Vec<portcullis_core::token::external::IssuerConfig> {
    use portcullis_core::token::external::{IssuerConfig, is_asymmetric};
    let mut out: Vec<IssuerConfig> = Vec::new();
    for (mut r, _origin) in l.table_array("auth.issuers") {
        let issuer = r.string("issuer");
        let jwks_url = r.string("jwks_url");
        if r.is_set("jwks_url") && Upstream::parse(&jwks_url).is_err() {
            r.error("jwks_url", "expected an http:// or https:// URL such as \"https://idp.example/.well-known/jwks.json\"");
        }
        let audience = r.string("audience");
        let mut algorithms = Vec::new();
        for a in r.list("algorithms") {
            match a.parse::<jsonwebtoken::Algorithm>() {
                Ok(alg) if is_asymmetric(alg) => algorithms.push(alg),
                _ => r.error(
                    "algorithms",
                    format!("{a:?} is not accepted; use RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384 or EdDSA"),
                ),
            }
        }
        if algorithms.is_empty() {
            r.error("algorithms", "list at least one algorithm");
        }
        let roles_claim = r.string("roles_claim");
        if out.iter().any(|i| i.issuer == issuer) {
            r.error("issuer", format!("{issuer:?} is configured twice"));
        }
        l.absorb(r);
        out.push(IssuerConfig {
            issuer,
            jwks_url,
            audience: if audience.is_empty() {
                default_audience.to_owned()
            } else {
                audience
            },
            algorithms,
            roles_claim,
        });
    }
    out
}

fn redis_down(word: &str) -> RedisDown {
    match word {
        "allow" => RedisDown::Allow,
        "deny" => RedisDown::Deny,
        _ => RedisDown::Local,
    }
}

fn read_csrf(l: &mut Loader<'_>) -> CsrfConfig {
    let enabled = l.boolean("csrf.enabled");
    let token_ttl = l.duration("csrf.token_ttl");
    let header_raw = l.string("csrf.header");
    let header = match http::HeaderName::from_bytes(header_raw.trim().as_bytes()) {
        Ok(h) => h,
        Err(_) => {
            l.error(
                "csrf.header",
                format!("expected a header name (letters, digits, '-'); got {header_raw:?}"),
            );
            http::HeaderName::from_static("x-csrf-token")
        }
    };
    let form_field = l.string("csrf.form_field");
    if form_field.is_empty()
        || form_field.len() > 64
        || form_field.bytes().any(|b| !b.is_ascii_graphic())
    {
        l.error(
            "csrf.form_field",
            format!("expected 1 to 64 visible ASCII characters; got {form_field:?}"),
        );
    }
    let trusted_origins = l.list("csrf.trusted_origins");
    for o in &trusted_origins {
        if let Err(e) = value::origin(o) {
            l.error("csrf.trusted_origins", format!("{o:?}: {e}"));
        }
    }
    let deny_when_down = l.choice("csrf.on_redis_down") == "deny";
    let cookie = l.string("csrf.session_cookie");
    let session_cookie = (!cookie.trim().is_empty()).then(|| cookie.trim().to_owned());
    let secret_file = l.path("csrf.secret_file");
    CsrfConfig {
        enabled,
        token_ttl,
        header,
        form_field,
        trusted_origins: trusted_origins
            .iter()
            .filter_map(|o| value::origin(o).ok())
            .collect(),
        deny_when_down,
        session_cookie,
        secret_file,
    }
}

fn read_alerts(l: &mut Loader<'_>) -> Option<crate::alerts::AlertsConfig> {
    let url = l.string("alerts.webhook_url");
    let dedup_window = l.duration("alerts.dedup_window");
    let suspicious_per_minute = u32::try_from(l.int("alerts.suspicious_per_minute")).unwrap_or(20);
    if url.trim().is_empty() {
        return None;
    }
    if Upstream::parse(url.trim()).is_err() {
        l.error(
            "alerts.webhook_url",
            "expected an http:// or https:// URL such as \"https://hooks.example/portcullis\"",
        );
        return None;
    }
    Some(crate::alerts::AlertsConfig {
        webhook_url: url.trim().to_owned(),
        dedup_window,
        suspicious_per_minute,
    })
}

fn profile(word: &str) -> Profile {
    word.parse().unwrap_or_default()
}

fn read_headers(l: &mut Loader<'_>) -> HeadersConfig {
    let profile = profile(l.choice("headers.profile"));
    let hsts = l.boolean("headers.hsts");
    let mut set = Vec::new();
    for (name, value, origin) in l.string_map("headers.set") {
        let key = format!("headers.set.{name}");
        let Ok(header) = http::HeaderName::from_bytes(name.as_bytes()) else {
            l.error_at(key, origin, "expected a header name (letters, digits, '-')");
            continue;
        };
        if value.is_empty() {
            set.push((header, None));
            continue;
        }
        match http::HeaderValue::from_str(&value) {
            Ok(v) => set.push((header, Some(v))),
            Err(_) => l.error_at(
                key,
                origin,
                "expected a header value: visible characters and spaces",
            ),
        }
    }
    HeadersConfig { profile, hsts, set }
}

fn read_cors(l: &mut Loader<'_>) -> Option<Cors> {
    let allowed_origins = l.list("cors.allowed_origins");
    let methods = l.methods("cors.allowed_methods");
    let header_names = |l: &mut Loader<'_>, key: &'static str| {
        let mut out = Vec::new();
        for h in l.list(key) {
            match http::HeaderName::from_bytes(h.trim().as_bytes()) {
                Ok(n) => out.push(n),
                Err(_) => l.error(key, format!("{h:?} is not a header name")),
            }
        }
        out
    };
    let allowed_headers = header_names(l, "cors.allowed_headers");
    let exposed_headers = header_names(l, "cors.exposed_headers");
    let allow_credentials = l.boolean("cors.allow_credentials");
    let max_age = l.duration("cors.max_age");
    let allowed_methods = if methods.iter().any(|m| m == "*") {
        ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
            .iter()
            .filter_map(|m| Method::from_bytes(m.as_bytes()).ok())
            .collect()
    } else {
        methods
            .iter()
            .filter_map(|m| Method::from_bytes(m.as_bytes()).ok())
            .collect()
    };
    if allowed_origins.is_empty() {
        return None;
    }
    match Cors::new(CorsPolicy {
        allowed_origins,
        allowed_methods,
        allowed_headers,
        exposed_headers,
        allow_credentials,
        max_age,
    }) {
        Ok(c) => Some(c),
        Err(e) => {
            let key = match &e {
                portcullis::cors::CorsConfigError::WildcardHeader { key } => key,
                _ => "cors.allowed_origins",
            };
            l.error(key, e.to_string());
            None
        }
    }
}

fn read_rate_limit(l: &mut Loader<'_>) -> RateLimitConfig {
    use portcullis_core::ratelimit::{Algorithm, Quota};
    let mut tiers = Vec::new();
    for (role, mut t) in l.map_tables("rate_limit.tiers") {
        if !valid_role(&role) {
            t.error(
                "limit",
                format!("{role:?} is not a role name (lower-case letters, digits, '_' or '-')"),
            );
        }
        let limit = t.opt_int("limit").and_then(|v| u32::try_from(v).ok());
        let per = t.duration("per");
        let burst = t.opt_int("burst").and_then(|v| u32::try_from(v).ok());
        if limit.is_none() && !t.is_set("limit") {
            t.error("limit", "required");
        }
        let quota = limit.and_then(|limit| Quota::new(limit, per, burst));
        l.absorb(t);
        if let Some(quota) = quota {
            tiers.push(Tier { role, quota });
        }
    }
    if !tiers.iter().any(|t| t.role == "anonymous") {
        l.error(
            "rate_limit.tiers",
            "an `anonymous` tier is needed: it is the quota of callers without an identity",
        );
    }
    RateLimitConfig {
        enabled: l.boolean("rate_limit.enabled"),
        algorithm: match l.choice("rate_limit.algorithm") {
            "sliding_window" => Algorithm::SlidingWindow,
            _ => Algorithm::Gcra,
        },
        headers: match l.choice("rate_limit.headers") {
            "legacy" => RateLimitHeaders::Legacy,
            "both" => RateLimitHeaders::Both,
            "none" => RateLimitHeaders::None,
            _ => RateLimitHeaders::Draft,
        },
        ipv6_prefix: u8::try_from(l.int("rate_limit.ipv6_prefix")).unwrap_or(56),
        on_redis_down: redis_down(l.choice("rate_limit.on_redis_down")),
        tiers,
    }
}

fn read_store(l: &mut Loader<'_>) -> StoreConfig {
    let url = l.string("redis.url");
    let key_prefix = l.string("redis.key_prefix");
    if key_prefix.is_empty()
        || !key_prefix
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'{' | b'}'))
    {
        l.error(
            "redis.key_prefix",
            format!("expected visible characters without spaces, '{{' or '}}' (braces are for cluster hash tags); got {key_prefix:?}"),
        );
    }
    let command_timeout = l.duration("redis.command_timeout");
    let connect_timeout = l.duration("redis.connect_timeout");
    let breaker = BreakerConfig {
        failure_rate: l.float("redis.breaker.failure_rate"),
        slow_call: l.duration("redis.breaker.slow_call"),
        min_calls: u32::try_from(l.int("redis.breaker.min_calls")).unwrap_or(10),
        window: l.duration("redis.breaker.window"),
        open_for: l.duration("redis.breaker.open_for"),
        max_open_for: l.duration("redis.breaker.max_open_for"),
        half_open_probes: u32::try_from(l.int("redis.breaker.half_open_probes")).unwrap_or(3),
        jitter: true,
    };
    if breaker.slow_call >= command_timeout {
        l.error(
            "redis.breaker.slow_call",
            format!(
                "must stay below redis.command_timeout ({}): a call cannot be slow without first timing out",
                value::fmt_duration(command_timeout)
            ),
        );
    }
    if breaker.max_open_for < breaker.open_for {
        l.error(
            "redis.breaker.max_open_for",
            format!(
                "must be at least redis.breaker.open_for ({})",
                value::fmt_duration(breaker.open_for)
            ),
        );
    }
    let redis = if url.trim().is_empty() {
        None
    } else if let Err(e) = value::redis_url(url.trim()) {
        l.error("redis.url", e);
        None
    } else {
        Some(RedisConfig {
            url: Secret::new(url.trim().to_owned()),
            command_timeout,
            connect_timeout,
            breaker,
        })
    };
    StoreConfig {
        redis,
        key_prefix,
        memory_max_keys: usize::try_from(l.int("memory.max_keys")).unwrap_or(1_000_000),
    }
}

fn lower_all(v: Vec<String>) -> Vec<String> {
    v.into_iter().map(|s| s.to_ascii_lowercase()).collect()
}

fn limits_json_depth(limits: &Limits) -> JsonDepth {
    JsonDepth::new(limits.json_depth).unwrap_or(JsonDepth::DEFAULT)
}

/// `schema` and `sanitize_html` of a route, compiled; `None` when it sets neither.
fn body_rules(r: &mut Loader<'_>, origin: &Origin, depth: JsonDepth) -> Option<Arc<BodyRules>> {
    let schema = r.path("schema");
    let fields = r.list("sanitize_html");
    if schema.is_none() && fields.is_empty() {
        return None;
    }
    let mut rules = BodyRules::new().max_depth(depth);
    if let Some(path) = schema {
        // Relative to the file the route is written in.
        let path = match origin {
            Origin::File { path: file, .. } if path.is_relative() => std::path::Path::new(&**file)
                .parent()
                .map_or(path.clone(), |dir| dir.join(&path)),
            _ => path,
        };
        match CompiledSchema::from_file(&path) {
            Ok(s) => rules = rules.with_schema(Arc::new(s)),
            Err(e) => r.error("schema", format!("{}: {e}", path.display())),
        }
    }
    for f in &fields {
        match FieldPath::parse(f) {
            Ok(p) => rules = rules.add_sanitize_html(p),
            Err(e) => r.error("sanitize_html", format!("{f:?}: {e}")),
        }
    }
    Some(Arc::new(rules))
}

fn read_routes(l: &mut Loader<'_>, json_depth: JsonDepth) -> Vec<RouteConfig> {
    let mut routes: Vec<RouteConfig> = Vec::new();
    for (i, (mut r, origin)) in l.table_array("routes").into_iter().enumerate() {
        let glob = r.string("path");
        let path = match PathPattern::parse(&glob) {
            Ok(p) => Some(p),
            Err(e) => {
                if r.is_set("path") {
                    r.error("path", format!("{e}"));
                }
                None
            }
        };
        let name_raw = r.string("name");
        let name = if name_raw.is_empty() {
            format!("route-{i}")
        } else {
            name_raw
        };
        if !valid_name(&name) {
            r.error(
                "name",
                format!("expected 1 to 64 letters, digits, '.', '_' or '-'; got {name:?}"),
            );
        } else if name == crate::telemetry::metrics::DEFAULT_ROUTE {
            r.error(
                "name",
                format!("{name:?} is reserved for requests that no route covers"),
            );
        } else if routes.iter().any(|x| *x.name == name) {
            r.error("name", format!("another route is already named {name:?}"));
        }
        let methods_raw = r.methods("methods");
        let methods = if methods_raw.iter().any(|m| m == "*") {
            None
        } else {
            Some(
                methods_raw
                    .iter()
                    .filter_map(|m| Method::from_bytes(m.as_bytes()).ok())
                    .collect(),
            )
        };
        let roles = r.list("roles");
        if let Some(bad) = roles.iter().find(|x| !valid_role(x)) {
            r.error(
                "roles",
                format!("expected roles of lower-case letters, digits, '_' or '-' (at most 64); got {bad:?}"),
            );
        }
        let field = r.string("login.username_field");
        let login_username_field = (!field.is_empty()).then_some(field);
        let rl_limit = r.opt_int("rate_limit.limit");
        let rl_per = r.duration("rate_limit.per");
        let rl_burst = r.opt_int("rate_limit.burst");
        let rl_key = match r.choice("rate_limit.key") {
            "subject" => RateKey::Subject,
            "ip" => RateKey::Ip,
            _ => RateKey::SubjectOrIp,
        };
        let rate_limit = if let Some(limit) = rl_limit {
            portcullis_core::ratelimit::Quota::new(
                u32::try_from(limit).unwrap_or(1),
                rl_per,
                rl_burst.and_then(|b| u32::try_from(b).ok()),
            )
            .map(|quota| RouteRateLimit { quota, key: rl_key })
        } else if r.is_set("rate_limit.limit") {
            None
        } else {
            if r.is_set("rate_limit.per")
                || r.is_set("rate_limit.burst")
                || r.is_set("rate_limit.key")
            {
                r.error(
                    "rate_limit.limit",
                    "required when the route sets rate_limit",
                );
            }
            None
        };
        let count_failures = r.choice("count") == "failures";
        let body_limit = r.opt_size("body_limit");
        let audit = r.boolean("audit");
        let headers = match r.choice("headers") {
            "default" => None,
            w => Some(profile(w)),
        };
        let body = body_rules(&mut r, &origin, json_depth);
        let cache_ttl = r.opt_duration("cache.ttl");
        let cache_tags = r.list("cache.tags");
        let per_subject = r.boolean("cache.per_subject");
        let cache =
            (r.is_set("cache.ttl") || r.is_set("cache.tags") || r.is_set("cache.per_subject"))
                .then(|| crate::cache::RouteCache {
                    ttl: cache_ttl,
                    tags: cache_tags.into(),
                    per_subject,
                });
        let on_redis_down = match r.choice("on_redis_down") {
            "default" => None,
            w => Some(redis_down(w)),
        };
        l.absorb(r);
        if let Some(path) = path {
            routes.push(RouteConfig {
                name: Arc::from(name),
                path,
                methods,
                roles,
                login_username_field,
                rate_limit,
                count_failures,
                on_redis_down,
                audit,
                headers,
                body_limit,
                body,
                cache,
            });
        }
    }
    routes
}

#[cfg(test)]
mod tests;
