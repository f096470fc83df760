//! Configuration: command-line flags, then environment variables, then an optional TOML file,
//! then the embedded defaults (documented in README.md). Flags and environment variables are
//! merged by clap (`--data-dir` / `ENCLAVE_DATA_DIR`, ...); the file fills what both left unset.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Args;
use serde::Deserialize;

pub const DEFAULT_DATA_DIR: &str = "./data";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7700";
/// ~250 KiB and 3 file descriptors per open workspace: 256 open ≈ 64 MiB and 768 fds.
pub const DEFAULT_MAX_OPEN_WORKSPACES: usize = 256;
/// Seconds between scheduled backups.
pub const DEFAULT_BACKUP_INTERVAL_SECS: u64 = 86_400;
/// Scheduled backups kept.
pub const DEFAULT_BACKUP_KEEP: usize = 7;
pub const DEFAULT_WRITER_IDLE_SECS: u64 = 30;
/// Tiered storage: a workspace closed this long is offloaded to the object store (24 h).
pub const DEFAULT_OFFLOAD_AFTER_SECS: u64 = 86_400;
/// Tiered storage: bytes of local workspace folders kept before the coldest clean copies of
/// offloaded workspaces are evicted (10 GiB).
pub const DEFAULT_LOCAL_CACHE_BYTES: u64 = 10 << 30;
pub const DEFAULT_OPEN_WAIT_SECS: u64 = 30;
/// Seconds a model provider may take to answer (to its first byte when streaming, then between
/// chunks) before the request fails with `502 provider_error`.
pub const DEFAULT_PROVIDER_TIMEOUT_SECS: u64 = 60;
/// Retries of a provider call that answered 429 or 5xx or could not be reached.
pub const DEFAULT_PROVIDER_RETRIES: u32 = 2;
pub const DEFAULT_MAX_UPLOAD_BYTES: u64 = 50 << 20;
/// Most documents in one `POST /documents/batch`.
pub const DEFAULT_MAX_BATCH_DOCUMENTS: usize = 1000;
/// Largest `POST /documents/batch` body.
pub const DEFAULT_MAX_BATCH_BYTES: u64 = 32 << 20;
pub const DEFAULT_INGEST_WORKERS: usize = 1;
/// Seconds a client has to send a request's headers: from accepting its connection, or from
/// the first byte of a later request on a kept-alive connection. Slower ones are disconnected.
pub const DEFAULT_HEADER_READ_TIMEOUT_SECS: u64 = 10;
/// Seconds a kept-alive connection may wait, idle, for its next request before it is closed.
pub const DEFAULT_KEEP_ALIVE_IDLE_SECS: u64 = 120;
/// Connections served at once; further ones wait in the listen backlog until one closes.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Seconds between the shutdown signal (when `/readyz` starts answering 503) and the listener
/// closing: time for a load balancer to stop sending new requests.
pub const DEFAULT_SHUTDOWN_DELAY_SECS: u64 = 2;
/// Seconds requests in flight get to finish once the listener has closed; connections still
/// busy then are closed.
pub const DEFAULT_SHUTDOWN_GRACE_SECS: u64 = 10;
/// Seconds a request body may make no progress (no byte arrives while the server waits for
/// one) before the request ends with `408 request_timeout` and its connection is closed.
pub const DEFAULT_BODY_READ_TIMEOUT_SECS: u64 = 30;
/// The slowest average rate a request body may arrive at, in bytes per second: the server
/// waits for a body at most `body_read_timeout_secs` plus one second per this many bytes
/// received (as Apache's `mod_reqtimeout` `body=20,MinRate=500`). 0: no rate bound.
pub const DEFAULT_BODY_MIN_BYTES_PER_SEC: u64 = 500;
/// Seconds a response may wait, unsent, for a client that does not read it (its receive window
/// stays full) before the connection is closed (as nginx's `send_timeout`).
pub const DEFAULT_RESPONSE_WRITE_TIMEOUT_SECS: u64 = 60;
/// Days a deleted org or workspace is kept, restorable, before it is purged.
pub const DEFAULT_DELETION_GRACE_DAYS: u64 = 7;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// How new vector spaces store their vectors (`vector_storage`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum VectorStorage {
    /// One signed byte per dimension and a scale: a quarter of the floats' size.
    #[default]
    Int8,
    /// sqlite-vec's float table (the store of every space before int8).
    F32,
}

