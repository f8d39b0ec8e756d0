//! `switchboard bench --http`: durable posts per second through the relay's HTTP API.
//!
//! Starts a relay in this process (per-device rate limits lifted) on the given database, then
//! `concurrency` customers each open a thread with a bench entity and post real sealed messages
//! (sealed per post with the thread's key schedule) through signed HTTP requests. A post counts
//! when the relay answered 201, which is after its commit (on SQLite: group-committed, fsync'd;
//! each request's nonce is group-committed too). The load generator shares the machine with the
//! relay, so this is a lower bound of the relay alone.

use std::sync::Arc;
use std::time::{Duration, Instant};

use switchboard_client::{RelayClient, now};
use switchboard_protocol::{
    CipherSuite, Content, Csprng, DeviceId, DeviceKeys, EntityId, ThreadState,
};
use switchboard_relay::bench::BenchReport;
use switchboard_relay::http::Limits;

/// Runs the HTTP bench.
pub(crate) async fn run(
    db: &str,
    posts: usize,
    concurrency: usize,
    payload_bytes: usize,
) -> Result<BenchReport, String> {
    let limits = Limits::lifted();
    let relay = switchboard_relay::server::start_with_limits(db, "127.0.0.1:0", limits)
        .await
        .map_err(|e| e.to_string())?;
    let url = relay.url();
    let mut rng = Csprng::from_os().map_err(|e| e.to_string())?;
    let admin = Arc::new(DeviceKeys::generate(
        DeviceId::random(&mut rng),
        CipherSuite::default(),
        &mut rng,
    ));
    let admin_client = RelayClient::new(&url, Arc::clone(&admin)).map_err(|e| e.to_string())?;
    admin_client.register().await.map_err(|e| e.to_string())?;
    let entity = EntityId::new(format!(
        "bench-{}",
        &DeviceId::random(&mut rng).to_string()[..8]
    ))
    .map_err(|e| e.to_string())?;
    admin_client
        .create_entity(&entity, "Bench")
        .await
        .map_err(|e| e.to_string())?;
    let text = "x".repeat(payload_bytes.max(1));
    let concurrency = concurrency.max(1);
    let mut posters = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let keys = Arc::new(DeviceKeys::generate(
            DeviceId::random(&mut rng),
            CipherSuite::default(),
            &mut rng,
        ));
        let client = RelayClient::new(&url, Arc::clone(&keys)).map_err(|e| e.to_string())?;
        client.register().await.map_err(|e| e.to_string())?;
        let record = client.directory(&entity).await.map_err(|e| e.to_string())?;
        let (state, open) =
            ThreadState::open(&keys, entity.clone(), &record.admin, now(), &mut rng)
                .map_err(|e| e.to_string())?;
        client.open_thread(&open).await.map_err(|e| e.to_string())?;
        posters.push((keys, client, state));
    }
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(concurrency);
    for (i, (keys, client, mut state)) in posters.into_iter().enumerate() {
        let count = posts / concurrency + usize::from(i < posts % concurrency);
        let content = Content::text(text.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(count);
            for _ in 0..count {
                let t = Instant::now();
                let sealed = state
                    .seal(&keys, &content, None)
                    .map_err(|e| e.to_string())?;
                client
                    .post_message(state.thread(), &sealed)
                    .await
                    .map_err(|e| e.to_string())?;
                latencies.push(t.elapsed());
            }
            Ok::<Vec<Duration>, String>(latencies)
        }));
    }
    let mut latencies = Vec::with_capacity(posts);
    for task in tasks {
        latencies.extend(
            task.await
                .map_err(|e| format!("bench task failed: {e}"))??,
        );
    }
    let report = BenchReport::from_latencies(latencies, started.elapsed());
    relay.stop().await.map_err(|e| e.to_string())?;
    Ok(report)
}
