//! Signed relay requests: how a device authenticates each HTTP request to the relay with its
//! identity key, so that the relay stores no password and a captured request cannot be replayed.
//!
//! ```text
//! signed = TBS("switchboard/1 relay-request") || lp(method) || lp(path and query)
//!          || timestamp_be64 || lp(nonce) || SHA-256(body)
//! ```
//! sent as headers `x-sb-device`, `x-sb-timestamp`, `x-sb-nonce` (base64url, 16 bytes) and
//! `x-sb-signature` (base64url). The relay accepts a timestamp within [`MAX_CLOCK_SKEW_SECS`] of
//! its clock and each nonce once.

use sha2::{Digest as _, Sha256};

use crate::encoding::{Tbs, b64_decode, b64_encode};
use crate::ids::{DeviceId, Timestamp};
use crate::keys::{DeviceKeys, IdentityPublicKey, Signature};
use crate::rng::Csprng;

/// How far a request's timestamp may be from the relay's clock: 5 minutes.
pub const MAX_CLOCK_SKEW_SECS: u64 = 300;

/// Header names.
pub mod headers {
    /// The requesting device's id.
    pub const DEVICE: &str = "x-sb-device";
    /// Unix seconds when the request was signed.
    pub const TIMESTAMP: &str = "x-sb-timestamp";
    /// 16 random bytes, base64url.
    pub const NONCE: &str = "x-sb-nonce";
    /// The Ed25519 signature, base64url.
    pub const SIGNATURE: &str = "x-sb-signature";
}

/// The authentication headers of one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestAuth {
    /// The device.
    pub device: DeviceId,
    /// When it was signed.
    pub timestamp: Timestamp,
    /// The nonce.
    pub nonce: [u8; 16],
    /// The signature.
    pub signature: Signature,
}

fn signed_bytes(
    method: &str,
    path_and_query: &str,
    timestamp: Timestamp,
    nonce: &[u8],
    body: &[u8],
) -> Vec<u8> {
    let mut tbs = Tbs::new("switchboard/1 relay-request");
    tbs.bytes(method.as_bytes())
        .bytes(path_and_query.as_bytes())
        .u64(timestamp.0)
        .bytes(nonce)
        .fixed(&Sha256::digest(body));
    tbs.into_vec()
}

impl RequestAuth {
    /// Signs a request.
    pub fn sign(
        keys: &DeviceKeys,
        method: &str,
        path_and_query: &str,
        body: &[u8],
        now: Timestamp,
        rng: &mut Csprng,
    ) -> Self {
        let nonce = rng.array::<16>();
        let signature =
            keys.identity()
                .sign(&signed_bytes(method, path_and_query, now, &nonce, body));
        Self {
            device: keys.device(),
            timestamp: now,
            nonce,
            signature,
        }
    }

    /// The header values, in the order of [`headers`]: device, timestamp, nonce, signature.
    #[must_use]
    pub fn header_values(&self) -> [(&'static str, String); 4] {
        [
            (headers::DEVICE, self.device.to_string()),
            (headers::TIMESTAMP, self.timestamp.0.to_string()),
            (headers::NONCE, b64_encode(&self.nonce)),
            (headers::SIGNATURE, b64_encode(&self.signature.to_bytes())),
        ]
    }

    /// Parses the four header values (`None` for a missing header).
    ///
    /// # Errors
    /// A message naming the missing or malformed header.
    pub fn parse(
        device: Option<&str>,
        timestamp: Option<&str>,
        nonce: Option<&str>,
        signature: Option<&str>,
    ) -> Result<Self, String> {
        fn need<'a>(value: Option<&'a str>, name: &str) -> Result<&'a str, String> {
            value.ok_or_else(|| format!("missing header {name}"))
        }
        let device = need(device, headers::DEVICE)?
            .parse::<DeviceId>()
            .map_err(|e| format!("header {}: {e}", headers::DEVICE))?;
        let timestamp = need(timestamp, headers::TIMESTAMP)?
            .parse::<u64>()
            .map(Timestamp)
            .map_err(|e| format!("header {}: {e}", headers::TIMESTAMP))?;
        let nonce: [u8; 16] = b64_decode(need(nonce, headers::NONCE)?)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| format!("header {}: expected 16 bytes of base64url", headers::NONCE))?;
        let signature: [u8; 64] = b64_decode(need(signature, headers::SIGNATURE)?)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| {
                format!(
                    "header {}: expected 64 bytes of base64url",
                    headers::SIGNATURE
                )
            })?;
        Ok(Self {
            device,
            timestamp,
            nonce,
            signature: Signature::from_bytes(signature),
        })
    }

    /// Whether the timestamp is within [`MAX_CLOCK_SKEW_SECS`] of `now`.
    #[must_use]
    pub fn is_fresh(&self, now: Timestamp) -> bool {
        self.timestamp.0.abs_diff(now.0) <= MAX_CLOCK_SKEW_SECS
    }

    /// Verifies the signature over the request with the device's identity key.
    #[must_use]
    pub fn verify(
        &self,
        key: &IdentityPublicKey,
        method: &str,
        path_and_query: &str,
        body: &[u8],
    ) -> bool {
        key.verify(
            &signed_bytes(method, path_and_query, self.timestamp, &self.nonce, body),
            &self.signature,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::suite::CipherSuite;

    #[test]
    fn signed_request_verifies_and_any_change_breaks_it() {
        let keys = DeviceKeys::from_seed(
            DeviceId::from_bytes([1; 16]),
            CipherSuite::default(),
            &[1; 32],
        );
        let mut rng = Csprng::from_seed([2; 32]);
        let auth = RequestAuth::sign(&keys, "POST", "/v1/x?a=1", b"{}", Timestamp(100), &mut rng);
        let [d, t, n, s] = auth.header_values();
        let parsed = RequestAuth::parse(Some(&d.1), Some(&t.1), Some(&n.1), Some(&s.1)).unwrap();
        assert_eq!(parsed, auth);
        let key = keys.identity_public();
        assert!(parsed.verify(&key, "POST", "/v1/x?a=1", b"{}"));
        assert!(!parsed.verify(&key, "GET", "/v1/x?a=1", b"{}"));
        assert!(!parsed.verify(&key, "POST", "/v1/x?a=2", b"{}"));
        assert!(!parsed.verify(&key, "POST", "/v1/x?a=1", b"{ }"));
        assert!(parsed.is_fresh(Timestamp(400)) && !parsed.is_fresh(Timestamp(401)));
        assert!(RequestAuth::parse(None, Some(&t.1), Some(&n.1), Some(&s.1)).is_err());
        assert!(RequestAuth::parse(Some(&d.1), Some("x"), Some(&n.1), Some(&s.1)).is_err());
    }
}
