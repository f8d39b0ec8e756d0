//! Relay sessions: a request authenticated with an HMAC under a key agreed once, instead of an
//! Ed25519 signature per request.
//!
//! A device opens a session with a signed request (`POST /v1/sessions`, [`SessionRequest`]
//! carrying a fresh X25519 public key); the relay answers with its own fresh X25519 public key,
//! a random session id and an expiry ([`SessionGrant`]). Both derive the session key:
//!
//! ```text
//! key = HKDF-SHA256(salt = none, ikm = X25519(client, relay),
//!                   info = "switchboard/1 relay session" || device id || session id
//!                          || client public key || relay public key)
//! ```
//!
//! Later requests carry `x-sb-session` (the id), `x-sb-counter` (a number the client never
//! uses twice in a session) and `x-sb-mac` = HMAC-SHA256(key, TBS) with TBS as for a signed
//! request (§ request authentication) under the label `"switchboard/1 relay-session-request"`
//! and the counter in place of timestamp and nonce. The relay refuses a counter it saw before
//! or one more than [`REPLAY_WINDOW`] below the highest it saw ([`ReplayWindow`]).
//!
//! The client's public key is bound by its Ed25519 signature on the opening request, so only
//! the holder of the device's identity key can make a session the relay accepts in its name: a
//! party in the middle that swaps the relay's key shares a key with the client, not with the
//! relay, and can make no request the relay accepts.

use hmac::Mac as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

use crate::encoding::{Tbs, b64_decode, b64_encode};
use crate::ids::{DeviceId, Timestamp};
use crate::rng::Csprng;
use crate::wire::{Version, WireType};

/// Header names of a session request.
pub mod headers {
    /// The session id, base64url.
    pub const SESSION: &str = "x-sb-session";
    /// The request's counter, decimal.
    pub const COUNTER: &str = "x-sb-counter";
    /// HMAC-SHA256 of the request under the session key, base64url.
    pub const MAC: &str = "x-sb-mac";
}

/// How far below the highest counter seen a counter may still arrive (requests in flight on
/// several connections arrive out of order).
pub const REPLAY_WINDOW: u64 = 1024;

type HmacSha256 = hmac::Hmac<Sha256>;

/// Body of `POST /v1/sessions`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionRequest {
    /// Protocol version.
    pub v: Version,
    /// The client's fresh X25519 public key, base64url.
    pub client_key: String,
}

impl WireType for SessionRequest {
    const WHAT: &'static str = "session request";
}

/// Answer to `POST /v1/sessions`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionGrant {
    /// Protocol version.
    pub v: Version,
    /// The session id (16 bytes), base64url.
    pub session: String,
    /// The relay's fresh X25519 public key, base64url.
    pub relay_key: String,
    /// Unix seconds after which the relay refuses the session.
    pub expires_at: Timestamp,
}

impl WireType for SessionGrant {
    const WHAT: &'static str = "session grant";
}

/// A 16-byte session id.
pub type SessionId = [u8; 16];

/// The client's half of a session being opened: its X25519 secret, until the grant arrives.
pub struct SessionOffer {
    secret: x25519_dalek::StaticSecret,
    public: [u8; 32],
}

impl std::fmt::Debug for SessionOffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionOffer")
            .field("public", &b64_encode(&self.public))
            .finish_non_exhaustive()
    }
}

impl SessionOffer {
    /// A fresh key pair.
    pub fn new(rng: &mut Csprng) -> Self {
        let secret = x25519_dalek::StaticSecret::from(rng.array::<32>());
        let public = x25519_dalek::PublicKey::from(&secret).to_bytes();
        Self { secret, public }
    }

    /// The request body that opens the session.
    #[must_use]
    pub fn request(&self) -> SessionRequest {
        SessionRequest {
            v: Version,
            client_key: b64_encode(&self.public),
        }
    }

