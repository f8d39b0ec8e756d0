//! The SQL both backends share. SQLite (3.35+) and PostgreSQL accept the same statements here
//! (`$N` parameters, `ON CONFLICT`), so one macro implements [`BotStore`](super::BotStore) for
//! both; only the column types (migrations) and the transaction start differ.
//!
//! A commit's compare-and-swap is an `UPDATE ... WHERE version = $expected` (or an `INSERT ...
//! ON CONFLICT DO NOTHING` for a new thread) whose row count decides; journal and outbox rows go
//! in with `ON CONFLICT DO NOTHING` too, so a conflict is a row count, never a database error
//! that would abort a PostgreSQL transaction. Each event of a batch runs under its own
//! savepoint: a conflicting event is rolled back alone and the others commit.

use std::borrow::Cow;
use std::str::FromStr as _;

use sqlx::SqlSafeStr as _;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use switchboard_protocol::{DeviceId, ThreadId};

use super::{HistoryEntry, OutboxEntry, StoreError, StoreKey, ThreadRecord};

/// Where the store records its applied migrations (not `_sqlx_migrations`: the database may be
/// shared with a relay).
const MIGRATIONS_TABLE: &str = "_bot_store_migrations";

/// The migrator for one backend's schema: its migrations in order (version 1, 2, ...).
pub(super) fn migrator(steps: [(&'static str, &'static str); 4]) -> Migrator {
    let migrations = (1..)
        .zip(steps)
        .map(|(version, (description, sql))| {
            Migration::new(
                version,
                Cow::Borrowed(description),
                MigrationType::Simple,
                sql.into_sql_str(),
                false,
            )
        })
        .collect();
    let mut migrator = Migrator::with_migrations(migrations);
    migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
    migrator
}

/// A new thread's row (version 1); `ON CONFLICT DO NOTHING`: no row means a conflict.
pub(super) const INSERT_THREAD: &str = "INSERT INTO bot_threads \
     (device, thread, version, nonce, ciphertext, updated_at) \
     VALUES ($1, $2, 1, $3, $4, $5) ON CONFLICT (device, thread) DO NOTHING";
/// Whether a thread has a row.
pub(super) const THREAD_EXISTS: &str =
    "SELECT thread FROM bot_threads WHERE device = $1 AND thread = $2";
/// The compare-and-swap: bumps the version by $1 (0 or 1) if it is still $7.
pub(super) const UPDATE_THREAD: &str = "UPDATE bot_threads SET version = version + $1, \
     nonce = COALESCE($2, nonce), ciphertext = COALESCE($3, ciphertext), \
     updated_at = $4 WHERE device = $5 AND thread = $6 AND version = $7";
/// A journal entry; no row inserted means the key was handled before.
pub(super) const INSERT_JOURNAL: &str = "INSERT INTO bot_journal (device, thread, key, handled_at) \
     VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING";
/// An outbox entry; no row inserted means the message id is queued already.
pub(super) const INSERT_OUTBOX: &str = "INSERT INTO bot_outbox \
     (device, thread, message_id, body, created_at) \
     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (device, message_id) DO NOTHING";
/// A posted outbox entry goes.
pub(super) const DELETE_SENT: &str = "DELETE FROM bot_outbox WHERE device = $1 AND message_id = $2";
/// A metadata value.
pub(super) const UPSERT_META: &str = "INSERT INTO bot_meta (device, key, value) VALUES ($1, $2, $3) \
     ON CONFLICT (device, key) DO UPDATE SET value = excluded.value";
/// Journal entries older than $2 go.
pub(super) const PRUNE_JOURNAL: &str =
    "DELETE FROM bot_journal WHERE device = $1 AND handled_at < $2";

/// A history entry of the thread $2 (position $3).
pub(super) const INSERT_HISTORY: &str = "INSERT INTO bot_history \
     (device, thread, idx, nonce, ciphertext) VALUES ($1, $2, $3, $4, $5) \
     ON CONFLICT (device, thread, idx) DO NOTHING";
/// The history entries of thread $2 below position $3 go.
pub(super) const PRUNE_HISTORY: &str =
    "DELETE FROM bot_history WHERE device = $1 AND thread = $2 AND idx < $3";
/// A thread's history entries, oldest first.
pub(super) const SELECT_HISTORY: &str = "SELECT idx, nonce, ciphertext FROM bot_history \
     WHERE device = $1 AND thread = $2 ORDER BY idx";

/// A thread row as read: version, nonce, ciphertext.
pub(super) type ThreadRow = (i64, Vec<u8>, Vec<u8>);

/// A history row as read: position, nonce, ciphertext.
pub(super) type HistoryRow = (i64, Vec<u8>, Vec<u8>);

