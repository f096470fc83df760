//! The one test harness: boots Enclave's real server on a temp data dir and a free loopback
//! port, and talks HTTP to it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use enclave::app::App;
use enclave::config::Config;
use enclave::control::AdminTokenSource;
use reqwest::Method;
use serde_json::Value;

pub const TOKEN: &str = "test-operator-token-0123456789";

/// How a test server starts: the server's own [`Config`] (so a new configuration field needs
/// no change here), with test defaults.
pub struct Options {
    /// `Config::for_data_dir` with the defaults of tests: the operator token [`TOKEN`], 16 open
    /// workspaces, one job worker, 8 MiB uploads, a short provider timeout (2 s, 2 retries), no
    /// drain at shutdown.
    pub config: Config,
    /// Whether the server runs on `config.data_dir` as it is (a directory kept across servers);
    /// otherwise it gets a fresh temp dir, removed when it is dropped (see [`TestServer::stop`]).
    pub keep_data_dir: bool,
}

impl Default for Options {
    fn default() -> Self {
        let mut config = Config::for_data_dir(Path::new(""));
        config.max_open_workspaces = 16;
        config.admin_token = Some(TOKEN.to_string());
        config.open_wait_secs = 30;
        config.provider_timeout_secs = 2;
        config.provider_retries = 2;
        config.ingest_workers = 1;
        config.max_upload_bytes = 8 << 20;
        config.shutdown_delay_secs = 0;
        Options {
            config,
            keep_data_dir: false,
        }
    }
}

impl Options {
    /// A server on `dir` (kept after it stops, so a later server restarts on it) with
    /// `ingest_workers` job workers.
    pub fn on(dir: &Path, ingest_workers: usize) -> Options {
        let mut opts = Options::configured(|c| {
            c.data_dir = dir.to_path_buf();
            c.ingest_workers = ingest_workers;
        });
        opts.keep_data_dir = true;
        opts
    }

    /// The test defaults changed by `change` .
    pub fn with(mut self, change: impl FnOnce(&mut Config)) -> Options {
        change(&mut self.config);
        self
    }

    /// The test defaults changed by `change`.
    pub fn configured(change: impl FnOnce(&mut Config)) -> Options {
        Options::default().with(change)
    }
}

