//! The relay's table of open sessions (`switchboard_protocol::session`): in memory, bounded,
//! lost with the process (a client then gets `unknown_session` and opens another).
//! `POST /v1/sessions` calls [`Sessions::open`]; `authenticate` calls [`Sessions::check`] when
//! a request carries `x-sb-session`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use switchboard_protocol::session::{
    ReplayWindow, SessionAuth, SessionGrant, SessionId, SessionKey, SessionRequest, grant,
};
use switchboard_protocol::{Csprng, DeviceId, Timestamp};

use super::error::ApiError;

/// How long a session lasts (seconds).
pub(super) const SESSION_SECS: u64 = 3600;
/// Sessions one device may hold at once (the oldest is closed when it opens another).
pub(super) const PER_DEVICE: usize = 4;

struct Open {
    device: DeviceId,
    key: Arc<SessionKey>,
    expires_at: u64,
    window: ReplayWindow,
}

#[derive(Default)]
struct Table {
    open: HashMap<SessionId, Open>,
    /// Each device's sessions, oldest first.
    by_device: HashMap<DeviceId, Vec<SessionId>>,
}

/// The open sessions, at most `max`.
#[derive(Clone)]
pub(super) struct Sessions {
    table: Arc<Mutex<Table>>,
    /// Made at the first session (the relay's state is built without failing).
    rng: Arc<Mutex<Option<Csprng>>>,
    max: usize,
}

impl Sessions {
    /// An empty table of at most `max` sessions.
    pub(super) fn new(max: usize) -> Self {
        Self {
            table: Arc::default(),
            rng: Arc::default(),
            max,
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Opens a session for `device` (whose signed request carried `request`).
    pub(super) fn open(
        &self,
        device: DeviceId,
        request: &SessionRequest,
        now: Timestamp,
    ) -> Result<SessionGrant, ApiError> {
        let expires_at = now.0.saturating_add(SESSION_SECS);
        let (answer, id, key) = {
            let mut rng = self.rng.lock().unwrap_or_else(PoisonError::into_inner);
            if rng.is_none() {
                *rng = Some(Csprng::from_os().map_err(|_| ApiError::Internal)?);
            }
            let rng = rng.as_mut().ok_or(ApiError::Internal)?;
            grant(rng, device, request, Timestamp(expires_at)).map_err(ApiError::Malformed)?
        };
        let mut table = self.table();
        if table.open.len() >= self.max {
            table.open.retain(|_, s| s.expires_at > now.0);
            let Table { open, by_device } = &mut *table;
            by_device.retain(|_, ids| {
                ids.retain(|id| open.contains_key(id));
                !ids.is_empty()
            });
        }
        let mine = table.by_device.get(&device).map_or(0, Vec::len);
        if mine >= PER_DEVICE {
            let oldest = table.by_device.get_mut(&device).map(|ids| ids.remove(0));
            if let Some(oldest) = oldest {
                table.open.remove(&oldest);
            }
        } else if table.open.len() >= self.max {
            return Err(ApiError::Busy("too many open sessions: sign each request"));
        }
        table.open.insert(
            id,
            Open {
                device,
                key: Arc::new(key),
                expires_at,
                window: ReplayWindow::default(),
            },
        );
        table.by_device.entry(device).or_default().push(id);
        Ok(answer)
    }

    /// Refuses a request whose session is not open (before its body is read).
    pub(super) fn known(&self, auth: &SessionAuth, now: Timestamp) -> Result<(), ApiError> {
        let table = self.table();
        match table.open.get(&auth.session) {
            Some(open) if open.expires_at > now.0 => Ok(()),
            _ => Err(ApiError::UnknownSession),
        }
    }

    /// The device of a request authenticated by `auth`, once its MAC verified and its counter
    /// was taken.
    pub(super) fn check(
        &self,
        auth: &SessionAuth,
        method: &str,
        path_and_query: &str,
        body: &[u8],
        now: Timestamp,
    ) -> Result<DeviceId, ApiError> {
        let (device, key) = {
            let table = self.table();
            let open = table
                .open
                .get(&auth.session)
                .filter(|s| s.expires_at > now.0)
                .ok_or(ApiError::UnknownSession)?;
            (open.device, Arc::clone(&open.key))
        };
        // The MAC is checked outside the lock.
        if !key.verify(auth, method, path_and_query, body) {
            return Err(ApiError::BadSignature(device.to_string()));
        }
        let mut table = self.table();
        let open = table
            .open
            .get_mut(&auth.session)
            .ok_or(ApiError::UnknownSession)?;
        if !open.window.accept(auth.counter) {
            return Err(ApiError::ReplayedRequest);
        }
        Ok(device)
    }
}
