//! Nothing is acknowledged before it is committed and on disk: a thread whose commits keep
//! conflicting is redone until it commits, a thread whose stored state cannot be read is
//! quarantined with its messages left at the relay for a restart, and items whose commits the
//! store cannot sync stay at the relay too.

use std::sync::atomic::AtomicU32;

use async_trait::async_trait;
use switchboard::store::{Effects, OutboxEntry, StoreError, ThreadRecord};

use super::*;

/// A store that refuses commits of handled items with conflicts, loads as corrupt, or answers
/// the outbox sweep slowly, on demand.
#[derive(Debug)]
pub(super) struct FaultyStore {
    inner: Arc<dyn BotStore>,
    pub(super) conflicts_left: AtomicU32,
    pub(super) corrupt: AtomicBool,
    pub(super) refused_loads: AtomicU32,
    /// The sweep's `outbox` read takes this long (0: at once).
    pub(super) slow_outbox_ms: AtomicU32,
    /// `sync` fails (as a disk that cannot flush would).
    pub(super) failing_syncs: AtomicBool,
    /// `sync` calls that succeeded.
    pub(super) syncs: AtomicU32,
}

impl FaultyStore {
    pub(super) fn over(inner: Arc<dyn BotStore>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            conflicts_left: AtomicU32::new(0),
            corrupt: AtomicBool::new(false),
            refused_loads: AtomicU32::new(0),
            slow_outbox_ms: AtomicU32::new(0),
            failing_syncs: AtomicBool::new(false),
            syncs: AtomicU32::new(0),
        })
    }
}

