//! The one signer of the tests and of examples/receiver_load.rs: an HMAC-SHA256 in lowercase
//! hex, as CircleCI signs a body (`v1=`), and GitHub too (`sha256=`).

/// The lowercase hex HMAC-SHA256 of `body` keyed with `secret`.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = ring::hmac::sign(&key, body);
    tag.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}