/// Opens a thread row and its history rows.
pub(super) fn open_row(
    key: &StoreKey,
    device: DeviceId,
    thread: ThreadId,
    (version, nonce, ciphertext): ThreadRow,
    history: Vec<HistoryRow>,
) -> Result<ThreadRecord, StoreError> {
    let version = u64::try_from(version)
        .map_err(|_| StoreError::Corrupt(format!("thread {thread} has version {version}")))?;
    let data = key.open(device, thread, version, &nonce, &ciphertext)?;
    let history = history
        .into_iter()
        .map(|(index, nonce, ciphertext)| {
            let index = u64::try_from(index).map_err(|_| {
                StoreError::Corrupt(format!("thread {thread} has history entry {index}"))
            })?;
            let data = key.open_history(device, thread, index, &nonce, &ciphertext)?;
            Ok(HistoryEntry { index, data })
        })
        .collect::<Result<_, StoreError>>()?;
    Ok(ThreadRecord {
        version,
        data,
        history,
    })
}

/// An outbox row as read: id, thread, message id, body.
pub(super) type OutboxRow = (i64, String, String, Vec<u8>);

/// Reads an outbox row.
pub(super) fn outbox_entry(
    (id, thread, message_id, body): OutboxRow,
) -> Result<OutboxEntry, StoreError> {
    Ok(OutboxEntry {
        id: u64::try_from(id)
            .map_err(|_| StoreError::Corrupt(format!("outbox entry with id {id}")))?,
        thread: ThreadId::from_str(&thread)
            .map_err(|e| StoreError::Corrupt(format!("outbox entry {id}: {e}")))?,
        message_id,
        body,
    })
}

