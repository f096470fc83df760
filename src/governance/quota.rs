//! Quotas: counted resources checked and reserved atomically before work is accepted.
//!
//! How usage is counted: an in-memory ledger per org, seeded from the stores of truth (the
//! control plane for workspaces, seats and API keys; the org's workspace stores for documents
//! and storage bytes) and moved by the reservations of accepted work. A check takes the org's
//! ledger lock, compares `used + delta` with the limit, and on success adds `delta` at once and
//! counts the operation in flight; the operation then runs without the lock and either commits
//! (the delta stays, now also in the store) or is dropped (the delta is taken back). So
//! concurrent requests never overshoot, and a refusal always means `used + delta > limit`.
//!
//! A resource's count is re-read from its store only when no operation of the org is in flight
//! (the store and the ledger then agree exactly): control-plane counts at every check (a cheap
//! `count(*)`), store counts when marked stale (a document deleted or replaced, a workspace
//! deleted or restored) or older than [`STORE_REFRESH`] (index and database growth after
//! ingestion is only seen then).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use uuid::Uuid;

use super::monthly::{Monthly, UsageSource};
use super::usage::Refusal;
use super::Governance;
use crate::control::limits::Limit;
use crate::error::{Error, Result};
use crate::identity::{Seat, SeatHold, SeatQuota, WorkspaceAccess};

/// How old a count read from the workspace stores may get before it is read again.
pub const STORE_REFRESH: Duration = Duration::from_secs(30);

/// A resource whose current usage a quota compares with its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Counted {
    Workspaces,
    Documents,
    StorageBytes,
    Members,
    ApiKeys,
}

impl Counted {
    pub const ALL: [Counted; 5] = [
        Counted::Workspaces,
        Counted::Documents,
        Counted::StorageBytes,
        Counted::Members,
        Counted::ApiKeys,
    ];

    pub fn limit(self) -> Limit {
        match self {
            Counted::Workspaces => Limit::Workspaces,
            Counted::Documents => Limit::Documents,
            Counted::StorageBytes => Limit::StorageBytes,
            Counted::Members => Limit::Members,
            Counted::ApiKeys => Limit::ApiKeys,
        }
    }

    /// Counted in the workspace stores (slow to read), not in the control plane.
    pub fn in_stores(self) -> bool {
        matches!(self, Counted::Documents | Counted::StorageBytes)
    }

    fn index(self) -> usize {
        Counted::ALL.iter().position(|c| *c == self).unwrap_or(0)
    }
}

