//! all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384, 12 heads, FFN 1536): mean pooling over the
//! tokens, then L2 normalisation, as in sentence-transformers; texts truncated at 256 tokens.
//!
//! The forward pass works on "packed" batches: the tokens of all sequences of a micro-batch are
//! stacked as rows of one matrix with no padding, so the dense layers are single large GEMMs and
//! attention runs per (sequence, head) over that sequence's own length (no mask, no wasted work).
//! Dense layers split their rows across threads; attention splits its (sequence, head) pairs.
//!
//! Precision ([`Precision`]): the dense layers (QKV, attention output, the two FFN layers) run
//! either in f32 or in int8 ([`super::qgemm`]: weights quantized per output channel once at
//! load, activations per row at each layer, i32 accumulation); embeddings, attention scores,
//! softmax, LayerNorm and GELU stay f32. int8 is the default (`ENCLAVE_MINILM_PRECISION=f32`
//! selects f32): its vectors have cosine ≥ 0.99 with the f32 ones, and the two kinds are used
//! interchangeably in one vector space (see the README's embedder section).

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rayon::prelude::*;

use super::kernels::{self, gemm, isa, Packed, NR};
use super::qgemm::{qgemm, qisa, quantize_rows, QPacked, QRows};
use super::safetensors::SafeTensors;
use super::{default_threads, tokenizer, Embedder};
use crate::error::{Error, Result};

pub const ID: &str = "minilm-l6-v2";
pub const DIM: usize = 384;
/// Longest input in tokens, `[CLS]` and `[SEP]` included (sentence-transformers' setting).
pub const MAX_TOKENS: usize = 256;

const HIDDEN: usize = 384;
const HEADS: usize = 12;
const HEAD_DIM: usize = 32;
const FFN: usize = 1536;
const LAYERS: usize = 6;
const MAX_POS: usize = 512;
const LN_EPS: f32 = 1e-12;
/// Tokens per micro-batch: bounds the activations (~15 KiB per token) and keeps them cache-warm.
const TOKEN_BUDGET: usize = 2048;
/// Rows per dense-layer task (a multiple of the GEMM's row block).
const ROWS_PER_TASK: usize = 112;

/// The arithmetic of MiniLM's dense layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Precision {
    F32,
    /// int8 weights and activations, i32 accumulation (2–3× faster; the default).
    #[default]
    Int8,
}

impl Precision {
    pub const ALL: [Precision; 2] = [Precision::F32, Precision::Int8];

    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Int8 => "int8",
        }
    }

    /// `f32` or `int8`.
    pub fn parse(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "f32" | "float32" => Ok(Precision::F32),
            "int8" | "i8" => Ok(Precision::Int8),
            other => Err(Error::invalid(format!(
                "unknown MiniLM precision {other:?}: use \"f32\" or \"int8\""
            ))),
        }
    }

    /// `ENCLAVE_MINILM_PRECISION` (`f32` or `int8`), else int8. An invalid value is logged and
    /// ignored.
    pub fn from_env() -> Self {
        static P: OnceLock<Precision> = OnceLock::new();
        *P.get_or_init(|| match std::env::var("ENCLAVE_MINILM_PRECISION") {
            Ok(v) if !v.trim().is_empty() => Precision::parse(&v).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "ENCLAVE_MINILM_PRECISION ignored");
                Precision::default()
            }),
            _ => Precision::default(),
        })
    }
}

static WEIGHTS_BYTES: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/assets/models/minilm/model.safetensors"
));

/// A dense layer's weight in the arithmetic it runs in.
enum Linear {
    F32(Packed),
    Int8(QPacked),
}

impl Linear {
    /// From a PyTorch `Linear` weight `[n, k]`.
    fn new(w: &[f32], n: usize, k: usize, precision: Precision) -> Result<Self> {
        Ok(match precision {
            Precision::F32 => Linear::F32(Packed::from_linear(w, n, k)?),
            Precision::Int8 => Linear::Int8(QPacked::from_linear(w, n, k)?),
        })
    }
}

