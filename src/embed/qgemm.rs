//! int8 GEMM for the transformer's dense layers.
//!
//! * Weights: symmetric int8 per output channel (`w ≈ s_j · q`, `q ∈ [-127, 127]`, one scale per
//!   output column), quantized once at model load and packed into `NR`-wide column panels of
//!   "quads" (4 consecutive `k` values of a column are 4 adjacent bytes, what `vpdpbusd` reads).
//! * Activations: asymmetric uint8 per row (`x ≈ s_r · (u − z_r)`, `u ∈ [0, 255]`, zero point
//!   `z_r` so that 0 is exact), quantized by [`quantize_rows`] just before each GEMM.
//! * Products accumulate exactly in i32 (`255 · 127 · k` fits for `k` up to 66,000); the
//!   epilogue removes the zero point with the column sums of the weights and dequantizes:
//!   `c = s_r · s_j · (Σ u·q − z_r · Σ q) + bias`.
//!
//! Kernels, chosen at run time like the f32 GEMM: AVX-512 VNNI (`vpdpbusd`, 14 rows × 32
//! columns), AVX2 (`vpmaddwd` on bytes widened to 16 bits, 6 rows × 8 columns: no saturation,
//! unlike `vpmaddubsw`, whose u8×i8 pair sums overflow 16 bits), and a portable one. All three
//! compute the same integers, so every machine gets the same vectors (up to f32 rounding in the
//! epilogue).

use std::sync::OnceLock;

use super::kernels::{self, NR};
use crate::error::{Error, Result};

/// Bytes of one packed quad row of a panel: `NR` columns × 4 values of `k`.
const QUAD: usize = NR * 4;
const MR_VNNI: usize = 14;
const MR_AVX2: usize = 6;
const MR_GENERIC: usize = 4;
/// Rows of activations per cache block, reused against every weight panel.
const MC: usize = 56;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum QIsa {
    /// AVX-512 with VNNI (`vpdpbusd`).
    Vnni512,
    /// AVX2 (`vpmaddwd`).
    Avx2,
    Generic,
}

/// The int8 kernel for this CPU, detected once; follows `ENCLAVE_EMBED_ISA=avx2|generic` (via
/// [`kernels::isa`]) so the fallbacks can be forced.
pub fn qisa() -> QIsa {
    static ISA: OnceLock<QIsa> = OnceLock::new();
    *ISA.get_or_init(|| match kernels::isa() {
        kernels::Isa::Generic => QIsa::Generic,
        kernels::Isa::Avx2 => QIsa::Avx2,
        kernels::Isa::Avx512 => best_qisa(),
    })
}

/// The best int8 kernel this CPU supports, ignoring any forcing.
pub fn best_qisa() -> QIsa {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vnni")
        {
            return QIsa::Vnni512;
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            return QIsa::Avx2;
        }
    }
    QIsa::Generic
}

/// A weight matrix `[k, n]` (as in `y = x · W`) quantized per output column and packed into
/// `n / NR` panels of `kp / 4` quad rows (`kp` = `k` rounded up to 4, zero-padded).
pub struct QPacked {
    pub k: usize,
    pub kp: usize,
    pub n: usize,
    data: Vec<i8>,
    /// Per output column: the dequantization scale.
    scale: Vec<f32>,
    /// Per output column: the sum of its quantized weights (for the zero-point correction).
    colsum: Vec<i32>,
}

