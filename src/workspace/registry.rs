//! The registry of open workspaces: opens stores lazily on first use and keeps at most
//! `capacity` of them open, least recently used first out.
//!
//! Invariants:
//! - Every open store is counted in `live`, from the moment it opens until its last handle drops;
//!   `live + opening <= capacity` always, so file descriptors are bounded by the capacity.
//! - Eviction only ever picks a store no request holds. When every slot is held, a new open
//!   waits for a release (up to `wait_timeout`, then [`Error::Busy`]).
//! - A store is opened at most once at a time: concurrent requests for it share one handle.
//! - A removed store (its workspace deleted through this process) is never reopened: `remove`
//!   leaves a tombstone and `get` answers `NotFound` for it. Requests hold a verified context
//!   decided before the deletion, so this closes the race between a deletion and a request that
//!   was already past authentication (it gets `404`, or finishes on the handle it already held).
//!   A restore (`readmit`, after the record is live again) lifts the tombstone.

use std::collections::{HashMap, HashSet};
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use lru::LruCache;
use serde::Serialize;
use uuid::Uuid;

use super::{dir_of, Workspace, Writers};
use crate::error::{Error, Result};

/// Attempts of a background index rebuild before it gives up (full-text search then keeps
/// answering 503, saying so, until the store is next opened).
pub const REBUILD_ATTEMPTS: u32 = 5;
/// Pause after the first failed rebuild attempt, doubled after each further one (2, 4, 8, 16 s).
pub const REBUILD_FIRST_RETRY: Duration = Duration::from_secs(2);

/// A shared, reference-counted handle to an open store. The store stays open while any handle
/// to it exists, even after the registry evicted it.
pub struct Handle {
    ws: Option<Arc<Workspace>>,
    shared: Arc<Shared>,
}

impl Deref for Handle {
    type Target = Workspace;
    fn deref(&self) -> &Workspace {
        // `ws` is only ever `None` inside `drop`.
        self.ws.as_deref().expect("handle used after drop")
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // Release our reference first (closing the store if we were the last), then wake
        // anyone waiting for a slot to become idle.
        let id = self.ws.as_ref().map(|ws| ws.id());
        drop(self.ws.take());
        let mut guard = self.shared.lock();
        if let Some(id) = id {
            guard.released.insert(id, Instant::now());
        }
        self.shared.changed.notify_all();
    }
}

struct State {
    cache: LruCache<Uuid, Arc<Workspace>>,
    opening: HashSet<Uuid>,
    live: usize,
    /// Workspaces removed (deleted) while this registry lives: never opened again. Ids are
    /// never reused, so this only grows by one per deletion (16 bytes each).
    removed: HashSet<Uuid>,
    /// The open `Workspace` instance of each id (cached, or evicted or removed while a request
    /// holds it, or closing): at most one per id. A miss of the cache finds it here and takes
    /// it back (while it is alive) or waits for it to close: never a second instance on the
    /// same files (two writer slots, two sets of derived state).
    instances: HashMap<Uuid, Weak<Workspace>>,
    /// Evicted stores handed to the closer thread and not closed yet (counted in `live`).
    closing: usize,
    /// When a handle to each workspace was last let go (tiering's idle time).
    released: HashMap<Uuid, Instant>,
    /// Workspaces held closed ([`Registry::hold_closed`]): `get` waits, as for an opening.
    held: HashSet<Uuid>,
}

struct Shared {
    data_dir: PathBuf,
    capacity: usize,
    wait_timeout: Duration,
    state: Mutex<State>,
    changed: Condvar,
    closed: AtomicBool,
    peak: AtomicU64,
    opens: AtomicU64,
    evictions: AtomicU64,
    /// Tantivy writers open in the stores of this registry (held or not, cached or evicted).
    writers: Writers,
    /// How long opening a store took (a cold open: migrations, index checks, reconciliation).
    open_latency: crate::histogram::Histogram,
    /// Tiered storage's hook on the miss path (none: folders are always local).
    tiering: std::sync::OnceLock<Arc<dyn Tiering>>,
    /// Evicted stores go to a closer thread (started on first use): closing (a writer commit,
    /// SQLite's close, the index's unmapping) is not the requester's wait.
    closer: Mutex<Option<std::sync::mpsc::Sender<Arc<Workspace>>>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wait<'a>(
        &self,
        guard: MutexGuard<'a, State>,
        deadline: Instant,
    ) -> Result<MutexGuard<'a, State>> {
        let now = Instant::now();
        if now >= deadline {
            return Err(Error::Busy);
        }
        let (guard, _) = self
            .changed
            .wait_timeout(guard, deadline - now)
            .unwrap_or_else(|p| p.into_inner());
        Ok(guard)
    }
}

