//! In-process text embedding models that ship inside the binary.
//!
//! * [`MiniLm`]: all-MiniLM-L6-v2, a 6-layer BERT sentence encoder (384 dims), run by our own
//!   forward pass ([`kernels`]) with no network and no native library.
//! * [`StaticModel`]: a Model2Vec static model distilled from the same encoder (256 dims): a
//!   lookup table averaged over the text's tokens, ~1000× faster, for bulk ingestion.
//!
//! Both use the same WordPiece [`tokenizer::Tokenizer`] and vocabulary. Weights are compiled in
//! from `assets/models/` (see its README for where each file comes from and
//! `scripts/build-models.sh` to rebuild them) and are decoded once per process, on first use.
//!
//! Every vector returned is L2-normalised (unit length, finite), so cosine similarity is a dot
//! product and L2 distance ranks the same way. Empty or whitespace-only texts never yield NaN
//! or a zero vector: MiniLM embeds them as `[CLS] [SEP]` (exactly what the reference
//! sentence-transformers model does), the static model as its `[UNK]` vector.
//!
//! Fidelity (tests in `tests.rs`): token ids equal the reference `transformers` tokenizer's on
//! 1,020 texts (600 from the evaluation sets, 400 non-ASCII ones, 20 odd-Unicode cases); MiniLM
//! vectors (float16 weights widened to f32) have cosine ≥ 0.999999 with sentence-transformers'
//! float32 ones; the int8 static model ≥ 0.99995 with model2vec's float32 one. Brute-force
//! cosine nDCG@10 on `shared/eval` dev queries: MiniLM 0.820 (msmarco) / 0.483 (dbpedia), static
//! 0.683 / 0.461, the same as the Python models under the same harness.
//!
//! Speed: `enclave bench embed` (`bench.rs`). MiniLM's dense layers run in int8 by default
//! ([`qgemm`]: AVX-512 VNNI, else AVX2, else portable), or in f32 (`ENCLAVE_MINILM_PRECISION=f32`,
//! [`kernels`]: the AVX-512 micro-kernel, else AVX2+FMA, else portable); attention, softmax,
//! LayerNorm and GELU are f32 either way. int8 vectors have cosine ≥ 0.99 with the f32 ones.

pub mod bench;
pub mod kernels;
pub mod minilm;
pub mod qgemm;
mod safetensors;
pub mod static_model;
pub mod tokenizer;

use std::sync::{Mutex, OnceLock};

pub use minilm::MiniLm;
pub use static_model::StaticModel;

use crate::error::{Error, Result};

/// A text embedding model.
pub trait Embedder: Send + Sync {
    /// Stable identifier of the model and its version (stored with the vectors it produced).
    fn id(&self) -> &str;
    /// Number of dimensions of every vector.
    fn dim(&self) -> usize;
    /// One L2-normalised vector per text, in order.
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>>;
    /// The vector of one search query.
    fn embed_query(&self, query: &str) -> Result<Vec<f32>> {
        self.embed(&[query])?
            .pop()
            .ok_or_else(|| Error::internal("embedder returned no vector"))
    }
}

/// The WordPiece vocabulary shared by both models (BERT uncased, 30,522 tokens).
pub(crate) static VOCAB: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/assets/models/vocab.txt"
));

/// The shared tokenizer, built once.
pub fn tokenizer() -> Result<&'static tokenizer::Tokenizer> {
    static TOK: OnceLock<std::result::Result<tokenizer::Tokenizer, String>> = OnceLock::new();
    TOK.get_or_init(|| tokenizer::Tokenizer::from_vocab(VOCAB).map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| Error::internal(e.clone()))
}

/// The process-wide thread pool with `threads` threads used by the embedders (one per distinct
/// thread count, created on first use and kept for the life of the process).
pub(crate) fn pool(threads: usize) -> Result<&'static rayon::ThreadPool> {
    static POOLS: Mutex<Vec<(usize, &'static rayon::ThreadPool)>> = Mutex::new(Vec::new());
    let mut pools = POOLS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, p)) = pools.iter().find(|(n, _)| *n == threads) {
        return Ok(p);
    }
    let p = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("embed-{i}"))
        .build()
        .map_err(|e| Error::internal(format!("embedding thread pool: {e}")))?;
    let p: &'static rayon::ThreadPool = Box::leak(Box::new(p));
    pools.push((threads, p));
    Ok(p)
}

/// Threads used by the embedders: all cores unless `ENCLAVE_EMBED_THREADS` says otherwise.
pub(crate) fn default_threads() -> usize {
    std::env::var("ENCLAVE_EMBED_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

#[cfg(test)]
mod tests;
