//! Group commit on SQLite: one writer, on an OS thread of its own over a synchronous
//! connection, applies every queued write (posts, request nonces, leased fetches,
//! acknowledgements) in one `BEGIN IMMEDIATE` transaction (one fsync), then answers each.
//!
//! Every statement is a plain function call on the writer's thread (prepared statements are
//! cached), so a post costs its few statements in microseconds and the batch costs one fsync;
//! no write ever waits on SQLite's lock behind another writer of this process. The transaction
//! holds SQLite's write lock from its first statement: nobody else (no other relay process on
//! the same file) can move a counter in between, so each post takes its thread's and its
//! recipients' next positions in queue order. A write that fails on its own (a missing thread
//! or device, a conflicting message) is rolled back to its savepoint and answered with its
//! error; the others commit.

use std::collections::BTreeMap;
use std::path::Path;

use rusqlite::{Connection, OptionalExtension as _, Transaction, TransactionBehavior, params};
use switchboard_protocol::DeviceId;
use tokio::sync::{mpsc, oneshot};

use super::super::{
    AckUpTo, InboxItem, InboxRow, ItemKind, LEASE_AVAILABLE, LeasedFetch, OwnedPost, Post, Posted,
    RequestNonce, StoreError, ThreadRecord, device_from_text, inbox_item, not_member, page_end,
    recipients, to_i64, to_u64,
};
use super::MAX_BATCH;

/// A request nonce to record (see [`Store::use_nonce`](crate::store::Store::use_nonce)).
pub(super) type NonceUse = RequestNonce;

/// One queued write and where its answer goes.
#[derive(Debug)]
pub(super) enum Op {
    /// A new thread and its opening item (queued for the admin).
    Open(
        ThreadRecord,
        Vec<u8>,
        oneshot::Sender<Result<Posted, StoreError>>,
    ),
    /// A post to a thread.
    Post(OwnedPost, oneshot::Sender<Result<Posted, StoreError>>),
    /// A request nonce.
    Nonce(NonceUse, oneshot::Sender<Result<bool, StoreError>>),
    /// A leased inbox fetch (it writes the leases).
    Fetch(
        LeasedFetch,
        oneshot::Sender<Result<Vec<InboxItem>, StoreError>>,
    ),
    /// An acknowledgement.
    Ack(AckUpTo, oneshot::Sender<Result<u64, StoreError>>),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        Self::CommitFailed(e.to_string())
    }
}

/// How a commit reaches the disk (SQLite's `synchronous` in WAL mode).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Sync {
    /// fsync before the commit is answered (`FULL`).
    Full,
    /// Written to the log, not fsync'd (`NORMAL`): it survives the relay process being killed
    /// (the log is in the operating system's cache) and reaches the disk with the next fsync'd
    /// commit or checkpoint; a power failure before then loses it (the log's checksums make
    /// the database stop at the last whole transaction: never a torn one).
    Lazy,
    /// No fsync at all (`OFF`): a private temporary database.
    Off,
}

impl Sync {
    fn pragma(self) -> &'static str {
        match self {
            Self::Full => "FULL",
            Self::Lazy => "NORMAL",
            Self::Off => "OFF",
        }
    }
}

/// How a batch must be committed. Posts and thread opens are answered "stored", so they are on
/// disk first. A batch of only request nonces, leased fetches and acknowledgements need not
/// wait for the disk: losing its last such transactions to a power failure redelivers
/// acknowledged items (receivers drop redeliveries: rows M7 and the bot's journal), forgets
/// leases (renewed by the next fetch), and forgets nonces of requests made in the last moment
/// before it (a captured request of those could then be replayed once within its 5-minute
/// window: a read of the inbox, an acknowledgement, or a write whose own commit was lost too).
pub(super) fn needed_sync(batch: &[Op], durable: bool) -> Sync {
    if !durable {
        Sync::Off
    } else if batch
        .iter()
        .any(|op| matches!(op, Op::Open(..) | Op::Post(..)))
    {
        Sync::Full
    } else {
        Sync::Lazy
    }
}

