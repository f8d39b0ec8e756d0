//! `switchboard bench echo`: answered messages per second and customer-to-reply latency through
//! one bot process (an SDK echo bot), beside the crypto floor measured in the same run.
//!
//! Everything runs in this process, on loopback: a relay on a SQLite file (group commit as
//! usual) on 127.0.0.1:0, an admin that routes every thread to the bot (it runs while the
//! threads are routed during the warm-up and is stopped before the measurement), the bot (a
//! `switchboard::Runtime` with a SQLite store, on a tokio runtime of its own), and the
//! customers. Bot and customers long-poll their inboxes (with `--stream`, they receive over the
//! relay's inbox streams). Each customer sends its next message only once the reply to the
//! previous one arrived (closed loop); the latency of a message runs from before the customer seals it to
//! the moment the customer has opened the bot's reply.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Args;
use switchboard::layers::Metrics;
use switchboard::prelude::*;
use switchboard_admin::{Admin, Config};
use switchboard_client::{Device, Event, ExpectedKey, NewDevice, NewRole};
use switchboard_relay::bench::BenchReport;
use switchboard_relay::http::Limits;
use switchboard_testkit::floor::{FloorReport, crypto_floor};
use switchboard_testkit::sim::SimCustomer;
use tokio::sync::{oneshot, watch};

use crate::out;

/// The most customers one row may have.
const MAX_CUSTOMERS: usize = 1024;
/// The most messages one row may measure.
const MAX_MESSAGES: usize = 10_000_000;
/// How long a customer waits for one reply before the bench fails.
const REPLY_PATIENCE: Duration = Duration::from_secs(20);
/// Worker threads of the bot's own tokio runtime.
const BOT_WORKERS: usize = 2;
/// The entity the bench creates.
pub(crate) const ENTITY: &str = "bench";

