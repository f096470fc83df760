//! Serving: binds the listener, runs the HTTP router and the background tasks, and shuts down
//! gracefully (drain, stop accepting, finish in-flight requests, commit writers, checkpoint
//! WALs). Connections are served by hyper directly (not `axum::serve`) for their time bounds
//! and the connection limit.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::ServiceExt;

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
    let wanted = app.config.max_open_workspaces as u64 * 3 + app.config.max_connections as u64 + 64;
    if fd_limit > 0 && fd_limit < wanted {
        tracing::warn!(
            fd_limit,
            wanted,
            "open-file limit is below what the workspace cache and the connection limit may need"
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

    let result = accept_loop(app.clone(), listener, shutdown).await;
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

/// How long the accept loop pauses after an accept error that is not about one connection
/// (out of file descriptors), so that it does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(200);

/// The time bounds of one HTTP connection (see `README.md`, Configuration).
#[derive(Debug, Clone, Copy)]
struct ConnLimits {
    /// From accepting the connection, or from the first byte of a later request, to the end
    /// of that request's headers.
    header_read: Duration,
    /// Between the end of one response and the first byte of the next request.
    keep_alive_idle: Duration,
}

/// Accepts connections until `shutdown` resolves, at most `max_connections` at once (further
/// ones wait in the listen backlog), then drains: `/readyz` answers 503 at once, the listener
/// closes `shutdown_delay_secs` later, connections finish their request in flight (for at most
/// `shutdown_grace_secs`) and close.
async fn accept_loop(
    app: Arc<App>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = crate::http::router(app.clone());
    let limits = ConnLimits {
        header_read: Duration::from_secs(app.config.header_read_timeout_secs.max(1)),
        keep_alive_idle: Duration::from_secs(app.config.keep_alive_idle_secs.max(1)),
    };
    let slots = Arc::new(Semaphore::new(app.config.max_connections.max(1)));
    let (drain_tx, drain_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    let delay = Duration::from_secs(app.config.shutdown_delay_secs);
    let mut stop = Box::pin({
        let app = app.clone();
        async move {
            shutdown.await;
            // Waiters (`?wait=true`) end and `/readyz` answers 503 from here on, while the
            // listener still accepts.
            app.start_draining();
            tracing::info!(
                delay_secs = delay.as_secs(),
                "shutting down: draining; the listener closes after the delay"
            );
            tokio::time::sleep(delay).await;
        }
    });
    loop {
        while conns.try_join_next().is_some() {}
        let slot = tokio::select! {
            () = &mut stop => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(s) => s,
                Err(_) => break,
            },
        };
        let (stream, remote) = tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    if !is_connection_error(&e) {
                        tracing::warn!(error = %e, "cannot accept connections");
                        tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    }
                    continue;
                }
            },
        };
        conns.spawn(serve_connection(
            stream,
            remote,
            router.clone(),
            limits,
            drain_rx.clone(),
            slot,
            app.clone(),
        ));
    }
    drop(listener);
    let _ = drain_tx.send(true);
    tracing::info!(
        connections = conns.len(),
        "listener closed: finishing in-flight requests"
    );
    let grace = Duration::from_secs(app.config.shutdown_grace_secs);
    let drained =
        tokio::time::timeout(grace, async { while conns.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(
            connections = conns.len(),
            grace_secs = grace.as_secs(),
            "requests still in flight after the grace period: closing their connections"
        );
        conns.shutdown().await;
    }
    Ok(())
}

/// Accept errors about one connection (the peer gave up): nothing to wait for.
fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

