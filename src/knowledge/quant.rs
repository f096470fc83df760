//! int8 vectors: the stored form of a vector in an int8 space ([`super::vectors`]) and the
//! kernel that scores a float query against it.
//!
//! A vector `v` is stored as `dim` signed bytes `q_i = round(127 · v_i / max|v|)` followed by
//! one little-endian f32 `s = 1 / ‖q‖`, so `s · q` is the unit vector nearest `v` on the grid:
//! the score of a query `x` is `s · Σ x_i q_i`, the cosine of `x` and the stored direction
//! (vectors are L2-normalised, so this is also what f32 storage ranks by). The error against
//! the float cosine is at most `‖s·q − v/‖v‖‖ ≤ √dim · max|v| / (127 ‖v‖)` and in practice a
//! few 1e-4 (see the tests). Quantising a dequantised vector gives back the same bytes, so an
//! export (floats) and an import round-trip exactly.
//!
//! Kernels (`Σ x_i q_i`, f32 query × i8 vector, f32 accumulation), chosen at run time like the
//! embedding kernels (`crate::embed::kernels::isa`, so `ENCLAVE_EMBED_ISA=avx2|generic` forces
//! the fallbacks): AVX-512 (32 bytes per step, widened to 2 × 16 floats), AVX2 + FMA (16 per
//! step) and a portable loop. They differ only by f32 summation order.

use crate::embed::kernels::{isa, Isa};

/// Bytes of the stored form of a `dim`-dimension vector.
pub fn stored_len(dim: usize) -> usize {
    dim + 4
}

/// The stored form of `v` (any length; a zero or non-finite vector stores zeros and scale 0).
pub fn quantize(v: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(stored_len(v.len()));
    let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
    if max == 0.0 || !max.is_finite() {
        out.resize(v.len(), 0);
        out.extend_from_slice(&0f32.to_le_bytes());
        return out;
    }
    let k = 127.0 / max;
    let mut norm2 = 0f64;
    for x in v {
        let q = (x * k).round().clamp(-127.0, 127.0) as i8;
        norm2 += f64::from(q) * f64::from(q);
        out.push(q as u8);
    }
    let scale = if norm2 > 0.0 {
        (1.0 / norm2.sqrt()) as f32
    } else {
        0.0
    };
    out.extend_from_slice(&scale.to_le_bytes());
    out
}

/// The bytes and scale of a stored vector of `dim` dimensions, if `blob` is one.
pub fn parts(blob: &[u8], dim: usize) -> Option<(&[i8], f32)> {
    if blob.len() != stored_len(dim) {
        return None;
    }
    let (bytes, scale) = blob.split_at(dim);
    let scale = f32::from_le_bytes([scale[0], scale[1], scale[2], scale[3]]);
    // SAFETY: i8 and u8 have the same size and alignment; every bit pattern is valid for both.
    let q = unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<i8>(), bytes.len()) };
    Some((q, scale))
}

/// The float vector a stored one stands for (`s · q`, a unit vector).
pub fn dequantize(blob: &[u8], dim: usize) -> Option<Vec<f32>> {
    let (q, s) = parts(blob, dim)?;
    Some(q.iter().map(|x| f32::from(*x) * s).collect())
}

/// The score (cosine) of `query` (its length is the space's dimension) against a stored vector.
pub fn score(query: &[f32], blob: &[u8]) -> Option<f32> {
    let (q, s) = parts(blob, query.len())?;
    Some(dot(query, q) * s)
}

/// `Σ x_i q_i` over the shorter of the two, with the best kernel of this CPU.
pub fn dot(x: &[f32], q: &[i8]) -> f32 {
    match isa() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `isa()` reports AVX-512F only when the CPU has it.
        Isa::Avx512 => unsafe { dot_avx512(x, q) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `isa()` reports AVX2 only when the CPU has AVX2 and FMA.
        Isa::Avx2 => unsafe { dot_avx2(x, q) },
        _ => dot_generic(x, q),
    }
}