/// `switchboard bench echo`.
#[derive(Debug, Args)]
pub(crate) struct EchoArgs {
    /// Customer counts, one table row each (customers sending at once).
    #[arg(long, value_delimiter = ',', default_value = "1,64")]
    customers: Vec<usize>,
    /// Answered messages to measure per row (spread over the row's customers).
    #[arg(long, default_value_t = 2000)]
    messages: usize,
    /// Warm-up messages per customer before the first row (after the one that routes the
    /// thread to the bot).
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Time cap per row, in seconds: no new message is sent after it.
    #[arg(long, default_value_t = 60)]
    max_secs: u64,
    /// Seal-and-open rounds for the crypto floor.
    #[arg(long, default_value_t = 2000)]
    floor_iterations: u32,
    /// The bot's state store (default: `sqlite://DIR/bot.db`; `memory` shows what the store
    /// costs).
    #[arg(long)]
    bot_store: Option<String>,
    /// Bot and customers receive over the relay's inbox streams (`GET /v1/inbox/stream`)
    /// instead of long-polling `GET /v1/inbox`.
    #[arg(long)]
    stream: bool,
    /// Where to keep the relay's and the bot's databases and the keystores (default: a new
    /// directory under the system's temporary directory, removed afterwards).
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// One row of the table.
#[derive(Debug)]
struct Row {
    customers: usize,
    report: BenchReport,
    /// Mean customer-to-reply latency.
    mean: Duration,
    /// Mean time the customer took to seal and post (until the relay answered 201).
    send: Duration,
    /// Mean time the bot took per message event, from its worker taking the inbox item to the
    /// reply posted (the runtime's `switchboard_handle_seconds{kind="message"}`), if it was
    /// recorded.
    bot: Option<Duration>,
}

pub(crate) async fn run(args: EchoArgs) -> Result<(), String> {
    check(&args)?;
    let (dir, temporary) = bench_dir(args.dir.as_deref(), "echo")?;
    let result = bench(&args, &dir).await;
    if temporary {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

/// The directory of a bench run: `dir` (which must be empty), or a new one under the system's
/// temporary directory (`true`: remove it afterwards).
pub(crate) fn bench_dir(dir: Option<&Path>, bench: &str) -> Result<(PathBuf, bool), String> {
    let (dir, temporary) = match dir {
        Some(dir) => (dir.to_path_buf(), false),
        None => {
            let mut rng = switchboard_protocol::Csprng::from_os().map_err(|e| e.to_string())?;
            let name = format!(
                "switchboard-bench-{bench}-{}-{}",
                std::process::id(),
                DeviceId::random(&mut rng)
            );
            (std::env::temp_dir().join(name), true)
        }
    };
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if std::fs::read_dir(&dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .next()
        .is_some()
    {
        return Err(format!(
            "{} is not empty: the bench starts from nothing (give another --dir)",
            dir.display()
        ));
    }
    Ok((dir, temporary))
}

fn check(args: &EchoArgs) -> Result<(), String> {
    if args.customers.is_empty() {
        return Err("--customers needs at least one count, e.g. --customers 1,64".to_owned());
    }
    if let Some(bad) = args
        .customers
        .iter()
        .find(|&&n| n == 0 || n > MAX_CUSTOMERS)
    {
        return Err(format!(
            "--customers {bad}: each count must be between 1 and {MAX_CUSTOMERS}"
        ));
    }
    if args.messages == 0 || args.messages > MAX_MESSAGES {
        return Err(format!("--messages must be between 1 and {MAX_MESSAGES}"));
    }
    if args.max_secs == 0 {
        return Err("--max-secs must be at least 1".to_owned());
    }
    Ok(())
}

async fn bench(args: &EchoArgs, dir: &Path) -> Result<(), String> {
    let relay_db = dir.join("relay.db");
    let relay = switchboard_relay::server::start_with_limits(
        &format!("sqlite://{}", relay_db.display()),
        "127.0.0.1:0",
        Limits::lifted(),
    )
    .await
    .map_err(|e| e.to_string())?;
    let url = relay.url();
    out(&format!(
        "relay: {url}, SQLite {} (group commit)",
        relay_db.display()
    ));

    let mut admin = start_admin(dir, &url, Some("sqlite://admin.db")).await?;
    let (bot_keystore, bot_key) = add_bot(&mut admin, dir, &url).await?;

    let bot_store = dir.join("bot.db");
    let store_url = args
        .bot_store
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", bot_store.display()));
    let bot = BotProcess::start(
        bot_keystore,
        bot_key,
        url.clone(),
        store_url.clone(),
        args.stream,
    )
    .await?;
    out(&format!(
        "bot: EchoBot, switchboard::Runtime in this process on its own tokio runtime ({BOT_WORKERS} worker threads), store {store_url}; bot and customers {}",
        if args.stream {
            "receive over inbox streams (GET /v1/inbox/stream)"
        } else {
            "long-poll (GET /v1/inbox)"
        }
    ));

    let result = measure(args, &url, admin, &bot.metrics).await;
    bot.stop().await;
    relay.stop().await.map_err(|e| e.to_string())?;
    result
}

/// Creates the bot agent EchoBot (team "echo") at `dir/bot.keystore`, unlocked by
/// `dir/bot.key`, and registers it with `admin`; returns the keystore and key file.
pub(crate) async fn add_bot(
    admin: &mut Admin,
    dir: &Path,
    url: &str,
) -> Result<(PathBuf, PathBuf), String> {
    let bot_keystore = dir.join("bot.keystore");
    let bot_key = dir.join("bot.key");
    KeystoreSecret::create_key_file(&bot_key).map_err(|e| e.to_string())?;
    let bot_device = Device::create(
        &bot_keystore,
        &KeystoreSecret::KeyFile(bot_key.clone()),
        NewDevice::new(
            url,
            NewRole::Agent {
                entity: EntityId::new(ENTITY).map_err(|e| e.to_string())?,
                admin: ExpectedKey::Fingerprint(admin.device().fingerprint()),
            },
        ),
    )
    .await
    .map_err(|e| e.to_string())?;
    admin
        .add_agent(
            "EchoBot",
            AgentKind::Bot,
            bot_device.id(),
            vec!["echo".to_owned()],
            &ExpectedKey::Fingerprint(bot_device.fingerprint()),
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok((bot_keystore, bot_key))
}

/// An admin of the bench entity on `url`, its files in `dir`, in the device store `store` (a
/// URL as in entity.toml) or with its whole state in its keystore; every thread goes to the
/// team "echo".
pub(crate) async fn start_admin(
    dir: &Path,
    url: &str,
    store: Option<&str>,
) -> Result<Admin, String> {
    KeystoreSecret::create_key_file(&dir.join("admin.key")).map_err(|e| e.to_string())?;
    let store = store
        .map(|url| format!("store = \"{url}\""))
        .unwrap_or_default();
    let config = Config::parse(
        &format!(
            r#"
            entity = "{ENTITY}"
            display_name = "Bench"
            relay = "{url}"
            keystore = "admin.keystore"
            key_file = "admin.key"
            audit_log = "audit.jsonl"
            {store}

            [routing]
            fallback_team = "echo"

            [history]
            on_route = true
            "#
        ),
        dir,
    )?;
    crate::admin_cmd::init_admin(config).await
}

/// Warms up, measures each row, prints the table.
async fn measure(
    args: &EchoArgs,
    url: &str,
    admin: Admin,
    metrics: &Metrics,
) -> Result<(), String> {
    let most = args.customers.iter().copied().max().unwrap_or(1);
    let entity = EntityId::new(ENTITY).map_err(|e| e.to_string())?;

    // The admin routes the threads while the customers open them, then stops.
    let (stop_admin, admin_stopped) = watch::channel(false);
    let admin_task = tokio::spawn(run_admin(admin, admin_stopped));
    let warm_started = Instant::now();
    let mut tasks = Vec::with_capacity(most);
    for i in 0..most {
        let url = url.to_owned();
        let entity = entity.clone();
        let warmup = args.warmup;
        let stream = args.stream;
        tasks.push(tokio::spawn(async move {
            let mut customer = Customer::open(&url, &entity, stream).await?;
            customer.route(&format!("hello from {i}")).await?;
            for n in 0..warmup {
                customer.ask(&format!("warm-up {n} from {i}")).await?;
            }
            Ok::<Customer, String>(customer)
        }));
    }
    let mut customers = Vec::with_capacity(most);
    for task in tasks {
        customers.push(
            task.await
                .map_err(|e| format!("a customer failed: {e}"))??,
        );
    }
    let _ = stop_admin.send(true);
    let routed = admin_task
        .await
        .map_err(|e| format!("the admin failed: {e}"))??;
    out(&format!(
        "warm-up: {most} customers (switchboard_testkit::sim::SimCustomer: keys and thread state in memory, no keystore, no fsync), {routed} threads routed by the admin, {} messages answered in {:.2} s; the admin is stopped for the measurement",
        most * (args.warmup + 1),
        warm_started.elapsed().as_secs_f64()
    ));

    let floor = crypto_floor(args.floor_iterations).map_err(|e| e.to_string())?;
    out(&floor.to_string());

    let cap = Duration::from_secs(args.max_secs);
    let mut rows = Vec::with_capacity(args.customers.len());
    let mut customers: Vec<Option<Customer>> = customers.into_iter().map(Some).collect();
    let handled = metrics.histogram("switchboard_handle_seconds", &[("kind", "message")]);
    for &count in &args.customers {
        let (count_before, sum_before) = (handled.count(), handled.sum());
        let (mut row, back) = row(&mut customers, count, args.messages, cap).await?;
        let events = handled.count().saturating_sub(count_before);
        if events > 0 {
            let mean = (handled.sum() - sum_before).max(0.0) / events as f64;
            row.bot = Some(Duration::from_secs_f64(mean));
        }
        rows.push(row);
        for (slot, customer) in customers.iter_mut().zip(back) {
            *slot = Some(customer);
        }
    }
    print_table(&rows, &floor);
    print_breakdown(&rows);
    Ok(())
}

/// Runs the admin until told to stop; returns how many threads it routed.
async fn run_admin(mut admin: Admin, mut stop: watch::Receiver<bool>) -> Result<usize, String> {
    let mut routed = 0;
    loop {
        tokio::select! {
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    admin.flush_acks().await;
                    return Ok(routed);
                }
            }
            outcomes = admin.step(Duration::from_millis(200)) => {
                routed += outcomes
                    .map_err(|e| e.to_string())?
                    .iter()
                    .filter(|o| matches!(o, switchboard_admin::Outcome::Routed { .. }))
                    .count();
            }
        }
    }
}

/// One row: the first `count` customers, closed loop, `messages` in all or until `cap`.
async fn row(
    customers: &mut [Option<Customer>],
    count: usize,
    messages: usize,
    cap: Duration,
) -> Result<(Row, Vec<Customer>), String> {
    let started = Instant::now();
    let deadline = started + cap;
    let mut tasks = Vec::with_capacity(count);
    for (i, slot) in customers.iter_mut().take(count).enumerate() {
        let Some(mut customer) = slot.take() else {
            return Err("a customer is missing".to_owned());
        };
        let share = messages / count + usize::from(i < messages % count);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(share);
            let mut send = Duration::ZERO;
            for n in 0..share {
                if Instant::now() >= deadline {
                    break;
                }
                let asked = customer.ask(&format!("message {n} of {count}/{i}")).await?;
                latencies.push(asked.latency);
                send += asked.send;
            }
            Ok::<_, String>((latencies, send, customer))
        }));
    }
    let mut latencies = Vec::with_capacity(messages);
    let mut send = Duration::ZERO;
    let mut back = Vec::with_capacity(count);
    for task in tasks {
        let (mine, sending, customer) = task
            .await
            .map_err(|e| format!("a customer failed: {e}"))??;
        latencies.extend(mine);
        send += sending;
        back.push(customer);
    }
    let answered = u32::try_from(latencies.len().max(1)).unwrap_or(u32::MAX);
    let mean = latencies.iter().sum::<Duration>() / answered;
    Ok((
        Row {
            customers: count,
            report: BenchReport::from_latencies(latencies, started.elapsed()),
            mean,
            send: send / answered,
            bot: None,
        },
        back,
    ))
}

