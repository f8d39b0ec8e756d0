//! The SQL both backends share. SQLite (3.35+) and PostgreSQL accept the same statements here:
//! `$N` parameters, `ON CONFLICT`, `UPDATE ... RETURNING`. Ordering is made safe by counters
//! bumped with `UPDATE ... RETURNING` inside the transaction: in PostgreSQL that takes the row
//! lock until commit, in SQLite the transaction holds the write lock (`BEGIN IMMEDIATE`). So the
//! n-th item of a thread is committed before the n+1-th, and a device's inbox sequence numbers
//! become visible in order: a reader never skips an item that commits later with a lower number.

/// Implements `Store` for `$store` (a struct with a `pool: sqlx::Pool<$db>` field).
macro_rules! impl_store {
    ($store:ty, $db:ty, $begin:expr) => {
        #[async_trait::async_trait]
        impl crate::store::Store for $store {
            async fn register_device(
                &self,
                d: &crate::store::DeviceRecord,
            ) -> Result<crate::store::Registered, crate::store::StoreError> {
                use crate::store::{Registered, StoreError, to_i64};
                let mut tx = self.pool.begin_with($begin).await?;
                let existing: Option<(Vec<u8>,)> =
                    sqlx::query_as("SELECT identity_key FROM devices WHERE device_id = $1")
                        .bind(d.device.to_string())
                        .fetch_optional(&mut *tx)
                        .await?;
                let outcome = match existing {
                    Some((key,)) if key.as_slice() != d.identity_key.as_slice() => {
                        return Err(StoreError::Conflict(format!(
                            "device {} is registered with another identity key",
                            d.device
                        )));
                    }
                    Some(_) => {
                        sqlx::query("UPDATE devices SET bundle = $1 WHERE device_id = $2")
                            .bind(d.bundle.as_slice())
                            .bind(d.device.to_string())
                            .execute(&mut *tx)
                            .await?;
                        Registered::Updated
                    }
                    None => {
                        sqlx::query(
                            "INSERT INTO devices (device_id, identity_key, bundle, registered_at) \
                             VALUES ($1, $2, $3, $4)",
                        )
                        .bind(d.device.to_string())
                        .bind(d.identity_key.as_slice())
                        .bind(d.bundle.as_slice())
                        .bind(to_i64(d.registered_at, "registration time")?)
                        .execute(&mut *tx)
                        .await?;
                        Registered::Created
                    }
                };
                tx.commit().await?;
                Ok(outcome)
            }

            async fn device(
                &self,
                device: switchboard_protocol::DeviceId,
            ) -> Result<Option<crate::store::DeviceRecord>, crate::store::StoreError> {
                use crate::store::{DeviceRecord, key_from_bytes, to_u64};
                let row: Option<(Vec<u8>, Vec<u8>, i64)> = sqlx::query_as(
                    "SELECT identity_key, bundle, registered_at FROM devices WHERE device_id = $1",
                )
                .bind(device.to_string())
                .fetch_optional(&self.pool)
                .await?;
                row.map(|(key, bundle, at)| {
                    Ok(DeviceRecord {
                        device,
                        identity_key: key_from_bytes(&key)?,
                        bundle,
                        registered_at: to_u64(at, "registration time")?,
                    })
                })
                .transpose()
            }

            async fn create_entity(
                &self,
                e: &crate::store::EntityRecord,
            ) -> Result<(), crate::store::StoreError> {
                use crate::store::StoreError;
                let mut tx = self.pool.begin_with($begin).await?;
                let admin: Option<(String,)> =
                    sqlx::query_as("SELECT device_id FROM devices WHERE device_id = $1")
                        .bind(e.admin.to_string())
                        .fetch_optional(&mut *tx)
                        .await?;
                if admin.is_none() {
                    return Err(StoreError::NotFound(format!(
                        "admin device {} is not registered",
                        e.admin
                    )));
                }
                let inserted = sqlx::query(
                    "INSERT INTO entities (entity, admin_device, display_name) VALUES ($1, $2, $3) \
                     ON CONFLICT (entity) DO NOTHING",
                )
                .bind(e.entity.as_str())
                .bind(e.admin.to_string())
                .bind(e.display_name.as_str())
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if inserted == 0 {
                    let (admin,): (String,) =
                        sqlx::query_as("SELECT admin_device FROM entities WHERE entity = $1")
                            .bind(e.entity.as_str())
                            .fetch_one(&mut *tx)
                            .await?;
                    if admin != e.admin.to_string() {
                        return Err(StoreError::Conflict(format!(
                            "entity {} exists with another admin",
                            e.entity
                        )));
                    }
                }
                tx.commit().await?;
                Ok(())
            }

            async fn entity(
                &self,
                entity: &switchboard_protocol::EntityId,
            ) -> Result<Option<crate::store::EntityRecord>, crate::store::StoreError> {
                use crate::store::{EntityRecord, device_from_text};
                let row: Option<(String, String)> = sqlx::query_as(
                    "SELECT admin_device, display_name FROM entities WHERE entity = $1",
                )
                .bind(entity.as_str())
                .fetch_optional(&self.pool)
                .await?;
                row.map(|(admin, display_name)| {
                    Ok(EntityRecord {
                        entity: entity.clone(),
                        admin: device_from_text(&admin)?,
                        display_name,
                    })
                })
                .transpose()
            }

            async fn open_thread(
                &self,
                t: &crate::store::ThreadRecord,
                open: &[u8],
            ) -> Result<crate::store::Posted, crate::store::StoreError> {
                self.open_thread_committed(t, open).await
            }

            async fn thread(
                &self,
                thread: switchboard_protocol::ThreadId,
            ) -> Result<Option<crate::store::ThreadRecord>, crate::store::StoreError> {
                use crate::store::{ThreadRecord, device_from_text, entity_from_text, to_u64};
                let mut tx = self.pool.begin().await?;
                let row: Option<(String, String, String, i64)> = sqlx::query_as(
                    "SELECT entity, customer, admin, epoch FROM threads WHERE thread_id = $1",
                )
                .bind(thread.to_string())
                .fetch_optional(&mut *tx)
                .await?;
                let Some((entity, customer, admin, epoch)) = row else {
                    return Ok(None);
                };
                let members = members(&mut tx, thread).await?;
                tx.commit().await?;
                Ok(Some(ThreadRecord {
                    thread,
                    entity: entity_from_text(&entity)?,
                    customer: device_from_text(&customer)?,
                    admin: device_from_text(&admin)?,
                    epoch: to_u64(epoch, "epoch")?,
                    members,
                }))
            }

            async fn post(
                &self,
                post: &crate::store::Post<'_>,
            ) -> Result<crate::store::Posted, crate::store::StoreError> {
                self.post_committed(post).await
            }

            async fn fetch(
                &self,
                device: switchboard_protocol::DeviceId,
                after: u64,
                limit: u32,
                max_bytes: u64,
            ) -> Result<Vec<crate::store::InboxItem>, crate::store::StoreError> {
                let after = crate::store::to_i64(after, "cursor")?;
                let max_bytes = i64::try_from(max_bytes).unwrap_or(i64::MAX);
                self.fetch_page(device.to_string(), after, i64::from(limit), max_bytes)
                    .await
            }

            async fn fetch_leased(
                &self,
                device: switchboard_protocol::DeviceId,
                instance: &str,
                after: u64,
                limit: u32,
                max_bytes: u64,
                now: u64,
                lease_secs: u64,
            ) -> Result<Vec<crate::store::InboxItem>, crate::store::StoreError> {
                self.fetch_leased_committed(crate::store::LeasedFetch {
                    device,
                    instance: instance.to_owned(),
                    after,
                    limit,
                    max_bytes,
                    now,
                    lease_secs,
                })
                .await
            }

            async fn ack_leased(
                &self,
                device: switchboard_protocol::DeviceId,
                instance: &str,
                up_to: u64,
            ) -> Result<u64, crate::store::StoreError> {
                self.ack_committed(crate::store::AckUpTo {
                    device,
                    instance: Some(instance.to_owned()),
                    up_to,
                })
                .await
            }

            async fn ack(
                &self,
                device: switchboard_protocol::DeviceId,
                up_to: u64,
            ) -> Result<u64, crate::store::StoreError> {
                self.ack_committed(crate::store::AckUpTo {
                    device,
                    instance: None,
                    up_to,
                })
                .await
            }

            async fn post_once(
                &self,
                post: &crate::store::Post<'_>,
                nonce: &crate::store::RequestNonce,
            ) -> Result<crate::store::Posted, crate::store::StoreError> {
                self.post_once_committed(post, nonce).await
            }

            async fn use_nonce(
                &self,
                device: switchboard_protocol::DeviceId,
                nonce: &[u8],
                expires_at: u64,
                now: u64,
            ) -> Result<bool, crate::store::StoreError> {
                self.use_nonce_committed(device, nonce, expires_at, now).await
            }

            async fn device_role(
                &self,
                device: switchboard_protocol::DeviceId,
            ) -> Result<crate::store::DeviceRole, crate::store::StoreError> {
                use crate::store::{DeviceRole, entity_from_text};
                let id = device.to_string();
                let admin: Option<(String,)> =
                    sqlx::query_as("SELECT entity FROM entities WHERE admin_device = $1 LIMIT 1")
                        .bind(&id)
                        .fetch_optional(&self.pool)
                        .await?;
                if let Some((entity,)) = admin {
                    return Ok(DeviceRole::Admin(entity_from_text(&entity)?));
                }
                let agent: Option<(String,)> = sqlx::query_as(
                    "SELECT t.entity FROM thread_members m JOIN threads t ON t.thread_id = m.thread_id \
                     WHERE m.device_id = $1 AND t.customer <> $1 AND t.admin <> $1 LIMIT 1",
                )
                .bind(&id)
                .fetch_optional(&self.pool)
                .await?;
                match agent {
                    Some((entity,)) => Ok(DeviceRole::Agent(entity_from_text(&entity)?)),
                    None => Ok(DeviceRole::Customer),
                }
            }

            async fn ping(&self) -> Result<(), crate::store::StoreError> {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }
        }

        /// The message posted before under `post.key`, if any: `Ok(Some)` with its answer if
        /// the bytes are the same, a conflict if they differ.
        // SQLite writes through its own writer (sqlite/batch.rs); PostgreSQL uses this.
        #[allow(dead_code)]
        async fn stored_before(
            tx: &mut sqlx::Transaction<'static, $db>,
            post: &crate::store::Post<'_>,
        ) -> Result<Option<crate::store::Posted>, crate::store::StoreError> {
            use crate::store::{StoreError, to_i64, to_u64};
            let Some(key) = post.key else {
                return Ok(None);
            };
            let row: Option<(Vec<u8>, i64, i64)> = sqlx::query_as(
                "SELECT digest, thread_seq, recipients FROM posted_messages \
                 WHERE thread_id = $1 AND epoch = $2 AND sender = $3 AND generation = $4",
            )
            .bind(post.thread.to_string())
            .bind(to_i64(key.epoch, "epoch")?)
            .bind(post.sender.to_string())
            .bind(to_i64(key.generation, "generation")?)
            .fetch_optional(&mut **tx)
            .await?;
            let Some((digest, thread_seq, recipients)) = row else {
                return Ok(None);
            };
            if digest.as_slice() != key.digest.as_slice() {
                return Err(StoreError::Conflict(format!(
                    "device {} already posted another message as generation {} of epoch {} in \
                     thread {}",
                    post.sender, key.generation, key.epoch, post.thread
                )));
            }
            Ok(Some(crate::store::Posted {
                thread_seq: to_u64(thread_seq, "thread sequence")?,
                recipients: Vec::new(),
                stored_before: true,
                recipient_count: to_u64(recipients, "recipients")?,
            }))
        }

        /// Remembers a message posted under `post.key` (see [`stored_before`]).
        // SQLite writes through its own writer (sqlite/batch.rs); PostgreSQL uses this.
        #[allow(dead_code)]
        async fn remember_post(
            tx: &mut sqlx::Transaction<'static, $db>,
            post: &crate::store::Post<'_>,
            posted: &crate::store::Posted,
        ) -> Result<(), crate::store::StoreError> {
            use crate::store::to_i64;
            let Some(key) = post.key else {
                return Ok(());
            };
            sqlx::query(
                "INSERT INTO posted_messages \
                 (thread_id, epoch, sender, generation, digest, thread_seq, recipients) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(post.thread.to_string())
            .bind(to_i64(key.epoch, "epoch")?)
            .bind(post.sender.to_string())
            .bind(to_i64(key.generation, "generation")?)
            .bind(key.digest.as_slice())
            .bind(to_i64(posted.thread_seq, "thread sequence")?)
            .bind(to_i64(posted.recipient_count, "recipients")?)
            .execute(&mut **tx)
            .await?;
            Ok(())
        }

        /// Records one request nonce in its own transaction (see `Store::use_nonce`).
        #[allow(dead_code)]
        async fn use_nonce_alone(
            pool: &sqlx::Pool<$db>,
            device: switchboard_protocol::DeviceId,
            nonce: &[u8],
            expires_at: u64,
            now: u64,
        ) -> Result<bool, crate::store::StoreError> {

            let mut tx = pool.begin_with($begin).await?;
            let fresh = nonce_in(&mut tx, device, nonce, expires_at, now).await?;
            tx.commit().await?;
            Ok(fresh)
        }

        /// Records one request nonce inside `tx`; `false` if it was used before.
        // SQLite writes through its own writer (sqlite/batch.rs); PostgreSQL uses this.
        #[allow(dead_code)]
        async fn nonce_in(
            tx: &mut sqlx::Transaction<'static, $db>,
            device: switchboard_protocol::DeviceId,
            nonce: &[u8],
            expires_at: u64,
            now: u64,
        ) -> Result<bool, crate::store::StoreError> {
            use crate::store::to_i64;
            sqlx::query("DELETE FROM nonces WHERE expires_at < $1")
                .bind(to_i64(now, "time")?)
                .execute(&mut **tx)
                .await?;
            let fresh = sqlx::query(
                "INSERT INTO nonces (device_id, nonce, expires_at) VALUES ($1, $2, $3) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(device.to_string())
            .bind(nonce)
            .bind(to_i64(expires_at, "expiry")?)
            .execute(&mut **tx)
            .await?
            .rows_affected()
                == 1;
            Ok(fresh)
        }

        /// A leased fetch (see `Store::fetch_leased`) inside `tx`: the page available to the
        /// instance, whose threads it then leases.
        // SQLite writes through its own writer (sqlite/batch.rs); PostgreSQL uses this.
        #[allow(dead_code)]
        async fn fetch_leased_in(
            tx: &mut sqlx::Transaction<'static, $db>,
            f: &crate::store::LeasedFetch,
        ) -> Result<Vec<crate::store::InboxItem>, crate::store::StoreError> {
            use crate::store::{page_end, to_i64};
            // Serialise the device's lease decisions (a no-op update takes the row lock in
            // PostgreSQL; SQLite's write transaction already excludes others).
            sqlx::query("UPDATE devices SET next_seq = next_seq WHERE device_id = $1")
                .bind(f.device.to_string())
                .execute(&mut **tx)
                .await?;
            let now_i = to_i64(f.now, "time")?;
            let after = to_i64(f.after, "cursor")?;
            use crate::store::LEASE_AVAILABLE as AVAILABLE;
            let sizes: Vec<(i64, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT i.seq, CAST(length(i.payload) AS BIGINT) {AVAILABLE} ORDER BY i.seq LIMIT $5"
            )))
            .bind(f.device.to_string())
            .bind(f.instance.as_str())
            .bind(now_i)
            .bind(after)
            .bind(i64::from(f.limit))
            .fetch_all(&mut **tx)
            .await?;
            let Some(end) = page_end(&sizes, f.max_bytes) else {
                return Ok(Vec::new());
            };
            let rows: Vec<crate::store::InboxRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT i.seq, i.thread_id, i.thread_seq, i.sender, i.kind, i.payload \
                 {AVAILABLE} AND i.seq <= $6 ORDER BY i.seq LIMIT $5"
            )))
            .bind(f.device.to_string())
            .bind(f.instance.as_str())
            .bind(now_i)
            .bind(after)
            .bind(i64::from(f.limit))
            .bind(end)
            .fetch_all(&mut **tx)
            .await?;
            let expires = to_i64(f.now.saturating_add(f.lease_secs), "lease expiry")?;
            let mut leased: Vec<&str> = rows.iter().map(|r| r.1.as_str()).collect();
            leased.sort_unstable();
            leased.dedup();
            for thread in leased {
                sqlx::query(
                    "INSERT INTO leases (device_id, thread_id, instance, expires_at) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (device_id, thread_id) \
                     DO UPDATE SET instance = excluded.instance, expires_at = excluded.expires_at",
                )
                .bind(f.device.to_string())
                .bind(thread)
                .bind(f.instance.as_str())
                .bind(expires)
                .execute(&mut **tx)
                .await?;
            }
            rows.into_iter().map(crate::store::inbox_item).collect()
        }

        /// An acknowledgement (see `Store::ack` and `Store::ack_leased`) inside `tx`.
        // SQLite writes through its own writer (sqlite/batch.rs); PostgreSQL uses this.
        #[allow(dead_code)]
        async fn ack_in(
            tx: &mut sqlx::Transaction<'static, $db>,
            a: &crate::store::AckUpTo,
        ) -> Result<u64, crate::store::StoreError> {
            use crate::store::to_i64;
            let up_to = to_i64(a.up_to, "cursor")?;
            let done = match &a.instance {
                Some(instance) => sqlx::query(
                    "DELETE FROM inbox WHERE device_id = $1 AND seq <= $2 AND thread_id IN \
                     (SELECT thread_id FROM leases WHERE device_id = $1 AND instance = $3)",
                )
                .bind(a.device.to_string())
                .bind(up_to)
                .bind(instance.as_str())
                .execute(&mut **tx)
                .await?
                .rows_affected(),
                None => sqlx::query("DELETE FROM inbox WHERE device_id = $1 AND seq <= $2")
                    .bind(a.device.to_string())
                    .bind(up_to)
                    .execute(&mut **tx)
                    .await?
                    .rows_affected(),
            };
            Ok(done)
        }

        /// Applies one post inside `tx`.
        // SQLite writes through its own writer (sqlite/batch.rs); PostgreSQL uses this.
        #[allow(dead_code)]
        async fn post_in(
            tx: &mut sqlx::Transaction<'static, $db>,
            post: &crate::store::Post<'_>,
        ) -> Result<crate::store::Posted, crate::store::StoreError> {
            use crate::store::{ItemKind, Posted, not_member, recipients, to_i64};
            // A message stored before is answered as such even if its sender has left the
            // thread since (a retry whose first answer was lost): nothing new is stored for it.
            if let Some(before) = stored_before(tx, post).await? {
                return Ok(before);
            }
            if post.kind == ItemKind::Message {
                let current = members(tx, post.thread).await?;
                // A thread always has members (its customer and admin): none means no thread.
                if current.is_empty() {
                    return Err(crate::store::StoreError::NotFound(format!("thread {}", post.thread)));
                }
                if !current.contains(&post.sender) {
                    return Err(not_member(post));
                }
            }
            // Bumping the thread counter first locks the thread: posts to one thread are
            // serialised, so every member receives them in the same order.
            let thread_seq = bump_thread(tx, post.thread).await?;
            // A copy committed by another relay process while this one waited for the lock.
            if let Some(before) = stored_before(tx, post).await? {
                return Ok(before);
            }
            let current = members(tx, post.thread).await?;
            let to = recipients(&current, post);
            for device in &to {
                enqueue(tx, *device, post.thread, thread_seq, post.sender, post.kind, post.payload).await?;
            }
            if let Some((epoch, new_members)) = post.new_roster {
                sqlx::query("DELETE FROM thread_members WHERE thread_id = $1")
                    .bind(post.thread.to_string())
                    .execute(&mut **tx)
                    .await?;
                for member in new_members {
                    sqlx::query(
                        "INSERT INTO thread_members (thread_id, device_id) VALUES ($1, $2) \
                         ON CONFLICT DO NOTHING",
                    )
                    .bind(post.thread.to_string())
                    .bind(member.to_string())
                    .execute(&mut **tx)
                    .await?;
                }
                sqlx::query("UPDATE threads SET epoch = $1 WHERE thread_id = $2")
                    .bind(to_i64(epoch, "epoch")?)
                    .bind(post.thread.to_string())
                    .execute(&mut **tx)
                    .await?;
            }
            let posted = Posted::new(thread_seq, to);
            remember_post(tx, post, &posted).await?;
            Ok(posted)
        }

        /// Takes the thread's next position (and, in PostgreSQL, its row lock).
        // SQLite writes through its own writer (sqlite/batch.rs); PostgreSQL uses this.
        #[allow(dead_code)]
        async fn bump_thread(
            tx: &mut sqlx::Transaction<'static, $db>,
            thread: switchboard_protocol::ThreadId,
        ) -> Result<u64, crate::store::StoreError> {
            use crate::store::{StoreError, to_u64};
            let row: Option<(i64,)> = sqlx::query_as(
                "UPDATE threads SET next_seq = next_seq + 1 WHERE thread_id = $1 RETURNING next_seq - 1",
            )
            .bind(thread.to_string())
            .fetch_optional(&mut **tx)
            .await?;
            let (seq,) = row.ok_or_else(|| StoreError::NotFound(format!("thread {thread}")))?;
            to_u64(seq, "thread sequence")
        }

        /// The thread's members, sorted.
        // SQLite writes through its own writer (sqlite/batch.rs); PostgreSQL uses this.
        #[allow(dead_code)]
        async fn members(
            tx: &mut sqlx::Transaction<'static, $db>,
            thread: switchboard_protocol::ThreadId,
        ) -> Result<Vec<switchboard_protocol::DeviceId>, crate::store::StoreError> {
            let rows: Vec<(String,)> = sqlx::query_as(
                "SELECT device_id FROM thread_members WHERE thread_id = $1 ORDER BY device_id",
            )
            .bind(thread.to_string())
            .fetch_all(&mut **tx)
            .await?;
            rows.iter().map(|(d,)| crate::store::device_from_text(d)).collect()
        }

        /// Appends one item to a device's inbox at the device's next position.
        // SQLite writes through its own writer (sqlite/batch.rs); PostgreSQL uses this.
        #[allow(dead_code)]
        async fn enqueue(
            tx: &mut sqlx::Transaction<'static, $db>,
            device: switchboard_protocol::DeviceId,
            thread: switchboard_protocol::ThreadId,
            thread_seq: u64,
            sender: switchboard_protocol::DeviceId,
            kind: crate::store::ItemKind,
            payload: &[u8],
        ) -> Result<(), crate::store::StoreError> {
            use crate::store::{StoreError, to_i64};
            let row: Option<(i64,)> = sqlx::query_as(
                "UPDATE devices SET next_seq = next_seq + 1 WHERE device_id = $1 RETURNING next_seq - 1",
            )
            .bind(device.to_string())
            .fetch_optional(&mut **tx)
            .await?;
            let (seq,) = row.ok_or_else(|| StoreError::NotFound(format!("device {device}")))?;
            sqlx::query(
                "INSERT INTO inbox (device_id, seq, thread_id, thread_seq, sender, kind, payload) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(device.to_string())
            .bind(seq)
            .bind(thread.to_string())
            .bind(to_i64(thread_seq, "thread sequence")?)
            .bind(sender.to_string())
            .bind(kind.as_str())
            .bind(payload)
            .execute(&mut **tx)
            .await?;
            Ok(())
        }
    };
}

pub(crate) use impl_store;