/// The options every command takes (`enclave --data-dir D org list`): where the data and the
/// configuration file are.
#[derive(Debug, Clone, Default, Args)]
pub struct GlobalArgs {
    /// TOML configuration file (keys as in README.md, Configuration).
    #[arg(long, env = "ENCLAVE_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Data directory [default: ./data].
    #[arg(long, env = "ENCLAVE_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// File holding the master key that seals provider API keys [default: ENCLAVE_MASTER_KEY,
    /// else data/master.key, generated on first start].
    #[arg(long, env = "ENCLAVE_MASTER_KEY_FILE", global = true)]
    pub master_key_file: Option<PathBuf>,
}

/// Every configuration option: the global ones (copied in from [`GlobalArgs`], never flags
/// here) and the server's, which are flags of `enclave serve` only. Other commands read the
/// server's options from the environment and the file alone ([`ConfigArgs::for_command`]).
#[derive(Debug, Clone, Default, Args)]
pub struct ConfigArgs {
    #[arg(skip)]
    pub config: Option<PathBuf>,
    #[arg(skip)]
    pub data_dir: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:7700].
    #[arg(long, env = "ENCLAVE_LISTEN")]
    pub listen: Option<String>,
    /// Capacity of the cache of open workspaces [default: 256].
    #[arg(long, env = "ENCLAVE_MAX_OPEN_WORKSPACES")]
    pub max_open_workspaces: Option<usize>,
    /// Log format [default: text].
    #[arg(long, env = "ENCLAVE_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Seconds after which an idle Tantivy writer is committed and closed [default: 30].
    #[arg(long, env = "ENCLAVE_WRITER_IDLE_SECS")]
    pub writer_idle_secs: Option<u64>,
    /// Scheduled backups from the server: a folder or s3://bucket/prefix [default: none].
    #[arg(long, env = "ENCLAVE_BACKUP_TO")]
    pub backup_to: Option<String>,
    /// Seconds between scheduled backups [default: 86400].
    #[arg(long, env = "ENCLAVE_BACKUP_INTERVAL")]
    pub backup_interval: Option<u64>,
    /// Scheduled backups kept (older ones and their unshared objects are removed) [default: 7].
    #[arg(long, env = "ENCLAVE_BACKUP_KEEP")]
    pub backup_keep: Option<usize>,
    /// Tiered storage: offload closed workspaces to s3://bucket/prefix or file:///folder
    /// [default: none, every workspace stays local].
    #[arg(long, env = "ENCLAVE_OBJECT_STORE")]
    pub object_store: Option<String>,
    /// Tiered storage: how long a workspace stays closed before it is offloaded, e.g. 24h,
    /// 30m, 90s [default: 24h].
    #[arg(long, env = "ENCLAVE_OFFLOAD_AFTER")]
    pub offload_after: Option<String>,
    /// Tiered storage: bytes of local workspace folders above which the coldest clean copies
    /// of offloaded workspaces are removed [default: 10737418240].
    #[arg(long, env = "ENCLAVE_LOCAL_CACHE_BYTES")]
    pub local_cache_bytes: Option<u64>,
    /// Seconds a request waits for a free open-workspace slot before 503 [default: 30].
    #[arg(long, env = "ENCLAVE_OPEN_WAIT_SECS")]
    pub open_wait_secs: Option<u64>,
    /// Domain under which `<workspace-id>.<domain>` names a workspace [default: none].
    #[arg(long, env = "ENCLAVE_TENANT_DOMAIN")]
    pub tenant_domain: Option<String>,
    #[arg(skip)]
    pub master_key_file: Option<PathBuf>,
    /// Seconds a model provider may take before 502 provider_error [default: 60].
    #[arg(long, env = "ENCLAVE_PROVIDER_TIMEOUT_SECS")]
    pub provider_timeout_secs: Option<u64>,
    /// Retries of a provider call answering 429 / 5xx [default: 2].
    #[arg(long, env = "ENCLAVE_PROVIDER_RETRIES")]
    pub provider_retries: Option<u32>,
    /// Largest document upload in bytes; larger ones are refused with 413 [default: 52428800].
    #[arg(long, env = "ENCLAVE_MAX_UPLOAD_BYTES")]
    pub max_upload_bytes: Option<u64>,
    /// Most documents in one batch (`POST /documents/batch`); more are refused with 413
    /// [default: 1000].
    #[arg(long, env = "ENCLAVE_MAX_BATCH_DOCUMENTS")]
    pub max_batch_documents: Option<usize>,
    /// Largest batch body in bytes (`POST /documents/batch`); larger ones are refused with 413
    /// [default: 33554432].
    #[arg(long, env = "ENCLAVE_MAX_BATCH_BYTES")]
    pub max_batch_bytes: Option<u64>,
    /// Threads that run ingestion and embedding jobs for the whole server; 0 queues jobs
    /// without running them (maintenance) [default: 1].
    #[arg(long, env = "ENCLAVE_INGEST_WORKERS")]
    pub ingest_workers: Option<usize>,
    /// How vector spaces made from now on store their vectors: `int8` (a byte per dimension)
    /// or `f32` (sqlite-vec floats) [default: int8].
    #[arg(long, env = "ENCLAVE_VECTOR_STORAGE", value_enum)]
    pub vector_storage: Option<VectorStorage>,
    /// Seconds a client has to send a request's headers [default: 10].
    #[arg(long, env = "ENCLAVE_HEADER_READ_TIMEOUT_SECS")]
    pub header_read_timeout_secs: Option<u64>,
    /// Seconds an idle kept-alive connection stays open [default: 120].
    #[arg(long, env = "ENCLAVE_KEEP_ALIVE_IDLE_SECS")]
    pub keep_alive_idle_secs: Option<u64>,
    /// Connections served at once; more wait in the listen backlog [default: 1024].
    #[arg(long, env = "ENCLAVE_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Seconds `/readyz` answers 503 before the listener closes at shutdown [default: 2].
    #[arg(long, env = "ENCLAVE_SHUTDOWN_DELAY_SECS")]
    pub shutdown_delay_secs: Option<u64>,
    /// Seconds requests in flight get to finish at shutdown [default: 10].
    #[arg(long, env = "ENCLAVE_SHUTDOWN_GRACE_SECS")]
    pub shutdown_grace_secs: Option<u64>,
    /// Seconds a request body may make no progress before 408 request_timeout [default: 30].
    #[arg(long, env = "ENCLAVE_BODY_READ_TIMEOUT_SECS")]
    pub body_read_timeout_secs: Option<u64>,
    /// Slowest average rate a request body may arrive at, bytes per second; 0: unbounded
    /// [default: 500].
    #[arg(long, env = "ENCLAVE_BODY_MIN_BYTES_PER_SEC")]
    pub body_min_bytes_per_sec: Option<u64>,
    /// Seconds a response may wait for a client that does not read it before the connection is
    /// closed [default: 60].
    #[arg(long, env = "ENCLAVE_RESPONSE_WRITE_TIMEOUT_SECS")]
    pub response_write_timeout_secs: Option<u64>,
    /// Days a deleted org or workspace is kept, restorable by the operator, before it is
    /// purged [default: 7].
    #[arg(long, env = "ENCLAVE_DELETION_GRACE_DAYS")]
    pub deletion_grace_days: Option<u64>,
    /// Origins (comma-separated, e.g. `https://app.example.com`) whose browser apps may call
    /// the API; `*`: any origin [default: none, no CORS headers].
    #[arg(long, env = "ENCLAVE_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,
    /// PEM certificate chain: serve HTTPS (with --tls-key) [default: plain HTTP].
    #[arg(long, env = "ENCLAVE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of --tls-cert.
    #[arg(long, env = "ENCLAVE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

