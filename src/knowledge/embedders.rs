//! Per-workspace embedder selection: the built-in transformer (`minilm`, default), the built-in
//! static model (`static`, fast), an OpenAI-compatible `/embeddings` endpoint (`openai`), or
//! vectors supplied by the client (`user-provided`). Model instances are shared by every
//! workspace of the server.
//!
//! An `openai` embedder names one of the org's providers (`/v1/orgs/{org}/providers`): its base
//! URL and sealed key live in the control plane, never in the workspace database. The service
//! resolves the provider of the workspace's own org for each search and each job quantum
//! ([`Embedders::bind`]); the key is opened only then.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::embed::Embedder;
use crate::error::{Error, Result};

/// The provider an `openai` embedder uses when the request names none.
pub const DEFAULT_PROVIDER: &str = "openai-compatible";

fn default_provider() -> String {
    DEFAULT_PROVIDER.to_string()
}

/// A workspace's embedder, as stored in its `vector_spaces` row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum EmbedderConfig {
    /// The built-in transformer sentence encoder (384 dimensions).
    Minilm,
    /// The built-in static Model2Vec model distilled from it (fast mode).
    Static,
    /// An OpenAI-compatible `/embeddings` endpoint: the org's provider `provider` (its base URL
    /// and key), with this embedding model.
    Openai {
        #[serde(default = "default_provider")]
        provider: String,
        model: String,
        dimension: usize,
        /// Only in configurations stored before org providers: read, never written (the
        /// service rewrites such rows without it), refused in requests.
        #[serde(default, skip_serializing)]
        base_url: Option<String>,
        /// As `base_url`; the value itself is dropped while parsing.
        #[serde(default, skip_serializing)]
        api_key: Option<serde::de::IgnoredAny>,
    },
    /// The client sends each document's `embedding` and each search's query `vector`.
    UserProvided { dimension: usize },
}

impl EmbedderConfig {
    /// Checks a configuration a client sent.
    pub fn validate(&self) -> Result<()> {
        match self {
            EmbedderConfig::Openai {
                provider,
                model,
                dimension,
                base_url,
                api_key,
            } => {
                if base_url.is_some() || api_key.is_some() {
                    return Err(Error::invalid(
                        "an openai embedder takes its base_url and api_key from the organization's provider: \
                         set them with PUT /v1/orgs/{org}/providers/openai-compatible, then send \
                         {\"kind\": \"openai\", \"provider\": \"openai-compatible\", \"model\": ..., \"dimension\": ...}",
                    ));
                }
                if provider != DEFAULT_PROVIDER {
                    return Err(Error::invalid(format!(
                        "unknown provider {provider:?}: an openai embedder uses the organization's \"openai-compatible\" provider"
                    )));
                }
                let m = model.trim();
                if m.is_empty() || m.len() > 200 || m.chars().any(char::is_control) {
                    return Err(Error::invalid("embedder model must be 1 to 200 characters"));
                }
                check_dim(*dimension)
            }
            EmbedderConfig::UserProvided { dimension } => check_dim(*dimension),
            _ => Ok(()),
        }
    }

    /// Whether this is a configuration stored before org providers (with its own base URL or
    /// plaintext key).
    pub fn is_legacy(&self) -> bool {
        matches!(
            self,
            EmbedderConfig::Openai { base_url, api_key, .. } if base_url.is_some() || api_key.is_some()
        )
    }

    /// The configuration without the fields of a legacy one: what is stored and shown.
    pub fn redacted(&self) -> EmbedderConfig {
        match self {
            EmbedderConfig::Openai {
                provider,
                model,
                dimension,
                ..
            } => EmbedderConfig::Openai {
                provider: provider.clone(),
                model: model.clone(),
                dimension: *dimension,
                base_url: None,
                api_key: None,
            },
            other => other.clone(),
        }
    }

    /// The org provider this configuration needs, if any.
    pub fn provider(&self) -> Option<&str> {
        match self {
            EmbedderConfig::Openai { provider, .. } => Some(provider),
            _ => None,
        }
    }

