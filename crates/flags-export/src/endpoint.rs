//! What exporters show of their destination: URLs without the credentials they may carry, and
//! the digests that identify a batch.
//!
//! Names and `Debug` output end up in logs and metrics labels, so they keep only the scheme,
//! host, port and (where it names a database or nothing secret) the path.

use sha2::{Digest, Sha256};

/// `url` without its user information, query and fragment: `postgres://u:p@db:5432/x?sslmode=y`
/// becomes `postgres://db:5432/x`. A comma-separated list of servers (as NATS takes) keeps
/// each one, each stripped.
pub(crate) fn without_credentials(url: &str) -> String {
    url.split(',')
        .map(|one| strip(one.trim(), true))
        .collect::<Vec<_>>()
        .join(",")
}

/// `url`'s scheme, host and port alone: `https://hooks.example/T0/B1/secret` becomes
/// `https://hooks.example`. For URLs whose path may itself be a secret (webhooks).
pub(crate) fn origin(url: &str) -> String {
    strip(url.trim(), false)
}

fn strip(url: &str, keep_path: bool) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, after) = rest.split_at(authority_end);
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let path = if keep_path {
        &after[..after.find(['?', '#']).unwrap_or(after.len())]
    } else {
        ""
    };
    match scheme {
        Some(scheme) => format!("{scheme}://{host}{path}"),
        None => format!("{host}{path}"),
    }
}

/// The lowercase hex SHA-256 of `bytes`.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// `bytes` as lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_queries_and_fragments_are_dropped() {
        let cases = [
            (
                "postgres://flagd:hunter2@db.internal:5432/events?sslmode=require",
                "postgres://db.internal:5432/events",
            ),
            ("redis://:secret@cache:6379/2", "redis://cache:6379/2"),
            ("redis://cache", "redis://cache"),
            (
                "nats://token@a:4222, nats://u:p@b:4222",
                "nats://a:4222,nats://b:4222",
            ),
            ("127.0.0.1:4222", "127.0.0.1:4222"),
            ("http://h/p#frag", "http://h/p"),
            ("postgres://u@[::1]:5432/db", "postgres://[::1]:5432/db"),
        ];
        for (url, expected) in cases {
            assert_eq!(without_credentials(url), expected, "{url}");
        }
    }

    #[test]
    fn an_origin_keeps_no_path() {
        let cases = [
            (
                "https://hooks.example.com/services/T0/B1/XYZ",
                "https://hooks.example.com",
            ),
            (
                "http://u:p@127.0.0.1:8080/hook?token=1",
                "http://127.0.0.1:8080",
            ),
            ("http://h", "http://h"),
        ];
        for (url, expected) in cases {
            assert_eq!(origin(url), expected, "{url}");
        }
    }

    #[test]
    fn hex_is_lowercase_and_padded() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa0, 0xff]), "000fa0ff");
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
