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
        let prefix = format!("{}=", self.scheme);
        let candidates = entries(self.header, value, ',', &prefix, self.scheme)?;
        let candidates = candidates.iter().map(|hex| decode_hex(hex));
        match matches(secret, &[body], candidates) {
            true => Ok(()),
            false => Err(no_match(self.header)),
        }
    }
}

/// The entries of a signature header `value` that start with `prefix` (at most
/// [`MAX_SIGNATURES`], `prefix` removed), the header's entries separated by `separator`: a
/// missing header, or one with no such entry, is 401; one too long to be honest, 400.
fn entries<'a>(
    header: &str,
    value: Option<&'a str>,
    separator: char,
    prefix: &str,
    scheme: &str,
) -> Result<Vec<&'a str>, Reply> {
    let Some(value) = value else {
        return Err(Reply::error(401, format!("missing {header} header")));
    };
    if value.len() > MAX_SIGNATURE_HEADER {
        return Err(Reply::error(
            400,
            format!("{header} is over {MAX_SIGNATURE_HEADER} bytes"),
        ));
    }
    let candidates: Vec<&str> = value
        .split(separator)
        .filter_map(|part| part.trim().strip_prefix(prefix))
        .take(MAX_SIGNATURES)
        .collect();
    if candidates.is_empty() {
        let why = format!("{header} has no {scheme} signature");
        return Err(Reply::error(401, why));
    }
    Ok(candidates)
}

/// Whether one of `candidates` (each decoded, where it could be) is the HMAC-SHA256 of
/// `message`'s parts one after another, keyed with `key`: computed once, compared in
/// constant time.
fn matches(
    key: &[u8],
    message: &[&[u8]],
    candidates: impl Iterator<Item = Option<Vec<u8>>>,
) -> bool {
    let mut context = hmac::Context::with_key(&hmac::Key::new(hmac::HMAC_SHA256, key));
    for part in message {
        context.update(part);
    }
    let tag = context.sign();
    let mut candidates = candidates.flatten();
    candidates.any(|candidate| bool::from(candidate.as_slice().ct_eq(tag.as_ref())))
}

fn no_match(header: &str) -> Reply {
    Reply::error(401, format!("{header} does not match the body"))
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
