//! Request tracing. Its own test binary: it installs the global subscriber, and tracing caches
//! per-callsite decisions process-wide, so it must not share a process with other tests.

#![allow(clippy::unwrap_used, clippy::panic, missing_docs, unreachable_pub)]

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use switchboard_protocol::Timestamp;
use switchboard_relay::http::Clock;
use switchboard_relay::{RelayState, app};
use tower::ServiceExt as _;

/// Keeps what the subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn each_request_is_traced_with_route_device_status_and_latency() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing::subscriber::set_global_default(
        tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::DEBUG)
            .finish(),
    )
    .unwrap();
    let store: Arc<dyn switchboard_relay::Store> = Arc::from(
        switchboard_relay::store::open("sqlite::memory:")
            .await
            .unwrap(),
    );
    let clock: Clock = Arc::new(|| Timestamp(1_800_000_000));
    let router = app(RelayState::new(store, clock));
    let served = router
        .clone()
        .oneshot(Request::get("/openapi.json").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(served.status(), StatusCode::OK);
    // A read that claims a device but is not signed: refused.
    let device = "0123456789abcdef0123456789abcdef";
    let refused = router
        .oneshot(
            Request::get(format!("/v1/devices/{device}"))
                .header("x-sb-device", device)
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);

    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let line = |needle: &str| {
        log.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle:?} in:\n{log}"))
            .to_owned()
    };
    let served = line("route=/openapi.json");
    assert!(
        served.contains("DEBUG") && served.contains("served") && served.contains("status=200"),
        "{served}"
    );
    assert!(served.contains("device=-"), "{served}");
    let refused = line("route=/v1/devices/{device}");
    assert!(
        refused.contains(" INFO ") && refused.contains("refused") && refused.contains("status=401"),
        "{refused}"
    );
    assert!(refused.contains(&format!("device={device}")), "{refused}");
    assert!(refused.contains("micros="), "{refused}");
}
