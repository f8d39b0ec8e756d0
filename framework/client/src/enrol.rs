//! Enrolment bound to values compared out of band: the relay serves keys, but a device being set
//! up takes one only if its fingerprint is the one a person read from the other device.

use switchboard_protocol::{Fingerprint, IdentityPublicKey};

use crate::error::ClientError;

/// What an identity key served by the relay must be, at enrolment: an agent taking its admin's
/// key (`switchboard agent init --admin-fingerprint`), an admin taking an agent's key bundle
/// (`switchboard admin add-agent --fingerprint`).
///
/// A relay (or anything on the path of plain `http://`) can serve any key it likes; only a
/// fingerprint compared out of band tells the real key from a substitute.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExpectedKey {
    /// The key must have this fingerprint (as the other device printed it).
    Fingerprint(Fingerprint),
    /// Take whatever key the relay serves. Insecure: a hostile relay becomes the other device.
    /// For tests and demos on one machine only.
    TrustRelay,
}

impl ExpectedKey {
    /// Checks `served`, the identity key the relay served for `what` (e.g. "the admin of
    /// acme").
    ///
    /// # Errors
    /// [`ClientError::FingerprintMismatch`] if a fingerprint was expected and `served` has
    /// another one.
    pub fn check(&self, what: &str, served: &IdentityPublicKey) -> Result<(), ClientError> {
        match self {
            Self::Fingerprint(expected) if *expected != served.fingerprint() => {
                Err(ClientError::FingerprintMismatch {
                    what: what.to_owned(),
                    expected: *expected,
                    served: served.fingerprint(),
                })
            }
            Self::Fingerprint(_) => Ok(()),
            Self::TrustRelay => {
                tracing::warn!(
                    what,
                    fingerprint = %served.fingerprint(),
                    "trusting the key the relay served without a fingerprint check: a hostile relay could have substituted it"
                );
                Ok(())
            }
        }
    }
}
