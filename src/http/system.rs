//! `/healthz` (the process answers), `/readyz` (it can serve: control plane reachable, not
//! draining) and `/metrics` (Prometheus text; aggregate numbers only, no tenant ids).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use serde_json::json;

use crate::app::App;

/// Counters of the HTTP layer, one set per server.
#[derive(Debug, Default)]
pub struct HttpMetrics {
    /// Responses by status class: 1xx..5xx.
    responses: [AtomicU64; 5],
    /// Client connections open now.
    connections_open: AtomicU64,
    /// Connections closed for overstaying the header or keep-alive time bound.
    connections_timed_out: AtomicU64,
}

impl HttpMetrics {
    pub fn count_response(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.responses[class].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a connection as open until the returned guard drops.
    pub fn connection_opened(&self) -> OpenConnection<'_> {
        self.connections_open.fetch_add(1, Ordering::Relaxed);
        OpenConnection(self)
    }

    pub fn connection_timed_out(&self) {
        self.connections_timed_out.fetch_add(1, Ordering::Relaxed);
    }
}

/// An open connection in [`HttpMetrics`].
pub struct OpenConnection<'a>(&'a HttpMetrics);

impl Drop for OpenConnection<'_> {
    fn drop(&mut self) {
        self.0.connections_open.fetch_sub(1, Ordering::Relaxed);
    }
}

pub async fn healthz() -> impl IntoResponse {
    axum::Json(json!({"status": "ok"}))
}

pub async fn readyz(State(app): State<Arc<App>>) -> impl IntoResponse {
    let draining = app.is_draining();
    let db_ok = super::params::blocking({
        let app = app.clone();
        move || app.control_plane().ping()
    })
    .await
    .is_ok();
    let ready = db_ok && !draining;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if ready { "ready" } else { "unavailable" },
        "control_plane": if db_ok { "ok" } else { "failing" },
        "draining": draining,
    });
    (status, axum::Json(body))
}

pub async fn metrics(State(app): State<Arc<App>>) -> impl IntoResponse {
    let r = app.registry().stats();
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, kind: &str, value: u64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    };
    if let Some(b) = crate::durability::backup::schedule_status(app.data_dir()) {
        gauge(
            "enclave_backup_runs_total",
            "Scheduled backups run since start.",
            "counter",
            b.runs,
        );
        gauge(
            "enclave_backup_failures_total",
            "Scheduled backups that failed (or left a workspace out).",
            "counter",
            b.failures,
        );
        gauge(
            "enclave_backup_last_success_timestamp_seconds",
            "Unix time of the last scheduled backup that succeeded (0: none yet).",
            "gauge",
            b.last_success_unix,
        );
        gauge(
            "enclave_backup_last_duration_milliseconds",
            "How long the last successful scheduled backup took.",
            "gauge",
            (b.last_seconds * 1000.0) as u64,
        );
        gauge(
            "enclave_backup_last_uploaded_bytes",
            "Bytes the last successful scheduled backup uploaded (incremental).",
            "gauge",
            b.last_bytes_uploaded,
        );
        gauge(
            "enclave_backup_last_workspaces",
            "Workspaces in the last successful scheduled backup.",
            "gauge",
            b.last_workspaces,
        );
    }
    if let Some(t) = crate::durability::tier::installed(&app) {
        let t = t.stats();
        for (name, help, kind, value) in [
            (
                "enclave_tier_hydrations_total",
                "Workspaces downloaded from the object store.",
                "counter",
                t.hydrations,
            ),
            (
                "enclave_tier_hydration_failures_total",
                "Hydrations that failed (the request got an error).",
                "counter",
                t.hydration_failures,
            ),
            (
                "enclave_tier_hydration_milliseconds_total",
                "Time spent hydrating, in all.",
                "counter",
                t.hydration_ms,
            ),
            (
                "enclave_tier_offloads_total",
                "Offloads recorded by the sweep (uploaded, or the same generation again).",
                "counter",
                t.offloads,
            ),
            (
                "enclave_tier_evictions_total",
                "Clean local copies removed to stay within local-cache-bytes.",
                "counter",
                t.evictions,
            ),
            (
                "enclave_tier_local_bytes",
                "Bytes of local workspace folders at the last sweep.",
                "gauge",
                t.local_bytes,
            ),
        ] {
            gauge(name, help, kind, value);
        }
    }
    gauge(
        "enclave_workspaces_open",
        "Workspace stores open now.",
        "gauge",
        r.open as u64,
    );
    gauge(
        "enclave_workspaces_open_peak",
        "Most workspace stores open at once since start.",
        "gauge",
        r.peak_open,
    );
    gauge(
        "enclave_workspaces_cache_capacity",
        "Capacity of the cache of open workspaces.",
        "gauge",
        r.capacity as u64,
    );
    gauge(
        "enclave_workspace_opens_total",
        "Workspace stores opened since start.",
        "counter",
        r.opens_total,
    );
    gauge(
        "enclave_workspace_evictions_total",
        "Workspace stores evicted from the cache since start.",
        "counter",
        r.evictions_total,
    );
    gauge(
        "enclave_index_writers_open",
        "Full-text index writers open now (closed when idle).",
        "gauge",
        r.open_writers,
    );
    gauge(
        "enclave_http_connections_open",
        "Client connections open now.",
        "gauge",
        app.http_metrics().connections_open.load(Ordering::Relaxed),
    );
    gauge(
        "enclave_http_connections_timed_out_total",
        "Connections closed for sending request headers too slowly or idling too long.",
        "counter",
        app.http_metrics()
            .connections_timed_out
            .load(Ordering::Relaxed),
    );
    let _ = writeln!(
        out,
        "# HELP enclave_http_responses_total HTTP responses by status class."
    );
    let _ = writeln!(out, "# TYPE enclave_http_responses_total counter");
    for (i, c) in app.http_metrics().responses.iter().enumerate() {
        let _ = writeln!(
            out,
            "enclave_http_responses_total{{class=\"{}xx\"}} {}",
            i + 1,
            c.load(Ordering::Relaxed)
        );
    }
    let gov = app.governance();
    let (quota, rate) = gov.usage().refusals_total();
    let _ = writeln!(
        out,
        "# HELP enclave_refusals_total Requests refused by a quota or a rate limit.\n\
         # TYPE enclave_refusals_total counter\n\
         enclave_refusals_total{{reason=\"quota\"}} {quota}\n\
         enclave_refusals_total{{reason=\"rate_limit\"}} {rate}"
    );
    let _ = writeln!(
        out,
        "# HELP enclave_jobs_workspaces Workspaces with pending jobs, by state and by their org's plan priority.\n\
         # TYPE enclave_jobs_workspaces gauge"
    );
    for (priority, queued, running) in app.knowledge().scheduler().load_by_priority() {
        let _ = writeln!(
            out,
            "enclave_jobs_workspaces{{state=\"queued\",priority=\"{priority}\"}} {queued}\n\
             enclave_jobs_workspaces{{state=\"running\",priority=\"{priority}\"}} {running}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP enclave_workspace_open_duration_seconds Time to open a workspace store that was not open (cold open).\n\
         # TYPE enclave_workspace_open_duration_seconds histogram"
    );
    app.registry()
        .open_latency()
        .write(&mut out, "enclave_workspace_open_duration_seconds", "");
    gov.metrics().write(&mut out);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}