/// Implements an sqlx batch writer (`$writer`, a struct with `pool` and `device` fields): each
/// statement is a round trip to the connection (used for PostgreSQL, where it is one anyway).
macro_rules! impl_sqlx_writer {
    ($writer:ident, $db:ty, $begin:expr) => {
        impl $writer {
            /// Writes what is not an event (see [`Write`](crate::store::group::Write)).
            async fn write_other(
                conn: &mut <$db as sqlx::Database>::Connection,
                device: &str,
                write: &crate::store::group::Write,
            ) -> Result<u64, crate::store::StoreError> {
                use crate::store::group::Write;
                let done = match write {
                    // PostgreSQL's commits are on disk when they return: nothing to sync.
                    Write::Event(_) | Write::Sync => 0,
                    Write::Sent(message_id) => sqlx::query(crate::store::sql::DELETE_SENT)
                        .bind(device)
                        .bind(message_id.as_str())
                        .execute(&mut *conn)
                        .await?
                        .rows_affected(),
                    Write::Meta(key, value) => sqlx::query(crate::store::sql::UPSERT_META)
                        .bind(device)
                        .bind(key.as_str())
                        .bind(value.as_slice())
                        .execute(&mut *conn)
                        .await?
                        .rows_affected(),
                    Write::PruneJournal(older_than) => {
                        sqlx::query(crate::store::sql::PRUNE_JOURNAL)
                            .bind(device)
                            .bind(*older_than)
                            .execute(&mut *conn)
                            .await?
                            .rows_affected()
                    }
                };
                Ok(done)
            }

            /// Writes one event; `Ok(None)` if it conflicts (the caller rolls it back).
            async fn write_event(
                conn: &mut <$db as sqlx::Database>::Connection,
                device: &str,
                p: &crate::store::group::Prepared,
            ) -> Result<Option<u64>, crate::store::StoreError> {
                let thread_ok = match (p.expected, &p.sealed) {
                    (None, Some((nonce, ciphertext))) => {
                        sqlx::query(crate::store::sql::INSERT_THREAD)
                            .bind(device)
                            .bind(p.thread_hex.as_str())
                            .bind(nonce.as_slice())
                            .bind(ciphertext.as_slice())
                            .bind(p.now)
                            .execute(&mut *conn)
                            .await?
                            .rows_affected()
                            == 1
                    }
                    (None, None) => {
                        sqlx::query_as::<_, (String,)>(crate::store::sql::THREAD_EXISTS)
                            .bind(device)
                            .bind(p.thread_hex.as_str())
                            .fetch_optional(&mut *conn)
                            .await?
                            .is_none()
                    }
                    // Without a new blob the version stays, but the row must still be at it
                    // (the update also holds PostgreSQL's row lock until the commit).
                    (Some(expected), sealed) => {
                        let (nonce, ciphertext) = sealed
                            .as_ref()
                            .map(|(n, c)| (n.as_slice(), c.as_slice()))
                            .unzip();
                        sqlx::query(crate::store::sql::UPDATE_THREAD)
                            .bind(i64::from(sealed.is_some()))
                            .bind(nonce)
                            .bind(ciphertext)
                            .bind(p.now)
                            .bind(device)
                            .bind(p.thread_hex.as_str())
                            .bind(expected)
                            .execute(&mut *conn)
                            .await?
                            .rows_affected()
                            == 1
                    }
                };
                if !thread_ok {
                    return Ok(None);
                }
                for key in &p.handled {
                    let inserted = sqlx::query(crate::store::sql::INSERT_JOURNAL)
                        .bind(device)
                        .bind(p.thread_hex.as_str())
                        .bind(key.as_str())
                        .bind(p.now)
                        .execute(&mut *conn)
                        .await?
                        .rows_affected();
                    if inserted != 1 {
                        return Ok(None);
                    }
                }
                for (message_id, body) in &p.outbox {
                    let inserted = sqlx::query(crate::store::sql::INSERT_OUTBOX)
                        .bind(device)
                        .bind(p.thread_hex.as_str())
                        .bind(message_id.as_str())
                        .bind(body.as_slice())
                        .bind(p.now)
                        .execute(&mut *conn)
                        .await?
                        .rows_affected();
                    if inserted != 1 {
                        return Ok(None);
                    }
                }
                for (index, nonce, ciphertext) in &p.history {
                    let inserted = sqlx::query(crate::store::sql::INSERT_HISTORY)
                        .bind(device)
                        .bind(p.thread_hex.as_str())
                        .bind(*index)
                        .bind(nonce.as_slice())
                        .bind(ciphertext.as_slice())
                        .execute(&mut *conn)
                        .await?
                        .rows_affected();
                    if inserted != 1 {
                        return Ok(None);
                    }
                }
                if p.history_from > 0 {
                    sqlx::query(crate::store::sql::PRUNE_HISTORY)
                        .bind(device)
                        .bind(p.thread_hex.as_str())
                        .bind(p.history_from)
                        .execute(&mut *conn)
                        .await?;
                }
                Ok(Some(p.new_version))
            }
        }

        #[async_trait::async_trait]
        impl crate::store::group::ApplyBatch for $writer {
            async fn apply(
                &self,
                batch: &[crate::store::group::Write],
            ) -> Result<Vec<Result<u64, crate::store::StoreError>>, crate::store::StoreError> {
                use crate::store::group::Write;
                let mut tx = self.pool.begin_with($begin).await?;
                if let [Write::Event(p)] = batch {
                    // Alone in its transaction: a conflict rolls the whole of it back, no
                    // savepoint needed.
                    return match Self::write_event(&mut tx, &self.device, p).await? {
                        Some(version) => {
                            tx.commit().await?;
                            Ok(vec![Ok(version)])
                        }
                        None => {
                            tx.rollback().await?;
                            Ok(vec![Err(p.conflict())])
                        }
                    };
                }
                let mut outcomes: Vec<Result<u64, crate::store::StoreError>> = batch
                    .iter()
                    .map(|_| Err(crate::store::StoreError::Closed))
                    .collect();
                for (i, write) in crate::store::group::in_lock_order(batch) {
                    let p = match write {
                        Write::Event(p) => p,
                        other => {
                            let outcome = Self::write_other(&mut tx, &self.device, other).await?;
                            if let Some(slot) = outcomes.get_mut(i) {
                                *slot = Ok(outcome);
                            }
                            continue;
                        }
                    };
                    sqlx::query("SAVEPOINT bot_event").execute(&mut *tx).await?;
                    let outcome = match Self::write_event(&mut tx, &self.device, p).await? {
                        Some(version) => Ok(version),
                        None => {
                            sqlx::query("ROLLBACK TO SAVEPOINT bot_event")
                                .execute(&mut *tx)
                                .await?;
                            Err(p.conflict())
                        }
                    };
                    if let Some(slot) = outcomes.get_mut(i) {
                        *slot = outcome;
                    }
                    sqlx::query("RELEASE SAVEPOINT bot_event")
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(outcomes)
            }
        }
    };
}

/// Implements [`BotStore`](super::BotStore) for `$store` (a struct with `pool`, `device`,
/// `device_hex`, `key` and `group` fields): reads on the pool, writes through the group commit.
macro_rules! impl_bot_store {
    ($store:ident) => {
        #[async_trait::async_trait]
        impl crate::store::BotStore for $store {
            async fn load(
                &self,
                thread: switchboard_protocol::ThreadId,
            ) -> Result<Option<crate::store::ThreadRecord>, crate::store::StoreError> {
                // One snapshot for the row and its history in SQLite; in PostgreSQL (read
                // committed) a commit in between is caught by the version check of the next
                // commit, which then reads again.
                let mut tx = self.pool.begin().await?;
                let row: Option<crate::store::sql::ThreadRow> = sqlx::query_as(
                    "SELECT version, nonce, ciphertext FROM bot_threads \
                     WHERE device = $1 AND thread = $2",
                )
                .bind(self.device_hex.as_str())
                .bind(thread.to_string())
                .fetch_optional(&mut *tx)
                .await?;
                let Some(row) = row else {
                    tx.rollback().await?;
                    return Ok(None);
                };
                let history: Vec<crate::store::sql::HistoryRow> =
                    sqlx::query_as(crate::store::sql::SELECT_HISTORY)
                        .bind(self.device_hex.as_str())
                        .bind(thread.to_string())
                        .fetch_all(&mut *tx)
                        .await?;
                tx.rollback().await?;
                crate::store::sql::open_row(&self.key, self.device, thread, row, history).map(Some)
            }

            async fn handled(
                &self,
                thread: switchboard_protocol::ThreadId,
                key: &str,
            ) -> Result<bool, crate::store::StoreError> {
                crate::store::at_most("a journal key", key.len(), crate::store::MAX_KEY_LEN)?;
                let row: Option<(String,)> = sqlx::query_as(
                    "SELECT key FROM bot_journal WHERE device = $1 AND thread = $2 AND key = $3",
                )
                .bind(self.device_hex.as_str())
                .bind(thread.to_string())
                .bind(key)
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.is_some())
            }

            async fn commit(
                &self,
                effects: crate::store::Effects,
            ) -> Result<u64, crate::store::StoreError> {
                let prepared = crate::store::group::Prepared::new(effects, self.device, &self.key)?;
                self.group.commit(prepared).await
            }

            async fn outbox(
                &self,
                limit: u32,
            ) -> Result<Vec<crate::store::OutboxEntry>, crate::store::StoreError> {
                let rows: Vec<crate::store::sql::OutboxRow> = sqlx::query_as(
                    "SELECT id, thread, message_id, body FROM bot_outbox \
                     WHERE device = $1 ORDER BY id LIMIT $2",
                )
                .bind(self.device_hex.as_str())
                .bind(i64::from(limit.min(crate::store::MAX_OUTBOX_PAGE)))
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter()
                    .map(crate::store::sql::outbox_entry)
                    .collect()
            }

            async fn outbox_for(
                &self,
                thread: switchboard_protocol::ThreadId,
                limit: u32,
            ) -> Result<Vec<crate::store::OutboxEntry>, crate::store::StoreError> {
                let rows: Vec<crate::store::sql::OutboxRow> = sqlx::query_as(
                    "SELECT id, thread, message_id, body FROM bot_outbox \
                     WHERE device = $1 AND thread = $2 ORDER BY id LIMIT $3",
                )
                .bind(self.device_hex.as_str())
                .bind(thread.to_string())
                .bind(i64::from(limit.min(crate::store::MAX_OUTBOX_PAGE)))
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter()
                    .map(crate::store::sql::outbox_entry)
                    .collect()
            }

            async fn sent(&self, message_id: &str) -> Result<(), crate::store::StoreError> {
                crate::store::at_most("a message id", message_id.len(), crate::store::MAX_KEY_LEN)?;
                self.group
                    .write(crate::store::group::Write::Sent(message_id.to_owned()))
                    .await?;
                Ok(())
            }

            async fn get_meta(
                &self,
                key: &str,
            ) -> Result<Option<Vec<u8>>, crate::store::StoreError> {
                crate::store::validate_meta(key, None)?;
                let row: Option<(Vec<u8>,)> =
                    sqlx::query_as("SELECT value FROM bot_meta WHERE device = $1 AND key = $2")
                        .bind(self.device_hex.as_str())
                        .bind(key)
                        .fetch_optional(&self.pool)
                        .await?;
                Ok(row.map(|(value,)| value))
            }

            async fn put_meta(
                &self,
                key: &str,
                value: &[u8],
            ) -> Result<(), crate::store::StoreError> {
                crate::store::validate_meta(key, Some(value))?;
                self.group
                    .write(crate::store::group::Write::Meta(
                        key.to_owned(),
                        value.to_vec(),
                    ))
                    .await?;
                Ok(())
            }

            async fn prune_journal(
                &self,
                older_than: u64,
            ) -> Result<u64, crate::store::StoreError> {
                // Times past the database's range prune everything.
                let older_than = i64::try_from(older_than).unwrap_or(i64::MAX);
                self.group
                    .write(crate::store::group::Write::PruneJournal(older_than))
                    .await
            }

            async fn sync(&self) -> Result<(), crate::store::StoreError> {
                self.group.sync().await
            }

            fn stats(&self) -> crate::store::StoreStats {
                self.group.counters().snapshot()
            }
        }
    };
}

pub(super) use {impl_bot_store, impl_sqlx_writer};