/// Counters of the registry, for `/metrics` and the benchmark.
#[derive(Debug, Clone, Serialize)]
pub struct RegistryStats {
    pub capacity: usize,
    pub open: usize,
    pub cached: usize,
    pub peak_open: u64,
    pub opens_total: u64,
    pub evictions_total: u64,
    /// Tantivy writers open now (each: an indexing thread, a merge thread, a lock file).
    pub open_writers: u64,
}

#[derive(Clone)]
pub struct Registry {
    shared: Arc<Shared>,
}

impl Registry {
    pub fn new(data_dir: &Path, capacity: usize, wait_timeout: Duration) -> Self {
        let capacity = capacity.max(1);
        Registry {
            shared: Arc::new(Shared {
                data_dir: data_dir.to_path_buf(),
                capacity,
                wait_timeout,
                state: Mutex::new(State {
                    cache: LruCache::unbounded(),
                    opening: HashSet::new(),
                    live: 0,
                    removed: HashSet::new(),
                    instances: HashMap::new(),
                    closing: 0,
                    released: HashMap::new(),
                    held: HashSet::new(),
                }),
                changed: Condvar::new(),
                closed: AtomicBool::new(false),
                peak: AtomicU64::new(0),
                opens: AtomicU64::new(0),
                evictions: AtomicU64::new(0),
                writers: Writers::default(),
                open_latency: Default::default(),
                tiering: std::sync::OnceLock::new(),
                closer: Mutex::new(None),
            }),
        }
    }

    pub fn data_dir(&self) -> &Path {
        &self.shared.data_dir
    }

