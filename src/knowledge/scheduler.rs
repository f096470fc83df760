//! The one job scheduler of the server. Work is handed out in quanta (a batch of documents to
//! index, a batch of chunks to embed) with two-level stride scheduling:
//!
//! - among orgs with pending work, the one with the smallest *pass* goes next; an org's pass
//!   grows by the time its quanta took divided by its plan's priority, so an org on a plan of
//!   priority 4 gets four times the worker time of one on priority 1 when both are busy;
//! - within the org, the workspace with the smallest pass goes next (equal shares).
//!
//! A newcomer starts at the smallest pass of its peers (no credit hoarding), so a workspace with
//! one pending document is served within one round however many documents another one queued.
//! A workspace is worked on by at most one worker at a time. A quantum is bounded in wall time
//! (`ingest::QUANTUM_BUDGET`), not only in items: a heavy document's extraction continues off
//! the workers ([`Extractions`]), so a round stays short whatever one tenant uploaded.
//!
//! Durability: the jobs themselves are rows of the workspace database. So that a restart finds
//! the workspaces with pending work without scanning `data/`, each such workspace has an empty
//! marker file in `data/.queue/`, created before its jobs are written and removed once it has
//! no work left.
//!
//! A workspace whose org is suspended leaves the in-memory state (its quantum ends
//! [`Outcome::Suspended`]) but keeps its marker: reactivating the org (`Tenancy::set_org_status`)
//! or restarting the server wakes it again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use uuid::Uuid;

use super::ingest::Extractions;

pub const QUEUE_DIR: &str = ".queue";

#[derive(Debug)]
struct WsEntry {
    org: Uuid,
    pass: f64,
    running: bool,
    epoch: u64,
    not_before: Option<Instant>,
}

#[derive(Debug)]
struct OrgEntry {
    pass: f64,
    weight: f64,
    members: usize,
}

#[derive(Debug, Default)]
struct State {
    ws: HashMap<Uuid, WsEntry>,
    orgs: HashMap<Uuid, OrgEntry>,
}

/// A quantum handed to a worker.
#[derive(Debug, Clone, Copy)]
pub struct Ticket {
    pub workspace: Uuid,
    pub org: Uuid,
    epoch: u64,
}

/// How a quantum ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome {
    /// There may be more work.
    More,
    /// The workspace had nothing (left) to do.
    Idle,
    /// It failed (provider down, ...): try again after a pause.
    Retry(Duration),
    /// The workspace is gone.
    Gone,
    /// The workspace's org is suspended: forget it until the org is reactivated, but keep its
    /// marker (its jobs stay queued in its database).
    Suspended,
}

pub struct Scheduler {
    state: Mutex<State>,
    cv: Condvar,
    queue_dir: PathBuf,
    stopping: AtomicBool,
    /// Extractions that outlast a quantum run here, off the workers (`ingest`).
    pub extractions: Extractions,
}

