//! The OpenAI-compatible provider client: `POST {base_url}/chat/completions`, streaming or not,
//! with the org's own key. Every call is bounded: a timeout to the answer (to the first byte and
//! then between chunks when streaming), retries with exponential backoff on 429, 5xx and
//! unreachable hosts, and then a clear `Error::Provider` (`502 provider_error`). The key is only
//! ever put in the `Authorization` header; no error message or log line contains it or the
//! provider's own error text (which may echo parts of it).

use std::time::Duration;

use futures_util::StreamExt;
use serde::Serialize;
use serde_json::{json, Value};

use super::ChatState;
use crate::error::{Error, Result};

/// Largest answer accepted from a provider (bytes), streamed or not.
const MAX_ANSWER_BYTES: usize = 4 << 20;
/// Longest wait a provider's `Retry-After` may impose.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(5);

/// The settings of one call, resolved from the org's provider and the agent.
#[derive(Clone)]
pub struct OpenAiConfig {
    pub base_url: String,
    pub model: String,
    pub api_key: String,
    pub temperature: Option<f64>,
    pub max_tokens: Option<i64>,
}

impl std::fmt::Debug for OpenAiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiConfig")
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("api_key", &"<sealed>")
            .finish()
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct ProviderUsage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

#[derive(Debug, Clone, Default)]
pub struct Completion {
    pub content: String,
    pub tool_calls: Vec<ToolCall>,
    pub usage: Option<ProviderUsage>,
}

fn provider_error(msg: impl Into<String>) -> Error {
    Error::Provider(msg.into())
}

fn usage_of(v: &Value) -> Option<ProviderUsage> {
    let u = v.get("usage").filter(|u| u.is_object())?;
    Some(ProviderUsage {
        prompt_tokens: u.get("prompt_tokens").and_then(Value::as_u64).unwrap_or(0),
        completion_tokens: u
            .get("completion_tokens")
            .and_then(Value::as_u64)
            .unwrap_or(0),
    })
}

/// Calls the model. With `on_delta`, streams and reports each text delta as it arrives.
pub async fn complete(
    state: &ChatState,
    cfg: &OpenAiConfig,
    messages: &[Value],
    tools: &[Value],
    tool_choice: Option<&str>,
    on_delta: Option<&(dyn Fn(&str) + Send + Sync)>,
) -> Result<Completion> {
    let stream = on_delta.is_some();
    let mut body = json!({
        "model": cfg.model,
        "messages": messages,
        "stream": stream,
    });
    if let Some(t) = cfg.temperature {
        body["temperature"] = json!(t);
    }
    if let Some(m) = cfg.max_tokens {
        body["max_tokens"] = json!(m);
    }
    if !tools.is_empty() {
        body["tools"] = json!(tools);
        if let Some(c) = tool_choice {
            body["tool_choice"] = json!(c);
        }
    }
    if stream {
        body["stream_options"] = json!({"include_usage": true});
    }
    let resp = send(state, cfg, &body).await?;
    match on_delta {
        None => {
            let bytes = read_all(state, resp).await?;
            let v: Value = serde_json::from_slice(&bytes).map_err(|_| {
                provider_error("the model provider answered something that is not JSON")
            })?;
            parse_completion(&v)
        }
        Some(f) => read_stream(state, resp, f).await,
    }
}

