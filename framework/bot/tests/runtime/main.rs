//! The runtime end to end on loopback: an in-process relay, the admin, a customer device and
//! a bot run by the runtime.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs,
    unreachable_pub
)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchboard::prelude::*;
use switchboard::store::BotStore;
use switchboard::store::{self as bot_store, StoreKey};
use switchboard_admin::{Admin, Config, Outcome};
use switchboard_client::{Device, Event, ExpectedKey, NewDevice, NewRole};
use switchboard_testkit::pg::PgSchema;
use switchboard_testkit::{new_agent, scratch_dir};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

mod e2e;
mod errors;
mod members;
mod order;
mod restart;
mod send_sync;
mod shutdown;
mod stuck;

fn config(dir: &Path, relay: &str, history_on_route: bool) -> Config {
    KeystoreSecret::create_key_file(&dir.join("admin.key")).ok();
    let text = format!(
        r#"
        entity = "acme"
        display_name = "Acme"
        relay = "{relay}"
        keystore = "admin.keystore"
        key_file = "admin.key"
        audit_log = "audit.jsonl"

        [routing]
        bot_first = true
        fallback_team = "support"
        handoff_team = "billing"

        [[rules]]
        keywords = ["order"]
        team = "orders"

        [history]
        on_route = {history_on_route}
        on_handoff = true
        "#
    );
    std::fs::write(dir.join("entity.toml"), text).unwrap();
    Config::load(&dir.join("entity.toml")).unwrap()
}

fn secret() -> KeystoreSecret {
    KeystoreSecret::passphrase("agent passphrase")
}

/// What the test bot was told, in order.
type Log = Arc<Mutex<Vec<String>>>;

/// The bot under test: answers the routing question, echoes with a per-thread counter kept
/// in its typed state, hands off when asked for a human.
#[derive(Clone)]
struct TestBot {
    log: Log,
}

#[derive(serde::Serialize, serde::Deserialize, Default)]
struct Counter {
    seen: u32,
}

#[async_trait]
impl Bot for TestBot {
    async fn on_thread(
        &self,
        cx: &mut Ctx,
        _thread: &ThreadInfo,
        history: &[Message],
    ) -> Result<(), BotError> {
        let question = history
            .iter()
            .find(|m| m.is_from_customer())
            .map(|m| m.text().to_owned())
            .unwrap_or_default();
        self.log.lock().unwrap().push(format!("thread: {question}"));
        cx.reply(format!("you asked: {question}")).await?;
        Ok(())
    }

    async fn on_message(&self, cx: &mut Ctx, msg: &Message) -> Result<(), BotError> {
        self.log
            .lock()
            .unwrap()
            .push(format!("message: {}", msg.text()));
        if msg.text().contains("human") {
            return cx
                .handoff(Handoff::to_team("billing").note("wants a human"))
                .await;
        }
        let mut counter: Counter = cx.state()?;
        counter.seen += 1;
        cx.set_state(&counter)?;
        cx.reply(format!("#{} {}", counter.seen, msg.text()))
            .await?;
        Ok(())
    }

    async fn on_floor_lost(&self, _cx: &mut Ctx) -> Result<(), BotError> {
        self.log.lock().unwrap().push("floor lost".to_owned());
        Ok(())
    }

    async fn on_receipt(&self, _cx: &mut Ctx, receipt: &Receipt) -> Result<(), BotError> {
        self.log.lock().unwrap().push(format!(
            "receipt: {:?} {}",
            receipt.kind,
            receipt.messages.len()
        ));
        Ok(())
    }

    async fn on_removed(&self, _thread: ThreadId) -> Result<(), BotError> {
        self.log.lock().unwrap().push("removed".to_owned());
        Ok(())
    }
}

/// The whole system: relay, admin (stepped in the background), the bot's keystore.
struct World {
    _relay: switchboard_relay::server::Running,
    url: String,
    dir: PathBuf,
    admin: Option<(JoinHandle<Admin>, Arc<AtomicBool>)>,
    outcomes: mpsc::UnboundedReceiver<Outcome>,
    outcomes_tx: mpsc::UnboundedSender<Outcome>,
    bot_keystore: PathBuf,
    bot_device: DeviceId,
    store: Arc<dyn BotStore>,
    /// How the store was opened (None: in memory), and the bot's device seed, to open it again.
    store_url: Option<String>,
    seed: [u8; 32],
    /// PostgreSQL: the server URL and the test's schema, dropped at the end.
    pg_schema: Option<PgSchema>,
}