pub struct TestServer {
    pub base: String,
    pub token: String,
    pub data_dir: PathBuf,
    pub app: Arc<App>,
    tmp: Option<tempfile::TempDir>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestServer {
    pub fn start() -> TestServer {
        Self::start_with(Options::default())
    }

    pub fn start_with(opts: Options) -> TestServer {
        let Options {
            mut config,
            keep_data_dir,
        } = opts;
        let tmp = if keep_data_dir {
            None
        } else {
            let t = tempfile::tempdir().expect("tempdir");
            config.data_dir = t.path().to_path_buf();
            Some(t)
        };
        let data_dir = config.data_dir.clone();
        let admin_token = config.admin_token.clone();
        let (app, source) = App::open(config).expect("open app");
        let token = match source {
            AdminTokenSource::Generated(t) => t,
            _ => admin_token.unwrap_or_default(),
        };
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server_app = app.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = enclave::server::bind(([127, 0, 0, 1], 0).into())
                    .await
                    .expect("bind");
                addr_tx
                    .send(listener.local_addr().expect("addr"))
                    .expect("send addr");
                enclave::server::serve(server_app, listener, async {
                    let _ = stop_rx.await;
                })
                .await
                .expect("serve");
            });
        });
        let addr = addr_rx.recv().expect("server address");
        TestServer {
            base: format!("http://{addr}"),
            token,
            data_dir,
            app,
            tmp,
            shutdown: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// Stops gracefully and hands back the temp dir so the data outlives the server.
    pub fn stop(mut self) -> Option<tempfile::TempDir> {
        self.halt();
        self.tmp.take()
    }

    /// Sends the shutdown signal (like SIGTERM) without waiting for the server to stop.
    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Whether the server has stopped (its serving thread has ended).
    pub fn has_stopped(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    fn halt(&mut self) {
        self.begin_shutdown();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    pub fn api(&self) -> Api {
        Api::new(&self.base, Some(&self.token))
    }

    pub fn anonymous(&self) -> Api {
        Api::new(&self.base, None)
    }

    /// Moves the server's clock forward (the one credentials expire by): a test lets an
    /// expiry pass this way instead of sleeping until it does.
    pub fn advance_clock(&self, by: std::time::Duration) {
        self.app.identity().state().clock().advance(by);
    }

    pub fn data_path(&self, rel: &str) -> PathBuf {
        self.data_dir.join(rel)
    }

    /// Seeds a new, empty workspace through the API: one single-chunk document per
    /// `(title, metadata, text)`, each added with `?wait=true`. The workspace's embedder becomes
    /// `user-provided` and each document carries its own basis vector, so a search or chat
    /// without a query vector finds documents by their words only (what these tests assert),
    /// and the vector finds each document's chunk. Returns `(document id, [chunk id])` each.
    pub async fn seed_documents(
        &self,
        ws: &str,
        docs: &[(&str, Value, &str)],
    ) -> Vec<(String, Vec<i64>)> {
        let api = self.api();
        let dim = docs.len().max(1);
        let r = api
            .send(
                Method::PUT,
                &format!("/v1/workspaces/{ws}/embedder"),
                Some(serde_json::json!({"kind": "user-provided", "dimension": dim})),
            )
            .await;
        assert_eq!(r.status, 200, "set embedder: {:?}", r.body);
        let basis = |i: usize| {
            let mut v = vec![0.0f32; dim];
            v[i] = 1.0;
            v
        };
        let mut out = Vec::with_capacity(docs.len());
        for (i, (title, metadata, text)) in docs.iter().enumerate() {
            let r = api
                .post(
                    &format!("/v1/workspaces/{ws}/documents?wait=true"),
                    serde_json::json!({
                        "title": title, "metadata": metadata, "text": text, "embedding": basis(i),
                    }),
                )
                .await;
            assert_eq!(r.status, 201, "add document: {:?}", r.body);
            assert_eq!(r.body["chunk_count"], 1, "one chunk: {:?}", r.body);
            let hits = api
                .search(
                    ws,
                    serde_json::json!({"mode": "vector", "vector": basis(i), "limit": 1}),
                )
                .await;
            let hit = hits.first().expect("the seeded chunk");
            assert_eq!(hit["document_id"], r.body["id"], "{hits:?}");
            let chunk = hit["chunk_id"].as_i64().expect("chunk id");
            out.push((r.id(), vec![chunk]));
        }
        out
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.halt();
    }
}

/// A response: status, parsed JSON body (or `Null`), headers.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
}

impl Resp {
    /// The SPEC error code of an error response.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }

    /// The message of an error response (empty when there is none).
    pub fn message(&self) -> &str {
        self.body["error"]["message"].as_str().unwrap_or("")
    }

    pub fn id(&self) -> String {
        self.body["id"]
            .as_str()
            .expect("response has an id")
            .to_string()
    }
}

#[derive(Clone)]
pub struct Api {
    base: String,
    token: Option<String>,
    headers: Vec<(String, String)>,
    client: reqwest::Client,
}

/// Password of the users the fixtures create.
pub const PASSWORD: &str = "correct horse battery staple";

/// A user made by [`Api::create_user`]: id, email and a session token.
#[derive(Debug, Clone)]
pub struct TestUser {
    pub id: String,
    pub email: String,
    pub token: String,
}

/// An API key made by [`Api::create_key`].
#[derive(Debug, Clone)]
pub struct TestKey {
    pub id: String,
    pub key: String,
    pub prefix: String,
}

impl Api {
    pub fn new(base: &str, token: Option<&str>) -> Api {
        Api {
            base: base.to_string(),
            token: token.map(str::to_string),
            headers: Vec::new(),
            client: reqwest::Client::new(),
        }
    }

    pub fn with_token(&self, token: &str) -> Api {
        Api {
            token: Some(token.to_string()),
            ..self.clone()
        }
    }

    /// The same client without a credential.
    pub fn without_token(&self) -> Api {
        Api {
            token: None,
            ..self.clone()
        }
    }

    /// The same client sending one more header on every request (e.g. `X-Tenant-ID`, `Host`).
    pub fn with_header(&self, name: &str, value: &str) -> Api {
        let mut api = self.clone();
        api.headers.push((name.to_string(), value.to_string()));
        api
    }

    pub async fn send(&self, method: Method, path: &str, body: Option<Value>) -> Resp {
        let mut req = self
            .client
            .request(method, format!("{}{}", self.base, path));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        Self::read(resp).await
    }

    pub async fn raw(&self, method: Method, path: &str, content_type: &str, body: &str) -> Resp {
        let mut req = self
            .client
            .request(method, format!("{}{}", self.base, path))
            .header("content-type", content_type)
            .body(body.to_string());
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        Self::read(req.send().await.expect("request")).await
    }

    /// Uploads a file as multipart (`file` part plus extra text parts).
    pub async fn upload(
        &self,
        path: &str,
        file_name: &str,
        content_type: Option<&str>,
        bytes: Vec<u8>,
        fields: &[(&str, &str)],
    ) -> Resp {
        let mut part = reqwest::multipart::Part::bytes(bytes).file_name(file_name.to_string());
        if let Some(ct) = content_type {
            part = part.mime_str(ct).expect("mime");
        }
        let mut form = reqwest::multipart::Form::new().part("file", part);
        for (k, v) in fields {
            form = form.text(k.to_string(), v.to_string());
        }
        let mut req = self
            .client
            .post(format!("{}{}", self.base, path))
            .multipart(form);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        Self::read(req.send().await.expect("request")).await
    }

    async fn read(resp: reqwest::Response) -> Resp {
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Resp {
            status,
            body,
            headers,
        }
    }

    /// POSTs and reads a Server-Sent Events answer: `(status, [(event name, data)])`; a data
    /// line that is not JSON is kept as a JSON string.
    pub async fn sse(&self, path: &str, body: Value) -> (u16, Vec<(String, Value)>) {
        let mut req = self
            .client
            .post(format!("{}{}", self.base, path))
            .json(&body);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        let mut events = Vec::new();
        for block in text.split("\n\n") {
            let mut name = String::from("message");
            let mut data = String::new();
            for line in block.lines() {
                if let Some(n) = line.strip_prefix("event:") {
                    name = n.trim().to_string();
                } else if let Some(d) = line.strip_prefix("data:") {
                    data.push_str(d.strip_prefix(' ').unwrap_or(d));
                }
            }
            if !data.is_empty() {
                let v = serde_json::from_str(&data).unwrap_or(Value::String(data));
                events.push((name, v));
            }
        }
        (status, events)
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.send(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Resp {
        self.send(Method::POST, path, Some(body)).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> Resp {
        self.send(Method::PATCH, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> Resp {
        self.send(Method::DELETE, path, None).await
    }

    pub async fn text(&self, path: &str) -> String {
        self.client
            .get(format!("{}{}", self.base, path))
            .send()
            .await
            .expect("request")
            .text()
            .await
            .expect("text")
    }

    // ---- fixtures ----

    /// Creates an org on the `enterprise` plan (no limits): tests of limits set them.
    pub async fn create_org(&self, slug: &str) -> String {
        let r = self
            .post(
                "/v1/orgs",
                serde_json::json!({"name": slug, "slug": slug, "plan": "enterprise"}),
            )
            .await;
        assert_eq!(r.status, 201, "create org: {:?}", r.body);
        r.id()
    }

    /// Invites `email` into `org` with `role` (this client must be allowed to) and accepts as a
    /// new user; returns the user with a live session.
    pub async fn create_user(&self, org: &str, email: &str, role: &str) -> TestUser {
        let r = self
            .post(
                &format!("/v1/orgs/{org}/invitations"),
                serde_json::json!({"email": email, "role": role}),
            )
            .await;
        assert_eq!(r.status, 201, "invite: {:?}", r.body);
        let invitation = r.body["token"]
            .as_str()
            .expect("invitation token")
            .to_string();
        let r = self
            .without_token()
            .post(
                &format!("/v1/invitations/{invitation}/accept"),
                serde_json::json!({"password": PASSWORD}),
            )
            .await;
        assert_eq!(r.status, 201, "accept: {:?}", r.body);
        TestUser {
            id: r.body["user"]["id"].as_str().expect("user id").to_string(),
            email: email.to_string(),
            token: r.body["token"].as_str().expect("session").to_string(),
        }
    }

    /// Logs in; returns the session token.
    pub async fn login(&self, email: &str, password: &str) -> Resp {
        self.without_token()
            .post(
                "/v1/auth/login",
                serde_json::json!({"email": email, "password": password}),
            )
            .await
    }

    /// Creates an API key with `scopes` for `ws`.
    pub async fn create_key(&self, ws: &str, scopes: &[&str]) -> TestKey {
        let r = self
            .post(
                &format!("/v1/workspaces/{ws}/api-keys"),
                serde_json::json!({"name": "test", "scopes": scopes}),
            )
            .await;
        assert_eq!(r.status, 201, "create key: {:?}", r.body);
        TestKey {
            id: r.id(),
            key: r.body["key"].as_str().expect("key").to_string(),
            prefix: r.body["prefix"].as_str().expect("prefix").to_string(),
        }
    }

    /// Mints a tenant token with this client's API key.
    pub async fn mint_token(&self, body: Value) -> Resp {
        self.post("/v1/tenant-tokens", body).await
    }

    /// Mints a tenant token with this client's API key, asserting that minting accepts `body`;
    /// returns the token.
    pub async fn tenant_token(&self, body: Value) -> String {
        let r = self.mint_token(body.clone()).await;
        assert_eq!(r.status, 201, "mint {body}: {:?}", r.body);
        r.body["token"].as_str().expect("token").to_string()
    }

    /// A client holding a tenant token minted with this client's API key (see
    /// [`Api::tenant_token`]).
    pub async fn tenant_client(&self, body: Value) -> Api {
        self.with_token(&self.tenant_token(body).await)
    }

    /// A client signed in as a new user of `org` with `role` (see [`Api::create_user`]).
    pub async fn user_client(&self, org: &str, email: &str, role: &str) -> Api {
        self.with_token(&self.create_user(org, email, role).await.token)
    }

    /// A client holding a new API key of `ws` with `scopes`.
    pub async fn key_client(&self, ws: &str, scopes: &[&str]) -> Api {
        self.with_token(&self.create_key(ws, scopes).await.key)
    }

    /// Sends `n` POSTs to `path` at once, the `i`-th with body `body(i)`; returns their statuses.
    pub async fn post_concurrently(
        &self,
        path: &str,
        n: usize,
        body: impl Fn(usize) -> Value,
    ) -> Vec<u16> {
        let tasks: Vec<_> = (0..n)
            .map(|i| {
                let api = self.clone();
                let path = path.to_string();
                let body = body(i);
                tokio::spawn(async move { api.post(&path, body).await.status })
            })
            .collect();
        let mut statuses = Vec::with_capacity(n);
        for t in tasks {
            statuses.push(t.await.expect("join"));
        }
        statuses
    }

    pub async fn create_workspace(&self, org: &str, slug: &str) -> String {
        let r = self
            .post(
                &format!("/v1/orgs/{org}/workspaces"),
                serde_json::json!({"name": slug, "slug": slug}),
            )
            .await;
        assert_eq!(r.status, 201, "create workspace: {:?}", r.body);
        r.id()
    }
}

impl Api {
    /// A new workspace in a new org, using the fast static embedder (most knowledge tests).
    pub async fn knowledge_workspace(&self, slug: &str) -> String {
        let org = self.create_org(slug).await;
        let ws = self.create_workspace(&org, slug).await;
        self.use_static_embedder(&ws).await;
        ws
    }

    /// A new knowledge workspace (see [`Api::knowledge_workspace`]) holding `docs` (JSON
    /// document bodies), each added with `?wait=true`; returns the workspace and the documents'
    /// ids, in order.
    pub async fn workspace_with_docs(&self, slug: &str, docs: Vec<Value>) -> (String, Vec<String>) {
        let ws = self.knowledge_workspace(slug).await;
        let mut ids = Vec::with_capacity(docs.len());
        for doc in docs {
            ids.push(self.add_doc(&ws, doc).await);
        }
        (ws, ids)
    }

    /// Switches a workspace to the fast static embedder (MiniLM is slow in a debug build).
    pub async fn use_static_embedder(&self, ws: &str) {
        let r = self
            .send(
                Method::PUT,
                &format!("/v1/workspaces/{ws}/embedder"),
                Some(serde_json::json!({"kind": "static"})),
            )
            .await;
        assert_eq!(r.status, 200, "set embedder: {:?}", r.body);
    }

    /// Adds a document (JSON body) without waiting; returns its job id.
    pub async fn queue_document(&self, ws: &str, body: Value) -> String {
        let r = self
            .post(&format!("/v1/workspaces/{ws}/documents"), body)
            .await;
        assert_eq!(r.status, 202, "add document: {:?}", r.body);
        r.body["job_id"].as_str().expect("job id").to_string()
    }

    /// Adds a JSON document with `?wait=true` and returns its id.
    pub async fn add_doc(&self, ws: &str, body: Value) -> String {
        let r = self
            .post(&format!("/v1/workspaces/{ws}/documents?wait=true"), body)
            .await;
        assert!(r.status == 201, "add document: {} {:?}", r.status, r.body);
        r.id()
    }

    pub async fn search(&self, ws: &str, body: Value) -> Vec<Value> {
        let r = self
            .post(&format!("/v1/workspaces/{ws}/search"), body)
            .await;
        assert_eq!(r.status, 200, "search: {:?}", r.body);
        r.body["results"].as_array().cloned().unwrap_or_default()
    }

    /// Polls a job until it leaves queued/running (at most `secs`).
    pub async fn wait_job(&self, ws: &str, job: &str, secs: u64) -> Value {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        loop {
            let r = self.get(&format!("/v1/workspaces/{ws}/jobs/{job}")).await;
            assert_eq!(r.status, 200, "job: {:?}", r.body);
            let s = r.body["status"].as_str().unwrap_or("").to_string();
            if s != "queued" && s != "running" {
                return r.body;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "job {job} did not finish: {:?}",
                r.body
            );
            tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        }
    }
}

/// One request and what its answer must be (after PocketBase's `ApiScenario`): who sends it
/// (a client, with its credential and headers), method, path and body; the status, and when
/// set the SPEC error code, words of the error message and fragments the body text must
/// lack. Tests list scenarios in tables and run them with [`run_scenarios`] (or one with
/// [`Scenario::run`]); the name says which row failed.
#[derive(Clone)]
pub struct Scenario {
    name: String,
    client: Api,
    method: Method,
    path: String,
    body: Option<Value>,
    status: u16,
    code: Option<&'static str>,
    message_has: Vec<String>,
    body_lacks: Vec<String>,
}

impl Scenario {
    /// `method path` sent by `client`, expected to answer 200 unless told otherwise.
    pub fn new(name: &str, client: &Api, method: Method, path: impl Into<String>) -> Scenario {
        Scenario {
            name: name.to_string(),
            client: client.clone(),
            method,
            path: path.into(),
            body: None,
            status: 200,
            code: None,
            message_has: Vec::new(),
            body_lacks: Vec::new(),
        }
    }

    pub fn get(name: &str, client: &Api, path: impl Into<String>) -> Scenario {
        Scenario::new(name, client, Method::GET, path)
    }

    pub fn post(name: &str, client: &Api, path: impl Into<String>, body: Value) -> Scenario {
        Scenario::new(name, client, Method::POST, path).body(body)
    }

    pub fn patch(name: &str, client: &Api, path: impl Into<String>, body: Value) -> Scenario {
        Scenario::new(name, client, Method::PATCH, path).body(body)
    }

    pub fn delete(name: &str, client: &Api, path: impl Into<String>) -> Scenario {
        Scenario::new(name, client, Method::DELETE, path)
    }

    /// The JSON body sent.
    pub fn body(mut self, body: Value) -> Scenario {
        self.body = Some(body);
        self
    }

    /// The status expected (any error code).
    pub fn status(mut self, status: u16) -> Scenario {
        self.status = status;
        self
    }

    /// An error expected: its status and SPEC code.
    pub fn fails(mut self, status: u16, code: &'static str) -> Scenario {
        self.status = status;
        self.code = Some(code);
        self
    }

    /// Words the error message must contain.
    pub fn message_has(mut self, words: &str) -> Scenario {
        self.message_has.push(words.to_string());
        self
    }

    /// A fragment the body's JSON text must not contain (e.g. another tenant's id).
    pub fn body_lacks(mut self, fragment: &str) -> Scenario {
        self.body_lacks.push(fragment.to_string());
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sends the request and asserts the answer; returns it for further checks.
    pub async fn run(&self) -> Resp {
        let r = self
            .client
            .send(self.method.clone(), &self.path, self.body.clone())
            .await;
        let name = &self.name;
        match self.code {
            Some(code) => assert_eq!(
                (r.status, r.code()),
                (self.status, code),
                "{name}: {:?}",
                r.body
            ),
            None => assert_eq!(r.status, self.status, "{name}: {:?}", r.body),
        }
        for words in &self.message_has {
            assert!(r.message().contains(words.as_str()), "{name}: {:?}", r.body);
        }
        let text = r.body.to_string();
        for f in &self.body_lacks {
            assert!(!text.contains(f.as_str()), "{name}: {f:?} in {text}");
        }
        r
    }
}

/// Runs `scenarios` in order (see [`Scenario::run`]); returns their answers.
pub async fn run_scenarios(scenarios: &[Scenario]) -> Vec<Resp> {
    let mut out = Vec::with_capacity(scenarios.len());
    for s in scenarios {
        out.push(s.run().await);
    }
    out
}

/// One MCP (streamable HTTP) request with `token`, in session `session` when given:
/// `(status, the session id the answer names, JSON body or Null)`.
pub async fn mcp(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    session: Option<&str>,
    body: Value,
) -> (u16, Option<String>, Value) {
    let mut req = client
        .post(url)
        .bearer_auth(token)
        .header("accept", "application/json, text/event-stream")
        .json(&body);
    if let Some(s) = session {
        req = req.header("mcp-session-id", s);
    }
    let resp = req.send().await.expect("mcp");
    let status = resp.status().as_u16();
    let sid = resp
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = serde_json::from_str(&resp.text().await.expect("text")).unwrap_or(Value::Null);
    (status, sid, body)
}

/// An initialized MCP session of `token` on `url`: its id.
pub async fn mcp_session(client: &reqwest::Client, url: &str, token: &str) -> String {
    let (status, sid, body) = mcp(client, url, token, None, serde_json::json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}
    }))
    .await;
    assert_eq!(status, 200, "{body}");
    sid.expect("session id")
}

/// How many of `statuses` are `status`.
pub fn count(statuses: &[u16], status: u16) -> usize {
    statuses.iter().filter(|s| **s == status).count()
}

/// Value of a metric in `/metrics` text.
pub fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("metric {name} missing"))
}

/// Every file name under `dir`, relative, sorted.
pub fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(rd) = std::fs::read_dir(&d) {
            for e in rd.flatten() {
                let p = e.path();
                out.push(p.strip_prefix(dir).unwrap_or(&p).display().to_string());
                if p.is_dir() {
                    stack.push(p);
                }
            }
        }
    }
    out.sort();
    out
}

