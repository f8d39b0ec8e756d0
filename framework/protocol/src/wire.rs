//! The versioned JSON wire format.
//!
//! Every top-level wire value carries `"v": 1`. [`decode`] refuses any other version with
//! [`WireError::UnsupportedVersion`], refuses unknown fields, and refuses inputs larger than
//! [`MAX_WIRE_BYTES`]; it never panics on any input.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::WireError;

/// The protocol version this build speaks: `switchboard/1`.
pub const PROTOCOL_VERSION: u64 = 1;

/// The largest wire value [`decode`] accepts, in bytes (4 MiB).
pub const MAX_WIRE_BYTES: usize = 4 * 1024 * 1024;

/// The `"v"` field of every wire value. It only ever holds [`PROTOCOL_VERSION`]: deserialising
/// any other number fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub struct Version;

impl Serialize for Version {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(PROTOCOL_VERSION)
    }
}

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let found = u64::deserialize(d)?;
        if found == PROTOCOL_VERSION {
            Ok(Self)
        } else {
            Err(serde::de::Error::custom(format!(
                "unsupported protocol version {found}"
            )))
        }
    }
}

/// A top-level value of the wire format.
pub trait WireType: Serialize + DeserializeOwned {
    /// A short name used in error messages, e.g. `"key wrap"`.
    const WHAT: &'static str;
}

/// Decodes a wire value from JSON bytes.
///
/// # Errors
/// [`WireError::UnsupportedVersion`] if `"v"` is not [`PROTOCOL_VERSION`];
/// [`WireError::Malformed`] for anything else that is not a valid value of `T` (bad JSON, missing
/// or unknown fields, bad encodings, oversized input).
pub fn decode<T: WireType>(bytes: &[u8]) -> Result<T, WireError> {
    if bytes.len() > MAX_WIRE_BYTES {
        return Err(WireError::Malformed {
            what: T::WHAT,
            detail: format!(
                "{} bytes is larger than the {MAX_WIRE_BYTES}-byte limit",
                bytes.len()
            ),
        });
    }
    serde_json::from_slice::<T>(bytes).map_err(|e| classify::<T>(bytes, &e))
}

/// Encodes a wire value as compact JSON.
///
/// # Errors
/// [`WireError::Malformed`] only if the value cannot be represented as JSON, which does not
/// happen for this crate's types.
pub fn encode<T: WireType>(value: &T) -> Result<Vec<u8>, WireError> {
    serde_json::to_vec(value).map_err(|e| WireError::Malformed {
        what: T::WHAT,
        detail: e.to_string(),
    })
}

/// Tells an unsupported version apart from other decoding failures.
fn classify<T: WireType>(bytes: &[u8], err: &serde_json::Error) -> WireError {
    #[derive(Deserialize)]
    struct Probe {
        v: Option<serde_json::Value>,
    }
    if let Ok(Probe { v: Some(v) }) = serde_json::from_slice::<Probe>(bytes)
        && let Some(found) = v.as_u64()
        && found != PROTOCOL_VERSION
    {
        return WireError::UnsupportedVersion {
            what: T::WHAT,
            found,
            supported: PROTOCOL_VERSION,
        };
    }
    WireError::Malformed {
        what: T::WHAT,
        detail: err.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::KeyBundle;

    #[test]
    fn oversized_input_is_refused_before_parsing() {
        let big = vec![b' '; MAX_WIRE_BYTES + 1];
        let err = decode::<KeyBundle>(&big).unwrap_err();
        assert!(matches!(err, WireError::Malformed { .. }), "{err}");
        assert!(err.to_string().contains("limit"), "{err}");
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        for input in [
            &b""[..],
            b"{",
            b"[]",
            b"null",
            b"{\"v\":\"1\"}",
            b"{\"v\":-1}",
            &[0xff, 0xfe],
        ] {
            assert!(matches!(
                decode::<KeyBundle>(input),
                Err(WireError::Malformed { .. })
            ));
        }
    }
}
