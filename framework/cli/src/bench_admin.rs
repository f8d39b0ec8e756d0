//! `switchboard bench admin`: what one customer message costs the entity's admin device as its
//! threads grow, with the admin's whole state in its keystore and with its threads in a SQLite
//! device store (`switchboard::store::SqlDeviceStore`), measured in the same run.
//!
//! For each thread count and each of the two modes, in fresh directories: a relay on a SQLite
//! file on 127.0.0.1:0, an admin, a bot agent the admin routes every thread to (registered and
//! never running: the bench measures the admin), and as many simulated customers
//! (`switchboard_testkit::sim`), each opening a thread and sending the message that routes it.
//! Then the customers send one message at a time, round robin over the threads, and the admin
//! takes each one with [`Admin::step`]: fetched, verified, decrypted, its state durable (the
//! keystore rewritten and fsynced, or the thread's row written to the store), acted on. The
//! time of a message runs from the first step after the customer's post to the step that
//! returned it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Args;
use switchboard_admin::{Admin, Outcome};
use switchboard_client::Event;
use switchboard_protocol::{EntityId, ThreadId};
use switchboard_relay::bench::BenchReport;
use switchboard_relay::http::Limits;
use switchboard_testkit::sim::SimCustomer;

use crate::bench_echo::{ENTITY, add_bot, bench_dir, start_admin};
use crate::out;

/// The most threads one row may have.
const MAX_THREADS: usize = 10_000;
/// The most messages one row may measure.
const MAX_MESSAGES: usize = 1_000_000;
/// Customers opening their threads at once.
const OPENING_AT_ONCE: usize = 32;
/// How long the admin may take to return one message before the bench fails.
const STEP_PATIENCE: Duration = Duration::from_secs(30);

/// `switchboard bench admin`.
#[derive(Debug, Args)]
pub(crate) struct AdminBenchArgs {
    /// Thread counts of the entity, two table rows each (keystore, store).
    #[arg(long, value_delimiter = ',', default_value = "10,1000")]
    threads: Vec<usize>,
    /// Messages to measure per row, round robin over the threads.
    #[arg(long, default_value_t = 200)]
    messages: usize,
    /// Time cap per row, in seconds: no new message is sent after it.
    #[arg(long, default_value_t = 30)]
    max_secs: u64,
    /// Where to keep the relays' databases and the keystores (default: a new directory under
    /// the system's temporary directory, removed afterwards).
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// Where the admin keeps its threads.
#[derive(Clone, Copy, Debug)]
enum Mode {
    /// Everything in its keystore, rewritten at every event.
    Keystore,
    /// A row per thread in a SQLite device store.
    Store,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Self::Keystore => "keystore",
            Self::Store => "store",
        }
    }
}

/// One row of the table.
#[derive(Debug)]
struct Row {
    threads: usize,
    mode: Mode,
    report: BenchReport,
    /// Bytes of the keystore file after the row.
    keystore_bytes: u64,
    /// Bytes of the device store's files after the row (0 without).
    store_bytes: u64,
}

