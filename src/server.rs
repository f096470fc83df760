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
    let wanted =
        app.config().max_open_workspaces as u64 * 3 + app.config().max_connections as u64 + 64;
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
        move || app.tenancy().tidy_data_dir()
    });

    // One scheduler for the whole server runs ingestion jobs; the workspaces that had pending
    // jobs when it last stopped are re-queued in the background.
    let workers = app.knowledge().start_job_workers();
    tokio::task::spawn_blocking({
        let app = app.clone();
        move || app.knowledge().recover_jobs()
    });

    // One sweeper for the whole server closes idle Tantivy writers.
    let idle = Duration::from_secs(app.config().writer_idle_secs.max(1));
    let sweeper = tokio::spawn({
        let app = app.clone();
        async move {
            let mut tick = tokio::time::interval(idle / 2);
            loop {
                tick.tick().await;
                let app = app.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    app.registry().close_idle_writers(idle);
                    // A reserve released on a full disk comes back once there is room.
                    app.tenancy().ensure_storage_reserve();
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
                    if let Err(e) = app.identity().flush_key_usage() {
                        tracing::warn!(error = %e, "could not flush API key usage");
                    }
                })
                .await;
            }
        }
    });

    // Scheduled backups (`--backup-to`): the first after one interval.
    let backups = crate::durability::backup::spawn_schedule(app.clone());

    // Tiered storage (`--object-store`): hydration on the registry's miss path, and the sweep
    // that offloads closed workspaces and bounds the local cache.
    let tiering = match crate::durability::tier::install(&app, tokio::runtime::Handle::current()) {
        Ok(Some(tier)) => Some(crate::durability::tier::spawn_sweeper(app.clone(), tier)),
        Ok(None) => None,
        Err(e) => return Err(std::io::Error::other(format!("tiered storage: {e}"))),
    };

    // Governance upkeep: purge what is past its grace period, drop idle rate-limit buckets.
    let upkeep = tokio::spawn({
        let app = app.clone();
        async move {
            let mut tick = tokio::time::interval(crate::tenancy::UPKEEP_INTERVAL);
            tick.tick().await;
            loop {
                tick.tick().await;
                let app = app.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    app.tenancy().purge_due();
                    app.governance().rate_limits().prune();
                })
                .await;
            }
        }
    });

    // Metered usage is counted in memory and written here (and at shutdown); busy workspaces'
    // storage is sampled on the same beat (`governance::service`).
    let metering = tokio::spawn({
        let app = app.clone();
        async move {
            let mut tick = tokio::time::interval(crate::governance::service::USAGE_FLUSH);
            tick.tick().await;
            loop {
                tick.tick().await;
                let gov = app.governance().clone();
                let _ = tokio::task::spawn_blocking(move || {
                    gov.sample_storage(false);
                    if let Err(e) = gov.flush_usage() {
                        tracing::warn!(error = %e, "could not flush usage counters");
                    }
                })
                .await;
            }
        }
    });

    let tls = app
        .config()
        .tls
        .as_ref()
        .map(crate::tls::acceptor)
        .transpose()?;
    let result = accept_loop(app.clone(), listener, tls, shutdown).await;
    if let Some(b) = backups {
        b.abort();
    }
    if let Some(t) = tiering {
        t.abort();
    }
    sweeper.abort();
    usage.abort();
    upkeep.abort();
    metering.abort();
    app.knowledge().scheduler().stop();
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

/// The largest request line plus header section hyper reads; a larger one is answered
/// `431 Request Header Fields Too Large` by hyper, and the connection closed.
pub const MAX_HEADER_BYTES: usize = 32 << 10;
/// The most header fields a request may have (hyper's default, stated so it cannot change
/// under us); more are `431`.
pub const MAX_HEADERS: usize = 100;
/// The largest read (and write) buffer of one connection: what hyper may hold in memory per
/// connection, whatever the client sends (hyper's default is about 400 KiB).
pub const MAX_CONNECTION_BUFFER_BYTES: usize = 64 << 10;

/// When the server closes a connection, how long it goes on reading (and discarding) what the
/// client still sends, after its last answer and its end of stream (a lingering close). An
/// answer sent before the request body was read (a refused credential, an unknown workspace,
/// a body over the limit) would otherwise meet the rest of the body arriving at a closed
/// socket: the kernel answers that with a reset, which fails the client's upload and may
/// destroy the answer before the client reads it.
pub const LINGER: Duration = Duration::from_secs(2);
/// The most a lingering close reads and discards before it closes anyway.
pub const LINGER_MAX_BYTES: u64 = 4 << 20;