    /// The session key of `grant`, with its id.
    ///
    /// # Errors
    /// A grant whose id or key is malformed, or whose key gives an all-zero shared secret.
    pub fn accept(
        self,
        device: DeviceId,
        grant: &SessionGrant,
    ) -> Result<(SessionId, SessionKey), String> {
        let session = decode_id(&grant.session)?;
        let relay: [u8; 32] = b64_decode(&grant.relay_key)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or("relay_key: expected 32 bytes of base64url")?;
        let key = SessionKey::derive(&self.secret, &relay, device, &session, &self.public, &relay)?;
        Ok((session, key))
    }
}

/// The relay's side of opening a session: a fresh key pair answering `request`.
///
/// # Errors
/// A malformed client key, or one that gives an all-zero shared secret.
pub fn grant(
    rng: &mut Csprng,
    device: DeviceId,
    request: &SessionRequest,
    expires_at: Timestamp,
) -> Result<(SessionGrant, SessionId, SessionKey), String> {
    let client: [u8; 32] = b64_decode(&request.client_key)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or("client_key: expected 32 bytes of base64url")?;
    let secret = x25519_dalek::StaticSecret::from(rng.array::<32>());
    let public = x25519_dalek::PublicKey::from(&secret).to_bytes();
    let session: SessionId = rng.array();
    let key = SessionKey::derive(&secret, &client, device, &session, &client, &public)?;
    Ok((
        SessionGrant {
            v: Version,
            session: b64_encode(&session),
            relay_key: b64_encode(&public),
            expires_at,
        },
        session,
        key,
    ))
}

fn decode_id(text: &str) -> Result<SessionId, String> {
    b64_decode(text)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| format!("{}: expected 16 bytes of base64url", headers::SESSION))
}

/// The key that authenticates a session's requests. Zeroized on drop; `Debug` prints nothing.
pub struct SessionKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKey(..)")
    }
}

impl SessionKey {
    fn derive(
        ours: &x25519_dalek::StaticSecret,
        theirs: &[u8; 32],
        device: DeviceId,
        session: &SessionId,
        client: &[u8; 32],
        relay: &[u8; 32],
    ) -> Result<Self, String> {
        let shared = ours.diffie_hellman(&x25519_dalek::PublicKey::from(*theirs));
        if !shared.was_contributory() {
            return Err("the X25519 key gives an all-zero shared secret".to_owned());
        }
        let mut info = Vec::with_capacity(27 + 16 + 16 + 64);
        info.extend_from_slice(b"switchboard/1 relay session");
        info.extend_from_slice(device.as_bytes());
        info.extend_from_slice(session);
        info.extend_from_slice(client);
        info.extend_from_slice(relay);
        let mut key = Zeroizing::new([0u8; 32]);
        // 32 bytes is far below HKDF-SHA256's limit: expansion cannot fail.
        let _ =
            hkdf::Hkdf::<Sha256>::new(None, shared.as_bytes()).expand(&info, key.as_mut_slice());
        Ok(Self(key))
    }

    fn tbs(method: &str, path_and_query: &str, counter: u64, body: &[u8]) -> Vec<u8> {
        let mut tbs = Tbs::new("switchboard/1 relay-session-request");
        tbs.bytes(method.as_bytes())
            .bytes(path_and_query.as_bytes())
            .u64(counter)
            .fixed(&Sha256::digest(body));
        tbs.into_vec()
    }

    fn hmac(&self) -> HmacSha256 {
        // HMAC takes keys of any length: this cannot fail.
        <HmacSha256 as hmac::KeyInit>::new_from_slice(self.0.as_slice())
            .unwrap_or_else(|_| unreachable!("HMAC accepts 32-byte keys"))
    }

    /// Authenticates one request of session `session` under counter `counter`.
    #[must_use]
    pub fn authenticate(
        &self,
        session: &SessionId,
        counter: u64,
        method: &str,
        path_and_query: &str,
        body: &[u8],
    ) -> SessionAuth {
        let mut mac = self.hmac();
        mac.update(&Self::tbs(method, path_and_query, counter, body));
        SessionAuth {
            session: *session,
            counter,
            mac: mac.finalize().into_bytes().into(),
        }
    }

    /// Whether `auth`'s MAC is right for this request (constant time).
    #[must_use]
    pub fn verify(
        &self,
        auth: &SessionAuth,
        method: &str,
        path_and_query: &str,
        body: &[u8],
    ) -> bool {
        let mut mac = self.hmac();
        mac.update(&Self::tbs(method, path_and_query, auth.counter, body));
        mac.verify_slice(&auth.mac).is_ok()
    }
}