pub(crate) async fn run(args: AdminBenchArgs) -> Result<(), String> {
    check(&args)?;
    let (dir, temporary) = bench_dir(args.dir.as_deref(), "admin")?;
    let result = bench(&args, &dir).await;
    if temporary {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

fn check(args: &AdminBenchArgs) -> Result<(), String> {
    if args.threads.is_empty() {
        return Err("--threads needs at least one count, e.g. --threads 10,1000".to_owned());
    }
    if let Some(bad) = args.threads.iter().find(|&&n| n == 0 || n > MAX_THREADS) {
        return Err(format!(
            "--threads {bad}: each count must be between 1 and {MAX_THREADS}"
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

async fn bench(args: &AdminBenchArgs, dir: &Path) -> Result<(), String> {
    out(
        "each row: a relay (SQLite, 127.0.0.1:0), the admin, a bot agent it routes every thread \
         to (not running), one simulated customer per thread; then one message at a time, \
         round robin over the threads, each taken by the admin's step (fetch, open, state \
         durable, act)",
    );
    let mut rows = Vec::with_capacity(args.threads.len() * 2);
    for &threads in &args.threads {
        for mode in [Mode::Keystore, Mode::Store] {
            let dir = dir.join(format!("{threads}-{}", mode.name()));
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            rows.push(row(args, &dir, threads, mode).await?);
        }
    }
    print_table(&rows);
    Ok(())
}

/// Sets up one row's system and measures it.
async fn row(args: &AdminBenchArgs, dir: &Path, threads: usize, mode: Mode) -> Result<Row, String> {
    let relay = switchboard_relay::server::start_with_limits(
        &format!("sqlite://{}", dir.join("relay.db").display()),
        "127.0.0.1:0",
        Limits::lifted(),
    )
    .await
    .map_err(|e| e.to_string())?;
    let url = relay.url();
    let store = match mode {
        Mode::Keystore => None,
        Mode::Store => Some("sqlite://admin.db"),
    };
    let mut admin = start_admin(dir, &url, store).await?;
    add_bot(&mut admin, dir, &url).await?;
    let started = Instant::now();
    let mut customers = open_threads(&url, threads).await?;
    route_all(&mut admin, threads).await?;
    out(&format!(
        "{threads} threads ({}): opened and routed in {:.2} s",
        mode.name(),
        started.elapsed().as_secs_f64()
    ));

    let cap = Duration::from_secs(args.max_secs);
    let started = Instant::now();
    let mut latencies = Vec::with_capacity(args.messages);
    for i in 0..args.messages {
        if started.elapsed() >= cap {
            break;
        }
        let count = customers.len();
        let Some((customer, thread)) = customers.get_mut(i % count) else {
            break;
        };
        let thread = *thread;
        customer
            .send(thread, &format!("message {i}"))
            .await
            .map_err(|e| format!("a customer's send failed: {e}"))?;
        let took = Instant::now();
        admin_takes(&mut admin, thread).await?;
        latencies.push(took.elapsed());
    }
    let total = latencies.iter().sum();
    admin.flush_acks().await;
    drop(admin);
    relay.stop().await.map_err(|e| e.to_string())?;
    Ok(Row {
        threads,
        mode,
        report: BenchReport::from_latencies(latencies, total),
        keystore_bytes: file_bytes(&dir.join("admin.keystore")),
        store_bytes: ["admin.db", "admin.db-wal"]
            .iter()
            .map(|name| file_bytes(&dir.join(name)))
            .sum(),
    })
}

/// `threads` customers, each with a thread opened and its routing message sent.
async fn open_threads(url: &str, threads: usize) -> Result<Vec<(SimCustomer, ThreadId)>, String> {
    let entity = EntityId::new(ENTITY).map_err(|e| e.to_string())?;
    let mut customers = Vec::with_capacity(threads);
    while customers.len() < threads {
        let batch = (threads - customers.len()).min(OPENING_AT_ONCE);
        let tasks: Vec<_> = (0..batch)
            .map(|_| {
                let (url, entity) = (url.to_owned(), entity.clone());
                tokio::spawn(async move {
                    let mut customer = SimCustomer::register(&url).await?;
                    let thread = customer.open_thread(&entity).await?;
                    customer.send(thread, "hello").await?;
                    Ok::<_, switchboard_client::ClientError>((customer, thread))
                })
            })
            .collect();
        for task in tasks {
            let opened = task
                .await
                .map_err(|e| format!("a customer failed: {e}"))?
                .map_err(|e| format!("a customer could not open its thread: {e}"))?;
            customers.push(opened);
        }
    }
    Ok(customers)
}

/// Steps the admin until it routed `threads` threads.
async fn route_all(admin: &mut Admin, threads: usize) -> Result<(), String> {
    // Generous: with its whole state in its keystore, every routing rewrites every thread.
    let patience = STEP_PATIENCE + Duration::from_millis(250 * threads as u64);
    let started = Instant::now();
    let mut routed = 0;
    while routed < threads {
        if started.elapsed() > patience {
            return Err(format!(
                "the admin routed {routed} of {threads} threads in {} s",
                patience.as_secs()
            ));
        }
        routed += admin
            .step(Duration::from_secs(1))
            .await
            .map_err(|e| e.to_string())?
            .iter()
            .filter(|o| matches!(o, Outcome::Routed { .. }))
            .count();
    }
    Ok(())
}

/// Steps the admin until it returned a message of `thread`.
async fn admin_takes(admin: &mut Admin, thread: ThreadId) -> Result<(), String> {
    let started = Instant::now();
    loop {
        let outcomes = admin
            .step(Duration::from_secs(1))
            .await
            .map_err(|e| e.to_string())?;
        if outcomes
            .iter()
            .any(|o| matches!(o, Outcome::Event(Event::Message { thread: t, .. }) if *t == thread))
        {
            return Ok(());
        }
        if started.elapsed() > STEP_PATIENCE {
            return Err(format!(
                "the admin did not take a message of thread {thread} within {} s",
                STEP_PATIENCE.as_secs()
            ));
        }
    }
}

fn file_bytes(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

fn print_table(rows: &[Row]) {
    out(&format!(
        "\n{:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10} {:>12} {:>10}",
        "threads",
        "admin",
        "messages",
        "p50_ms",
        "p99_ms",
        "max_ms",
        "messages/s",
        "keystore_kib",
        "store_kib"
    ));
    for row in rows {
        out(&format!(
            "{:>8} {:>9} {:>9} {:>9.2} {:>9.2} {:>9.2} {:>10.0} {:>12.1} {:>10.1}",
            row.threads,
            row.mode.name(),
            row.report.posts,
            ms(row.report.p50),
            ms(row.report.p99),
            ms(row.report.max),
            row.report.posts_per_sec(),
            row.keystore_bytes as f64 / 1024.0,
            row.store_bytes as f64 / 1024.0,
        ));
    }
    out("\nkeystore p50 / store p50, per thread count:");
    for pair in rows.chunks(2) {
        if let [keystore, store] = pair
            && store.report.p50 > Duration::ZERO
        {
            out(&format!(
                "{:>8} threads: {:.1}x",
                keystore.threads,
                keystore.report.p50.as_secs_f64() / store.report.p50.as_secs_f64()
            ));
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