#[async_trait]
impl BotStore for FaultyStore {
    async fn load(&self, thread: ThreadId) -> Result<Option<ThreadRecord>, StoreError> {
        if self.corrupt.load(Ordering::SeqCst) {
            self.refused_loads.fetch_add(1, Ordering::SeqCst);
            return Err(StoreError::Corrupt("injected".to_owned()));
        }
        self.inner.load(thread).await
    }
    async fn handled(&self, thread: ThreadId, key: &str) -> Result<bool, StoreError> {
        self.inner.handled(thread, key).await
    }
    async fn commit(&self, effects: Effects) -> Result<u64, StoreError> {
        if !effects.handled.is_empty()
            && self
                .conflicts_left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        {
            return Err(StoreError::Conflict {
                thread: effects.thread,
            });
        }
        self.inner.commit(effects).await
    }
    async fn outbox(&self, limit: u32) -> Result<Vec<OutboxEntry>, StoreError> {
        let slow = self.slow_outbox_ms.load(Ordering::SeqCst);
        if slow > 0 {
            tokio::time::sleep(Duration::from_millis(u64::from(slow))).await;
        }
        self.inner.outbox(limit).await
    }
    async fn outbox_for(
        &self,
        thread: ThreadId,
        limit: u32,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        self.inner.outbox_for(thread, limit).await
    }
    async fn sent(&self, message_id: &str) -> Result<(), StoreError> {
        self.inner.sent(message_id).await
    }
    async fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get_meta(key).await
    }
    async fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.inner.put_meta(key, value).await
    }
    async fn prune_journal(&self, older_than: u64) -> Result<u64, StoreError> {
        self.inner.prune_journal(older_than).await
    }
    async fn sync(&self) -> Result<(), StoreError> {
        if self.failing_syncs.load(Ordering::SeqCst) {
            return Err(StoreError::Database(
                "injected: the disk cannot flush".to_owned(),
            ));
        }
        self.inner.sync().await?;
        self.syncs.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// Whether the runtime's metrics come to contain `needle` (polled for up to 10 s).
async fn shows(metrics: &switchboard::layers::Metrics, needle: &str) -> bool {
    for _ in 0..200 {
        if metrics.render().contains(needle) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

async fn runtime_over(world: &World, store: Arc<FaultyStore>) -> Runtime {
    world
        .runtime_with(
            TestBot {
                log: Log::default(),
            },
            |b| b.store_backend(store).thread_cache(0),
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thread_that_keeps_conflicting_is_redone_until_it_commits() {
    let mut world = World::new("bot-conflicts").await;
    let store = FaultyStore::over(Arc::clone(&world.store));
    let (handle, task) = spawn(runtime_over(&world, Arc::clone(&store)).await);
    let (mut customer, thread) = world.customer("customer", "order 7?").await;
    world.outcome(|o| matches!(o, Outcome::Routed { .. })).await;
    assert_eq!(
        bot_replies(&mut customer, thread, 1).await,
        ["you asked: order 7?"]
    );
    // More conflicts in a row than the runtime once gave up after (it then acknowledged the
    // message without handling it: lost).
    store.conflicts_left.store(12, Ordering::SeqCst);
    customer
        .send(thread, &Content::text("a"), None)
        .await
        .unwrap();
    assert_eq!(bot_replies(&mut customer, thread, 1).await, ["#1 a"]);
    assert_eq!(store.conflicts_left.load(Ordering::SeqCst), 0);
    stop(handle, task).await;
    world.stop_admin().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thread_whose_state_cannot_be_read_keeps_its_messages_at_the_relay() {
    let mut world = World::new("bot-quarantine").await;
    let store = FaultyStore::over(Arc::clone(&world.store));
    let runtime = runtime_over(&world, Arc::clone(&store)).await;
    let metrics = runtime.metrics();
    let (handle, task) = spawn(runtime);
    let (mut customer, thread) = world.customer("customer", "order 7?").await;
    world.outcome(|o| matches!(o, Outcome::Routed { .. })).await;
    assert_eq!(
        bot_replies(&mut customer, thread, 1).await,
        ["you asked: order 7?"]
    );
    store.corrupt.store(true, Ordering::SeqCst);
    customer
        .send(thread, &Content::text("b"), None)
        .await
        .unwrap();
    let quarantined = shows(&metrics, "switchboard_threads_quarantined_total 1").await;
    assert!(store.refused_loads.load(Ordering::SeqCst) >= 1);
    assert!(quarantined, "{}", metrics.render());
    assert!(bot_replies(&mut customer, thread, 0).await.is_empty());
    stop(handle, task).await;

    // Mended, the bot starts again: the message it could not handle comes again, answered once.
    store.corrupt.store(false, Ordering::SeqCst);
    let (handle, task) = spawn(runtime_over(&world, Arc::clone(&store)).await);
    assert_eq!(bot_replies(&mut customer, thread, 1).await, ["#1 b"]);
    stop(handle, task).await;
    world.stop_admin().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_whose_commits_are_not_on_disk_stay_at_the_relay() {
    let mut world = World::new("bot-unsynced").await;
    let store = FaultyStore::over(Arc::clone(&world.store));
    store.failing_syncs.store(true, Ordering::SeqCst);
    let (handle, task) = spawn(runtime_over(&world, Arc::clone(&store)).await);
    let (mut customer, thread) = world.customer("customer", "order 7?").await;
    world.outcome(|o| matches!(o, Outcome::Routed { .. })).await;
    // Replies go out as soon as their commit returns, without waiting for the disk...
    assert_eq!(
        bot_replies(&mut customer, thread, 1).await,
        ["you asked: order 7?"]
    );
    // ...but nothing is acknowledged: not while running, not at shutdown.
    stop(handle, task).await;
    assert_eq!(store.syncs.load(Ordering::SeqCst), 0);

    // Started again with a disk that flushes: the relay delivers the items again (the journal
    // knows them: no second reply), and they are acknowledged once synced.
    store.failing_syncs.store(false, Ordering::SeqCst);
    let runtime = runtime_over(&world, Arc::clone(&store)).await;
    let metrics = runtime.metrics();
    let (handle, task) = spawn(runtime);
    assert!(
        shows(&metrics, "outcome=\"duplicate\"").await,
        "the unacknowledged items were not delivered again: {}",
        metrics.render()
    );
    assert!(bot_replies(&mut customer, thread, 0).await.is_empty());
    stop(handle, task).await;
    assert!(store.syncs.load(Ordering::SeqCst) >= 1);

    // Acknowledged now: a third start gets nothing again.
    let runtime = runtime_over(&world, Arc::clone(&store)).await;
    let metrics = runtime.metrics();
    let (handle, task) = spawn(runtime);
    customer
        .send(thread, &Content::text("c"), None)
        .await
        .unwrap();
    assert_eq!(bot_replies(&mut customer, thread, 1).await, ["#1 c"]);
    assert!(
        !metrics.render().contains("outcome=\"duplicate\""),
        "acknowledged items came again: {}",
        metrics.render()
    );
    stop(handle, task).await;
    world.stop_admin().await;
}
