//! Structure-aware chunking: blocks from the extractor are packed into chunks of about
//! `target_words` words. A heading always starts a new chunk and sets the heading path that
//! chunks under it carry; paragraphs, list items and table rows are kept whole when they fit,
//! long ones are split at sentence boundaries (then at word windows). Consecutive chunks of the
//! same section overlap by `overlap_words` words.

use super::extract::Block;

#[derive(Debug, Clone, Copy)]
pub struct ChunkConfig {
    pub target_words: usize,
    pub overlap_words: usize,
    /// Upper bound on chunks per document.
    pub max_chunks: usize,
}

impl Default for ChunkConfig {
    fn default() -> Self {
        ChunkConfig {
            target_words: 180,
            overlap_words: 30,
            max_chunks: 50_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Headings from the top of the document to this chunk, joined with " > ".
    pub heading_path: String,
    pub text: String,
    pub words: usize,
}

struct Builder<'a> {
    cfg: &'a ChunkConfig,
    out: Vec<Chunk>,
    path: String,
    buf: Vec<String>,
    words: usize,
}

impl Builder<'_> {
    /// Emits the buffer as a chunk. With `overlap`, the tail of the emitted chunk starts the
    /// next one.
    fn flush(&mut self, overlap: bool) {
        if self.buf.is_empty() {
            return;
        }
        let text = self.buf.join("\n");
        let words = self.words;
        self.buf.clear();
        self.words = 0;
        if overlap && self.cfg.overlap_words > 0 {
            let ws: Vec<&str> = text.split_whitespace().collect();
            let take = self.cfg.overlap_words.min(ws.len() / 2);
            if take > 0 {
                self.buf.push(ws[ws.len() - take..].join(" "));
                self.words = take;
            }
        }
        self.out.push(Chunk {
            heading_path: self.path.clone(),
            text,
            words,
        });
    }

    fn push_unit(&mut self, unit: String) {
        let n = unit.split_whitespace().count();
        if n == 0 {
            return;
        }
        if self.words > 0 && self.words + n > self.cfg.target_words {
            self.flush(true);
            // The overlap alone never makes a chunk: if the unit still overflows, start clean.
            if self.words + n > self.cfg.target_words {
                self.buf.clear();
                self.words = 0;
            }
        }
        self.buf.push(unit);
        self.words += n;
    }
}

/// Splits text longer than `max` words at sentence ends, then into word windows.
fn split_long(text: &str, max: usize) -> Vec<String> {
    if text.split_whitespace().count() <= max {
        return vec![text.to_string()];
    }
    let mut sentences = Vec::new();
    let mut start = 0;
    let bytes = text.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if matches!(b, b'.' | b'!' | b'?') && bytes.get(i + 1).is_some_and(|c| *c == b' ') {
            sentences.push(&text[start..=i]);
            start = i + 1;
        }
    }
    if start < text.len() {
        sentences.push(&text[start..]);
    }
    let mut out = Vec::new();
    for s in sentences {
        let words: Vec<&str> = s.split_whitespace().collect();
        if words.is_empty() {
            continue;
        }
        for w in words.chunks(max) {
            out.push(w.join(" "));
        }
    }
    out
}