struct Layer {
    qkv: Linear,
    qkv_b: Vec<f32>,
    out: Linear,
    out_b: Vec<f32>,
    ln1_g: Vec<f32>,
    ln1_b: Vec<f32>,
    ff1: Linear,
    ff1_b: Vec<f32>,
    ff2: Linear,
    ff2_b: Vec<f32>,
    ln2_g: Vec<f32>,
    ln2_b: Vec<f32>,
}

/// The token embeddings, shared by both precisions.
struct Embeddings {
    word: Vec<f32>,
    /// Position embeddings with the token-type-0 embedding already added.
    pos_type: Vec<f32>,
    ln_g: Vec<f32>,
    ln_b: Vec<f32>,
    vocab: usize,
}

impl Embeddings {
    fn load(bytes: &[u8]) -> Result<Self> {
        let st = SafeTensors::parse(bytes)?;
        let word_shape = &st.get("embeddings.word_embeddings.weight")?.shape;
        let vocab = word_shape.first().copied().unwrap_or(0);
        let word = st.f32("embeddings.word_embeddings.weight", &[vocab, HIDDEN])?;
        let mut pos_type = st.f32("embeddings.position_embeddings.weight", &[MAX_POS, HIDDEN])?;
        let typ = st.f32("embeddings.token_type_embeddings.weight", &[2, HIDDEN])?;
        for row in pos_type.chunks_exact_mut(HIDDEN) {
            kernels::add_inplace(row, &typ[..HIDDEN]);
        }
        Ok(Embeddings {
            word,
            pos_type,
            ln_g: st.f32("embeddings.LayerNorm.weight", &[HIDDEN])?,
            ln_b: st.f32("embeddings.LayerNorm.bias", &[HIDDEN])?,
            vocab,
        })
    }
}

struct Weights {
    emb: &'static Embeddings,
    layers: Vec<Layer>,
}

impl Weights {
    fn load(bytes: &[u8], emb: &'static Embeddings, precision: Precision) -> Result<Self> {
        let st = SafeTensors::parse(bytes)?;
        let scale = 1.0 / (HEAD_DIM as f32).sqrt();
        let mut layers = Vec::with_capacity(LAYERS);
        for l in 0..LAYERS {
            let p = |s: &str| format!("encoder.layer.{l}.{s}");
            let lin = |name: &str, n: usize, k: usize| -> Result<(Vec<f32>, Vec<f32>)> {
                Ok((
                    st.f32(&p(&format!("{name}.weight")), &[n, k])?,
                    st.f32(&p(&format!("{name}.bias")), &[n])?,
                ))
            };
            let (mut qw, mut qb) = lin("attention.self.query", HIDDEN, HIDDEN)?;
            // Fold the 1/sqrt(head_dim) attention scale into the query projection.
            qw.iter_mut().chain(qb.iter_mut()).for_each(|v| *v *= scale);
            let (kw, kb) = lin("attention.self.key", HIDDEN, HIDDEN)?;
            let (vw, vb) = lin("attention.self.value", HIDDEN, HIDDEN)?;
            let qkv_w: Vec<f32> = [qw, kw, vw].concat();
            let qkv_b: Vec<f32> = [qb, kb, vb].concat();
            let (ow, out_b) = lin("attention.output.dense", HIDDEN, HIDDEN)?;
            let (f1w, ff1_b) = lin("intermediate.dense", FFN, HIDDEN)?;
            let (f2w, ff2_b) = lin("output.dense", HIDDEN, FFN)?;
            layers.push(Layer {
                qkv: Linear::new(&qkv_w, 3 * HIDDEN, HIDDEN, precision)?,
                qkv_b,
                out: Linear::new(&ow, HIDDEN, HIDDEN, precision)?,
                out_b,
                ln1_g: st.f32(&p("attention.output.LayerNorm.weight"), &[HIDDEN])?,
                ln1_b: st.f32(&p("attention.output.LayerNorm.bias"), &[HIDDEN])?,
                ff1: Linear::new(&f1w, FFN, HIDDEN, precision)?,
                ff1_b,
                ff2: Linear::new(&f2w, HIDDEN, FFN, precision)?,
                ff2_b,
                ln2_g: st.f32(&p("output.LayerNorm.weight"), &[HIDDEN])?,
                ln2_b: st.f32(&p("output.LayerNorm.bias"), &[HIDDEN])?,
            });
        }
        Ok(Weights { emb, layers })
    }
}