fn parse_completion(v: &Value) -> Result<Completion> {
    let msg = v
        .pointer("/choices/0/message")
        .ok_or_else(|| provider_error("the model provider's answer has no choices[0].message"))?;
    let content = msg
        .get("content")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let tool_calls = msg
        .get("tool_calls")
        .and_then(Value::as_array)
        .map(|calls| {
            calls
                .iter()
                .filter_map(|c| {
                    Some(ToolCall {
                        id: c
                            .get("id")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string(),
                        name: c.pointer("/function/name")?.as_str()?.to_string(),
                        arguments: c
                            .pointer("/function/arguments")
                            .and_then(Value::as_str)
                            .unwrap_or("{}")
                            .to_string(),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(Completion {
        content,
        tool_calls,
        usage: usage_of(v),
    })
}

/// Sends the request, retrying on 429, 5xx and connection failures with exponential backoff.
async fn send(state: &ChatState, cfg: &OpenAiConfig, body: &Value) -> Result<reqwest::Response> {
    let url = format!("{}/chat/completions", cfg.base_url.trim_end_matches('/'));
    let attempts = state.retries + 1;
    let secs = state.timeout.as_secs();
    let mut last = String::new();
    for attempt in 0..attempts {
        if attempt > 0 {
            tracing::info!(attempt, reason = %last, "retrying the model provider");
        }
        let mut req = state.http.post(&url).json(body);
        if !cfg.api_key.is_empty() {
            req = req.bearer_auth(&cfg.api_key);
        }
        let mut wait = state.backoff * 2u32.saturating_pow(attempt);
        match tokio::time::timeout(state.timeout, req.send()).await {
            Err(_) => {
                return Err(provider_error(format!(
                    "the model provider did not answer within {secs} s"
                )))
            }
            Ok(Err(e)) if e.is_timeout() => {
                return Err(provider_error(format!(
                    "the model provider did not answer within {secs} s"
                )))
            }
            Ok(Err(e)) if e.is_connect() => last = "the model provider could not be reached".into(),
            Ok(Err(_)) => last = "the request to the model provider failed".into(),
            Ok(Ok(resp)) => {
                let status = resp.status();
                if status.is_success() {
                    return Ok(resp);
                }
                if status.as_u16() == 429 || status.is_server_error() {
                    if let Some(ra) = resp
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                    {
                        wait = wait.max(Duration::from_secs(ra)).min(MAX_RETRY_AFTER);
                    }
                    last = format!("the model provider answered {status}");
                } else {
                    return Err(provider_error(format!(
                        "the model provider refused the request ({status}); check the organization's provider settings and the agent's model"
                    )));
                }
            }
        }
        if attempt + 1 < attempts {
            tokio::time::sleep(wait).await;
        }
    }
    Err(provider_error(format!(
        "{last} (after {attempts} attempts)"
    )))
}

async fn read_all(state: &ChatState, resp: reqwest::Response) -> Result<Vec<u8>> {
    let secs = state.timeout.as_secs();
    let mut out = Vec::new();
    let mut stream = resp.bytes_stream();
    let deadline = tokio::time::Instant::now() + state.timeout;
    loop {
        let next = tokio::time::timeout_at(deadline, stream.next())
            .await
            .map_err(|_| {
                provider_error(format!("the model provider did not answer within {secs} s"))
            })?;
        match next {
            None => return Ok(out),
            Some(Err(_)) => return Err(provider_error("the model provider's answer broke off")),
            Some(Ok(chunk)) => {
                if out.len() + chunk.len() > MAX_ANSWER_BYTES {
                    return Err(provider_error("the model provider's answer is too large"));
                }
                out.extend_from_slice(&chunk);
            }
        }
    }
}

/// Reads a `text/event-stream` of chat completion chunks.
async fn read_stream(
    state: &ChatState,
    resp: reqwest::Response,
    on_delta: &(dyn Fn(&str) + Send + Sync),
) -> Result<Completion> {
    let secs = state.timeout.as_secs();
    let mut stream = resp.bytes_stream();
    let mut buf: Vec<u8> = Vec::new();
    let mut total = 0usize;
    let mut acc = StreamAcc::default();
    loop {
        let next = tokio::time::timeout(state.timeout, stream.next())
            .await
            .map_err(|_| provider_error(format!("the model provider stalled for {secs} s")))?;
        let chunk = match next {
            None => break,
            Some(Err(_)) => return Err(provider_error("the model provider's stream broke off")),
            Some(Ok(c)) => c,
        };
        total += chunk.len();
        if total > MAX_ANSWER_BYTES {
            return Err(provider_error("the model provider's answer is too large"));
        }
        buf.extend_from_slice(&chunk);
        while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            let line = String::from_utf8_lossy(&line);
            if acc.line(line.trim_end_matches(['\r', '\n']), on_delta)? {
                return Ok(acc.finish());
            }
        }
    }
    let rest = String::from_utf8_lossy(&buf).to_string();
    acc.line(rest.trim(), on_delta)?;
    Ok(acc.finish())
}

#[derive(Default)]
struct StreamAcc {
    content: String,
    calls: Vec<ToolCall>,
    usage: Option<ProviderUsage>,
}

impl StreamAcc {
    /// Takes one SSE line; true at `[DONE]`.
    fn line(&mut self, line: &str, on_delta: &(dyn Fn(&str) + Send + Sync)) -> Result<bool> {
        let Some(data) = line.strip_prefix("data:") else {
            return Ok(false);
        };
        let data = data.trim();
        if data == "[DONE]" {
            return Ok(true);
        }
        if data.is_empty() {
            return Ok(false);
        }
        let v: Value = serde_json::from_str(data).map_err(|_| {
            provider_error("the model provider streamed something that is not JSON")
        })?;
        if v.get("error").is_some() {
            return Err(provider_error(
                "the model provider reported an error mid-stream",
            ));
        }
        if let Some(u) = usage_of(&v) {
            self.usage = Some(u);
        }
        let Some(delta) = v.pointer("/choices/0/delta") else {
            return Ok(false);
        };
        if let Some(text) = delta.get("content").and_then(Value::as_str) {
            if !text.is_empty() {
                self.content.push_str(text);
                on_delta(text);
            }
        }
        if let Some(calls) = delta.get("tool_calls").and_then(Value::as_array) {
            for c in calls {
                let index = c.get("index").and_then(Value::as_u64).unwrap_or(0) as usize;
                if index > 64 {
                    return Err(provider_error(
                        "the model provider asked for too many tools",
                    ));
                }
                while self.calls.len() <= index {
                    self.calls.push(ToolCall {
                        id: String::new(),
                        name: String::new(),
                        arguments: String::new(),
                    });
                }
                let slot = &mut self.calls[index];
                if let Some(id) = c.get("id").and_then(Value::as_str) {
                    slot.id.push_str(id);
                }
                if let Some(n) = c.pointer("/function/name").and_then(Value::as_str) {
                    slot.name.push_str(n);
                }
                if let Some(a) = c.pointer("/function/arguments").and_then(Value::as_str) {
                    slot.arguments.push_str(a);
                }
            }
        }
        Ok(false)
    }

    fn finish(self) -> Completion {
        Completion {
            content: self.content,
            tool_calls: self
                .calls
                .into_iter()
                .filter(|c| !c.name.is_empty())
                .collect(),
            usage: self.usage,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_accumulates_text_and_tool_call_fragments() {
        let seen = std::sync::Mutex::new(String::new());
        let f = |t: &str| seen.lock().expect("lock").push_str(t);
        let mut acc = StreamAcc::default();
        let lines = [
            r#"data: {"choices":[{"delta":{"role":"assistant","content":"Hel"}}]}"#,
            r#"data: {"choices":[{"delta":{"content":"lo"}}]}"#,
            r#"data: {"choices":[{"delta":{"tool_calls":[{"index":0,"id":"c1","function":{"name":"search","arguments":"{\"qu"}}]}}]}"#,
            r#"data: {"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"ery\":\"x\"}"}}]}}]}"#,
            r#"data: {"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2}}"#,
            ": comment",
        ];
        for l in lines {
            assert!(!acc.line(l, &f).expect("line"));
        }
        assert!(acc.line("data: [DONE]", &f).expect("done"));
        let c = acc.finish();
        assert_eq!(c.content, "Hello");
        assert_eq!(*seen.lock().expect("lock"), "Hello");
        assert_eq!(c.tool_calls[0].name, "search");
        assert_eq!(c.tool_calls[0].arguments, r#"{"query":"x"}"#);
        assert_eq!(c.usage.map(|u| u.prompt_tokens), Some(5));
    }

    #[test]
    fn debug_never_shows_the_key() {
        let cfg = OpenAiConfig {
            base_url: "http://x".into(),
            model: "m".into(),
            api_key: "sk-very-secret".into(),
            temperature: None,
            max_tokens: None,
        };
        assert!(!format!("{cfg:?}").contains("sk-very-secret"));
    }
}
