//! Group commit on SQLite: one writer task applies every queued post and request nonce in one
//! `BEGIN IMMEDIATE` transaction, then answers each.
//!
//! A run of plain posts (no roster change) costs a fixed number of statements whatever its size:
//! the touched threads' counters and members and the recipients' inbox counters are read once,
//! positions are assigned in memory in queue order, the inbox rows go in with multi-row
//! `INSERT`s, and each counter is written back once. That is safe because the transaction holds
//! SQLite's write lock from its first statement: nobody else (no other writer task, no other
//! relay process on the same file) can move a counter in between. A post whose thread or
//! recipient is missing is refused alone and takes no position. Commits (roster changes) are
//! rare and run one by one under a savepoint, with the shared per-post SQL.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use sqlx::{QueryBuilder, Sqlite, SqlitePool, Transaction};
use switchboard_protocol::{DeviceId, ThreadId};
use tokio::sync::{mpsc, oneshot};

use super::super::{
    AckUpTo, InboxItem, LeasedFetch, OwnedPost, PostKey, Posted, RequestNonce, StoreError,
    device_from_text, recipients, to_i64, to_u64,
};
use super::MAX_BATCH;

/// Rows (or keys) per multi-row statement: 7 parameters per inbox row stays far below SQLite's
/// limit of 32766 bound parameters.
const CHUNK: usize = 500;

/// A request nonce to record (see [`Store::use_nonce`](crate::store::Store::use_nonce)).
pub(super) type NonceUse = RequestNonce;

