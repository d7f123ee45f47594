//! Fetching external issuers' key sets: one GET to the configured URL, bounded in time
//! and size. Nothing a token says ever changes where the gateway connects.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use portcullis_core::token::external::{Issuer, JWKS_MAX_AGE};
use tokio::net::TcpStream;

/// Bound on one fetch, connecting included.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest key set accepted.
const MAX_JWKS_BYTES: usize = 256 * 1024;

/// Fetches `url` (http or https) and returns the body of a 200.
pub async fn fetch(url: &str, tls: &Arc<rustls::ClientConfig>) -> Result<Bytes, String> {
    let (status, body) = exchange(
        http::Method::GET,
        url,
        "application/jwk-set+json, application/json",
        Bytes::new(),
        tls,
        FETCH_TIMEOUT,
    )
    .await?;
    if status != StatusCode::OK {
        return Err(format!("status {status}"));
    }
    Ok(body)
}

/// One outbound HTTP/1.1 request to a configured URL (http or https), on a new
/// connection, bounded by `timeout` and by [`MAX_JWKS_BYTES`] of answer. For the
/// gateway's own calls out (key sets, alert webhooks), never for proxying.
pub async fn exchange(
    method: http::Method,
    url: &str,
    content_type: &str,
    body: Bytes,
    tls: &Arc<rustls::ClientConfig>,
    timeout: Duration,
) -> Result<(StatusCode, Bytes), String> {
    let uri: Uri = url.parse().map_err(|_| "not a URL".to_owned())?;
    let https = uri.scheme_str() == Some("https");
    let authority = uri.authority().ok_or("no host")?.clone();
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let attempt = async {
        let tcp = TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| e.to_string())?;
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, authority.as_str())
            .header(header::USER_AGENT, "portcullis");
        req = if body.is_empty() {
            req.header(header::ACCEPT, content_type)
        } else {
            req.header(header::CONTENT_TYPE, content_type)
        };
        let req = req.body(Full::new(body)).map_err(|e| e.to_string())?;
        if https {
            let name =
                rustls::pki_types::ServerName::try_from(host.clone()).map_err(|e| e.to_string())?;
            let stream = tokio_rustls::TlsConnector::from(tls.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS: {e}"))?;
            send(TokioIo::new(stream), req).await
        } else {
            send(TokioIo::new(tcp), req).await
        }
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| "timed out".to_owned())?
}

async fn send<T>(io: TokioIo<T>, req: Request<Full<Bytes>>) -> Result<(StatusCode, Bytes), String>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let res = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = res.status();
    let body = Limited::new(res.into_body(), MAX_JWKS_BYTES)
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, body))
}

/// Fetches `issuer`'s keys now and loads them; logs the outcome.
pub async fn refresh(issuer: &Issuer, tls: &Arc<rustls::ClientConfig>) {
    let cfg = issuer.config();
    match fetch(&cfg.jwks_url, tls).await {
        Ok(body) => match issuer.load_jwks(&body, std::time::Instant::now()) {
            Ok(n) => {
                tracing::info!(target: "portcullis::auth", issuer = %cfg.issuer, keys = n, "fetched the issuer's keys")
            }
            Err(e) => {
                tracing::warn!(target: "portcullis::auth", issuer = %cfg.issuer, error = %e, "the issuer's key set is unusable")
            }
        },
        Err(e) => {
            tracing::warn!(target: "portcullis::auth", issuer = %cfg.issuer, error = %e, "cannot fetch the issuer's keys")
        }
    }
}

/// Keeps every issuer's keys fresh: fetched at start, then whenever they are older than
/// [`JWKS_MAX_AGE`].
pub fn spawn_refresher(
    issuers: Vec<Arc<Issuer>>,
    tls: Arc<rustls::ClientConfig>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            for i in &issuers {
                if i.wants_fetch(std::time::Instant::now(), false) {
                    refresh(i, &tls).await;
                }
            }
            tokio::time::sleep(JWKS_MAX_AGE.min(Duration::from_secs(30))).await;
        }
    })
}