/// Opens the writer's connection to the database file at `path` (its schema is up to date)
/// and starts the writer thread; the returned queue feeds it. `durable`: posts and opens are
/// fsync'd before they are answered (see [`needed_sync`]); otherwise nothing is (a private
/// temporary database).
pub(super) fn start(path: &Path, durable: bool) -> Result<mpsc::Sender<Op>, StoreError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    let sync = if durable { Sync::Full } else { Sync::Off };
    conn.pragma_update(None, "synchronous", sync.pragma())?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    let (queue, rx) = mpsc::channel(4 * MAX_BATCH);
    std::thread::Builder::new()
        .name("relay-store-writer".to_owned())
        .spawn(move || writer(conn, rx, durable, sync))
        .map_err(|e| StoreError::CommitFailed(format!("cannot start the writer thread: {e}")))?;
    Ok(queue)
}

/// The writer thread: blocks for the first write, takes whatever else is queued (up to
/// [`MAX_BATCH`]), commits it together, answers each. Ends when every sender is gone.
fn writer(mut conn: Connection, mut queue: mpsc::Receiver<Op>, durable: bool, mut sync: Sync) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = queue.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let wanted = needed_sync(&batch, durable);
        let switched = if wanted == sync {
            Ok(())
        } else {
            conn.pragma_update(None, "synchronous", wanted.pragma())
                .map(|()| sync = wanted)
        };
        let outcome = match switched {
            Ok(()) => apply(&mut conn, &batch),
            Err(e) => Err(e.into()),
        };
        answer(batch.drain(..), outcome);
    }
}

/// One result per write of a batch, by kind, each in queue order.
#[derive(Default)]
struct Done {
    opened: Vec<Result<Posted, StoreError>>,
    posted: Vec<Result<Posted, StoreError>>,
    fresh: Vec<Result<bool, StoreError>>,
    fetched: Vec<Result<Vec<InboxItem>, StoreError>>,
    acked: Vec<Result<u64, StoreError>>,
}

/// Answers each write with its result, or with the transaction's failure.
fn answer(batch: impl Iterator<Item = Op>, outcome: Result<Done, StoreError>) {
    match outcome {
        Ok(done) => {
            let mut opened = done.opened.into_iter();
            let mut posted = done.posted.into_iter();
            let mut fresh = done.fresh.into_iter();
            let mut fetched = done.fetched.into_iter();
            let mut acked = done.acked.into_iter();
            for op in batch {
                // A missing result would be a bug here; answer it as a failed commit rather
                // than leave the caller waiting.
                match op {
                    Op::Open(_, _, answer) => {
                        let _ = answer.send(opened.next().unwrap_or_else(|| Err(lost())));
                    }
                    Op::Post(_, answer) => {
                        let _ = answer.send(posted.next().unwrap_or_else(|| Err(lost())));
                    }
                    Op::Nonce(_, answer) => {
                        let _ = answer.send(fresh.next().unwrap_or_else(|| Err(lost())));
                    }
                    Op::Fetch(_, answer) => {
                        let _ = answer.send(fetched.next().unwrap_or_else(|| Err(lost())));
                    }
                    Op::Ack(_, answer) => {
                        let _ = answer.send(acked.next().unwrap_or_else(|| Err(lost())));
                    }
                }
            }
        }
        Err(e) => {
            let ops: Vec<Op> = batch.collect();
            tracing::error!(error = %e, ops = ops.len(), "group commit failed");
            for op in ops {
                let failed = StoreError::CommitFailed(e.to_string());
                match op {
                    Op::Open(_, _, answer) | Op::Post(_, answer) => {
                        let _ = answer.send(Err(failed));
                    }
                    Op::Nonce(_, answer) => {
                        let _ = answer.send(Err(failed));
                    }
                    Op::Fetch(_, answer) => {
                        let _ = answer.send(Err(failed));
                    }
                    Op::Ack(_, answer) => {
                        let _ = answer.send(Err(failed));
                    }
                }
            }
        }
    }
}

