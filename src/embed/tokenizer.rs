//! BERT uncased WordPiece tokenizer, equivalent to the Hugging Face fast tokenizer that ships with
//! all-MiniLM-L6-v2 (`BertNormalizer` with lowercasing, `BertPreTokenizer`, `WordPiece`).
//!
//! Normalisation, in the reference order: drop NUL, U+FFFD and control/format/unassigned
//! characters; map whitespace to a space; surround CJK ideographs with spaces; NFD and drop
//! non-spacing marks (accent stripping); lowercase. Words are split on whitespace and every
//! punctuation character (ASCII punctuation and Unicode `P*`) is a word of its own. A word of more
//! than 100 characters, or one that cannot be covered by vocabulary pieces, becomes `[UNK]`.
//!
//! The Unicode tables come from the same `unicode_categories` crate the reference uses, so the
//! odd cases (emoji, format characters) agree with it.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use unicode_categories::UnicodeCategories;
use unicode_normalization::UnicodeNormalization;

use crate::error::{Error, Result};

const MAX_WORD_CHARS: usize = 100;

/// A small fast hasher for the vocabulary map (FxHash), keys are not attacker-chosen.
#[derive(Default, Clone, Copy)]
struct FxHasher(u64);

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x51_7c_c1_b7_27_22_0a_95;
        let mut h = self.0;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            h = (h.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(K);
        }
        for &b in chunks.remainder() {
            h = (h.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
        }
        self.0 = h;
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

type FxMap<V> = HashMap<Box<str>, V, BuildHasherDefault<FxHasher>>;

/// WordPiece tokenizer over a BERT vocabulary (`vocab.txt`, one token per line, id = line number).
pub struct Tokenizer {
    /// Word-initial pieces.
    start: FxMap<u32>,
    /// Continuation pieces, stored without their `##` prefix.
    cont: FxMap<u32>,
    /// Longest piece, in bytes, for bounding the greedy search.
    max_piece_bytes: usize,
    vocab_size: usize,
    pub unk: u32,
    pub cls: u32,
    pub sep: u32,
}

impl Tokenizer {
    pub fn from_vocab(vocab: &str) -> Result<Self> {
        let mut start = FxMap::default();
        let mut cont = FxMap::default();
        let mut max_piece_bytes = 1;
        let mut n = 0usize;
        for (id, line) in vocab.lines().enumerate() {
            let id = u32::try_from(id).map_err(|_| Error::internal("vocabulary too large"))?;
            let tok = line.trim_end_matches('\r');
            n += 1;
            if let Some(rest) = tok.strip_prefix("##") {
                if !rest.is_empty() {
                    max_piece_bytes = max_piece_bytes.max(rest.len());
                    cont.entry(rest.into()).or_insert(id);
                    continue;
                }
            }
            max_piece_bytes = max_piece_bytes.max(tok.len());
            start.entry(tok.into()).or_insert(id);
        }
        let special = |name: &str| {
            start
                .get(name)
                .copied()
                .ok_or_else(|| Error::internal(format!("vocabulary lacks {name}")))
        };
        Ok(Tokenizer {
            unk: special("[UNK]")?,
            cls: special("[CLS]")?,
            sep: special("[SEP]")?,
            start,
            cont,
            max_piece_bytes,
            vocab_size: n,
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// Token ids of `text` without special tokens, at most `max_tokens` of them (the first ones).
    pub fn tokenize(&self, text: &str, max_tokens: usize, out: &mut Vec<u32>) {
        let start_len = out.len();
        let limit = start_len.saturating_add(max_tokens);
        if text.is_ascii() {
            // ASCII is invariant under NFD and has no non-spacing marks or CJK: fast path.
            let mut word = String::new();
            for &b in text.as_bytes() {
                if out.len() >= limit {
                    break;
                }
                let c = b as char;
                if matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
                    self.flush(&mut word, out, limit);
                } else if b.is_ascii_control() {
                    // other controls (NUL, VT, FF, DEL...) are dropped by the normaliser
                } else if b.is_ascii_punctuation() {
                    self.flush(&mut word, out, limit);
                    word.push(c);
                    self.flush(&mut word, out, limit);
                } else {
                    word.push(c.to_ascii_lowercase());
                }
            }
            self.flush(&mut word, out, limit);
        } else {
            let normalized = normalize(text);
            let mut word = String::new();
            for c in normalized.chars() {
                if out.len() >= limit {
                    break;
                }
                if c.is_whitespace() {
                    self.flush(&mut word, out, limit);
                } else if is_punctuation(c) {
                    self.flush(&mut word, out, limit);
                    word.push(c);
                    self.flush(&mut word, out, limit);
                } else {
                    word.push(c);
                }
            }
            self.flush(&mut word, out, limit);
        }
        out.truncate(limit);
    }

    /// `[CLS] tokens [SEP]`, truncated to `max_len` ids in all.
    pub fn encode_with_special(&self, text: &str, max_len: usize) -> Vec<u32> {
        let mut ids = Vec::with_capacity(64);
        ids.push(self.cls);
        self.tokenize(text, max_len.saturating_sub(2), &mut ids);
        ids.push(self.sep);
        ids
    }

    fn flush(&self, word: &mut String, out: &mut Vec<u32>, limit: usize) {
        if word.is_empty() {
            return;
        }
        if out.len() < limit {
            self.wordpiece(word, out);
        }
        word.clear();
    }

    /// Greedy longest-match-first WordPiece of one word.
    fn wordpiece(&self, word: &str, out: &mut Vec<u32>) {
        if word.chars().nth(MAX_WORD_CHARS).is_some() {
            out.push(self.unk);
            return;
        }
        let mark = out.len();
        let mut start = 0;
        while start < word.len() {
            let map = if start == 0 { &self.start } else { &self.cont };
            let mut end = (start + self.max_piece_bytes).min(word.len());
            let mut found = None;
            while end > start {
                if word.is_char_boundary(end) {
                    if let Some(&id) = map.get(&word[start..end]) {
                        found = Some(id);
                        break;
                    }
                }
                end -= 1;
            }
            match found {
                Some(id) => {
                    out.push(id);
                    start = end;
                }
                None => {
                    out.truncate(mark);
                    out.push(self.unk);
                    return;
                }
            }
        }
    }
}

/// The `BertNormalizer` steps for non-ASCII text (see the module docs).
fn normalize(text: &str) -> String {
    let mut cleaned = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c == '\0' || c == '\u{fffd}' || is_control(c) {
            continue;
        }
        if is_whitespace(c) {
            cleaned.push(' ');
        } else if is_chinese(c) {
            cleaned.push(' ');
            cleaned.push(c);
            cleaned.push(' ');
        } else {
            cleaned.push(c);
        }
    }
    let mut out = String::with_capacity(cleaned.len());
    for c in cleaned.nfd() {
        if c.is_mark_nonspacing() {
            continue;
        }
        if c.is_ascii() {
            out.push(c.to_ascii_lowercase());
        } else {
            out.extend(c.to_lowercase());
        }
    }
    out
}

fn is_whitespace(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r') || c.is_whitespace()
}

fn is_control(c: char) -> bool {
    match c {
        '\t' | '\n' | '\r' => false,
        _ => c.is_other(),
    }
}

fn is_punctuation(c: char) -> bool {
    c.is_ascii_punctuation() || c.is_punctuation()
}

fn is_chinese(c: char) -> bool {
    matches!(c as u32,
        0x4E00..=0x9FFF
        | 0x3400..=0x4DBF
        | 0x20000..=0x2A6DF
        | 0x2A700..=0x2B73F
        | 0x2B740..=0x2B81F
        | 0x2B820..=0x2CEAF
        | 0xF900..=0xFAFF
        | 0x2F800..=0x2FA1F)
}