/// Serves one connection (HTTP/1.1 with keep-alive) until the client closes it, it overstays
/// a time bound of [`ConnLimits`], or the server drains. Holds `_slot` (one of the
/// `max_connections`) until then.
async fn serve_connection(
    stream: TcpStream,
    remote: SocketAddr,
    router: axum::Router,
    limits: ConnLimits,
    mut drain: watch::Receiver<bool>,
    _slot: OwnedSemaphorePermit,
    app: Arc<App>,
) {
    let _open = app.http_metrics.connection_opened();
    let state = Arc::new(ConnState::new());
    let service = {
        let state = state.clone();
        hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            let request = InFlight::begin(state.clone());
            let mut req = req.map(axum::body::Body::new);
            req.extensions_mut()
                .insert(axum::extract::ConnectInfo(remote));
            let router = router.clone();
            async move {
                let resp = match router.oneshot(req).await {
                    Ok(r) => r,
                    Err(never) => match never {},
                };
                Ok::<_, Infallible>(resp.map(|body| TrackedBody {
                    body,
                    _request: request,
                }))
            }
        })
    };
    let io = hyper_util::rt::TokioIo::new(TrackedIo {
        inner: stream,
        state: state.clone(),
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    // The time bounds are enforced below (hyper's own header timer would also cut idle
    // kept-alive connections at the header bound).
    builder.header_read_timeout(None).keep_alive(true);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let mut draining = *drain.borrow();
    if draining {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        let wake = state
            .deadline(limits)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            ended = conn.as_mut() => {
                if let Err(e) = ended {
                    tracing::debug!(client = %remote, error = %e, "connection ended with an error");
                }
                break;
            }
            () = tokio::time::sleep_until(wake) => {
                if let Some(reason) = state.expired(limits) {
                    tracing::debug!(client = %remote, reason, "closing connection");
                    app.http_metrics.connection_timed_out();
                    break;
                }
            }
            () = state.changed.notified() => {}
            changed = drain.changed(), if !draining => {
                if changed.is_err() || *drain.borrow() {
                    draining = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// Where a connection is between requests, for its time bounds.
struct ConnState {
    phase: std::sync::Mutex<Phase>,
    /// Told when a response ends or the first byte of a request arrives.
    changed: Notify,
}

struct Phase {
    /// Requests whose response has not been fully handed to the connection yet.
    in_flight: usize,
    /// When the last response ended (or the connection was accepted).
    idle_since: Instant,
    /// When the first byte of the request being read arrived (accepting counts as one).
    request_started: Option<Instant>,
}

impl ConnState {
    fn new() -> ConnState {
        let now = Instant::now();
        ConnState {
            phase: std::sync::Mutex::new(Phase {
                in_flight: 0,
                idle_since: now,
                request_started: Some(now),
            }),
            changed: Notify::new(),
        }
    }

    fn phase(&self) -> std::sync::MutexGuard<'_, Phase> {
        self.phase.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// When the connection is to be closed if nothing changes; none while a request is in flight.
    fn deadline(&self, limits: ConnLimits) -> Option<Instant> {
        let p = self.phase();
        if p.in_flight > 0 {
            None
        } else if let Some(started) = p.request_started {
            Some(started + limits.header_read)
        } else {
            Some(p.idle_since + limits.keep_alive_idle)
        }
    }

    /// Which bound the connection has overstayed, if any.
    fn expired(&self, limits: ConnLimits) -> Option<&'static str> {
        let deadline = self.deadline(limits)?;
        if Instant::now() < deadline {
            return None;
        }
        Some(if self.phase().request_started.is_some() {
            "request headers not received in time"
        } else {
            "idle keep-alive timeout"
        })
    }

    fn bytes_read(&self) {
        let mut p = self.phase();
        if p.in_flight == 0 && p.request_started.is_none() {
            p.request_started = Some(Instant::now());
            drop(p);
            self.changed.notify_one();
        }
    }
}

/// One request in flight on a connection, from its parsed headers until its response body has
/// been handed over (or dropped).
struct InFlight(Arc<ConnState>);

impl InFlight {
    fn begin(state: Arc<ConnState>) -> InFlight {
        {
            let mut p = state.phase();
            p.in_flight += 1;
            p.request_started = None;
        }
        InFlight(state)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        {
            let mut p = self.0.phase();
            p.in_flight = p.in_flight.saturating_sub(1);
            if p.in_flight == 0 {
                p.idle_since = Instant::now();
                p.request_started = None;
            }
        }
        self.0.changed.notify_one();
    }
}

/// A response body that ends its request's [`InFlight`] when the connection drops it (sent, or
/// abandoned).
struct TrackedBody {
    body: axum::body::Body,
    _request: InFlight,
}

impl http_body::Body for TrackedBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// The TCP stream, noting when the first byte of a request arrives.
struct TrackedIo {
    inner: TcpStream,
    state: Arc<ConnState>,
}

impl AsyncRead for TrackedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.state.bytes_read();
        }
        polled
    }
}

impl AsyncWrite for TrackedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