impl QPacked {
    /// From a PyTorch `Linear` weight, `[n, k]` row-major (`y = x · Wᵀ`).
    pub fn from_linear(w: &[f32], n: usize, k: usize) -> Result<Self> {
        if !n.is_multiple_of(NR) || w.len() != n * k || k == 0 {
            return Err(Error::internal(format!(
                "linear weight of {} values cannot be quantized as [{n}, {k}]",
                w.len()
            )));
        }
        if w.iter().any(|v| !v.is_finite()) {
            return Err(Error::internal("linear weight has a non-finite value"));
        }
        let kp = k.div_ceil(4) * 4;
        let mut data = vec![0i8; n * kp];
        let mut scale = vec![0f32; n];
        let mut colsum = vec![0i32; n];
        for col in 0..n {
            let row = &w[col * k..(col + 1) * k];
            let amax = row.iter().fold(0f32, |m, v| m.max(v.abs()));
            let s = if amax > 0.0 { amax / 127.0 } else { 1.0 };
            scale[col] = s;
            let (panel, jj) = (col / NR, col % NR);
            let base = panel * kp * NR;
            let mut sum = 0i32;
            for (p, &v) in row.iter().enumerate() {
                let q = (v / s).round_ties_even().clamp(-127.0, 127.0) as i8;
                sum += i32::from(q);
                data[base + (p / 4) * QUAD + jj * 4 + p % 4] = q;
            }
            colsum[col] = sum;
        }
        Ok(QPacked {
            k,
            kp,
            n,
            data,
            scale,
            colsum,
        })
    }

    /// The weights as the kernels see them, dequantized back to `[n, k]` (for tests).
    pub fn dequantize(&self) -> Vec<f32> {
        let mut w = vec![0f32; self.n * self.k];
        for col in 0..self.n {
            let base = (col / NR) * self.kp * NR;
            for p in 0..self.k {
                let q = self.data[base + (p / 4) * QUAD + (col % NR) * 4 + p % 4];
                w[col * self.k + p] = f32::from(q) * self.scale[col];
            }
        }
        w
    }

    /// Bytes held (weights, scales, column sums).
    pub fn bytes(&self) -> usize {
        self.data.len() + 8 * self.n
    }
}

/// Activations quantized per row: `rows × kp` bytes, with each row's scale and zero point.
#[derive(Default)]
pub struct QRows {
    pub kp: usize,
    pub data: Vec<u8>,
    pub scale: Vec<f32>,
    pub zero: Vec<i32>,
}

/// Quantizes `a` (`rows × k`, row-major) into `out` (reusing its buffers), padding each row to
/// `kp` bytes with its zero point (the padded weights are zero, so the value is irrelevant).
pub fn quantize_rows(a: &[f32], k: usize, kp: usize, out: &mut QRows) {
    let rows = a.len() / k.max(1);
    out.kp = kp;
    out.data.clear();
    out.data.resize(rows * kp, 0);
    out.scale.clear();
    out.scale.resize(rows, 0.0);
    out.zero.clear();
    out.zero.resize(rows, 0);
    for (r, x) in a.chunks_exact(k).enumerate() {
        let mut params = (0f32, 0i32);
        kernels::quantize_row_u8(x, &mut out.data[r * kp..r * kp + k], &mut params);
        out.scale[r] = params.0;
        out.zero[r] = params.1;
    }
}

/// `C[m × n] = dequant(A · B) + bias (+ C if accumulate)` for the panels `panel0..panel0 + n / NR`
/// of `w` (and the matching `bias` values), `A` being rows `row0..row0 + m` of `a`.
///
/// # Safety
/// `c` is writable (and readable if `accumulate`) for rows `0..m` of `n` floats at stride `ldc`;
/// `bias` is readable for `n` floats; `a` holds rows `row0..row0 + m`; the panels exist in `w`.
#[allow(clippy::too_many_arguments)]
pub unsafe fn qgemm(
    isa: QIsa,
    a: &QRows,
    row0: usize,
    m: usize,
    w: &QPacked,
    panel0: usize,
    n: usize,
    c: *mut f32,
    ldc: usize,
    bias: *const f32,
    accumulate: bool,
) {
    debug_assert!(n.is_multiple_of(NR) && a.kp == w.kp && row0 + m <= a.scale.len());
    let mr = match isa {
        QIsa::Vnni512 => MR_VNNI,
        QIsa::Avx2 => MR_AVX2,
        QIsa::Generic => MR_GENERIC,
    };
    let kp = w.kp;
    let mut i0 = 0;
    while i0 < m {
        let i1 = (i0 + MC).min(m);
        for j in 0..n / NR {
            let col = (panel0 + j) * NR;
            let mut i = i0;
            while i < i1 {
                let rows = mr.min(i1 - i);
                let t = QTile {
                    quads: kp / 4,
                    a: a.data.as_ptr().add((row0 + i) * kp),
                    lda: kp,
                    a_scale: a.scale.as_ptr().add(row0 + i),
                    a_zero: a.zero.as_ptr().add(row0 + i),
                    b: w.data.as_ptr().add((panel0 + j) * kp * NR),
                    w_scale: w.scale.as_ptr().add(col),
                    colsum: w.colsum.as_ptr().add(col),
                    c: c.add(i * ldc + j * NR),
                    ldc,
                    bias: bias.add(j * NR),
                    accumulate,
                };
                match isa {
                    #[cfg(target_arch = "x86_64")]
                    QIsa::Vnni512 => x86::tile_vnni(rows, &t),
                    #[cfg(target_arch = "x86_64")]
                    QIsa::Avx2 => x86::tile_avx2(rows, &t),
                    _ => tile_generic(rows, &t),
                }
                i += rows;
            }
        }
        i0 = i1;
    }
}

