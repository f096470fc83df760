//! A document's `embedding` read from its JSON text: the batch route takes thousands of numbers
//! per request, and serde_json's generic path (a visitor call and a growing `Vec` per number)
//! was most of a batch's parse. The numbers are read here with serde_json's own arithmetic
//! (the significand as a `u64`, then one multiplication or division by a power of ten as an
//! `f64`, then `as f32`; integers cast directly), so every vector is bit for bit what
//! `serde_json::from_str::<Vec<f32>>` gives: a document's fingerprint (which hashes its vector)
//! is the same whichever route it came by. Anything else (a non-number, a significand or
//! exponent that overflows, a number out of range) falls back to serde_json itself, with its
//! message. The property test compares both on random arrays.

use std::sync::OnceLock;

use serde::de::{Deserialize, Deserializer, Error as _};
use serde_json::value::RawValue;

/// `#[serde(deserialize_with)]` for an `Option<Vec<f32>>` field.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<f32>>, D::Error> {
    let raw: Option<Box<RawValue>> = Option::deserialize(d)?;
    let Some(raw) = raw else {
        return Ok(None);
    };
    match parse(raw.get().as_bytes()) {
        Some(v) => Ok(Some(v)),
        None => serde_json::from_str::<Vec<f32>>(raw.get())
            .map(Some)
            .map_err(D::Error::custom),
    }
}

/// serde_json's table of powers of ten, the same `f64`s (a correctly rounded parse of `1eN`
/// is the literal `1eN`).
fn pow10() -> &'static [f64; 309] {
    static TABLE: OnceLock<[f64; 309]> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = [1.0f64; 309];
        for (i, p) in t.iter_mut().enumerate() {
            *p = format!("1e{i}").parse().unwrap_or(f64::INFINITY);
        }
        t
    })
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\n' | b'\t' | b'\r')
}

/// The array of numbers in `s`, or `None` when serde_json should read it (anything but a
/// plain array of numbers in range, or `null`, which `deserialize` handled before).
pub fn parse(s: &[u8]) -> Option<Vec<f32>> {
    let mut i = 0;
    let skip = |i: &mut usize| {
        while *i < s.len() && is_space(s[*i]) {
            *i += 1;
        }
    };
    skip(&mut i);
    if s.get(i) != Some(&b'[') {
        return None;
    }
    i += 1;
    let mut out = Vec::with_capacity(s.len() / 8 + 1);
    skip(&mut i);
    if s.get(i) == Some(&b']') {
        i += 1;
        skip(&mut i);
        return (i == s.len()).then_some(out);
    }
    loop {
        skip(&mut i);
        out.push(number(s, &mut i)?);
        skip(&mut i);
        match s.get(i) {
            Some(b',') => i += 1,
            Some(b']') => {
                i += 1;
                skip(&mut i);
                return (i == s.len()).then_some(out);
            }
            _ => return None,
        }
    }
}

