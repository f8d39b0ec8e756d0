//! `switchboard bench relay`: durable posts per second and latency through the store.
//!
//! Sets up one entity and `threads` threads (customer + admin + a bot each), then `concurrency`
//! tasks post `posts` messages in total; a post counts when the store answered it, which is
//! after its commit (SQLite: fsync'd, group-committed). Reports posts/s and the p50/p99/max
//! latency of single posts.

use std::sync::Arc;
use std::time::{Duration, Instant};

use switchboard_protocol::{Csprng, DeviceId, EntityId, ThreadId};

use crate::store::{
    self, DeviceRecord, EntityRecord, ItemKind, Post, Store, StoreError, ThreadRecord,
};

/// What to run.
#[derive(Clone, Copy, Debug)]
pub struct BenchConfig {
    /// Posts in total.
    pub posts: usize,
    /// Posting tasks running at once.
    pub concurrency: usize,
    /// Threads the posts are spread over.
    pub threads: usize,
    /// Payload size in bytes (a sealed message of a short text is about 600).
    pub payload_bytes: usize,
}

/// What was measured.
#[derive(Clone, Debug)]
pub struct BenchReport {
    /// Posts answered.
    pub posts: usize,
    /// Wall time.
    pub elapsed: Duration,
    /// Median latency of one post.
    pub p50: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
    /// Slowest post.
    pub max: Duration,
}

impl BenchReport {
    /// Posts per second.
    #[must_use]
    pub fn posts_per_sec(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.posts as f64 / secs
        } else {
            0.0
        }
    }
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} durable posts in {:.2} s: {:.0} posts/s; latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            self.posts,
            self.elapsed.as_secs_f64(),
            self.posts_per_sec(),
            self.p50.as_secs_f64() * 1e3,
            self.p99.as_secs_f64() * 1e3,
            self.max.as_secs_f64() * 1e3,
        )
    }
}

async fn register(store: &dyn Store, rng: &mut Csprng) -> Result<DeviceId, StoreError> {
    let device = DeviceId::random(rng);
    store
        .register_device(&DeviceRecord {
            device,
            identity_key: rng.array(),
            bundle: b"{}".to_vec(),
            registered_at: 0,
        })
        .await?;
    Ok(device)
}

/// Runs the benchmark against the store at `url`.
///
/// # Errors
/// Any [`StoreError`] from opening the store or from a post.
pub async fn run(url: &str, config: BenchConfig) -> Result<BenchReport, StoreError> {
    let store: Arc<dyn Store> = Arc::from(store::open(url).await?);
    let mut rng = Csprng::from_os().map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let admin = register(store.as_ref(), &mut rng).await?;
    let entity = EntityId::new(format!(
        "bench-{}",
        &DeviceId::random(&mut rng).to_string()[..8]
    ))
    .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    store
        .create_entity(&EntityRecord {
            entity: entity.clone(),
            admin,
            display_name: "Bench".to_owned(),
        })
        .await?;
    let mut threads: Vec<(ThreadId, DeviceId)> = Vec::new();
    for _ in 0..config.threads.max(1) {
        let customer = register(store.as_ref(), &mut rng).await?;
        let bot = register(store.as_ref(), &mut rng).await?;
        let thread = ThreadId::random(&mut rng);
        let mut members = vec![customer, admin];
        members.sort_unstable();
        store
            .open_thread(
                &ThreadRecord {
                    thread,
                    entity: entity.clone(),
                    customer,
                    admin,
                    epoch: 0,
                    members,
                },
                b"{}",
            )
            .await?;
        let mut members = vec![customer, admin, bot];
        members.sort_unstable();
        store
            .post(&Post {
                thread,
                sender: admin,
                kind: ItemKind::Commit,
                payload: b"{}",
                new_roster: Some((1, &members)),
                to: None,
                key: None,
            })
            .await?;
        threads.push((thread, customer));
    }
    let threads = Arc::new(threads);
    let payload: Arc<Vec<u8>> = Arc::new(vec![b'x'; config.payload_bytes]);
    let concurrency = config.concurrency.max(1);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(concurrency);
    for task in 0..concurrency {
        let (store, threads, payload) = (
            Arc::clone(&store),
            Arc::clone(&threads),
            Arc::clone(&payload),
        );
        let count = config.posts / concurrency + usize::from(task < config.posts % concurrency);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(count);
            for i in 0..count {
                let Some(&(thread, customer)) =
                    threads.get((task + i * concurrency) % threads.len())
                else {
                    continue;
                };
                let t = Instant::now();
                store
                    .post(&Post {
                        thread,
                        sender: customer,
                        kind: ItemKind::Message,
                        payload: &payload,
                        new_roster: None,
                        to: None,
                        key: None,
                    })
                    .await?;
                latencies.push(t.elapsed());
            }
            Ok::<_, StoreError>(latencies)
        }));
    }
    let mut latencies = Vec::with_capacity(config.posts);
    for task in tasks {
        let mut more = task
            .await
            .map_err(|e| StoreError::Corrupt(format!("bench task failed: {e}")))??;
        latencies.append(&mut more);
    }
    Ok(BenchReport::from_latencies(latencies, started.elapsed()))
}

impl BenchReport {
    /// The report of `latencies` (one per answered post) measured over `elapsed`.
    #[must_use]
    pub fn from_latencies(mut latencies: Vec<Duration>, elapsed: Duration) -> Self {
        latencies.sort_unstable();
        // Nearest-rank percentile: the value at rank ceil(percent/100 * n).
        let at = |percent: usize| {
            let rank = (latencies.len() * percent).div_ceil(100).max(1);
            latencies.get(rank - 1).copied().unwrap_or_default()
        };
        Self {
            posts: latencies.len(),
            elapsed,
            p50: at(50),
            p99: at(99),
            max: at(100),
        }
    }
}