impl Scheduler {
    pub fn new(data_dir: &Path) -> Self {
        Scheduler {
            state: Mutex::new(State::default()),
            cv: Condvar::new(),
            queue_dir: data_dir.join(QUEUE_DIR),
            stopping: AtomicBool::new(false),
            extractions: Extractions::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn marker(&self, ws: Uuid) -> PathBuf {
        self.queue_dir.join(ws.hyphenated().to_string())
    }

    /// Records durably that `ws` has pending work. Called before its jobs are written.
    pub fn mark(&self, ws: Uuid) -> std::io::Result<()> {
        crate::perms::create_dir_all(&self.queue_dir)?;
        crate::perms::private_file_options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.marker(ws))?;
        Ok(())
    }

    /// Workspaces that had pending work when the server last stopped.
    pub fn marked(&self) -> Vec<Uuid> {
        let Ok(rd) = std::fs::read_dir(&self.queue_dir) else {
            return Vec::new();
        };
        rd.flatten()
            .filter_map(|e| Uuid::try_parse(e.file_name().to_str()?).ok())
            .collect()
    }

    pub fn unmark(&self, ws: Uuid) {
        let _ = std::fs::remove_file(self.marker(ws));
    }

    /// Tells the scheduler that `ws` (of `org`, whose plan has `priority`) has work.
    pub fn notify(&self, ws: Uuid, org: Uuid, priority: f64) {
        let mut st = self.lock();
        let known = st.ws.contains_key(&ws);
        if !known {
            // Re-created entries re-create their marker (a concurrent `Idle` may have removed it).
            let _ = self.mark(ws);
            let org_floor = st
                .orgs
                .values()
                .map(|o| o.pass)
                .fold(f64::INFINITY, f64::min);
            let ws_floor = st
                .ws
                .values()
                .filter(|w| w.org == org)
                .map(|w| w.pass)
                .fold(f64::INFINITY, f64::min);
            let o = st.orgs.entry(org).or_insert(OrgEntry {
                pass: if org_floor.is_finite() {
                    org_floor
                } else {
                    0.0
                },
                weight: priority.max(0.01),
                members: 0,
            });
            o.members += 1;
            o.weight = priority.max(0.01);
            st.ws.insert(
                ws,
                WsEntry {
                    org,
                    pass: if ws_floor.is_finite() { ws_floor } else { 0.0 },
                    running: false,
                    epoch: 0,
                    not_before: None,
                },
            );
        }
        if let Some(e) = st.ws.get_mut(&ws) {
            e.epoch += 1;
            e.not_before = None;
        }
        drop(st);
        self.cv.notify_all();
    }

    fn pick(st: &mut State) -> Option<Ticket> {
        let now = Instant::now();
        let ready = |w: &WsEntry| !w.running && w.not_before.is_none_or(|t| t <= now);
        let mut best_org: Option<(Uuid, f64)> = None;
        for (id, o) in &st.orgs {
            let has_ready = st.ws.values().any(|w| w.org == *id && ready(w));
            if has_ready && best_org.is_none_or(|(_, p)| o.pass < p) {
                best_org = Some((*id, o.pass));
            }
        }
        let (org, _) = best_org?;
        let (ws, entry) = st
            .ws
            .iter_mut()
            .filter(|(_, w)| w.org == org && ready(w))
            .min_by(|a, b| a.1.pass.total_cmp(&b.1.pass))?;
        entry.running = true;
        Some(Ticket {
            workspace: *ws,
            org,
            epoch: entry.epoch,
        })
    }

    /// The next quantum, waiting for one; `None` once the scheduler stops.
    pub fn next(&self) -> Option<Ticket> {
        let mut st = self.lock();
        loop {
            if self.stopping.load(Ordering::Acquire) {
                return None;
            }
            if let Some(t) = Self::pick(&mut st) {
                return Some(t);
            }
            st = self
                .cv
                .wait_timeout(st, Duration::from_millis(500))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// The next quantum if one is ready now.
    pub fn try_next(&self) -> Option<Ticket> {
        Self::pick(&mut self.lock())
    }

    /// Whether any workspace has work (ready or waiting for a retry).
    /// Workspaces with work, by their org's priority weight: (weight, queued, running). For
    /// `/metrics` (no tenant ids).
    pub fn load_by_priority(&self) -> Vec<(f64, usize, usize)> {
        let st = self.lock();
        let mut out: Vec<(f64, usize, usize)> = Vec::new();
        for w in st.ws.values() {
            let weight = st.orgs.get(&w.org).map_or(1.0, |o| o.weight);
            let i = match out.iter().position(|(p, _, _)| *p == weight) {
                Some(i) => i,
                None => {
                    out.push((weight, 0, 0));
                    out.len() - 1
                }
            };
            if w.running {
                out[i].2 += 1;
            } else {
                out[i].1 += 1;
            }
        }
        out.sort_by(|a, b| a.0.total_cmp(&b.0));
        out
    }

    pub fn is_idle(&self) -> bool {
        self.lock().ws.is_empty()
    }

    /// Accounts a finished quantum that took `cost`.
    pub fn done(&self, t: Ticket, cost: Duration, outcome: Outcome) {
        let secs = cost.as_secs_f64().max(1e-4);
        let mut st = self.lock();
        let mut remove = false;
        if let Some(w) = st.ws.get_mut(&t.workspace) {
            w.running = false;
            w.pass += secs;
            match outcome {
                Outcome::More => {}
                Outcome::Retry(d) => w.not_before = Some(Instant::now() + d),
                // A notify that came while the quantum ran (new work, a reactivation) keeps the
                // entry: the next quantum looks again.
                Outcome::Idle | Outcome::Suspended => remove = w.epoch == t.epoch,
                Outcome::Gone => remove = true,
            }
        }
        if let Some(o) = st.orgs.get_mut(&t.org) {
            o.pass += secs / o.weight;
        }
        if remove {
            st.ws.remove(&t.workspace);
            if outcome != Outcome::Suspended {
                self.unmark(t.workspace);
            }
            let empty = st.orgs.get_mut(&t.org).map(|o| {
                o.members = o.members.saturating_sub(1);
                o.members == 0
            });
            if empty == Some(true) {
                st.orgs.remove(&t.org);
            }
        }
        drop(st);
        self.cv.notify_all();
    }

    /// Stops handing out work and interrupts every extraction (on a worker or in the
    /// background): workers end their quantum within a moment and exit.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        self.extractions.stop();
        self.cv.notify_all();
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    /// Simulates workers: each quantum costs 1 ms; workspaces have `work` quanta each.
    fn simulate(s: &Scheduler, work: &mut HashMap<Uuid, usize>, steps: usize) -> Vec<Uuid> {
        let mut order = Vec::new();
        for _ in 0..steps {
            let Some(t) = s.try_next() else { break };
            order.push(t.workspace);
            let left = work.get_mut(&t.workspace).expect("known");
            *left = left.saturating_sub(1);
            let outcome = if *left == 0 {
                Outcome::Idle
            } else {
                Outcome::More
            };
            s.done(t, Duration::from_millis(1), outcome);
        }
        order
    }

    #[test]
    fn a_small_workspace_is_not_starved_by_a_big_one() {
        let tmp = tempfile::tempdir().expect("tmp");
        let s = Scheduler::new(tmp.path());
        let (big, small) = (id(1), id(2));
        let mut work = HashMap::from([(big, 10_000), (small, 1)]);
        s.notify(big, id(100), 1.0);
        simulate(&s, &mut work, 50);
        s.notify(small, id(200), 1.0);
        let order = simulate(&s, &mut work, 3);
        assert!(order.contains(&small), "{order:?}");
        assert_eq!(
            s.marked(),
            vec![big],
            "small's marker is gone once it is idle"
        );
    }

    #[test]
    fn plan_priority_weights_orgs() {
        let tmp = tempfile::tempdir().expect("tmp");
        let s = Scheduler::new(tmp.path());
        let (a, b) = (id(1), id(2));
        let mut work = HashMap::from([(a, 10_000), (b, 10_000)]);
        s.notify(a, id(100), 4.0);
        s.notify(b, id(200), 1.0);
        let order = simulate(&s, &mut work, 500);
        let na = order.iter().filter(|w| **w == a).count();
        let nb = order.len() - na;
        assert!(
            (3.5..4.5).contains(&(na as f64 / nb as f64)),
            "{na} vs {nb}"
        );
    }

    #[test]
    fn workspaces_of_one_org_share_equally_and_orgs_are_fair() {
        let tmp = tempfile::tempdir().expect("tmp");
        let s = Scheduler::new(tmp.path());
        // Org X has 3 busy workspaces, org Y one: Y still gets half.
        let (x1, x2, x3, y) = (id(1), id(2), id(3), id(4));
        let mut work = HashMap::from([(x1, 1000), (x2, 1000), (x3, 1000), (y, 1000)]);
        for w in [x1, x2, x3] {
            s.notify(w, id(100), 1.0);
        }
        s.notify(y, id(200), 1.0);
        let order = simulate(&s, &mut work, 600);
        let ny = order.iter().filter(|w| **w == y).count();
        assert!((280..=320).contains(&ny), "{ny}");
        let nx1 = order.iter().filter(|w| **w == x1).count();
        assert!((90..=110).contains(&nx1), "{nx1}");
    }

    #[test]
    fn a_running_workspace_is_not_handed_out_twice_and_retry_waits() {
        let tmp = tempfile::tempdir().expect("tmp");
        let s = Scheduler::new(tmp.path());
        s.notify(id(1), id(100), 1.0);
        let t = s.try_next().expect("first");
        assert!(s.try_next().is_none());
        s.done(
            t,
            Duration::from_millis(1),
            Outcome::Retry(Duration::from_secs(60)),
        );
        assert!(s.try_next().is_none(), "waiting for its retry");
        // New work resets the pause.
        s.notify(id(1), id(100), 1.0);
        let t = s.try_next().expect("again");
        // Work that arrived while running keeps the entry even if the quantum saw none.
        s.notify(id(1), id(100), 1.0);
        s.done(t, Duration::from_millis(1), Outcome::Idle);
        assert!(!s.is_idle());
        let t = s.try_next().expect("third");
        s.done(t, Duration::from_millis(1), Outcome::Idle);
        assert!(s.is_idle());
        assert!(s.marked().is_empty());
    }

    #[test]
    fn a_suspended_workspace_is_dropped_but_keeps_its_marker() {
        let tmp = tempfile::tempdir().expect("tmp");
        let s = Scheduler::new(tmp.path());
        let (ws, other) = (id(1), id(2));
        s.notify(ws, id(100), 1.0);
        s.notify(other, id(200), 1.0);
        let mut seen = Vec::new();
        while let Some(t) = s.try_next() {
            seen.push(t.workspace);
            let outcome = if t.workspace == ws {
                Outcome::Suspended
            } else {
                Outcome::Idle
            };
            s.done(t, Duration::from_millis(1), outcome);
        }
        assert_eq!(seen.len(), 2, "each handed out once: {seen:?}");
        assert!(s.is_idle(), "the suspended workspace left the queue");
        assert_eq!(
            s.marked(),
            vec![ws],
            "its marker stays for the reactivation"
        );
        // Reactivation (or a restart's recovery) notifies it again.
        s.notify(ws, id(100), 1.0);
        let t = s.try_next().expect("handed out again");
        assert_eq!(t.workspace, ws);
        s.done(t, Duration::from_millis(1), Outcome::Idle);
        assert!(s.is_idle());
        assert!(s.marked().is_empty());
    }

    #[test]
    fn a_reactivation_during_the_suspended_quantum_is_not_lost() {
        let tmp = tempfile::tempdir().expect("tmp");
        let s = Scheduler::new(tmp.path());
        s.notify(id(1), id(100), 1.0);
        let t = s.try_next().expect("first");
        // The worker saw the org suspended; meanwhile it was reactivated and woke the workspace.
        s.notify(id(1), id(100), 1.0);
        s.done(t, Duration::from_millis(1), Outcome::Suspended);
        assert!(!s.is_idle());
        assert!(s.try_next().is_some(), "the wake-up survives");
    }
}
