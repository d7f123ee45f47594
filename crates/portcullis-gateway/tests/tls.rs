//! TLS on the main listener (HTTP/2 and HTTP/1.1 by ALPN), and an https:// upstream.
//!
//! The client is curl, a real TLS and HTTP/2 client; keys and certificates are made
//! fresh by each run.

use std::process::Command;
use std::time::Duration;

use portcullis_testkit::TempDir;
use portcullis_testkit::gateway::GatewayCmd;
use portcullis_testkit::upstream::Upstream;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

struct Pki {
    ca: std::path::PathBuf,
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
}

fn pki(dir: &TempDir) -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "portcullis test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    Pki {
        ca: dir.write("ca.pem", ca.pem()),
        cert: dir.write("cert.pem", leaf.pem()),
        key: dir.write("key.pem", leaf_key.serialize_pem()),
    }
}

fn curl(args: &[&str]) -> (String, String) {
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "-w",
            "\n%{http_code} %{http_version}",
        ])
        .args(args)
        .output()
        .expect("curl is installed (the test command installs it)");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, tail) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    if !out.status.success() {
        eprintln!("curl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    (body.to_owned(), tail.to_owned())
}

#[test]
fn tls_listener_speaks_h2_and_http11_and_https_upstreams_work() {
    let dir = TempDir::new("tls");
    let p = pki(&dir);
    let up = Upstream::start();
    let front = GatewayCmd::new(env!("CARGO_BIN_EXE_portcullis"))
        .args([
            "serve",
            "--upstream",
            &up.url(),
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .env("PORTCULLIS_TLS_CERT_FILE", p.cert.to_str().unwrap())
        .env("PORTCULLIS_TLS_KEY_FILE", p.key.to_str().unwrap())
        .start();
    let url = format!("https://localhost:{}/secure", front.listen.port());
    let resolve = format!("localhost:{}:127.0.0.1", front.listen.port());
    let ca = p.ca.to_str().unwrap();

    let (body, tail) = curl(&["--http2", "--cacert", ca, "--resolve", &resolve, &url]);
    assert_eq!(tail, "200 2", "HTTP/2 over TLS: {body}");
    let echoed: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(echoed["headers"]["x-forwarded-proto"][0], "https");
    assert_eq!(
        echoed["version"], "HTTP/1.1",
        "the upstream is spoken to over HTTP/1.1"
    );

    let (_, tail) = curl(&["--http1.1", "--cacert", ca, "--resolve", &resolve, &url]);
    assert_eq!(tail, "200 1.1");

    // Over TLS the profile sends HSTS, on both protocols and on refusals too; over plain
    // HTTP (the second gateway below) it never does.
    for proto in ["--http2", "--http1.1"] {
        for method in ["GET", "TRACE"] {
            let (head, tail) = curl(&[
                proto,
                "-D",
                "-",
                "-o",
                "/dev/null",
                "-X",
                method,
                "--cacert",
                ca,
                "--resolve",
                &resolve,
                &url,
            ]);
            assert!(
                head.to_ascii_lowercase()
                    .contains("strict-transport-security: max-age=31536000; includesubdomains"),
                "{proto} {method} ({tail}): {head}"
            );
        }
    }

    // Without the CA, the client refuses the certificate: the listener really is TLS.
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "5", "--resolve", &resolve, &url])
        .output()
        .unwrap();
    assert!(!out.status.success());

    // A second gateway in front of the first, over https:// with the CA file.
    let back = GatewayCmd::new(env!("CARGO_BIN_EXE_portcullis"))
        .args([
            "serve",
            "--upstream",
            &format!("https://localhost:{}", front.listen.port()),
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .env("PORTCULLIS_TLS_UPSTREAM_CA_FILE", ca)
        .start();
    let (body, tail) = curl(&[&back.url("/through/both")]);
    assert_eq!(tail, "200 1.1", "{body}");
    let (head, _) = curl(&["-D", "-", "-o", "/dev/null", &back.url("/through/both")]);
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("strict-transport-security"),
        "no HSTS over plain HTTP (the TLS upstream's is removed): {head}"
    );
    let echoed: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(echoed["path"], "/through/both");

    // Without the CA file the upstream's certificate is refused: 502, never plaintext.
    let untrusting = GatewayCmd::new(env!("CARGO_BIN_EXE_portcullis"))
        .args([
            "serve",
            "--upstream",
            &format!("https://localhost:{}", front.listen.port()),
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .start();
    let (_, tail) = curl(&[&untrusting.url("/x")]);
    assert_eq!(tail, "502 1.1");
    let _ = Duration::ZERO;
}

#[test]
fn bad_tls_files_are_config_errors_naming_the_key() {
    let dir = TempDir::new("badtls");
    let garbage = dir.write("garbage.pem", "not a certificate");
    let out = GatewayCmd::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["check-config", "--upstream", "http://127.0.0.1:1"])
        .env("PORTCULLIS_TLS_CERT_FILE", garbage.to_str().unwrap())
        .env("PORTCULLIS_TLS_KEY_FILE", "/nonexistent/key.pem")
        .run(Duration::from_secs(10));
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.contains("tls.cert_file"), "{}", out.stderr);
}
