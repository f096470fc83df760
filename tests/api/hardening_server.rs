//! Hardening (issue 10): server. Slow clients and the connection limit (class 4), secrets on
//! disk and in logs (11), response headers (12), shutdown with waiters (17).

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::{metric, Api, Options, Resp, TestServer, PASSWORD, TOKEN};

const REQUEST: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: enclave\r\n\r\n";

fn addr(s: &TestServer) -> String {
    s.base.trim_start_matches("http://").to_string()
}

/// Whether the server closes `stream` before `limit` (bytes it sends meanwhile are ignored).
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 1024];
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) | Err(_) => {}
        }
    }
    false
}

/// Whether the server has already closed `stream` (without waiting).
fn closed_now(stream: &TcpStream) -> bool {
    let mut buf = [0u8; 1024];
    match stream.try_read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

/// Reads one HTTP/1.1 response with a `Content-Length` body; returns its status.
async fn read_response(stream: &mut TcpStream) -> u16 {
    read_full_response(stream).await.status
}

/// One response read off a raw connection.
struct RawResponse {
    status: u16,
    /// The status line and headers, as sent.
    head: String,
    body: Vec<u8>,
}

impl RawResponse {
    /// The value of header `name` (case-insensitive), if sent.
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// Reads one HTTP/1.1 response (skipping interim `1xx` ones); its body by `Content-Length`
/// (none without one).
async fn read_full_response(stream: &mut TcpStream) -> RawResponse {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if data.starts_with(b"HTTP/1.1 1") {
            if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                data.drain(..end + 4);
                continue;
            }
        }
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..end]).to_string();
            let mut resp = RawResponse {
                status: head
                    .split_whitespace()
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .expect("status"),
                head,
                body: Vec::new(),
            };
            let length: usize = resp
                .header("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            while data.len() < end + 4 + length {
                let n = stream.read(&mut buf).await.expect("read body");
                assert!(n > 0, "connection closed inside a response");
                data.extend_from_slice(&buf[..n]);
            }
            resp.body = data[end + 4..end + 4 + length].to_vec();
            return resp;
        }
        let n = stream.read(&mut buf).await.expect("read head");
        assert!(n > 0, "connection closed before a response");
        data.extend_from_slice(&buf[..n]);
    }
}

// ---- class 4: slow clients ----

