//! `GET /admin/openapi.json`: OpenAPI 3.1 for every auth and admin route, generated from
//! the table below, which the routers are checked against by a test, so the document
//! cannot drift from what is served.

use serde_json::{Map, Value, json};

/// One documented operation.
#[derive(Debug)]
pub struct Operation {
    /// `get`, `post`, `put` or `delete`.
    pub method: &'static str,
    /// The path, with `{parameters}`.
    pub path: &'static str,
    /// Main or admin listener.
    pub listener: &'static str,
    /// A one-line summary.
    pub summary: &'static str,
    /// Whether a bearer token with the `admin` role is required.
    pub admin: bool,
    /// The request body's schema.
    pub request: Option<fn() -> Value>,
    /// Status codes and what they mean.
    pub responses: &'static [(&'static str, &'static str)],
}

fn login_body() -> Value {
    json!({"type": "object", "required": ["username", "password"], "properties": {
        "username": {"type": "string"}, "password": {"type": "string", "format": "password"}}})
}

fn refresh_body() -> Value {
    json!({"type": "object", "properties": {"refresh_token": {"type": "string"}},
        "description": "In cookie mode the __Host-refresh cookie may replace the body."})
}

/// Every auth and admin operation.
pub static OPERATIONS: &[Operation] = &[
    Operation {
        method: "post",
        path: "/auth/login",
        listener: "main",
        summary: "Exchange a username and password for an access token and a refresh token",
        admin: false,
        request: Some(login_body),
        responses: &[
            (
                "200",
                "Tokens: access_token, token_type, expires_in, refresh_token",
            ),
            ("400", "Malformed body or refused username"),
            ("401", "Bad credentials"),
            (
                "429",
                "Locked or throttled (Retry-After); the same whether or not the account exists",
            ),
        ],
    },
    Operation {
        method: "post",
        path: "/auth/refresh",
        listener: "main",
        summary: "Rotate a refresh token: the old one is spent, a new pair returned",
        admin: false,
        request: Some(refresh_body),
        responses: &[
            ("200", "A new token pair"),
            (
                "401",
                "Invalid, expired or reused refresh token (reuse revokes the session)",
            ),
            ("503", "The session store is unavailable (Retry-After)"),
        ],
    },
    Operation {
        method: "post",
        path: "/auth/logout",
        listener: "main",
        summary: "Revoke the caller's session (its refresh tokens and access tokens) on every instance",
        admin: false,
        request: Some(refresh_body),
        responses: &[
            ("204", "Revoked"),
            ("401", "No valid access token or refresh token"),
            ("503", "The session store is unavailable (Retry-After)"),
        ],
    },
    Operation {
        method: "get",
        path: "/.well-known/jwks.json",
        listener: "main",
        summary: "The gateway's public signing keys (JWK Set)",
        admin: false,
        request: None,
        responses: &[("200", "A JWK Set")],
    },
    Operation {
        method: "get",
        path: "/admin/security-events",
        listener: "admin",
        summary: "The most recent security events, newest first (?limit=N, at most 1000)",
        admin: true,
        request: None,
        responses: &[
            ("200", "{\"events\": [...]}"),
            ("401", "No valid token"),
            ("403", "Not an admin"),
        ],
    },
    Operation {
        method: "post",
        path: "/admin/accounts/{username}/unlock",
        listener: "admin",
        summary: "Clear an account's lockout: its hourly ceiling and every (account, source) lock",
        admin: true,
        request: None,
        responses: &[
            ("200", "{\"unlocked\": true|false}"),
            ("400", "Refused username"),
            ("401", "No valid token"),
            ("403", "Not an admin"),
            ("503", "The store is unavailable"),
        ],
    },
    Operation {
        method: "get",
        path: "/admin/rate-limits/policies",
        listener: "admin",
        summary: "The effective quota of every tier and route",
        admin: true,
        request: None,
        responses: &[
            (
                "200",
                "{\"algorithm\", \"tiers\": [...], \"routes\": [...]}",
            ),
            ("401", "No valid token"),
            ("403", "Not an admin"),
            ("404", "Rate limiting is off"),
        ],
    },
    Operation {
        method: "get",
        path: "/admin/rate-limits/overrides",
        listener: "admin",
        summary: "Every live override",
        admin: true,
        request: None,
        responses: &[
            ("200", "{\"overrides\": [...]}"),
            ("401", "No valid token"),
            ("403", "Not an admin"),
        ],
    },
    Operation {
        method: "delete",
        path: "/admin/rate-limits/overrides",
        listener: "admin",
        summary: "Remove every override",
        admin: true,
        request: None,
        responses: &[
            ("204", "Removed"),
            ("401", "No valid token"),
            ("403", "Not an admin"),
            ("503", "The store is unavailable"),
        ],
    },
    Operation {
        method: "get",
        path: "/admin/rate-limits/overrides/{key}",
        listener: "admin",
        summary: "One override (key: subject:<name>, ip:<address>, ip:<network>; a network's `/` as is or as %2F)",
        admin: true,
        request: None,
        responses: &[
            ("200", "The override"),
            ("400", "Malformed key"),
            ("404", "No live override"),
        ],
    },
    Operation {
        method: "put",
        path: "/admin/rate-limits/overrides/{key}",
        listener: "admin",
        summary: "Raise, lower or exempt a key until it expires; every instance applies it within a second",
        admin: true,
        request: Some(override_body),
        responses: &[
            ("200", "The override"),
            ("400", "Malformed key, or a body that is not JSON"),
            ("422", "Not an override (the detail names the field)"),
            ("503", "The store is unavailable"),
        ],
    },
    Operation {
        method: "delete",
        path: "/admin/rate-limits/overrides/{key}",
        listener: "admin",
        summary: "Remove an override",
        admin: true,
        request: None,
        responses: &[
            ("204", "Removed"),
            ("404", "No live override"),
            ("503", "The store is unavailable"),
        ],
    },
    Operation {
        method: "delete",
        path: "/admin/rate-limits/counters/{key}",
        listener: "admin",
        summary: "Reset a key's counters under every policy",
        admin: true,
        request: None,
        responses: &[
            ("204", "Reset"),
            ("400", "Malformed key"),
            ("503", "The store is unavailable"),
        ],
    },
    Operation {
        method: "post",
        path: "/admin/cache/purge",
        listener: "admin",
        summary: "Purge cached responses by key (`GET /path?query`), path prefix or tag, on every instance within a second",
        admin: true,
        request: Some(purge_body),
        responses: &[
            (
                "200",
                "Purged: `{\"purged\", \"removed_here\", \"shared\"}`",
            ),
            (
                "400",
                "Not exactly one of key, prefix, tag; or a malformed one",
            ),
            (
                "503",
                "The shared store is unavailable: applied on this instance only",
            ),
        ],
    },
    Operation {
        method: "get",
        path: "/admin/openapi.json",
        listener: "admin",
        summary: "This document",
        admin: true,
        request: None,
        responses: &[
            ("200", "OpenAPI 3.1"),
            ("401", "No valid token"),
            ("403", "Not an admin"),
        ],
    },
];

