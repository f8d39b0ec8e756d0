//! Graceful shutdown: the event in flight finishes and its reply is posted; the bot's
//! cancellation token tells it to hurry. Typing claims its generation durably.

use super::*;

/// Waits for its shutdown token on "slow", answers "typing" with a typing signal then a
/// reply.
struct SlowBot {
    started: Arc<tokio::sync::Notify>,
}

#[async_trait]
impl Bot for SlowBot {
    async fn on_thread(&self, cx: &mut Ctx, _: &ThreadInfo, _: &[Message]) -> Result<(), BotError> {
        cx.reply("hello").await.map(drop)
    }

    async fn on_message(&self, cx: &mut Ctx, msg: &Message) -> Result<(), BotError> {
        match msg.text() {
            "slow" => {
                self.started.notify_one();
                let token = cx.shutdown().clone();
                let how = tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(60)) => "slept",
                    () = token.cancelled() => "told to stop",
                };
                cx.reply(format!("slow: {how}")).await.map(drop)
            }
            text => {
                cx.typing(true).await?;
                cx.reply(format!("typed: {text}")).await.map(drop)
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_the_event_in_flight_and_posts_its_reply() {
    let mut world = World::new("bot-shutdown").await;
    let started = Arc::new(tokio::sync::Notify::new());
    let store: Arc<dyn BotStore> = world.store.clone();
    let runtime = Runtime::builder()
        .keystore(&world.bot_keystore)
        .secret(secret())
        .store_backend(store)
        .instance("test-bot")
        .bot(SlowBot {
            started: Arc::clone(&started),
        })
        .build()
        .await
        .unwrap();
    let (handle, task) = spawn(runtime);
    let (mut customer, thread) = world.customer("customer", "my order").await;
    world.outcome(|o| matches!(o, Outcome::Routed { .. })).await;
    assert_eq!(bot_replies(&mut customer, thread, 1).await, ["hello"]);

    // A typing signal goes out at once, then the reply.
    customer
        .send(thread, &Content::text("x"), None)
        .await
        .unwrap();
    let mut events = Vec::new();
    for _ in 0..30 {
        events.extend(customer.receive(Duration::from_secs(1)).await.unwrap());
        if said(&events, thread, "OrderBot").len() == 1 {
            break;
        }
    }
    let typing_at = events.iter().position(|e| {
        matches!(e, Event::Message { message, .. } if message.content == Content::Typing { active: true })
    });
    let reply_at = events.iter().position(|e| {
        matches!(e, Event::Message { message, .. } if message.content == Content::text("typed: x"))
    });
    assert!(typing_at.is_some() && reply_at.is_some(), "{events:#?}");
    assert!(typing_at < reply_at);

    customer
        .send(thread, &Content::text("slow"), None)
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(30), started.notified())
        .await
        .expect("the bot got the message");
    stop(handle, task).await;
    // The reply was committed and posted before the runtime stopped.
    assert!(world.store.outbox(10).await.unwrap().is_empty());
    assert_eq!(
        bot_replies(&mut customer, thread, 1).await,
        ["slow: told to stop"]
    );
    world.stop_admin().await;
}
