//! A minimal reader for the safetensors format (an 8-byte little-endian header length, a JSON
//! header mapping tensor names to dtype/shape/byte range, then the raw little-endian data).

use std::collections::HashMap;

use serde::Deserialize;

use crate::error::{Error, Result};

#[derive(Deserialize)]
struct Entry {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: [usize; 2],
}

/// A view of one tensor inside the file's bytes.
pub struct TensorView<'a> {
    pub dtype: String,
    pub shape: Vec<usize>,
    pub bytes: &'a [u8],
}

pub struct SafeTensors<'a> {
    tensors: HashMap<String, TensorView<'a>>,
}

impl<'a> SafeTensors<'a> {
    pub fn parse(buf: &'a [u8]) -> Result<Self> {
        let bad = |what: &str| Error::internal(format!("invalid safetensors data: {what}"));
        let len_bytes: [u8; 8] = buf
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| bad("too short"))?;
        let header_len =
            usize::try_from(u64::from_le_bytes(len_bytes)).map_err(|_| bad("header length"))?;
        let header = buf
            .get(8..8usize.saturating_add(header_len))
            .ok_or_else(|| bad("truncated header"))?;
        let data = &buf[8 + header_len..];
        let raw: HashMap<String, serde_json::Value> =
            serde_json::from_slice(header).map_err(|e| bad(&e.to_string()))?;
        let mut tensors = HashMap::new();
        for (name, value) in raw {
            if name == "__metadata__" {
                continue;
            }
            let e: Entry = serde_json::from_value(value).map_err(|e| bad(&e.to_string()))?;
            let [start, end] = e.data_offsets;
            let bytes = data
                .get(start..end)
                .ok_or_else(|| bad(&format!("{name}: data out of range")))?;
            let width = match e.dtype.as_str() {
                "F32" | "I32" => 4,
                "F16" | "BF16" => 2,
                "I8" | "U8" => 1,
                other => return Err(bad(&format!("{name}: unsupported dtype {other}"))),
            };
            let count: usize = e.shape.iter().product();
            if count.checked_mul(width) != Some(bytes.len()) {
                return Err(bad(&format!("{name}: shape does not match its data")));
            }
            tensors.insert(
                name,
                TensorView {
                    dtype: e.dtype,
                    shape: e.shape,
                    bytes,
                },
            );
        }
        Ok(SafeTensors { tensors })
    }

    pub fn get(&self, name: &str) -> Result<&TensorView<'a>> {
        self.tensors
            .get(name)
            .ok_or_else(|| Error::internal(format!("model file lacks tensor {name}")))
    }

    /// A floating-point tensor widened to f32, checked against the expected shape.
    pub fn f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let t = self.get(name)?;
        if t.shape != shape {
            return Err(Error::internal(format!(
                "tensor {name} has shape {:?}, expected {shape:?}",
                t.shape
            )));
        }
        match t.dtype.as_str() {
            "F32" => Ok(t
                .bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()),
            "F16" => Ok(t
                .bytes
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect()),
            other => Err(Error::internal(format!(
                "tensor {name} has dtype {other}, expected a float"
            ))),
        }
    }
}
