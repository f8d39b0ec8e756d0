//! A bot answering, in order, with state, handing off; metrics and health.

use super::*;

/// Waits (bounded) until the bot's log has `entry`.
async fn logged(log: &Log, entry: &str) {
    for _ in 0..100 {
        if log.lock().unwrap().iter().any(|e| e == entry) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the bot never logged {entry:?}: {:?}", log.lock().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bot_answers_the_routing_question_in_order_with_state_and_hands_off() {
    let mut world = World::new("bot-e2e").await;
    let log = Log::default();
    let runtime = world
        .runtime_with(TestBot { log: log.clone() }, |b| {
            b.metrics_addr("127.0.0.1:0".parse().unwrap())
        })
        .await;
    let metrics_addr = runtime.metrics_addr().unwrap();
    let (handle, task) = spawn(runtime);

    // The customer's first message routes the thread to OrderBot, which answers it (on_thread
    // got it through the history grant); the customer verifies the reply as OrderBot's.
    let (mut customer, thread) = world.customer("customer", "where is my order 42?").await;
    world
        .outcome(|o| matches!(o, Outcome::Routed { agent, .. } if agent == "OrderBot"))
        .await;
    assert_eq!(
        bot_replies(&mut customer, thread, 1).await,
        ["you asked: where is my order 42?"]
    );

    // Messages sent back to back are answered in order, the counter in the bot's typed state
    // carried from event to event.
    for text in ["a", "b", "c"] {
        customer
            .send(thread, &Content::text(text), None)
            .await
            .unwrap();
    }
    assert_eq!(
        bot_replies(&mut customer, thread, 3).await,
        ["#1 a", "#2 b", "#3 c"]
    );

    // Receipts reach the bot (typing indicators do not).
    customer
        .send(thread, &Content::Typing { active: true }, None)
        .await
        .unwrap();
    let read = Content::Receipt {
        kind: ReceiptKind::Read,
        messages: vec![MessageId::from_bytes([7; 16])],
    };
    customer.send(thread, &read, None).await.unwrap();
    logged(&log, "receipt: Read 1").await;
    assert!(!log.lock().unwrap().iter().any(|e| e == "message: "));

    // Metrics and health on the bot's own port.
    let http = reqwest::Client::new();
    let metrics = http
        .get(format!("http://{metrics_addr}/metrics"))
        .send()
        .await
        .unwrap();
    assert!(metrics.status().is_success());
    let text = metrics.text().await.unwrap();
    assert!(
        text.contains("switchboard_events_total{kind=\"message\",outcome=\"ok\"}"),
        "{text}"
    );
    assert!(text.contains("switchboard_replies_sent_total"), "{text}");
    assert!(text.contains("switchboard_outbox_depth 0"), "{text}");
    assert!(text.contains("switchboard_handle_seconds_count"), "{text}");
    let health = http
        .get(format!("http://{metrics_addr}/healthz"))
        .send()
        .await
        .unwrap();
    assert!(health.status().is_success());
    let ready = http
        .get(format!("http://{metrics_addr}/readyz"))
        .send()
        .await
        .unwrap();
    assert!(ready.status().is_success());

    // A handoff request reaches the admin, which transfers the thread to Dana: the bot loses
    // the floor and leaves the thread.
    customer
        .send(thread, &Content::text("I want a human"), None)
        .await
        .unwrap();
    world
        .outcome(|o| matches!(o, Outcome::HandedOff { to, .. } if to == "Dana"))
        .await;
    logged(&log, "floor lost").await;
    logged(&log, "removed").await;

    stop(handle, task).await;
    world.stop_admin().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn threads_run_concurrently_each_in_order() {
    threads_in_order("bot-order", false).await;
}

/// The same over the relay's inbox stream instead of long-polls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn threads_run_concurrently_each_in_order_over_the_inbox_stream() {
    threads_in_order("bot-order-stream", true).await;
}

async fn threads_in_order(name: &str, stream: bool) {
    let mut world = World::new(name).await;
    let runtime = world
        .runtime_with(
            TestBot {
                log: Log::default(),
            },
            |b| b.inbox_stream(stream),
        )
        .await;
    let (handle, task) = spawn(runtime);

    let mut customers = Vec::new();
    for i in 0..3 {
        let (customer, thread) = world
            .customer(&format!("customer{i}"), "my order please")
            .await;
        world.outcome(|o| matches!(o, Outcome::Routed { .. })).await;
        customers.push((customer, thread));
    }
    for (customer, thread) in &mut customers {
        assert_eq!(
            bot_replies(customer, *thread, 1).await,
            ["you asked: my order please"]
        );
    }
    // Every customer sends five messages at once; each thread's replies come in its order.
    for (customer, thread) in &mut customers {
        for n in 1..=5 {
            customer
                .send(*thread, &Content::text(format!("m{n}")), None)
                .await
                .unwrap();
        }
    }
    for (customer, thread) in &mut customers {
        assert_eq!(
            bot_replies(customer, *thread, 5).await,
            ["#1 m1", "#2 m2", "#3 m3", "#4 m4", "#5 m5"]
        );
    }
    // The bot received the way it was told to (the relay counts requests by route).
    let relay_metrics = reqwest::get(format!("{}/metrics", world.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let streamed = relay_metrics.contains("route=\"/v1/inbox/stream\",status=\"200\"");
    assert_eq!(streamed, stream, "{relay_metrics}");

    stop(handle, task).await;
    world.stop_admin().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_history_grant_the_bot_hears_of_the_thread_anyway() {
    // The entity grants no history on routing: the join waits for a grant that never comes,
    // then the bot gets the thread without history.
    let mut world = World::with_history("bot-nogrant", false).await;
    let log = Log::default();
    let (handle, task) = spawn(world.runtime(TestBot { log: log.clone() }).await);
    let (mut customer, thread) = world.customer("customer", "where is my order 5?").await;
    world.outcome(|o| matches!(o, Outcome::Routed { .. })).await;
    assert_eq!(bot_replies(&mut customer, thread, 1).await, ["you asked: "]);
    logged(&log, "thread: ").await;
    stop(handle, task).await;
    world.stop_admin().await;
}