    pub fn is_user_provided(&self) -> bool {
        matches!(self, EmbedderConfig::UserProvided { .. })
    }

    /// Most chunks one scheduling quantum embeds with this embedder (fewer when the
    /// quantum's time budget runs out: [`Embedders::batch_within`]).
    pub fn batch_size(&self) -> usize {
        match self {
            EmbedderConfig::Minilm => 32,
            EmbedderConfig::Static => 1024,
            EmbedderConfig::Openai { .. } => 128,
            EmbedderConfig::UserProvided { .. } => 1024,
        }
    }
}

fn check_dim(d: usize) -> Result<()> {
    if d == 0 || d > 8192 {
        return Err(Error::invalid(
            "embedder dimension must be between 1 and 8192",
        ));
    }
    Ok(())
}

/// An org provider's endpoint with its key opened, for one search or job quantum.
#[derive(Clone)]
pub struct Endpoint {
    pub org: Uuid,
    pub base_url: String,
    /// Empty when the provider has no key (a local model server).
    pub api_key: String,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("org", &self.org)
            .field("base_url", &self.base_url)
            .field("api_key", &"***")
            .finish()
    }
}

/// A provider as resolved for the workspace's org: its endpoint, or why it cannot be used
/// (reported as `provider_error` when an embedding is needed, so full-text search still works).
pub type Resolved = std::result::Result<Endpoint, String>;

/// Constructs a built-in model. The models come from `crate::embed`.
pub type BuiltinFactory = fn(&EmbedderConfig) -> Result<Arc<dyn Embedder>>;

struct Shared {
    minilm: OnceLock<Arc<dyn Embedder>>,
    static_model: OnceLock<Arc<dyn Embedder>>,
    /// Remote clients by a digest of (org, endpoint, key, model, dimension).
    remote: Mutex<HashMap<[u8; 32], Arc<dyn Embedder>>>,
    /// Seconds per text of each embedder instance (by address), learnt from its calls: how
    /// many texts fit in what is left of a quantum's budget.
    pace: Mutex<HashMap<usize, f64>>,
    builtin: BuiltinFactory,
}

/// The embedder instances of the server, shared by all workspaces. [`Embedders::bind`] makes a
/// view that also knows the org providers of one workspace's org.
#[derive(Clone)]
pub struct Embedders {
    shared: Arc<Shared>,
    providers: Arc<HashMap<String, Resolved>>,
}

impl Default for Embedders {
    fn default() -> Self {
        Self::with_builtin(builtin_models)
    }
}

impl Embedders {
    pub fn with_builtin(builtin: BuiltinFactory) -> Self {
        Embedders {
            shared: Arc::new(Shared {
                minilm: OnceLock::new(),
                static_model: OnceLock::new(),
                remote: Mutex::new(HashMap::new()),
                pace: Mutex::new(HashMap::new()),
                builtin,
            }),
            providers: Arc::new(HashMap::new()),
        }
    }

    /// The same models, with the resolved providers of one org (by provider name).
    pub fn bind(&self, providers: HashMap<String, Resolved>) -> Embedders {
        Embedders {
            shared: self.shared.clone(),
            providers: Arc::new(providers),
        }
    }

