//! Agent credentials: an entity's admin vouches that a device speaks for the entity, under a
//! display name, as a bot or a human, until an expiry time. Customers accept replies only from
//! agents with a valid credential signed by the admin they pinned.

use serde::{Deserialize, Serialize};

use crate::encoding::Tbs;
use crate::error::CredentialError;
use crate::ids::{DeviceId, EntityId, Timestamp};
use crate::keys::{DeviceKeys, IdentityPublicKey, KeyBundle, Signature};
use crate::wire::{Version, WireType};

/// Whether an agent is a program or a person. Shown to customers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentKind {
    /// A bot written with the framework.
    Bot,
    /// A human agent.
    Human,
}

/// The longest display name, in characters.
pub const MAX_DISPLAY_NAME_CHARS: usize = 64;

/// An agent credential, signed by the entity's admin identity key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentCredential {
    /// Protocol version.
    pub v: Version,
    /// The entity the agent speaks for.
    pub entity: EntityId,
    /// The admin device that issued the credential.
    pub admin: DeviceId,
    /// The agent's device.
    pub device: DeviceId,
    /// The agent device's identity key (must match its key bundle).
    pub identity_key: IdentityPublicKey,
    /// The name customers see, e.g. "OrderBot".
    pub display_name: String,
    /// Bot or human.
    pub kind: AgentKind,
    /// When it was issued.
    pub issued_at: Timestamp,
    /// When it stops being valid.
    pub expires_at: Timestamp,
    /// The admin's signature over the fields above.
    pub signature: Signature,
}

impl WireType for AgentCredential {
    const WHAT: &'static str = "agent credential";
}

/// What an admin fills in to issue a credential; see [`AgentCredential::issue`].
#[derive(Clone, Debug)]
pub struct CredentialRequest<'a> {
    /// The entity.
    pub entity: &'a EntityId,
    /// The agent's verified key bundle.
    pub agent: &'a KeyBundle,
    /// The name customers see.
    pub display_name: &'a str,
    /// Bot or human.
    pub kind: AgentKind,
    /// Issue time.
    pub issued_at: Timestamp,
    /// Expiry time.
    pub expires_at: Timestamp,
}

/// Checks a display name: 1 to 64 characters, no control characters, not only whitespace.
fn check_display_name(name: &str) -> Result<(), CredentialError> {
    let chars = name.chars().count();
    let detail = if name.trim().is_empty() {
        "it is empty"
    } else if chars > MAX_DISPLAY_NAME_CHARS {
        "it is longer than 64 characters"
    } else if name.chars().any(char::is_control) {
        "it contains control characters"
    } else {
        return Ok(());
    };
    Err(CredentialError::InvalidDisplayName {
        detail: format!("{name:?}: {detail}"),
    })
}

impl AgentCredential {
    /// Issues a credential for `request.agent`, signed by `admin`.
    ///
    /// # Errors
    /// [`CredentialError::InvalidDisplayName`] for an unusable display name.
    pub fn issue(
        admin: &DeviceKeys,
        request: &CredentialRequest<'_>,
    ) -> Result<Self, CredentialError> {
        check_display_name(request.display_name)?;
        let mut credential = Self {
            v: Version,
            entity: request.entity.clone(),
            admin: admin.device(),
            device: request.agent.device,
            identity_key: request.agent.identity_key,
            display_name: request.display_name.to_owned(),
            kind: request.kind,
            issued_at: request.issued_at,
            expires_at: request.expires_at,
            signature: Signature::from_bytes([0; 64]),
        };
        credential.signature = admin.identity().sign(credential.tbs().as_slice());
        Ok(credential)
    }

    /// Signs the credential again, as it now is, with `admin`'s identity key: for negative test
    /// vectors (a value whose signature is valid but which a receiver must still refuse). Test
    /// vectors only (the `test-util` feature).
    #[cfg(any(test, feature = "test-util"))]
    pub fn sign_as(&mut self, admin: &crate::IdentityKeyPair) {
        self.signature = admin.sign(self.tbs().as_slice());
    }

    fn tbs(&self) -> Tbs {
        let mut tbs = Tbs::new("switchboard/1 agent-credential");
        tbs.bytes(self.entity.as_str().as_bytes())
            .fixed(self.admin.as_bytes())
            .fixed(self.device.as_bytes())
            .fixed(self.identity_key.as_bytes())
            .bytes(self.display_name.as_bytes())
            .u8(match self.kind {
                AgentKind::Bot => 1,
                AgentKind::Human => 2,
            })
            .u64(self.issued_at.0)
            .u64(self.expires_at.0);
        tbs
    }

    /// Verifies the credential: issued for `entity` by `admin` (whose identity key is
    /// `admin_key`), signed by it, with a valid display name, and not expired at `now`.
    ///
    /// # Errors
    /// The first check that fails, as a [`CredentialError`].
    pub fn verify(
        &self,
        entity: &EntityId,
        admin: DeviceId,
        admin_key: &IdentityPublicKey,
        now: Timestamp,
    ) -> Result<(), CredentialError> {
        self.verify_ignoring_expiry(entity, admin, admin_key)?;
        self.check_expiry(now)
    }