/// The portable kernel (also the reference of the tests).
pub fn dot_generic(x: &[f32], q: &[i8]) -> f32 {
    let n = x.len().min(q.len());
    let mut acc = [0f32; 8];
    let mut i = 0;
    while i + 8 <= n {
        for (l, a) in acc.iter_mut().enumerate() {
            *a += x[i + l] * f32::from(q[i + l]);
        }
        i += 8;
    }
    let mut s: f32 = acc.iter().sum();
    while i < n {
        s += x[i] * f32::from(q[i]);
        i += 1;
    }
    s
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2(x: &[f32], q: &[i8]) -> f32 {
    use std::arch::x86_64::*;
    let n = x.len().min(q.len());
    let (xp, qp) = (x.as_ptr(), q.as_ptr());
    let mut acc0 = _mm256_setzero_ps();
    let mut acc1 = _mm256_setzero_ps();
    let mut i = 0;
    // SAFETY (every load): `i + 16 <= n` bytes of `q` and floats of `x` are in bounds.
    while i + 16 <= n {
        let b = unsafe { _mm_loadu_si128(qp.add(i).cast::<__m128i>()) };
        let lo = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b));
        let hi = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128::<8>(b)));
        acc0 = _mm256_fmadd_ps(unsafe { _mm256_loadu_ps(xp.add(i)) }, lo, acc0);
        acc1 = _mm256_fmadd_ps(unsafe { _mm256_loadu_ps(xp.add(i + 8)) }, hi, acc1);
        i += 16;
    }
    let acc = _mm256_add_ps(acc0, acc1);
    let half = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps::<1>(acc));
    let quad = _mm_add_ps(half, _mm_movehl_ps(half, half));
    let one = _mm_add_ss(quad, _mm_shuffle_ps::<1>(quad, quad));
    let mut s = _mm_cvtss_f32(one);
    while i < n {
        s += x[i] * f32::from(q[i]);
        i += 1;
    }
    s
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn dot_avx512(x: &[f32], q: &[i8]) -> f32 {
    use std::arch::x86_64::*;
    let n = x.len().min(q.len());
    let (xp, qp) = (x.as_ptr(), q.as_ptr());
    let mut acc0 = _mm512_setzero_ps();
    let mut acc1 = _mm512_setzero_ps();
    let mut i = 0;
    // SAFETY (every load): `i + 32 <= n` (or `i + 16 <= n` below) elements are in bounds.
    while i + 32 <= n {
        let b0 = unsafe { _mm_loadu_si128(qp.add(i).cast::<__m128i>()) };
        let b1 = unsafe { _mm_loadu_si128(qp.add(i + 16).cast::<__m128i>()) };
        let f0 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(b0));
        let f1 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(b1));
        acc0 = _mm512_fmadd_ps(unsafe { _mm512_loadu_ps(xp.add(i)) }, f0, acc0);
        acc1 = _mm512_fmadd_ps(unsafe { _mm512_loadu_ps(xp.add(i + 16)) }, f1, acc1);
        i += 32;
    }
    if i + 16 <= n {
        let b0 = unsafe { _mm_loadu_si128(qp.add(i).cast::<__m128i>()) };
        let f0 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(b0));
        acc0 = _mm512_fmadd_ps(unsafe { _mm512_loadu_ps(xp.add(i)) }, f0, acc0);
        i += 16;
    }
    let mut s = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
    while i < n {
        s += x[i] * f32::from(q[i]);
        i += 1;
    }
    s
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// A random unit vector of `dim` dimensions (shared by the vector tests of `vectors` and
    /// `ann`).
    pub(crate) fn unit(rng: &mut rand::rngs::StdRng, dim: usize) -> Vec<f32> {
        let v: Vec<f32> = (0..dim).map(|_| rng.random::<f32>() - 0.5).collect();
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.into_iter().map(|x| x / n).collect()
    }

    fn cos(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    type Kernel = fn(&[f32], &[i8]) -> f32;

    /// Every kernel this CPU runs, by name.
    fn kernels() -> Vec<(&'static str, Kernel)> {
        let mut out: Vec<(&'static str, Kernel)> = vec![("generic", dot_generic)];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                // SAFETY: checked just above.
                out.push(("avx2", |x, q| unsafe { dot_avx2(x, q) }));
            }
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: checked just above.
                out.push(("avx512", |x, q| unsafe { dot_avx512(x, q) }));
            }
        }
        out
    }

    #[test]
    fn every_kernel_agrees_with_the_naive_sum_at_every_length() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        for n in (0..80).chain([255, 256, 257, 384, 768, 1536]) {
            let x: Vec<f32> = (0..n).map(|_| rng.random::<f32>() * 2.0 - 1.0).collect();
            let q: Vec<i8> = (0..n).map(|_| rng.random_range(-127i8..=127)).collect();
            let naive: f64 = x
                .iter()
                .zip(&q)
                .map(|(a, b)| f64::from(*a) * f64::from(*b))
                .sum();
            let magnitude: f64 = x
                .iter()
                .zip(&q)
                .map(|(a, b)| (f64::from(*a) * f64::from(*b)).abs())
                .sum();
            for (name, k) in kernels() {
                let got = f64::from(k(&x, &q));
                assert!(
                    (got - naive).abs() <= 1e-5 * magnitude.max(1.0),
                    "{name} at {n}: {got} vs {naive}"
                );
            }
            // Mismatched lengths: the shorter one.
            if n > 1 {
                for (name, k) in kernels() {
                    let short = f64::from(k(&x[..n - 1], &q));
                    let want: f64 = x[..n - 1]
                        .iter()
                        .zip(&q)
                        .map(|(a, b)| f64::from(*a) * f64::from(*b))
                        .sum();
                    assert!((short - want).abs() <= 1e-5 * magnitude.max(1.0), "{name}");
                }
            }
        }
    }

    #[test]
    fn quantized_scores_stay_within_the_bound_of_the_float_cosine() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        for dim in [8, 64, 256, 384, 1024] {
            let mut worst = 0f32;
            for _ in 0..200 {
                let v = unit(&mut rng, dim);
                let x = unit(&mut rng, dim);
                let blob = quantize(&v);
                assert_eq!(blob.len(), stored_len(dim));
                let max = v.iter().fold(0f32, |m, a| m.max(a.abs()));
                let bound = (dim as f32).sqrt() * max / 127.0;
                let err = (score(&x, &blob).expect("score") - cos(&x, &v)).abs();
                assert!(err <= bound, "dim {dim}: error {err} > bound {bound}");
                worst = worst.max(err);
                // The stored direction is a unit vector.
                let d = dequantize(&blob, dim).expect("dequantize");
                let n = d.iter().map(|a| a * a).sum::<f32>().sqrt();
                assert!((n - 1.0).abs() < 1e-5);
            }
            // Typical errors are far below the bound: a few 1e-4 at most from 64 dimensions.
            if dim >= 64 {
                assert!(worst < 2e-3, "dim {dim}: worst error {worst}");
            }
        }
    }

    #[test]
    fn a_dequantized_vector_quantizes_to_the_same_bytes() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for dim in [1, 7, 256, 384] {
            for _ in 0..50 {
                let v: Vec<f32> = (0..dim).map(|_| rng.random::<f32>() * 4.0 - 2.0).collect();
                let blob = quantize(&v);
                let again = quantize(&dequantize(&blob, dim).expect("dequantize"));
                assert_eq!(blob, again);
            }
        }
        // Degenerate vectors store zeros and score 0, never NaN.
        let zero = quantize(&[0.0; 4]);
        assert_eq!(zero, vec![0u8; 8]);
        assert_eq!(score(&[1.0; 4], &zero), Some(0.0));
        assert_eq!(score(&[1.0; 4], &zero[..7]), None);
        let inf = quantize(&[f32::INFINITY, 1.0]);
        assert_eq!(score(&[1.0, 1.0], &inf), Some(0.0));
    }
}