    /// The embedder of a configuration; `None` for user-provided vectors.
    pub fn get(&self, cfg: &EmbedderConfig) -> Result<Option<Arc<dyn Embedder>>> {
        let cell = match cfg {
            EmbedderConfig::UserProvided { .. } => return Ok(None),
            EmbedderConfig::Minilm => &self.shared.minilm,
            EmbedderConfig::Static => &self.shared.static_model,
            EmbedderConfig::Openai {
                provider,
                model,
                dimension,
                ..
            } => {
                let ep = match self.providers.get(provider) {
                    Some(Ok(ep)) => ep,
                    Some(Err(why)) => return Err(Error::Provider(why.clone())),
                    None => {
                        return Err(Error::Provider(format!(
                            "the organization's provider {provider:?} is not available for this workspace"
                        )))
                    }
                };
                let key: [u8; 32] = Sha256::new()
                    .chain_update(ep.org.as_bytes())
                    .chain_update(ep.base_url.as_bytes())
                    .chain_update([0])
                    .chain_update(ep.api_key.as_bytes())
                    .chain_update([0])
                    .chain_update(model.as_bytes())
                    .chain_update(dimension.to_le_bytes())
                    .finalize()
                    .into();
                let mut cache = self.shared.remote.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(e) = cache.get(&key) {
                    return Ok(Some(e.clone()));
                }
                let e: Arc<dyn Embedder> = Arc::new(OpenAiEmbedder::new(ep, model, *dimension)?);
                if cache.len() > 256 {
                    cache.clear();
                }
                cache.insert(key, e.clone());
                return Ok(Some(e));
            }
        };
        if let Some(e) = cell.get() {
            return Ok(Some(e.clone()));
        }
        let e = (self.shared.builtin)(cfg)?;
        Ok(Some(cell.get_or_init(|| e).clone()))
    }

    /// How many of `want` texts to hand `e` in one call so that the call likely ends within
    /// `left`, from the pace of its earlier calls: one text while its pace is unknown, never
    /// fewer than one (a quantum always makes progress), never more than `want`.
    pub fn batch_within(&self, e: &Arc<dyn Embedder>, want: usize, left: Duration) -> usize {
        let pace = self
            .shared
            .pace
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&pace_key(e))
            .copied();
        let fit = match pace {
            None => 1.0,
            Some(p) if p > 0.0 => (left.as_secs_f64() / p).floor(),
            Some(_) => f64::INFINITY,
        };
        // `as` saturates: an unbounded budget fits everything.
        (fit as usize).clamp(1, want.max(1))
    }

    /// Records that `e` embedded `items` texts in `took`.
    pub fn record_pace(&self, e: &Arc<dyn Embedder>, items: usize, took: Duration) {
        if items == 0 {
            return;
        }
        let measured = took.as_secs_f64() / items as f64;
        let mut pace = self.shared.pace.lock().unwrap_or_else(|p| p.into_inner());
        if pace.len() > 1024 {
            pace.clear();
        }
        let p = pace.entry(pace_key(e)).or_insert(measured);
        *p = 0.5 * *p + 0.5 * measured;
    }

    /// The dimension of a configuration's vectors.
    pub fn dim(&self, cfg: &EmbedderConfig) -> Result<usize> {
        match cfg {
            EmbedderConfig::Openai { dimension, .. }
            | EmbedderConfig::UserProvided { dimension } => Ok(*dimension),
            _ => Ok(self
                .get(cfg)?
                .map(|e| e.dim())
                .ok_or_else(|| Error::internal("built-in embedder missing"))?),
        }
    }
}

/// An embedder instance's key in the pace table: its address (instances are shared and
/// cached, one per model or remote endpoint).
fn pace_key(e: &Arc<dyn Embedder>) -> usize {
    Arc::as_ptr(e) as *const () as usize
}

/// The built-in models.
pub fn builtin_models(cfg: &EmbedderConfig) -> Result<Arc<dyn Embedder>> {
    match cfg {
        EmbedderConfig::Minilm => Ok(Arc::new(crate::embed::MiniLm::new())),
        EmbedderConfig::Static => Ok(Arc::new(crate::embed::StaticModel::new())),
        _ => Err(Error::internal("not a built-in embedder")),
    }
}

/// An OpenAI-compatible `/embeddings` client (blocking; called from worker threads).
pub struct OpenAiEmbedder {
    id: String,
    url: String,
    model: String,
    dim: usize,
    api_key: Option<String>,
    client: reqwest::blocking::Client,
}

impl OpenAiEmbedder {
    pub fn new(ep: &Endpoint, model: &str, dimension: usize) -> Result<Self> {
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(60))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| Error::Provider(format!("cannot build HTTP client: {e}")))?;
        Ok(OpenAiEmbedder {
            id: format!("openai:{model}"),
            url: format!("{}/embeddings", ep.base_url.trim_end_matches('/')),
            model: model.to_string(),
            dim: dimension,
            api_key: Some(ep.api_key.clone()).filter(|k| !k.is_empty()),
            client,
        })
    }
}