impl ConfigArgs {
    /// The configuration of a command: `serve`'s own flags, or (for every other command) the
    /// server options from the environment only; the global options in both cases.
    pub fn for_command(global: &GlobalArgs, serve: Option<&ConfigArgs>) -> anyhow::Result<Self> {
        use clap::FromArgMatches;
        let mut args = match serve {
            Some(a) => a.clone(),
            None => {
                let cmd = <ConfigArgs as Args>::augment_args(clap::Command::new("enclave"));
                let m = cmd
                    .try_get_matches_from(["enclave"])
                    .map_err(|e| anyhow::anyhow!("invalid ENCLAVE_* environment variable: {e}"))?;
                ConfigArgs::from_arg_matches(&m)?
            }
        };
        args.config.clone_from(&global.config);
        args.data_dir.clone_from(&global.data_dir);
        args.master_key_file.clone_from(&global.master_key_file);
        Ok(args)
    }
}

/// The keys a TOML configuration file may hold.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    listen: Option<String>,
    max_open_workspaces: Option<usize>,
    log_format: Option<LogFormat>,
    writer_idle_secs: Option<u64>,
    backup_to: Option<String>,
    backup_interval: Option<u64>,
    backup_keep: Option<usize>,
    object_store: Option<String>,
    offload_after: Option<String>,
    local_cache_bytes: Option<u64>,
    open_wait_secs: Option<u64>,
    tenant_domain: Option<String>,
    master_key_file: Option<PathBuf>,
    provider_timeout_secs: Option<u64>,
    provider_retries: Option<u32>,
    max_upload_bytes: Option<u64>,
    max_batch_documents: Option<usize>,
    max_batch_bytes: Option<u64>,
    ingest_workers: Option<usize>,
    vector_storage: Option<VectorStorage>,
    header_read_timeout_secs: Option<u64>,
    keep_alive_idle_secs: Option<u64>,
    max_connections: Option<usize>,
    shutdown_delay_secs: Option<u64>,
    shutdown_grace_secs: Option<u64>,
    body_read_timeout_secs: Option<u64>,
    body_min_bytes_per_sec: Option<u64>,
    response_write_timeout_secs: Option<u64>,
    deletion_grace_days: Option<u64>,
    cors_origins: Option<Vec<String>>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub max_open_workspaces: usize,
    pub log_format: LogFormat,
    pub writer_idle_secs: u64,
    /// Scheduled backups: where to (none: no scheduled backups), how often, how many kept.
    pub backup_to: Option<String>,
    pub backup_interval_secs: u64,
    pub backup_keep: usize,
    /// Tiered storage: the object store (none: off), how long a workspace stays closed before
    /// it is offloaded, and the bound on local workspace folders.
    pub object_store: Option<String>,
    pub offload_after_secs: u64,
    pub local_cache_bytes: u64,
    pub open_wait_secs: u64,
    /// With `example.com`, a request to `<workspace-id>.example.com` names that workspace, which
    /// must agree with the credential (like `X-Tenant-ID`).
    pub tenant_domain: Option<String>,
    pub max_upload_bytes: u64,
    /// Most documents, and largest body, of one `POST /documents/batch`.
    pub max_batch_documents: usize,
    pub max_batch_bytes: u64,
    pub ingest_workers: usize,
    /// The store of vector spaces made from now on.
    pub vector_storage: VectorStorage,
    /// `ENCLAVE_ADMIN_TOKEN`: read from the environment only, never from a flag or file.
    pub admin_token: Option<String>,
    /// `ENCLAVE_MASTER_KEY`: read from the environment only.
    pub master_key: Option<String>,
    pub master_key_file: Option<PathBuf>,
    pub provider_timeout_secs: u64,
    pub provider_retries: u32,
    pub header_read_timeout_secs: u64,
    pub keep_alive_idle_secs: u64,
    pub max_connections: usize,
    pub shutdown_delay_secs: u64,
    pub shutdown_grace_secs: u64,
    pub body_read_timeout_secs: u64,
    pub body_min_bytes_per_sec: u64,
    pub response_write_timeout_secs: u64,
    /// Days a deleted org or workspace is kept before it is purged.
    pub deletion_grace_days: u64,
    /// Origins whose browser apps may call the API (`*`: any); empty: no CORS headers.
    pub cors_origins: Vec<String>,
    /// PEM certificate chain and private key: the server speaks HTTPS only.
    pub tls: Option<TlsFiles>,
}

