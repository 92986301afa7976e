//! A stand-in for Coveralls for the benchmarks: answers `POST …/webhook` at once, as the
//! service does when it closes a build, and counts the closes. It prints its address on the
//! first line, then serves until killed.
//!
//! `cargo run --release --example fake_coveralls [ADDR]` (default `127.0.0.1:0`)

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".to_owned());
    let server = Arc::new(tiny_http::Server::http(&addr).expect("listen"));
    println!(
        "http://{}",
        server.server_addr().to_ip().expect("an IP address")
    );
    let closes = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (server, closes) = (Arc::clone(&server), Arc::clone(&closes));
            std::thread::spawn(move || {
                for mut request in server.incoming_requests() {
                    let mut body = Vec::new();
                    let _ = request.as_reader().read_to_end(&mut body);
                    let n = closes.fetch_add(1, Ordering::Relaxed) + 1;
                    let answer = format!(
                        r#"{{"done":true,"url":"https://coveralls.io/builds/{n}","jobs":4}}"#
                    );
                    let header = tiny_http::Header::from_bytes("Content-Type", "application/json");
                    let response = tiny_http::Response::from_string(answer)
                        .with_header(header.expect("valid"));
                    let _ = request.respond(response);
                }
            })
        })
        .collect();
    for worker in workers {
        let _ = worker.join();
    }
}
