//! # switchboard-client
//!
//! The device client of Switchboard for every role — customer, admin, agent — over the relay's
//! HTTP API: [`Device`] registers, keeps its keys and thread states in an encrypted
//! [`Keystore`] (Argon2id passphrase or key file, mode 0600, atomic saves), sends, receives with
//! long-polling and backoff, verifies, decrypts and acknowledges. [`RelayClient`] is the raw
//! signed API underneath.
//!
//! ```no_run
//! use std::time::Duration;
//! use switchboard_client::{Device, Event, KeystoreSecret, NewDevice, NewRole};
//! use switchboard_protocol::{Content, EntityId};
//!
//! # async fn demo() -> Result<(), switchboard_client::ClientError> {
//! let secret = KeystoreSecret::passphrase("correct horse battery staple");
//! let mut me = Device::create(
//!     "customer.keystore".as_ref(),
//!     &secret,
//!     NewDevice::new("http://127.0.0.1:8700", NewRole::Customer),
//! )
//! .await?;
//! let acme = EntityId::new("acme")?;
//! let thread = me.open_thread(&acme).await?;
//! me.send(thread, &Content::text("Where is my order 42?"), None).await?;
//! for event in me.receive(Duration::from_secs(30)).await? {
//!     if let Event::Message { message, .. } = event {
//!         println!("{:?}: {:?}", message.sender_info, message.content);
//!     }
//! }
//! # Ok(()) }
//! ```

mod device;
pub mod engine;
mod enrol;
mod error;
pub mod keystore;
mod relay;
pub mod store;

pub use device::{Device, DeviceRole, Event, KemRotation, NewDevice, NewRole, PinnedAdmin};
pub use enrol::ExpectedKey;
pub use error::ClientError;
pub use keystore::{KdfCost, Keystore, KeystoreError, KeystoreSecret};
pub use relay::{InboxStream, RelayClient, STREAM_IDLE, now};
