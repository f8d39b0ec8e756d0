//! Rate limits: per device by role (customer, agent, admin), per entity for its admin and agents
//! together, and per source address for registration; temporary bans only for devices that keep
//! sending far past their limit (a device that waits as `Retry-After` says is slowed, never
//! banned). Each relay process keeps its own counters (with several processes, a device gets
//! each process's allowance), in tables of bounded size that never scan all entries.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};
use switchboard_protocol::{DeviceId, EntityId, Timestamp};

use super::ApiError;
use crate::store::DeviceRole as Role;

/// A token bucket's rate: `per_second` sustained, `burst` at once after being idle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    /// Requests per second sustained.
    pub per_second: u32,
    /// Requests at once after being idle.
    pub burst: u32,
}

impl Rate {
    /// `per_second` sustained, bursts of `burst`.
    #[must_use]
    pub const fn new(per_second: u32, burst: u32) -> Self {
        Self { per_second, burst }
    }

    /// No practical limit.
    pub const UNLIMITED: Self = Self::new(u32::MAX / 4, u32::MAX / 4);
}

fn entity_of(role: &Role) -> Option<&EntityId> {
    match role {
        Role::Customer => None,
        Role::Agent(entity) | Role::Admin(entity) => Some(entity),
    }
}

/// Rate limits and bans. Configurable in `switchboard relay` (flags and a TOML config file with
/// these field names).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Per customer device.
    pub customer: Rate,
    /// Per agent device (bots and people answering threads).
    pub agent: Rate,
    /// Per admin device (in every thread of its entity).
    pub admin: Rate,
    /// Shared by an entity's admin and agents, on top of their own (the admin counts toward it
    /// but is never refused by it, so agents cannot starve the device that removes them).
    pub entity: Rate,
    /// Registrations per source address.
    pub registration: Rate,
    /// Refusals within one second (requests that did not wait for `Retry-After`) that get a
    /// device banned.
    pub strikes_to_ban: u32,
    /// Length of the first ban; each further ban doubles it.
    pub first_ban_secs: u64,
    /// The longest ban.
    pub max_ban_secs: u64,
    /// How many devices, entities and addresses each table tracks at most (the oldest are
    /// forgotten first, banned ones last).
    pub max_tracked: usize,
    /// Bytes of request bodies the relay reads at once before their signature is verified;
    /// past it, requests with bodies are refused as busy (503, `Retry-After: 1`).
    pub unverified_body_bytes: u64,
    /// Seconds a request body may take to arrive, in all.
    pub body_read_secs: u64,
    /// Relay sessions open at once (`POST /v1/sessions`; 4 per device at most). When full,
    /// expired sessions are dropped; if none has expired, devices sign each request until
    /// there is room (the relay answers 503 to a new session).
    pub max_sessions: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            customer: Rate::new(20, 200),
            agent: Rate::new(200, 2_000),
            admin: Rate::new(500, 5_000),
            entity: Rate::new(2_000, 20_000),
            registration: Rate::new(1, 60),
            strikes_to_ban: 200,
            first_ban_secs: 60,
            max_ban_secs: 3600,
            max_tracked: 100_000,
            unverified_body_bytes: 48 * 1024 * 1024,
            body_read_secs: 20,
            max_sessions: 100_000,
        }
    }
}

impl Limits {
    /// The same rate for every role and entity (registration keeps its default).
    #[must_use]
    pub fn uniform(rate: Rate) -> Self {
        Self {
            customer: rate,
            agent: rate,
            admin: rate,
            entity: rate,
            ..Self::default()
        }
    }

    /// No practical limits (benchmarks).
    #[must_use]
    pub fn lifted() -> Self {
        Self {
            registration: Rate::UNLIMITED,
            strikes_to_ban: u32::MAX,
            ..Self::uniform(Rate::UNLIMITED)
        }
    }

