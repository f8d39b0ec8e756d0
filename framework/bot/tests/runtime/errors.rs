//! Bot errors: a transient one retries the event, a permanent one drops its effects; either
//! way the inbox moves on and nothing the failed attempt produced is posted.

use std::sync::atomic::AtomicU32;

use switchboard_testkit::hostile::{HostileRelay, Slip};

use super::*;

struct FlakyBot {
    flaky_calls: Arc<AtomicU32>,
    broken_calls: Arc<AtomicU32>,
}

#[async_trait]
impl Bot for FlakyBot {
    async fn on_thread(&self, cx: &mut Ctx, _: &ThreadInfo, _: &[Message]) -> Result<(), BotError> {
        cx.reply("hello").await.map(drop)
    }

    async fn on_message(&self, cx: &mut Ctx, msg: &Message) -> Result<(), BotError> {
        match msg.text() {
            "flaky" => {
                let call = self.flaky_calls.fetch_add(1, Ordering::Relaxed);
                cx.set_state(&call)?;
                if call == 0 {
                    cx.reply("half-done").await?;
                    return Err(BotError::Timeout(Duration::from_millis(5)));
                }
                cx.reply(format!("flaky ok after {call} retry"))
                    .await
                    .map(drop)
            }
            "broken" => {
                self.broken_calls.fetch_add(1, Ordering::Relaxed);
                cx.set_state(&99_u32)?;
                cx.reply("never posted").await?;
                Err(BotError::State("a bug".to_owned()))
            }
            text => {
                let kept: u32 = cx.state()?;
                cx.reply(format!("{text} ok, state {kept}")).await.map(drop)
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_events_post_nothing_and_the_inbox_moves_on() {
    let mut world = World::new("bot-errors").await;
    let flaky_calls = Arc::new(AtomicU32::new(0));
    let store: Arc<dyn BotStore> = world.store.clone();
    let runtime = Runtime::builder()
        .keystore(&world.bot_keystore)
        .secret(secret())
        .store_backend(store)
        .instance("test-bot")
        .bot(FlakyBot {
            flaky_calls: Arc::clone(&flaky_calls),
            broken_calls: Arc::default(),
        })
        .build()
        .await
        .unwrap();
    let (handle, task) = spawn(runtime);
    let (mut customer, thread) = world.customer("customer", "my order").await;
    world.outcome(|o| matches!(o, Outcome::Routed { .. })).await;
    assert_eq!(bot_replies(&mut customer, thread, 1).await, ["hello"]);

    for text in ["flaky", "broken", "after"] {
        customer
            .send(thread, &Content::text(text), None)
            .await
            .unwrap();
    }
    // The transient failure was retried (its half-done reply never left); the permanent one
    // posted nothing and kept no state; the next message was answered.
    assert_eq!(
        bot_replies(&mut customer, thread, 2).await,
        ["flaky ok after 1 retry", "after ok, state 1"]
    );
    assert_eq!(flaky_calls.load(Ordering::Relaxed), 2);
    stop(handle, task).await;
    world.stop_admin().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanently_failed_event_is_journaled_and_not_run_again_when_redelivered() {
    let mut world = World::new("bot-failed-journal").await;
    let hostile = HostileRelay::start(&world.url).await;
    let broken_calls = Arc::new(AtomicU32::new(0));
    let store = Arc::clone(&world.store);
    let runtime = Runtime::builder()
        .keystore(&world.bot_keystore)
        .secret(secret())
        .store_backend(store)
        .relay(hostile.url())
        .instance("test-bot")
        .bot(FlakyBot {
            flaky_calls: Arc::default(),
            broken_calls: Arc::clone(&broken_calls),
        })
        .build()
        .await
        .unwrap();
    let metrics = runtime.metrics();
    let (handle, task) = spawn(runtime);
    let (mut customer, thread) = world.customer("customer", "my order").await;
    world.outcome(|o| matches!(o, Outcome::Routed { .. })).await;
    assert_eq!(bot_replies(&mut customer, thread, 1).await, ["hello"]);
    for text in ["broken", "first"] {
        customer
            .send(thread, &Content::text(text), None)
            .await
            .unwrap();
    }
    assert_eq!(
        bot_replies(&mut customer, thread, 1).await,
        ["first ok, state 0"]
    );
    assert_eq!(broken_calls.load(Ordering::Relaxed), 1);

    // Everything the bot got comes again with its next message: the failed event is known.
    let seen = hostile.delivered(world.bot_device);
    let messages = seen
        .iter()
        .filter(|i| i.kind == switchboard_protocol::api::ItemKind::Message)
        .count();
    assert!(messages >= 2, "{seen:?}");
    for item in seen {
        hostile.inject(world.bot_device, item, Slip::After);
    }
    customer
        .send(thread, &Content::text("second"), None)
        .await
        .unwrap();
    assert_eq!(
        bot_replies(&mut customer, thread, 1).await,
        ["second ok, state 0"]
    );
    assert_eq!(
        broken_calls.load(Ordering::Relaxed),
        1,
        "the failed event ran again"
    );
    let text = metrics.render();
    assert!(
        text.contains(&format!(
            "switchboard_events_total{{kind=\"message\",outcome=\"duplicate\"}} {messages}"
        )) && text.contains("switchboard_events_total{kind=\"message\",outcome=\"bot_error\"} 1"),
        "{text}"
    );
    stop(handle, task).await;
    world.stop_admin().await;
}