fn print_table(rows: &[Row], floor: &FloorReport) {
    out("");
    out(&format!(
        "{:>9} {:>9} {:>11} {:>8} {:>8} {:>12} {:>10}",
        "customers", "answered", "answered/s", "p50_ms", "p99_ms", "floor_us/msg", "x_floor"
    ));
    let floor_us = floor.answered_us;
    for row in rows {
        let per_sec = row.report.posts_per_sec();
        // What one answered message cost in wall time, as a multiple of the crypto floor.
        let ratio = if per_sec > 0.0 {
            floor.ratio(1e6 / per_sec)
        } else {
            0.0
        };
        out(&format!(
            "{:>9} {:>9} {:>11.0} {:>8.2} {:>8.2} {:>12.1} {:>10.1}",
            row.customers,
            row.report.posts,
            per_sec,
            row.report.p50.as_secs_f64() * 1e3,
            row.report.p99.as_secs_f64() * 1e3,
            floor_us,
            ratio
        ));
    }
}

/// Where the time of an answered message goes, on average.
fn print_breakdown(rows: &[Row]) {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    out("");
    out(
        "where the time goes, mean per answered message in ms: the customer seals and posts (until the relay's 201); the bot handles the event (open, bot, store commit, post of the reply); the rest is the relay waking the bot's and the customer's long polls (or sending the item down their inbox streams, with --stream), the bot's fetch and the customer opening the reply",
    );
    out(&format!(
        "{:>9} {:>8} {:>14} {:>11} {:>8}",
        "customers", "mean_ms", "customer_send", "bot_handle", "rest"
    ));
    for row in rows {
        let (bot, rest) = match row.bot {
            Some(bot) => (
                format!("{:.2}", ms(bot)),
                format!(
                    "{:.2}",
                    ms(row.mean.saturating_sub(row.send).saturating_sub(bot))
                ),
            ),
            None => ("n/a".to_owned(), "n/a".to_owned()),
        };
        out(&format!(
            "{:>9} {:>8.2} {:>14.2} {:>11} {:>8}",
            row.customers,
            ms(row.mean),
            ms(row.send),
            bot,
            rest
        ));
    }
}