    /// [`AgentCredential::verify`] without the expiry check: for rosters of earlier epochs in a
    /// history grant, whose credentials may have expired since.
    pub(crate) fn verify_ignoring_expiry(
        &self,
        entity: &EntityId,
        admin: DeviceId,
        admin_key: &IdentityPublicKey,
    ) -> Result<(), CredentialError> {
        if &self.entity != entity || self.admin != admin {
            return Err(CredentialError::WrongIssuer {
                device: self.device,
            });
        }
        if !admin_key.verify(self.tbs().as_slice(), &self.signature) {
            return Err(CredentialError::BadSignature {
                device: self.device,
            });
        }
        check_display_name(&self.display_name)
    }

    /// Checks only that the credential has not expired at `now`.
    ///
    /// # Errors
    /// [`CredentialError::Expired`].
    pub fn check_expiry(&self, now: Timestamp) -> Result<(), CredentialError> {
        if now >= self.expires_at {
            return Err(CredentialError::Expired {
                device: self.device,
                expires_at: self.expires_at,
                now,
            });
        }
        Ok(())
    }

    /// Checks that this credential belongs to the device of `bundle`.
    ///
    /// # Errors
    /// [`CredentialError::KeyMismatch`] if the device or identity key differ.
    pub fn matches_bundle(&self, bundle: &KeyBundle) -> Result<(), CredentialError> {
        if self.device == bundle.device && self.identity_key == bundle.identity_key {
            Ok(())
        } else {
            Err(CredentialError::KeyMismatch {
                device: self.device,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::suite::CipherSuite;

    fn setup() -> (DeviceKeys, DeviceKeys, EntityId) {
        let admin = DeviceKeys::from_seed(
            DeviceId::from_bytes([1; 16]),
            CipherSuite::default(),
            &[1; 32],
        );
        let bot = DeviceKeys::from_seed(
            DeviceId::from_bytes([2; 16]),
            CipherSuite::default(),
            &[2; 32],
        );
        (admin, bot, EntityId::new("acme").unwrap())
    }

    fn issue(
        admin: &DeviceKeys,
        bot: &DeviceKeys,
        entity: &EntityId,
        name: &str,
    ) -> Result<AgentCredential, CredentialError> {
        AgentCredential::issue(
            admin,
            &CredentialRequest {
                entity,
                agent: &bot.bundle(Timestamp(0)),
                display_name: name,
                kind: AgentKind::Bot,
                issued_at: Timestamp(0),
                expires_at: Timestamp(100),
            },
        )
    }

    #[test]
    fn credential_verifies_until_expiry() {
        let (admin, bot, entity) = setup();
        let cred = issue(&admin, &bot, &entity, "OrderBot").unwrap();
        let key = admin.identity_public();
        cred.verify(&entity, admin.device(), &key, Timestamp(99))
            .unwrap();
        assert!(matches!(
            cred.verify(&entity, admin.device(), &key, Timestamp(100)),
            Err(CredentialError::Expired { .. })
        ));
        cred.matches_bundle(&bot.bundle(Timestamp(5))).unwrap();
        assert!(cred.matches_bundle(&admin.bundle(Timestamp(5))).is_err());
    }

    #[test]
    fn credential_signed_by_non_admin_is_refused() {
        let (admin, bot, entity) = setup();
        // The bot issues itself a credential naming the admin as issuer.
        let mut forged = issue(&bot, &bot, &entity, "OrderBot").unwrap();
        forged.admin = admin.device();
        assert!(matches!(
            forged.verify(
                &entity,
                admin.device(),
                &admin.identity_public(),
                Timestamp(1)
            ),
            Err(CredentialError::BadSignature { .. })
        ));
    }

    #[test]
    fn credential_for_another_entity_or_admin_is_refused() {
        let (admin, bot, entity) = setup();
        let cred = issue(&admin, &bot, &entity, "OrderBot").unwrap();
        let other = EntityId::new("globex").unwrap();
        let key = admin.identity_public();
        assert!(matches!(
            cred.verify(&other, admin.device(), &key, Timestamp(1)),
            Err(CredentialError::WrongIssuer { .. })
        ));
        assert!(matches!(
            cred.verify(&entity, bot.device(), &key, Timestamp(1)),
            Err(CredentialError::WrongIssuer { .. })
        ));
    }

    #[test]
    fn renamed_credential_is_refused() {
        let (admin, bot, entity) = setup();
        let mut cred = issue(&admin, &bot, &entity, "OrderBot").unwrap();
        cred.display_name = "Acme CEO".to_owned();
        assert!(
            cred.verify(
                &entity,
                admin.device(),
                &admin.identity_public(),
                Timestamp(1)
            )
            .is_err()
        );
    }

    #[test]
    fn bad_display_names_are_refused() {
        let (admin, bot, entity) = setup();
        for bad in ["", "   ", "a\u{7}b", &"x".repeat(65)] {
            assert!(matches!(
                issue(&admin, &bot, &entity, bad),
                Err(CredentialError::InvalidDisplayName { .. })
            ));
        }
    }
}
