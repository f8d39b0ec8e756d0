//! # switchboard-protocol
//!
//! The wire protocol of Switchboard (`switchboard/1`): device keys, agent credentials,
//! HPKE-wrapped epoch secrets, roster commits and signed, encrypted messages. This crate is pure:
//! no I/O, no clock (callers pass `now`), no async runtime. Randomness comes from a [`Csprng`]
//! the caller owns. The specification with its validation table is `docs/protocol.md` in the
//! repository.
//!
//! A customer opens a thread with an entity; the entity's admin forwards it to a bot; the bot
//! replies and the customer sees who spoke; the admin transfers the thread to a human, and the bot
//! cannot read the next epoch:
//!
//! ```
//! use switchboard_protocol::*;
//!
//! let mut rng = Csprng::from_os()?;
//! let now = Timestamp(1_800_000_000);
//! let acme = EntityId::new("acme")?;
//! let device = |rng: &mut Csprng| DeviceKeys::generate(DeviceId::random(rng), CipherSuite::default(), rng);
//! let (customer, admin, bot, human) = (device(&mut rng), device(&mut rng), device(&mut rng), device(&mut rng));
//!
//! // The admin vouches for its agents.
//! let credential = |agent: &DeviceKeys, name: &str, kind| -> Result<Member, Error> {
//!     let bundle = agent.bundle(now);
//!     let credential = AgentCredential::issue(&admin, &CredentialRequest {
//!         entity: &acme, agent: &bundle, display_name: name, kind,
//!         issued_at: now, expires_at: now.plus(86_400),
//!     })?;
//!     Ok(Member::agent(bundle, credential))
//! };
//!
//! // 1. The customer opens a thread (epoch 0) and writes.
//! let (mut customer_view, open) = ThreadState::open(&customer, acme.clone(), &admin.bundle(now), now, &mut rng)?;
//! let hello = customer_view.seal(&customer, &Content::text("where is order 42?"), None)?;
//!
//! // 2. The admin accepts and forwards the thread to OrderBot (epoch 1).
//! let mut admin_seen = SeenWraps::new(); // one per admin device: refuses replayed opens
//! let mut admin_view = ThreadState::accept(&admin, &acme, &open, now, &mut admin_seen)?;
//! assert_eq!(admin_view.open_message(&hello, now)?.sender_info, Sender::Customer);
//! let assign = admin_view.commit(&admin, CommitAction::Assign { agent: Box::new(credential(&bot, "OrderBot", AgentKind::Bot)?) }, now, &mut rng)?;
//! customer_view.apply_commit(&customer, &assign, now)?;
//! let mut bot_memory = DeviceMemory::new(); // one per agent device, persisted: refuses replayed joins
//! let mut bot_view = ThreadState::join(&bot, &acme, admin.device(), admin.identity_public(), &assign, now, &mut bot_memory)?;
//!
//! // 3. The bot replies; the customer verifies who spoke.
//! let reply = bot_view.seal(&bot, &Content::text("Order 42 ships today"), None)?;
//! let seen = customer_view.open_message(&reply, now)?;
//! assert_eq!(seen.sender_info, Sender::Agent { display_name: "OrderBot".into(), kind: AgentKind::Bot });
//!
//! // 4. Transfer to a human: epoch 2, wrapped to the customer and the human only.
//! let transfer = admin_view.commit(&admin, CommitAction::Transfer { from: bot.device(), to: Box::new(credential(&human, "Dana", AgentKind::Human)?) }, now, &mut rng)?;
//! customer_view.apply_commit(&customer, &transfer, now)?;
//! assert!(matches!(bot_view.apply_commit(&bot, &transfer, now), Err(CommitError::Removed { .. })));
//! let later = customer_view.seal(&customer, &Content::text("thanks"), None)?;
//! assert!(bot_view.open_message(&later, now).is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod api;
mod commit;
mod credential;
mod encoding;
mod error;
mod history;
mod ids;
mod keys;
mod memory;
mod message;
pub mod request;
mod rng;
mod roster;
pub mod session;
mod suite;
mod thread;
pub mod wire;
mod wrap;

pub use commit::{Commit, CommitAction};
pub use credential::{AgentCredential, AgentKind, CredentialRequest, MAX_DISPLAY_NAME_CHARS};
pub use error::{
    CommitError, CredentialError, Error, HistoryError, KeyError, MessageError, RandomnessError,
    WireError, WrapError,
};
pub use history::{GrantedEpoch, HistoryGrant, MAX_GRANT_MESSAGES};
pub use ids::{DeviceId, EntityId, Epoch, MessageId, ThreadId, Timestamp, WrapId};
pub use keys::{
    DeviceKeys, Fingerprint, IdentityKeyPair, IdentityPublicKey, KemKeyId, KemKeySecrets,
    KemPublicKey, KeyBundle, Signature,
};
pub use memory::{DEFAULT_MEMORY_LIMIT, DeviceMemory, ThreadMark};
pub use message::{
    Content, ContentType, DEFAULT_OLD_EPOCH_GRACE_SECS, HandoffTarget, MAX_TEXT_BYTES,
    MessageDigest, MessageHeader, REORDER_WINDOW, REUSE_GUARD_BYTES, ReceiptKind, ReplayPolicy,
    SealedMessage,
};
pub use request::RequestAuth;
pub use rng::Csprng;
pub use roster::{Floor, Member, Role, Roster, RosterHash};
pub use suite::CipherSuite;
pub use thread::{
    ReceivedMessage, RetentionPolicy, Sender, ThreadOpen, ThreadSnapshot, ThreadState,
};
pub use wire::{PROTOCOL_VERSION, Version, WireType, decode, encode};
pub use wrap::{
    DEFAULT_WRAP_LIFETIME_SECS, EpochSecret, ExpectedWrap, KeyWrap, SeenWraps, WrapContext,
};
