//! How a source knows that a delivery comes from its CI: a signature over the raw body
//! (CircleCI's `v1=`; GitHub's `sha256=` is the same scheme), a signature over the body, its
//! id and its time (Standard Webhooks, GitLab's signing token), or a secret shared with the
//! sender (Magnum CI's `?secret=`; GitLab's token header is the same). Either way the
//! comparison takes the same time whatever the bytes.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
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

    /// Whether the header's `value` could be a signature at all, before the body is read:
    /// missing, empty of the scheme or too long is refused as [`Signature::verify`] would.
    pub fn present(&self, value: Option<&str>) -> Result<(), Reply> {
        let prefix = format!("{}=", self.scheme);
        entries(self.header, value, ',', &prefix, self.scheme).map(drop)
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

/// How far a Standard Webhooks signature's time may be from now, either way, in seconds: the
/// scheme's five minutes. An older delivery is a replay (or a clock that is off).
const TOLERANCE: u64 = 5 * 60;

/// A delivery signed as Standard Webhooks prescribe (GitLab's signing token):
/// `webhook-signature: v1,<base64>` entries, separated by spaces, each an HMAC-SHA256 of
/// `{webhook-id}.{webhook-timestamp}.{body}` keyed with the token's bytes.
pub struct StandardWebhook<'a> {
    /// `webhook-id`: the message's id, the same on a resend.
    pub id: Option<&'a str>,
    /// `webhook-timestamp`: when it was sent, in seconds since the Unix epoch.
    pub timestamp: Option<&'a str>,
    /// `webhook-signature`.
    pub signature: Option<&'a str>,
}

impl StandardWebhook<'_> {
    /// Check the signature with `key` at `now` (seconds since the Unix epoch): the time
    /// first, within [`TOLERANCE`], then the `v1` entries, as [`Signature::verify`] does.
    pub fn verify(&self, key: &[u8], body: &[u8], now: u64) -> Result<(), Reply> {
        let (candidates, id, timestamp) = self.headers(now)?;
        let message = [id.as_bytes(), b".", timestamp.as_bytes(), b".", body];
        let candidates = candidates.iter().map(|b64| BASE64.decode(b64).ok());
        match matches(key, &message, candidates) {
            true => Ok(()),
            false => Err(no_match(SIGNATURE_HEADER)),
        }
    }

    /// What can be checked before the body is read: the signatures, the id and a time
    /// within the tolerance of `now`.
    pub fn present(&self, now: u64) -> Result<(), Reply> {
        self.headers(now).map(drop)
    }

    /// The signatures, the id and the time, each there and well-formed.
    fn headers(&self, now: u64) -> Result<(Vec<&str>, &str, &str), Reply> {
        let header = SIGNATURE_HEADER;
        let candidates = entries(header, self.signature, ' ', "v1,", "v1")?;
        let (Some(id), Some(timestamp)) = (self.id, self.timestamp) else {
            let why = "missing webhook-id or webhook-timestamp header, which the signature covers";
            return Err(Reply::error(401, why));
        };
        let Ok(sent) = timestamp.trim().parse::<u64>() else {
            let why = "webhook-timestamp is not a number of seconds since the Unix epoch";
            return Err(Reply::error(401, why));
        };
        if sent.abs_diff(now) > TOLERANCE {
            let why = format!(
                "webhook-timestamp is {} seconds from now, over {TOLERANCE}: a replay, or a \
                 clock that is off",
                sent.abs_diff(now)
            );
            return Err(Reply::error(401, why));
        }
        Ok((candidates, id, timestamp))
    }
}

const SIGNATURE_HEADER: &str = "webhook-signature";