    /// Returns a handle to the store of workspace `id`, opening it if needed. The caller must
    /// already know from the control plane that the workspace exists.
    pub fn get(&self, id: Uuid) -> Result<Handle> {
        let sh = &self.shared;
        let deadline = Instant::now() + sh.wait_timeout;
        let mut st = sh.lock();
        loop {
            if sh.closed.load(Ordering::Acquire) {
                return Err(Error::ShuttingDown);
            }
            if st.removed.contains(&id) {
                return Err(Error::NotFound(crate::error::Resource::Workspace));
            }
            if let Some(ws) = st.cache.get(&id) {
                return Ok(self.handle(ws.clone()));
            }
            if st.opening.contains(&id) || st.held.contains(&id) {
                st = sh.wait(st, deadline)?;
                continue;
            }
            if let Some(alive) = st.instances.get(&id) {
                // Not cached, but open: evicted or removed while a request held it, or closing.
                // The live one is taken back (it is counted in `live` already); a closing one
                // is waited for. Never a second instance of the same store.
                match alive.upgrade() {
                    Some(ws) => {
                        st.cache.put(id, ws.clone());
                        return Ok(self.handle(ws));
                    }
                    None => {
                        st = sh.wait(st, deadline)?;
                        continue;
                    }
                }
            }
            if st.live + st.opening.len() >= sh.capacity {
                // Stores already on their way out free their slots soon: wait for them
                // rather than evict more.
                if st.closing > 0 {
                    st = sh.wait(st, deadline)?;
                    continue;
                }
                match self.evict_one(&mut st) {
                    Evicted::Closing => {}
                    Evicted::CloseHere(ws) => {
                        drop(st);
                        drop(ws);
                        st = sh.lock();
                    }
                    Evicted::None => st = sh.wait(st, deadline)?,
                }
                continue;
            }
            st.opening.insert(id);
            drop(st);
            let started = Instant::now();
            let dir = dir_of(&sh.data_dir, id);
            // Tiered storage first makes the folder current (hydrates it from the object
            // store); inside `opening`, so concurrent requests wait on one hydration.
            let opened = match sh.tiering.get() {
                Some(t) => t.before_open(id, &dir),
                None => Ok(()),
            }
            .and_then(|_| Workspace::open_counted(&dir, id, sh.writers.clone()));
            sh.open_latency.observe(started.elapsed());
            let mut st = sh.lock();
            st.opening.remove(&id);
            sh.changed.notify_all();
            let mut ws = opened?;
            let weak: Weak<Shared> = Arc::downgrade(&self.shared);
            // Told once the store's files are closed (after every field of the store dropped).
            ws.set_on_close(Box::new(move || {
                if let Some(sh) = weak.upgrade() {
                    let mut st = sh.lock();
                    st.live = st.live.saturating_sub(1);
                    // The entry is this instance's (at most one per id, and a new one is
                    // made only once this one is gone from the map).
                    if st.instances.get(&id).is_some_and(|w| w.strong_count() == 0) {
                        st.instances.remove(&id);
                    }
                    sh.changed.notify_all();
                }
            }));
            st.live += 1;
            sh.peak.fetch_max(st.live as u64, Ordering::Relaxed);
            sh.opens.fetch_add(1, Ordering::Relaxed);
            let ws = Arc::new(ws);
            st.instances.insert(id, Arc::downgrade(&ws));
            // An index found unreadable later (by a search, a commit) is rebuilt the same way.
            let (weak_ws, weak_sh) = (Arc::downgrade(&ws), Arc::downgrade(&self.shared));
            ws.set_rebuilder(Box::new(move || {
                if let (Some(ws), Some(shared)) = (weak_ws.upgrade(), weak_sh.upgrade()) {
                    spawn_rebuild(Handle {
                        ws: Some(ws),
                        shared,
                    });
                }
            }));
            st.cache.put(id, ws.clone());
            // Full: the least recently used idle store starts closing now, in the background,
            // so the next miss finds its slot free instead of closing it itself.
            let close_here = if st.live + st.opening.len() >= sh.capacity && st.closing == 0 {
                match self.evict_one(&mut st) {
                    Evicted::CloseHere(ws) => Some(ws),
                    _ => None,
                }
            } else {
                None
            };
            drop(st);
            drop(close_here);
            if ws.rebuild_pending() {
                spawn_rebuild(self.handle(ws.clone()));
            }
            return Ok(self.handle(ws));
        }
    }

    /// Takes the least recently used store that no request holds out of the cache and hands
    /// it to the closer thread (closed there, never under the lock nor on the requester's
    /// time). Its slot stays counted in `live` until it is closed. Returns whether there was
    /// one.
    fn evict_one(&self, st: &mut State) -> Evicted {
        let victim = st
            .cache
            .iter()
            .rev()
            .find(|(_, ws)| Arc::strong_count(ws) == 1)
            .map(|(k, _)| *k);
        let Some(ws) = victim.and_then(|k| st.cache.pop(&k)) else {
            return Evicted::None;
        };
        self.shared.evictions.fetch_add(1, Ordering::Relaxed);
        st.closing += 1;
        match self.send_to_closer(ws) {
            Ok(()) => Evicted::Closing,
            Err(ws) => {
                // No closer thread: the caller closes it, outside the lock.
                st.closing -= 1;
                Evicted::CloseHere(ws)
            }
        }
    }