fn purge_body() -> Value {
    json!({"oneOf": [
        {"type": "object", "required": ["key"], "additionalProperties": false,
         "properties": {"key": {"type": "string", "examples": ["GET /products?page=2"]}}},
        {"type": "object", "required": ["prefix"], "additionalProperties": false,
         "properties": {"prefix": {"type": "string", "examples": ["/products/"]}}},
        {"type": "object", "required": ["tag"], "additionalProperties": false,
         "properties": {"tag": {"type": "string", "examples": ["products"]}}}
    ]})
}

fn override_body() -> Value {
    json!({"oneOf": [
        {"type": "object", "required": ["limit", "per", "expires_in"], "properties": {
            "limit": {"type": "integer", "minimum": 1}, "per": {"type": "string", "examples": ["1m"]},
            "burst": {"type": "integer", "minimum": 1}, "expires_in": {"type": "string", "examples": ["10m"]}}},
        {"type": "object", "required": ["exempt", "expires_in"], "properties": {
            "exempt": {"const": true}, "expires_in": {"type": "string", "examples": ["1h"]}}}
    ]})
}

fn problem_schema() -> Value {
    json!({"type": "object", "required": ["type", "title", "status"], "properties": {
        "type": {"type": "string", "format": "uri"}, "title": {"type": "string"},
        "status": {"type": "integer"}, "detail": {"type": "string"}, "request_id": {"type": "string"}}})
}

/// The OpenAPI document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for op in OPERATIONS {
        let mut responses = Map::new();
        for (code, desc) in op.responses {
            let content = if code.starts_with('2') {
                json!({"application/json": {}})
            } else {
                json!({"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}})
            };
            responses.insert(
                (*code).into(),
                json!({"description": desc, "content": content}),
            );
        }
        let mut o = json!({
            "summary": op.summary,
            "tags": [op.listener],
            "responses": responses,
        });
        if op.admin {
            o["security"] = json!([{"bearer": []}]);
        }
        for param in ["username", "key"] {
            if op.path.contains(&format!("{{{param}}}")) {
                o["parameters"] = json!([{"name": param, "in": "path", "required": true, "schema": {"type": "string"}}]);
            }
        }
        if let Some(body) = op.request {
            o["requestBody"] = json!({"content": {"application/json": {"schema": body()}}});
        }
        let entry = paths
            .entry(op.path.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        entry[op.method] = o;
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Portcullis gateway", "version": env!("CARGO_PKG_VERSION"),
            "description": "The gateway's own routes. `main` routes are on the main listener, `admin` routes on the admin listener and need a bearer access token with the admin role."},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
            "schemas": {"Problem": problem_schema()},
        },
    })
}
