//! Identifiers and small value types: devices, entities, threads, messages, wraps, epochs,
//! generations and timestamps.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::encoding::{hex_decode, hex_encode};
use crate::rng::Csprng;

macro_rules! id16 {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name([u8; 16]);

        impl $name {
            /// The identifier from its 16 raw bytes.
            #[must_use]
            pub const fn from_bytes(bytes: [u8; 16]) -> Self {
                Self(bytes)
            }

            /// A fresh random identifier.
            pub fn random(rng: &mut Csprng) -> Self {
                Self(rng.array())
            }

            /// The 16 raw bytes.
            #[must_use]
            pub const fn as_bytes(&self) -> &[u8; 16] {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&hex_encode(&self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), hex_encode(&self.0))
            }
        }

        impl std::str::FromStr for $name {
            type Err = crate::error::WireError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                hex_decode::<16>(s).map(Self).map_err(|detail| {
                    crate::error::WireError::Malformed {
                        what: stringify!($name),
                        detail,
                    }
                })
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&hex_encode(&self.0))
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                hex_decode::<16>(&text)
                    .map(Self)
                    .map_err(|e| serde::de::Error::custom(format!("{}: {e}", stringify!($name))))
            }
        }
    };
}

id16!(
    /// A device: a customer's phone, an entity's admin device, a human agent's app or one bot.
    /// 16 random bytes chosen at registration, written as 32 lowercase hex digits.
    DeviceId
);
id16!(
    /// A conversation between one customer and one entity. Chosen at random by the customer's
    /// device when it opens the thread.
    ThreadId
);
id16!(
    /// A single key wrap. Receivers refuse a wrap id they have seen before.
    WrapId
);
id16!(
    /// A message, derived from (thread, epoch, sender, generation), so that every member computes
    /// the same id for the same message without trusting the relay. See [`MessageId::derive`].
    MessageId
);

impl MessageId {
    /// The id of the message that `sender` sent as `generation` in `epoch` of `thread`.
    #[must_use]
    pub fn derive(thread: ThreadId, epoch: Epoch, sender: DeviceId, generation: u64) -> Self {
        use sha2::{Digest as _, Sha256};
        let mut h = Sha256::new();
        h.update(b"switchboard/1 message-id");
        h.update(thread.as_bytes());
        h.update(epoch.0.to_be_bytes());
        h.update(sender.as_bytes());
        h.update(generation.to_be_bytes());
        let digest = h.finalize();
        let mut id = [0u8; 16];
        id.copy_from_slice(digest.get(..16).unwrap_or(&[0u8; 16]));
        Self(id)
    }
}

/// The business ("multi-agent entity") a customer talks to, e.g. `acme-shop`.
///
/// 1 to 64 characters of `a-z`, `0-9` and `-`, not starting or ending with `-`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct EntityId(String);

impl EntityId {
    /// Validates and wraps an entity name.
    ///
    /// # Errors
    /// [`crate::WireError::Malformed`] when the name is empty, longer than 64 characters, or uses
    /// characters other than `a-z`, `0-9` and `-` (or starts or ends with `-`).
    pub fn new(name: impl Into<String>) -> Result<Self, crate::error::WireError> {
        let name = name.into();
        let ok_chars = name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if name.is_empty()
            || name.len() > 64
            || !ok_chars
            || name.starts_with('-')
            || name.ends_with('-')
        {
            return Err(crate::error::WireError::Malformed {
                what: "EntityId",
                detail: format!(
                    "{name:?} is not a valid entity name: use 1 to 64 characters of a-z, 0-9 and '-', not starting or ending with '-'"
                ),
            });
        }
        Ok(Self(name))
    }

    /// The name as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EntityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for EntityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EntityId({})", self.0)
    }
}

impl<'de> Deserialize<'de> for EntityId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::new(text).map_err(serde::de::Error::custom)
    }
}

/// A key epoch of a thread. Epoch 0 is the secret the customer created; every roster change
/// (commit) moves the thread to the next epoch with a fresh secret.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize, Default,
)]
#[serde(transparent)]
pub struct Epoch(pub u64);

impl Epoch {
    /// The epoch after this one, or `None` at `u64::MAX`.
    #[must_use]
    pub fn next(self) -> Option<Self> {
        self.0.checked_add(1).map(Self)
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Seconds since the Unix epoch, UTC. The protocol crate never reads a clock: callers pass `now`.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize, Default,
)]
#[serde(transparent)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// This time plus `seconds`, saturating.
    #[must_use]
    pub fn plus(self, seconds: u64) -> Self {
        Self(self.0.saturating_add(seconds))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}s", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entity_names_are_validated() {
        assert!(EntityId::new("acme-shop").is_ok());
        assert!(EntityId::new("a").is_ok());
        for bad in [
            "",
            "-acme",
            "acme-",
            "Acme",
            "acme shop",
            "acmé",
            &"a".repeat(65),
        ] {
            assert!(EntityId::new(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn ids_round_trip_through_json() {
        let id = DeviceId::from_bytes([0xab; 16]);
        let json = serde_json::to_string(&id).unwrap_or_default();
        assert_eq!(json, format!("\"{}\"", "ab".repeat(16)));
        let back: DeviceId = serde_json::from_str(&json).unwrap_or(DeviceId::from_bytes([0; 16]));
        assert_eq!(back, id);
        assert!(serde_json::from_str::<DeviceId>("\"ABAB\"").is_err());
    }

    #[test]
    fn message_ids_differ_by_every_input() {
        let t = ThreadId::from_bytes([1; 16]);
        let d = DeviceId::from_bytes([2; 16]);
        let base = MessageId::derive(t, Epoch(1), d, 5);
        assert_ne!(
            base,
            MessageId::derive(ThreadId::from_bytes([9; 16]), Epoch(1), d, 5)
        );
        assert_ne!(base, MessageId::derive(t, Epoch(2), d, 5));
        assert_ne!(
            base,
            MessageId::derive(t, Epoch(1), DeviceId::from_bytes([9; 16]), 5)
        );
        assert_ne!(base, MessageId::derive(t, Epoch(1), d, 6));
    }
}