/// The echo bot the bench measures.
struct EchoBot;

#[async_trait]
impl Bot for EchoBot {
    async fn on_thread(
        &self,
        cx: &mut Ctx,
        _: &ThreadInfo,
        history: &[Message],
    ) -> Result<(), BotError> {
        if let Some(first) = history.iter().rev().find(|m| m.is_from_customer()) {
            cx.reply(Content::text(first.text())).await?;
        }
        Ok(())
    }

    async fn on_message(&self, cx: &mut Ctx, msg: &Message) -> Result<(), BotError> {
        if msg.is_from_customer() && !msg.text().is_empty() {
            cx.reply(Content::text(msg.text())).await?;
        }
        Ok(())
    }
}

/// The bot, on a tokio runtime of its own in a thread of its own.
struct BotProcess {
    /// The bot runtime's metrics registry.
    metrics: Metrics,
    stop: oneshot::Sender<()>,
    done: oneshot::Receiver<Result<(), String>>,
}

impl BotProcess {
    async fn start(
        keystore: PathBuf,
        key_file: PathBuf,
        relay: String,
        store: String,
        stream: bool,
    ) -> Result<Self, String> {
        let (stop, stopped) = oneshot::channel::<()>();
        let (ready_tx, ready) = oneshot::channel::<Result<Metrics, String>>();
        let (done_tx, done) = oneshot::channel();
        std::thread::Builder::new()
            .name("bench-bot".to_owned())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(BOT_WORKERS)
                    .thread_name("bench-bot-worker")
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("the bot's runtime: {e}")));
                        return;
                    }
                };
                let result = runtime.block_on(async move {
                    let built = Runtime::builder()
                        .keystore(keystore)
                        .key_file(key_file)
                        .relay(relay)
                        .store(store)
                        .instance("bench")
                        .inbox_stream(stream)
                        .bot(EchoBot)
                        .build()
                        .await;
                    let bot = match built {
                        Ok(bot) => {
                            let _ = ready_tx.send(Ok(bot.metrics()));
                            bot
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(format!("the bot: {e}")));
                            return Ok(());
                        }
                    };
                    bot.run_until(async {
                        let _ = stopped.await;
                    })
                    .await
                    .map_err(|e| format!("the bot: {e}"))
                });
                let _ = done_tx.send(result);
            })
            .map_err(|e| format!("the bot's thread: {e}"))?;
        let metrics = ready
            .await
            .map_err(|_| "the bot's thread ended early".to_owned())??;
        Ok(Self {
            metrics,
            stop,
            done,
        })
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        match tokio::time::timeout(Duration::from_secs(30), self.done).await {
            Ok(Ok(Err(e))) => tracing::warn!("{e}"),
            Ok(Ok(Ok(()))) => {}
            Ok(Err(_)) | Err(_) => tracing::warn!("the bot did not stop in time"),
        }
    }
}

