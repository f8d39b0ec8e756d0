//! Exactly-once effects: restarts, redelivery, a crash with replies in the outbox.

use switchboard::pipeline::Delivery;
use switchboard_testkit::hostile::{HostileRelay, Slip};
use tower::ServiceExt as _;

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_mid_conversation_neither_loses_nor_repeats_and_keeps_state() {
    restart_mid_conversation(StoreKind::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_on_sqlite_neither_loses_nor_repeats_and_keeps_state() {
    restart_mid_conversation(StoreKind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_on_postgres_neither_loses_nor_repeats_and_keeps_state() {
    restart_mid_conversation(StoreKind::Postgres).await;
}

async fn restart_mid_conversation(kind: StoreKind) {
    let Some(mut world) = World::with_store("bot-restart", kind).await else {
        return;
    };
    let (handle, task) = spawn(
        world
            .runtime(TestBot {
                log: Log::default(),
            })
            .await,
    );
    let (mut customer, thread) = world.customer("customer", "order 7?").await;
    world.outcome(|o| matches!(o, Outcome::Routed { .. })).await;
    // (The customer reads the reply, and so the commit that added the bot, before writing on.)
    assert_eq!(
        bot_replies(&mut customer, thread, 1).await,
        ["you asked: order 7?"]
    );
    customer
        .send(thread, &Content::text("a"), None)
        .await
        .unwrap();
    assert_eq!(bot_replies(&mut customer, thread, 1).await, ["#1 a"]);
    stop(handle, task).await;

    // While the bot is down the customer writes; the bot built again on the same store and
    // keystore answers that once, its counter where it was.
    customer
        .send(thread, &Content::text("b"), None)
        .await
        .unwrap();
    world.reopen_store().await;
    let (handle, task) = spawn(
        world
            .runtime(TestBot {
                log: Log::default(),
            })
            .await,
    );
    customer
        .send(thread, &Content::text("c"), None)
        .await
        .unwrap();
    assert_eq!(
        bot_replies(&mut customer, thread, 2).await,
        ["#2 b", "#3 c"]
    );
    stop(handle, task).await;
    world.stop_admin().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivered_items_get_no_second_reply() {
    let mut world = World::new("bot-redeliver").await;
    let hostile = HostileRelay::start(&world.url).await;
    let hostile_url = hostile.url();
    let runtime = world
        .runtime_with(
            TestBot {
                log: Log::default(),
            },
            |b| b.relay(hostile_url),
        )
        .await;
    let metrics = runtime.metrics();
    let (handle, task) = spawn(runtime);
    let (mut customer, thread) = world.customer("customer", "order 8?").await;
    world.outcome(|o| matches!(o, Outcome::Routed { .. })).await;
    // (The customer reads the reply, and so the commit that added the bot, before writing on.)
    assert_eq!(
        bot_replies(&mut customer, thread, 1).await,
        ["you asked: order 8?"]
    );
    customer
        .send(thread, &Content::text("a"), None)
        .await
        .unwrap();
    assert_eq!(bot_replies(&mut customer, thread, 1).await, ["#1 a"]);

    // Everything the bot got so far comes again with its next message.
    let seen = hostile.delivered(world.bot_device);
    assert!(seen.len() >= 3, "{seen:?}");
    for item in seen {
        hostile.inject(world.bot_device, item, Slip::After);
    }
    customer
        .send(thread, &Content::text("b"), None)
        .await
        .unwrap();
    assert_eq!(bot_replies(&mut customer, thread, 1).await, ["#2 b"]);
    // The injected items did come, and the journal knew them.
    let text = metrics.render();
    assert!(
        text.contains("switchboard_events_total{kind=\"message\",outcome=\"duplicate\"} 1"),
        "{text}"
    );

    stop(handle, task).await;
    world.stop_admin().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_committed_before_a_crash_are_posted_once_after_it() {
    crash_with_outbox(StoreKind::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_committed_before_a_crash_on_sqlite_are_posted_once_after_it() {
    crash_with_outbox(StoreKind::Sqlite).await;
}

async fn crash_with_outbox(kind: StoreKind) {
    let Some(mut world) = World::with_store("bot-crash", kind).await else {
        return;
    };
    // The first process cannot reach the relay to post: its replies stay in the outbox.
    let down = Arc::new(AtomicBool::new(true));
    let failing = {
        let down = Arc::clone(&down);
        tower::layer::layer_fn(move |inner: switchboard::pipeline::DeliveryService| {
            let down = Arc::clone(&down);
            tower::service_fn(move |d: Delivery| {
                let inner = inner.clone();
                let down = Arc::clone(&down);
                async move {
                    if down.load(Ordering::Relaxed) {
                        Err(BotError::Timeout(Duration::from_millis(1)))
                    } else {
                        inner.oneshot(d).await
                    }
                }
            })
        })
    };
    let runtime = world
        .runtime_with(
            TestBot {
                log: Log::default(),
            },
            |b| b.delivery(failing),
        )
        .await;
    let (_handle, task) = spawn(runtime);
    let (mut customer, thread) = world.customer("customer", "order 9?").await;
    world.outcome(|o| matches!(o, Outcome::Routed { .. })).await;
    let mut queued = Vec::new();
    for _ in 0..100 {
        queued = world.store.outbox(10).await.unwrap();
        if !queued.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(queued.len(), 1, "the reply is committed to the outbox");

    // The process dies (no graceful shutdown); a new one posts what the outbox holds, once.
    task.abort();
    let _ = task.await;
    world.reopen_store().await;
    let mut runtime = None;
    for _ in 0..50 {
        let store: Arc<dyn BotStore> = world.store.clone();
        match Runtime::builder()
            .keystore(&world.bot_keystore)
            .secret(secret())
            .store_backend(store)
            .instance("test-bot")
            .bot(TestBot {
                log: Log::default(),
            })
            .build()
            .await
        {
            Ok(r) => {
                runtime = Some(r);
                break;
            }
            // The dead process's keystore lock goes away with its last task.
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let (handle, task) = spawn(runtime.expect("the keystore opens again"));
    assert_eq!(
        bot_replies(&mut customer, thread, 1).await,
        ["you asked: order 9?"]
    );
    assert!(outbox_drains(world.store.as_ref()).await);
    drop(down);
    stop(handle, task).await;
    world.stop_admin().await;
}

/// Replies with what the customer said in the thread so far, as the bot's history holds it.
struct HistoryBot;

#[async_trait]
impl Bot for HistoryBot {
    async fn on_thread(
        &self,
        cx: &mut Ctx,
        _thread: &ThreadInfo,
        _history: &[Message],
    ) -> Result<(), BotError> {
        cx.reply("hello").await?;
        Ok(())
    }

    async fn on_message(&self, cx: &mut Ctx, _msg: &Message) -> Result<(), BotError> {
        let said: Vec<&str> = cx
            .history()
            .iter()
            .filter(|m| m.is_from_customer())
            .map(Message::text)
            .collect();
        let reply = said.join(",");
        cx.reply(reply).await?;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_threads_history_survives_a_restart() {
    let Some(mut world) = World::with_store("bot-history", StoreKind::Sqlite).await else {
        return;
    };
    let (handle, task) = spawn(world.runtime(HistoryBot).await);
    let (mut customer, thread) = world.customer("customer", "order 7?").await;
    world.outcome(|o| matches!(o, Outcome::Routed { .. })).await;
    assert_eq!(bot_replies(&mut customer, thread, 1).await, ["hello"]);
    customer
        .send(thread, &Content::text("a"), None)
        .await
        .unwrap();
    assert_eq!(bot_replies(&mut customer, thread, 1).await, ["order 7?,a"]);
    stop(handle, task).await;
    // A new process reads the history back from the store (no cache survives).
    world.reopen_store().await;
    let (handle, task) = spawn(world.runtime(HistoryBot).await);
    customer
        .send(thread, &Content::text("b"), None)
        .await
        .unwrap();
    assert_eq!(
        bot_replies(&mut customer, thread, 1).await,
        ["order 7?,a,b"]
    );
    stop(handle, task).await;
    world.stop_admin().await;
}
