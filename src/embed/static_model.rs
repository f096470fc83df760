//! A Model2Vec static model distilled from all-MiniLM-L6-v2 (256 dims): the embedding of a text is
//! the mean of its tokens' vectors (no `[CLS]`/`[SEP]`, `[UNK]` tokens skipped, at most 512
//! tokens), L2-normalised — what `model2vec.StaticModel.encode` computes.
//!
//! The table ships as int8 with one f32 scale per token row (`row = int8 · scale`) and is used in
//! place from the binary's read-only data: loading parses only the header and the scales.
//!
//! A text with no known token (empty, whitespace, only unknown symbols) embeds to the normalised
//! `[UNK]` row: a fixed unit vector, so such texts stay comparable and never produce NaN.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rayon::prelude::*;

use super::safetensors::SafeTensors;
use super::{default_threads, kernels, tokenizer, Embedder};
use crate::error::{Error, Result};

pub const ID: &str = "minilm-l6-v2-static-256";
pub const DIM: usize = 256;
/// model2vec's default `max_length`.
pub const MAX_TOKENS: usize = 512;

static MODEL_BYTES: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/assets/models/static/model.safetensors"
));

struct Table {
    /// `[vocab, DIM]` int8, borrowed from the binary.
    rows: &'static [u8],
    scales: Vec<f32>,
    fallback: Vec<f32>,
}

impl Table {
    fn load(bytes: &'static [u8]) -> Result<Self> {
        let st = SafeTensors::parse(bytes)?;
        let emb = st.get("embeddings")?;
        let vocab = tokenizer()?.vocab_size();
        if emb.dtype != "I8" || emb.shape != [vocab, DIM] {
            return Err(Error::internal(format!(
                "static model table is {} {:?}, expected I8 [{vocab}, {DIM}]",
                emb.dtype, emb.shape
            )));
        }
        let rows = emb.bytes;
        let scales = st.f32("scales", &[vocab])?;
        let mut t = Table {
            rows,
            scales,
            fallback: Vec::new(),
        };
        let unk = tokenizer()?.unk as usize;
        let mut fallback = vec![0f32; DIM];
        t.accumulate(unk, &mut fallback);
        if !kernels::l2_normalize(&mut fallback) {
            fallback = vec![1.0 / (DIM as f32).sqrt(); DIM];
        }
        t.fallback = fallback;
        Ok(t)
    }

    #[inline]
    fn accumulate(&self, id: usize, acc: &mut [f32]) {
        let (Some(row), Some(&scale)) =
            (self.rows.get(id * DIM..(id + 1) * DIM), self.scales.get(id))
        else {
            return;
        };
        for (a, &q) in acc.iter_mut().zip(row) {
            *a += f32::from(q as i8) * scale;
        }
    }

    fn embed_one(&self, text: &str, ids: &mut Vec<u32>) -> Result<Vec<f32>> {
        let tok = tokenizer()?;
        ids.clear();
        tok.tokenize(text, MAX_TOKENS, ids);
        let mut acc = vec![0f32; DIM];
        let mut n = 0usize;
        for &id in ids.iter().filter(|&&id| id != tok.unk) {
            self.accumulate(id as usize, &mut acc);
            n += 1;
        }
        // The mean's 1/n does not change the direction: normalising is enough.
        if n == 0 || !kernels::l2_normalize(&mut acc) {
            return Ok(self.fallback.clone());
        }
        Ok(acc)
    }
}

fn table() -> Result<&'static Table> {
    static T: OnceLock<std::result::Result<Table, String>> = OnceLock::new();
    T.get_or_init(|| Table::load(MODEL_BYTES).map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| Error::internal(format!("loading the static model: {e}")))
}

/// The static embedding model. Cheap to construct; the table is set up on first use.
pub struct StaticModel {
    threads: usize,
}

impl Default for StaticModel {
    fn default() -> Self {
        Self::new()
    }
}

impl StaticModel {
    pub fn new() -> Self {
        Self::with_threads(default_threads())
    }

    pub fn with_threads(threads: usize) -> Self {
        StaticModel {
            threads: threads.max(1),
        }
    }

    /// Sets the table up now (if not yet) and returns how long that took.
    pub fn preload() -> Result<Duration> {
        let t = Instant::now();
        table()?;
        Ok(t.elapsed())
    }

    fn pool(&self) -> Result<&'static rayon::ThreadPool> {
        super::pool(self.threads)
    }
}

impl Embedder for StaticModel {
    fn id(&self) -> &str {
        ID
    }

    fn dim(&self) -> usize {
        DIM
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let t = table()?;
        if texts.len() < 8 || self.threads == 1 {
            let mut ids = Vec::new();
            return texts.iter().map(|s| t.embed_one(s, &mut ids)).collect();
        }
        self.pool()?.install(|| {
            texts
                .par_iter()
                .map_init(Vec::new, |ids, s| t.embed_one(s, ids))
                .collect()
        })
    }
}