/// The session headers of one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionAuth {
    /// The session.
    pub session: SessionId,
    /// The request's counter.
    pub counter: u64,
    /// The MAC.
    pub mac: [u8; 32],
}

impl SessionAuth {
    /// The header values: session, counter, MAC.
    #[must_use]
    pub fn header_values(&self) -> [(&'static str, String); 3] {
        [
            (headers::SESSION, b64_encode(&self.session)),
            (headers::COUNTER, self.counter.to_string()),
            (headers::MAC, b64_encode(&self.mac)),
        ]
    }

    /// Parses the three header values (`None` for a missing header).
    ///
    /// # Errors
    /// A message naming the missing or malformed header.
    pub fn parse(
        session: Option<&str>,
        counter: Option<&str>,
        mac: Option<&str>,
    ) -> Result<Self, String> {
        let need = |value: Option<&str>, name: &str| -> Result<String, String> {
            value
                .map(str::to_owned)
                .ok_or_else(|| format!("missing header {name}"))
        };
        let session = decode_id(&need(session, headers::SESSION)?)?;
        let counter = need(counter, headers::COUNTER)?
            .parse::<u64>()
            .map_err(|e| format!("header {}: {e}", headers::COUNTER))?;
        let mac: [u8; 32] = b64_decode(&need(mac, headers::MAC)?)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| format!("header {}: expected 32 bytes of base64url", headers::MAC))?;
        Ok(Self {
            session,
            counter,
            mac,
        })
    }
}

/// The counters a session has used, as a sliding window: the highest seen, and which of the
/// [`REPLAY_WINDOW`] below it were seen.
#[derive(Clone, Debug, Default)]
pub struct ReplayWindow {
    /// One more than the highest counter seen (0: none yet).
    top: u64,
    /// Bit `i` of word `i / 64`: counter `top - 1 - i` was seen.
    seen: [u64; (REPLAY_WINDOW / 64) as usize],
}

impl ReplayWindow {
    /// Records `counter`; `false` if it was seen before or is too far below the highest.
    pub fn accept(&mut self, counter: u64) -> bool {
        if counter >= self.top {
            let shift = counter - self.top + 1;
            self.shift(shift);
            self.top = counter + 1;
            self.set(0);
            return true;
        }
        let back = self.top - 1 - counter;
        if back >= REPLAY_WINDOW {
            return false;
        }
        if self.get(back) {
            return false;
        }
        self.set(back);
        true
    }

    fn shift(&mut self, by: u64) {
        if by >= REPLAY_WINDOW {
            self.seen = Default::default();
            return;
        }
        // Moves every bit `by` places further back (towards higher indexes).
        let words = usize::try_from(by / 64).unwrap_or(0);
        let bits = by % 64;
        let n = self.seen.len();
        for i in (0..n).rev() {
            let from = i.checked_sub(words);
            let high = from.and_then(|f| self.seen.get(f)).copied().unwrap_or(0);
            let low = from
                .and_then(|f| f.checked_sub(1))
                .and_then(|f| self.seen.get(f))
                .copied()
                .unwrap_or(0);
            let value = if bits == 0 {
                high
            } else {
                (high << bits) | (low >> (64 - bits))
            };
            if let Some(word) = self.seen.get_mut(i) {
                *word = value;
            }
        }
    }

    fn get(&self, back: u64) -> bool {
        let (word, bit) = (usize::try_from(back / 64).unwrap_or(usize::MAX), back % 64);
        self.seen.get(word).is_some_and(|w| w >> bit & 1 == 1)
    }