    fn rate(&self, role: &Role) -> Rate {
        match role {
            Role::Customer => self.customer,
            Role::Agent(_) => self.agent,
            Role::Admin(_) => self.admin,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    last: u64,
    /// The second `strikes` counts refusals in.
    strike_second: u64,
    strikes: u32,
    bans: u32,
    banned_until: u64,
}

impl Bucket {
    fn full(rate: Rate, now: u64) -> Self {
        Self {
            tokens: f64::from(rate.burst),
            last: now,
            strike_second: now,
            strikes: 0,
            bans: 0,
            banned_until: 0,
        }
    }

    /// Takes a token, or says how many seconds until one is there.
    fn take(&mut self, rate: Rate, now: u64) -> Result<(), u64> {
        let elapsed = now.saturating_sub(self.last) as f64;
        self.tokens =
            (self.tokens + elapsed * f64::from(rate.per_second)).min(f64::from(rate.burst));
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        // Less than one token is missing and at least one comes per second: one second (the
        // clock counts whole seconds).
        Err(1)
    }
}

/// A map of bounded size: when full, the oldest entry is forgotten (but an entry `keep` says to
/// keep is moved to the back instead, a bounded number of times).
#[derive(Debug)]
struct Table<K, V> {
    map: HashMap<K, V>,
    order: VecDeque<K>,
    max: usize,
}

impl<K: Clone + Eq + Hash, V> Table<K, V> {
    fn new(max: usize) -> Self {
        Self {
            map: HashMap::new(),
            order: VecDeque::new(),
            max: max.max(1),
        }
    }

    fn get_or_insert(
        &mut self,
        key: &K,
        make: impl FnOnce() -> V,
        keep: impl Fn(&V) -> bool,
    ) -> &mut V {
        if !self.map.contains_key(key) {
            let mut tries = 0;
            while self.map.len() >= self.max {
                let Some(oldest) = self.order.pop_front() else {
                    break;
                };
                tries += 1;
                if tries <= 8 && self.map.get(&oldest).is_some_and(&keep) {
                    self.order.push_back(oldest);
                } else {
                    self.map.remove(&oldest);
                }
            }
            self.order.push_back(key.clone());
        }
        self.map.entry(key.clone()).or_insert_with(make)
    }

    fn get(&self, key: &K) -> Option<&V> {
        self.map.get(key)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.len()
    }
}

/// A device's bucket and what it is.
#[derive(Debug)]
struct DeviceEntry {
    bucket: Bucket,
    role: Role,
    /// When the role was read from the store.
    role_read_at: u64,
}

/// How long a device's role is trusted before it is read from the store again.
const ROLE_TTL_SECS: u64 = 60;

#[derive(Debug)]
struct Tables {
    devices: Table<DeviceId, DeviceEntry>,
    entities: Table<EntityId, Bucket>,
    addresses: Table<IpAddr, Bucket>,
}

/// The limiter state shared by the handlers of one process.
#[derive(Clone, Debug)]
pub(super) struct Limiter {
    limits: Arc<Limits>,
    tables: Arc<Mutex<Tables>>,
}

impl Default for Limiter {
    fn default() -> Self {
        Self::new(Limits::default())
    }
}

impl Limiter {
    pub(super) fn new(limits: Limits) -> Self {
        let max = limits.max_tracked;
        Self {
            limits: Arc::new(limits),
            tables: Arc::new(Mutex::new(Tables {
                devices: Table::new(max),
                entities: Table::new(max),
                addresses: Table::new(max),
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The role of `device` if it was read recently.
    pub(super) fn known_role(&self, device: DeviceId, now: Timestamp) -> Option<Role> {
        let tables = self.lock();
        tables
            .devices
            .get(&device)
            .filter(|entry| now.0.saturating_sub(entry.role_read_at) < ROLE_TTL_SECS)
            .map(|entry| entry.role.clone())
    }

    /// Remembers `device`'s role as read from the store at `now`.
    pub(super) fn remember_role(&self, device: DeviceId, role: Role, now: Timestamp) {
        let rate = self.limits.rate(&role);
        let mut tables = self.lock();
        let entry = tables.devices.get_or_insert(
            &device,
            || DeviceEntry {
                bucket: Bucket::full(rate, now.0),
                role: role.clone(),
                role_read_at: now.0,
            },
            |entry| entry.bucket.banned_until > now.0,
        );
        entry.role = role;
        entry.role_read_at = now.0;
    }

    /// Admits one request of `device` (whose role is `role`) at `now`, or says why not.
    pub(super) fn admit(
        &self,
        device: DeviceId,
        role: &Role,
        now: Timestamp,
    ) -> Result<(), ApiError> {
        let limits = Arc::clone(&self.limits);
        let now = now.0;
        let rate = limits.rate(role);
        let mut tables = self.lock();
        let entry = tables.devices.get_or_insert(
            &device,
            || DeviceEntry {
                bucket: Bucket::full(rate, now),
                role: role.clone(),
                role_read_at: now,
            },
            |entry| entry.bucket.banned_until > now,
        );
        let bucket = &mut entry.bucket;
        if now < bucket.banned_until {
            return Err(ApiError::Banned {
                retry_after: bucket.banned_until - now,
            });
        }
        if bucket.strike_second != now {
            bucket.strike_second = now;
            bucket.strikes = 0;
        }
        match bucket.take(rate, now) {
            Ok(()) => {}
            Err(retry_after) => {
                bucket.strikes = bucket.strikes.saturating_add(1);
                if bucket.strikes < limits.strikes_to_ban {
                    return Err(ApiError::RateLimited { retry_after });
                }
                bucket.strikes = 0;
                bucket.bans = bucket.bans.saturating_add(1);
                let factor = 1u64.checked_shl(bucket.bans - 1).unwrap_or(u64::MAX);
                let ban = limits
                    .first_ban_secs
                    .saturating_mul(factor)
                    .min(limits.max_ban_secs);
                bucket.banned_until = now.saturating_add(ban);
                tracing::warn!(%device, ban_secs = ban, "device banned: it kept sending past its rate limit without waiting");
                return Err(ApiError::Banned { retry_after: ban });
            }
        }
        // The entity's quota, shared by its admin and agents (never a strike: no one device is
        // at fault). The admin's requests count toward it but are never refused by it (its own
        // limit above applies): agents that use up the quota must not stop the admin, which is
        // the device that can remove them.
        if let Some(entity) = entity_of(role) {
            let entity_rate = limits.entity;
            let bucket =
                tables
                    .entities
                    .get_or_insert(entity, || Bucket::full(entity_rate, now), |_| false);
            if let Err(retry_after) = bucket.take(entity_rate, now)
                && !matches!(role, Role::Admin(_))
            {
                return Err(ApiError::RateLimited { retry_after });
            }
        }
        Ok(())
    }

    /// Admits one registration from `address` at `now`.
    pub(super) fn admit_registration(
        &self,
        address: IpAddr,
        now: Timestamp,
    ) -> Result<(), ApiError> {
        let rate = self.limits.registration;
        let mut tables = self.lock();
        let bucket =
            tables
                .addresses
                .get_or_insert(&address, || Bucket::full(rate, now.0), |_| false);
        bucket
            .take(rate, now.0)
            .map_err(|retry_after| ApiError::RateLimited { retry_after })
    }
}

#[cfg(test)]
mod tests {
    use switchboard_protocol::{DeviceId, Timestamp};

    use super::{Limiter, Limits, Role};

    #[test]
    fn the_limiter_table_stays_bounded_when_every_device_is_busy() {
        let limits = Limits::default();
        let max = limits.max_tracked;
        let limiter = Limiter::new(limits);
        for i in 0..(u32::try_from(max).unwrap() + 50) {
            let mut id = [0u8; 16];
            id[..4].copy_from_slice(&i.to_be_bytes());
            let _ = limiter.admit(DeviceId::from_bytes(id), &Role::Customer, Timestamp(1_000));
        }
        let tracked = limiter.lock().devices.len();
        assert!(tracked <= max, "{tracked} devices tracked");
    }

    #[test]
    fn agents_that_use_up_the_entity_quota_do_not_stop_the_admin() {
        let limits = Limits {
            entity: super::Rate::new(1, 20),
            ..Limits::default()
        };
        let limiter = Limiter::new(limits);
        let acme = switchboard_protocol::EntityId::new("acme").unwrap();
        let now = Timestamp(1_000);
        let mut refused = 0;
        for i in 0u8..40 {
            let agent = DeviceId::from_bytes([i; 16]);
            if limiter
                .admit(agent, &Role::Agent(acme.clone()), now)
                .is_err()
            {
                refused += 1;
            }
        }
        assert!(refused > 0, "the agents never reached the entity quota");
        let admin = DeviceId::from_bytes([0xad; 16]);
        for _ in 0..10 {
            limiter
                .admit(admin, &Role::Admin(acme.clone()), now)
                .unwrap();
        }
    }
}
