//! `portcullis demo`: the gateway in front of a built-in echo upstream, to try it out.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;

/// Starts the echo upstream on a free loopback port and returns its address. It answers
/// every request with JSON describing what it received (method, path, query, headers,
/// body size), reading the body as a stream.
pub async fn start_echo() -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service_fn(echo))
                    .await;
            });
        }
    });
    Ok(addr)
}

async fn echo(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, mut body) = req.into_parts();
    let mut body_bytes: u64 = 0;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => body_bytes += f.data_ref().map_or(0, |d| d.len() as u64),
            Err(_) => break,
        }
    }
    let mut headers = Map::new();
    for (name, value) in &parts.headers {
        headers.insert(
            name.to_string(),
            Value::from(String::from_utf8_lossy(value.as_bytes()).into_owned()),
        );
    }
    let body = json!({
        "echo": true,
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "headers": headers,
        "body_bytes": body_bytes,
    });
    let mut res = Response::new(Full::new(Bytes::from(
        serde_json::to_vec_pretty(&body).unwrap_or_default(),
    )));
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    Ok(res)
}

/// The walkthrough printed at start.
pub fn walkthrough(listen: SocketAddr, admin: SocketAddr, echo: SocketAddr) -> String {
    format!(
        "\nPortcullis demo: the gateway on http://{listen} protects a built-in echo upstream on http://{echo}.\n\
         Admin endpoints are on http://{admin}. Try:\n\n\
         \x20 curl -i http://{listen}/anything                  # proxied; note X-Request-Id\n\
         \x20 curl -i 'http://{listen}/a/..%2f..%2fetc/passwd'  # refused: 400 problem+json\n\
         \x20 curl -i -X TRACE http://{listen}/                 # refused: 405\n\
         \x20 curl -i http://{listen}/x -H 'X-Forwarded-For: 6.6.6.6'   # the echo shows the real client instead\n\
         \x20 curl -s http://{admin}/readyz\n\
         \x20 curl -s http://{admin}/metrics | grep portcullis_requests_total\n\n\
         Stop with Ctrl-C.\n"
    )
}