/// One micro-tile: `rows` quantized rows against one panel of `NR` columns.
struct QTile {
    quads: usize,
    a: *const u8,
    lda: usize,
    a_scale: *const f32,
    a_zero: *const i32,
    b: *const i8,
    w_scale: *const f32,
    colsum: *const i32,
    c: *mut f32,
    ldc: usize,
    bias: *const f32,
    accumulate: bool,
}

impl QTile {
    /// The epilogue of one output value from its exact integer sum.
    #[inline(always)]
    unsafe fn finish(&self, r: usize, jj: usize, acc: i32) {
        let v = (acc - *self.a_zero.add(r) * *self.colsum.add(jj)) as f32
            * (*self.a_scale.add(r) * *self.w_scale.add(jj))
            + *self.bias.add(jj);
        let dst = self.c.add(r * self.ldc + jj);
        *dst = if self.accumulate { *dst + v } else { v };
    }
}

unsafe fn tile_generic(rows: usize, t: &QTile) {
    for r in 0..rows {
        let mut acc = [0i32; NR];
        let arow = t.a.add(r * t.lda);
        for q in 0..t.quads {
            let quad = std::slice::from_raw_parts(t.b.add(q * QUAD), QUAD);
            let av = std::slice::from_raw_parts(arow.add(4 * q), 4);
            for (jj, v) in acc.iter_mut().enumerate() {
                for s in 0..4 {
                    *v += i32::from(av[s]) * i32::from(quad[jj * 4 + s]);
                }
            }
        }
        for (jj, &v) in acc.iter().enumerate() {
            t.finish(r, jj, v);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{QTile, QUAD};
    use std::arch::x86_64::*;

    pub(super) unsafe fn tile_vnni(rows: usize, t: &QTile) {
        match rows {
            14 => kvnni::<14>(t),
            13 => kvnni::<13>(t),
            12 => kvnni::<12>(t),
            11 => kvnni::<11>(t),
            10 => kvnni::<10>(t),
            9 => kvnni::<9>(t),
            8 => kvnni::<8>(t),
            7 => kvnni::<7>(t),
            6 => kvnni::<6>(t),
            5 => kvnni::<5>(t),
            4 => kvnni::<4>(t),
            3 => kvnni::<3>(t),
            2 => kvnni::<2>(t),
            _ => kvnni::<1>(t),
        }
    }

    /// `R` rows × 32 columns: per quad, two 64-byte weight loads and `2R` `vpdpbusd`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn kvnni<const R: usize>(t: &QTile) {
        let mut acc = [[_mm512_setzero_si512(); 2]; R];
        let mut b = t.b;
        for q in 0..t.quads {
            let b0 = _mm512_loadu_si512(b as *const _);
            let b1 = _mm512_loadu_si512(b.add(64) as *const _);
            for (r, row) in acc.iter_mut().enumerate() {
                let av =
                    _mm512_set1_epi32((t.a.add(r * t.lda + 4 * q) as *const i32).read_unaligned());
                row[0] = _mm512_dpbusd_epi32(row[0], av, b0);
                row[1] = _mm512_dpbusd_epi32(row[1], av, b1);
            }
            b = b.add(QUAD);
        }
        let cs = [
            _mm512_loadu_si512(t.colsum as *const _),
            _mm512_loadu_si512(t.colsum.add(16) as *const _),
        ];
        let ws = [
            _mm512_loadu_ps(t.w_scale),
            _mm512_loadu_ps(t.w_scale.add(16)),
        ];
        let bias = [_mm512_loadu_ps(t.bias), _mm512_loadu_ps(t.bias.add(16))];
        for (r, row) in acc.iter().enumerate() {
            let zp = _mm512_set1_epi32(*t.a_zero.add(r));
            let sa = _mm512_set1_ps(*t.a_scale.add(r));
            let c = t.c.add(r * t.ldc);
            for h in 0..2 {
                let corr = _mm512_sub_epi32(row[h], _mm512_mullo_epi32(zp, cs[h]));
                let mut v =
                    _mm512_fmadd_ps(_mm512_cvtepi32_ps(corr), _mm512_mul_ps(sa, ws[h]), bias[h]);
                if t.accumulate {
                    v = _mm512_add_ps(v, _mm512_loadu_ps(c.add(16 * h)));
                }
                _mm512_storeu_ps(c.add(16 * h), v);
            }
        }
    }

    pub(super) unsafe fn tile_avx2(rows: usize, t: &QTile) {
        for group in 0..4 {
            match rows {
                6 => kavx2::<6>(t, group),
                5 => kavx2::<5>(t, group),
                4 => kavx2::<4>(t, group),
                3 => kavx2::<3>(t, group),
                2 => kavx2::<2>(t, group),
                _ => kavx2::<1>(t, group),
            }
        }
    }

    /// `R` rows × columns `8·group..8·group + 8` of the panel. Per quad, each 4 columns' 16
    /// bytes widen to 16-bit lanes (`col0 k0..k3, col1 k0..k3, …`) and `vpmaddwd` with the row's
    /// 4 activations (widened, repeated) gives each column's two pair sums; they are added
    /// pairwise at the end.
    #[target_feature(enable = "avx2")]
    unsafe fn kavx2<const R: usize>(t: &QTile, group: usize) {
        let mut acc = [[_mm256_setzero_si256(); 2]; R];
        let mut b = t.b.add(group * 32);
        for q in 0..t.quads {
            let w0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(b as *const _));
            let w1 = _mm256_cvtepi8_epi16(_mm_loadu_si128(b.add(16) as *const _));
            for (r, row) in acc.iter_mut().enumerate() {
                let a4 = (t.a.add(r * t.lda + 4 * q) as *const i32).read_unaligned();
                let a16 = _mm_cvtepu8_epi16(_mm_cvtsi32_si128(a4));
                let av = _mm256_broadcastq_epi64(a16);
                row[0] = _mm256_add_epi32(row[0], _mm256_madd_epi16(w0, av));
                row[1] = _mm256_add_epi32(row[1], _mm256_madd_epi16(w1, av));
            }
            b = b.add(QUAD);
        }
        let col = group * 8;
        let cs = _mm256_loadu_si256(t.colsum.add(col) as *const _);
        let ws = _mm256_loadu_ps(t.w_scale.add(col));
        let bias = _mm256_loadu_ps(t.bias.add(col));
        for (r, row) in acc.iter().enumerate() {
            // [c0 c1 c4 c5 | c2 c3 c6 c7] → [c0 … c7]
            let h = _mm256_hadd_epi32(row[0], row[1]);
            let sums = _mm256_permute4x64_epi64(h, 0b11_01_10_00);
            let corr = _mm256_sub_epi32(
                sums,
                _mm256_mullo_epi32(_mm256_set1_epi32(*t.a_zero.add(r)), cs),
            );
            let scale = _mm256_mul_ps(_mm256_set1_ps(*t.a_scale.add(r)), ws);
            let mut v = _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(corr), scale), bias);
            let c = t.c.add(r * t.ldc + col);
            if t.accumulate {
                v = _mm256_add_ps(v, _mm256_loadu_ps(c));
            }
            _mm256_storeu_ps(c, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: &mut u64) -> f32 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*seed >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    }

    fn isas() -> Vec<QIsa> {
        let mut v = vec![QIsa::Generic];
        match best_qisa() {
            QIsa::Vnni512 => v.extend([QIsa::Avx2, QIsa::Vnni512]),
            QIsa::Avx2 => v.push(QIsa::Avx2),
            QIsa::Generic => {}
        }
        v
    }

    #[test]
    fn weight_quantization_round_trip_is_within_half_a_step() {
        let (n, k) = (64, 37);
        let mut seed = 7;
        let mut w: Vec<f32> = (0..n * k).map(|_| lcg(&mut seed)).collect();
        // A column with an outlier, one of zeros, one of a constant.
        w[5 * k + 3] = 40.0;
        w[9 * k..10 * k].iter_mut().for_each(|v| *v = 0.0);
        w[11 * k..12 * k].iter_mut().for_each(|v| *v = -0.25);
        let p = QPacked::from_linear(&w, n, k).unwrap();
        assert_eq!(p.kp, 40);
        let back = p.dequantize();
        for col in 0..n {
            let amax = w[col * k..(col + 1) * k]
                .iter()
                .fold(0f32, |m, v| m.max(v.abs()));
            let step = amax / 127.0;
            for i in 0..k {
                let (x, y) = (w[col * k + i], back[col * k + i]);
                assert!(
                    (x - y).abs() <= step * 0.5 + 1e-7,
                    "col {col}: {x} vs {y} (step {step})"
                );
            }
        }
        assert!(back[9 * k..10 * k].iter().all(|v| *v == 0.0));
        assert!(back[11 * k..12 * k].iter().all(|v| *v == -0.25));
        assert!(QPacked::from_linear(&w, n - 1, k).is_err());
        let mut bad = w.clone();
        bad[0] = f32::NAN;
        assert!(QPacked::from_linear(&bad, n, k).is_err());
    }

    #[test]
    fn activation_quantization_round_trip_is_within_half_a_step() {
        let k = 50;
        let mut seed = 11;
        let mut a: Vec<f32> = (0..4 * k).map(|_| lcg(&mut seed) * 6.0).collect();
        // Row 1 all positive, row 2 all zero, row 3 with an outlier.
        a[k..2 * k].iter_mut().for_each(|v| *v = v.abs() + 1.0);
        a[2 * k..3 * k].iter_mut().for_each(|v| *v = 0.0);
        a[3 * k + 7] = -300.0;
        let mut q = QRows::default();
        quantize_rows(&a, k, 52, &mut q);
        for r in 0..4 {
            let row = &a[r * k..(r + 1) * k];
            let lo = row.iter().fold(0f32, |m, v| m.min(*v));
            let hi = row.iter().fold(0f32, |m, v| m.max(*v));
            let step = (hi - lo) / 255.0;
            assert!((0..=255).contains(&q.zero[r]));
            for (i, &x) in row.iter().enumerate() {
                let u = q.data[r * 52 + i];
                let back = (i32::from(u) - q.zero[r]) as f32 * q.scale[r];
                // Half a step, or one at the ends of the range (the zero point is rounded).
                let bound = if u == 0 || u == 255 { step } else { step * 0.5 };
                assert!(
                    (x - back).abs() <= bound * (1.0 + 1e-3) + 1e-7,
                    "row {r}: {x} vs {back} (step {step})"
                );
            }
            // Zero is exact.
            let zero_back = (q.zero[r] - q.zero[r]) as f32 * q.scale[r];
            assert_eq!(zero_back, 0.0);
        }
        assert!(q.data[2 * 52..2 * 52 + k]
            .iter()
            .all(|&u| i32::from(u) == q.zero[2]));
    }

    /// Naive reference of what the kernels compute: the dequantized operands' product in f64.
    fn naive(q: &QRows, m: usize, w: &QPacked, bias: &[f32]) -> Vec<f64> {
        let wd = w.dequantize();
        let mut c = vec![0f64; m * w.n];
        for i in 0..m {
            for j in 0..w.n {
                let mut s = f64::from(bias[j]);
                for p in 0..w.k {
                    let x = f64::from(i32::from(q.data[i * q.kp + p]) - q.zero[i])
                        * f64::from(q.scale[i]);
                    s += x * f64::from(wd[j * w.k + p]);
                }
                c[i * w.n + j] = s;
            }
        }
        c
    }

    #[test]
    fn int8_gemm_matches_naive_on_every_isa() {
        for &(m, k, n) in &[(61, 37, 64), (3, 384, 96), (20, 1536, 32), (1, 4, 32)] {
            let mut seed = (m * 1000 + k) as u64;
            let a: Vec<f32> = (0..m * k).map(|_| lcg(&mut seed) * 4.0 + 0.3).collect();
            let w: Vec<f32> = (0..n * k).map(|_| lcg(&mut seed) * 0.2).collect();
            let bias: Vec<f32> = (0..n).map(|i| i as f32 * 0.01).collect();
            let p = QPacked::from_linear(&w, n, k).unwrap();
            let mut q = QRows::default();
            quantize_rows(&a, k, p.kp, &mut q);
            let want = naive(&q, m, &p, &bias);
            let mag = want.iter().fold(0f64, |a, v| a.max(v.abs()));
            for isa in isas() {
                for accumulate in [false, true] {
                    let mut c = vec![1f32; m * n];
                    // SAFETY: c is m × n, bias n, q has m rows of p.kp.
                    unsafe {
                        qgemm(
                            isa,
                            &q,
                            0,
                            m,
                            &p,
                            0,
                            n,
                            c.as_mut_ptr(),
                            n,
                            bias.as_ptr(),
                            accumulate,
                        );
                    }
                    let add = if accumulate { 1.0 } else { 0.0 };
                    for (x, y) in c.iter().zip(&want) {
                        let y = y + add;
                        assert!(
                            (f64::from(*x) - y).abs() <= 1e-5 * mag.max(1.0),
                            "{isa:?} m={m} k={k} n={n}: {x} vs {y}"
                        );
                    }
                }
                // A sub-range of rows and panels, written into a wider C.
                if m > 2 && n > NR {
                    let mut c = vec![0f32; m * n];
                    unsafe {
                        qgemm(
                            isa,
                            &q,
                            1,
                            m - 2,
                            &p,
                            1,
                            n - NR,
                            c.as_mut_ptr().add(n + NR),
                            n,
                            bias.as_ptr().add(NR),
                            false,
                        );
                    }
                    for i in 1..m - 1 {
                        for j in NR..n {
                            let (x, y) = (c[i * n + j], want[i * n + j]);
                            assert!((f64::from(x) - y).abs() <= 1e-5 * mag.max(1.0));
                        }
                        for j in 0..NR {
                            assert_eq!(c[i * n + j], 0.0, "column outside the panels");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn int8_gemm_is_close_to_the_f32_product() {
        // End-to-end error of quantizing both operands, relative to the output's spread.
        let (m, k, n) = (16, 384, 64);
        let mut seed = 3;
        let a: Vec<f32> = (0..m * k).map(|_| lcg(&mut seed) * 2.0).collect();
        let w: Vec<f32> = (0..n * k).map(|_| lcg(&mut seed) * 0.1).collect();
        let p = QPacked::from_linear(&w, n, k).unwrap();
        let mut q = QRows::default();
        quantize_rows(&a, k, p.kp, &mut q);
        let mut c = vec![0f32; m * n];
        let zeros = vec![0f32; n];
        unsafe {
            qgemm(
                qisa(),
                &q,
                0,
                m,
                &p,
                0,
                n,
                c.as_mut_ptr(),
                n,
                zeros.as_ptr(),
                false,
            );
        }
        let (mut err, mut norm) = (0f64, 0f64);
        for i in 0..m {
            for j in 0..n {
                let exact: f64 = (0..k)
                    .map(|p| f64::from(a[i * k + p]) * f64::from(w[j * k + p]))
                    .sum();
                err += (f64::from(c[i * n + j]) - exact).powi(2);
                norm += exact * exact;
            }
        }
        let rel = (err / norm).sqrt();
        assert!(rel < 0.02, "relative error {rel}");
    }
}
