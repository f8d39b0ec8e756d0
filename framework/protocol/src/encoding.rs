//! Byte encodings shared by the wire types: base64url strings for keys, ciphertexts and
//! signatures, lowercase hex for identifiers, and the length-prefixed "to be signed" (TBS)
//! encoding that every signature and every HPKE `info`/AAD is computed over.
//!
//! JSON is only the transport. Nothing is ever signed over JSON text: signatures cover a
//! canonical binary encoding, so re-serialising a value can never change what was signed.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Deserializer, Serializer};

/// Encodes bytes as unpadded base64url.
pub(crate) fn b64_encode(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes unpadded base64url, refusing padding and non-canonical trailing bits, so that one byte
/// string has exactly one textual form.
pub(crate) fn b64_decode(text: &str) -> Result<Vec<u8>, String> {
    URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|e| format!("invalid base64url: {e}"))
}

/// Encodes bytes as lowercase hex.
pub(crate) fn hex_encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        for nibble in [b >> 4, b & 0x0f] {
            out.push(char::from(
                DIGITS.get(usize::from(nibble)).copied().unwrap_or(b'0'),
            ));
        }
    }
    out
}

/// Decodes exactly `N` bytes of lowercase hex. Uppercase is refused so that an identifier has one
/// textual form.
pub(crate) fn hex_decode<const N: usize>(text: &str) -> Result<[u8; N], String> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    let raw = text.as_bytes();
    if raw.len() != N * 2 {
        return Err(format!(
            "expected {} lowercase hex digits, found {} characters",
            N * 2,
            raw.len()
        ));
    }
    let mut out = [0u8; N];
    for (slot, pair) in out.iter_mut().zip(raw.chunks_exact(2)) {
        match (
            pair.first().copied().and_then(nibble),
            pair.get(1).copied().and_then(nibble),
        ) {
            (Some(hi), Some(lo)) => *slot = (hi << 4) | lo,
            _ => return Err("expected lowercase hex digits (0-9, a-f)".to_owned()),
        }
    }
    Ok(out)
}

/// serde adapter: `Vec<u8>` as base64url.
pub(crate) mod b64 {
    use super::{Deserialize, Deserializer, Serializer, b64_decode, b64_encode};

    pub(crate) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&b64_encode(bytes))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        b64_decode(&text).map_err(serde::de::Error::custom)
    }
}

/// serde adapter: `[u8; N]` as base64url of exactly N bytes.
pub(crate) mod b64_array {
    use super::{Deserialize, Deserializer, Serializer, b64_decode, b64_encode};

    pub(crate) fn serialize<S: Serializer, const N: usize>(
        bytes: &[u8; N],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_str(&b64_encode(bytes))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
        d: D,
    ) -> Result<[u8; N], D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        let bytes = b64_decode(&text).map_err(serde::de::Error::custom)?;
        let len = bytes.len();
        <[u8; N]>::try_from(bytes)
            .map_err(|_| serde::de::Error::custom(format!("expected {N} bytes, found {len}")))
    }
}

/// Builder for the canonical "to be signed" encoding: a domain-separation label followed by
/// fields, each either fixed-width big-endian integers or `u32`-length-prefixed byte strings.
#[derive(Debug, Clone)]
pub(crate) struct Tbs(Vec<u8>);

impl Tbs {
    /// Starts an encoding with its domain-separation label.
    pub(crate) fn new(label: &str) -> Self {
        let mut tbs = Self(Vec::with_capacity(256));
        tbs.bytes(label.as_bytes());
        tbs
    }

    /// Appends a length-prefixed byte string.
    pub(crate) fn bytes(&mut self, bytes: &[u8]) -> &mut Self {
        let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        self.0.extend_from_slice(&len.to_be_bytes());
        self.0.extend_from_slice(bytes);
        self
    }

    /// Appends a fixed-width field (its length is implied by its position).
    pub(crate) fn fixed(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.extend_from_slice(bytes);
        self
    }

    /// Appends a big-endian u64.
    pub(crate) fn u64(&mut self, value: u64) -> &mut Self {
        self.0.extend_from_slice(&value.to_be_bytes());
        self
    }

    /// Appends a big-endian u16.
    pub(crate) fn u16(&mut self, value: u16) -> &mut Self {
        self.0.extend_from_slice(&value.to_be_bytes());
        self
    }

    /// Appends one byte.
    pub(crate) fn u8(&mut self, value: u8) -> &mut Self {
        self.0.push(value);
        self
    }

    /// Appends an optional fixed-width field: a presence byte, then the bytes.
    pub(crate) fn opt_fixed(&mut self, bytes: Option<&[u8]>) -> &mut Self {
        match bytes {
            Some(b) => self.u8(1).fixed(b),
            None => self.u8(0),
        }
    }

    /// The encoded bytes.
    pub(crate) fn as_slice(&self) -> &[u8] {
        &self.0
    }

    /// The encoded bytes, owned.
    pub(crate) fn into_vec(self) -> Vec<u8> {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_refuses_uppercase() {
        let bytes = [0x00, 0xab, 0xff, 0x10];
        let text = hex_encode(&bytes);
        assert_eq!(text, "00abff10");
        assert_eq!(hex_decode::<4>(&text), Ok(bytes));
        assert!(hex_decode::<4>("00ABFF10").is_err());
        assert!(hex_decode::<4>("00abff1").is_err());
        assert!(hex_decode::<4>("00abff1g").is_err());
    }

    #[test]
    fn base64_refuses_padding_and_noncanonical_tails() {
        assert_eq!(b64_decode("AQ").as_deref(), Ok(&[1u8][..]));
        assert!(b64_decode("AQ==").is_err());
        // "AR" decodes to the same first 8 bits as "AQ" but has non-zero trailing bits.
        assert!(b64_decode("AR").is_err());
    }

    #[test]
    fn tbs_prefixes_lengths_so_fields_cannot_shift() {
        let mut a = Tbs::new("l");
        a.bytes(b"ab").bytes(b"c");
        let mut b = Tbs::new("l");
        b.bytes(b"a").bytes(b"bc");
        assert_ne!(a.as_slice(), b.as_slice());
    }
}