/// The certificate chain and private key of `--tls-cert` / `--tls-key`.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Config {
    /// Defaults for everything, with the data directory given (tests and benchmarks).
    pub fn for_data_dir(data_dir: &Path) -> Config {
        Config {
            data_dir: data_dir.to_path_buf(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            max_open_workspaces: DEFAULT_MAX_OPEN_WORKSPACES,
            log_format: LogFormat::Text,
            writer_idle_secs: DEFAULT_WRITER_IDLE_SECS,
            backup_to: None,
            backup_interval_secs: DEFAULT_BACKUP_INTERVAL_SECS,
            backup_keep: DEFAULT_BACKUP_KEEP,
            object_store: None,
            offload_after_secs: DEFAULT_OFFLOAD_AFTER_SECS,
            local_cache_bytes: DEFAULT_LOCAL_CACHE_BYTES,
            open_wait_secs: DEFAULT_OPEN_WAIT_SECS,
            tenant_domain: None,
            max_upload_bytes: DEFAULT_MAX_UPLOAD_BYTES,
            max_batch_documents: DEFAULT_MAX_BATCH_DOCUMENTS,
            max_batch_bytes: DEFAULT_MAX_BATCH_BYTES,
            ingest_workers: DEFAULT_INGEST_WORKERS,
            vector_storage: VectorStorage::default(),
            admin_token: None,
            master_key: None,
            master_key_file: None,
            provider_timeout_secs: DEFAULT_PROVIDER_TIMEOUT_SECS,
            provider_retries: DEFAULT_PROVIDER_RETRIES,
            header_read_timeout_secs: DEFAULT_HEADER_READ_TIMEOUT_SECS,
            keep_alive_idle_secs: DEFAULT_KEEP_ALIVE_IDLE_SECS,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            shutdown_delay_secs: DEFAULT_SHUTDOWN_DELAY_SECS,
            shutdown_grace_secs: DEFAULT_SHUTDOWN_GRACE_SECS,
            body_read_timeout_secs: DEFAULT_BODY_READ_TIMEOUT_SECS,
            body_min_bytes_per_sec: DEFAULT_BODY_MIN_BYTES_PER_SEC,
            response_write_timeout_secs: DEFAULT_RESPONSE_WRITE_TIMEOUT_SECS,
            deletion_grace_days: DEFAULT_DELETION_GRACE_DAYS,
            cors_origins: Vec::new(),
            tls: None,
        }
    }

    pub fn resolve(args: &ConfigArgs) -> anyhow::Result<Config> {
        let file = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    anyhow::anyhow!("cannot read config file {}: {e}", path.display())
                })?;
                toml::from_str::<FileConfig>(&text)
                    .map_err(|e| anyhow::anyhow!("invalid config file {}: {e}", path.display()))?
            }
            None => FileConfig::default(),
        };
        let listen_text = args
            .listen
            .clone()
            .or(file.listen)
            .unwrap_or_else(|| DEFAULT_LISTEN.to_string());
        let listen: SocketAddr = listen_text.parse().map_err(|_| {
            anyhow::anyhow!("invalid listen address {listen_text:?} (want IP:PORT)")
        })?;
        let max_open_workspaces = args
            .max_open_workspaces
            .or(file.max_open_workspaces)
            .unwrap_or(DEFAULT_MAX_OPEN_WORKSPACES);
        if max_open_workspaces == 0 {
            anyhow::bail!("max-open-workspaces must be at least 1");
        }
        let max_connections = args
            .max_connections
            .or(file.max_connections)
            .unwrap_or(DEFAULT_MAX_CONNECTIONS);
        if max_connections == 0 {
            anyhow::bail!("max-connections must be at least 1");
        }
        let cors_origins = if args.cors_origins.is_empty() {
            file.cors_origins.unwrap_or_default()
        } else {
            args.cors_origins.clone()
        };
        let cors_origins: Vec<String> = cors_origins
            .iter()
            .map(|o| o.trim().trim_end_matches('/').to_string())
            .filter(|o| !o.is_empty())
            .collect();
        for o in &cors_origins {
            let ok = o == "*"
                || ((o.starts_with("http://") || o.starts_with("https://"))
                    && !o.contains(char::is_whitespace)
                    && o.split("://")
                        .nth(1)
                        .is_some_and(|h| !h.is_empty() && !h.contains('/')));
            if !ok {
                anyhow::bail!(
                    "invalid CORS origin {o:?}: give scheme://host[:port] (e.g. https://app.example.com) or *"
                );
            }
        }
        let tls = match (
            args.tls_cert.clone().or(file.tls_cert),
            args.tls_key.clone().or(file.tls_key),
        ) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            _ => anyhow::bail!("give both tls-cert and tls-key (or neither)"),
        };
        let offload_after_secs = match args.offload_after.clone().or(file.offload_after) {
            Some(d) => parse_duration(&d).ok_or_else(|| {
                anyhow::anyhow!(
                    "invalid offload-after {d:?}: give a duration such as 24h, 30m, 90s or 0s"
                )
            })?,
            None => DEFAULT_OFFLOAD_AFTER_SECS,
        };
        let object_store = args
            .object_store
            .clone()
            .or(file.object_store)
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty());
        if let Some(o) = &object_store {
            if !(o.starts_with("s3://") || o.starts_with("file:///")) {
                anyhow::bail!(
                    "invalid object-store {o:?}: give s3://bucket/prefix or file:///absolute/folder"
                );
            }
        }
        let admin_token = std::env::var("ENCLAVE_ADMIN_TOKEN")
            .ok()
            .filter(|t| !t.is_empty());
        if admin_token.as_ref().is_some_and(|t| t.len() < 16) {
            anyhow::bail!("ENCLAVE_ADMIN_TOKEN must be at least 16 characters");
        }
        Ok(Config {
            data_dir: args
                .data_dir
                .clone()
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            listen,
            max_open_workspaces,
            log_format: args
                .log_format
                .or(file.log_format)
                .unwrap_or(LogFormat::Text),
            writer_idle_secs: args
                .writer_idle_secs
                .or(file.writer_idle_secs)
                .unwrap_or(DEFAULT_WRITER_IDLE_SECS),
            backup_to: args.backup_to.clone().or(file.backup_to),
            backup_interval_secs: args
                .backup_interval
                .or(file.backup_interval)
                .unwrap_or(DEFAULT_BACKUP_INTERVAL_SECS)
                .max(1),
            backup_keep: args
                .backup_keep
                .or(file.backup_keep)
                .unwrap_or(DEFAULT_BACKUP_KEEP)
                .max(1),
            object_store,
            offload_after_secs,
            local_cache_bytes: args
                .local_cache_bytes
                .or(file.local_cache_bytes)
                .unwrap_or(DEFAULT_LOCAL_CACHE_BYTES),
            open_wait_secs: args
                .open_wait_secs
                .or(file.open_wait_secs)
                .unwrap_or(DEFAULT_OPEN_WAIT_SECS),
            tenant_domain: args
                .tenant_domain
                .clone()
                .or(file.tenant_domain)
                .map(|d| d.trim().trim_matches('.').to_ascii_lowercase())
                .filter(|d| !d.is_empty()),
            max_upload_bytes: args
                .max_upload_bytes
                .or(file.max_upload_bytes)
                .unwrap_or(DEFAULT_MAX_UPLOAD_BYTES)
                .max(1),
            max_batch_documents: args
                .max_batch_documents
                .or(file.max_batch_documents)
                .unwrap_or(DEFAULT_MAX_BATCH_DOCUMENTS)
                .max(1),
            max_batch_bytes: args
                .max_batch_bytes
                .or(file.max_batch_bytes)
                .unwrap_or(DEFAULT_MAX_BATCH_BYTES)
                .max(1),
            ingest_workers: args
                .ingest_workers
                .or(file.ingest_workers)
                .unwrap_or(DEFAULT_INGEST_WORKERS),
            vector_storage: args
                .vector_storage
                .or(file.vector_storage)
                .unwrap_or_default(),
            admin_token,
            master_key: std::env::var("ENCLAVE_MASTER_KEY")
                .ok()
                .filter(|t| !t.is_empty()),
            master_key_file: args.master_key_file.clone().or(file.master_key_file),
            provider_timeout_secs: args
                .provider_timeout_secs
                .or(file.provider_timeout_secs)
                .unwrap_or(DEFAULT_PROVIDER_TIMEOUT_SECS)
                .max(1),
            provider_retries: args
                .provider_retries
                .or(file.provider_retries)
                .unwrap_or(DEFAULT_PROVIDER_RETRIES)
                .min(10),
            header_read_timeout_secs: args
                .header_read_timeout_secs
                .or(file.header_read_timeout_secs)
                .unwrap_or(DEFAULT_HEADER_READ_TIMEOUT_SECS)
                .max(1),
            keep_alive_idle_secs: args
                .keep_alive_idle_secs
                .or(file.keep_alive_idle_secs)
                .unwrap_or(DEFAULT_KEEP_ALIVE_IDLE_SECS)
                .max(1),
            max_connections,
            shutdown_delay_secs: args
                .shutdown_delay_secs
                .or(file.shutdown_delay_secs)
                .unwrap_or(DEFAULT_SHUTDOWN_DELAY_SECS),
            shutdown_grace_secs: args
                .shutdown_grace_secs
                .or(file.shutdown_grace_secs)
                .unwrap_or(DEFAULT_SHUTDOWN_GRACE_SECS),
            body_read_timeout_secs: args
                .body_read_timeout_secs
                .or(file.body_read_timeout_secs)
                .unwrap_or(DEFAULT_BODY_READ_TIMEOUT_SECS)
                .max(1),
            body_min_bytes_per_sec: args
                .body_min_bytes_per_sec
                .or(file.body_min_bytes_per_sec)
                .unwrap_or(DEFAULT_BODY_MIN_BYTES_PER_SEC),
            response_write_timeout_secs: args
                .response_write_timeout_secs
                .or(file.response_write_timeout_secs)
                .unwrap_or(DEFAULT_RESPONSE_WRITE_TIMEOUT_SECS)
                .max(1),
            deletion_grace_days: args
                .deletion_grace_days
                .or(file.deletion_grace_days)
                .unwrap_or(DEFAULT_DELETION_GRACE_DAYS)
                .min(3650),
            cors_origins,
            tls,
        })
    }
}