#[tokio::test]
async fn requests_whose_headers_never_finish_are_cut_off() {
    let s = TestServer::start_with(Options::configured(|c| c.header_read_timeout_secs = 1));
    let addr = addr(&s);
    // Half a request line, then nothing; and nothing at all.
    let mut half = TcpStream::connect(&addr).await.expect("connect");
    half.write_all(b"GET /healthz HT").await.expect("write");
    let mut silent = TcpStream::connect(&addr).await.expect("connect");
    // Always sending, never finishing: one byte every 200 ms (the whole request would take
    // more than 10 s). The bound is on the headers as a whole, not between bytes.
    let mut dribble = TcpStream::connect(&addr).await.expect("connect");
    let padded = format!(
        "GET /healthz HTTP/1.1\r\nHost: enclave\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(20)
    );
    let mut sent_all = true;
    for b in padded.as_bytes() {
        if dribble.write_all(&[*b]).await.is_err() {
            sent_all = false;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        !sent_all || closed_within(&mut dribble, Duration::from_secs(1)).await,
        "a client dribbling its headers was never cut off"
    );
    assert!(
        closed_within(&mut half, Duration::from_secs(10)).await,
        "half a request line kept its connection open"
    );
    assert!(
        closed_within(&mut silent, Duration::from_secs(10)).await,
        "a silent connection was kept open"
    );
    // The server serves everyone else as before.
    let api = s.anonymous();
    assert_eq!(api.get("/healthz").await.status, 200);
    let m = api.text("/metrics").await;
    assert!(
        metric(&m, "enclave_http_connections_timed_out_total") >= 3,
        "{m}"
    );
}

#[tokio::test]
async fn idle_kept_alive_connections_are_closed() {
    let s = TestServer::start_with(Options::configured(|c| {
        c.header_read_timeout_secs = 1;
        c.keep_alive_idle_secs = 4;
    }));
    let mut c = TcpStream::connect(addr(&s)).await.expect("connect");
    c.write_all(REQUEST).await.expect("write");
    assert_eq!(read_response(&mut c).await, 200);
    // Idle for longer than the header bound but within the keep-alive bound: still served.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    c.write_all(REQUEST).await.expect("write");
    assert_eq!(
        read_response(&mut c).await,
        200,
        "kept alive across the idle time"
    );
    // Then idle for good: closed.
    assert!(
        closed_within(&mut c, Duration::from_secs(20)).await,
        "an idle kept-alive connection stayed open"
    );
}

/// With `max_connections` slots taken by slow clients, a new connection waits in the listen
/// backlog (it is not refused) and is served as soon as the header bound frees a slot.
#[tokio::test]
async fn slow_clients_hold_the_connection_limit_only_for_the_header_bound() {
    let s = TestServer::start_with(Options::configured(|c| {
        c.header_read_timeout_secs = 2;
        c.max_connections = 2;
    }));
    let addr = addr(&s);
    let mut slow = Vec::new();
    for _ in 0..2 {
        let mut c = TcpStream::connect(&addr).await.expect("connect");
        c.write_all(b"GET /heal").await.expect("write");
        slow.push(c);
    }
    let mut third = TcpStream::connect(&addr)
        .await
        .expect("connect (queued, not refused)");
    third.write_all(REQUEST).await.expect("write");
    let status = tokio::time::timeout(Duration::from_secs(20), read_response(&mut third))
        .await
        .expect("the queued connection is served once a slot frees");
    assert_eq!(status, 200);
    // It was served only after a slow client had been cut off: the limit held.
    assert!(
        slow.iter().any(closed_now),
        "the third connection was served while both slots were held"
    );
    for c in &mut slow {
        assert!(closed_within(c, Duration::from_secs(10)).await);
    }
    assert_eq!(s.anonymous().get("/healthz").await.status, 200);
}

// ---- class 4: slow request bodies ----

/// The head of a request to `path` with the operator token, `headers` added.
fn request_head(method: &str, path: &str, headers: &[&str]) -> String {
    let mut head =
        format!("{method} {path} HTTP/1.1\r\nHost: enclave\r\nAuthorization: Bearer {TOKEN}\r\n");
    for h in headers {
        head.push_str(h);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    head
}

/// Checks the answer to a body the server cut off: `408 request_timeout` with SPEC's error
/// shape and the usual headers, and the connection closed after it.
async fn assert_cut_off(stream: &mut TcpStream, what: &str, limit: Duration) {
    let r = tokio::time::timeout(limit, read_full_response(stream))
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {limit:?}"));
    assert_eq!(r.status, 408, "{what}: {}", r.head);
    assert_eq!(r.json()["error"]["code"], "request_timeout", "{what}");
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{what}"
    );
    assert_eq!(r.header("connection").as_deref(), Some("close"), "{what}");
    assert_eq!(
        r.header("x-content-type-options").as_deref(),
        Some("nosniff"),
        "{what}"
    );
    assert!(r.header("x-request-id").is_some(), "{what}");
    assert!(
        closed_within(stream, Duration::from_secs(5)).await,
        "{what}: the connection stayed open"
    );
}

/// A request that announces a body and then sends nothing more (or part of it) is answered
/// `408` within the body bound on every kind of route, and its connection closed.
#[tokio::test]
async fn request_bodies_that_stall_are_cut_off_with_408() {
    let s = TestServer::start_with(Options::configured(|c| c.body_read_timeout_secs = 1));
    let api = s.api();
    let org = api.create_org("bodies").await;
    let ws = api.create_workspace(&org, "w").await;
    let addr = addr(&s);
    let json = "Content-Type: application/json";
    let cases: Vec<(String, String, &[u8])> = vec![
        (
            "JSON, silence after the headers".into(),
            request_head("POST", "/v1/orgs", &[json, "Content-Length: 1000000"]),
            b"",
        ),
        (
            "JSON, part of the body".into(),
            request_head(
                "POST",
                &format!("/v1/workspaces/{ws}/search"),
                &[json, "Content-Length: 1000000"],
            ),
            b"{\"query\": \"",
        ),
        (
            "multipart upload".into(),
            request_head(
                "POST",
                &format!("/v1/workspaces/{ws}/documents"),
                &[
                    "Content-Type: multipart/form-data; boundary=XyZ",
                    "Content-Length: 1000000",
                ],
            ),
            b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\n\r\nabc",
        ),
        (
            "MCP".into(),
            request_head(
                "POST",
                &format!("/v1/workspaces/{ws}/mcp"),
                &[json, "Accept: application/json, text/event-stream", "Content-Length: 5000"],
            ),
            b"{\"jsonrpc\"",
        ),
        (
            "chunked, no length".into(),
            request_head(
                "POST",
                &format!("/v1/workspaces/{ws}/documents"),
                &[json, "Transfer-Encoding: chunked"],
            ),
            b"5\r\n{\"tex\r\n",
        ),
        (
            "Expect: 100-continue, then nothing".into(),
            request_head(
                "POST",
                "/v1/orgs",
                &[json, "Content-Length: 20", "Expect: 100-continue"],
            ),
            b"",
        ),
    ];
    let mut streams = Vec::new();
    let started = Instant::now();
    for (what, head, part) in &cases {
        let mut c = TcpStream::connect(&addr).await.expect("connect");
        c.write_all(head.as_bytes()).await.expect("write head");
        c.write_all(part).await.expect("write part");
        streams.push((what, c));
    }
    for (what, c) in &mut streams {
        assert_cut_off(c, what, Duration::from_secs(15)).await;
    }
    // Cut off after about the bound (1 s), not after the client gave up.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    // Everyone else is served; the cut connections were counted.
    let anon = s.anonymous();
    assert_eq!(anon.get("/healthz").await.status, 200);
    assert_eq!(api.get(&format!("/v1/workspaces/{ws}")).await.status, 200);
    let m = anon.text("/metrics").await;
    assert!(
        metric(&m, "enclave_http_connections_timed_out_total") >= cases.len() as u64,
        "{m}"
    );
}

/// A body that keeps arriving, one byte every 200 ms (never pausing as long as the stall
/// bound), is cut off by the minimum rate: it does not hold its handler for the 200 s it would
/// take.
#[tokio::test]
async fn a_request_body_trickling_in_is_cut_off() {
    let s = TestServer::start_with(Options::configured(|c| c.body_read_timeout_secs = 1));
    let body = format!(
        "{{\"slug\": \"trickle\", \"name\": \"{}\"}}",
        "x".repeat(960)
    );
    let head = request_head(
        "POST",
        "/v1/orgs",
        &[
            "Content-Type: application/json",
            &format!("Content-Length: {}", body.len()),
        ],
    );
    let c = TcpStream::connect(addr(&s)).await.expect("connect");
    let (mut rd, mut wr) = c.into_split();
    wr.write_all(head.as_bytes()).await.expect("write head");
    let started = Instant::now();
    let writer = tokio::spawn(async move {
        for b in body.bytes() {
            if wr.write_all(&[b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        wr
    });
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(20);
    while !data.windows(4).any(|w| w == b"\r\n\r\n") {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rd.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => data.extend_from_slice(&buf[..n]),
            Ok(_) => break,
            Err(_) => panic!("a trickling body held its request for 20 s"),
        }
    }
    writer.abort();
    let text = String::from_utf8_lossy(&data).to_string();
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(
        text.contains("request_timeout") && text.contains("too slowly"),
        "{text}"
    );
    assert!(started.elapsed() < Duration::from_secs(15));
    assert_eq!(s.anonymous().get("/healthz").await.status, 200);
    // The org was not created from a truncated body.
    assert_eq!(s.api().get("/v1/orgs/trickle").await.status, 404);
}

/// Bodies sent at a usual pace, with pauses shorter than the bound, and large uploads are not
/// affected.
#[tokio::test]
async fn bodies_sent_at_a_usual_pace_are_served() {
    let s = TestServer::start_with(Options::configured(|c| c.body_read_timeout_secs = 3));
    let api = s.api();
    // Three pieces, 700 ms apart: 12 bytes per 700 ms is far under the minimum rate, but a
    // body may always take the stall bound (3 s) in all.
    let body = br#"{"slug": "paced", "name": "Paced"}"#;
    let head = request_head(
        "POST",
        "/v1/orgs",
        &[
            "Content-Type: application/json",
            &format!("Content-Length: {}", body.len()),
        ],
    );
    let mut c = TcpStream::connect(addr(&s)).await.expect("connect");
    c.write_all(head.as_bytes()).await.expect("write");
    for piece in body.chunks(12) {
        tokio::time::sleep(Duration::from_millis(700)).await;
        c.write_all(piece).await.expect("write");
    }
    let r = read_full_response(&mut c).await;
    assert_eq!(r.status, 201, "{} {:?}", r.head, r.json());
    // Kept alive: the next request on the same connection is served.
    c.write_all(REQUEST).await.expect("write");
    assert_eq!(read_response(&mut c).await, 200);

    // A 4 MiB upload (multipart) arrives whole.
    let ws = api.knowledge_workspace("uploads").await;
    let text = "plain words for a large upload\n".repeat((4 << 20) / 31);
    let r = api
        .upload(
            &format!("/v1/workspaces/{ws}/documents"),
            "big.txt",
            Some("text/plain"),
            text.clone().into_bytes(),
            &[],
        )
        .await;
    assert!(
        r.status == 201 || r.status == 202,
        "{} {:?}",
        r.status,
        r.body
    );
    let id = r.id();
    let doc = api
        .get(&format!("/v1/workspaces/{ws}/documents/{id}"))
        .await;
    assert_eq!(doc.status, 200, "{:?}", doc.body);
}

/// A client that sends requests and never reads the answers holds its connection (and the
/// handler writing to it) only for `response_write_timeout_secs` once the server's writes
/// block.
#[tokio::test]
async fn a_client_that_never_reads_its_responses_is_disconnected() {
    let s = TestServer::start_with(Options::configured(|c| c.response_write_timeout_secs = 1));
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    // A small receive window, so that the server's writes block soon.
    socket.set_recv_buffer_size(4096).expect("rcvbuf");
    let c = socket
        .connect(addr(&s).parse().expect("addr"))
        .await
        .expect("connect");
    let (mut rd, mut wr) = c.into_split();
    // Pipelined requests, never read: far more answers than any buffer holds.
    let writer = tokio::spawn(async move {
        let request = b"GET /metrics HTTP/1.1\r\nHost: enclave\r\n\r\n".repeat(1000);
        for _ in 0..1000 {
            if wr.write_all(&request).await.is_err() {
                break;
            }
        }
    });
    let anon = s.anonymous();
    let deadline = Instant::now() + Duration::from_secs(60);
    while metric(
        &anon.text("/metrics").await,
        "enclave_http_connections_timed_out_total",
    ) == 0
    {
        assert!(
            Instant::now() < deadline,
            "a client that never reads kept its connection"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The connection is closed: what was sent before ends, then the end of the stream.
    let mut buf = vec![0u8; 64 << 10];
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rd.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(_)) => {}
            Err(_) => panic!("the connection is still open"),
        }
    }
    writer.abort();
    assert_eq!(anon.get("/healthz").await.status, 200);
}

// ---- HTTP edges: what hyper answers itself ----

/// Sends `request` on a new connection (stopping early if the server closes it) and reads the
/// answer; then checks that the connection is closed.
async fn hyper_answer(addr: &str, request: &[u8]) -> RawResponse {
    let mut c = TcpStream::connect(addr).await.expect("connect");
    // The server may answer and close before the whole request is written: a failed write is
    // part of the test.
    for piece in request.chunks(16 << 10) {
        if c.write_all(piece).await.is_err() {
            break;
        }
    }
    let r = tokio::time::timeout(Duration::from_secs(10), read_full_response(&mut c))
        .await
        .expect("an answer");
    assert!(
        closed_within(&mut c, Duration::from_secs(5)).await,
        "the connection stayed open after {}",
        r.head
    );
    r
}

/// Malformed requests and oversized header sections are answered by hyper itself (400, 431)
/// before any route runs, within fixed bounds of memory, and the connection is closed.
#[tokio::test]
async fn malformed_and_oversized_requests_are_refused_within_fixed_bounds() {
    let s = TestServer::start();
    let addr = addr(&s);
    let big = "a".repeat(enclave::server::MAX_HEADER_BYTES);
    let many: String = (0..=enclave::server::MAX_HEADERS)
        .map(|i| format!("X-H{i}: v\r\n"))
        .collect();
    let flood = format!(
        "GET /healthz HTTP/1.1\r\nHost: enclave\r\nX-Flood: {}",
        "b".repeat(4 << 20)
    );
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("a malformed request line", b"GARBAGE\r\n\r\n".to_vec(), 400),
        (
            "a malformed header",
            b"GET /healthz HTTP/1.1\r\nHost enclave\r\n\r\n".to_vec(),
            400,
        ),
        (
            "a header section over the bound",
            format!("GET /healthz HTTP/1.1\r\nHost: enclave\r\nX-Pad: {big}\r\n\r\n").into_bytes(),
            431,
        ),
        (
            "a path over the bound",
            format!("GET /{big} HTTP/1.1\r\nHost: enclave\r\n\r\n").into_bytes(),
            431,
        ),
        (
            "too many header fields",
            format!("GET /healthz HTTP/1.1\r\nHost: enclave\r\n{many}\r\n").into_bytes(),
            431,
        ),
        ("a header that never ends (4 MiB)", flood.into_bytes(), 431),
    ];
    for (what, request, status) in cases {
        let r = hyper_answer(&addr, &request).await;
        assert_eq!(r.status, status, "{what}: {}", r.head);
        // hyper's own answers carry no body (so nothing a browser could sniff) and say close.
        assert!(r.body.is_empty(), "{what}");
        assert_eq!(r.header("connection").as_deref(), Some("close"), "{what}");
    }
    // Just under the bounds is served.
    let fits = format!(
        "GET /healthz HTTP/1.1\r\nHost: enclave\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(enclave::server::MAX_HEADER_BYTES - 1024)
    );
    let mut c = TcpStream::connect(&addr).await.expect("connect");
    c.write_all(fits.as_bytes()).await.expect("write");
    assert_eq!(read_response(&mut c).await, 200);
    assert_eq!(s.anonymous().get("/healthz").await.status, 200);
}

// ---- class 12: headers ----

#[tokio::test]
async fn secrets_are_not_stored_by_caches_and_nothing_is_sniffed() {
    let s = TestServer::start();
    let api = s.api();
    let org = api.create_org("headers").await;
    let ws = api.create_workspace(&org, "w").await;
    let mut secret: Vec<(&str, Resp)> = Vec::new();

    let invite = api
        .post(
            &format!("/v1/orgs/{org}/invitations"),
            json!({"email": "h@example.com", "role": "admin"}),
        )
        .await;
    let invitation = invite.body["token"].as_str().expect("token").to_string();
    secret.push(("invitation", invite));
    let accept = api
        .without_token()
        .post(
            &format!("/v1/invitations/{invitation}/accept"),
            json!({"password": PASSWORD}),
        )
        .await;
    secret.push(("accept", accept));
    secret.push(("login", api.login("h@example.com", PASSWORD).await));
    let key = api
        .post(
            &format!("/v1/workspaces/{ws}/api-keys"),
            json!({"name": "k", "scopes": ["search"]}),
        )
        .await;
    let key_secret = key.body["key"].as_str().expect("key").to_string();
    secret.push(("api key", key));
    secret.push((
        "tenant token",
        api.with_token(&key_secret)
            .mint_token(json!({"scopes": ["search"]}))
            .await,
    ));
    for (what, r) in &secret {
        assert!(r.status < 300, "{what}: {} {:?}", r.status, r.body);
        assert_eq!(r.headers["cache-control"], "no-store", "{what}");
        assert_eq!(r.headers["x-content-type-options"], "nosniff", "{what}");
    }

    // Every response, error or not, API or not.
    let anon = s.anonymous();
    let others = [
        ("healthz", anon.get("/healthz").await),
        ("readyz", anon.get("/readyz").await),
        ("metrics", anon.get("/metrics").await),
        ("no such route", anon.get("/nope").await),
        ("401", anon.get("/v1/me").await),
        ("404", api.get("/v1/orgs/no-such-org").await),
        ("list", api.get("/v1/orgs").await),
    ];
    for (what, r) in &others {
        assert_eq!(r.headers["x-content-type-options"], "nosniff", "{what}");
    }
    for (what, r) in &others[4..] {
        assert_eq!(r.headers["cache-control"], "no-store", "{what}");
    }
}

// ---- class 17: shutdown ----

#[tokio::test]
async fn shutdown_ends_waiters_and_readyz_drains_before_the_listener_closes() {
    let mut s = TestServer::start_with(Options::configured(|c| {
        c.ingest_workers = 0;
        c.shutdown_delay_secs = 3;
    }));
    let api = s.api();
    let ws = api.knowledge_workspace("drain").await;
    let waiter = tokio::spawn({
        let api = api.clone();
        let ws = ws.clone();
        async move {
            api.post(
                &format!("/v1/workspaces/{ws}/documents?wait=true"),
                json!({"text": "never ingested: no job workers"}),
            )
            .await
        }
    });
    // The upload is in: its job is queued, and never runs.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let jobs = api.get(&format!("/v1/workspaces/{ws}/jobs")).await;
        if jobs.body["data"].as_array().is_some_and(|d| !d.is_empty()) {
            break;
        }
        assert!(Instant::now() < deadline, "the upload never queued a job");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(api.get("/readyz").await.status, 200);

    s.begin_shutdown();
    let signalled = Instant::now();
    // Draining is visible on /readyz while the listener still answers.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = api.get("/readyz").await;
        if r.status == 503 {
            assert_eq!(r.body["draining"], true, "{:?}", r.body);
            break;
        }
        assert!(Instant::now() < deadline, "readyz never said draining");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The waiter is answered 503 with Retry-After at once, not after its 600 s bound.
    let r = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("the waiter held the shutdown")
        .expect("join");
    assert_eq!((r.status, r.code()), (503, "unavailable"), "{:?}", r.body);
    assert!(r.headers.contains_key("retry-after"));
    // The server stops within a few seconds, its queued job notwithstanding.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !s.has_stopped() {
        assert!(Instant::now() < deadline, "the server did not stop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        TcpStream::connect(addr(&s)).await.is_err(),
        "the listener is closed"
    );
    assert!(signalled.elapsed() < Duration::from_secs(20));
    // The job is still there for the next start.
    let tmp = s.stop();
    drop(tmp);
}

// ---- class 11: the real binary, its log and its files ----

/// The real binary on `dir`, its stderr (the log) collected.
struct Binary {
    child: Child,
    base: String,
    log: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Binary {
    fn start(dir: &Path) -> Binary {
        Binary::start_with(dir, &[])
    }

    /// With environment variables `env` added (or overriding the test defaults).
    fn start_with(dir: &Path, env: &[(&str, &str)]) -> Binary {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_enclave"));
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .env("ENCLAVE_ADMIN_TOKEN", TOKEN)
            .env("ENCLAVE_LOG", "debug")
            .env("ENCLAVE_SHUTDOWN_DELAY_SECS", "0")
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // A usual umask (group and others may read), as an operator's shell has: the server's
        // own modes must not depend on it.
        #[cfg(unix)]
        {
            use std::os::unix::process::CommandExt;
            // SAFETY: umask is async-signal-safe and touches nothing but the child's mask.
            unsafe {
                cmd.pre_exec(|| {
                    libc::umask(0o022);
                    Ok(())
                });
            }
        }
        let mut child = cmd.spawn().expect("spawn enclave");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn({
            let log = log.clone();
            move || {
                let mut lines = BufReader::new(stderr);
                let mut line = String::new();
                while lines.read_line(&mut line).unwrap_or(0) > 0 {
                    if let Some(rest) = line.split("address=").nth(1) {
                        let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_string());
                    }
                    log.lock().expect("log").push_str(&line);
                    line.clear();
                }
                let mut rest = String::new();
                let _ = lines.read_to_string(&mut rest);
                log.lock().expect("log").push_str(&rest);
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the server never listened");
        Binary {
            child,
            base: format!("http://{addr}"),
            log,
            reader: Some(reader),
        }
    }

    fn api(&self) -> Api {
        Api::new(&self.base, Some(TOKEN))
    }

    /// SIGTERM, wait for a clean exit; returns the whole log.
    fn stop(mut self) -> String {
        // SAFETY: sending a signal to our own child process.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                break status.code();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_eq!(status, Some(0), "clean exit on SIGTERM");
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let log = self.log.lock().expect("log").clone();
        log
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A full scenario with every kind of credential; the log holds none of the secrets.
#[tokio::test]
async fn the_log_of_a_full_scenario_holds_no_secret() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let bin = Binary::start(tmp.path());
    let op = bin.api();
    let anon = op.without_token();
    let org = op.create_org("logs").await;
    let email = "logs@example.com";

    let r = op
        .post(
            &format!("/v1/orgs/{org}/invitations"),
            json!({"email": email, "role": "admin"}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let invitation = r.body["token"].as_str().expect("invitation").to_string();
    let r = anon
        .post(
            &format!("/v1/invitations/{invitation}/accept"),
            json!({"password": PASSWORD}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let first_session = r.body["token"].as_str().expect("session").to_string();
    // A used invitation: refused, and its path logged once more.
    let r = anon
        .post(
            &format!("/v1/invitations/{invitation}/accept"),
            json!({"password": PASSWORD}),
        )
        .await;
    assert!(r.status >= 400);

    let wrong_password = "wrong-password-that-must-not-be-logged";
    assert_eq!(op.login(email, wrong_password).await.status, 401);
    let r = op.login(email, PASSWORD).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let session = r.body["token"].as_str().expect("session").to_string();
    let user = op.with_token(&session);
    assert_eq!(user.get("/v1/me").await.status, 200);
    assert_eq!(
        op.with_token(&first_session).get("/v1/me").await.status,
        200
    );

    let ws = user.create_workspace(&org, "w").await;
    user.use_static_embedder(&ws).await;
    let key = user.create_key(&ws, &["search", "ingest"]).await;
    let k = op.with_token(&key.key);
    let r = k
        .post(
            "/v1/documents?wait=true",
            json!({"text": "the log holds no secret"}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(
        k.post("/v1/search", json!({"query": "secret"}))
            .await
            .status,
        200
    );
    let r = k.mint_token(json!({"scopes": ["search"]})).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let tenant = r.body["token"].as_str().expect("tenant token").to_string();
    assert_eq!(
        op.with_token(&tenant)
            .post("/v1/search", json!({"query": "secret"}))
            .await
            .status,
        200
    );

    // Secrets where a careless log would show them: a query string, a mistyped route, a bad
    // credential.
    let stray = format!("enc_inv_{}", "5e".repeat(32));
    let forged = format!("{}x", key.key);
    assert_eq!(
        anon.get(&format!("/v1/me?token={session}&api_key={}", key.key))
            .await
            .status,
        401
    );
    assert!(anon.get(&format!("/v1/invitations/{stray}")).await.status >= 400);
    assert!(
        anon.get(&format!("/v1/x/{tenant}/y")).await.status >= 400,
        "a token in an unknown route"
    );
    assert_eq!(op.with_token(&forged).get("/v1/me").await.status, 401);

    let master_key = std::fs::read_to_string(tmp.path().join("master.key")).expect("master key");
    let log = bin.stop();
    assert!(
        log.contains("/v1/invitations/[redacted]/accept") && log.contains("request finished"),
        "the requests were logged: {log}"
    );
    let key_secret = key.key.rsplit('_').next().expect("key secret").to_string();
    let secrets = [
        ("operator token", TOKEN.to_string()),
        ("invitation", invitation),
        ("invitation secret", invitation_secret(&stray)),
        ("stray invitation", stray),
        ("password", PASSWORD.to_string()),
        ("wrong password", wrong_password.to_string()),
        ("first session", first_session),
        ("session", session),
        ("API key", key.key.clone()),
        ("API key secret", key_secret),
        ("forged key", forged),
        ("tenant token", tenant.clone()),
        (
            "tenant token signature",
            tenant.rsplit('.').next().expect("sig").to_string(),
        ),
        ("master key", master_key.trim().to_string()),
    ];
    for (what, secret) in secrets {
        assert!(secret.len() >= 16, "{what} is too short to test");
        assert!(!log.contains(&secret), "the log holds the {what}:\n{log}");
    }
}

fn invitation_secret(token: &str) -> String {
    token.trim_start_matches("enc_inv_").to_string()
}

#[cfg(unix)]
fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(p)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

/// Every folder and file under `dir` (and `dir`) whose mode is not 0700 / 0600; and how many
/// files were seen.
#[cfg(unix)]
fn not_private(dir: &Path) -> (Vec<String>, usize) {
    let mut bad = Vec::new();
    let mut files = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        use std::os::unix::fs::PermissionsExt;
        // The server may remove a file meanwhile (a merged segment): skip what vanished.
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        let is_dir = meta.is_dir();
        let want = if is_dir { 0o700 } else { 0o600 };
        let m = meta.permissions().mode() & 0o777;
        if m != want {
            bad.push(format!("{} {:o}", p.display(), m));
        }
        if is_dir {
            for e in std::fs::read_dir(&p).into_iter().flatten().flatten() {
                stack.push(e.path());
            }
        } else {
            files += 1;
        }
    }
    (bad, files)
}

/// Sets every folder under `dir` to `dirs` and every file to `files` (an older version's modes).
#[cfg(unix)]
fn chmod_all(dir: &Path, dirs: u32, files: u32) {
    use std::os::unix::fs::PermissionsExt;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = if p.is_dir() { dirs } else { files };
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(m)).expect("chmod");
        if p.is_dir() {
            for e in std::fs::read_dir(&p).expect("read_dir").flatten() {
                stack.push(e.path());
            }
        }
    }
}

#[cfg(unix)]
#[tokio::test]
async fn the_data_directory_is_private_and_older_modes_are_tightened() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("data");
    let bin = Binary::start(&dir);
    let op = bin.api();
    let org = op.create_org("modes").await;
    let ws = op.create_workspace(&org, "w").await;
    op.use_static_embedder(&ws).await;
    let r = op
        .upload(
            &format!("/v1/workspaces/{ws}/documents?wait=true"),
            "a.txt",
            Some("text/plain"),
            b"a file kept as a blob".to_vec(),
            &[],
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    op.add_doc(&ws, json!({"text": "and a JSON document"}))
        .await;

    // While serving (WAL files, locks, markers, segments exist) and after a clean stop.
    assert!(dir.join("control.db-wal").exists());
    let (bad, files) = not_private(&dir);
    assert!(bad.is_empty(), "serving: not private: {bad:#?}");
    assert!(files >= 10, "only {files} files were checked");
    let _ = bin.stop();
    let (bad, _) = not_private(&dir);
    assert!(bad.is_empty(), "stopped: not private: {bad:#?}");

    // What an older version left: everything world-readable. Tightened at start (the data
    // folder and the control plane's files) and when the workspace is opened.
    chmod_all(&dir, 0o755, 0o644);
    let ws_dir = dir.join(&ws);
    assert_eq!(mode(&ws_dir), 0o755);
    let bin = Binary::start(&dir);
    assert_eq!(mode(&dir), 0o700, "the data folder");
    for f in ["control.db", "control.db-wal", "master.key", ".lock"] {
        assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
    }
    assert_eq!(
        bin.api().get(&format!("/v1/workspaces/{ws}")).await.status,
        200
    );
    assert_eq!(mode(&ws_dir), 0o700, "the workspace folder");
    for d in ["index", "blobs"] {
        assert_eq!(mode(&ws_dir.join(d)), 0o700, "{d}");
    }
    assert_eq!(mode(&ws_dir.join("workspace.db")), 0o600);
    let _ = bin.stop();
}

/// SIGTERM of the real binary, with its default shutdown bounds, while a chat event stream is
/// open (its model provider never answers) and a `?wait=true` upload waits behind a job that
/// never runs: the binary exits cleanly within a few seconds (the drain delay and a little),
/// the waiter is answered `503`, and the stream ends with an `error` event.
#[tokio::test]
async fn sigterm_ends_event_streams_and_waiters_within_a_few_seconds() {
    // A model provider that accepts connections and never answers.
    let provider = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let provider_base = format!("http://{}/v1", provider.local_addr().expect("addr"));
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((c, _)) = provider.accept().await {
            held.push(c);
        }
    });

    let tmp = tempfile::tempdir().expect("tempdir");
    let delay = enclave::config::DEFAULT_SHUTDOWN_DELAY_SECS.to_string();
    let bin = Binary::start_with(
        tmp.path(),
        &[
            ("ENCLAVE_INGEST_WORKERS", "0"),
            ("ENCLAVE_SHUTDOWN_DELAY_SECS", &delay),
        ],
    );
    let op = bin.api();
    let org = op.create_org("sigterm").await;
    let ws = op.create_workspace(&org, "w").await;
    op.use_static_embedder(&ws).await;
    let r = op
        .send(
            reqwest::Method::PUT,
            &format!("/v1/orgs/{org}/providers/openai-compatible"),
            Some(json!({"base_url": provider_base, "model": "m", "api_key": "sk-test"})),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = op
        .post(
            &format!("/v1/workspaces/{ws}/agents"),
            json!({"name": "Plain", "tools": [], "model": "m"}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let agent = r.id();

    // The event stream: open once its first event has arrived.
    let mut stream = reqwest::Client::new()
        .post(format!("{}/v1/workspaces/{ws}/chat", bin.base))
        .bearer_auth(TOKEN)
        .json(&json!({"agent_id": agent, "query": "anything?", "stream": true}))
        .send()
        .await
        .expect("chat");
    assert_eq!(stream.status(), 200);
    let mut events = String::new();
    while !events.contains("event: session") {
        let chunk = tokio::time::timeout(Duration::from_secs(20), stream.chunk())
            .await
            .expect("the first event")
            .expect("read")
            .expect("a chunk");
        events.push_str(&String::from_utf8_lossy(&chunk));
    }
    let reader = tokio::spawn(async move {
        while let Ok(Some(chunk)) = stream.chunk().await {
            events.push_str(&String::from_utf8_lossy(&chunk));
        }
        events
    });
    // The waiter: its job is queued and never runs.
    let waiter = tokio::spawn({
        let op = op.clone();
        let ws = ws.clone();
        async move {
            op.post(
                &format!("/v1/workspaces/{ws}/documents?wait=true"),
                json!({"text": "never ingested: no job workers"}),
            )
            .await
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let jobs = op.get(&format!("/v1/workspaces/{ws}/jobs")).await;
        if jobs.body["data"].as_array().is_some_and(|d| !d.is_empty()) {
            break;
        }
        assert!(Instant::now() < deadline, "the upload never queued a job");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let signalled = Instant::now();
    let log = tokio::task::spawn_blocking(move || bin.stop())
        .await
        .expect("stop");
    let took = signalled.elapsed();
    let bound = Duration::from_secs(enclave::config::DEFAULT_SHUTDOWN_DELAY_SECS + 4);
    assert!(took < bound, "SIGTERM took {took:?}:\n{log}");

    let r = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("the waiter was answered")
        .expect("join");
    assert_eq!((r.status, r.code()), (503, "unavailable"), "{:?}", r.body);
    let events = tokio::time::timeout(Duration::from_secs(5), reader)
        .await
        .expect("the stream ended")
        .expect("join");
    let last = events
        .trim_end()
        .rsplit("\n\n")
        .next()
        .unwrap_or_default()
        .to_string();
    assert!(
        last.starts_with("event: error") && last.contains("\"unavailable\""),
        "{events}"
    );
    silent.abort();
}

/// An answer sent before the request body was read (a refused credential, an unknown
/// workspace) reaches the client whole: the server closes its side, then reads and discards
/// what the client still sends instead of resetting the connection under it. A reset would
/// fail the client's upload and may destroy the answer it has not read yet (`enclave ingest
/// --server` then reported "the server did not answer" instead of the 404).
#[tokio::test]
async fn an_answer_sent_before_the_upload_was_read_is_not_reset() {
    let s = TestServer::start();
    const BODY: usize = 128 << 10;
    let head = request_head(
        "POST",
        &format!("/v1/workspaces/{}/documents", uuid::Uuid::now_v7()),
        &[
            "Content-Type: text/plain",
            &format!("Content-Length: {BODY}"),
        ],
    );
    let mut c = TcpStream::connect(addr(&s)).await.expect("connect");
    c.write_all(head.as_bytes()).await.expect("write head");
    // Answered before a byte of the body was sent.
    let r = read_full_response(&mut c).await;
    assert_eq!(r.status, 404, "{} {:?}", r.head, r.json());
    // The client, as one that writes its upload before reading, goes on sending it.
    for piece in vec![b'x'; BODY].chunks(8 << 10) {
        c.write_all(piece)
            .await
            .expect("the server reset the connection during the upload");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    c.shutdown().await.expect("shutdown");
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(20), c.read_to_end(&mut rest))
        .await
        .expect("the server closes the connection")
        .expect("a clean end of stream, not a reset");
    assert_eq!(n, 0, "nothing after the answer");
}
