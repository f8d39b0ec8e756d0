//! Redelivery and a crash: the relay (through a hostile proxy) gives the bot every inbox item
//! three times, and the bot process is SIGKILLed mid-conversation and restarted on the same
//! keystore and store. Every customer message still gets exactly one reply, counted at the
//! customers.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use switchboard_testkit::hostile::HostileRelay;
use tokio::time::{Instant, timeout};

use crate::support::{BotProcess, Customer, Scene, assert_exactly_once};

/// Customers, each in a thread of its own.
const CUSTOMERS: usize = 4;
/// Messages per customer, each sent once the previous one was answered.
const MESSAGES: usize = 8;
/// How long a customer waits for one reply (a restart of the bot included).
const REPLY_WAIT: Duration = Duration::from_secs(30);
/// How long customers keep listening after all are answered, for late duplicates.
const LATE_WAIT: Duration = Duration::from_secs(2);

/// Sends `messages` messages one after another, each once the previous one was answered; then
/// listens until every customer is done, and a little longer.
async fn converse(
    mut customer: Customer,
    messages: usize,
    replies: Arc<AtomicUsize>,
    done: Arc<AtomicUsize>,
    customers: usize,
) -> Customer {
    for i in 0..messages {
        let text = format!("{} says {i}", customer.name);
        customer.send(&text).await;
        let deadline = Instant::now() + REPLY_WAIT;
        if !customer.wait_for_reply(&text, deadline, &replies).await {
            customer
                .errors
                .push(format!("no reply to {text:?} within {REPLY_WAIT:?}"));
            break;
        }
    }
    done.fetch_add(1, Ordering::Relaxed);
    let deadline = Instant::now() + REPLY_WAIT;
    while done.load(Ordering::Relaxed) < customers && Instant::now() < deadline {
        customer.pump(Duration::from_millis(300)).await;
    }
    let late = Instant::now() + LATE_WAIT;
    while Instant::now() < late {
        customer.pump(Duration::from_millis(300)).await;
    }
    customer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bot_killed_and_restarted_under_redelivery_replies_exactly_once() {
    let scene = Scene::new("redelivery").await;
    let hostile = HostileRelay::start(&scene.relay.url()).await;
    // Every inbox item of the bot three times: twice in the answer that brings it, once more
    // in a later answer (after the bot acknowledged it, too).
    hostile.redeliver(scene.bot, 3);
    let store = format!("sqlite://{}", scene.dir.join("bot-state.db").display());
    let args = scene.bot_args(&hostile.url(), &store, "echo-1");
    let first = BotProcess::start(&args).await;

    let replies = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for k in 0..CUSTOMERS {
        let customer = scene.customer(&format!("customer-{k}")).await;
        tasks.push(tokio::spawn(converse(
            customer,
            MESSAGES,
            Arc::clone(&replies),
            Arc::clone(&done),
            CUSTOMERS,
        )));
    }

    // Mid-conversation: about half of the replies are in.
    let half = CUSTOMERS * MESSAGES / 2;
    let reached = timeout(Duration::from_secs(45), async {
        while replies.load(Ordering::Relaxed) < half {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        reached.is_ok(),
        "only {} of {half} replies came before the kill; bot log:\n{}",
        replies.load(Ordering::Relaxed),
        first.log_tail(40)
    );
    first.kill().await;
    let second = BotProcess::start(&args).await;

    let mut customers = Vec::new();
    for task in tasks {
        customers.push(
            timeout(REPLY_WAIT * 3, task)
                .await
                .expect("a customer finishes")
                .unwrap(),
        );
    }
    let seen = scene.admin.stop().await;
    assert_exactly_once(&customers);
    assert_eq!(seen.routed, CUSTOMERS, "every thread routed once");
    assert!(seen.equivocations.is_empty(), "{:?}", seen.equivocations);
    let total: usize = customers.iter().map(|c| c.received.len()).sum();
    assert_eq!(total, CUSTOMERS * MESSAGES);
    // The bot's inbox went through the hostile relay: two items per thread (the commit that
    // added the bot, the history grant) and one per customer message after the first.
    assert_eq!(
        hostile.delivered(scene.bot).len(),
        CUSTOMERS * (MESSAGES + 1),
        "items the relay gave the bot"
    );

    // SIGTERM: a graceful shutdown, exit status 0.
    let status = second.terminate().await;
    assert!(status.success(), "SIGTERM ends the bot cleanly: {status}");
}
