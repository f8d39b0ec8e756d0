//! The PostgreSQL backend: several instances of one bot (on several machines) share it.

use std::str::FromStr as _;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use switchboard_protocol::DeviceId;

use super::sql::{impl_bot_store, impl_sqlx_writer, migrator};
use super::{StoreError, StoreKey, redact};

/// A [`BotStore`](super::BotStore) on PostgreSQL.
///
/// Commits of one process are group-committed by one writer task (one transaction per group);
/// instances in other processes are kept apart by the per-thread compare-and-swap. Tables live in
/// the connection's `search_path` (a URL option such as `?options[search_path]=bots` picks a
/// schema).
#[derive(Debug)]
pub struct PostgresStore {
    pool: PgPool,
    device: DeviceId,
    device_hex: String,
    key: StoreKey,
    group: super::group::GroupCommit,
}

/// The batch writer behind [`PostgresStore`].
#[derive(Debug)]
struct PostgresWriter {
    pool: PgPool,
    device: String,
}

impl PostgresStore {
    /// Connects to `postgres://...` and brings the schema up to date (under PostgreSQL's
    /// advisory lock, so instances starting at once migrate once).
    ///
    /// # Errors
    /// [`StoreError::Config`] for a bad URL or a newer schema, [`StoreError::Database`] if the
    /// database cannot be reached.
    pub async fn open(url: &str, device: DeviceId, key: StoreKey) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url).map_err(|e| {
            StoreError::Config(format!("bad PostgreSQL URL {:?}: {e}", redact(url)))
        })?;
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        migrate(&pool).await?;
        let device_hex = device.to_string();
        let group = super::group::GroupCommit::start(PostgresWriter {
            pool: pool.clone(),
            device: device_hex.clone(),
        });
        Ok(Self {
            pool,
            device,
            device_hex,
            key,
            group,
        })
    }
}

/// The migrations of the PostgreSQL schema, in order (the bot store's and the device store's).
const MIGRATIONS: [(&str, &str); 4] = [
    (
        "bot store",
        include_str!("migrations/postgres/0001_init.sql"),
    ),
    (
        "history rows",
        include_str!("migrations/postgres/0002_history.sql"),
    ),
    (
        "outbox by thread",
        include_str!("migrations/postgres/0003_outbox_by_thread.sql"),
    ),
    (
        "device store",
        include_str!("migrations/postgres/0004_device_store.sql"),
    ),
];

/// Brings the schema of `pool`'s database up to date, under PostgreSQL's advisory lock (so
/// instances starting at once migrate once).
pub(super) async fn migrate(pool: &PgPool) -> Result<(), StoreError> {
    migrator(MIGRATIONS).run(pool).await?;
    Ok(())
}

impl_sqlx_writer!(PostgresWriter, sqlx::Postgres, "BEGIN");
impl_bot_store!(PostgresStore);