/// A duration in seconds from `90`, `90s`, `30m`, `24h` or `7d` (whole numbers).
pub fn parse_duration(text: &str) -> Option<u64> {
    let t = text.trim();
    let (num, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let n: u64 = num.parse().ok()?;
    let mult = match unit.trim() {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    n.checked_mul(mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_beat_file_which_beats_defaults() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let file = tmp.path().join("enclave.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:9000\"\nmax_open_workspaces = 7\n",
        )
        .expect("write");
        let args = ConfigArgs {
            config: Some(file.clone()),
            max_open_workspaces: Some(9),
            ..Default::default()
        };
        let c = Config::resolve(&args).expect("resolve");
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.max_open_workspaces, 9);
        assert_eq!(c.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
    }

    #[test]
    fn unknown_file_keys_and_bad_values_are_errors() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let file = tmp.path().join("bad.toml");
        std::fs::write(&file, "lisen = \"x\"\n").expect("write");
        let args = ConfigArgs {
            config: Some(file),
            ..Default::default()
        };
        assert!(Config::resolve(&args).is_err());
        let args = ConfigArgs {
            listen: Some("nowhere".into()),
            ..Default::default()
        };
        assert!(Config::resolve(&args).is_err());
        let args = ConfigArgs {
            max_open_workspaces: Some(0),
            ..Default::default()
        };
        assert!(Config::resolve(&args).is_err());
        let args = ConfigArgs {
            max_connections: Some(0),
            ..Default::default()
        };
        assert!(Config::resolve(&args).is_err());
    }

    #[test]
    fn connection_and_shutdown_bounds_have_defaults_and_file_keys() {
        let c = Config::resolve(&ConfigArgs::default()).expect("defaults");
        assert_eq!(
            (
                c.header_read_timeout_secs,
                c.keep_alive_idle_secs,
                c.max_connections,
                c.shutdown_delay_secs,
                c.shutdown_grace_secs
            ),
            (
                DEFAULT_HEADER_READ_TIMEOUT_SECS,
                DEFAULT_KEEP_ALIVE_IDLE_SECS,
                DEFAULT_MAX_CONNECTIONS,
                DEFAULT_SHUTDOWN_DELAY_SECS,
                DEFAULT_SHUTDOWN_GRACE_SECS
            )
        );
        let tmp = tempfile::tempdir().expect("tempdir");
        let file = tmp.path().join("enclave.toml");
        std::fs::write(
            &file,
            "header_read_timeout_secs = 0\nkeep_alive_idle_secs = 5\nmax_connections = 3\n\
             shutdown_delay_secs = 0\nshutdown_grace_secs = 1\n",
        )
        .expect("write");
        let c = Config::resolve(&ConfigArgs {
            config: Some(file),
            ..Default::default()
        })
        .expect("resolve");
        // A zero header bound would cut every connection: at least one second.
        assert_eq!(c.header_read_timeout_secs, 1);
        assert_eq!(
            (
                c.keep_alive_idle_secs,
                c.max_connections,
                c.shutdown_delay_secs,
                c.shutdown_grace_secs
            ),
            (5, 3, 0, 1)
        );
    }

    #[test]
    fn body_bounds_have_defaults_and_file_keys() {
        let c = Config::resolve(&ConfigArgs::default()).expect("defaults");
        assert_eq!(
            (
                c.body_read_timeout_secs,
                c.body_min_bytes_per_sec,
                c.response_write_timeout_secs
            ),
            (
                DEFAULT_BODY_READ_TIMEOUT_SECS,
                DEFAULT_BODY_MIN_BYTES_PER_SEC,
                DEFAULT_RESPONSE_WRITE_TIMEOUT_SECS
            )
        );
        let tmp = tempfile::tempdir().expect("tempdir");
        let file = tmp.path().join("enclave.toml");
        std::fs::write(
            &file,
            "body_read_timeout_secs = 0\nbody_min_bytes_per_sec = 0\n\
             response_write_timeout_secs = 0\n",
        )
        .expect("write");
        let c = Config::resolve(&ConfigArgs {
            config: Some(file.clone()),
            ..Default::default()
        })
        .expect("resolve");
        // A zero stall bound would cut every body: at least one second. A zero rate: no bound.
        // A zero write bound would cut every response: at least one second too.
        assert_eq!(
            (
                c.body_read_timeout_secs,
                c.body_min_bytes_per_sec,
                c.response_write_timeout_secs
            ),
            (1, 0, 1)
        );
        let c = Config::resolve(&ConfigArgs {
            config: Some(file),
            body_read_timeout_secs: Some(7),
            ..Default::default()
        })
        .expect("resolve");
        assert_eq!(c.body_read_timeout_secs, 7);
    }
}