/// Cuts blocks into chunks.
pub fn chunk(blocks: &[Block], cfg: &ChunkConfig) -> Vec<Chunk> {
    let mut b = Builder {
        cfg,
        out: Vec::new(),
        path: String::new(),
        buf: Vec::new(),
        words: 0,
    };
    let mut stack: Vec<(u8, String)> = Vec::new();
    for block in blocks {
        if b.out.len() >= cfg.max_chunks {
            break;
        }
        match block {
            Block::Heading { level, text } => {
                b.flush(false);
                while stack.last().is_some_and(|(l, _)| *l >= *level) {
                    stack.pop();
                }
                stack.push((*level, text.clone()));
                b.path = stack
                    .iter()
                    .map(|(_, t)| t.as_str())
                    .collect::<Vec<_>>()
                    .join(" > ");
            }
            Block::Para(t) | Block::Code(t) | Block::Row(t) => {
                for unit in split_long(t, cfg.target_words) {
                    b.push_unit(unit);
                }
            }
            Block::ListItem(t) => {
                for unit in split_long(&format!("- {t}"), cfg.target_words) {
                    b.push_unit(unit);
                }
            }
        }
    }
    b.flush(false);
    b.out.truncate(cfg.max_chunks);
    b.out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(n: usize, tag: &str) -> String {
        (0..n)
            .map(|i| format!("{tag}{i}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn headings_start_chunks_and_set_the_path() {
        let blocks = vec![
            Block::Heading {
                level: 1,
                text: "Guide".into(),
            },
            Block::Para("intro".into()),
            Block::Heading {
                level: 2,
                text: "Install".into(),
            },
            Block::Para("steps".into()),
            Block::Heading {
                level: 2,
                text: "Usage".into(),
            },
            Block::ListItem("run it".into()),
        ];
        let c = chunk(&blocks, &ChunkConfig::default());
        let got: Vec<(&str, &str)> = c
            .iter()
            .map(|c| (c.heading_path.as_str(), c.text.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("Guide", "intro"),
                ("Guide > Install", "steps"),
                ("Guide > Usage", "- run it")
            ]
        );
    }

    #[test]
    fn small_blocks_are_packed_and_long_ones_split_with_overlap() {
        let cfg = ChunkConfig {
            target_words: 50,
            overlap_words: 5,
            max_chunks: 100,
        };
        let small: Vec<Block> = (0..10)
            .map(|i| Block::Para(words(10, &format!("p{i}_"))))
            .collect();
        let c = chunk(&small, &cfg);
        assert!(c.len() >= 2 && c.len() <= 3, "{}", c.len());
        assert!(c.iter().all(|c| c.words <= 50));
        // Overlap: the second chunk starts with the last words of the first.
        let first_tail: Vec<&str> = c[0].text.split_whitespace().rev().take(5).collect();
        assert!(c[1].text.contains(first_tail[0]));

        let long = vec![Block::Para(words(500, "w"))];
        let c = chunk(&long, &cfg);
        assert!(c.len() >= 10, "{}", c.len());
        assert!(
            c.iter().all(|c| c.words <= 50),
            "{:?}",
            c.iter().map(|c| c.words).collect::<Vec<_>>()
        );
        // Every word survives.
        let all: String = c
            .iter()
            .map(|c| c.text.clone())
            .collect::<Vec<_>>()
            .join(" ");
        assert!(all.contains("w0 ") && all.contains("w499"));
    }

    #[test]
    fn sentences_are_split_at_their_ends() {
        let text = format!(
            "{}. {}. {}.",
            words(30, "a"),
            words(30, "b"),
            words(30, "c")
        );
        let parts = split_long(&text, 40);
        assert_eq!(parts.len(), 3);
        assert!(parts[1].starts_with("b0"));
    }

    #[test]
    fn empty_input_gives_no_chunks_and_max_chunks_is_respected() {
        assert!(chunk(&[], &ChunkConfig::default()).is_empty());
        let cfg = ChunkConfig {
            target_words: 5,
            overlap_words: 0,
            max_chunks: 3,
        };
        let c = chunk(&[Block::Para(words(100, "x"))], &cfg);
        assert_eq!(c.len(), 3);
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    /// A block kind and its word count; words are numbered afterwards so each is unique.
    fn blocks() -> impl Strategy<Value = Vec<(u8, usize, bool)>> {
        prop::collection::vec((0u8..5, 0usize..300, any::<bool>()), 0..40)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// Whatever the blocks and sizes: no chunk is empty or over the target, the word count
        /// is right, every body word survives in order (overlap only repeats words), and each
        /// chunk carries the heading path in force where it starts.
        #[test]
        fn chunks_keep_every_word_in_order_within_the_target(
            spec in blocks(),
            target in 1usize..200,
            overlap_pct in 0usize..60,
        ) {
            let cfg = ChunkConfig {
                target_words: target,
                overlap_words: target * overlap_pct / 100,
                max_chunks: usize::MAX,
            };
            let mut n = 0;
            let mut word = |sentence_end: bool| {
                n += 1;
                if sentence_end && n % 7 == 0 { format!("w{n}.") } else { format!("w{n}") }
            };
            let mut input: Vec<Block> = Vec::new();
            let mut body: Vec<String> = Vec::new();
            let mut paths: Vec<String> = Vec::new();
            for (kind, len, ends) in spec {
                let text: Vec<String> = (0..len).map(|_| word(ends)).collect();
                let joined = text.join(" ");
                input.push(match kind {
                    0 => {
                        let level = (len % 4) as u8 + 1;
                        let title = format!("h{}", paths.len());
                        paths.push(title.clone());
                        Block::Heading { level, text: title }
                    }
                    1 => Block::Para(joined),
                    2 => {
                        body.push("-".into());
                        Block::ListItem(joined)
                    }
                    3 => Block::Row(joined),
                    _ => Block::Code(joined),
                });
                if kind != 0 {
                    body.extend(text);
                }
            }
            let chunks = chunk(&input, &cfg);
            let mut flat: Vec<&str> = Vec::new();
            for c in &chunks {
                let words = c.text.split_whitespace().count();
                prop_assert_eq!(words, c.words);
                prop_assert!(words >= 1 && words <= target, "{} words, target {}", words, target);
                for h in c.heading_path.split(" > ").filter(|h| !h.is_empty()) {
                    prop_assert!(paths.iter().any(|p| p == h), "unknown heading {}", h);
                }
                flat.extend(c.text.split_whitespace());
            }
            // `body` is a subsequence of the chunks' words.
            let mut it = flat.iter();
            for w in &body {
                prop_assert!(it.any(|f| f == w), "{} lost or out of order", w);
            }
        }
    }
}
