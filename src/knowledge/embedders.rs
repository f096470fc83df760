//! Per-workspace embedder selection: the built-in transformer (`minilm`, default), the built-in
//! static model (`static`, fast), an OpenAI-compatible `/embeddings` endpoint (`openai`), or
//! vectors supplied by the client (`user-provided`). Model instances are shared by every
//! workspace of the server.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::embed::Embedder;
use crate::error::{Error, Result};

/// A workspace's embedder, as stored in its `vector_spaces` row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum EmbedderConfig {
    /// The built-in transformer sentence encoder (384 dimensions).
    Minilm,
    /// The built-in static Model2Vec model distilled from it (fast mode).
    Static,
    /// An OpenAI-compatible `/embeddings` endpoint with the org's own key.
    Openai {
        base_url: String,
        model: String,
        dimension: usize,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        api_key: Option<String>,
    },
    /// The client sends each document's `embedding` and each search's query `vector`.
    UserProvided { dimension: usize },
}

impl EmbedderConfig {
    pub fn validate(&self) -> Result<()> {
        match self {
            EmbedderConfig::Openai {
                base_url,
                model,
                dimension,
                ..
            } => {
                if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
                    return Err(Error::invalid("embedder base_url must be an http(s) URL"));
                }
                if model.trim().is_empty() {
                    return Err(Error::invalid("embedder model must not be empty"));
                }
                check_dim(*dimension)
            }
            EmbedderConfig::UserProvided { dimension } => check_dim(*dimension),
            _ => Ok(()),
        }
    }

    /// The configuration as shown to clients: secrets are never returned.
    pub fn redacted(&self) -> EmbedderConfig {
        match self {
            EmbedderConfig::Openai {
                base_url,
                model,
                dimension,
                api_key,
            } => EmbedderConfig::Openai {
                base_url: base_url.clone(),
                model: model.clone(),
                dimension: *dimension,
                api_key: api_key.as_ref().map(|_| "***".to_string()),
            },
            other => other.clone(),
        }
    }

    pub fn is_user_provided(&self) -> bool {
        matches!(self, EmbedderConfig::UserProvided { .. })
    }

    /// How many chunks one scheduling quantum embeds with this embedder.
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

/// Constructs a built-in model. The models come from `crate::embed`.
pub type BuiltinFactory = fn(&EmbedderConfig) -> Result<Arc<dyn Embedder>>;

/// The embedder instances of the server, shared by all workspaces.
pub struct Embedders {
    minilm: OnceLock<Arc<dyn Embedder>>,
    static_model: OnceLock<Arc<dyn Embedder>>,
    remote: Mutex<HashMap<String, Arc<dyn Embedder>>>,
    builtin: BuiltinFactory,
}

impl Default for Embedders {
    fn default() -> Self {
        Self::with_builtin(builtin_models)
    }
}

impl Embedders {
    pub fn with_builtin(builtin: BuiltinFactory) -> Self {
        Embedders {
            minilm: OnceLock::new(),
            static_model: OnceLock::new(),
            remote: Mutex::new(HashMap::new()),
            builtin,
        }
    }

    /// The embedder of a configuration; `None` for user-provided vectors.
    pub fn get(&self, cfg: &EmbedderConfig) -> Result<Option<Arc<dyn Embedder>>> {
        let cell = match cfg {
            EmbedderConfig::UserProvided { .. } => return Ok(None),
            EmbedderConfig::Minilm => &self.minilm,
            EmbedderConfig::Static => &self.static_model,
            EmbedderConfig::Openai { .. } => {
                let key = serde_json::to_string(cfg).map_err(|e| Error::internal(e.to_string()))?;
                let mut cache = self.remote.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(e) = cache.get(&key) {
                    return Ok(Some(e.clone()));
                }
                let e: Arc<dyn Embedder> = Arc::new(OpenAiEmbedder::new(cfg)?);
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
        let e = (self.builtin)(cfg)?;
        Ok(Some(cell.get_or_init(|| e).clone()))
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
    pub fn new(cfg: &EmbedderConfig) -> Result<Self> {
        let EmbedderConfig::Openai {
            base_url,
            model,
            dimension,
            api_key,
        } = cfg
        else {
            return Err(Error::internal("not an openai embedder"));
        };
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(60))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| Error::Provider(format!("cannot build HTTP client: {e}")))?;
        Ok(OpenAiEmbedder {
            id: format!("openai:{model}"),
            url: format!("{}/embeddings", base_url.trim_end_matches('/')),
            model: model.clone(),
            dim: *dimension,
            api_key: api_key.clone(),
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
    fn configs_round_trip_and_hide_secrets() {
        let c: EmbedderConfig = serde_json::from_str(
            r#"{"kind":"openai","base_url":"https://x/v1","model":"m","dimension":8,"api_key":"sk"}"#,
        )
        .expect("parse");
        c.validate().expect("valid");
        let shown = serde_json::to_string(&c.redacted()).expect("ser");
        assert!(!shown.contains("sk\""), "{shown}");
        let u: EmbedderConfig =
            serde_json::from_str(r#"{"kind":"user-provided","dimension":3}"#).expect("up");
        assert!(u.is_user_provided());
        assert!(serde_json::from_str::<EmbedderConfig>(r#"{"kind":"nope"}"#).is_err());
        assert!(EmbedderConfig::UserProvided { dimension: 0 }
            .validate()
            .is_err());
    }
}
