//! The one signer of the tests and of examples/receiver_load.rs: an HMAC-SHA256 in lowercase
//! hex, as CircleCI signs a body (`v1=`), and GitHub too (`sha256=`); and in base64 over an
//! id, a time and the body, as Standard Webhooks sign (GitLab's signing token).

#![allow(dead_code)]

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

/// The lowercase hex HMAC-SHA256 of `body` keyed with `secret`.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let tag = hmac(secret.as_bytes(), &[body]);
    tag.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// `webhook-signature`'s value for a delivery `id` sent at `timestamp` (seconds since the
/// Unix epoch), with the signing token `token` (`whsec_` and the key in base64).
pub fn sign_standard(token: &str, id: &str, timestamp: u64, body: &[u8]) -> String {
    let key = BASE64
        .decode(token.trim_start_matches("whsec_"))
        .expect("a signing token: whsec_ and base64");
    let timestamp = timestamp.to_string();
    let tag = hmac(
        &key,
        &[id.as_bytes(), b".", timestamp.as_bytes(), b".", body],
    );
    format!("v1,{}", BASE64.encode(tag.as_ref()))
}

fn hmac(key: &[u8], message: &[&[u8]]) -> ring::hmac::Tag {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    let mut context = ring::hmac::Context::with_key(&key);
    for part in message {
        context.update(part);
    }
    context.sign()
}
