//! The Portcullis gateway: a reverse proxy that applies every protection to any upstream
//! by configuration alone.
//!
//! `main.rs` is thin: it parses the command line, [`config::Config::load`]s the
//! configuration, [`prepare`]s what must be checked before anything is bound (TLS files,
//! CA files, the log file), installs logging and metrics, and calls [`serve`]. The order
//! of the protections lives in [`stack`].

pub mod admin;
pub mod alerts;
pub mod audit;
pub mod auth_routes;
pub mod body;
pub mod cache;
pub mod config;
pub mod csrf;
pub mod demo;
pub mod events;
pub mod framing;
pub mod h1guard;
pub mod health;
pub mod identity;
pub mod jwks;
pub mod openapi;
pub mod proxy;
pub mod ratelimit;
pub mod ratelimit_docs;
pub mod routes;
pub mod server;
pub mod stack;
pub mod state;
pub mod telemetry;
pub mod upstream;
pub mod users_cli;

use std::future::Future;
use std::sync::Arc;

use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::config::{Config, ConfigError, ConfigErrors};
use crate::health::Health;
use crate::proxy::Proxy;
use crate::telemetry::metrics::Metrics;

/// A configuration with everything that can fail before binding already done.
pub struct Prepared {
    /// The validated configuration.
    pub config: Config,
    tls: Option<TlsAcceptor>,
    proxy: Proxy,
    auth: Option<Arc<identity::Auth>>,
    /// The audit log, opened.
    audit: Option<portcullis_core::audit::AuditLog>,
    /// The keys that sign CSRF tokens, and whether they were made at start-up.
    csrf_keys: (Vec<portcullis_core::csrf::CsrfKey>, bool),
    /// Where logs go, opened (a rotated file, or standard output).
    pub log_output: Option<Box<dyn std::io::Write + Send>>,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("config", &self.config)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// The keys that sign CSRF tokens: from `csrf.secret_file`, else derived from the
/// `auth.signing_key_file` every instance shares, else made now (`true`: ephemeral).
fn csrf_keys(config: &Config) -> Result<(Vec<portcullis_core::csrf::CsrfKey>, bool), ConfigError> {
    use portcullis_core::csrf::CsrfKey;
    if !config.csrf.enabled {
        return Ok((Vec::new(), false));
    }
    if let Some(path) = &config.csrf.secret_file {
        let err = |message: String| ConfigError {
            key: "csrf.secret_file".into(),
            origin: None,
            message,
        };
        let secret =
            std::fs::read(path).map_err(|e| err(format!("cannot read {}: {e}", path.display())))?;
        if secret.trim_ascii().len() < 32 {
            return Err(err(format!(
                "{} holds fewer than 32 bytes; write a long random secret into it (e.g. `head -c 48 /dev/urandom | base64 > FILE`)",
                path.display()
            )));
        }
        return Ok((vec![CsrfKey::derive(secret.trim_ascii())], false));
    }
    if config.auth.enabled
        && let Some(path) = &config.auth.signing_key_file
        && let Ok(pem) = std::fs::read(path)
    {
        return Ok((vec![CsrfKey::derive(&pem)], false));
    }
    Ok((vec![CsrfKey::random()], true))
}

/// Checks what the configuration points at: certificate and key files, the upstream CA
/// file, the log file. `serve` needs an upstream; `check-config` reports its absence too.
pub fn prepare(config: Config) -> Result<Prepared, ConfigErrors> {
    let mut errors = Vec::new();
    let tls = match &config.tls {
        Some(files) => match server::tls_acceptor(files) {
            Ok(a) => Some(a),
            Err(e) => {
                errors.push(e);
                None
            }
        },
        None => None,
    };
    let proxy = match &config.upstream {
        Some(u) => match Proxy::new(&config, u.clone()) {
            Ok(p) => Some(p),
            Err(e) => {
                errors.push(e);
                None
            }
        },
        None => {
            errors.push(ConfigError {
                key: "upstream".into(),
                origin: None,
                message: "required: set `upstream` in the file, PORTCULLIS_UPSTREAM, or --upstream (e.g. http://127.0.0.1:3000)".into(),
            });
            None
        }
    };
    if let Err(e) = state::check(&config.store) {
        errors.push(e);
    }
    let auth = if config.auth.enabled {
        let fetch_tls = match proxy::client_tls(&config) {
            Ok(mut c) => {
                c.alpn_protocols = vec![b"http/1.1".to_vec()];
                Arc::new(c)
            }
            Err(e) => {
                errors.push(e);
                return Err(ConfigErrors(errors));
            }
        };
        match identity::Auth::new(&config.auth, fetch_tls) {
            Ok(a) => Some(Arc::new(a)),
            Err(e) => {
                errors.push(e);
                None
            }
        }
    } else {
        None
    };
    if config.auth.enabled
        && config.auth.credentials_upstream.is_none()
        && let Some(path) = &config.auth.users_file
        && let Err(e) = portcullis_core::auth::users::UsersFile::load_or_empty(path)
    {
        errors.push(ConfigError {
            key: "auth.users_file".into(),
            origin: None,
            message: e.to_string(),
        });
    }
    let csrf_keys = match csrf_keys(&config) {
        Ok(k) => k,
        Err(e) => {
            errors.push(e);
            (Vec::new(), false)
        }
    };
    let audit = match &config.audit_file {
        None => None,
        Some(path) => match portcullis_core::audit::AuditLog::open(path) {
            Ok(a) => Some(a),
            Err(e) => {
                errors.push(ConfigError {
                    key: "audit.file".into(),
                    origin: None,
                    message: format!("cannot append to {}: {e}", path.display()),
                });
                None
            }
        },
    };
    let log_output = match telemetry::log::open(&config.log) {
        Ok(o) => Some(o),
        Err(e) => {
            errors.push(e);
            None
        }
    };
    match (proxy, errors.is_empty()) {
        (Some(proxy), true) => Ok(Prepared {
            config,
            tls,
            proxy,
            auth,
            audit,
            csrf_keys,
            log_output,
        }),
        _ => Err(ConfigErrors(errors)),
    }
}

/// How often revocations made on other instances are pulled: a logout anywhere is
/// enforced everywhere within this (DESIGN §9: within 1 s).
const REVOCATION_POLL: std::time::Duration = std::time::Duration::from_millis(250);

/// How often histogram samples are folded into buckets.
const METRICS_UPKEEP: std::time::Duration = std::time::Duration::from_secs(5);

/// Binds both listeners and serves until `shutdown` completes, then drains: `/readyz`
/// answers 503 at once, the main listener stops accepting, in-flight requests get
/// `shutdown_grace` to finish, and the admin listener stops last.
pub async fn serve(
    prepared: Prepared,
    metrics: Metrics,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ConfigError> {
    let Prepared {
        config,
        tls,
        proxy,
        auth,
        audit,
        csrf_keys,
        ..
    } = prepared;
    if let Some(a) = audit {
        crate::audit::install(a);
    }
    let main_listener = server::bind("listen", config.listen)?;
    let admin_listener = server::bind("admin_listen", config.admin_listen)?;
    let listen = main_listener.local_addr().map_err(|e| ConfigError {
        key: "listen".into(),
        origin: None,
        message: e.to_string(),
    })?;
    let admin_listen = admin_listener.local_addr().map_err(|e| ConfigError {
        key: "admin_listen".into(),
        origin: None,
        message: e.to_string(),
    })?;

    let health = Arc::new(Health::new());
    let events = Arc::new(events::Events::new());
    if let Some(cfg) = &config.alerts {
        match proxy::client_tls(&config) {
            Ok(tls) => events.send_alerts(alerts::Alerts::spawn(cfg.clone(), Arc::new(tls))),
            Err(e) => return Err(e),
        }
    }
    // Tracing before the store: the store reports its calls to it from the start.
    let traces = match &config.trace {
        Some(t) => Some(telemetry::trace::install(t)?),
        None => None,
    };
    let mut store = state::build(&config.store, events.clone())?;
    if traces.is_some() {
        store = store.with_tracer(Arc::new(telemetry::trace::StoreSpans));
    }
    health.register(Arc::new(state::StoreHealth::new(store.clone())));
    let maintenance = store.spawn_maintenance(state::MAINTENANCE_INTERVAL);
    if let Some(a) = &auth {
        if a.keys().is_ephemeral() {
            tracing::warn!(
                "no auth.signing_key_file: tokens are signed with a key made at start-up; they die with a restart and other instances cannot verify them"
            );
        }
        if a.cfg.users_file.is_none() && a.cfg.credentials_upstream.is_none() {
            tracing::warn!(
                "neither auth.users_file nor auth.credentials_upstream is set: every login fails"
            );
        }
    }
    let revocation_sync = auth
        .as_ref()
        .map(|a| a.spawn_revocation_sync(store.clone(), REVOCATION_POLL));
    let jwks_refresher = auth
        .as_ref()
        .filter(|a| !a.issuers.is_empty())
        .map(|a| jwks::spawn_refresher(a.issuers.all().to_vec(), a.fetch_tls.clone()));
    let limiter = ratelimit::Limiter::new(&config, store.clone(), events.clone());
    let override_sync = limiter.as_ref().map(|l| l.spawn_override_sync());
    let (csrf_keys, csrf_ephemeral) = csrf_keys;
    if csrf_ephemeral {
        tracing::warn!(
            "neither csrf.secret_file nor auth.signing_key_file is set: CSRF tokens are signed with a secret made at start-up; they die with a restart and other instances refuse them"
        );
    }
    let csrf = config.csrf.enabled.then(|| {
        csrf::Csrf::new(
            &config.csrf,
            csrf_keys,
            store.clone(),
            Arc::new(portcullis_core::SystemClock),
        )
    });
    let cache = cache::ResponseCache::new(
        &config.cache,
        store.clone(),
        Arc::new(portcullis_core::SystemClock),
    );
    let cache_sync = cache.spawn_sync();
    let gateway = stack::Gateway::new(
        &config,
        proxy,
        auth.clone(),
        store.clone(),
        events.clone(),
        limiter.clone(),
        csrf,
        cache.clone(),
    );
    tracing::info!(
        listen = %listen,
        admin_listen = %admin_listen,
        upstream = %config.upstream.as_ref().map(|u| u.to_string()).unwrap_or_default(),
        tls = tls.is_some(),
        store = store.backend_name(),
        trace = config.trace.as_ref().map(|t| t.traces_url.as_str()).unwrap_or(""),
        "listening"
    );

    let (stop_admin_tx, mut stop_admin_rx) = watch::channel(false);
    let admin_router = admin::router(admin::AdminState {
        health: health.clone(),
        metrics: metrics.clone(),
        auth: auth.clone(),
        store: store.clone(),
        events: events.clone(),
        limiter: limiter.clone(),
        cache,
        config: Arc::new(config.clone()),
    });
    let admin_task = tokio::spawn(async move {
        let _ = axum::serve(admin_listener, admin_router)
            .with_graceful_shutdown(async move {
                let _ = stop_admin_rx.changed().await;
            })
            .await;
    });
    let upkeep = tokio::spawn(async move {
        let mut tick = tokio::time::interval(METRICS_UPKEEP);
        loop {
            tick.tick().await;
            metrics.upkeep();
        }
    });

    let (stop_main_tx, stop_main_rx) = watch::channel(false);
    let main_task = tokio::spawn(server::serve_main(
        gateway,
        main_listener,
        tls,
        config.limits.clone(),
        stop_main_rx,
        config.shutdown_grace,
    ));

    shutdown.await;
    tracing::info!("shutdown requested; draining");
    health.set_draining();
    let _ = stop_main_tx.send(true);
    let _ = main_task.await;
    let _ = stop_admin_tx.send(true);
    let _ = admin_task.await;
    upkeep.abort();
    maintenance.abort();
    if let Some(t) = revocation_sync {
        t.abort();
    }
    if let Some(t) = jwks_refresher {
        t.abort();
    }
    if let Some(t) = override_sync {
        t.abort();
    }
    if let Some(t) = cache_sync {
        t.abort();
    }
    if let Some(t) = traces {
        // Spans of the last requests, exported within a bounded wait.
        let _ = tokio::task::spawn_blocking(move || t.shutdown()).await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
