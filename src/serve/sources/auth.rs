//! How a source knows that a delivery comes from its CI: a signature over the raw body
//! (CircleCI's `v1=`; GitHub's `sha256=` is the same scheme), or a secret shared with the
//! sender (Magnum CI's `?secret=`; GitLab's token header is the same). Either way the
//! comparison takes the same time whatever the bytes.

use ring::hmac;
use subtle::ConstantTimeEq;

use super::Reply;

/// A signature header longer than this is refused before any HMAC is computed.
const MAX_SIGNATURE_HEADER: usize = 1024;
/// At most this many entries of the scheme are compared with the body's HMAC.
const MAX_SIGNATURES: usize = 4;

/// A header of `scheme=<hex>` entries (several, separated by commas), each an HMAC-SHA256 of
/// the raw body keyed with the secret.
pub struct Signature {
    /// The header: `circleci-signature`.
    pub header: &'static str,
    /// The entries that count, named before their `=`: `v1`.
    pub scheme: &'static str,
}

impl Signature {
    /// Check the header's `value`: only entries of the scheme count (a request cannot
    /// downgrade to something weaker), compared in constant time with the HMAC of the raw
    /// body, computed once. A header too long to be honest is refused before any HMAC.
    pub fn verify(&self, secret: &[u8], body: &[u8], value: Option<&str>) -> Result<(), Reply> {
        let header = self.header;
        let Some(value) = value else {
            return Err(Reply::error(401, format!("missing {header} header")));
        };
        if value.len() > MAX_SIGNATURE_HEADER {
            return Err(Reply::error(
                400,
                format!("{header} is over {MAX_SIGNATURE_HEADER} bytes"),
            ));
        }
        let prefix = format!("{}=", self.scheme);
        let candidates: Vec<&str> = value
            .split(',')
            .filter_map(|part| part.trim().strip_prefix(prefix.as_str()))
            .take(MAX_SIGNATURES)
            .collect();
        if candidates.is_empty() {
            let why = format!("{header} has no {} signature", self.scheme);
            return Err(Reply::error(401, why));
        }
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret), body);
        let matches = candidates
            .iter()
            .filter_map(|hex| decode_hex(hex))
            .any(|candidate| bool::from(candidate.as_slice().ct_eq(tag.as_ref())));
        match matches {
            true => Ok(()),
            false => Err(Reply::error(
                401,
                format!("{header} does not match the body"),
            )),
        }
    }
}

/// The 32 bytes of an HMAC-SHA256 written in hex, either case.
fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok())
        .collect()
}

/// A secret the sender repeats in each delivery; what the answers say when it is missing or
/// wrong, naming where it goes.
pub struct SharedSecret {
    pub missing: &'static str,
    pub wrong: &'static str,
}

impl SharedSecret {
    /// The secret `given` with the delivery, compared in constant time.
    pub fn verify(&self, secret: &[u8], given: Option<&[u8]>) -> Result<(), Reply> {
        match given {
            None => Err(Reply::error(401, self.missing)),
            Some(given) if !bool::from(given.ct_eq(secret)) => Err(Reply::error(401, self.wrong)),
            Some(_) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_secret_must_be_given_and_equal() {
        let secret = SharedSecret {
            missing: "no secret",
            wrong: "wrong secret",
        };
        assert_eq!(secret.verify(b"s3cret", Some(b"s3cret")), Ok(()));
        assert_eq!(
            secret.verify(b"s3cret", None),
            Err(Reply::error(401, "no secret"))
        );
        for wrong in [&b"s3cre"[..], b"s3cretx", b"S3CRET", b""] {
            assert_eq!(
                secret.verify(b"s3cret", Some(wrong)),
                Err(Reply::error(401, "wrong secret"))
            );
        }
    }
}
