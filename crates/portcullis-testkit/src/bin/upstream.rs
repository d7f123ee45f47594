//! `portcullis-upstream ADDR`: the recording test upstream (see `portcullis_testkit::upstream`).

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".into());
    let listener = tokio::net::TcpListener::bind(&addr).await.expect("bind");
    println!("listening {}", listener.local_addr().expect("addr"));
    portcullis_testkit::upstream::run(listener).await;
}
