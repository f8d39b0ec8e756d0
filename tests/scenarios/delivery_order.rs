//! Order within a thread when a post fails: the relay refuses the post of one reply (the outbox
//! keeps it for the sweeper) while the customer's next messages keep coming. The replies must
//! still reach the customer in the order of the messages they answer.
//!
//! The runtime runs in process here, with a delivery layer that fails the first two posts of
//! the second reply with a transient error (a relay that timed out), while the customer's next
//! messages are answered at once.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use switchboard::prelude::*;
use switchboard::{BotError, Delivery};
use tokio::time::{Instant, timeout};
use tower::{Layer, Service};

use crate::support::{Scene, echo};

/// Posts of the held-back reply that fail.
const REFUSALS: usize = 2;

struct Echo;

#[async_trait]
impl Bot for Echo {
    async fn on_thread(
        &self,
        cx: &mut Ctx,
        _: &ThreadInfo,
        history: &[Message],
    ) -> Result<(), BotError> {
        for msg in history.iter().filter(|m| m.is_from_customer()) {
            cx.reply(Content::text(echo(msg.text()))).await?;
        }
        Ok(())
    }

    async fn on_message(&self, cx: &mut Ctx, msg: &Message) -> Result<(), BotError> {
        if msg.is_from_customer() {
            cx.reply(Content::text(echo(msg.text()))).await?;
        }
        Ok(())
    }
}

/// Which post is held back, and how often it was refused.
#[derive(Debug, Default)]
struct Hold {
    /// Distinct messages seen, in order of their first post attempt.
    seen: Vec<String>,
    /// The message held back (the `nth` distinct one).
    held: Option<String>,
    refusals: usize,
    /// Whether it was posted in the end.
    posted: bool,
}

/// Fails the first [`REFUSALS`] posts of the `nth` distinct message (1-based) with a
/// transient error.
#[derive(Clone, Debug)]
struct HoldBackLayer {
    nth: usize,
    hold: Arc<Mutex<Hold>>,
}

#[derive(Clone, Debug)]
struct HoldBack<S> {
    inner: S,
    nth: usize,
    hold: Arc<Mutex<Hold>>,
}

impl<S> Layer<S> for HoldBackLayer {
    type Service = HoldBack<S>;

    fn layer(&self, inner: S) -> Self::Service {
        HoldBack {
            inner,
            nth: self.nth,
            hold: Arc::clone(&self.hold),
        }
    }
}

impl<S> Service<Delivery> for HoldBack<S>
where
    S: Service<Delivery, Response = (), Error = BotError> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = ();
    type Error = BotError;
    type Future = Pin<Box<dyn Future<Output = Result<(), BotError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BotError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Delivery) -> Self::Future {
        let id = request.message.header.message_id().to_string();
        let refuse = {
            let mut hold = self.hold.lock().unwrap();
            if !hold.seen.contains(&id) {
                hold.seen.push(id.clone());
                if hold.seen.len() == self.nth {
                    hold.held = Some(id.clone());
                }
            }
            let refuse = hold.held.as_ref() == Some(&id) && hold.refusals < REFUSALS;
            if refuse {
                hold.refusals += 1;
            }
            refuse
        };
        if refuse {
            return Box::pin(async { Err(BotError::Timeout(Duration::from_secs(10))) });
        }
        let hold = Arc::clone(&self.hold);
        let mut inner = self.inner.clone();
        std::mem::swap(&mut inner, &mut self.inner);
        Box::pin(async move {
            inner.call(request).await?;
            let mut hold = hold.lock().unwrap();
            if hold.held.as_ref() == Some(&id) {
                hold.posted = true;
            }
            Ok(())
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_whose_post_failed_is_not_overtaken_by_the_next() {
    const MESSAGES: usize = 4;
    let scene = Scene::new("delivery-order").await;
    let hold = Arc::new(Mutex::new(Hold::default()));
    let runtime = Runtime::builder()
        .keystore(&scene.keystore)
        .key_file(&scene.key_file)
        .relay(scene.relay.url())
        .store(format!(
            "sqlite://{}",
            scene.dir.join("bot-state.db").display()
        ))
        .instance("order")
        .delivery(HoldBackLayer {
            nth: 2,
            hold: Arc::clone(&hold),
        })
        .bot(Echo)
        .build()
        .await
        .unwrap();
    let handle = runtime.handle();
    let running = tokio::spawn(runtime.run_until(std::future::pending()));

    let mut customer = scene.customer("customer").await;
    let replies = std::sync::atomic::AtomicUsize::new(0);
    let first = "customer says 0".to_owned();
    customer.send(&first).await;
    assert!(
        customer
            .wait_for_reply(&first, Instant::now() + Duration::from_secs(20), &replies)
            .await,
        "the first message is answered"
    );
    // The reply to the next one is held back; the customer keeps writing.
    for i in 1..MESSAGES {
        customer.send(&format!("customer says {i}")).await;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while !customer.sent.iter().all(|s| customer.has_reply_to(s)) && Instant::now() < deadline {
        customer.pump(Duration::from_millis(300)).await;
    }
    let late = Instant::now() + Duration::from_secs(1);
    while Instant::now() < late {
        customer.pump(Duration::from_millis(300)).await;
    }
    handle.shutdown();
    let _ = timeout(Duration::from_secs(20), running).await;
    drop(scene.admin.stop().await);

    {
        let hold = hold.lock().unwrap();
        assert_eq!(hold.refusals, REFUSALS, "the second reply's post failed");
        assert!(hold.posted, "and went out in the end");
    }
    let got: Vec<&str> = customer.received.iter().map(|r| r.text.as_str()).collect();
    let want: Vec<String> = customer.sent.iter().map(|s| echo(s)).collect();
    let distinct: HashSet<&str> = got.iter().copied().collect();
    assert_eq!(distinct.len(), got.len(), "no duplicate: {got:?}");
    assert_eq!(got, want, "replies in the order of the messages");
}