fn lost() -> StoreError {
    StoreError::CommitFailed("the group commit lost track of this write".to_owned())
}

/// Runs one write under a savepoint: if it fails, it is rolled back alone and its error is its
/// answer; the transaction goes on. A failure of the savepoint itself fails the transaction.
fn alone<T>(
    tx: &mut Transaction<'_>,
    write: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<Result<T, StoreError>, StoreError> {
    let savepoint = tx.savepoint()?;
    let result = write(&savepoint);
    if result.is_ok() {
        savepoint.commit()?;
    }
    // Dropped without a commit, the savepoint rolls back.
    Ok(result)
}

/// Applies the batch's nonces, then its posts (in queue order; a post that spends its nonce
/// with it is refused if the nonce was used), then its acknowledgements, then its leased
/// fetches (which so see the posts and acknowledgements of the same batch), in one
/// transaction. Returns one result per write, or an error if the transaction itself failed
/// (then nothing happened).
fn apply(conn: &mut Connection, batch: &[Op]) -> Result<Done, StoreError> {
    let mut tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut done = Done::default();
    let nonces: Vec<&NonceUse> = batch
        .iter()
        .filter_map(|op| match op {
            Op::Nonce(nonce, _) => Some(nonce),
            _ => None,
        })
        .collect();
    done.fresh = use_nonces(&tx, &nonces)?;
    for op in batch {
        if let Op::Open(thread, open, _) = op {
            done.opened
                .push(alone(&mut tx, |c| open_thread_in(c, thread, open))?);
        }
    }
    for op in batch {
        if let Op::Post(post, _) = op {
            let result = match &post.nonce {
                Some(nonce) => match use_nonces(&tx, &[nonce])?.pop() {
                    Some(Ok(true)) => alone(&mut tx, |c| post_in(c, &post.as_post()))?,
                    Some(Ok(false)) => Err(StoreError::Replayed),
                    Some(Err(e)) => Err(e),
                    None => Err(lost()),
                },
                None => alone(&mut tx, |c| post_in(c, &post.as_post()))?,
            };
            done.posted.push(result);
        }
    }
    for op in batch {
        if let Op::Ack(ack, _) = op {
            done.acked.push(alone(&mut tx, |c| ack_in(c, ack))?);
        }
    }
    for op in batch {
        if let Op::Fetch(fetch, _) = op {
            done.fetched
                .push(alone(&mut tx, |c| fetch_leased_in(c, fetch))?);
        }
    }
    tx.commit()?;
    Ok(done)
}

/// Records nonces (oldest `now` first: expired rows are pruned as of that time); a nonce used
/// before, or twice in the list, is fresh only the first time.
fn use_nonces(
    conn: &Connection,
    nonces: &[&NonceUse],
) -> Result<Vec<Result<bool, StoreError>>, StoreError> {
    let mut by_now: BTreeMap<u64, ()> = BTreeMap::new();
    for n in nonces {
        by_now.insert(n.now, ());
    }
    if let Some((&oldest, _)) = by_now.first_key_value() {
        conn.prepare_cached("DELETE FROM nonces WHERE expires_at < ?1")?
            .execute(params![to_i64(oldest, "time")?])?;
    }
    let mut insert = conn.prepare_cached(
        "INSERT INTO nonces (device_id, nonce, expires_at) VALUES (?1, ?2, ?3) \
         ON CONFLICT DO NOTHING",
    )?;
    let mut out = Vec::with_capacity(nonces.len());
    for n in nonces {
        let expires = match to_i64(n.expires_at, "expiry") {
            Ok(expires) => expires,
            Err(e) => {
                out.push(Err(e));
                continue;
            }
        };
        let inserted = insert.execute(params![n.device.to_string(), n.nonce, expires])?;
        out.push(Ok(inserted == 1));
    }
    Ok(out)
}

/// Opens a thread: its row, its members, and the opening item queued for its admin.
fn open_thread_in(conn: &Connection, t: &ThreadRecord, open: &[u8]) -> Result<Posted, StoreError> {
    let thread = t.thread.to_string();
    let inserted = conn
        .prepare_cached(
            "INSERT INTO threads (thread_id, entity, customer, admin, epoch, next_seq) \
             VALUES (?1, ?2, ?3, ?4, ?5, 1) ON CONFLICT (thread_id) DO NOTHING",
        )?
        .execute(params![
            thread,
            t.entity.as_str(),
            t.customer.to_string(),
            t.admin.to_string(),
            to_i64(t.epoch, "epoch")?
        ])?;
    if inserted == 0 {
        return Err(StoreError::Conflict(format!("thread {thread} exists")));
    }
    let mut add =
        conn.prepare_cached("INSERT INTO thread_members (thread_id, device_id) VALUES (?1, ?2)")?;
    for member in &t.members {
        add.execute(params![thread, member.to_string()])?;
    }
    // The opening item is the thread's first (position 1), the admin's next.
    conn.prepare_cached("UPDATE threads SET next_seq = 2 WHERE thread_id = ?1")?
        .execute(params![thread])?;
    let admin = t.admin.to_string();
    let seq: Option<i64> = conn
        .prepare_cached(
            "UPDATE devices SET next_seq = next_seq + 1 WHERE device_id = ?1 RETURNING next_seq - 1",
        )?
        .query_row(params![admin], |row| row.get(0))
        .optional()?;
    let seq = seq.ok_or_else(|| StoreError::NotFound(format!("device {admin}")))?;
    conn.prepare_cached(
        "INSERT INTO inbox (device_id, seq, thread_id, thread_seq, sender, kind, payload) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        admin,
        seq,
        thread,
        1_i64,
        t.customer.to_string(),
        ItemKind::ThreadOpen.as_str(),
        open
    ])?;
    Ok(Posted::new(1, vec![t.admin]))
}