    fn set(&mut self, back: u64) {
        let (word, bit) = (usize::try_from(back / 64).unwrap_or(usize::MAX), back % 64);
        if let Some(w) = self.seen.get_mut(word) {
            *w |= 1 << bit;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn pair() -> (DeviceId, SessionId, SessionKey, SessionKey) {
        let mut rng = Csprng::from_seed([5; 32]);
        let device = DeviceId::random(&mut rng);
        let offer = SessionOffer::new(&mut rng);
        let (grant, id, relay_key) =
            grant(&mut rng, device, &offer.request(), Timestamp(100)).unwrap();
        let (client_id, client_key) = offer.accept(device, &grant).unwrap();
        assert_eq!(client_id, id);
        (device, id, client_key, relay_key)
    }

    #[test]
    fn both_sides_derive_one_key_and_the_mac_binds_every_part() {
        let (_, id, client, relay) = pair();
        let auth = client.authenticate(&id, 7, "POST", "/v1/x?a=1", b"{}");
        assert!(relay.verify(&auth, "POST", "/v1/x?a=1", b"{}"));
        assert!(!relay.verify(&auth, "GET", "/v1/x?a=1", b"{}"));
        assert!(!relay.verify(&auth, "POST", "/v1/x?a=2", b"{}"));
        assert!(!relay.verify(&auth, "POST", "/v1/x?a=1", b"{ }"));
        let other = SessionAuth {
            counter: 8,
            ..auth.clone()
        };
        assert!(!relay.verify(&other, "POST", "/v1/x?a=1", b"{}"));
        let (_, _, stranger, _) = {
            let mut rng = Csprng::from_seed([6; 32]);
            let device = DeviceId::random(&mut rng);
            let offer = SessionOffer::new(&mut rng);
            let (g, i, r) = grant(&mut rng, device, &offer.request(), Timestamp(1)).unwrap();
            let (_, c) = offer.accept(device, &g).unwrap();
            (device, i, c, r)
        };
        let forged = stranger.authenticate(&id, 7, "POST", "/v1/x?a=1", b"{}");
        assert!(!relay.verify(&forged, "POST", "/v1/x?a=1", b"{}"));
        let values = auth.header_values();
        let parsed =
            SessionAuth::parse(Some(&values[0].1), Some(&values[1].1), Some(&values[2].1)).unwrap();
        assert_eq!(parsed, auth);
        assert!(SessionAuth::parse(None, Some("1"), Some("x")).is_err());
        assert!(SessionAuth::parse(Some(&values[0].1), Some("-1"), Some(&values[2].1)).is_err());
        assert_eq!(format!("{relay:?}"), "SessionKey(..)");
    }

    #[test]
    fn a_low_order_key_is_refused() {
        let mut rng = Csprng::from_seed([5; 32]);
        let device = DeviceId::random(&mut rng);
        let zero = SessionRequest {
            v: Version,
            client_key: b64_encode(&[0u8; 32]),
        };
        assert!(grant(&mut rng, device, &zero, Timestamp(1)).is_err());
        let short = SessionRequest {
            v: Version,
            client_key: b64_encode(&[9u8; 31]),
        };
        assert!(grant(&mut rng, device, &short, Timestamp(1)).is_err());
    }

    #[test]
    fn the_window_takes_each_counter_once_in_any_order_within_its_width() {
        let mut w = ReplayWindow::default();
        assert!(w.accept(5));
        assert!(!w.accept(5));
        assert!(w.accept(3));
        assert!(w.accept(4));
        assert!(!w.accept(3));
        assert!(w.accept(200));
        assert!(w.accept(70), "still within the window");
        assert!(!w.accept(70));
        assert!(!w.accept(5), "seen before the window moved");
        assert!(w.accept(200 + REPLAY_WINDOW));
        assert!(!w.accept(200), "now too far below the highest");
        assert!(w.accept(201), "exactly the window's width below");
        assert!(!w.accept(200 + REPLAY_WINDOW));
        // Against a set of every counter taken: each accepted exactly once.
        let mut w = ReplayWindow::default();
        let mut rng = Csprng::from_seed([1; 32]);
        let mut taken = std::collections::BTreeSet::new();
        let mut top = 0u64;
        for _ in 0..20_000 {
            let c = u64::from(u16::from_le_bytes(rng.array::<2>())) % 4096;
            let fresh = !taken.contains(&c) && c + REPLAY_WINDOW >= top;
            assert_eq!(w.accept(c), fresh, "counter {c}, top {top}");
            if fresh {
                taken.insert(c);
                top = top.max(c + 1);
            }
        }
    }
}