/// One JSON number at `s[*i..]`, as serde_json reads it into an `f32`.
fn number(s: &[u8], i: &mut usize) -> Option<f32> {
    let digit = |i: usize| {
        s.get(i)
            .filter(|b| b.is_ascii_digit())
            .map(|b| u64::from(b - b'0'))
    };
    let positive = if s.get(*i) == Some(&b'-') {
        *i += 1;
        false
    } else {
        true
    };
    let mut significand = digit(*i)?;
    *i += 1;
    if significand != 0 {
        while let Some(d) = digit(*i) {
            significand = significand.checked_mul(10)?.checked_add(d)?;
            *i += 1;
        }
    } else if digit(*i).is_some() {
        return None; // a leading zero: not JSON
    }
    let mut exponent: i32 = 0;
    let mut is_float = false;
    if s.get(*i) == Some(&b'.') {
        *i += 1;
        is_float = true;
        digit(*i)?;
        while let Some(d) = digit(*i) {
            significand = significand.checked_mul(10)?.checked_add(d)?;
            exponent -= 1;
            *i += 1;
        }
    }
    if matches!(s.get(*i), Some(b'e' | b'E')) {
        *i += 1;
        is_float = true;
        let positive_exp = match s.get(*i) {
            Some(b'+') => {
                *i += 1;
                true
            }
            Some(b'-') => {
                *i += 1;
                false
            }
            _ => true,
        };
        let mut exp = i32::try_from(digit(*i)?).ok()?;
        *i += 1;
        while let Some(d) = digit(*i) {
            exp = exp.checked_mul(10)?.checked_add(i32::try_from(d).ok()?)?;
            *i += 1;
        }
        exponent = if positive_exp {
            exponent.saturating_add(exp)
        } else {
            exponent.saturating_sub(exp)
        };
    }
    if !is_float {
        // serde_json: a u64, an i64, or -0.0 (and below i64::MIN an f64); each cast to f32.
        return Some(if positive {
            significand as f32
        } else {
            let neg = (significand as i64).wrapping_neg();
            if neg >= 0 {
                -(significand as f64) as f32
            } else {
                neg as f32
            }
        });
    }
    let table = pow10();
    let mut f = significand as f64;
    loop {
        match table.get(exponent.unsigned_abs() as usize) {
            Some(&pow) => {
                if exponent >= 0 {
                    f *= pow;
                    if f.is_infinite() {
                        return None;
                    }
                } else {
                    f /= pow;
                }
                break;
            }
            None => {
                if f == 0.0 {
                    break;
                }
                if exponent >= 0 {
                    return None;
                }
                f /= 1e308;
                exponent += 308;
            }
        }
    }
    Some((if positive { f } else { -f }) as f32)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::parse;

    fn serde(s: &str) -> Option<Vec<u32>> {
        serde_json::from_str::<Vec<f32>>(s)
            .ok()
            .map(|v| v.iter().map(|x| x.to_bits()).collect())
    }

    fn ours(s: &str) -> Option<Vec<u32>> {
        parse(s.as_bytes()).map(|v| v.iter().map(|x| x.to_bits()).collect())
    }

    /// A number as clients write it: f32 or f64 shortest forms, fixed digits, exponents,
    /// integers (small, huge, negative zero), long significands.
    fn number() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<f32>()
                .prop_filter("finite", |x| x.is_finite())
                .prop_map(|x| serde_json::to_string(&x).unwrap_or_default()),
            any::<f32>()
                .prop_filter("finite", |x| x.is_finite())
                .prop_map(|x| serde_json::to_string(&f64::from(x)).unwrap_or_default()),
            (-1.0f64..1.0).prop_map(|x| format!("{x:.9}")),
            (-1.0f64..1.0, -60i32..60).prop_map(|(x, e)| format!("{x:.7}e{e}")),
            (1u64..10, 0u32..400, any::<bool>())
                .prop_map(|(m, e, neg)| format!("{}{m}E-{e}", if neg { "-" } else { "" })),
            (1u64..10, 0u32..60).prop_map(|(m, e)| format!("{m}e+{e}")),
            any::<i64>().prop_map(|x| x.to_string()),
            any::<u64>().prop_map(|x| x.to_string()),
            Just("-0".to_string()),
            Just("0.0".to_string()),
            "-?[1-9][0-9]{15,30}(\\.[0-9]{1,30})?".prop_map(|s| s),
            "0\\.[0-9]{18,40}".prop_map(|s| s),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Any array of numbers reads bit for bit as serde_json reads it; whatever this parser
        /// leaves to serde_json is serde_json's anyway.
        #[test]
        fn arrays_read_as_serde_json_reads_them(
            numbers in proptest::collection::vec(number(), 0..40),
            spaced in any::<bool>(),
        ) {
            let sep = if spaced { " ,\n " } else { "," };
            let text = format!("[{}]", numbers.join(sep));
            if let Some(v) = ours(&text) {
                prop_assert_eq!(Some(v), serde(&text), "{}", text);
            }
        }

        /// Malformed or non-numeric arrays are left to serde_json (which refuses them).
        #[test]
        fn anything_else_is_left_to_serde_json(text in "[\\[\\]0-9eE.,+\\- \"a-z]{0,24}") {
            if let Some(v) = ours(&text) {
                prop_assert_eq!(Some(v), serde(&text), "{}", text);
            }
        }
    }

    #[test]
    fn plain_vectors_are_read_here_and_odd_ones_left_to_serde_json() {
        assert_eq!(ours("[0.5, -1, 2e3, -0]"), serde("[0.5, -1, 2e3, -0]"));
        assert!(ours("[0.5, -1, 2e3, -0]").is_some());
        assert_eq!(ours("[]"), Some(vec![]));
        for odd in [
            "[1e400]", "[\"1\"]", "[1,]", "[01]", "[1.]", "[-]", "[1e]", "{}", "[1] x",
        ] {
            assert_eq!(ours(odd), None, "{odd}");
        }
    }
}