/// Applies one post: answered as stored before if the same message was posted already
/// (refused if its bytes differ), else queued for every recipient at the thread's and each
/// recipient's next position, and the roster changed if it is a commit.
fn post_in(conn: &Connection, post: &Post<'_>) -> Result<Posted, StoreError> {
    let thread = post.thread.to_string();
    let current = members(conn, &thread)?;
    // A thread always has members (its customer and admin): none means no such thread.
    if current.is_empty() {
        return Err(StoreError::NotFound(format!("thread {thread}")));
    }
    // A message stored before is answered as such even if its sender has left the thread
    // since (a retry whose first answer was lost): nothing new is stored for it.
    if let Some(before) = stored_before(conn, post)? {
        return Ok(before);
    }
    if post.kind == ItemKind::Message && !current.contains(&post.sender) {
        return Err(not_member(post));
    }
    let thread_seq: Option<i64> = conn
        .prepare_cached(
            "UPDATE threads SET next_seq = next_seq + 1 WHERE thread_id = ?1 \
             RETURNING next_seq - 1",
        )?
        .query_row(params![thread], |row| row.get(0))
        .optional()?;
    let thread_seq = thread_seq.ok_or_else(|| StoreError::NotFound(format!("thread {thread}")))?;
    let to = recipients(&current, post);
    let sender = post.sender.to_string();
    let mut bump = conn.prepare_cached(
        "UPDATE devices SET next_seq = next_seq + 1 WHERE device_id = ?1 RETURNING next_seq - 1",
    )?;
    let mut insert = conn.prepare_cached(
        "INSERT INTO inbox (device_id, seq, thread_id, thread_seq, sender, kind, payload) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    for device in &to {
        let device = device.to_string();
        let seq: Option<i64> = bump
            .query_row(params![device], |row| row.get(0))
            .optional()?;
        let seq = seq.ok_or_else(|| StoreError::NotFound(format!("device {device}")))?;
        insert.execute(params![
            device,
            seq,
            thread,
            thread_seq,
            sender,
            post.kind.as_str(),
            post.payload
        ])?;
    }
    if let Some((epoch, new_members)) = post.new_roster {
        conn.prepare_cached("DELETE FROM thread_members WHERE thread_id = ?1")?
            .execute(params![thread])?;
        let mut add = conn.prepare_cached(
            "INSERT INTO thread_members (thread_id, device_id) VALUES (?1, ?2) \
             ON CONFLICT DO NOTHING",
        )?;
        for member in new_members {
            add.execute(params![thread, member.to_string()])?;
        }
        conn.prepare_cached("UPDATE threads SET epoch = ?1 WHERE thread_id = ?2")?
            .execute(params![to_i64(epoch, "epoch")?, thread])?;
    }
    let posted = Posted::new(to_u64(thread_seq, "thread sequence")?, to);
    if let Some(key) = post.key {
        conn.prepare_cached(
            "INSERT INTO posted_messages \
             (thread_id, epoch, sender, generation, digest, thread_seq, recipients) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?
        .execute(params![
            thread,
            to_i64(key.epoch, "epoch")?,
            sender,
            to_i64(key.generation, "generation")?,
            key.digest.as_slice(),
            thread_seq,
            to_i64(posted.recipient_count, "recipients")?
        ])?;
    }
    Ok(posted)
}

/// The message posted before under `post.key`, if any: its answer if the bytes are the same,
/// a conflict if they differ.
fn stored_before(conn: &Connection, post: &Post<'_>) -> Result<Option<Posted>, StoreError> {
    let Some(key) = post.key else {
        return Ok(None);
    };
    let row: Option<(Vec<u8>, i64, i64)> = conn
        .prepare_cached(
            "SELECT digest, thread_seq, recipients FROM posted_messages \
             WHERE thread_id = ?1 AND epoch = ?2 AND sender = ?3 AND generation = ?4",
        )?
        .query_row(
            params![
                post.thread.to_string(),
                to_i64(key.epoch, "epoch")?,
                post.sender.to_string(),
                to_i64(key.generation, "generation")?
            ],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )
        .optional()?;
    let Some((digest, thread_seq, recipients)) = row else {
        return Ok(None);
    };
    if digest.as_slice() != key.digest.as_slice() {
        return Err(StoreError::Conflict(format!(
            "device {} already posted another message as generation {} of epoch {} in thread {}",
            post.sender, key.generation, key.epoch, post.thread
        )));
    }
    Ok(Some(Posted {
        thread_seq: to_u64(thread_seq, "thread sequence")?,
        recipients: Vec::new(),
        stored_before: true,
        recipient_count: to_u64(recipients, "recipients")?,
    }))
}

/// The thread's members, sorted.
fn members(conn: &Connection, thread: &str) -> Result<Vec<DeviceId>, StoreError> {
    let mut select = conn.prepare_cached(
        "SELECT device_id FROM thread_members WHERE thread_id = ?1 ORDER BY device_id",
    )?;
    let rows = select.query_map(params![thread], |row| row.get::<_, String>(0))?;
    let mut out = Vec::new();
    for row in rows {
        out.push(device_from_text(&row?)?);
    }
    Ok(out)
}

/// An acknowledgement (see `Store::ack` and `Store::ack_leased`).
fn ack_in(conn: &Connection, a: &AckUpTo) -> Result<u64, StoreError> {
    let up_to = to_i64(a.up_to, "cursor")?;
    let device = a.device.to_string();
    let done = match &a.instance {
        Some(instance) => conn
            .prepare_cached(
                "DELETE FROM inbox WHERE device_id = ?1 AND seq <= ?2 AND thread_id IN \
                 (SELECT thread_id FROM leases WHERE device_id = ?1 AND instance = ?3)",
            )?
            .execute(params![device, up_to, instance])?,
        None => conn
            .prepare_cached("DELETE FROM inbox WHERE device_id = ?1 AND seq <= ?2")?
            .execute(params![device, up_to])?,
    };
    Ok(u64::try_from(done).unwrap_or(u64::MAX))
}

/// A leased fetch (see `Store::fetch_leased`): the page available to the instance, whose
/// threads it then leases.
fn fetch_leased_in(conn: &Connection, f: &LeasedFetch) -> Result<Vec<InboxItem>, StoreError> {
    let device = f.device.to_string();
    let now = to_i64(f.now, "time")?;
    let after = to_i64(f.after, "cursor")?;
    let limit = i64::from(f.limit);
    // `?N` parameters: SQLite numbers `$N` names by first appearance, not by N.
    let sizes: Vec<(i64, i64)> = conn
        .prepare_cached(&numbered(&format!(
            "SELECT i.seq, CAST(length(i.payload) AS BIGINT) {LEASE_AVAILABLE} ORDER BY i.seq LIMIT $5"
        )))?
        .query_map(params![device, f.instance, now, after, limit], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })?
        .collect::<Result<_, _>>()?;
    let Some(end) = page_end(&sizes, f.max_bytes) else {
        return Ok(Vec::new());
    };
    let rows: Vec<InboxRow> = conn
        .prepare_cached(&numbered(&format!(
            "SELECT i.seq, i.thread_id, i.thread_seq, i.sender, i.kind, i.payload \
             {LEASE_AVAILABLE} AND i.seq <= $6 ORDER BY i.seq LIMIT $5"
        )))?
        .query_map(
            params![device, f.instance, now, after, limit, end],
            super::read::inbox_row,
        )?
        .collect::<Result<_, _>>()?;
    let expires = to_i64(f.now.saturating_add(f.lease_secs), "lease expiry")?;
    let mut leased: Vec<&str> = rows.iter().map(|r| r.1.as_str()).collect();
    leased.sort_unstable();
    leased.dedup();
    let mut lease = conn.prepare_cached(
        "INSERT INTO leases (device_id, thread_id, instance, expires_at) \
         VALUES (?1, ?2, ?3, ?4) ON CONFLICT (device_id, thread_id) \
         DO UPDATE SET instance = excluded.instance, expires_at = excluded.expires_at",
    )?;
    for thread in leased {
        lease.execute(params![device, thread, f.instance, expires])?;
    }
    rows.into_iter().map(inbox_item).collect()
}