    /// Sends an evicted store to the closer thread, starting it on first use.
    fn send_to_closer(&self, ws: Arc<Workspace>) -> std::result::Result<(), Arc<Workspace>> {
        let mut closer = self.shared.closer.lock().unwrap_or_else(|p| p.into_inner());
        if closer.is_none() {
            let (tx, rx) = std::sync::mpsc::channel::<Arc<Workspace>>();
            let weak = Arc::downgrade(&self.shared);
            let started = std::thread::Builder::new()
                .name("enclave-store-closer".into())
                .spawn(move || {
                    for ws in rx {
                        // The last reference: dropping it closes the store (writer committed
                        // and closed, connections closed), then `live` goes down.
                        drop(ws);
                        if let Some(sh) = weak.upgrade() {
                            let mut st = sh.lock();
                            st.closing = st.closing.saturating_sub(1);
                            sh.changed.notify_all();
                        }
                    }
                });
            match started {
                Ok(_) => *closer = Some(tx),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot start the store closer thread");
                    return Err(ws);
                }
            }
        }
        match closer.as_ref() {
            Some(tx) => tx.send(ws).map_err(|e| e.0),
            None => Err(ws),
        }
    }

    /// A handle to the store of `id` if it is open now (never opens it).
    pub fn get_if_open(&self, id: Uuid) -> Option<Handle> {
        let ws = self.shared.lock().cache.peek(&id).cloned()?;
        Some(self.handle(ws))
    }

    /// The latency histogram of store opens.
    pub fn open_latency(&self) -> &crate::histogram::Histogram {
        &self.shared.open_latency
    }

    fn handle(&self, ws: Arc<Workspace>) -> Handle {
        Handle {
            ws: Some(ws),
            shared: self.shared.clone(),
        }
    }

    /// Takes workspace `id` out of the cache (before its folder is deleted) for good: it is not
    /// opened again by this registry. Requests that hold it keep a working handle until they
    /// finish. Returns whether it was cached.
    pub fn remove(&self, id: Uuid) -> bool {
        let sh = &self.shared;
        let mut st = sh.lock();
        while st.opening.contains(&id) || st.held.contains(&id) {
            st = sh.changed.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        st.removed.insert(id);
        let removed = st.cache.pop(&id);
        drop(st);
        removed.is_some()
    }

    /// Waits (up to the registry's wait timeout) until no instance of workspace `id` is open,
    /// after [`Registry::remove`]: its folder may then be replaced (a holder would otherwise
    /// keep working on the old files and open new ones by path in the new folder). `Busy`
    /// when a request still holds it at the deadline.
    pub fn wait_closed(&self, id: Uuid) -> Result<()> {
        let sh = &self.shared;
        let deadline = Instant::now() + sh.wait_timeout;
        let mut st = sh.lock();
        while st.instances.contains_key(&id) {
            st = sh.wait(st, deadline)?;
        }
        Ok(())
    }

    /// Lets a removed workspace be opened again: its deletion was undone (a restore within the
    /// grace period, its record live again). Its folder was never touched.
    pub fn readmit(&self, id: Uuid) {
        self.shared.lock().removed.remove(&id);
    }

    /// Commits and closes the Tantivy writers that have been idle for `idle`, whoever opened
    /// them (a request, a job, a repair, a rebuild) and wherever their store is (cached, or
    /// evicted or removed while a request holds it). A writer in use is skipped, never waited
    /// for. Returns how many it closed.
    pub fn close_idle_writers(&self, idle: Duration) -> usize {
        self.shared.writers.close_idle(idle)
    }

    /// Refuses new opens, then flushes and closes every cached store (writers committed, WAL
    /// checkpointed). Stores still held by a request close when it lets go.
    pub fn shutdown(&self) {
        self.shared.closed.store(true, Ordering::Release);
        let all: Vec<Arc<Workspace>> = {
            let mut st = self.shared.lock();
            let mut all = Vec::with_capacity(st.cache.len());
            while let Some((_, ws)) = st.cache.pop_lru() {
                all.push(ws);
            }
            self.shared.changed.notify_all();
            all
        };
        for ws in all {
            if let Err(e) = ws.flush() {
                tracing::warn!(workspace_id = %ws.id(), error = %e, "flush on shutdown failed");
            }
        }
        // Stores evicted just before are closed by the closer thread: wait for them (bounded).
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut st = self.shared.lock();
        while st.closing > 0 {
            match self.shared.wait(st, deadline) {
                Ok(g) => st = g,
                Err(_) => return,
            }
        }
    }

    pub fn stats(&self) -> RegistryStats {
        let sh = &self.shared;
        let st = sh.lock();
        RegistryStats {
            capacity: sh.capacity,
            open: st.live,
            cached: st.cache.len(),
            peak_open: sh.peak.load(Ordering::Relaxed),
            opens_total: sh.opens.load(Ordering::Relaxed),
            evictions_total: sh.evictions.load(Ordering::Relaxed),
            open_writers: sh.writers.get(),
        }
    }
}

