//! Per-endpoint rate-limit documentation from the effective configuration:
//! `portcullis docs rate-limits` (Markdown) and `GET /admin/rate-limits/policies` (JSON).

use std::fmt::Write;
use std::time::Duration;

use portcullis_core::ratelimit::Quota;
use serde_json::{Value, json};

use crate::config::{Config, RateKey, RateLimitHeaders, RouteConfig};
use crate::ratelimit::Limiter;

/// A duration as the configuration writes it (`90s`, `15m`, `1h`, `250ms`).
pub(crate) fn per(d: Duration) -> String {
    let s = d.as_secs();
    if d.subsec_nanos() != 0 || s == 0 {
        format!("{}ms", d.as_millis())
    } else if s.is_multiple_of(86_400) {
        format!("{}d", s / 86_400)
    } else if s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

fn quota_text(q: &Quota) -> String {
    let burst = if q.burst == q.limit {
        String::new()
    } else {
        format!(", burst {}", q.burst)
    };
    format!("{} per {}{burst}", q.limit, per(q.per))
}

fn methods(r: &RouteConfig) -> String {
    r.methods.as_ref().map_or_else(
        || "any".to_owned(),
        |m| m.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(", "),
    )
}

fn tiers_line(cfg: &Config) -> String {
    cfg.rate_limit
        .tiers
        .iter()
        .map(|t| format!("`{}` {}", t.role, quota_text(&t.quota)))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The JSON of `GET /admin/rate-limits/policies`.
pub fn policies_json(cfg: &Config, limiter: &Limiter) -> Value {
    let tiers: Vec<Value> = cfg
        .rate_limit
        .tiers
        .iter()
        .map(|t| {
            json!({"name": t.role, "limit": t.quota.limit.get(), "per": per(t.quota.per),
                "burst": t.quota.burst.get(), "key": if t.role == "anonymous" { "ip" } else { "subject" },
                "on_redis_down": cfg.rate_limit.on_redis_down.as_str()})
        })
        .collect();
    let routes: Vec<Value> = cfg
        .routes
        .iter()
        .map(|r| {
            let mut v = json!({"route": &*r.name, "path": r.path.as_str(), "methods": methods(r),
                "count": if r.count_failures { "failures" } else { "all" },
                "on_redis_down": r.on_redis_down.unwrap_or(cfg.rate_limit.on_redis_down).as_str()});
            match &r.rate_limit {
                Some(own) => {
                    v["limit"] = json!(own.quota.limit.get());
                    v["per"] = json!(per(own.quota.per));
                    v["burst"] = json!(own.quota.burst.get());
                    v["key"] = json!(own.key.as_str());
                }
                None => v["quota"] = json!("tier"),
            }
            v
        })
        .collect();
    json!({"algorithm": limiter.algorithm().as_str(), "instances": cfg.instances.get(), "tiers": tiers, "routes": routes})
}

/// The Markdown of `portcullis docs rate-limits`.
pub fn markdown(cfg: &Config) -> String {
    let rl = &cfg.rate_limit;
    let mut out = String::from("# Rate limits\n\n");
    if !rl.enabled {
        out.push_str("Rate limiting is off (`rate_limit.enabled = false`).\n");
        return out;
    }
    let _ = writeln!(
        out,
        "Algorithm: `{}`. While Redis is unavailable: `{}` by default{}.\n",
        rl.algorithm.as_str(),
        rl.on_redis_down.as_str(),
        if cfg.instances.get() > 1 {
            format!(" (local quotas divided by {} instances)", cfg.instances)
        } else {
            String::new()
        }
    );
    out.push_str("## Tiers\n\nA caller gets the quota of its best role; callers without an identity get `anonymous`, counted by client address (IPv6 by ");
    let _ = writeln!(
        out,
        "/{}); identified callers are counted by subject. One bucket per caller is shared by every endpoint below marked \"tier\".\n",
        rl.ipv6_prefix
    );
    out.push_str("| tier | quota |\n| --- | --- |\n");
    for t in &rl.tiers {
        let _ = writeln!(out, "| `{}` | {} |", t.role, quota_text(&t.quota));
    }
    out.push_str("\n## Endpoints\n\nThe first matching route applies; paths match case-insensitively on the normalised path.\n\n");
    out.push_str("| route | path | methods | quota | counted by | counts | when Redis is down |\n| --- | --- | --- | --- | --- | --- | --- |\n");
    let mut rows: Vec<(String, String, String, String, String, String, String)> = cfg
        .routes
        .iter()
        .map(|r| {
            let (quota, key) = match &r.rate_limit {
                Some(own) => (
                    quota_text(&own.quota),
                    match own.key {
                        RateKey::Subject => "subject (no identity: `anonymous` tier)",
                        RateKey::Ip => "address",
                        RateKey::SubjectOrIp => "subject, else address",
                    }
                    .to_owned(),
                ),
                None => ("tier".to_owned(), "subject, else address".to_owned()),
            };
            (
                format!("`{}`", r.name),
                format!("`{}`", r.path.as_str()),
                methods(r),
                quota,
                key,
                if r.count_failures {
                    "failures (status ≥ 400)".into()
                } else {
                    "all".into()
                },
                r.on_redis_down
                    .unwrap_or(rl.on_redis_down)
                    .as_str()
                    .to_owned(),
            )
        })
        .collect();
    for (p, m) in [
        ("/auth/login", "POST"),
        ("/auth/refresh", "POST"),
        ("/auth/logout", "POST"),
    ] {
        if !cfg.routes.iter().any(|r| r.path.matches(p)) {
            rows.push((
                "(gateway)".into(),
                format!("`{p}`"),
                m.into(),
                "tier".into(),
                "subject, else address".into(),
                "all".into(),
                rl.on_redis_down.as_str().into(),
            ));
        }
    }
    rows.push((
        "(default)".into(),
        "everything else".into(),
        "any".into(),
        "tier".into(),
        "subject, else address".into(),
        "all".into(),
        rl.on_redis_down.as_str().into(),
    ));
    for r in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            r.0, r.1, r.2, r.3, r.4, r.5, r.6
        );
    }
    let _ = writeln!(out, "\nTier quotas: {}.\n", tiers_line(cfg));
    out.push_str("## Headers\n\n");
    match rl.headers {
        RateLimitHeaders::Draft | RateLimitHeaders::Both => out.push_str(
            "Every answer on a limited endpoint carries `RateLimit-Policy: \"<policy>\";q=<limit>;w=<window seconds>` and `RateLimit: \"<policy>\";r=<remaining>;t=<seconds until the quota is whole again>` (draft-ietf-httpapi-ratelimit-headers-10).\n",
        ),
        _ => {}
    }
    if matches!(
        rl.headers,
        RateLimitHeaders::Legacy | RateLimitHeaders::Both
    ) {
        out.push_str("Every answer on a limited endpoint carries `X-RateLimit-Limit`, `X-RateLimit-Remaining` and `X-RateLimit-Reset` (the Unix time in seconds when the quota is whole again, as express-rate-limit and GitHub send it).\n");
    }
    out.push_str("\nA refused request gets 429 `application/problem+json` with type `https://iana.org/assignments/http-problem-types#quota-exceeded`, `violated-policies`, and `Retry-After` in seconds.\n");
    out
}