#[derive(Deserialize)]
struct EmbeddingsResponse {
    data: Vec<EmbeddingItem>,
}

#[derive(Deserialize)]
struct EmbeddingItem {
    embedding: Vec<f32>,
    #[serde(default)]
    index: Option<usize>,
}

impl Embedder for OpenAiEmbedder {
    fn id(&self) -> &str {
        &self.id
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let body = serde_json::json!({"model": self.model, "input": texts});
        let mut req = self.client.post(&self.url).json(&body);
        if let Some(k) = &self.api_key {
            req = req.bearer_auth(k);
        }
        let resp = req
            .send()
            .map_err(|e| Error::Provider(format!("embedding provider unreachable: {e}")))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(Error::Provider(format!(
                "embedding provider answered HTTP {}",
                status.as_u16()
            )));
        }
        let parsed: EmbeddingsResponse = resp
            .json()
            .map_err(|e| Error::Provider(format!("embedding provider sent a bad answer: {e}")))?;
        if parsed.data.len() != texts.len() {
            return Err(Error::Provider(format!(
                "embedding provider returned {} vectors for {} inputs",
                parsed.data.len(),
                texts.len()
            )));
        }
        let mut out = vec![Vec::new(); texts.len()];
        for (i, item) in parsed.data.into_iter().enumerate() {
            let at = item.index.unwrap_or(i);
            if at >= out.len() || item.embedding.len() != self.dim {
                return Err(Error::Provider(format!(
                    "embedding provider returned a vector of {} dimensions, expected {}",
                    item.embedding.len(),
                    self.dim
                )));
            }
            out[at] = normalize(item.embedding);
        }
        Ok(out)
    }
}

