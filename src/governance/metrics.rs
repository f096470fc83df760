//! Server metrics beyond the registry's counters: request latency by route template and status
//! class, ingest throughput, embedding backlog, and the Prometheus text of histograms. No label
//! ever names a tenant (per-tenant numbers come from the usage API).

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use uuid::Uuid;

pub use crate::histogram::{Histogram, BUCKETS};

/// Most distinct route labels kept (route templates are few; this bounds a mistake).
const MAX_ROUTES: usize = 512;

/// The server's governance metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Latency by (route template, status class 1..=5).
    latency: RwLock<HashMap<(String, u8), Arc<Histogram>>>,
    /// Chunks written to the full-text index by job quanta.
    chunks_indexed: AtomicU64,
    /// Chunks embedded by job quanta.
    chunks_embedded: AtomicU64,
    /// Chunks waiting for vectors, per workspace, as last seen after one of its quanta.
    unembedded: Mutex<HashMap<Uuid, u64>>,
}

impl Metrics {
    /// Records a request's latency under its matched route template (`unmatched` without one).
    pub fn request(&self, route: Option<&str>, status: u16, took: Duration) {
        let class = (status / 100).clamp(1, 5) as u8;
        let route = route.unwrap_or("unmatched");
        if let Some(h) = self
            .latency
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(route.to_string(), class))
        {
            h.observe(took);
            return;
        }
        let mut map = self.latency.write().unwrap_or_else(|p| p.into_inner());
        let key = if map.len() >= MAX_ROUTES {
            ("other".to_string(), class)
        } else {
            (route.to_string(), class)
        };
        map.entry(key).or_default().observe(took);
    }

    /// What a job quantum did: chunks indexed, chunks embedded, and the workspace's chunks
    /// still waiting for vectors.
    pub fn quantum(&self, ws: Uuid, indexed: u64, embedded: u64, unembedded: Option<u64>) {
        self.chunks_indexed.fetch_add(indexed, Ordering::Relaxed);
        self.chunks_embedded.fetch_add(embedded, Ordering::Relaxed);
        if let Some(n) = unembedded {
            let mut m = self.unembedded.lock().unwrap_or_else(|p| p.into_inner());
            if n == 0 {
                m.remove(&ws);
            } else {
                m.insert(ws, n);
            }
        }
    }

    /// Forgets a workspace's backlog (deleted).
    pub fn forget(&self, ws: Uuid) {
        self.unembedded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&ws);
    }

    /// Writes this set's series in Prometheus text format.
    pub fn write(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP enclave_http_request_duration_seconds Request latency by route template and status class.\n\
             # TYPE enclave_http_request_duration_seconds histogram"
        );
        let map = self.latency.read().unwrap_or_else(|p| p.into_inner());
        let mut keys: Vec<&(String, u8)> = map.keys().collect();
        keys.sort();
        for k in keys {
            if let Some(h) = map.get(k) {
                let labels = format!("route=\"{}\",class=\"{}xx\"", escape(&k.0), k.1);
                h.write(out, "enclave_http_request_duration_seconds", &labels);
            }
        }
        drop(map);
        let _ = writeln!(
            out,
            "# HELP enclave_ingest_chunks_total Chunks processed by ingestion jobs (rate() gives chunks/s).\n\
             # TYPE enclave_ingest_chunks_total counter\n\
             enclave_ingest_chunks_total{{stage=\"indexed\"}} {}\n\
             enclave_ingest_chunks_total{{stage=\"embedded\"}} {}",
            self.chunks_indexed.load(Ordering::Relaxed),
            self.chunks_embedded.load(Ordering::Relaxed)
        );
        let backlog: u64 = self
            .unembedded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .sum();
        let _ = writeln!(
            out,
            "# HELP enclave_embedding_queue_chunks Chunks waiting for vectors (as of each workspace's last job quantum).\n\
             # TYPE enclave_embedding_queue_chunks gauge\n\
             enclave_embedding_queue_chunks {backlog}"
        );
    }
}

/// A label value escaped for the Prometheus text format.
pub fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_is_kept_by_route_template_and_class() {
        let m = Metrics::default();
        m.request(
            Some("/v1/workspaces/{ws}/search"),
            200,
            Duration::from_millis(3),
        );
        m.request(
            Some("/v1/workspaces/{ws}/search"),
            404,
            Duration::from_millis(1),
        );
        m.request(None, 404, Duration::from_millis(1));
        let mut out = String::new();
        m.write(&mut out);
        assert!(out.contains(
            "enclave_http_request_duration_seconds_count{route=\"/v1/workspaces/{ws}/search\",class=\"2xx\"} 1"
        ), "{out}");
        assert!(out.contains("route=\"unmatched\",class=\"4xx\""), "{out}");
    }

    #[test]
    fn a_forgotten_workspace_leaves_the_backlog_gauge() {
        let m = Metrics::default();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        m.quantum(a, 10, 4, Some(6));
        m.quantum(b, 3, 1, Some(2));
        let gauge = |m: &Metrics| {
            let mut out = String::new();
            m.write(&mut out);
            out.lines()
                .find_map(|l| l.strip_prefix("enclave_embedding_queue_chunks "))
                .map(str::to_string)
        };
        assert_eq!(gauge(&m).as_deref(), Some("8"));
        m.forget(a);
        assert_eq!(gauge(&m).as_deref(), Some("2"));
        // A quantum that empties the backlog removes it too.
        m.quantum(b, 0, 2, Some(0));
        assert_eq!(gauge(&m).as_deref(), Some("0"));
    }
}