/// Which store the bot's runtime uses.
#[derive(Clone, Copy, Debug)]
enum StoreKind {
    Memory,
    /// A SQLite file in the test's temp dir.
    Sqlite,
    /// A schema of its own in `SWITCHBOARD_TEST_PG`'s database.
    Postgres,
}

impl World {
    /// A relay, the admin of acme, OrderBot (a bot of the "orders" team) and Dana (a human of
    /// "billing").
    async fn new(name: &str) -> Self {
        Self::with_history(name, true).await
    }

    /// As [`World::new`]; `history_on_route` is the entity's `[history] on_route`.
    async fn with_history(name: &str, history_on_route: bool) -> Self {
        Self::build(name, history_on_route, StoreKind::Memory)
            .await
            .expect("a memory store")
    }

    /// As [`World::new`], over the store `kind`; `None` (the test skipped) for PostgreSQL
    /// without `SWITCHBOARD_TEST_PG`.
    async fn with_store(name: &str, kind: StoreKind) -> Option<Self> {
        if matches!(kind, StoreKind::Postgres) && std::env::var("SWITCHBOARD_TEST_PG").is_err() {
            // Written to the real stderr (not captured by the harness) so that skips are visible.
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: PostgreSQL runtime test {name} (set SWITCHBOARD_TEST_PG=postgres://... to run it)"
            );
            return None;
        }
        Self::build(name, true, kind).await
    }

    async fn build(name: &str, history_on_route: bool, kind: StoreKind) -> Option<Self> {
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_test_writer()
            .try_init();
        let relay = switchboard_relay::server::start("sqlite::memory:", "127.0.0.1:0")
            .await
            .unwrap();
        let url = relay.url();
        let dir = scratch_dir(name);
        let mut admin = Admin::init(config(&dir, &url, history_on_route))
            .await
            .unwrap();
        let expected = ExpectedKey::Fingerprint(admin.device().fingerprint());
        let bot_keystore = dir.join("orderbot.keystore");
        let bot = new_agent(&bot_keystore, &secret(), &url, "acme", expected.clone()).await;
        admin
            .add_agent(
                "OrderBot",
                AgentKind::Bot,
                bot.id(),
                vec!["orders".into()],
                &ExpectedKey::Fingerprint(bot.fingerprint()),
            )
            .await
            .unwrap();
        let dana = new_agent(
            &dir.join("dana.keystore"),
            &secret(),
            &url,
            "acme",
            expected,
        )
        .await;
        admin
            .add_agent(
                "Dana",
                AgentKind::Human,
                dana.id(),
                vec!["billing".into()],
                &ExpectedKey::Fingerprint(dana.fingerprint()),
            )
            .await
            .unwrap();
        let bot_device = bot.id();
        let seed = *bot.keys().seed();
        drop(bot);
        let mut pg_schema = None;
        let store_url = match kind {
            StoreKind::Memory => None,
            StoreKind::Sqlite => Some(format!("sqlite://{}", dir.join("bot.store.db").display())),
            StoreKind::Postgres => {
                let schema = PgSchema::create("bot runtime test", "botrt_test").await?;
                let url = schema.url();
                pg_schema = Some(schema);
                Some(url)
            }
        };
        let store = match &store_url {
            Some(url) => bot_store::open(url, bot_device, StoreKey::derive(&seed))
                .await
                .unwrap(),
            None => Arc::new(bot_store::memory::MemoryStore::new()),
        };
        let (tx, outcomes) = mpsc::unbounded_channel();
        Some(Self {
            _relay: relay,
            url,
            dir,
            admin: Some(step_admin(admin, tx.clone())),
            outcomes_tx: tx,
            outcomes,
            bot_keystore,
            bot_device,
            store,
            store_url,
            seed,
            pg_schema,
        })
    }

    /// Opens the store again, as a new process would (a memory store is kept as it is).
    async fn reopen_store(&mut self) {
        if let Some(url) = &self.store_url {
            self.store = bot_store::open(url, self.bot_device, StoreKey::derive(&self.seed))
                .await
                .unwrap();
        }
    }

    /// The bot's runtime (not running yet) over this world's store.
    async fn runtime(&self, bot: impl Bot) -> Runtime {
        self.runtime_with(bot, |b| b).await
    }