/// What [`Registry::evict_one`] did.
enum Evicted {
    /// No store could be evicted (all held).
    None,
    /// One is closing on the closer thread.
    Closing,
    /// One was taken out but must be closed by the caller, outside the lock.
    CloseHere(Arc<Workspace>),
}

/// Tiered storage's hook on the registry's miss path (implemented by
/// `durability::tier::Tier`, installed by the server): called before a store is opened, inside
/// the registry's single-flight window, to make its folder current (download it from the
/// object store when it was offloaded; replace a stale copy).
pub trait Tiering: Send + Sync {
    fn before_open(&self, id: Uuid, dir: &Path) -> Result<()>;
}

/// A workspace held closed by [`Registry::hold_closed`]: until dropped, `get` of it waits.
pub struct ClosedHold {
    id: Uuid,
    shared: Arc<Shared>,
}

impl Drop for ClosedHold {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        st.held.remove(&self.id);
        self.shared.changed.notify_all();
    }
}

/// Tiered storage's side of the registry.
impl Registry {
    /// Installs the miss-path hook (once; later calls are ignored).
    pub fn set_tiering(&self, t: Arc<dyn Tiering>) {
        let _ = self.shared.tiering.set(t);
    }

    /// Keeps workspace `id` closed while the hold lives (opens of it wait), if it is closed now:
    /// not cached, not being opened, no instance of it open anywhere (a store evicted while a
    /// request holds it counts), not removed, not already held. Else `None`.
    pub fn hold_closed(&self, id: Uuid) -> Option<ClosedHold> {
        let mut st = self.shared.lock();
        if st.cache.contains(&id)
            || st.opening.contains(&id)
            || st.held.contains(&id)
            || st.removed.contains(&id)
            || st.instances.contains_key(&id)
        {
            return None;
        }
        st.held.insert(id);
        Some(ClosedHold {
            id,
            shared: self.shared.clone(),
        })
    }

    /// Closes the cached stores that no request holds and whose last handle was let go more
    /// than `idle` ago (`skew`: how far the injected clock is ahead, so tests need not sleep).
    /// Returns how many it closed.
    pub fn close_idle_stores(&self, idle: Duration, skew: Duration) -> usize {
        let now = Instant::now();
        let victims: Vec<Arc<Workspace>> = {
            let mut st = self.shared.lock();
            let ids: Vec<Uuid> = st
                .cache
                .iter()
                .filter(|(id, ws)| {
                    Arc::strong_count(ws) == 1
                        && st
                            .released
                            .get(id)
                            .is_none_or(|t| now.duration_since(*t) + skew >= idle)
                })
                .map(|(id, _)| *id)
                .collect();
            ids.iter().filter_map(|id| st.cache.pop(id)).collect()
        };
        let n = victims.len();
        // Closing does I/O (writer commit); never under the lock.
        drop(victims);
        n
    }

    /// When a handle to `id` was last let go in this process (`None`: never opened here).
    pub fn last_released(&self, id: Uuid) -> Option<Instant> {
        self.shared.lock().released.get(&id).copied()
    }
}

