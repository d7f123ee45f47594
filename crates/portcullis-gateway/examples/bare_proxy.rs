//! The floor: a bare hyper proxy with no policy at all, the same client and server
//! crates as the gateway. `benches/proxy/run.sh` can run it beside the gateway
//! (`PORTCULLIS_BIN=target/release/examples/bare_proxy`) to show what the framework costs
//! before any protection. Not part of the product.
use std::convert::Infallible;

use http_body_util::BodyExt;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let get = |f: &str| {
        args.iter()
            .position(|a| a == f)
            .map(|i| args[i + 1].clone())
            .unwrap()
    };
    let upstream = get("--upstream");
    let listen = get("--listen");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let client: Client<_, portcullis_gateway::body::Body> =
            Client::builder(TokioExecutor::new()).build_http();
        let l = tokio::net::TcpListener::bind(&listen).await.unwrap();
        loop {
            // Exit cleanly on Ctrl-C, so profilers write their output.
            let (s, _) = tokio::select! {
                _ = tokio::signal::ctrl_c() => return,
                a = l.accept() => a.unwrap(),
            };
            s.set_nodelay(true).unwrap();
            let client = client.clone();
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let client = client.clone();
                    let upstream = upstream.clone();
                    async move {
                        let (mut parts, body) = req.into_parts();
                        parts.uri = format!("{upstream}{}", parts.uri.path()).parse().unwrap();
                        parts.headers.remove("host");
                        let req = http::Request::from_parts(
                            parts,
                            body.map_err(Into::into).boxed_unsync(),
                        );
                        let res = client.request(req).await.unwrap();
                        Ok::<_, Infallible>(
                            res.map(|b| b.map_err(portcullis::BoxError::from).boxed_unsync()),
                        )
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
}
