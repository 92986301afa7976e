//! A stand-in for Coveralls for the benchmarks: answers `POST …/webhook` at once, as the
//! service does when it closes a build. It prints its URL on the first line, then serves
//! until killed. With `--tls DIR` it speaks HTTPS with a certificate for `localhost` from a
//! private CA, whose PEM it writes to `DIR/ca.pem` (for `SSL_CERT_FILE`, or curl's `--cacert`).
//!
//! With `--stall` it reads each close and never answers it: Coveralls hanging.
//!
//! `cargo run --release --example fake_coveralls -- [ADDR] [--tls DIR] [--stall]` (ADDR: 127.0.0.1:0)

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

static CLOSES: AtomicU64 = AtomicU64::new(0);
static STALL: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

async fn answer(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let closing =
        request.method() == hyper::Method::POST && request.uri().path().ends_with("/webhook");
    let _ = request.into_body().collect().await;
    if !closing {
        let mut missing = Response::new(Full::new(Bytes::from_static(b"{\"error\":\"no route\"}")));
        *missing.status_mut() = hyper::StatusCode::NOT_FOUND;
        return Ok(missing);
    }
    if STALL.load(Ordering::Relaxed) {
        std::future::pending::<()>().await;
    }
    let n = CLOSES.fetch_add(1, Ordering::Relaxed) + 1;
    let body = format!(r#"{{"done":true,"url":"https://coveralls.io/builds/{n}","jobs":4}}"#);
    let mut response = Response::new(Full::new(Bytes::from(body)));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

/// A server config for `localhost`, signed by a new CA written to `dir/ca.pem`.
fn tls(dir: &str) -> Arc<rustls::ServerConfig> {
    let ca_key = rcgen::KeyPair::generate().expect("a key");
    let mut ca = rcgen::CertificateParams::new(Vec::new()).expect("CA params");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    // Names of their own: OpenSSL (curl, Python) takes a leaf named like its CA for self-signed.
    ca.distinguished_name = rcgen::DistinguishedName::new();
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "fake_coveralls CA");
    let ca_cert = ca.self_signed(&ca_key).expect("the CA");
    std::fs::write(format!("{dir}/ca.pem"), ca_cert.pem()).expect("writing ca.pem");
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().expect("a key");
    let mut leaf =
        rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("leaf params");
    leaf.distinguished_name = rcgen::DistinguishedName::new();
    leaf.distinguished_name
        .push(rcgen::DnType::CommonName, "localhost");
    let leaf = leaf.signed_by(&key, &issuer).expect("the leaf");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).expect("a key"),
        )
        .expect("a certificate");
    Arc::new(config)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let tls_dir = args
        .iter()
        .position(|a| a == "--tls")
        .map(|i| args[i + 1].clone());
    STALL.store(args.iter().any(|a| a == "--stall"), Ordering::Relaxed);
    let addr = args
        .first()
        .filter(|a| !a.starts_with("--"))
        .cloned()
        .unwrap_or_else(|| "127.0.0.1:0".to_owned());
    let listener = TcpListener::bind(&addr).await.expect("listen");
    let local = listener.local_addr().expect("an address");
    let acceptor = tls_dir
        .as_deref()
        .map(|dir| tokio_rustls::TlsAcceptor::from(tls(dir)));
    match acceptor {
        Some(_) => println!("https://localhost:{}", local.port()),
        None => println!("http://{local}"),
    }
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        // As servers on the internet do: no Nagle delay on a response written in pieces.
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let service = service_fn(answer);
            match acceptor {
                Some(acceptor) => {
                    if let Ok(stream) = acceptor.accept(stream).await {
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    }
                }
                None => {
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                }
            }
        });
    }
}