/// SQL shared with PostgreSQL (`$N` parameters) for SQLite's numbered `?N` ones.
fn numbered(sql: &str) -> String {
    sql.replace('$', "?")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn nonce() -> Op {
        let (answer, _) = oneshot::channel();
        Op::Nonce(
            NonceUse {
                device: DeviceId::from_bytes([1; 16]),
                nonce: vec![1],
                expires_at: 10,
                now: 1,
            },
            answer,
        )
    }

    fn ack() -> Op {
        let (answer, _) = oneshot::channel();
        Op::Ack(
            AckUpTo {
                device: DeviceId::from_bytes([1; 16]),
                instance: None,
                up_to: 3,
            },
            answer,
        )
    }

    fn post() -> Op {
        let (answer, _) = oneshot::channel();
        Op::Post(
            OwnedPost {
                thread: switchboard_protocol::ThreadId::from_bytes([2; 16]),
                sender: DeviceId::from_bytes([1; 16]),
                kind: ItemKind::Message,
                payload: vec![1],
                new_roster: None,
                to: None,
                key: None,
                nonce: None,
            },
            answer,
        )
    }

    #[test]
    fn only_batches_with_a_post_or_an_open_wait_for_the_disk() {
        assert_eq!(needed_sync(&[nonce(), ack()], true), Sync::Lazy);
        assert_eq!(needed_sync(&[nonce(), post(), ack()], true), Sync::Full);
        assert_eq!(needed_sync(&[post()], true), Sync::Full);
        assert_eq!(needed_sync(&[post()], false), Sync::Off);
        assert_eq!(needed_sync(&[nonce()], false), Sync::Off);
    }
}