/// The refusal of a quota: what, its limit, and what was used when the request came.
pub fn exceeded(limit: Limit, max: u64, used: u64) -> Error {
    Error::QuotaExceeded {
        resource: limit.as_str(),
        limit: max,
        used,
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Count {
    /// `None` until read from the store, or after it was marked stale.
    value: Option<i64>,
    read_at: Option<Instant>,
}

#[derive(Debug, Default)]
struct OrgLedger {
    counts: [Count; 5],
    /// Per resource: reservations holding a delta of it, neither committed nor dropped.
    in_flight: [u32; 5],
}

/// The ledger of every org this process has checked.
#[derive(Debug, Default)]
pub struct Ledger {
    orgs: Mutex<HashMap<Uuid, Arc<Mutex<OrgLedger>>>>,
}

/// One resource of a request: how much it adds and its limit (`None`: unlimited).
#[derive(Debug, Clone, Copy)]
pub struct Ask {
    pub what: Counted,
    pub delta: i64,
    pub limit: Option<u64>,
}

/// Accepted work: holds its deltas in the ledger until committed or dropped.
#[must_use = "a reservation is taken back when dropped without commit"]
pub struct Reservation {
    org: Arc<Mutex<OrgLedger>>,
    deltas: Vec<(Counted, i64)>,
    done: bool,
}

impl Reservation {
    /// The work was done: its usage stays counted.
    pub fn commit(mut self) {
        self.done = true;
        let mut l = lock(&self.org);
        for (what, _) in &self.deltas {
            let i = what.index();
            l.in_flight[i] = l.in_flight[i].saturating_sub(1);
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut l = lock(&self.org);
        for (what, d) in &self.deltas {
            let i = what.index();
            if let Some(v) = l.counts[i].value.as_mut() {
                *v -= d;
            }
            l.in_flight[i] = l.in_flight[i].saturating_sub(1);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Ledger {
    fn org(&self, org: Uuid) -> Arc<Mutex<OrgLedger>> {
        lock(&self.orgs).entry(org).or_default().clone()
    }

    /// Checks every ask against its limit and, when all fit, reserves them together. `read`
    /// reads a resource's current usage from its store; it is called with the org's ledger
    /// locked, only when nothing of the org is in flight. An ask with no limit and no count
    /// yet is not counted (nothing to compare with).
    pub fn reserve(
        &self,
        org: Uuid,
        asks: &[Ask],
        read: &dyn Fn(Counted) -> Result<i64>,
    ) -> Result<Reservation> {
        let ledger = self.org(org);
        let mut l = lock(&ledger);
        for a in asks {
            let c = l.counts[a.what.index()];
            let fresh = c.value.is_some()
                && (a.what.in_stores() && c.read_at.is_some_and(|t| t.elapsed() < STORE_REFRESH));
            if l.in_flight[a.what.index()] == 0 && a.limit.is_some() && !fresh {
                let v = read(a.what)?;
                l.counts[a.what.index()] = Count {
                    value: Some(v),
                    read_at: Some(Instant::now()),
                };
            }
        }
        for a in asks {
            if let (Some(max), Some(used)) = (a.limit, l.counts[a.what.index()].value) {
                let used = used.max(0);
                if a.delta > 0 && used.saturating_add(a.delta) > max as i64 {
                    return Err(exceeded(a.what.limit(), max, used as u64));
                }
            }
        }
        let mut deltas = Vec::with_capacity(asks.len());
        for a in asks {
            let i = a.what.index();
            if let Some(v) = l.counts[i].value.as_mut() {
                *v += a.delta;
                deltas.push((a.what, a.delta));
                l.in_flight[i] += 1;
            }
        }
        Ok(Reservation {
            org: ledger.clone(),
            deltas,
            done: false,
        })
    }

    /// Forgets the org's counts of `what`: re-read from the store at the next quiet check
    /// (after a deletion, a replacement, a restore).
    pub fn stale(&self, org: Uuid, what: &[Counted]) {
        let ledger = self.org(org);
        let mut l = lock(&ledger);
        for w in what {
            if l.in_flight[w.index()] == 0 {
                l.counts[w.index()] = Count::default();
            } else {
                // Still counted until it is quiet; then read again.
                l.counts[w.index()].read_at = None;
            }
        }
    }

    /// Moves a count by `delta` without a check (a deletion frees what it held).
    pub fn adjust(&self, org: Uuid, what: Counted, delta: i64) {
        let ledger = self.org(org);
        let mut l = lock(&ledger);
        if let Some(v) = l.counts[what.index()].value.as_mut() {
            *v += delta;
        }
        l.counts[what.index()].read_at = None;
    }

    /// The org's counts as last known (`None`: not read yet), for `GET .../limits`.
    pub fn known(&self, org: Uuid, what: Counted) -> Option<i64> {
        let ledger = self.org(org);
        let l = lock(&ledger);
        l.counts[what.index()].value
    }
}

impl SeatHold for Reservation {
    fn commit(self: Box<Self>) {
        (*self).commit();
    }
}

/// Everything a workspace holds that an org's quotas count.
pub const WORKSPACE_CONTENTS: [Counted; 4] = [
    Counted::Workspaces,
    Counted::Documents,
    Counted::StorageBytes,
    Counted::ApiKeys,
];

impl Governance {
    /// Reads an org's current usage of a counted resource from its store of truth (`now`: what
    /// an expired invitation or key is compared with).
    pub(super) fn read_usage(&self, org: Uuid, what: Counted, now: &str) -> Result<i64> {
        match what {
            Counted::Workspaces => self.control.count_workspaces(org),
            Counted::Members => self.control.count_seats(org, now),
            Counted::ApiKeys => self.control.count_api_keys(org, now),
            Counted::Documents | Counted::StorageBytes => {
                let mut docs = 0i64;
                let mut bytes = 0i64;
                for ws in self.control.live_workspace_ids(org)? {
                    // Tiered storage: an offloaded workspace is counted from what its offload
                    // recorded (exact: it has not been opened since), not hydrated to count it.
                    if let Some(t) = self.control.tier_of(ws)? {
                        if t.state == crate::control::tier::TierState::Offloaded {
                            docs += i64::try_from(t.documents).unwrap_or(i64::MAX);
                            bytes += i64::try_from(t.bytes).unwrap_or(i64::MAX);
                            continue;
                        }
                    }
                    // The record first: a deleted workspace is never reopened.
                    let handle = match self
                        .control
                        .get_workspace(ws)
                        .and_then(|_| self.registry.get(ws))
                    {
                        Ok(h) => h,
                        Err(Error::NotFound(_)) => continue,
                        Err(e) => return Err(e),
                    };
                    let s = handle.stats()?;
                    docs += s.documents;
                    bytes += i64::try_from(s.bytes_on_disk).unwrap_or(i64::MAX);
                }
                Ok(if what == Counted::Documents {
                    docs
                } else {
                    bytes
                })
            }
        }
    }

    /// Reserves room for `asks` in `org` under its effective limits, or refuses with
    /// `QuotaExceeded` (nothing reserved; the refusal counted for `org` and `ws`). Commit the
    /// reservation once the work is done.
    pub fn reserve(
        &self,
        org: Uuid,
        ws: Option<Uuid>,
        asks: &[(Counted, i64)],
    ) -> Result<Reservation> {
        let r = self.reserve_uncounted(org, asks);
        if let Err(Error::QuotaExceeded { .. }) = &r {
            self.record_refusal(org, ws, Refusal::Quota);
        }
        r
    }

    fn reserve_uncounted(&self, org: Uuid, asks: &[(Counted, i64)]) -> Result<Reservation> {
        let limits = self.limits(org)?;
        let asks: Vec<Ask> = asks
            .iter()
            .map(|&(what, delta)| Ask {
                what,
                delta,
                limit: limits.get(what.limit()),
            })
            .collect();
        let now = self.identity.clock().now_text();
        self.ledger
            .reserve(org, &asks, &|what| self.read_usage(org, what, &now))
    }

    /// The checks of a document upload into the context's workspace: its size against
    /// `upload_bytes` (a refusal counted here), the month's embedding chunks not used up, and
    /// room for one more document and its bytes. A `QuotaExceeded` (monthly chunks, documents,
    /// storage) is NOT counted here: knowledge first looks for an identical document already
    /// stored (answered as the duplicate, no refusal) and counts the refusal with
    /// [`Governance::record_refusal`] when there is none. `replaces` is true when the upload
    /// names an `external_id` (it may replace a document: counted again from the stores later).
    pub fn reserve_document(
        &self,
        access: &WorkspaceAccess,
        bytes: u64,
        replaces: bool,
    ) -> Result<Reservation> {
        let (org, ws) = (access.org_id(), access.workspace_id());
        self.check_upload_size(org, ws, bytes)?;
        self.monthly_room(org, Monthly::EmbeddingChunks)?;
        let r = self.reserve_uncounted(
            org,
            &[
                (Counted::Documents, 1),
                (
                    Counted::StorageBytes,
                    i64::try_from(bytes).unwrap_or(i64::MAX),
                ),
            ],
        )?;
        if replaces {
            self.ledger
                .stale(org, &[Counted::Documents, Counted::StorageBytes]);
        }
        Ok(r)
    }

    /// [`Governance::reserve_document`] for a batch: every item's size (`sizes`, in batch
    /// order) against `upload_bytes` (a refusal names the item's index), the month's embedding
    /// chunks not used up, and room for `new` more documents and `bytes` more bytes reserved
    /// together, so a batch is accepted or refused whole. A `QuotaExceeded` is not counted here
    /// (the caller counts it).
    pub fn reserve_documents(
        &self,
        access: &WorkspaceAccess,
        sizes: &[u64],
        new: u64,
        bytes: u64,
        replaces: bool,
    ) -> Result<Reservation> {
        let (org, ws) = (access.org_id(), access.workspace_id());
        for (i, b) in sizes.iter().enumerate() {
            self.check_upload_size(org, ws, *b)
                .map_err(|e| e.at_item(i))?;
        }
        self.monthly_room(org, Monthly::EmbeddingChunks)?;
        let r = self.reserve_uncounted(
            org,
            &[
                (Counted::Documents, i64::try_from(new).unwrap_or(i64::MAX)),
                (
                    Counted::StorageBytes,
                    i64::try_from(bytes).unwrap_or(i64::MAX),
                ),
            ],
        )?;
        if replaces {
            self.ledger
                .stale(org, &[Counted::Documents, Counted::StorageBytes]);
        }
        Ok(r)
    }

    /// One document's size against the plan's `upload_bytes` (a refusal counted here).
    fn check_upload_size(&self, org: Uuid, ws: Uuid, bytes: u64) -> Result<()> {
        let limits = self.limits(org)?;
        if let Some(max) = limits.get(Limit::UploadBytes) {
            if bytes > max {
                self.record_refusal(org, Some(ws), Refusal::Quota);
                return Err(Error::PayloadTooLarge(format!(
                    "the document is {bytes} bytes; the organization's plan allows uploads of at \
                     most {max} bytes"
                )));
            }
        }
        Ok(())
    }

    /// A monthly allowance (chat tokens, embedding chunks): refused (and counted) once the
    /// month's usage has reached the limit (a request's own consumption is known only after it
    /// ran).
    pub fn check_monthly(&self, org: Uuid, ws: Option<Uuid>, what: Monthly) -> Result<()> {
        let r = self.monthly_room(org, what);
        if let Err(Error::QuotaExceeded { .. }) = &r {
            self.record_refusal(org, ws, Refusal::Quota);
        }
        r
    }

    fn monthly_room(&self, org: Uuid, what: Monthly) -> Result<()> {
        let limits = self.limits(org)?;
        if let Some(max) = limits.get(what.limit()) {
            let used = self.used_this_month(org, what)?;
            if used >= max {
                return Err(exceeded(what.limit(), max, used));
            }
        }
        Ok(())
    }

    /// After a change that frees or restores counted resources (documents deleted, a workspace
    /// deleted or restored): the counts are read again from the stores at the next quiet check.
    pub fn freed(&self, org: Uuid, what: &[Counted]) {
        self.ledger.stale(org, what);
    }
}

/// Identity's members and API keys are held through the org's quotas.
impl SeatQuota for Governance {
    fn hold(&self, org: Uuid, ws: Option<Uuid>, what: Seat) -> Result<Box<dyn SeatHold>> {
        let what = match what {
            Seat::Member => Counted::Members,
            Seat::ApiKey => Counted::ApiKeys,
        };
        Ok(Box::new(self.reserve(org, ws, &[(what, 1)])?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::atomic::{AtomicI64, Ordering};

    /// A store of truth: what committed operations wrote.
    #[derive(Default)]
    struct Store {
        docs: AtomicI64,
    }

    #[test]
    fn refuses_at_the_limit_with_limit_and_used() {
        let ledger = Ledger::default();
        let org = Uuid::nil();
        let store = Store::default();
        let read = |_: Counted| Ok(store.docs.load(Ordering::SeqCst));
        let ask = [Ask {
            what: Counted::Documents,
            delta: 1,
            limit: Some(2),
        }];
        for _ in 0..2 {
            let r = ledger.reserve(org, &ask, &read).expect("below the limit");
            store.docs.fetch_add(1, Ordering::SeqCst);
            r.commit();
        }
        match ledger.reserve(org, &ask, &read) {
            Err(Error::QuotaExceeded {
                resource,
                limit,
                used,
            }) => assert_eq!((resource, limit, used), ("documents", 2, 2)),
            other => panic!("{:?}", other.map(|_| ())),
        }
        // A dropped reservation gives its room back.
        store.docs.store(1, Ordering::SeqCst);
        ledger.stale(org, &[Counted::Documents]);
        let r = ledger
            .reserve(org, &ask, &read)
            .expect("room after a delete");
        assert!(
            ledger.reserve(org, &ask, &read).is_err(),
            "in flight counts"
        );
        drop(r);
        assert!(ledger.reserve(org, &ask, &read).is_ok());
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// Ask for this many units; commit when true, else abandon.
        Add(i64, bool),
        /// Delete this many committed units (at most what exists).
        Delete(i64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (1i64..4, proptest::bool::weighted(0.8)).prop_map(|(n, c)| Op::Add(n, c)),
            1 => (1i64..3).prop_map(Op::Delete),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// The seeds' Property 3: threads run random sequences of reservations, commits,
        /// abandons and deletions against one org. The store never goes over the limit, and
        /// every refusal happened when the usage it reported plus the ask was over the limit
        /// and that usage was real (committed or in flight, never more).
        #[test]
        fn concurrent_sequences_never_overshoot_nor_refuse_below(
            limit in 1u64..20,
            seqs in proptest::collection::vec(proptest::collection::vec(op(), 1..30), 2..5),
        ) {
            let ledger = Arc::new(Ledger::default());
            let store = Arc::new(Store::default());
            // Units asked for and not yet committed or given back, and units being deleted:
            // with the store, what is real. `peak` is the most that was ever real: a refusal's
            // `used` above it would be a refusal below the limit.
            let pending = Arc::new(AtomicI64::new(0));
            let peak = Arc::new(AtomicI64::new(0));
            let org = Uuid::nil();
            let note_peak = |store: &Store, pending: &AtomicI64, peak: &AtomicI64| {
                let real = store.docs.load(Ordering::SeqCst) + pending.load(Ordering::SeqCst);
                peak.fetch_max(real, Ordering::SeqCst);
            };
            let handles: Vec<_> = seqs.into_iter().map(|seq| {
                let (ledger, store, pending, peak) =
                    (ledger.clone(), store.clone(), pending.clone(), peak.clone());
                std::thread::spawn(move || -> std::result::Result<(), String> {
                    for op in seq {
                        match op {
                            Op::Add(n, commit) => {
                                let read = |_: Counted| Ok(store.docs.load(Ordering::SeqCst));
                                let ask = [Ask { what: Counted::Documents, delta: n, limit: Some(limit) }];
                                pending.fetch_add(n, Ordering::SeqCst);
                                match ledger.reserve(org, &ask, &read) {
                                    Ok(r) => {
                                        note_peak(&store, &pending, &peak);
                                        if commit {
                                            store.docs.fetch_add(n, Ordering::SeqCst);
                                            pending.fetch_sub(n, Ordering::SeqCst);
                                            r.commit();
                                        } else {
                                            drop(r);
                                            pending.fetch_sub(n, Ordering::SeqCst);
                                        }
                                    }
                                    Err(Error::QuotaExceeded { limit: l, used, .. }) => {
                                        pending.fetch_sub(n, Ordering::SeqCst);
                                        if l != limit || used as i64 + n <= l as i64 {
                                            return Err(format!("refused below the limit: used {used} + {n} <= {l}"));
                                        }
                                        let most = peak.load(Ordering::SeqCst);
                                        if used as i64 > most {
                                            return Err(format!("refusal counted {used}, never more than {most} was used"));
                                        }
                                    }
                                    Err(e) => return Err(e.to_string()),
                                }
                            }
                            Op::Delete(n) => {
                                // As a deletion does: the store first, then the ledger.
                                let took = store.docs.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |d| Some((d - n).max(0)))
                                    .unwrap_or(0);
                                let removed = took - (took - n).max(0);
                                pending.fetch_add(removed, Ordering::SeqCst);
                                ledger.adjust(org, Counted::Documents, -removed);
                                pending.fetch_sub(removed, Ordering::SeqCst);
                            }
                        }
                        let now = store.docs.load(Ordering::SeqCst);
                        if now > limit as i64 {
                            return Err(format!("overshoot: {now} > {limit}"));
                        }
                    }
                    Ok(())
                })
            }).collect();
            for h in handles {
                let r = h.join().map_err(|_| TestCaseError::fail("thread panicked"))?;
                prop_assert!(r.is_ok(), "{:?}", r);
            }
            prop_assert!(store.docs.load(Ordering::SeqCst) <= limit as i64);
            // Once quiet, the ledger agrees with the store and everything up to the limit fits.
            let read = |_: Counted| Ok(store.docs.load(Ordering::SeqCst));
            ledger.stale(org, &[Counted::Documents]);
            let room = limit as i64 - store.docs.load(Ordering::SeqCst);
            if room > 0 {
                let ask = [Ask { what: Counted::Documents, delta: room, limit: Some(limit) }];
                prop_assert!(ledger.reserve(org, &ask, &read).is_ok(), "refused below the limit when quiet");
            }
        }
    }
}
