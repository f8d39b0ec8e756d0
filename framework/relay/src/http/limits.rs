//! Per-device rate limits with escalating temporary bans. Each relay process keeps its own
//! counters (with several processes, a device gets each process's allowance).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use switchboard_protocol::{DeviceId, Timestamp};

use super::ApiError;

/// Rate limits and bans.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Requests per second a device may sustain.
    pub per_second: u32,
    /// Requests a device may make at once after being idle.
    pub burst: u32,
    /// Refusals (while over the limit) before the device is banned.
    pub strikes_to_ban: u32,
    /// Length of the first ban; each further ban doubles it.
    pub first_ban_secs: u64,
    /// The longest ban.
    pub max_ban_secs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            per_second: 50,
            burst: 500,
            strikes_to_ban: 100,
            first_ban_secs: 60,
            max_ban_secs: 3600,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    last: u64,
    strikes: u32,
    bans: u32,
    banned_until: u64,
}

/// The limiter state shared by the handlers of one process.
#[derive(Clone, Debug, Default)]
pub(super) struct Limiter {
    limits: Limits,
    buckets: Arc<Mutex<HashMap<DeviceId, Bucket>>>,
}

/// Above this many tracked devices, idle ones are forgotten.
const MAX_TRACKED: usize = 100_000;

impl Limiter {
    pub(super) fn new(limits: Limits) -> Self {
        Self {
            limits,
            buckets: Arc::default(),
        }
    }

    /// Admits one request of `device` at `now`, or says why not.
    pub(super) fn admit(&self, device: DeviceId, now: Timestamp) -> Result<(), ApiError> {
        let limits = self.limits;
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if buckets.len() >= MAX_TRACKED {
            // Forget devices that are idle (full bucket) and not banned.
            buckets.retain(|_, b| {
                b.banned_until > now.0
                    || b.tokens
                        + (now.0.saturating_sub(b.last) as f64) * f64::from(limits.per_second)
                        < f64::from(limits.burst)
            });
        }
        let bucket = buckets.entry(device).or_insert(Bucket {
            tokens: f64::from(limits.burst),
            last: now.0,
            strikes: 0,
            bans: 0,
            banned_until: 0,
        });
        if now.0 < bucket.banned_until {
            return Err(ApiError::Banned {
                retry_after: bucket.banned_until - now.0,
            });
        }
        let elapsed = now.0.saturating_sub(bucket.last) as f64;
        bucket.tokens =
            (bucket.tokens + elapsed * f64::from(limits.per_second)).min(f64::from(limits.burst));
        bucket.last = now.0;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        bucket.strikes += 1;
        if bucket.strikes >= limits.strikes_to_ban {
            bucket.strikes = 0;
            bucket.bans = bucket.bans.saturating_add(1);
            let factor = 1u64.checked_shl(bucket.bans - 1).unwrap_or(u64::MAX);
            let ban = limits
                .first_ban_secs
                .saturating_mul(factor)
                .min(limits.max_ban_secs);
            bucket.banned_until = now.0.saturating_add(ban);
            tracing::warn!(%device, ban_secs = ban, "device banned for exceeding its rate limit");
            return Err(ApiError::Banned { retry_after: ban });
        }
        Err(ApiError::RateLimited { retry_after: 1 })
    }
}