    async fn runtime_with(
        &self,
        bot: impl Bot,
        setup: impl FnOnce(RuntimeBuilder) -> RuntimeBuilder,
    ) -> Runtime {
        let store = Arc::clone(&self.store);
        setup(
            Runtime::builder()
                .keystore(&self.bot_keystore)
                .secret(secret())
                .store_backend(store)
                .instance("test-bot")
                .shutdown_timeout(Duration::from_secs(10))
                .bot(bot),
        )
        .build()
        .await
        .unwrap()
    }

    /// A new customer who opens a thread with `first` as its first message.
    async fn customer(&self, name: &str, first: &str) -> (Device, ThreadId) {
        let mut customer = Device::create(
            &self.dir.join(format!("{name}.keystore")),
            &secret(),
            NewDevice::new(&self.url, NewRole::Customer),
        )
        .await
        .unwrap();
        let thread = customer
            .open_thread(&EntityId::new("acme").unwrap())
            .await
            .unwrap();
        customer
            .send(thread, &Content::text(first), None)
            .await
            .unwrap();
        (customer, thread)
    }

    /// Waits (bounded) for an admin outcome that matches.
    async fn outcome(&mut self, want: impl Fn(&Outcome) -> bool) -> Outcome {
        for _ in 0..60 {
            match tokio::time::timeout(Duration::from_secs(1), self.outcomes.recv()).await {
                Ok(Some(outcome)) if want(&outcome) => return outcome,
                _ => {}
            }
        }
        panic!("the admin never got there");
    }

    /// Stops the admin's stepping for `act`, then steps it again.
    async fn with_admin<T>(&mut self, act: impl AsyncFnOnce(&mut Admin) -> T) -> T {
        let (task, stop) = self.admin.take().expect("the admin runs");
        stop.store(true, Ordering::Relaxed);
        let mut admin = task.await.unwrap();
        let out = act(&mut admin).await;
        self.admin = Some(step_admin(admin, self.outcomes_tx.clone()));
        out
    }

    async fn stop_admin(&mut self) {
        if let Some((task, stop)) = self.admin.take() {
            stop.store(true, Ordering::Relaxed);
            task.await.unwrap();
        }
        drop(self.pg_schema.take());
    }
}

/// Steps the admin in the background until the flag is set; the task gives the admin back.
fn step_admin(
    mut admin: Admin,
    tx: mpsc::UnboundedSender<Outcome>,
) -> (JoinHandle<Admin>, Arc<AtomicBool>) {
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = Arc::clone(&stop);
    let task = tokio::spawn(async move {
        while !stopping.load(Ordering::Relaxed) {
            for outcome in admin.step(Duration::from_secs(1)).await.unwrap() {
                let _ = tx.send(outcome);
            }
        }
        admin
    });
    (task, stop)
}

/// Runs `runtime` in the background; the handle stops it.
fn spawn(runtime: Runtime) -> (RuntimeHandle, JoinHandle<Result<(), BotError>>) {
    let handle = runtime.handle();
    let task = tokio::spawn(runtime.run_until(std::future::pending()));
    (handle, task)
}

async fn stop(handle: RuntimeHandle, task: JoinHandle<Result<(), BotError>>) {
    handle.shutdown();
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("the runtime shuts down")
        .unwrap()
        .unwrap();
}

/// Whether the store's outbox empties within 10 s (posted entries are deleted a moment after
/// their post, together with the others posted meanwhile).
async fn outbox_drains(store: &dyn BotStore) -> bool {
    for _ in 0..100 {
        if store.outbox(10).await.unwrap().is_empty() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// What the agent named `name` said in `thread`, from the customer's events.
fn said(events: &[Event], thread: ThreadId, name: &str) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Message {
                thread: t, message, ..
            } if *t == thread => match (&message.sender_info, &message.content) {
                (Sender::Agent { display_name, .. }, Content::Text { text })
                    if display_name == name =>
                {
                    Some(text.clone())
                }
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// Receives on `customer` until OrderBot said `n` things in `thread` (bounded), then a little
/// longer to catch anything said twice; returns all it said there.
async fn bot_replies(customer: &mut Device, thread: ThreadId, n: usize) -> Vec<String> {
    let mut events = Vec::new();
    for _ in 0..60 {
        events.extend(customer.receive(Duration::from_secs(1)).await.unwrap());
        if said(&events, thread, "OrderBot").len() >= n {
            break;
        }
    }
    // Anything repeated would follow at once: one more round.
    events.extend(customer.receive(Duration::from_secs(1)).await.unwrap());
    said(&events, thread, "OrderBot")
}