/// The kill tests' settings: `ENCLAVE_CRASH_ITERATIONS` (else `default_iterations`) kills, and
/// the seed of their random moments (`ENCLAVE_CRASH_SEED`, else a random one, printed with
/// `name` so that a failure can be replayed).
pub fn crash_settings(name: &str, default_iterations: usize) -> (usize, u64) {
    use rand::Rng;
    let iterations: usize = std::env::var("ENCLAVE_CRASH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_iterations);
    let seed: u64 = std::env::var("ENCLAVE_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    eprintln!("{name}: {iterations} kills, ENCLAVE_CRASH_SEED={seed}");
    (iterations, seed)
}

/// Starts the real binary (`enclave serve`) on `dir` and a free loopback port with the test
/// operator token; returns the child and its base URL once it listens. Its stderr is drained
/// by a thread so the server never blocks on a full pipe. For tests of the process itself
/// (signals, SIGKILL, restarts).
pub fn spawn_binary(dir: &Path) -> (std::process::Child, String) {
    spawn_server(server_command(dir))
}

/// `enclave serve` on `dir` and a free loopback port with the test operator token and plain
/// logs: add arguments or environment, then start it with [`spawn_server`].
pub fn server_command(dir: &Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_enclave"));
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .env("ENCLAVE_ADMIN_TOKEN", TOKEN)
        .env("ENCLAVE_LOG", "info")
        .env("NO_COLOR", "1");
    cmd
}

/// Starts a server command; returns the child and its base URL once it listens (the address
/// read from its log). Its stderr is drained by a thread so it never blocks on a full pipe.
pub fn spawn_server(mut cmd: std::process::Command) -> (std::process::Child, String) {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn enclave");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("server exited before listening")
            .expect("line");
        if let Some(rest) = line.split("address=").nth(1) {
            break rest.split_whitespace().next().unwrap_or("").to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (child, format!("http://{addr}"))
}