/// The all-MiniLM-L6-v2 sentence encoder. Cheap to construct; the weights (token embeddings
/// ≈ 47 MB as f32, dense layers ≈ 43 MB as f32 or ≈ 11 MB as int8) are decoded on first use and
/// shared by every instance in the process.
pub struct MiniLm {
    threads: usize,
    precision: Precision,
}

impl Default for MiniLm {
    fn default() -> Self {
        Self::new()
    }
}

impl MiniLm {
    /// Uses all cores (or `ENCLAVE_EMBED_THREADS`) and the precision of
    /// `ENCLAVE_MINILM_PRECISION` (int8 by default).
    pub fn new() -> Self {
        Self::with_threads(default_threads())
    }

    pub fn with_threads(threads: usize) -> Self {
        MiniLm {
            threads: threads.max(1),
            precision: Precision::from_env(),
        }
    }

    /// The same model computing in `precision`.
    pub fn with_precision(self, precision: Precision) -> Self {
        MiniLm { precision, ..self }
    }

    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Decodes (and for int8 quantizes) the weights of `precision` now, if no instance has yet,
    /// and returns how long that took.
    pub fn preload(precision: Precision) -> Result<Duration> {
        let t = Instant::now();
        weights(precision)?;
        Ok(t.elapsed())
    }

    fn pool(&self) -> Result<&'static rayon::ThreadPool> {
        super::pool(self.threads)
    }

    /// Token ids as the model sees them (`[CLS] … [SEP]`, at most [`MAX_TOKENS`]).
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>> {
        Ok(tokenizer()?.encode_with_special(text, MAX_TOKENS))
    }

    /// Embeds already-tokenised sequences (each `[CLS] … [SEP]`, at most [`MAX_TOKENS`] ids).
    pub fn embed_ids(&self, seqs: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        let w = weights(self.precision)?;
        for s in seqs {
            if s.is_empty() || s.len() > MAX_TOKENS {
                return Err(Error::invalid(format!(
                    "a sequence must have 1 to {MAX_TOKENS} tokens, not {}",
                    s.len()
                )));
            }
            if let Some(&bad) = s.iter().find(|&&id| id as usize >= w.emb.vocab) {
                return Err(Error::invalid(format!(
                    "token id {bad} is out of the vocabulary"
                )));
            }
        }
        // Micro-batches of at most TOKEN_BUDGET tokens run in parallel (each core keeps its own
        // activations warm); inside one, the dense layers and attention split across whatever
        // threads are idle, which is all of them when there is a single micro-batch (a query).
        let mut ranges = Vec::new();
        let mut start = 0;
        while start < seqs.len() {
            let mut end = start;
            let mut tokens = 0;
            while end < seqs.len() && (end == start || tokens + seqs[end].len() <= TOKEN_BUDGET) {
                tokens += seqs[end].len();
                end += 1;
            }
            ranges.push(start..end);
            start = end;
        }
        let parts: Vec<Vec<Vec<f32>>> = self.pool()?.install(|| {
            if let [r] = ranges.as_slice() {
                let mut part = Vec::with_capacity(r.len());
                forward(w, &seqs[r.clone()], &mut part);
                return vec![part];
            }
            ranges
                .into_par_iter()
                .map(|r| {
                    let mut part = Vec::with_capacity(r.len());
                    forward(w, &seqs[r], &mut part);
                    part
                })
                .collect()
        });
        let out: Vec<Vec<f32>> = parts.into_iter().flatten().collect();
        Ok(out)
    }
}

