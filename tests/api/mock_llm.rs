//! A scripted OpenAI-compatible model provider on loopback: each `POST .../chat/completions`
//! takes the next scripted reply (a JSON answer, an error status, an SSE stream, or a slow
//! answer) and is recorded (path, Authorization header, body) for the test to check.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};

#[derive(Debug, Clone)]
pub enum Reply {
    /// `200` with this JSON body.
    Json(Value),
    /// This status (with `Retry-After` seconds when given) and an error body.
    Status(u16, Option<u64>),
    /// `200` `text/event-stream` with these chunks as `data:` lines, then `data: [DONE]`.
    Stream(Vec<Value>),
    /// Waits, then answers `200` with this JSON.
    Slow(Duration, Value),
}

#[derive(Debug, Clone)]
pub struct Recorded {
    pub authorization: Option<String>,
    pub body: Value,
}

#[derive(Default)]
struct Shared {
    script: Mutex<VecDeque<Reply>>,
    requests: Mutex<Vec<Recorded>>,
}

pub struct MockLlm {
    /// The base URL to configure (`http://127.0.0.1:PORT/v1`).
    pub base: String,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MockLlm {
    pub fn start() -> MockLlm {
        let shared = Arc::new(Shared::default());
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let state = shared.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind");
                addr_tx
                    .send(listener.local_addr().expect("addr"))
                    .expect("send");
                let app = Router::new()
                    .route("/v1/chat/completions", post(handle))
                    .with_state(state);
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stop_rx.await;
                    })
                    .await;
            });
        });
        let addr = addr_rx.recv().expect("mock address");
        MockLlm {
            base: format!("http://{addr}/v1"),
            shared,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    pub fn push(&self, r: Reply) {
        self.shared.script.lock().expect("lock").push_back(r);
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().expect("lock").clone()
    }
}

impl Drop for MockLlm {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn handle(State(s): State<Arc<Shared>>, headers: HeaderMap, body: String) -> Response {
    s.requests.lock().expect("lock").push(Recorded {
        authorization: headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        body: serde_json::from_str(&body).unwrap_or(Value::Null),
    });
    let next = s.script.lock().expect("lock").pop_front();
    match next {
        None => (StatusCode::BAD_REQUEST, "unscripted request").into_response(),
        Some(Reply::Json(v)) => axum::Json(v).into_response(),
        Some(Reply::Status(code, retry)) => {
            let mut r = (
                StatusCode::from_u16(code).expect("status"),
                axum::Json(json!({"error": {"message": "scripted failure, key sk-leak-me"}})),
            )
                .into_response();
            if let Some(secs) = retry {
                r.headers_mut()
                    .insert("retry-after", secs.to_string().parse().expect("header"));
            }
            r
        }
        Some(Reply::Stream(chunks)) => {
            let mut text = String::new();
            for c in chunks {
                text.push_str(&format!("data: {c}\n\n"));
            }
            text.push_str("data: [DONE]\n\n");
            Response::builder()
                .header("content-type", "text/event-stream")
                .body(Body::from(text))
                .expect("response")
        }
        Some(Reply::Slow(d, v)) => {
            tokio::time::sleep(d).await;
            axum::Json(v).into_response()
        }
    }
}

/// A plain answer.
pub fn answer(text: &str) -> Value {
    json!({
        "id": "chatcmpl-mock", "object": "chat.completion", "created": 1, "model": "mock-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
    })
}

/// An answer that calls one tool.
pub fn tool_call(id: &str, name: &str, args: Value) -> Value {
    json!({
        "id": "chatcmpl-mock", "object": "chat.completion", "created": 1, "model": "mock-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": null, "tool_calls": [
            {"id": id, "type": "function", "function": {"name": name, "arguments": args.to_string()}}
        ]}, "finish_reason": "tool_calls"}],
        "usage": {"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25}
    })
}

/// Streamed chunks of a text answer, with a usage chunk at the end.
pub fn stream_text(parts: &[&str]) -> Vec<Value> {
    let mut out: Vec<Value> = parts
        .iter()
        .map(|p| json!({"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": null}]}))
        .collect();
    out.push(json!({"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}));
    out.push(json!({"id": "c", "object": "chat.completion.chunk", "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}}));
    out
}