/// Rebuilds a store's missing or unreadable index from SQLite on a thread of its own
/// (full-text search answers 503 meanwhile). The thread holds the store, so it is not evicted
/// mid-rebuild. A failure (a full disk, an index that cannot be written) is retried
/// [`REBUILD_ATTEMPTS`] times with a doubling pause, then given up: logged, and said in the
/// 503 of full-text search, until the store is next opened.
fn spawn_rebuild(handle: Handle) {
    let id = handle.id();
    let spawned = std::thread::Builder::new()
        .name("enclave-index-rebuild".into())
        .spawn(move || {
            let mut pause = REBUILD_FIRST_RETRY;
            for attempt in 1..=REBUILD_ATTEMPTS {
                let e = match handle.rebuild_index() {
                    Ok(_) => return,
                    Err(e) => e,
                };
                if attempt == REBUILD_ATTEMPTS {
                    tracing::error!(workspace_id = %id, error = %e, attempts = attempt,
                        "index rebuild failed; giving up until the workspace is next opened");
                    handle.rebuild_gave_up(&e);
                    return;
                }
                tracing::warn!(workspace_id = %id, error = %e, attempt, "index rebuild failed; retrying");
                let until = Instant::now() + pause;
                while Instant::now() < until {
                    if handle.shared.closed.load(Ordering::Acquire) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                pause *= 2;
            }
        });
    if let Err(e) = spawned {
        tracing::error!(workspace_id = %id, error = %e, "cannot start the index rebuild");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workspace::create;
    use std::sync::mpsc;

    fn setup(
        n: usize,
        capacity: usize,
        wait: Duration,
    ) -> (tempfile::TempDir, Registry, Vec<Uuid>) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let ids: Vec<Uuid> = (0..n).map(|_| crate::ids::new_id()).collect();
        for id in &ids {
            create(&dir_of(tmp.path(), *id)).expect("create");
        }
        let reg = Registry::new(tmp.path(), capacity, wait);
        (tmp, reg, ids)
    }

    fn usable(h: &Handle) -> bool {
        h.stats().is_ok()
    }

    #[test]
    fn never_more_open_than_capacity() {
        let (_t, reg, ids) = setup(6, 2, Duration::from_secs(5));
        for round in 0..3 {
            for id in &ids {
                let h = reg.get(*id).expect("get");
                assert!(usable(&h), "round {round}");
            }
        }
        let s = reg.stats();
        assert!(s.peak_open <= 2, "{s:?}");
        // A miss that fills the cache sends the least recently used idle store to the closer
        // ahead of the next miss: 1 or 2 are open, depending on how far the closer has got.
        assert!((1..=2).contains(&s.open), "{s:?}");
        assert!(s.evictions_total >= 16);
    }

    #[test]
    fn a_held_store_is_not_evicted() {
        let (_t, reg, ids) = setup(3, 2, Duration::from_secs(5));
        let held = reg.get(ids[0]).expect("a");
        drop(reg.get(ids[1]).expect("b"));
        drop(reg.get(ids[2]).expect("c")); // must evict b, the idle one
        assert!(usable(&held));
        let s = reg.stats();
        assert_eq!((s.open, s.evictions_total), (2, 1));
        // `a` is still the cached instance: getting it again opens nothing new.
        let opens = s.opens_total;
        drop(reg.get(ids[0]).expect("a again"));
        assert_eq!(reg.stats().opens_total, opens);
    }

    #[test]
    fn a_full_cache_of_held_stores_makes_new_opens_wait_for_a_release() {
        let (_t, reg, ids) = setup(2, 1, Duration::from_secs(10));
        let held = reg.get(ids[0]).expect("a");
        let (tx, rx) = mpsc::channel();
        let reg2 = reg.clone();
        let b = ids[1];
        let waiter = std::thread::spawn(move || {
            let h = reg2.get(b);
            let ok = h.as_ref().map(usable).unwrap_or(false);
            tx.send(ok).expect("send");
        });
        std::thread::sleep(Duration::from_millis(200));
        assert!(rx.try_recv().is_err(), "b must wait while a is held");
        // The slow holder keeps a working store the whole time.
        assert!(usable(&held));
        drop(held);
        assert!(rx
            .recv_timeout(Duration::from_secs(10))
            .expect("b finished"));
        waiter.join().expect("join");
        assert_eq!(reg.stats().peak_open, 1);
    }

    #[test]
    fn waiting_too_long_is_busy_not_a_hang() {
        let (_t, reg, ids) = setup(2, 1, Duration::from_millis(50));
        let _held = reg.get(ids[0]).expect("a");
        assert!(matches!(reg.get(ids[1]), Err(Error::Busy)));
    }

    #[test]
    fn removing_a_held_store_keeps_the_holder_working() {
        let (_t, reg, ids) = setup(1, 2, Duration::from_secs(5));
        let held = reg.get(ids[0]).expect("a");
        assert!(reg.remove(ids[0]));
        assert!(usable(&held));
        assert_eq!(reg.stats().cached, 0);
        assert_eq!(reg.stats().open, 1, "still open while held");
        drop(held);
        assert_eq!(reg.stats().open, 0, "closed when the last holder let go");
    }

    #[test]
    fn concurrent_gets_of_one_store_open_it_once() {
        let (_t, reg, ids) = setup(1, 4, Duration::from_secs(5));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let reg = reg.clone();
                let id = ids[0];
                std::thread::spawn(move || reg.get(id).map(|h| usable(&h)).unwrap_or(false))
            })
            .collect();
        for t in threads {
            assert!(t.join().expect("join"));
        }
        assert_eq!(reg.stats().opens_total, 1);
    }

    #[test]
    fn a_missing_store_is_not_found_and_leaves_no_slot_taken() {
        let (_t, reg, _) = setup(0, 1, Duration::from_secs(1));
        assert!(matches!(
            reg.get(crate::ids::new_id()),
            Err(Error::NotFound(_))
        ));
        assert_eq!(reg.stats().open, 0);
    }

    /// Stores whose index disagrees with SQLite (chunks without a matching commit, as a crash
    /// between the two leaves them): opening them repairs the index.
    fn setup_needing_repair(n: usize) -> (tempfile::TempDir, Registry, Vec<Uuid>) {
        let (tmp, reg, ids) = setup(n, n + 1, Duration::from_secs(5));
        for id in &ids {
            let ws = Workspace::open(&dir_of(tmp.path(), *id), *id).expect("open");
            let conn = ws.conn();
            conn.execute(
                "INSERT INTO documents (id, title, mime_type, content_hash, byte_size, status, created_at, updated_at)
                 VALUES ('d', 'T', 'text/plain', 'h', 1, 'indexed', 'now', 'now')",
                [],
            )
            .expect("doc");
            conn.execute(
                "INSERT INTO chunks (document_id, ordinal, text) VALUES ('d', 0, 'repaired words')",
                [],
            )
            .expect("chunk");
            crate::workspace::repair::bump_generation(&conn).expect("bump");
        }
        (tmp, reg, ids)
    }

    #[test]
    fn repairs_on_open_leave_no_writer_open() {
        let (_t, reg, ids) = setup_needing_repair(4);
        for id in &ids {
            let h = reg.get(*id).expect("get");
            assert_eq!(h.indexed_chunks(), 1, "repaired on open");
        }
        assert_eq!(reg.stats().open, 4);
        assert_eq!(reg.stats().open_writers, 0, "a repair closes its writer");
    }

    #[test]
    fn the_sweeper_closes_every_idle_writer_wherever_its_store_is() {
        let (_t, reg, ids) = setup(3, 4, Duration::from_secs(5));
        for id in &ids {
            let h = reg.get(*id).expect("get");
            h.index_chunk(1, "d", "T", "", "words").expect("index");
        }
        // One store leaves the cache while a request holds it (as a deletion or an eviction
        // leaves it): its writer is swept all the same.
        let held = reg.get(ids[0]).expect("held");
        assert_eq!(reg.stats().open_writers, 3);
        assert_eq!(reg.close_idle_writers(Duration::from_secs(3600)), 0);
        assert_eq!(reg.stats().open_writers, 3, "not idle yet");
        assert!(reg.remove(ids[0]));
        assert_eq!(reg.close_idle_writers(Duration::ZERO), 3);
        assert_eq!(reg.stats().open_writers, 0);
        // The held store still works, and opens a writer again on demand.
        held.index_chunk(2, "d", "T", "", "more")
            .expect("index again");
        assert_eq!(reg.stats().open_writers, 1);
        drop(held);
        assert_eq!(reg.stats().open_writers, 0, "closed with its store");
    }

    #[test]
    fn a_writer_in_use_does_not_stall_the_sweep_of_the_others() {
        let (_t, reg, ids) = setup(3, 4, Duration::from_secs(5));
        for id in &ids[1..] {
            let h = reg.get(*id).expect("get");
            h.index_chunk(1, "d", "T", "", "words").expect("index");
        }
        // A long index change (a rebuild, a big batch) holds one store's writer.
        let (started_tx, started) = mpsc::channel();
        let (release, release_rx) = mpsc::channel::<()>();
        let busy = reg.get(ids[0]).expect("busy");
        let holder = std::thread::spawn(move || {
            busy.with_writer(|_| {
                started_tx.send(()).expect("started");
                let _ = release_rx.recv();
                Ok(())
            })
            .expect("busy change");
        });
        started.recv().expect("holder started");
        let (done_tx, done) = mpsc::channel();
        let sweeper = {
            let reg = reg.clone();
            std::thread::spawn(move || {
                let _ = done_tx.send(reg.close_idle_writers(Duration::ZERO));
            })
        };
        let closed = done.recv_timeout(Duration::from_secs(20));
        release.send(()).expect("release");
        assert_eq!(
            closed,
            Ok(2),
            "the sweep skips the busy writer and closes the others"
        );
        holder.join().expect("holder");
        sweeper.join().expect("sweeper");
        assert_eq!(reg.stats().open_writers, 1, "the busy one, now idle");
        assert_eq!(reg.close_idle_writers(Duration::ZERO), 1);
        assert_eq!(reg.stats().open_writers, 0);
    }

    #[test]
    fn a_store_taken_out_while_held_is_taken_back_not_opened_twice() {
        let (_t, reg, ids) = setup(2, 2, Duration::from_secs(5));
        let held = reg.get(ids[0]).expect("a");
        // Out of the cache while a request holds it (a deletion undone by a restore).
        assert!(reg.remove(ids[0]));
        reg.readmit(ids[0]);
        let opens = reg.stats().opens_total;
        let again = reg.get(ids[0]).expect("a again");
        assert!(
            std::ptr::eq::<Workspace>(&*held, &*again),
            "the held instance is taken back"
        );
        assert_eq!(reg.stats().opens_total, opens, "nothing opened");
        assert_eq!(reg.stats().open, 1);
        // Its writer slot is the one slot of the store: a writer opened through one handle is
        // seen through the other.
        again.index_chunk(1, "d", "T", "", "words").expect("index");
        assert!(held.writer_is_open());
        drop((held, again));
        assert_eq!(reg.stats().open, 1, "cached again");
    }

    #[test]
    fn an_evicted_store_is_closed_before_it_opens_again() {
        // Capacity 1: every get of the other store evicts this one, in the background; a get
        // right after finds it closing and waits, so there is never a second instance.
        let (_t, reg, ids) = setup(2, 1, Duration::from_secs(10));
        for _ in 0..50 {
            for id in &ids {
                let h = reg.get(*id).expect("get");
                assert!(usable(&h));
                h.index_chunk(1, "d", "T", "", "words").expect("index");
            }
        }
        let s = reg.stats();
        assert_eq!(s.peak_open, 1, "{s:?}");
        assert!(s.evictions_total >= 98, "{s:?}");
    }

    #[test]
    fn waiting_for_a_removed_store_to_close_is_bounded() {
        let (_t, reg, ids) = setup(1, 2, Duration::from_millis(100));
        let held = reg.get(ids[0]).expect("a");
        assert!(reg.remove(ids[0]));
        assert!(matches!(reg.wait_closed(ids[0]), Err(Error::Busy)));
        drop(held);
        reg.wait_closed(ids[0]).expect("closed once let go");
        assert_eq!(reg.stats().open, 0);
    }

    #[test]
    fn shutdown_refuses_new_opens() {
        let (_t, reg, ids) = setup(1, 2, Duration::from_secs(1));
        drop(reg.get(ids[0]).expect("a"));
        reg.shutdown();
        assert_eq!(reg.stats().open, 0);
        assert!(matches!(reg.get(ids[0]), Err(Error::ShuttingDown)));
    }
}
