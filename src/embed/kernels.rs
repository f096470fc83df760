//! Numeric kernels for the in-process transformer.
//!
//! * A GEMM over weights pre-packed into `NR`-wide column panels, with an AVX-512 micro-kernel
//!   (14×32 tile), an AVX2+FMA one (6×16) and a portable fallback, chosen at run time.
//! * Elementwise kernels (GELU with a fast `erf`, softmax with a fast `exp`, LayerNorm) written as
//!   plain loops that LLVM vectorises, compiled once per instruction set and dispatched the same way.
//!
//! Every function that takes raw pointers documents the extents it reads and writes.

use std::sync::OnceLock;

use crate::error::{Error, Result};

/// Width of a packed weight panel (two AVX-512 vectors).
pub const NR: usize = 32;
/// Rows of activations per cache block: one block is reused against every weight panel.
const MC: usize = 56;
const MR512: usize = 14;
const MR256: usize = 6;
const MR_GENERIC: usize = 4;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Isa {
    Avx512,
    Avx2,
    Generic,
}

/// The best instruction set this CPU supports, detected once. `ENCLAVE_EMBED_ISA=avx2|generic`
/// forces a lesser one (for testing the fallbacks).
pub fn isa() -> Isa {
    static ISA: OnceLock<Isa> = OnceLock::new();
    *ISA.get_or_init(|| {
        let forced = std::env::var("ENCLAVE_EMBED_ISA").unwrap_or_default();
        let best = detect();
        match (forced.as_str(), best) {
            ("generic", _) => Isa::Generic,
            ("avx2", Isa::Avx512) => Isa::Avx2,
            _ => best,
        }
    })
}

fn detect() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return Isa::Avx512;
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return Isa::Avx2;
        }
    }
    Isa::Generic
}

/// A weight matrix `[k, n]` (as in `y = x · W`) packed into `n / NR` panels of `k × NR` floats.
pub struct Packed {
    pub k: usize,
    pub n: usize,
    data: Vec<f32>,
}

impl Packed {
    /// From a PyTorch `Linear` weight, `[n, k]` row-major (`y = x · Wᵀ`).
    pub fn from_linear(w: &[f32], n: usize, k: usize) -> Result<Self> {
        if !n.is_multiple_of(NR) || w.len() != n * k {
            return Err(Error::internal(format!(
                "linear weight of {} values cannot be packed as [{n}, {k}]",
                w.len()
            )));
        }
        let mut data = vec![0f32; n * k];
        for j in 0..n / NR {
            let panel = &mut data[j * k * NR..(j + 1) * k * NR];
            for jj in 0..NR {
                let row = &w[(j * NR + jj) * k..(j * NR + jj + 1) * k];
                for (p, &v) in row.iter().enumerate() {
                    panel[p * NR + jj] = v;
                }
            }
        }
        Ok(Packed { k, n, data })
    }

    pub fn as_ptr(&self) -> *const f32 {
        self.data.as_ptr()
    }
}

/// `C[m × n] = A[m × k] · B (+ bias) (+ C if accumulate)`.
///
/// # Safety
/// `a` is readable for rows `0..m` of `k` floats at stride `lda`; `b` holds `n / NR` packed panels
/// of `k × NR` floats; `c` is writable (and readable if `accumulate`) for rows `0..m` of `n`
/// floats at stride `ldc`; `bias` is null or readable for `n` floats; `n % NR == 0`.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm(
    isa: Isa,
    m: usize,
    k: usize,
    n: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    bias: *const f32,
    accumulate: bool,
) {
    debug_assert!(n.is_multiple_of(NR));
    let mr = match isa {
        Isa::Avx512 => MR512,
        Isa::Avx2 => MR256,
        Isa::Generic => MR_GENERIC,
    };
    let mut i0 = 0;
    while i0 < m {
        let i1 = (i0 + MC).min(m);
        for j in 0..n / NR {
            let panel = b.add(j * k * NR);
            let bias_j = if bias.is_null() {
                bias
            } else {
                bias.add(j * NR)
            };
            let mut i = i0;
            while i < i1 {
                let rows = mr.min(i1 - i);
                let t = Tile {
                    k,
                    a: a.add(i * lda),
                    lda,
                    b: panel,
                    c: c.add(i * ldc + j * NR),
                    ldc,
                    bias: bias_j,
                    accumulate,
                };
                match isa {
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx512 => x86::tile512(rows, &t),
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx2 => x86::tile256(rows, &t),
                    _ => tile_generic(rows, &t),
                }
                i += rows;
            }
        }
        i0 = i1;
    }
}