fn embeddings() -> Result<&'static Embeddings> {
    static E: OnceLock<std::result::Result<Embeddings, String>> = OnceLock::new();
    E.get_or_init(|| Embeddings::load(WEIGHTS_BYTES).map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| Error::internal(format!("loading the MiniLM model: {e}")))
}

fn weights(precision: Precision) -> Result<&'static Weights> {
    type Cell = OnceLock<std::result::Result<Weights, String>>;
    static F32: Cell = OnceLock::new();
    static INT8: Cell = OnceLock::new();
    let cell = match precision {
        Precision::F32 => &F32,
        Precision::Int8 => &INT8,
    };
    let emb = embeddings()?;
    cell.get_or_init(|| Weights::load(WEIGHTS_BYTES, emb, precision).map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| Error::internal(format!("loading the MiniLM model: {e}")))
}

impl Embedder for MiniLm {
    fn id(&self) -> &str {
        ID
    }

    fn dim(&self) -> usize {
        DIM
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let tok = tokenizer()?;
        let seqs: Vec<Vec<u32>> = self.pool()?.install(|| {
            texts
                .par_iter()
                .map(|t| tok.encode_with_special(t, MAX_TOKENS))
                .collect()
        });
        self.embed_ids(&seqs)
    }
}

/// A raw pointer that tasks writing disjoint parts of one buffer may share.
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

impl SendPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// `c[m × w.n] = a[m × w.k] · w + bias (+ c)`, rows split across the pool's threads; `post` runs
/// on each finished block of rows.
fn linear(
    a: &[f32],
    w: &Linear,
    bias: &[f32],
    c: &mut [f32],
    accumulate: bool,
    post: impl Fn(&mut [f32]) + Sync,
) {
    let w = match w {
        Linear::F32(p) => p,
        Linear::Int8(q) => return linear_int8(a, q, bias, c, accumulate, post),
    };
    let (k, n) = (w.k, w.n);
    let isa = isa();
    let m = c.len() / n;
    let threads = rayon::current_num_threads();
    if m <= ROWS_PER_TASK && threads > 1 && n >= 2 * NR {
        // Few rows (a short query): split the columns instead, so every core streams its share
        // of the weights.
        let panels = n / NR;
        let per = panels.div_ceil(threads);
        let cp = SendPtr(c.as_mut_ptr());
        (0..panels.div_ceil(per)).into_par_iter().for_each(|t| {
            let p0 = t * per;
            let cols = (panels - p0).min(per) * NR;
            // SAFETY: as below, restricted to panels p0.. of `w` and the matching columns of
            // `c` and `bias`; tasks write disjoint columns.
            unsafe {
                gemm(
                    isa,
                    m,
                    k,
                    cols,
                    a.as_ptr(),
                    k,
                    w.as_ptr().add(p0 * k * NR),
                    cp.get().add(p0 * NR),
                    n,
                    bias.as_ptr().add(p0 * NR),
                    accumulate,
                );
            }
        });
        post(c);
        return;
    }
    c.par_chunks_mut(ROWS_PER_TASK * n)
        .zip(a.par_chunks(ROWS_PER_TASK * k))
        .for_each(|(cb, ab)| {
            let rows = cb.len() / n;
            debug_assert_eq!(ab.len(), rows * k);
            // SAFETY: `ab` holds `rows` rows of `k`, `cb` `rows` rows of `n`; `w` packs [k, n];
            // `bias` has `n` values.
            unsafe {
                gemm(
                    isa,
                    rows,
                    k,
                    n,
                    ab.as_ptr(),
                    k,
                    w.as_ptr(),
                    cb.as_mut_ptr(),
                    n,
                    bias.as_ptr(),
                    accumulate,
                );
            }
            post(cb);
        });
}