/// One answered message, as the customer timed it.
#[derive(Clone, Copy, Debug)]
struct Asked {
    /// From before sealing the message to having opened the reply.
    latency: Duration,
    /// From before sealing the message to the relay's answer to its post.
    send: Duration,
}

/// A customer in a thread of its own with the bench entity (a [`SimCustomer`]: the protocol of
/// a customer device with its state in memory, so that the bench measures the bot and the
/// relay, not the customers' keystore writes).
struct Customer {
    sim: SimCustomer,
    thread: ThreadId,
    /// Receive over the inbox stream (else long-poll).
    stream: bool,
}

impl Customer {
    async fn open(url: &str, entity: &EntityId, stream: bool) -> Result<Self, String> {
        let mut sim = SimCustomer::register(url)
            .await
            .map_err(|e| e.to_string())?;
        let thread = sim.open_thread(entity).await.map_err(|e| e.to_string())?;
        Ok(Self {
            sim,
            thread,
            stream,
        })
    }

    /// The events that arrive within `wait`.
    async fn receive(&mut self, wait: Duration) -> Result<Vec<Event>, String> {
        let events = if self.stream {
            self.sim.receive_streaming(wait).await
        } else {
            self.sim.receive(wait).await
        };
        events.map_err(|e| e.to_string())
    }

    /// Writes the first message (the admin routes the thread on it) and waits until the bot
    /// joined the thread (a new epoch) or answered.
    async fn route(&mut self, text: &str) -> Result<(), String> {
        let started = Instant::now();
        self.sim
            .send(self.thread, text)
            .await
            .map_err(|e| e.to_string())?;
        let deadline = started + REPLY_PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "the thread was not routed to the bot within {REPLY_PATIENCE:?}"
                ));
            }
            let events = self.receive(left.min(Duration::from_secs(1))).await?;
            let routed = events.iter().any(|event| {
                matches!(event, Event::RosterChanged { thread, .. } if *thread == self.thread)
                    || is_reply(event, text)
            });
            if routed {
                return Ok(());
            }
        }
    }

    /// Sends `text` and waits for the bot's echo.
    async fn ask(&mut self, text: &str) -> Result<Asked, String> {
        let started = Instant::now();
        self.sim
            .send(self.thread, text)
            .await
            .map_err(|e| e.to_string())?;
        let send = started.elapsed();
        let deadline = started + REPLY_PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("no reply to {text:?} within {REPLY_PATIENCE:?}"));
            }
            let events = self.receive(left.min(Duration::from_secs(1))).await?;
            if events.iter().any(|event| is_reply(event, text)) {
                return Ok(Asked {
                    latency: started.elapsed(),
                    send,
                });
            }
        }
    }
}

/// Whether `event` is the bot's echo of `text`.
fn is_reply(event: &Event, text: &str) -> bool {
    matches!(
        event,
        Event::Message { message, .. }
            if matches!(message.sender_info, Sender::Agent { .. })
                && message.content.as_text() == Some(text)
    )
}
