//! Listeners: accepting connections, TLS, HTTP/1.1 (and HTTP/2 over TLS), and draining on
//! shutdown.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::config::{ConfigError, Limits, Origin, TlsFiles};
use crate::h1guard::{Guard, Verdicts};
use crate::stack::{Conn, Gateway};

/// Time a client has to complete a TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Loads the main listener's certificate and key; errors name the key at fault.
pub fn tls_acceptor(files: &TlsFiles) -> Result<TlsAcceptor, ConfigError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let err = |key: &str, message: String| ConfigError {
        key: key.into(),
        origin: Some(Origin::Default),
        message,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert_file)
        .map_err(|e| {
            err(
                "tls.cert_file",
                format!("cannot read {}: {e}", files.cert_file.display()),
            )
        })?
        .collect::<Result<_, _>>()
        .map_err(|e| {
            err(
                "tls.cert_file",
                format!(
                    "{} is not a PEM certificate chain: {e}",
                    files.cert_file.display()
                ),
            )
        })?;
    if certs.is_empty() {
        return Err(err(
            "tls.cert_file",
            format!("{} holds no certificate", files.cert_file.display()),
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key_file).map_err(|e| {
        err(
            "tls.key_file",
            format!(
                "{} is not a readable PEM private key: {e}",
                files.key_file.display()
            ),
        )
    })?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| err("tls", format!("TLS setup failed: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            err(
                "tls.key_file",
                format!("the key does not fit the certificate: {e}"),
            )
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Binds a listener; the error names the key whose address failed.
pub fn bind(key: &'static str, addr: SocketAddr) -> Result<TcpListener, ConfigError> {
    let std_listener = std::net::TcpListener::bind(addr).map_err(|e| ConfigError {
        key: key.into(),
        origin: None,
        message: format!("cannot listen on {addr}: {e}"),
    })?;
    std_listener
        .set_nonblocking(true)
        .map_err(|e| ConfigError {
            key: key.into(),
            origin: None,
            message: format!("cannot use {addr}: {e}"),
        })?;
    TcpListener::from_std(std_listener).map_err(|e| ConfigError {
        key: key.into(),
        origin: None,
        message: format!("cannot use {addr}: {e}"),
    })
}

fn http1_builder(limits: &Limits) -> http1::Builder {
    let mut b = http1::Builder::new();
    // The gateway counts header fields itself so the refusal is problem+json; hyper's own
    // (larger) bounds stay as a backstop that answers 431 without parsing further.
    let head = usize::try_from(limits.header_bytes + limits.uri_bytes).unwrap_or(usize::MAX);
    b.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true)
        .max_headers((limits.header_count * 2).max(100))
        .max_buf_size(head.saturating_mul(2).max(16 * 1024));
    b
}

/// Serves the main listener until `stop` turns true, then drains for up to `grace`.
pub async fn serve_main(
    gateway: Arc<Gateway>,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
) {
    let graceful = GracefulShutdown::new();
    let h1 = Arc::new(http1_builder(&limits));
    let auto = Arc::new({
        let mut b = auto::Builder::new(TokioExecutor::new());
        b.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .max_headers((limits.header_count * 2).max(100));
        b.http2().timer(TokioTimer::new()).max_header_list_size(
            u32::try_from(limits.header_bytes.saturating_mul(2)).unwrap_or(u32::MAX),
        );
        b
    });
    // `limits.max_connections`: a connection holds a permit until it closes; without
    // one, the listener stops accepting and new connections wait in the kernel's queue.
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    // The strict reader refuses heads beyond this with 431; the stack's own (smaller)
    // limits on the target and the fields answer first for heads within it.
    let max_head = usize::try_from(limits.header_bytes + limits.uri_bytes)
        .unwrap_or(usize::MAX)
        .saturating_add(1024);
    loop {
        let permit = tokio::select! {
            biased;
            _ = stop.changed() => break,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            biased;
            _ = stop.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors or similar: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let watcher = graceful.watcher();
        let gateway = gateway.clone();
        match &tls {
            None => {
                let verdicts = Arc::new(Verdicts::default());
                let io = Guard::new(stream, max_head, verdicts.clone());
                let conn_info = Arc::new(Conn::guarded(peer, false, verdicts));
                let svc = service_fn(move |req| {
                    let gateway = gateway.clone();
                    let conn_info = conn_info.clone();
                    async move { Ok::<_, Infallible>(gateway.handle(req, &conn_info).await) }
                });
                let conn = h1.serve_connection(TokioIo::new(io), svc);
                tokio::spawn(async move {
                    if let Err(e) = watcher.watch(conn).await {
                        tracing::debug!(error = %e, peer = %peer, "connection ended with an error");
                    }
                    drop(permit);
                });
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let (auto, h1) = (auto.clone(), h1.clone());
                tokio::spawn(async move {
                    let http = Http { auto, h1, max_head };
                    serve_tls(stream, peer, acceptor, http, gateway, watcher).await;
                    drop(permit);
                });
            }
        }
    }
    drop(listener);
    tracing::info!(
        connections = graceful.count(),
        "stopped accepting; draining"
    );
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("all connections drained"),
        _ = tokio::time::sleep(grace) => tracing::warn!("shutdown_grace elapsed; closing the remaining connections"),
    }
}

/// The connection builders for TLS: HTTP/2 when ALPN chose it, else HTTP/1.1 through the
/// strict reader.
struct Http {
    auto: Arc<auto::Builder<TokioExecutor>>,
    h1: Arc<http1::Builder>,
    max_head: usize,
}

async fn serve_tls(
    stream: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    http: Http,
    gateway: Arc<Gateway>,
    watcher: hyper_util::server::graceful::Watcher,
) {
    let tls_stream =
        match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, peer = %peer, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(peer = %peer, "TLS handshake timed out");
                return;
            }
        };
    let h2 = tls_stream.get_ref().1.alpn_protocol() == Some(b"h2");
    let verdicts = Arc::new(Verdicts::default());
    let conn_info = Arc::new(if h2 {
        Conn::new(peer, true)
    } else {
        Conn::guarded(peer, true, verdicts.clone())
    });
    let svc = service_fn(move |req| {
        let gateway = gateway.clone();
        let conn_info = conn_info.clone();
        async move { Ok::<_, Infallible>(gateway.handle(req, &conn_info).await) }
    });
    let ended = if h2 {
        // HTTP/2 frames its requests itself: nothing for the strict reader to do.
        let conn = http.auto.serve_connection(TokioIo::new(tls_stream), svc);
        watcher.watch(conn.into_owned()).await
    } else {
        let io = Guard::new(tls_stream, http.max_head, verdicts);
        let conn = http.h1.serve_connection(TokioIo::new(io), svc);
        watcher.watch(conn).await.map_err(Into::into)
    };
    if let Err(e) = ended {
        tracing::debug!(error = %e, peer = %peer, "connection ended with an error");
    }
}