/// One queued write and where its answer goes.
#[derive(Debug)]
pub(super) enum Op {
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

/// The writer task: takes whatever is queued (at least one op), commits it together, answers
/// each op. Ends when every sender is gone.
pub(super) async fn writer(pool: SqlitePool, mut queue: mpsc::Receiver<Op>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let mut work = Work::default();
        for op in &batch {
            match op {
                Op::Post(post, _) => work.posts.push(post),
                Op::Nonce(nonce, _) => work.nonces.push(nonce),
                Op::Fetch(fetch, _) => work.fetches.push(fetch),
                Op::Ack(ack, _) => work.acks.push(ack),
            }
        }
        match apply(&pool, &work).await {
            Ok(done) => {
                let mut posted = done.posted.into_iter();
                let mut fresh = done.fresh.into_iter();
                let mut fetched = done.fetched.into_iter();
                let mut acked = done.acked.into_iter();
                for op in batch.drain(..) {
                    // A missing result would be a bug here; answer it as a failed commit rather
                    // than leave the caller waiting.
                    match op {
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
                tracing::error!(error = %e, ops = batch.len(), "group commit failed");
                for op in batch.drain(..) {
                    let failed = StoreError::CommitFailed(e.to_string());
                    match op {
                        Op::Post(_, answer) => {
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
}

/// One batch's writes, by kind (each in queue order).
#[derive(Default)]
struct Work<'a> {
    posts: Vec<&'a OwnedPost>,
    nonces: Vec<&'a NonceUse>,
    fetches: Vec<&'a LeasedFetch>,
    acks: Vec<&'a AckUpTo>,
}

/// One result per write of a [`Work`], by kind, in its order.
struct Done {
    posted: Vec<Result<Posted, StoreError>>,
    fresh: Vec<Result<bool, StoreError>>,
    fetched: Vec<Result<Vec<InboxItem>, StoreError>>,
    acked: Vec<Result<u64, StoreError>>,
}

fn lost() -> StoreError {
    StoreError::CommitFailed("the group commit lost track of this write".to_owned())
}

/// Runs one write of a batch under a savepoint: if it fails, it is rolled back alone and its
/// error is its answer; the transaction goes on.
macro_rules! alone {
    ($tx:ident, $write:expr) => {{
        sqlx::query("SAVEPOINT op").execute(&mut *$tx).await?;
        let result = $write.await;
        if result.is_err() {
            sqlx::query("ROLLBACK TO SAVEPOINT op")
                .execute(&mut *$tx)
                .await?;
        }
        sqlx::query("RELEASE SAVEPOINT op")
            .execute(&mut *$tx)
            .await?;
        result
    }};
}

/// Applies the batch's nonces, then its posts (in queue order), then its acknowledgements,
/// then its leased fetches (which so see the posts and acknowledgements of the same batch), in
/// one transaction. Returns one result per write, or an error if the transaction itself failed
/// (then nothing happened). A fetch or acknowledgement that fails alone is rolled back to its
/// savepoint and answered with its error; the others commit.
async fn apply(pool: &SqlitePool, work: &Work<'_>) -> Result<Done, StoreError> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    // The nonces of requests, then those of posts that spend theirs in the same transaction.
    let mut all_nonces = work.nonces.clone();
    all_nonces.extend(work.posts.iter().filter_map(|p| p.nonce.as_ref()));
    let mut fresh = use_nonces(&mut tx, &all_nonces).await?;
    let post_fresh = fresh.split_off(work.nonces.len());
    // A post whose nonce was spent before is refused alone; the others go on.
    let mut posted: Vec<Option<Result<Posted, StoreError>>> = Vec::with_capacity(work.posts.len());
    let mut accepted: Vec<(usize, &OwnedPost)> = Vec::with_capacity(work.posts.len());
    let mut post_fresh = post_fresh.into_iter();
    for (i, post) in work.posts.iter().enumerate() {
        let refused = match post.nonce {
            None => None,
            Some(_) => match post_fresh.next() {
                Some(Ok(true)) => None,
                Some(Ok(false)) => Some(Err(StoreError::Replayed)),
                Some(Err(e)) => Some(Err(e)),
                None => Some(Err(lost())),
            },
        };
        if refused.is_none() {
            accepted.push((i, post));
        }
        posted.push(refused);
    }
    for run in accepted.chunk_by(|a, b| a.1.new_roster.is_none() && b.1.new_roster.is_none()) {
        let (indices, run): (Vec<usize>, Vec<&OwnedPost>) = run.iter().copied().unzip();
        let results = if run.iter().all(|post| post.new_roster.is_none()) {
            plain_posts(&mut tx, &run).await?
        } else {
            let mut results = Vec::with_capacity(run.len());
            for post in run {
                results.push(alone!(tx, super::post_in(&mut tx, &post.as_post())));
            }
            results
        };
        for (i, result) in indices.into_iter().zip(results) {
            if let Some(slot) = posted.get_mut(i) {
                *slot = Some(result);
            }
        }
    }
    let posted = posted
        .into_iter()
        .map(|p| p.unwrap_or_else(|| Err(lost())))
        .collect();
    let mut acked = Vec::with_capacity(work.acks.len());
    for ack in &work.acks {
        acked.push(alone!(tx, super::ack_in(&mut tx, ack)));
    }
    let mut fetched = Vec::with_capacity(work.fetches.len());
    for fetch in &work.fetches {
        fetched.push(alone!(tx, super::fetch_leased_in(&mut tx, fetch)));
    }
    tx.commit().await?;
    Ok(Done {
        posted,
        fresh,
        fetched,
        acked,
    })
}

/// Records nonces, grouped by their `now` (oldest first): expired rows are pruned as of that
/// time, then the group is inserted at once and the rows SQLite reports as inserted are the
/// fresh ones. A nonce used twice in one batch is fresh only the first time.
async fn use_nonces(
    tx: &mut Transaction<'static, Sqlite>,
    nonces: &[&NonceUse],
) -> Result<Vec<Result<bool, StoreError>>, StoreError> {
    let mut results: Vec<Result<bool, StoreError>> = Vec::with_capacity(nonces.len());
    results.resize_with(nonces.len(), || Ok(false));
    let mut by_now: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    for (i, n) in nonces.iter().enumerate() {
        by_now.entry(n.now).or_default().push(i);
    }
    for (now, group) in by_now {
        sqlx::query("DELETE FROM nonces WHERE expires_at < ?")
            .bind(to_i64(now, "time")?)
            .execute(&mut **tx)
            .await?;
        let mut valid = Vec::with_capacity(group.len());
        for i in group {
            let (Some(n), Some(slot)) = (nonces.get(i), results.get_mut(i)) else {
                continue;
            };
            match to_i64(n.expires_at, "expiry") {
                Ok(expires) => valid.push((i, n.device.to_string(), n.nonce.as_slice(), expires)),
                Err(e) => *slot = Err(e),
            }
        }
        for chunk in valid.chunks(CHUNK) {
            let mut insert =
                QueryBuilder::<Sqlite>::new("INSERT INTO nonces (device_id, nonce, expires_at) ");
            insert.push_values(chunk, |mut row, (_, device, nonce, expires)| {
                row.push_bind(device.as_str())
                    .push_bind(*nonce)
                    .push_bind(*expires);
            });
            insert.push(" ON CONFLICT DO NOTHING RETURNING device_id, nonce");
            let inserted: Vec<(String, Vec<u8>)> = insert
                .build_query_as()
                .persistent(false)
                .fetch_all(&mut **tx)
                .await?;
            let mut inserted: HashSet<(String, Vec<u8>)> = inserted.into_iter().collect();
            for (i, device, nonce, _) in chunk {
                if let Some(slot) = results.get_mut(*i) {
                    *slot = Ok(inserted.remove(&(device.clone(), nonce.to_vec())));
                }
            }
        }
    }
    Ok(results)
}

/// One inbox row to insert.
struct Row<'a> {
    device: String,
    seq: i64,
    thread: String,
    thread_seq: i64,
    sender: String,
    kind: &'static str,
    payload: &'a [u8],
}

/// A message's identity among a thread's posts (see [`PostKey`]).
type MessageKey = (ThreadId, u64, DeviceId, u64);

/// Applies a run of posts without roster changes with a fixed number of statements (plus one
/// lookup per message, for messages posted again).
async fn plain_posts(
    tx: &mut Transaction<'static, Sqlite>,
    all: &[&OwnedPost],
) -> Result<Vec<Result<Posted, StoreError>>, StoreError> {
    // Messages posted before (in an earlier batch or earlier in this one) are answered as
    // stored, or refused if their bytes differ; the others are applied together.
    let mut answers: Vec<Option<Result<Posted, StoreError>>> = Vec::with_capacity(all.len());
    let mut in_batch: HashMap<MessageKey, (usize, [u8; 32])> = HashMap::new();
    let mut run: Vec<&OwnedPost> = Vec::with_capacity(all.len());
    let mut run_index: Vec<usize> = Vec::with_capacity(all.len());
    let mut copies: Vec<(usize, usize)> = Vec::new();
    for (i, post) in all.iter().enumerate() {
        let Some(key) = post.key else {
            answers.push(None);
            run_index.push(i);
            run.push(post);
            continue;
        };
        let id: MessageKey = (post.thread, key.epoch, post.sender, key.generation);
        if let Some((first, digest)) = in_batch.get(&id) {
            answers.push(Some(if *digest == key.digest {
                copies.push((i, *first));
                Ok(Posted::new(0, Vec::new()))
            } else {
                Err(conflict(post, key))
            }));
            continue;
        }
        match super::stored_before(tx, &post.as_post()).await {
            Ok(Some(before)) => answers.push(Some(Ok(before))),
            Ok(None) => {
                in_batch.insert(id, (i, key.digest));
                answers.push(None);
                run_index.push(i);
                run.push(post);
            }
            Err(e) => answers.push(Some(Err(e))),
        }
    }
    let applied = apply_plain(tx, &run).await?;
    let mut remembered = Vec::new();
    for (i, result) in run_index.into_iter().zip(applied) {
        if let (Ok(posted), Some(post)) = (&result, all.get(i))
            && post.key.is_some()
        {
            remembered.push((*post, posted.thread_seq, posted.recipient_count));
        }
        if let Some(slot) = answers.get_mut(i) {
            *slot = Some(result);
        }
    }
    remember(tx, &remembered).await?;
    for (copy, first) in copies {
        let before = match answers.get(first) {
            Some(Some(Ok(posted))) => Ok(Posted {
                thread_seq: posted.thread_seq,
                recipients: Vec::new(),
                stored_before: true,
                recipient_count: posted.recipient_count,
            }),
            Some(Some(Err(e))) => Err(StoreError::CommitFailed(format!(
                "the first copy of this message was refused: {e}"
            ))),
            _ => Err(lost()),
        };
        if let Some(slot) = answers.get_mut(copy) {
            *slot = Some(before);
        }
    }
    Ok(answers
        .into_iter()
        .map(|answer| answer.unwrap_or_else(|| Err(lost())))
        .collect())
}

fn conflict(post: &OwnedPost, key: PostKey) -> StoreError {
    StoreError::Conflict(format!(
        "device {} already posted another message as generation {} of epoch {} in thread {}",
        post.sender, key.generation, key.epoch, post.thread
    ))
}

/// Records the keys of messages just stored, with multi-row inserts.
async fn remember(
    tx: &mut Transaction<'static, Sqlite>,
    posts: &[(&OwnedPost, u64, u64)],
) -> Result<(), StoreError> {
    let mut rows = Vec::with_capacity(posts.len());
    for (post, thread_seq, recipients) in posts {
        let Some(key) = post.key else { continue };
        rows.push((
            post.thread.to_string(),
            to_i64(key.epoch, "epoch")?,
            post.sender.to_string(),
            to_i64(key.generation, "generation")?,
            key.digest,
            to_i64(*thread_seq, "thread sequence")?,
            to_i64(*recipients, "recipients")?,
        ));
    }
    for chunk in rows.chunks(CHUNK) {
        let mut insert = QueryBuilder::<Sqlite>::new(
            "INSERT INTO posted_messages \
             (thread_id, epoch, sender, generation, digest, thread_seq, recipients) ",
        );
        insert.push_values(chunk, |mut row, r| {
            row.push_bind(r.0.as_str())
                .push_bind(r.1)
                .push_bind(r.2.as_str())
                .push_bind(r.3)
                .push_bind(r.4.as_slice())
                .push_bind(r.5)
                .push_bind(r.6);
        });
        insert.build().persistent(false).execute(&mut **tx).await?;
    }
    Ok(())
}

/// Applies posts that are new, without roster changes.
async fn apply_plain(
    tx: &mut Transaction<'static, Sqlite>,
    run: &[&OwnedPost],
) -> Result<Vec<Result<Posted, StoreError>>, StoreError> {
    let threads: BTreeSet<ThreadId> = run.iter().map(|post| post.thread).collect();
    let thread_keys: Vec<String> = threads.iter().map(ToString::to_string).collect();
    let mut thread_next = counters(tx, "threads", "thread_id", &thread_keys).await?;
    let members = members_of(tx, &thread_keys).await?;

    // Who each post goes to; the sender is excluded as in the per-post path.
    let empty = Vec::new();
    let planned: Vec<Vec<DeviceId>> = run
        .iter()
        .map(|post| {
            let current = members.get(&post.thread).unwrap_or(&empty);
            recipients(current, &post.as_post())
        })
        .collect();
    let device_keys: Vec<String> = planned
        .iter()
        .flatten()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .map(ToString::to_string)
        .collect();
    let mut device_next = counters(tx, "devices", "device_id", &device_keys).await?;

    let mut results = Vec::with_capacity(run.len());
    let mut rows = Vec::new();
    for (post, to) in run.iter().zip(planned) {
        let thread = post.thread.to_string();
        let Some(&thread_seq) = thread_next.get(&thread) else {
            results.push(Err(StoreError::NotFound(format!("thread {}", post.thread))));
            continue;
        };
        let keys: Vec<String> = to.iter().map(ToString::to_string).collect();
        if let Some(missing) = keys.iter().find(|d| !device_next.contains_key(*d)) {
            results.push(Err(StoreError::NotFound(format!("device {missing}"))));
            continue;
        }
        let sender = post.sender.to_string();
        for device in keys {
            let Some(next) = device_next.get_mut(&device) else {
                continue;
            };
            rows.push(Row {
                device,
                seq: *next,
                thread: thread.clone(),
                thread_seq,
                sender: sender.clone(),
                kind: post.kind.as_str(),
                payload: &post.payload,
            });
            *next = next.saturating_add(1);
        }
        thread_next.insert(thread, thread_seq.saturating_add(1));
        results.push(Ok(Posted::new(to_u64(thread_seq, "thread sequence")?, to)));
    }

    for chunk in rows.chunks(CHUNK) {
        let mut insert = QueryBuilder::<Sqlite>::new(
            "INSERT INTO inbox (device_id, seq, thread_id, thread_seq, sender, kind, payload) ",
        );
        insert.push_values(chunk, |mut row, r| {
            row.push_bind(r.device.as_str())
                .push_bind(r.seq)
                .push_bind(r.thread.as_str())
                .push_bind(r.thread_seq)
                .push_bind(r.sender.as_str())
                .push_bind(r.kind)
                .push_bind(r.payload);
        });
        insert.build().persistent(false).execute(&mut **tx).await?;
    }
    store_counters(tx, "threads", "thread_id", &thread_next).await?;
    store_counters(tx, "devices", "device_id", &device_next).await?;
    Ok(results)
}

/// `next_seq` of the rows of `table` whose `key` column is in `keys`. `table` and `key` are
/// fixed identifiers from this module, never input.
async fn counters(
    tx: &mut Transaction<'static, Sqlite>,
    table: &str,
    key: &str,
    keys: &[String],
) -> Result<HashMap<String, i64>, StoreError> {
    let mut out = HashMap::with_capacity(keys.len());
    for chunk in keys.chunks(CHUNK) {
        let mut select = in_list(
            &format!("SELECT {key}, next_seq FROM {table} WHERE {key} IN ("),
            chunk,
            ")",
        );
        let rows: Vec<(String, i64)> = select
            .build_query_as()
            .persistent(false)
            .fetch_all(&mut **tx)
            .await?;
        out.extend(rows);
    }
    Ok(out)
}

/// Writes back the counters read by [`counters`] (all of them: unchanged ones are rewritten with
/// the value they have, which costs less than tracking them).
async fn store_counters(
    tx: &mut Transaction<'static, Sqlite>,
    table: &str,
    key: &str,
    values: &HashMap<String, i64>,
) -> Result<(), StoreError> {
    let values: Vec<(&String, &i64)> = values.iter().collect();
    for chunk in values.chunks(CHUNK) {
        let mut update =
            QueryBuilder::<Sqlite>::new(format!("UPDATE {table} SET next_seq = v.column2 FROM ("));
        update.push_values(chunk, |mut row, (k, n)| {
            row.push_bind(k.as_str()).push_bind(**n);
        });
        update.push(format!(") AS v WHERE {table}.{key} = v.column1"));
        update.build().persistent(false).execute(&mut **tx).await?;
    }
    Ok(())
}

/// The members of each of `threads`, sorted.
async fn members_of(
    tx: &mut Transaction<'static, Sqlite>,
    threads: &[String],
) -> Result<HashMap<ThreadId, Vec<DeviceId>>, StoreError> {
    let mut out: HashMap<ThreadId, Vec<DeviceId>> = HashMap::with_capacity(threads.len());
    for chunk in threads.chunks(CHUNK) {
        let mut select = in_list(
            "SELECT thread_id, device_id FROM thread_members WHERE thread_id IN (",
            chunk,
            ") ORDER BY thread_id, device_id",
        );
        let rows: Vec<(String, String)> = select
            .build_query_as()
            .persistent(false)
            .fetch_all(&mut **tx)
            .await?;
        for (thread, device) in rows {
            let thread = super::super::thread_from_text(&thread)?;
            out.entry(thread)
                .or_default()
                .push(device_from_text(&device)?);
        }
    }
    Ok(out)
}

/// `head`, the keys as bound parameters separated by commas, `tail`.
fn in_list(head: &str, keys: &[String], tail: &str) -> QueryBuilder<Sqlite> {
    let mut query = QueryBuilder::<Sqlite>::new(head);
    let mut list = query.separated(", ");
    for key in keys {
        list.push_bind(key.as_str());
    }
    query.push(tail);
    query
}