/// L2-normalises a vector (an all-zero vector stays zero).
pub fn normalize(mut v: Vec<f32>) -> Vec<f32> {
    let n: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 && n.is_finite() {
        for x in &mut v {
            *x /= n;
        }
    }
    v
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A deterministic embedder for unit tests: hashed bag of lower-cased words.
    pub struct HashEmbedder(pub usize);

    impl Embedder for HashEmbedder {
        fn id(&self) -> &str {
            "test-hash"
        }
        fn dim(&self) -> usize {
            self.0
        }
        fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
            Ok(texts
                .iter()
                .map(|t| {
                    let mut v = vec![0f32; self.0];
                    for w in t
                        .split(|c: char| !c.is_alphanumeric())
                        .filter(|w| !w.is_empty())
                    {
                        let w = w.to_lowercase();
                        let h = w.bytes().fold(1469598103934665603u64, |h, b| {
                            (h ^ b as u64).wrapping_mul(1099511628211)
                        });
                        v[(h % self.0 as u64) as usize] += 1.0;
                    }
                    normalize(v)
                })
                .collect())
        }
    }

    pub fn test_models(cfg: &EmbedderConfig) -> Result<Arc<dyn Embedder>> {
        match cfg {
            EmbedderConfig::Minilm => Ok(Arc::new(HashEmbedder(384))),
            _ => Ok(Arc::new(HashEmbedder(256))),
        }
    }

    #[test]
    fn configs_round_trip_and_hold_no_secrets() {
        let c: EmbedderConfig = serde_json::from_str(
            r#"{"kind":"openai","provider":"openai-compatible","model":"m","dimension":8}"#,
        )
        .expect("parse");
        c.validate().expect("valid");
        assert_eq!(c.provider(), Some(DEFAULT_PROVIDER));
        let d: EmbedderConfig =
            serde_json::from_str(r#"{"kind":"openai","model":"m","dimension":8}"#)
                .expect("default");
        assert_eq!(c, d, "the provider defaults to openai-compatible");
        // A request may not bring its own endpoint or key, nor name another provider.
        for body in [
            r#"{"kind":"openai","model":"m","dimension":8,"api_key":"sk-x"}"#,
            r#"{"kind":"openai","model":"m","dimension":8,"base_url":"https://x/v1"}"#,
            r#"{"kind":"openai","provider":"other-org/openai-compatible","model":"m","dimension":8}"#,
        ] {
            let c: EmbedderConfig = serde_json::from_str(body).expect("parse");
            assert!(c.validate().is_err(), "{body}");
        }
        // A legacy stored configuration reads, and is written back without its secret.
        let legacy: EmbedderConfig = serde_json::from_str(
            r#"{"kind":"openai","base_url":"https://x/v1","model":"m","dimension":8,"api_key":"sk-legacy"}"#,
        )
        .expect("legacy");
        assert!(legacy.is_legacy());
        assert!(!format!("{legacy:?}").contains("sk-legacy"));
        let stored = serde_json::to_string(&legacy).expect("ser");
        assert!(
            !stored.contains("sk-legacy") && !stored.contains("base_url"),
            "{stored}"
        );
        assert_eq!(legacy.redacted(), c_default());
        assert!(!legacy.redacted().is_legacy());
        let u: EmbedderConfig =
            serde_json::from_str(r#"{"kind":"user-provided","dimension":3}"#).expect("up");
        assert!(u.is_user_provided());
        assert!(serde_json::from_str::<EmbedderConfig>(r#"{"kind":"nope"}"#).is_err());
        assert!(EmbedderConfig::UserProvided { dimension: 0 }
            .validate()
            .is_err());
    }

    fn c_default() -> EmbedderConfig {
        EmbedderConfig::Openai {
            provider: DEFAULT_PROVIDER.into(),
            model: "m".into(),
            dimension: 8,
            base_url: None,
            api_key: None,
        }
    }

    #[test]
    fn embedding_batches_are_sized_by_the_time_left() {
        let e = Embedders::with_builtin(test_models);
        let m = e.get(&EmbedderConfig::Minilm).expect("ok").expect("model");
        let s = e.get(&EmbedderConfig::Static).expect("ok").expect("model");
        // Unknown pace: one text, to learn it.
        assert_eq!(e.batch_within(&m, 32, Duration::from_secs(1)), 1);
        e.record_pace(&m, 2, Duration::from_secs(1));
        assert_eq!(e.batch_within(&m, 32, Duration::from_secs(2)), 4);
        // Always progress, never more than wanted, everything when time is unbounded.
        assert_eq!(e.batch_within(&m, 32, Duration::ZERO), 1);
        assert_eq!(e.batch_within(&m, 3, Duration::from_secs(60)), 3);
        assert_eq!(e.batch_within(&m, 32, Duration::MAX), 32);
        // The pace follows the latest calls, per embedder.
        e.record_pace(&m, 1, Duration::from_millis(100));
        assert_eq!(e.batch_within(&m, 32, Duration::from_millis(3100)), 10);
        assert_eq!(e.batch_within(&s, 32, Duration::from_secs(1)), 1);
    }

    #[test]
    fn an_openai_embedder_needs_its_orgs_resolved_provider() {
        let e = Embedders::with_builtin(test_models);
        let cfg = c_default();
        let err = e.get(&cfg).err().expect("unbound");
        assert!(matches!(err, Error::Provider(_)), "{err:?}");
        let bound = e.bind(HashMap::from([(
            DEFAULT_PROVIDER.to_string(),
            Err("no provider set".to_string()),
        )]));
        match bound.get(&cfg) {
            Err(Error::Provider(m)) => assert_eq!(m, "no provider set"),
            other => panic!("{:?}", other.err()),
        }
        let ep = Endpoint {
            org: Uuid::nil(),
            base_url: "http://127.0.0.1:9/v1".into(),
            api_key: "sk-secret".into(),
        };
        assert!(!format!("{ep:?}").contains("sk-secret"));
        let bound = e.bind(HashMap::from([(DEFAULT_PROVIDER.to_string(), Ok(ep))]));
        let a = bound.get(&cfg).expect("ok").expect("remote");
        let b = bound.get(&cfg).expect("ok").expect("remote");
        assert!(Arc::ptr_eq(&a, &b), "clients are cached");
        assert_eq!(a.dim(), 8);
    }
}
