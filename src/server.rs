//! Serving: binds the listener, runs the HTTP router and the background tasks, and shuts down
//! gracefully (stop accepting, finish in-flight requests, commit writers, checkpoint WALs).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::app::App;

/// Raises the soft limit of open files to the hard limit: each open workspace costs about three
/// descriptors. Returns the soft limit in force.
pub fn raise_fd_limit() -> u64 {
    // SAFETY: getrlimit/setrlimit with a valid, initialised struct.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return raised.rlim_cur;
            }
        }
        lim.rlim_cur
    }
}

/// How often API keys' in-memory `last_used_at` is written to the control plane.
pub const KEY_USAGE_FLUSH: Duration = Duration::from_secs(30);

pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves until `shutdown` resolves, then drains and flushes.
pub async fn serve(
    app: Arc<App>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let fd_limit = raise_fd_limit();
    let wanted = app.config.max_open_workspaces as u64 * 3 + 64;
    if fd_limit > 0 && fd_limit < wanted {
        tracing::warn!(
            fd_limit,
            wanted,
            "open-file limit is below what the workspace cache may need"
        );
    }

    // Leftovers of interrupted deletions are removed in the background, never before serving;
    // the storage reserve is written there too.
    tokio::task::spawn_blocking({
        let app = app.clone();
        move || app.tidy_data_dir()
    });

    // One scheduler for the whole server runs ingestion jobs; the workspaces that had pending
    // jobs when it last stopped are re-queued in the background.
    let workers = app.start_job_workers();
    tokio::task::spawn_blocking({
        let app = app.clone();
        move || app.recover_jobs()
    });

    // One sweeper for the whole server closes idle Tantivy writers.
    let idle = Duration::from_secs(app.config.writer_idle_secs.max(1));
    let sweeper = tokio::spawn({
        let app = app.clone();
        async move {
            let mut tick = tokio::time::interval(idle / 2);
            loop {
                tick.tick().await;
                let app = app.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    app.registry.close_idle_writers(idle);
                    // A reserve released on a full disk comes back once there is room.
                    app.ensure_storage_reserve();
                })
                .await;
            }
        }
    });

    // API keys' `last_used_at` lives in memory and is written here, not on every request.
    let usage = tokio::spawn({
        let app = app.clone();
        async move {
            let mut tick = tokio::time::interval(KEY_USAGE_FLUSH);
            tick.tick().await;
            loop {
                tick.tick().await;
                let app = app.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    if let Err(e) = app.flush_key_usage() {
                        tracing::warn!(error = %e, "could not flush API key usage");
                    }
                })
                .await;
            }
        }
    });

    let router =
        crate::http::router(app.clone()).into_make_service_with_connect_info::<SocketAddr>();
    let draining_app = app.clone();
    let result = axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            shutdown.await;
            draining_app.start_draining();
            tracing::info!("shutting down: finishing in-flight requests");
        })
        .await;
    sweeper.abort();
    usage.abort();
    app.scheduler.stop();
    let flush_app = app.clone();
    let _ = tokio::task::spawn_blocking(move || {
        for w in workers {
            let _ = w.join();
        }
        flush_app.shutdown()
    })
    .await;
    tracing::info!("stopped");
    result
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