/// [`linear`] with int8 weights: each block of rows is quantized, then multiplied.
fn linear_int8(
    a: &[f32],
    w: &QPacked,
    bias: &[f32],
    c: &mut [f32],
    accumulate: bool,
    post: impl Fn(&mut [f32]) + Sync,
) {
    let (k, n) = (w.k, w.n);
    let isa = qisa();
    let m = c.len() / n;
    let threads = rayon::current_num_threads();
    if m <= ROWS_PER_TASK && threads > 1 && n >= 2 * NR {
        let mut q = QRows::default();
        quantize_rows(a, k, w.kp, &mut q);
        let panels = n / NR;
        let per = panels.div_ceil(threads);
        let cp = SendPtr(c.as_mut_ptr());
        (0..panels.div_ceil(per)).into_par_iter().for_each(|t| {
            let p0 = t * per;
            let cols = (panels - p0).min(per) * NR;
            // SAFETY: `q` holds the `m` rows; panels p0.. exist in `w`; `c` is m × n and
            // `bias` has n values; tasks write disjoint columns.
            unsafe {
                qgemm(
                    isa,
                    &q,
                    0,
                    m,
                    w,
                    p0,
                    cols,
                    cp.get().add(p0 * NR),
                    n,
                    bias.as_ptr().add(p0 * NR),
                    accumulate,
                );
            }
        });
        post(c);
        return;
    }
    c.par_chunks_mut(ROWS_PER_TASK * n)
        .zip(a.par_chunks(ROWS_PER_TASK * k))
        .for_each_init(QRows::default, |q, (cb, ab)| {
            let rows = cb.len() / n;
            quantize_rows(ab, k, w.kp, q);
            // SAFETY: `q` holds `rows` rows, `cb` `rows` rows of `n`; `bias` has `n` values.
            unsafe {
                qgemm(
                    isa,
                    q,
                    0,
                    rows,
                    w,
                    0,
                    n,
                    cb.as_mut_ptr(),
                    n,
                    bias.as_ptr(),
                    accumulate,
                );
            }
            post(cb);
        });
}

/// Runs the encoder on one micro-batch and appends one pooled, normalised vector per sequence.
fn forward(w: &Weights, seqs: &[Vec<u32>], out: &mut Vec<Vec<f32>>) {
    let total: usize = seqs.iter().map(Vec::len).sum();
    let mut offsets: Vec<(usize, usize)> = Vec::with_capacity(seqs.len());
    let mut x = vec![0f32; total * HIDDEN];
    let mut rows = x.chunks_exact_mut(HIDDEN);
    let mut off = 0;
    for s in seqs {
        offsets.push((off, s.len()));
        off += s.len();
        for (pos, (&id, row)) in s.iter().zip(&mut rows).enumerate() {
            let id = id as usize;
            let e = w.emb;
            row.copy_from_slice(&e.word[id * HIDDEN..(id + 1) * HIDDEN]);
            kernels::add_inplace(row, &e.pos_type[pos * HIDDEN..(pos + 1) * HIDDEN]);
            kernels::layer_norm_inplace(row, &e.ln_g, &e.ln_b, LN_EPS);
        }
    }

    let mut qkv = vec![0f32; total * 3 * HIDDEN];
    let mut ctx = vec![0f32; total * HIDDEN];
    let mut ffn = vec![0f32; total * FFN];
    for layer in &w.layers {
        linear(&x, &layer.qkv, &layer.qkv_b, &mut qkv, false, |_| {});
        attention(&qkv, &offsets, &mut ctx);
        let ln = |rows: &mut [f32]| {
            for r in rows.chunks_exact_mut(HIDDEN) {
                kernels::layer_norm_inplace(r, &layer.ln1_g, &layer.ln1_b, LN_EPS);
            }
        };
        linear(&ctx, &layer.out, &layer.out_b, &mut x, true, ln);
        linear(&x, &layer.ff1, &layer.ff1_b, &mut ffn, false, |rows| {
            kernels::gelu_inplace(rows)
        });
        let ln2 = |rows: &mut [f32]| {
            for r in rows.chunks_exact_mut(HIDDEN) {
                kernels::layer_norm_inplace(r, &layer.ln2_g, &layer.ln2_b, LN_EPS);
            }
        };
        linear(&ffn, &layer.ff2, &layer.ff2_b, &mut x, true, ln2);
    }

    for &(off, len) in &offsets {
        let mut v = vec![0f32; HIDDEN];
        for row in x[off * HIDDEN..(off + len) * HIDDEN].chunks_exact(HIDDEN) {
            kernels::add_inplace(&mut v, row);
        }
        let inv = 1.0 / len as f32;
        v.iter_mut().for_each(|e| *e *= inv);
        if !kernels::l2_normalize(&mut v) {
            // Not reachable with finite weights; keep the output a unit vector regardless.
            v.iter_mut().for_each(|e| *e = 0.0);
            v[0] = 1.0;
        }
        out.push(v);
    }
}