/// One micro-tile: `rows` rows of A against one `k × NR` panel.
struct Tile {
    k: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    bias: *const f32,
    accumulate: bool,
}

unsafe fn tile_generic(rows: usize, t: &Tile) {
    for r in 0..rows {
        let mut acc = [0f32; NR];
        if !t.bias.is_null() {
            for (jj, v) in acc.iter_mut().enumerate() {
                *v = *t.bias.add(jj);
            }
        }
        let arow = t.a.add(r * t.lda);
        for p in 0..t.k {
            let av = *arow.add(p);
            let brow = std::slice::from_raw_parts(t.b.add(p * NR), NR);
            for (v, &bv) in acc.iter_mut().zip(brow) {
                *v += av * bv;
            }
        }
        let crow = t.c.add(r * t.ldc);
        for (jj, v) in acc.iter().enumerate() {
            let dst = crow.add(jj);
            *dst = if t.accumulate { *dst + v } else { *v };
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Tile, NR};
    use std::arch::x86_64::*;

    pub(super) unsafe fn tile512(rows: usize, t: &Tile) {
        match rows {
            14 => k512::<14>(t),
            13 => k512::<13>(t),
            12 => k512::<12>(t),
            11 => k512::<11>(t),
            10 => k512::<10>(t),
            9 => k512::<9>(t),
            8 => k512::<8>(t),
            7 => k512::<7>(t),
            6 => k512::<6>(t),
            5 => k512::<5>(t),
            4 => k512::<4>(t),
            3 => k512::<3>(t),
            2 => k512::<2>(t),
            _ => k512::<1>(t),
        }
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn k512<const R: usize>(t: &Tile) {
        let mut acc = [[_mm512_setzero_ps(); 2]; R];
        if !t.bias.is_null() {
            let b0 = _mm512_loadu_ps(t.bias);
            let b1 = _mm512_loadu_ps(t.bias.add(16));
            for row in acc.iter_mut() {
                *row = [b0, b1];
            }
        }
        if t.accumulate {
            for (r, row) in acc.iter_mut().enumerate() {
                let c = t.c.add(r * t.ldc);
                row[0] = _mm512_add_ps(row[0], _mm512_loadu_ps(c));
                row[1] = _mm512_add_ps(row[1], _mm512_loadu_ps(c.add(16)));
            }
        }
        let mut b = t.b;
        let mut a = t.a;
        for _ in 0..t.k {
            let b0 = _mm512_loadu_ps(b);
            let b1 = _mm512_loadu_ps(b.add(16));
            for (r, row) in acc.iter_mut().enumerate() {
                let av = _mm512_set1_ps(*a.add(r * t.lda));
                row[0] = _mm512_fmadd_ps(av, b0, row[0]);
                row[1] = _mm512_fmadd_ps(av, b1, row[1]);
            }
            b = b.add(NR);
            a = a.add(1);
        }
        for (r, row) in acc.iter().enumerate() {
            let c = t.c.add(r * t.ldc);
            _mm512_storeu_ps(c, row[0]);
            _mm512_storeu_ps(c.add(16), row[1]);
        }
    }

    pub(super) unsafe fn tile256(rows: usize, t: &Tile) {
        for half in 0..2 {
            let h = Tile {
                k: t.k,
                a: t.a,
                lda: t.lda,
                b: t.b.add(half * 16),
                c: t.c.add(half * 16),
                ldc: t.ldc,
                bias: if t.bias.is_null() {
                    t.bias
                } else {
                    t.bias.add(half * 16)
                },
                accumulate: t.accumulate,
            };
            match rows {
                6 => k256::<6>(&h),
                5 => k256::<5>(&h),
                4 => k256::<4>(&h),
                3 => k256::<3>(&h),
                2 => k256::<2>(&h),
                _ => k256::<1>(&h),
            }
        }
    }

    /// 16 columns of a 32-wide panel.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn k256<const R: usize>(t: &Tile) {
        let mut acc = [[_mm256_setzero_ps(); 2]; R];
        if !t.bias.is_null() {
            let b0 = _mm256_loadu_ps(t.bias);
            let b1 = _mm256_loadu_ps(t.bias.add(8));
            for row in acc.iter_mut() {
                *row = [b0, b1];
            }
        }
        if t.accumulate {
            for (r, row) in acc.iter_mut().enumerate() {
                let c = t.c.add(r * t.ldc);
                row[0] = _mm256_add_ps(row[0], _mm256_loadu_ps(c));
                row[1] = _mm256_add_ps(row[1], _mm256_loadu_ps(c.add(8)));
            }
        }
        let mut b = t.b;
        let mut a = t.a;
        for _ in 0..t.k {
            let b0 = _mm256_loadu_ps(b);
            let b1 = _mm256_loadu_ps(b.add(8));
            for (r, row) in acc.iter_mut().enumerate() {
                let av = _mm256_set1_ps(*a.add(r * t.lda));
                row[0] = _mm256_fmadd_ps(av, b0, row[0]);
                row[1] = _mm256_fmadd_ps(av, b1, row[1]);
            }
            b = b.add(NR);
            a = a.add(1);
        }
        for (r, row) in acc.iter().enumerate() {
            let c = t.c.add(r * t.ldc);
            _mm256_storeu_ps(c, row[0]);
            _mm256_storeu_ps(c.add(8), row[1]);
        }
    }
}

/// Defines a safe function whose body is compiled three times (AVX-512, AVX2+FMA, baseline) and
/// dispatched on [`isa`]; the body is plain Rust that LLVM vectorises.
macro_rules! multiversion {
    ($(#[$m:meta])* pub fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $body:block) => {
        $(#[$m])*
        pub fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn imp($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
                unsafe fn v4($($arg: $ty),*) { imp($($arg),*) }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn v3($($arg: $ty),*) { imp($($arg),*) }
                match isa() {
                    // SAFETY: the CPU supports the features these versions were compiled for.
                    Isa::Avx512 => return unsafe { v4($($arg),*) },
                    Isa::Avx2 => return unsafe { v3($($arg),*) },
                    Isa::Generic => {}
                }
            }
            imp($($arg),*)
        }
    };
}

const LANES: usize = 16;

#[inline(always)]
fn lane_sum(x: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let mut it = x.chunks_exact(LANES);
    for c in &mut it {
        for i in 0..LANES {
            acc[i] += c[i];
        }
    }
    let mut s = 0.0;
    for v in acc {
        s += v;
    }
    for v in it.remainder() {
        s += v;
    }
    s
}

#[inline(always)]
fn lane_max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let mut it = x.chunks_exact(LANES);
    for c in &mut it {
        for i in 0..LANES {
            acc[i] = if c[i] > acc[i] { c[i] } else { acc[i] };
        }
    }
    let mut m = f32::NEG_INFINITY;
    for v in acc.iter().chain(it.remainder()) {
        if *v > m {
            m = *v;
        }
    }
    m
}

/// `e^x` to a few ulp for x in [-87, 88] (clamped outside): `2^n · e^f` with `n = round(x / ln 2)`
/// and `f = x - n ln 2` (Cody-Waite, two-part ln 2) in [-ln 2 / 2, ln 2 / 2], `e^f` by Taylor.
#[inline(always)]
pub fn exp_fast(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 · 2^23: adding it rounds to an integer
    let x = if x < -87.0 { -87.0 } else { x };
    let x = if x > 88.0 { 88.0 } else { x };
    let r = x * std::f32::consts::LOG2_E + MAGIC;
    let n = r - MAGIC;
    let f = x - n * 0.693_145_75 - n * 1.428_606_8e-6;
    let p = 1.388_888_9e-3;
    let p = p * f + 8.333_334e-3;
    let p = p * f + 4.166_666_8e-2;
    let p = p * f + 0.166_666_67;
    let p = p * f + 0.5;
    let p = p * f + 1.0;
    let p = p * f + 1.0;
    let ni = (r.to_bits() as i32).wrapping_sub(0x4B40_0000);
    f32::from_bits((p.to_bits() as i32).wrapping_add(ni << 23) as u32)
}

/// `erf(x)`, Abramowitz & Stegun 7.1.26 (absolute error below 1.5e-7 before rounding).
#[inline(always)]
pub fn erf_fast(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = ((((1.061_405_4 * t - 1.453_152) * t + 1.421_413_8) * t - 0.284_496_74) * t
        + 0.254_829_6)
        * t;
    let y = 1.0 - poly * exp_fast(-a * a);
    f32::from_bits(y.to_bits() | (x.to_bits() & 0x8000_0000))
}

multiversion! {
    /// Exact (erf) GELU in place: `x · ½ · (1 + erf(x / √2))`.
    pub fn gelu_inplace(x: &mut [f32]) {
        for v in x.iter_mut() {
            let u = *v;
            *v = 0.5 * u * (1.0 + erf_fast(u * std::f32::consts::FRAC_1_SQRT_2));
        }
    }
}

multiversion! {
    /// Softmax of one row in place.
    pub fn softmax_inplace(x: &mut [f32]) {
        let m = lane_max(x);
        for v in x.iter_mut() {
            *v = exp_fast(*v - m);
        }
        let inv = 1.0 / lane_sum(x);
        for v in x.iter_mut() {
            *v *= inv;
        }
    }
}

multiversion! {
    /// LayerNorm of one row in place.
    pub fn layer_norm_inplace(x: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
        let n = x.len() as f32;
        let mean = lane_sum(x) / n;
        for v in x.iter_mut() {
            *v -= mean;
        }
        let mut acc = [0f32; LANES];
        let mut it = x.chunks_exact(LANES);
        for c in &mut it {
            for i in 0..LANES {
                acc[i] += c[i] * c[i];
            }
        }
        let mut ss = 0.0;
        for v in acc {
            ss += v;
        }
        for v in it.remainder() {
            ss += v * v;
        }
        let inv = 1.0 / (ss / n + eps).sqrt();
        for ((v, g), b) in x.iter_mut().zip(gamma).zip(beta) {
            *v = *v * inv * g + b;
        }
    }
}

#[inline(always)]
fn lane_min(x: &[f32]) -> f32 {
    let mut acc = [f32::INFINITY; LANES];
    let mut it = x.chunks_exact(LANES);
    for c in &mut it {
        for i in 0..LANES {
            acc[i] = if c[i] < acc[i] { c[i] } else { acc[i] };
        }
    }
    let mut m = f32::INFINITY;
    for v in acc.iter().chain(it.remainder()) {
        if *v < m {
            m = *v;
        }
    }
    m
}

multiversion! {
    /// Quantizes one row to uint8 with its own scale and zero point, 0 exactly representable:
    /// `x ≈ scale · (u − zero)`. Writes `q[..x.len()]` and `params = (scale, zero)`; an all-zero
    /// (or non-finite) row gives zeros with scale 1.
    pub fn quantize_row_u8(x: &[f32], q: &mut [u8], params: &mut (f32, i32)) {
        let lo = lane_min(x).min(0.0);
        let hi = lane_max(x).max(0.0);
        let range = hi - lo;
        if !(range > 0.0 && range.is_finite()) {
            q.iter_mut().for_each(|u| *u = 0);
            *params = (1.0, 0);
            return;
        }
        let scale = range / 255.0;
        let inv = 1.0 / scale;
        let zero = (-lo * inv).round_ties_even().clamp(0.0, 255.0);
        // Rounding by adding 1.5 · 2^23 (the integer lands in the low mantissa bits) keeps the
        // loop to float adds and a bit cast, which vectorise (a float-to-int `as` and
        // `round_ties_even` did not: the loop ran scalar).
        const MAGIC: f32 = 12_582_912.0;
        for (u, v) in q.iter_mut().zip(x) {
            let t = *v * inv + zero;
            let t = if t < 0.0 { 0.0 } else { t };
            let t = if t > 255.0 { 255.0 } else { t };
            *u = (t + MAGIC).to_bits() as u8;
        }
        *params = (scale, zero as i32);
    }
}

multiversion! {
    /// `dst += src`.
    pub fn add_inplace(dst: &mut [f32], src: &[f32]) {
        for (d, s) in dst.iter_mut().zip(src) {
            *d += s;
        }
    }
}

/// L2-normalises `v` in place. Returns false (and leaves `v` alone) if its norm is zero or not
/// finite.
pub fn l2_normalize(v: &mut [f32]) -> bool {
    let norm = v
        .iter()
        .map(|x| f64::from(*x) * f64::from(*x))
        .sum::<f64>()
        .sqrt();
    if !norm.is_finite() || norm <= f64::MIN_POSITIVE {
        return false;
    }
    let inv = (1.0 / norm) as f32;
    for x in v.iter_mut() {
        *x *= inv;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(m: usize, k: usize, n: usize, a: &[f32], w: &[f32], bias: &[f32]) -> Vec<f32> {
        let mut c = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = f64::from(bias[j]);
                for p in 0..k {
                    s += f64::from(a[i * k + p]) * f64::from(w[j * k + p]);
                }
                c[i * n + j] = s as f32;
            }
        }
        c
    }

    #[test]
    fn gemm_matches_naive_on_every_isa() {
        let (m, k, n) = (61, 37, 64);
        let a: Vec<f32> = (0..m * k)
            .map(|i| ((i * 7919) % 97) as f32 / 97.0 - 0.5)
            .collect();
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i * 104729) % 89) as f32 / 89.0 - 0.5)
            .collect();
        let bias: Vec<f32> = (0..n).map(|i| i as f32 * 0.01).collect();
        let want = naive(m, k, n, &a, &w, &bias);
        let packed = Packed::from_linear(&w, n, k).unwrap();
        for isa in [detect(), Isa::Avx2, Isa::Generic] {
            if isa == Isa::Avx2 && detect() == Isa::Generic {
                continue;
            }
            let mut c = vec![1f32; m * n];
            unsafe {
                gemm(
                    isa,
                    m,
                    k,
                    n,
                    a.as_ptr(),
                    k,
                    packed.as_ptr(),
                    c.as_mut_ptr(),
                    n,
                    bias.as_ptr(),
                    true,
                );
            }
            for (x, y) in c.iter().zip(&want) {
                assert!((x - (y + 1.0)).abs() < 1e-4, "{isa:?}: {x} vs {}", y + 1.0);
            }
        }
    }

    #[test]
    fn fast_math_is_accurate() {
        for i in -2000..=2000 {
            let x = i as f32 * 0.01;
            let e = exp_fast(x);
            assert!(
                ((e - x.exp()) / x.exp()).abs() < 1e-6,
                "exp({x}): {e} vs {}",
                x.exp()
            );
            let want = libm_erf(f64::from(x));
            let got = f64::from(erf_fast(x));
            assert!((got - want).abs() < 5e-7, "erf({x}): {got} vs {want}");
        }
        assert!(exp_fast(-1000.0) >= 0.0 && exp_fast(-1000.0) < 1e-37);
        let mut row = vec![0.0, 1.0, 2.0, -1e30];
        softmax_inplace(&mut row);
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert_eq!(row[3], 0.0_f32.max(row[3]));
    }

    /// erf by its Taylor series / continued fraction in f64, for checking.
    fn libm_erf(x: f64) -> f64 {
        if x.abs() > 6.0 {
            return x.signum();
        }
        if x.abs() < 2.5 {
            let mut sum = 0.0;
            let mut term = x;
            let mut n = 0.0;
            while term.abs() > 1e-17 {
                sum += term / (2.0 * n + 1.0);
                n += 1.0;
                term *= -x * x / n;
            }
            return sum * 2.0 / std::f64::consts::PI.sqrt();
        }
        // erfc continued fraction for larger |x|
        let a = x.abs();
        let mut f = 0.0;
        for k in (1..60).rev() {
            f = (k as f64 / 2.0) / (a + f);
        }
        let erfc = (-a * a).exp() / std::f64::consts::PI.sqrt() / (a + f);
        (1.0 - erfc) * x.signum()
    }
}