/// The key of a Standard Webhooks signing token: `whsec_` (which the scheme's libraries also
/// take away where it is there) and the key's bytes in base64; `None` if it is not that.
pub fn signing_key(token: &str) -> Option<Vec<u8>> {
    let encoded = token.trim();
    let encoded = encoded.strip_prefix("whsec_").unwrap_or(encoded);
    BASE64.decode(encoded).ok().filter(|key| !key.is_empty())
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

    /// A Standard Webhooks delivery's headers.
    fn standard(id: &str, timestamp: &str, signature: &str) -> StandardWebhook<'static> {
        let leak = |text: &str| -> &'static str { Box::leak(text.to_owned().into_boxed_str()) };
        StandardWebhook {
            id: Some(leak(id)),
            timestamp: Some(leak(timestamp)),
            signature: Some(leak(signature)),
        }
    }

    /// The published vectors (Standard Webhooks' own libraries) and the one computed over
    /// the GitLab fixture: webhook_signature_vectors.json.
    const STANDARD_VECTORS: [(&str, &str, u64, &str, &str); 2] = [
        (
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            "{\"test\": 2432232314}",
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        ),
        (
            "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
            "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
            1649367553,
            "{\"email\":\"test@example.com\",\"username\":\"test_user\"}",
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=",
        ),
    ];

    #[test]
    fn the_standard_webhooks_vectors_verify_and_nothing_else_does() {
        let fixture = include_bytes!("testdata/gitlab_pipeline_hook.json");
        let computed = (
            "whsec_AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=",
            "f5e5f430-f57b-4e6e-9fac-d9128cd7232f",
            1764612000,
            &fixture[..],
            "v1,wJKNs5YQ9Yzs7dsnEXdaqdpiZHT7hkxuQBP9hguF7O8=",
        );
        let published =
            STANDARD_VECTORS.map(|(t, id, at, body, sig)| (t, id, at, body.as_bytes(), sig));
        for (token, id, at, body, signature) in published.into_iter().chain([computed]) {
            let key = signing_key(token).expect("a signing token");
            let check = |id: &str, timestamp: u64, signature: &str, body: &[u8], now: u64| {
                standard(id, &timestamp.to_string(), signature).verify(&key, body, now)
            };
            assert_eq!(check(id, at, signature, body, at), Ok(()), "{id}");
            // Among other entries, separated by spaces; and within five minutes either way.
            let among = format!("v1a,AAAA v1,AAAA= {signature}");
            assert_eq!(check(id, at, &among, body, at + 300), Ok(()), "{id}");
            assert_eq!(check(id, at, signature, body, at - 300), Ok(()), "{id}");
            let no_match = Err(Reply::error(
                401,
                "webhook-signature does not match the body",
            ));
            assert_eq!(check(&format!("{id}x"), at, signature, body, at), no_match);
            assert_eq!(check(id, at + 1, signature, body, at), no_match);
            assert_eq!(
                check(id, at, signature, &[body, b" "].concat(), at),
                no_match
            );
            let other = signing_key("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").unwrap();
            let headers = standard(id, &at.to_string(), signature);
            assert_eq!(headers.verify(&other, body, at), no_match);
            // The same delivery over five minutes later, or earlier: a replay.
            let replay = check(id, at, signature, body, at + 301).unwrap_err();
            assert_eq!(replay.status, 401);
            assert!(
                replay.body["error"]
                    .as_str()
                    .unwrap()
                    .contains("301 seconds from now")
            );
            assert_eq!(
                check(id, at, signature, body, at - 301).map_err(|r| r.status),
                Err(401)
            );
        }
    }

    #[test]
    fn standard_webhooks_headers_must_all_be_there_and_honest() {
        let (token, id, at, body, signature) = STANDARD_VECTORS[0];
        let key = signing_key(token).unwrap();
        let at_text = at.to_string();
        let error = |headers: StandardWebhook| {
            let reply = headers.verify(&key, body.as_bytes(), at).unwrap_err();
            (
                reply.status,
                reply.body["error"].as_str().unwrap().to_owned(),
            )
        };
        let missing = StandardWebhook {
            signature: None,
            ..standard(id, &at_text, signature)
        };
        assert_eq!(
            error(missing),
            (401, "missing webhook-signature header".to_owned())
        );
        let no_id = StandardWebhook {
            id: None,
            ..standard(id, &at_text, signature)
        };
        assert_eq!(error(no_id).0, 401);
        let words = standard(id, "yesterday", signature);
        assert_eq!(
            error(words),
            (
                401,
                "webhook-timestamp is not a number of seconds since the Unix epoch".to_owned()
            )
        );
        let other_scheme = signature.replacen("v1,", "v2,", 1);
        assert_eq!(
            error(standard(id, &at_text, &other_scheme)),
            (401, "webhook-signature has no v1 signature".to_owned())
        );
        let long = vec!["v1,AAAA"; 200].join(" ");
        assert_eq!(
            error(standard(id, &at_text, &long)),
            (400, "webhook-signature is over 1024 bytes".to_owned())
        );
        let not_base64 = standard(id, &at_text, "v1,not*base64");
        assert_eq!(
            error(not_base64).1,
            "webhook-signature does not match the body"
        );
    }

    #[test]
    fn a_signing_token_is_base64_with_or_without_its_prefix() {
        let key = signing_key("whsec_AQID").unwrap();
        assert_eq!(key, [1, 2, 3]);
        assert_eq!(signing_key("AQID").unwrap(), [1, 2, 3]);
        for wrong in ["whsec_", "whsec_not base64!", "glpat-xyz", ""] {
            assert_eq!(signing_key(wrong), None, "{wrong}");
        }
    }

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