/// Multi-head self-attention of every sequence: `ctx = softmax(Q Kᵀ) V` per head (Q pre-scaled).
fn attention(qkv: &[f32], offsets: &[(usize, usize)], ctx: &mut [f32]) {
    let isa = isa();
    let ctx_ptr = SendPtr(ctx.as_mut_ptr());
    let ld = 3 * HIDDEN;
    let tasks: Vec<(usize, usize)> = (0..offsets.len())
        .flat_map(|s| (0..HEADS).map(move |h| (s, h)))
        .collect();
    tasks.par_iter().for_each_init(
        || (Vec::<f32>::new(), Vec::<f32>::new(), Vec::<f32>::new()),
        |(kt, v, scores), &(s, h)| {
            let (off, len) = offsets[s];
            let lp = len.div_ceil(NR) * NR;
            // Kᵀ packed into NR-wide panels of keys: panel j, row d holds K[j*NR.., d].
            kt.clear();
            kt.resize(HEAD_DIM * lp, 0.0);
            for key in 0..len {
                let src = &qkv[(off + key) * ld + HIDDEN + h * HEAD_DIM..][..HEAD_DIM];
                let (panel, jj) = (key / NR, key % NR);
                for (d, &val) in src.iter().enumerate() {
                    kt[panel * HEAD_DIM * NR + d * NR + jj] = val;
                }
            }
            // V is one NR-wide panel (HEAD_DIM == NR) of `len` rows.
            v.clear();
            for i in 0..len {
                v.extend_from_slice(&qkv[(off + i) * ld + 2 * HIDDEN + h * HEAD_DIM..][..HEAD_DIM]);
            }
            scores.clear();
            scores.resize(len * lp, 0.0);
            // SAFETY: Q rows `off..off+len` of the head's 32 columns are in `qkv` (stride `ld`);
            // `kt` holds lp/NR panels of HEAD_DIM × NR; `scores` is len × lp.
            unsafe {
                gemm(
                    isa,
                    len,
                    HEAD_DIM,
                    lp,
                    qkv.as_ptr().add(off * ld + h * HEAD_DIM),
                    ld,
                    kt.as_ptr(),
                    scores.as_mut_ptr(),
                    lp,
                    std::ptr::null(),
                    false,
                );
            }
            for row in scores.chunks_exact_mut(lp) {
                kernels::softmax_inplace(&mut row[..len]);
            }
            // SAFETY: `scores` rows have `len` probabilities at stride `lp`; `v` is a len × NR
            // panel; this task alone writes rows off..off+len, columns h*32..h*32+32 of `ctx`.
            unsafe {
                gemm(
                    isa,
                    len,
                    len,
                    HEAD_DIM,
                    scores.as_ptr(),
                    lp,
                    v.as_ptr(),
                    ctx_ptr.get().add(off * HIDDEN + h * HEAD_DIM),
                    HIDDEN,
                    std::ptr::null(),
                    false,
                );
            }
        },
    );
}
