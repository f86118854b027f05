//! API key secrets: their shape and their stored hash, the same for every backend so a key
//! created through one store authenticates through another over the same data.

use std::fmt::Write as _;

use sha2::{Digest, Sha256};

use super::ApiKeyKind;

/// The secret for a new key: `flagd-sdk-` or `flagd-admin-` followed by the entropy in hex.
///
/// The prefix lets people and secret scanners tell what a leaked string is; the caller supplies
/// at least 256 bits from a cryptographically secure source.
pub fn generate_secret(kind: ApiKeyKind, entropy: &[u8; 32]) -> String {
    let mut secret = format!("flagd-{}-", kind.as_str());
    push_hex(&mut secret, entropy);
    secret
}

/// The kind of key `secret` would be, read off its prefix; `None` for a string that no
/// [`generate_secret`] made, which no store holds, so it can be refused without asking one
/// (while the store is down, say).
pub fn secret_kind(secret: &str) -> Option<ApiKeyKind> {
    [ApiKeyKind::Sdk, ApiKeyKind::Admin]
        .into_iter()
        .find(|kind| {
            secret
                .strip_prefix("flagd-")
                .and_then(|rest| rest.strip_prefix(kind.as_str()))
                .is_some_and(|rest| rest.starts_with('-'))
        })
}

/// What a store keeps instead of a secret: the SHA-256 of its UTF-8 bytes, in lowercase hex.
///
/// A plain hash is enough (no salt, no slow hash) because secrets are long random strings, not
/// passwords: there is nothing to guess, and lookups by hash stay one index probe.
pub fn hash_secret(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    let mut hex = String::with_capacity(64);
    push_hex(&mut hex, &digest);
    hex
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    for byte in bytes {
        // Writing to a String cannot fail.
        let _ = write!(out, "{byte:02x}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_sha256_hex() {
        // FIPS 180-2 test vector for "abc".
        assert_eq!(
            hash_secret("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn secret_names_its_kind() {
        let secret = generate_secret(ApiKeyKind::Admin, &[0xab; 32]);
        assert_eq!(secret, format!("flagd-admin-{}", "ab".repeat(32)));
        assert!(generate_secret(ApiKeyKind::Sdk, &[0; 32]).starts_with("flagd-sdk-"));
        for kind in [ApiKeyKind::Sdk, ApiKeyKind::Admin] {
            assert_eq!(secret_kind(&generate_secret(kind, &[7; 32])), Some(kind));
        }
        for not_made_here in [
            "",
            "wrong",
            "flagd-",
            "flagd-sdk",
            "flagd-sdkx-1",
            "Flagd-sdk-1",
        ] {
            assert_eq!(secret_kind(not_made_here), None, "{not_made_here:?}");
        }
    }
}