/// The time bounds of one HTTP connection (see `README.md`, Configuration).
#[derive(Debug, Clone, Copy)]
struct ConnLimits {
    /// From accepting the connection, or from the first byte of a later request, to the end
    /// of that request's headers.
    header_read: Duration,
    /// Between the end of one response and the first byte of the next request.
    keep_alive_idle: Duration,
    /// How a request body must arrive.
    body: BodyLimits,
    /// How long a write to the client may stay blocked (the client does not read its
    /// responses) before the connection is closed.
    write_stall: Duration,
}

/// Accepts connections until `shutdown` resolves, at most `max_connections` at once (further
/// ones wait in the listen backlog), then drains: `/readyz` answers 503 at once, the listener
/// closes `shutdown_delay_secs` later, connections finish their request in flight (for at most
/// `shutdown_grace_secs`) and close.
async fn accept_loop(
    app: Arc<App>,
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = crate::http::router(app.clone());
    let limits = ConnLimits {
        header_read: Duration::from_secs(app.config().header_read_timeout_secs.max(1)),
        keep_alive_idle: Duration::from_secs(app.config().keep_alive_idle_secs.max(1)),
        body: BodyLimits {
            stall: Duration::from_secs(app.config().body_read_timeout_secs.max(1)),
            min_rate: app.config().body_min_bytes_per_sec,
        },
        write_stall: Duration::from_secs(app.config().response_write_timeout_secs.max(1)),
    };
    let slots = Arc::new(Semaphore::new(app.config().max_connections.max(1)));
    let (drain_tx, drain_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    let delay = Duration::from_secs(app.config().shutdown_delay_secs);
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
            (stream, tls.clone()),
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
    let grace = Duration::from_secs(app.config().shutdown_grace_secs);
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
/// `max_connections`) until then. Every request body is a [`TimedBody`]; every event-stream
/// response ends when the server drains. With `tls`, the stream is HTTPS (handshake first).
async fn serve_connection(
    (stream, tls): (TcpStream, Option<tokio_rustls::TlsAcceptor>),
    remote: SocketAddr,
    router: axum::Router,
    limits: ConnLimits,
    mut drain: watch::Receiver<bool>,
    _slot: OwnedSemaphorePermit,
    app: Arc<App>,
) {
    let _open = app.http_metrics().connection_opened();
    // HTTPS: the handshake, within the time a client has to send its headers.
    let stream = match tls {
        None => crate::tls::Conn::Plain(stream),
        Some(acceptor) => {
            match tokio::time::timeout(limits.header_read, acceptor.accept(stream)).await {
                Ok(Ok(s)) => crate::tls::Conn::Tls(Box::new(s)),
                Ok(Err(e)) => {
                    tracing::debug!(client = %remote, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(client = %remote, "TLS handshake timed out");
                    app.http_metrics().connection_timed_out();
                    return;
                }
            }
        }
    };
    let state = Arc::new(ConnState::new());
    let service = {
        let state = state.clone();
        let drain = drain.clone();
        hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            let request = InFlight::begin(state.clone());
            let timed_out = BodyTimedOut::default();
            let mut req = req.map(|body| {
                axum::body::Body::new(TimedBody::new(
                    body,
                    limits.body,
                    timed_out.clone(),
                    state.clone(),
                ))
            });
            req.extensions_mut()
                .insert(axum::extract::ConnectInfo(remote));
            req.extensions_mut().insert(timed_out);
            let router = router.clone();
            let drain = drain.clone();
            async move {
                let resp = match router.oneshot(req).await {
                    Ok(r) => r,
                    Err(never) => match never {},
                };
                let ends_on_drain = is_event_stream(&resp).then(|| {
                    let drained: Pin<Box<dyn Future<Output = ()> + Send>> = Box::pin(async move {
                        let mut drain = drain;
                        let _ = drain.wait_for(|d| *d).await;
                    });
                    drained
                });
                Ok::<_, Infallible>(resp.map(|body| TrackedBody {
                    body,
                    _request: request,
                    ends_on_drain,
                    ended: false,
                }))
            }
        })
    };
    let io = hyper_util::rt::TokioIo::new(TrackedIo {
        inner: stream,
        state: state.clone(),
        linger: None,
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    // The time bounds are enforced below (hyper's own header timer would also cut idle
    // kept-alive connections at the header bound). What one connection may make hyper hold in
    // memory is bounded whatever the client sends.
    builder
        .header_read_timeout(None)
        .keep_alive(true)
        .max_header_size(MAX_HEADER_BYTES)
        .max_headers(MAX_HEADERS)
        .max_buf_size(MAX_CONNECTION_BUFFER_BYTES);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let mut draining = *drain.borrow();
    if draining {
        state
            .draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
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
                    app.http_metrics().connection_timed_out();
                    break;
                }
            }
            () = state.changed.notified() => {}
            changed = drain.changed(), if !draining => {
                if changed.is_err() || *drain.borrow() {
                    draining = true;
                    state
                        .draining
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// Where a connection is between requests, for its time bounds.
struct ConnState {
    phase: std::sync::Mutex<Phase>,
    /// Told when a response ends, the first byte of a request arrives or a write blocks.
    changed: Notify,
    /// Whether `phase.write_blocked_since` is set (checked on every write without the lock).
    write_blocked: std::sync::atomic::AtomicBool,
    /// Whether the last request's body was dropped before its end: the client may still be
    /// sending it, so closing lingers (see [`LINGER`]). A next request on the connection
    /// clears it (hyper reads one only once it has drained the body).
    body_left_unread: std::sync::atomic::AtomicBool,
    /// Whether the server drains: closing does not linger then, the server is on its way out.
    draining: std::sync::atomic::AtomicBool,
}

struct Phase {
    /// Requests whose response has not been fully handed to the connection yet.
    in_flight: usize,
    /// When the last response ended (or the connection was accepted).
    idle_since: Instant,
    /// When the first byte of the request being read arrived (accepting counts as one).
    request_started: Option<Instant>,
    /// Since when a write to the client has been blocked (its receive window is full).
    write_blocked_since: Option<Instant>,
}

impl ConnState {
    fn new() -> ConnState {
        let now = Instant::now();
        ConnState {
            phase: std::sync::Mutex::new(Phase {
                in_flight: 0,
                idle_since: now,
                request_started: Some(now),
                write_blocked_since: None,
            }),
            write_blocked: std::sync::atomic::AtomicBool::new(false),
            body_left_unread: std::sync::atomic::AtomicBool::new(false),
            draining: std::sync::atomic::AtomicBool::new(false),
            changed: Notify::new(),
        }
    }

    fn phase(&self) -> std::sync::MutexGuard<'_, Phase> {
        self.phase.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// When the connection is to be closed if nothing changes: while a write is blocked, the
    /// write bound; else none while a request is in flight (its body has its own bound).
    fn deadline(&self, limits: ConnLimits) -> Option<Instant> {
        let p = self.phase();
        if let Some(blocked) = p.write_blocked_since {
            Some(blocked + limits.write_stall)
        } else if p.in_flight > 0 {
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
        let p = self.phase();
        Some(if p.write_blocked_since.is_some() {
            "the client stopped reading its responses"
        } else if p.request_started.is_some() {
            "request headers not received in time"
        } else {
            "idle keep-alive timeout"
        })
    }

    /// A write to the client could not proceed (`blocked`) or did.
    fn write_polled(&self, blocked: bool) {
        use std::sync::atomic::Ordering;
        if self.write_blocked.load(Ordering::Relaxed) == blocked {
            return;
        }
        self.write_blocked.store(blocked, Ordering::Relaxed);
        self.phase().write_blocked_since = blocked.then(Instant::now);
        if blocked {
            self.changed.notify_one();
        }
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
        state
            .body_left_unread
            .store(false, std::sync::atomic::Ordering::Relaxed);
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

/// The last event of an event stream the server ends because it is shutting down (the shape of
/// chat's `error` event).
const SHUTDOWN_EVENT: &[u8] = b"event: error\ndata: {\"error\":{\"code\":\"unavailable\",\
\"message\":\"the server is shutting down; retry the request\"}}\n\n";

fn is_event_stream(resp: &axum::response::Response) -> bool {
    resp.headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.trim_start().starts_with("text/event-stream"))
}

/// A response body that ends its request's [`InFlight`] when the connection drops it (sent, or
/// abandoned). An event stream (chat, the OpenAI facade) would hold its connection, and so the
/// shutdown, for as long as it runs: it ends, between two events, with [`SHUTDOWN_EVENT`] when
/// the server drains.
struct TrackedBody {
    body: axum::body::Body,
    _request: InFlight,
    /// For an event stream: resolves when the server drains.
    ends_on_drain: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    /// The stream was ended by the drain.
    ended: bool,
}

impl http_body::Body for TrackedBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        if let Some(drained) = self.ends_on_drain.as_mut() {
            if drained.as_mut().poll(cx).is_ready() {
                self.ends_on_drain = None;
                self.ended = true;
                return Poll::Ready(Some(Ok(http_body::Frame::data(
                    axum::body::Bytes::from_static(SHUTDOWN_EVENT),
                ))));
            }
        }
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// The TCP stream, noting when the first byte of a request arrives and when writes block.
struct TrackedIo {
    inner: crate::tls::Conn,
    state: Arc<ConnState>,
    /// Set once the connection's write side is shut down: the lingering close under way.
    linger: Option<Linger>,
}

/// A lingering close (see [`LINGER`]): until when, and how much was discarded so far.
struct Linger {
    until: Pin<Box<tokio::time::Sleep>>,
    discarded: u64,
}

impl TrackedIo {
    /// Reads and discards what the client sends until it closes its side, [`LINGER`] passes,
    /// [`LINGER_MAX_BYTES`] were discarded or the server drains; a read error ends it too (the
    /// client is gone).
    fn poll_linger(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(linger) = self.linger.as_mut() else {
            return Poll::Ready(());
        };
        let mut scratch = [0u8; 8 << 10];
        loop {
            if linger.discarded >= LINGER_MAX_BYTES
                || self
                    .state
                    .draining
                    .load(std::sync::atomic::Ordering::Relaxed)
                || linger.until.as_mut().poll(cx).is_ready()
            {
                return Poll::Ready(());
            }
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut self.inner).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if buf.filled().is_empty() => return Poll::Ready(()),
                Poll::Ready(Ok(())) => linger.discarded += buf.filled().len() as u64,
                Poll::Ready(Err(_)) => return Poll::Ready(()),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
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
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.state.write_polled(polled.is_pending());
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.state.write_polled(polled.is_pending());
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.state.write_polled(polled.is_pending());
        polled
    }

    /// Sends the end of stream after the last answer; when the last request's body was left
    /// unread (and the server is not draining), then closes lingering (see [`LINGER`]).
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.linger.is_none() {
            std::task::ready!(Pin::new(&mut self.inner).poll_shutdown(cx))?;
            use std::sync::atomic::Ordering;
            let unread = self.state.body_left_unread.load(Ordering::Relaxed);
            if !unread || self.state.draining.load(Ordering::Relaxed) {
                return Poll::Ready(Ok(()));
            }
            self.linger = Some(Linger {
                until: Box::pin(tokio::time::sleep(LINGER)),
                discarded: 0,
            });
        }
        self.poll_linger(cx).map(Ok)
    }
}

/// How a request body must arrive (see `README.md`, Configuration): the server waits for it at
/// most `stall` at a time, and in all at most `stall` plus one second per `min_rate` bytes
/// received. Only time spent waiting for the client counts, not time the handler takes between
/// two reads.
#[derive(Debug, Clone, Copy)]
struct BodyLimits {
    stall: Duration,
    /// Bytes per second; 0: no rate bound.
    min_rate: u64,
}

impl BodyLimits {
    /// How long the server may have waited, in all, for a body of which `received` bytes have
    /// arrived.
    fn allowance(&self, received: u64) -> Duration {
        match self.min_rate {
            0 => Duration::MAX,
            rate => self
                .stall
                .saturating_add(Duration::from_millis(received.saturating_mul(1000) / rate)),
        }
    }

    /// How much longer the server may wait for the next bytes, having waited `waited` in all
    /// before and received `received` bytes.
    fn budget(&self, waited: Duration, received: u64) -> Duration {
        self.allowance(received)
            .saturating_sub(waited)
            .min(self.stall)
    }
}

/// Set, in a request's extensions, when its body was cut off for arriving too slowly; the
/// request middleware then answers `408 request_timeout` and closes the connection, whatever
/// the handler made of the failed read.
#[derive(Debug, Clone, Default)]
pub struct BodyTimedOut(Arc<std::sync::OnceLock<String>>);

impl BodyTimedOut {
    /// Why the body was cut off, if it was.
    pub fn reason(&self) -> Option<&str> {
        self.0.get().map(String::as_str)
    }

    fn set(&self, reason: String) {
        let _ = self.0.set(reason);
    }
}

/// Why a [`TimedBody`] could not be read.
#[derive(Debug)]
pub enum BodyError {
    /// The connection failed (closed early, malformed chunk).
    Connection(hyper::Error),
    /// The client did not send the body in time.
    TooSlow,
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::Connection(e) => write!(f, "{e}"),
            BodyError::TooSlow => f.write_str("the request body did not arrive in time"),
        }
    }
}

impl std::error::Error for BodyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BodyError::Connection(e) => Some(e),
            BodyError::TooSlow => None,
        }
    }
}

/// A request body as hyper reads it, failing with [`BodyError::TooSlow`] once the client
/// overstays [`BodyLimits`]: every route (JSON, multipart uploads, MCP) reads its body through
/// it.
struct TimedBody {
    inner: hyper::body::Incoming,
    limits: BodyLimits,
    timed_out: BodyTimedOut,
    /// Data bytes received so far.
    received: u64,
    /// Time spent waiting for the client, before the current wait.
    waited: Duration,
    /// When the current wait began (the last read found nothing to read).
    waiting_since: Option<Instant>,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Whether the last frame was read.
    ended: bool,
    /// Told, when the body is dropped before its end, that closing must linger.
    conn: Arc<ConnState>,
}

impl TimedBody {
    fn new(
        inner: hyper::body::Incoming,
        limits: BodyLimits,
        timed_out: BodyTimedOut,
        conn: Arc<ConnState>,
    ) -> Self {
        TimedBody {
            inner,
            limits,
            timed_out,
            received: 0,
            waited: Duration::ZERO,
            waiting_since: None,
            timer: None,
            ended: false,
            conn,
        }
    }

    fn cut_off(&mut self, now: Instant) -> BodyError {
        let since = self.waiting_since.unwrap_or(now);
        let reason = if now.saturating_duration_since(since) >= self.limits.stall {
            format!(
                "no part of the request body arrived for {} s: send the body without pausing",
                self.limits.stall.as_secs()
            )
        } else {
            format!(
                "the request body arrived too slowly (the server waited {} s for {} bytes): \
                 send it at {} bytes per second or faster",
                (self.waited + now.saturating_duration_since(since)).as_secs(),
                self.received,
                self.limits.min_rate
            )
        };
        tracing::debug!(received = self.received, %reason, "request body cut off");
        self.timed_out.set(reason);
        BodyError::TooSlow
    }
}

impl http_body::Body for TimedBody {
    type Data = axum::body::Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        // Once cut off, always: a reader that ignored the error must not take what follows
        // for the whole body.
        if this.timed_out.reason().is_some() {
            return Poll::Ready(Some(Err(BodyError::TooSlow)));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                if let Some(since) = this.waiting_since.take() {
                    this.waited += since.elapsed();
                }
                match &frame {
                    Some(Ok(f)) => {
                        if let Some(data) = f.data_ref() {
                            this.received = this.received.saturating_add(data.len() as u64);
                        }
                    }
                    Some(Err(_)) => {}
                    None => this.ended = true,
                }
                Poll::Ready(frame.map(|r| r.map_err(BodyError::Connection)))
            }
            Poll::Pending => {
                let now = Instant::now();
                let since = *this.waiting_since.get_or_insert(now);
                let deadline = since + this.limits.budget(this.waited, this.received);
                if now >= deadline {
                    return Poll::Ready(Some(Err(this.cut_off(now))));
                }
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if timer.deadline() != deadline {
                    timer.as_mut().reset(deadline);
                }
                if timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Some(Err(this.cut_off(Instant::now()))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for TimedBody {
    fn drop(&mut self) {
        if !self.ended && !http_body::Body::is_end_stream(&self.inner) {
            self.conn
                .body_left_unread
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_may_wait_the_stall_bound_plus_a_second_per_min_rate_bytes() {
        let limits = BodyLimits {
            stall: Duration::from_secs(30),
            min_rate: 500,
        };
        // Nothing received yet: the stall bound.
        assert_eq!(limits.budget(Duration::ZERO, 0), Duration::from_secs(30));
        // Never more than the stall bound at a time, however much has arrived.
        assert_eq!(
            limits.budget(Duration::ZERO, 1 << 30),
            Duration::from_secs(30)
        );
        // 5,000 bytes earn 10 s: after 35 s of waiting in all, 5 s are left.
        assert_eq!(
            limits.budget(Duration::from_secs(35), 5000),
            Duration::from_secs(5)
        );
        // A trickle that has used its allowance gets nothing more.
        assert_eq!(limits.budget(Duration::from_secs(60), 100), Duration::ZERO);
        // No rate bound: only the stall bound.
        let unbounded = BodyLimits {
            min_rate: 0,
            ..limits
        };
        assert_eq!(
            unbounded.budget(Duration::from_secs(1 << 40), 0),
            Duration::from_secs(30)
        );
        assert_eq!(
            limits.allowance(u64::MAX),
            Duration::from_secs(30) + Duration::from_millis(u64::MAX / 500)
        );
    }
}
