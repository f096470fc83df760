//! In-memory state of identity, one per server: the status cache of workspaces and orgs, the
//! `last_used_at` of API keys (flushed to the control plane by one background task), the login
//! throttle, the tenant-token signing keys and the clock expiries are issued and checked by.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use lru::LruCache;
use uuid::Uuid;

use super::throttle::Throttle;
use crate::clock::Clock;
use crate::control::KeyRow;
use crate::control::OrgStatus;
pub use crate::control::SigningKey;

/// How long a cached workspace status is trusted. Changes made through this server invalidate
/// the cache at once; the TTL only bounds staleness from another process (the command line).
pub const STATUS_TTL: Duration = Duration::from_secs(5);
const STATUS_CAPACITY: usize = 16_384;
/// API keys remembered by the authentication cache (most recently used kept).
const KEY_CAPACITY: usize = 16_384;

/// How a cached key was looked up: by the digest of the whole presented secret (API keys: a
/// hit proves the secret matches), or by id (the key behind a tenant token, whose signature is
/// verified on every request).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyLookup {
    Digest([u8; 32]),
    Id(Uuid),
}

/// What the hot path needs to know about a live workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkspaceStatus {
    pub org_id: Uuid,
    pub org_status: OrgStatus,
}

pub struct IdentityState {
    status: Mutex<LruCache<Uuid, (WorkspaceStatus, Instant)>>,
    /// The authentication cache: key rows read from the control plane, trusted for
    /// [`STATUS_TTL`] like statuses, and forgotten at once on a revocation through this server
    /// or on any status change.
    keys: Mutex<LruCache<KeyLookup, (KeyRow, Instant)>>,
    last_used: Mutex<HashMap<Uuid, DateTime<Utc>>>,
    pub throttle: Throttle,
    /// Newest first: the first signs, all verify.
    signing: RwLock<Vec<SigningKey>>,
    clock: Clock,
}

impl Default for IdentityState {
    fn default() -> Self {
        IdentityState {
            status: Mutex::new(LruCache::new(
                NonZeroUsize::new(STATUS_CAPACITY).unwrap_or(NonZeroUsize::MIN),
            )),
            keys: Mutex::new(LruCache::new(
                NonZeroUsize::new(KEY_CAPACITY).unwrap_or(NonZeroUsize::MIN),
            )),
            last_used: Mutex::new(HashMap::new()),
            throttle: Throttle::default(),
            signing: RwLock::new(Vec::new()),
            clock: Clock::default(),
        }
    }
}

impl IdentityState {
    /// "Now" for every expiry of a credential: sessions, invitations, API keys, tenant tokens.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    pub fn cached_status(&self, ws: Uuid) -> Option<WorkspaceStatus> {
        let mut c = self.status.lock().unwrap_or_else(|p| p.into_inner());
        match c.get(&ws) {
            Some((s, at)) if at.elapsed() < STATUS_TTL => Some(*s),
            Some(_) => {
                c.pop(&ws);
                None
            }
            None => None,
        }
    }

    pub fn cache_status(&self, ws: Uuid, status: WorkspaceStatus) {
        let mut c = self.status.lock().unwrap_or_else(|p| p.into_inner());
        c.put(ws, (status, Instant::now()));
    }

    /// Forgets every cached status (and key): called on any org or workspace status change.
    pub fn invalidate_status(&self) {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.forget_keys();
    }

    /// A key row read less than [`STATUS_TTL`] ago.
    pub fn cached_key(&self, lookup: &KeyLookup) -> Option<KeyRow> {
        let mut c = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        match c.get(lookup) {
            Some((k, at)) if at.elapsed() < STATUS_TTL => Some(k.clone()),
            Some(_) => {
                c.pop(lookup);
                None
            }
            None => None,
        }
    }

    pub fn cache_key(&self, lookup: KeyLookup, key: KeyRow) {
        let mut c = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        c.put(lookup, (key, Instant::now()));
    }

    /// Forgets every cached key: called when a key is revoked through this server.
    pub fn forget_keys(&self) {
        self.keys.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Notes that a key was used now (memory only).
    pub fn touch_key(&self, key_id: Uuid) {
        let now = Utc::now();
        self.last_used
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key_id, now);
    }

    /// The pending (not yet flushed) last use of a key.
    pub fn pending_last_use(&self, key_id: Uuid) -> Option<DateTime<Utc>> {
        self.last_used
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key_id)
            .copied()
    }

    /// Takes every pending last use, for a flush.
    pub fn take_last_used(&self) -> HashMap<Uuid, DateTime<Utc>> {
        std::mem::take(&mut *self.last_used.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn set_signing_keys(&self, keys: Vec<SigningKey>) {
        *self.signing.write().unwrap_or_else(|p| p.into_inner()) = keys;
    }

    pub fn current_signing_key(&self) -> Option<SigningKey> {
        self.signing
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .first()
            .cloned()
    }

    pub fn signing_secret(&self, kid: &str) -> Option<Vec<u8>> {
        self.signing
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|k| k.kid == kid)
            .map(|k| k.secret.clone())
    }
}
