//! Scale-out: three processes of one bot (one device, three instances) share its threads
//! through the relay's leases and one PostgreSQL store; the instance holding the most threads
//! is SIGKILLed while customers are sending. Every customer message still gets exactly one
//! reply, in order within its thread, and no (epoch, generation) of the bot is sealed twice.
//!
//! Needs `SWITCHBOARD_TEST_PG` (e.g. `postgres://postgres@127.0.0.1:5432/test`); the store
//! lives in a schema of its own, dropped at the end. Without it the test says it was skipped.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use switchboard_relay::http::LEASE_SECS;
use switchboard_testkit::pg::PgSchema;
use tokio::sync::Barrier;
use tokio::time::{Instant, timeout};

use crate::support::{BotProcess, Customer, Scene, assert_exactly_once, echo};

/// Processes of the bot.
const INSTANCES: usize = 3;
/// Customers, each in a thread of its own, all at once.
const CUSTOMERS: usize = 8;
/// Messages per customer: the first answered before the others are sent back to back.
const MESSAGES: usize = 6;
/// How long a customer waits for its first reply (routing and the bot's join included).
const FIRST_WAIT: Duration = Duration::from_secs(20);
/// How long a customer waits for the rest: a killed instance's threads move once its leases
/// expire.
const REST_WAIT: Duration = Duration::from_secs(LEASE_SECS + 25);
/// How long customers keep listening after all are answered, for late duplicates.
const LATE_WAIT: Duration = Duration::from_secs(2);

/// The first message, answered (the thread is the bot's then); once every customer is there,
/// the others back to back;
/// then every reply, and listening until every customer is done, and a little longer.
async fn converse(
    mut customer: Customer,
    replies: Arc<AtomicUsize>,
    firsts: Arc<AtomicUsize>,
    go: Arc<Barrier>,
    done: Arc<AtomicUsize>,
) -> Customer {
    let name = customer.name.clone();
    let text = |i: usize| format!("{name} says {i}");
    let first = text(0);
    customer.send(&first).await;
    let answered = customer
        .wait_for_reply(&first, Instant::now() + FIRST_WAIT, &replies)
        .await;
    if answered {
        firsts.fetch_add(1, Ordering::Relaxed);
    }
    // The load begins when every thread is the bot's (and the test has seen who holds which).
    go.wait().await;
    if answered {
        for i in 1..MESSAGES {
            customer.send(&text(i)).await;
        }
        let deadline = Instant::now() + REST_WAIT;
        while !customer.sent.iter().all(|s| customer.has_reply_to(s)) {
            if Instant::now() >= deadline {
                customer
                    .errors
                    .push(format!("not every message answered within {REST_WAIT:?}"));
                break;
            }
            let got = customer.pump(Duration::from_millis(500)).await;
            replies.fetch_add(got, Ordering::Relaxed);
        }
    } else {
        customer
            .errors
            .push(format!("no reply to {first:?} within {FIRST_WAIT:?}"));
    }
    done.fetch_add(1, Ordering::Relaxed);
    let deadline = Instant::now() + REST_WAIT;
    while done.load(Ordering::Relaxed) < CUSTOMERS && Instant::now() < deadline {
        customer.pump(Duration::from_millis(300)).await;
    }
    let late = Instant::now() + LATE_WAIT;
    while Instant::now() < late {
        customer.pump(Duration::from_millis(300)).await;
    }
    customer
}

/// Threads leased per instance, most first (read from the relay's database).
async fn leases(scene: &Scene) -> Vec<(String, i64)> {
    let url = format!("sqlite://{}?mode=ro", scene.dir.join("relay.db").display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT instance, COUNT(*) FROM leases GROUP BY instance ORDER BY COUNT(*) DESC, instance",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;
    rows
}

async fn wait_for(counter: &AtomicUsize, at_least: usize, within: Duration) -> bool {
    timeout(within, async {
        while counter.load(Ordering::Relaxed) < at_least {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_on_postgres_one_killed_reply_exactly_once_in_order() {
    let Some(schema) = PgSchema::create("scale-out scenario", "sb_scale").await else {
        return;
    };
    let scene = Scene::new("scale-out").await;
    let store = schema.url();
    let mut bots = Vec::new();
    for i in 0..INSTANCES {
        let instance = format!("echo-{i}");
        let (keystore, key_file) = scene.keystore_copy(&instance);
        let mut args = scene.bot_args(&scene.relay.url(), &store, &instance);
        args.keystore = keystore;
        args.key_file = key_file;
        bots.push(BotProcess::start(&args).await);
    }

    let replies = Arc::new(AtomicUsize::new(0));
    let firsts = Arc::new(AtomicUsize::new(0));
    let go = Arc::new(Barrier::new(CUSTOMERS + 1));
    let done = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for k in 0..CUSTOMERS {
        let customer = scene.customer(&format!("customer-{k}")).await;
        tasks.push(tokio::spawn(converse(
            customer,
            Arc::clone(&replies),
            Arc::clone(&firsts),
            Arc::clone(&go),
            Arc::clone(&done),
        )));
    }

    // Every thread answered once: each is leased to an instance now. The instance holding the
    // most is killed as soon as the load that follows has begun.
    assert!(
        wait_for(&firsts, CUSTOMERS, FIRST_WAIT * 2).await,
        "only {} of the {CUSTOMERS} threads were answered",
        firsts.load(Ordering::Relaxed)
    );
    let held = leases(&scene).await;
    let victim = held.first().map(|(i, _)| i.clone()).unwrap();
    let before = replies.load(Ordering::Relaxed);
    timeout(FIRST_WAIT, go.wait())
        .await
        .expect("every customer is ready for the load");
    assert!(
        wait_for(&replies, before + 1, REST_WAIT).await,
        "no reply after the first ones"
    );
    let at_kill = replies.load(Ordering::Relaxed);
    let position = bots.iter().position(|b| b.instance == victim).unwrap();
    bots.remove(position).kill().await;
    eprintln!(
        "leases {held:?}; killed {victim} after {at_kill} of {} replies",
        CUSTOMERS * MESSAGES
    );

    let mut customers = Vec::new();
    for task in tasks {
        customers.push(
            timeout(REST_WAIT * 2, task)
                .await
                .expect("a customer finishes")
                .unwrap(),
        );
    }
    let seen = scene.admin.stop().await;
    assert_exactly_once(&customers);

    // In order within each thread: reply i answers message i.
    for c in &customers {
        let order: Vec<&str> = c.received.iter().map(|r| r.text.as_str()).collect();
        let want: Vec<String> = c.sent.iter().map(|s| echo(s)).collect();
        assert_eq!(order, want, "{}: replies out of order", c.name);
    }

    // No generation sealed twice: every bot message has an (epoch, generation) of its own in
    // its thread, and nobody saw an equivocation.
    let mut generations = HashSet::new();
    for c in &customers {
        for r in &c.received {
            assert!(
                generations.insert((c.thread, r.sender, r.epoch, r.generation)),
                "{}: generation {} of epoch {:?} sealed twice",
                c.name,
                r.generation,
                r.epoch
            );
        }
    }
    assert_eq!(generations.len(), CUSTOMERS * MESSAGES);
    assert!(seen.equivocations.is_empty(), "{:?}", seen.equivocations);
    assert_eq!(seen.routed, CUSTOMERS, "every thread routed once");

    // The survivors shut down cleanly on SIGTERM.
    for bot in bots {
        let status = bot.terminate().await;
        assert!(status.success(), "SIGTERM ends the bot cleanly: {status}");
    }
}
