//! Per-thread reply order through the outbox: a reply whose post fails blocks the thread's
//! later replies until it is posted; other threads are not held up.

use std::collections::HashSet;

use switchboard::pipeline::Delivery;
use tower::ServiceExt as _;

use super::*;

/// A delivery layer that fails (transiently) every post of the first message it sees until
/// the gate opens, and records the messages it posted.
#[derive(Clone, Default)]
struct Gate {
    open: Arc<AtomicBool>,
    held: Arc<Mutex<Option<String>>>,
    posted: Arc<Mutex<Vec<String>>>,
}

impl Gate {
    fn layer(
        &self,
    ) -> impl tower::Layer<
        switchboard::pipeline::DeliveryService,
        Service = impl tower::Service<
            Delivery,
            Response = (),
            Error = BotError,
            Future = impl Send + 'static,
        > + Clone
                  + Send
                  + Sync
                  + 'static,
    > + Send
    + Sync
    + 'static {
        let gate = self.clone();
        tower::layer::layer_fn(move |inner: switchboard::pipeline::DeliveryService| {
            let gate = gate.clone();
            tower::service_fn(move |d: Delivery| {
                let inner = inner.clone();
                let gate = gate.clone();
                async move {
                    let id = d.message.header.message_id().to_string();
                    if !gate.open.load(Ordering::Relaxed) {
                        let mut held = gate.held.lock().unwrap();
                        if held.get_or_insert_with(|| id.clone()) == &id {
                            return Err(BotError::Timeout(Duration::from_millis(1)));
                        }
                    }
                    inner.oneshot(d).await?;
                    gate.posted.lock().unwrap().push(id);
                    Ok(())
                }
            })
        })
    }

    fn held(&self) -> Option<String> {
        self.held.lock().unwrap().clone()
    }
}

/// Receives on `customer` until the bot joined `thread` (bounded).
async fn until_bot_joined(customer: &mut Device, thread: ThreadId) {
    for _ in 0..60 {
        let events = customer.receive(Duration::from_secs(1)).await.unwrap();
        if events
            .iter()
            .any(|e| matches!(e, Event::RosterChanged { thread: t, .. } if *t == thread))
        {
            return;
        }
    }
    panic!("the bot never joined");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_post_blocks_its_threads_later_replies_only() {
    let mut world = World::new("bot-order").await;
    let gate = Gate::default();
    let log = Log::default();
    let runtime = world
        .runtime_with(
            TestBot {
                log: Arc::clone(&log),
            },
            |b| b.delivery(gate.layer()),
        )
        .await;
    let (handle, task) = spawn(runtime);
    let (mut customer, thread) = world.customer("customer", "order 1?").await;
    world.outcome(|o| matches!(o, Outcome::Routed { .. })).await;
    until_bot_joined(&mut customer, thread).await;
    // The bot's first reply fails to post, and keeps failing.
    for _ in 0..100 {
        if gate.held().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let held = gate.held().expect("the first reply was tried");

    // The next reply of the thread waits behind it (in the outbox), or overtakes it (the bug).
    customer
        .send(thread, &Content::text("a"), None)
        .await
        .unwrap();
    for _ in 0..100 {
        if world.store.outbox(10).await.unwrap().len() >= 2
            || !gate.posted.lock().unwrap().is_empty()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Another thread is answered meanwhile.
    let (mut other, other_thread) = world.customer("other", "order 2?").await;
    world.outcome(|o| matches!(o, Outcome::Routed { .. })).await;
    assert_eq!(
        bot_replies(&mut other, other_thread, 1).await,
        ["you asked: order 2?"]
    );
    assert!(!gate.posted.lock().unwrap().contains(&held));

    // The post goes through at last; the thread's replies come in order, once each.
    gate.open.store(true, Ordering::Relaxed);
    assert_eq!(
        bot_replies(&mut customer, thread, 2).await,
        ["you asked: order 1?", "#1 a"]
    );
    let posted = gate.posted.lock().unwrap().clone();
    assert_eq!(
        posted.iter().collect::<HashSet<_>>().len(),
        posted.len(),
        "{posted:?}"
    );
    assert!(outbox_drains(world.store.as_ref()).await);
    stop(handle, task).await;
    world.stop_admin().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_left_by_an_earlier_process_goes_before_the_next_one() {
    let mut world = World::new("bot-adopt-outbox").await;
    let store = stuck::FaultyStore::over(Arc::clone(&world.store));
    // The first process commits its answer to the routing question, but cannot post it.
    let gate = Gate::default();
    let first = world
        .runtime_with(
            TestBot {
                log: Log::default(),
            },
            |b| {
                b.store_backend(Arc::clone(&store) as Arc<dyn BotStore>)
                    .delivery(gate.layer())
            },
        )
        .await;
    let (handle, task) = spawn(first);
    let (mut customer, thread) = world.customer("customer", "order 7?").await;
    world.outcome(|o| matches!(o, Outcome::Routed { .. })).await;
    until_bot_joined(&mut customer, thread).await;
    for _ in 0..200 {
        if gate.held().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(gate.held().is_some(), "the first reply was never attempted");
    stop(handle, task).await;

    // The next process's outbox sweep is slow: its first reply must still wait for the one
    // left in the outbox, not overtake it. (A new process reads its outbox before it fetches,
    // so this holds by that alone; an instance that takes a thread over from another live
    // instance reads the thread's outbox when it first commits to it, which this test does not
    // reach: leases move only after 30 s.)
    store.slow_outbox_ms.store(4000, Ordering::SeqCst);
    let second = world
        .runtime_with(
            TestBot {
                log: Log::default(),
            },
            |b| b.store_backend(Arc::clone(&store) as Arc<dyn BotStore>),
        )
        .await;
    let (handle, task) = spawn(second);
    customer
        .send(thread, &Content::text("a"), None)
        .await
        .unwrap();
    assert_eq!(
        bot_replies(&mut customer, thread, 2).await,
        ["you asked: order 7?", "#1 a"]
    );
    stop(handle, task).await;
    world.stop_admin().await;
}
