//! Structure-aware chunking: blocks from the extractor are packed into chunks of about
//! `target_words` words. A heading always starts a new chunk and sets the heading path that
//! chunks under it carry; paragraphs, list items and table rows are kept whole when they fit,
//! long ones are split at sentence boundaries (then at word windows). Consecutive chunks of the
//! same section overlap by `overlap_words` words.
//!
//! Whatever the text looks like, no chunk's text is longer than `max_chars` characters (a run
//! without whitespace is cut at character boundaries), and no heading in a heading path is
//! longer than [`MAX_HEADING_CHARS`] (a longer heading is cut in the path and its full text
//! goes into the body). The work is linear in the text.

use super::extract::{Block, ExtractError, Interrupt};

const CHECK_EVERY_BLOCKS: usize = 256;

/// Hard maximum length of a chunk's text, in characters.
pub const MAX_CHUNK_CHARS: usize = 8_000;
/// Longest heading kept in a chunk's heading path, in characters.
pub const MAX_HEADING_CHARS: usize = 200;

#[derive(Debug, Clone, Copy)]
pub struct ChunkConfig {
    pub target_words: usize,
    pub overlap_words: usize,
    /// Upper bound on chunks per document.
    pub max_chunks: usize,
    /// Hard upper bound on a chunk's text, in characters (at least 2).
    pub max_chars: usize,
}

impl Default for ChunkConfig {
    fn default() -> Self {
        ChunkConfig {
            target_words: 180,
            overlap_words: 30,
            max_chunks: 50_000,
            max_chars: MAX_CHUNK_CHARS,
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
    /// Characters of the buffer joined with newlines.
    chars: usize,
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
        self.chars = 0;
        if overlap && self.cfg.overlap_words > 0 {
            let ws: Vec<&str> = text.split_whitespace().collect();
            let take = self.cfg.overlap_words.min(ws.len() / 2);
            if take > 0 {
                let tail = ws[ws.len() - take..].join(" ");
                let n = tail.chars().count();
                // The overlap never takes more than half a chunk's room.
                if n <= self.cfg.max_chars / 2 {
                    self.buf.push(tail);
                    self.words = take;
                    self.chars = n;
                }
            }
        }
        self.out.push(Chunk {
            heading_path: self.path.clone(),
            text,
            words,
        });
    }

    /// Adds a unit (at most `target_words` words and `max_chars` characters).
    fn push_unit(&mut self, unit: String) {
        let n = unit.split_whitespace().count();
        if n == 0 {
            return;
        }
        let c = unit.chars().count();
        let fits = |b: &Self| {
            b.words + n <= b.cfg.target_words
                && b.chars + usize::from(b.chars > 0) + c <= b.cfg.max_chars
        };
        if self.words > 0 && !fits(self) {
            self.flush(true);
            // The overlap alone never makes a chunk: if the unit still overflows, start clean.
            if !fits(self) {
                self.buf.clear();
                self.words = 0;
                self.chars = 0;
            }
        }
        self.chars += usize::from(self.chars > 0) + c;
        self.buf.push(unit);
        self.words += n;
    }
}

/// Cuts `word` (no whitespace) into pieces of at most `max` characters.
fn cut_chars(word: &str, max: usize, out: &mut Vec<String>) {
    let mut piece = String::new();
    let mut n = 0;
    for ch in word.chars() {
        if n == max {
            out.push(std::mem::take(&mut piece));
            n = 0;
        }
        piece.push(ch);
        n += 1;
    }
    if !piece.is_empty() {
        out.push(piece);
    }
}

/// Splits text longer than `max` words or `max_chars` characters at sentence ends, then into
/// word windows; a word longer than `max_chars` is cut at character boundaries.
fn split_long(text: &str, max: usize, max_chars: usize) -> Vec<String> {
    let max = max.max(1);
    let max_chars = max_chars.max(2);
    if text.split_whitespace().count() <= max && text.chars().count() <= max_chars {
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
    let mut pieces = Vec::new();
    for s in sentences {
        // Windows of at most `max` words and `max_chars` characters.
        let mut window = String::new();
        let (mut words, mut chars) = (0usize, 0usize);
        for w in s.split_whitespace() {
            pieces.clear();
            let wc = w.chars().count();
            if wc > max_chars {
                cut_chars(w, max_chars, &mut pieces);
            } else {
                pieces.push(w.to_string());
            }
            for p in pieces.drain(..) {
                let pc = if wc > max_chars {
                    p.chars().count()
                } else {
                    wc
                };
                if words > 0 && (words + 1 > max || chars + 1 + pc > max_chars) {
                    out.push(std::mem::take(&mut window));
                    words = 0;
                    chars = 0;
                }
                if words > 0 {
                    window.push(' ');
                    chars += 1;
                }
                window.push_str(&p);
                chars += pc;
                words += 1;
            }
        }
        if words > 0 {
            out.push(window);
        }
    }
    out
}

/// A heading for the path: at most [`MAX_HEADING_CHARS`] characters.
fn path_heading(text: &str) -> (String, bool) {
    match text.char_indices().nth(MAX_HEADING_CHARS) {
        None => (text.to_string(), false),
        Some((at, _)) => (format!("{}…", &text[..at]), true),
    }
}

/// Cuts blocks into chunks.
pub fn chunk(blocks: &[Block], cfg: &ChunkConfig) -> Vec<Chunk> {
    chunk_with(blocks, cfg, &Interrupt::none()).unwrap_or_default()
}

/// Cuts blocks into chunks, checking `stop` every [`CHECK_EVERY_BLOCKS`] blocks.
pub fn chunk_with(
    blocks: &[Block],
    cfg: &ChunkConfig,
    stop: &Interrupt,
) -> Result<Vec<Chunk>, ExtractError> {
    let mut b = Builder {
        cfg,
        out: Vec::new(),
        path: String::new(),
        buf: Vec::new(),
        words: 0,
        chars: 0,
    };
    let mut stack: Vec<(u8, String)> = Vec::new();
    for (i, block) in blocks.iter().enumerate() {
        if i.is_multiple_of(CHECK_EVERY_BLOCKS) {
            stop.check()?;
        }
        if b.out.len() >= cfg.max_chunks {
            break;
        }
        match block {
            Block::Heading { level, text } => {
                b.flush(false);
                while stack.last().is_some_and(|(l, _)| *l >= *level) {
                    stack.pop();
                }
                let (heading, cut) = path_heading(text);
                stack.push((*level, heading));
                b.path = stack
                    .iter()
                    .map(|(_, t)| t.as_str())
                    .collect::<Vec<_>>()
                    .join(" > ");
                if cut {
                    // The path keeps the start of a long heading; the body keeps all of it.
                    for unit in split_long(text, cfg.target_words, cfg.max_chars) {
                        b.push_unit(unit);
                    }
                }
            }
            Block::Para(t) | Block::Code(t) | Block::Row(t) => {
                for unit in split_long(t, cfg.target_words, cfg.max_chars) {
                    b.push_unit(unit);
                }
            }
            Block::ListItem(t) => {
                for unit in split_long(&format!("- {t}"), cfg.target_words, cfg.max_chars) {
                    b.push_unit(unit);
                }
            }
        }
    }
    b.flush(false);
    b.out.truncate(cfg.max_chunks);
    Ok(b.out)
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
            max_chars: MAX_CHUNK_CHARS,
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
        let parts = split_long(&text, 40, MAX_CHUNK_CHARS);
        assert_eq!(parts.len(), 3);
        assert!(parts[1].starts_with("b0"));
    }

    #[test]
    fn text_without_whitespace_is_cut_at_the_character_limit() {
        // 1,000,000 characters, some of them multibyte, with no whitespace at all.
        let run: String = "ab表é".repeat(250_000);
        let c = chunk(&[Block::Para(run.clone())], &ChunkConfig::default());
        assert!(c.len() >= run.chars().count() / MAX_CHUNK_CHARS);
        assert!(c.iter().all(|c| c.text.chars().count() <= MAX_CHUNK_CHARS));
        let joined: String = c.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(joined, run, "nothing lost, nothing repeated");
        // A huge heading: cut in the path, kept in the body.
        let blocks = vec![
            Block::Heading {
                level: 1,
                text: "h".repeat(50_000),
            },
            Block::Para("body".into()),
        ];
        let c = chunk(&blocks, &ChunkConfig::default());
        assert!(c
            .iter()
            .all(|c| c.heading_path.chars().count() <= MAX_HEADING_CHARS + 1));
        let body: String = c.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(body.matches('h').count(), 50_000);
    }

    #[test]
    fn empty_input_gives_no_chunks_and_max_chunks_is_respected() {
        assert!(chunk(&[], &ChunkConfig::default()).is_empty());
        let cfg = ChunkConfig {
            target_words: 5,
            overlap_words: 0,
            max_chunks: 3,
            max_chars: MAX_CHUNK_CHARS,
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
                max_chars: MAX_CHUNK_CHARS,
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

        /// Whatever the text (long runs without whitespace, multibyte characters, sentence
        /// ends, blank space): every chunk is within `max_chars` characters and the target,
        /// and the chunks cover the text: its non-space characters appear in them in order.
        #[test]
        fn chunks_never_exceed_the_character_limit_and_cover_the_text(
            texts in prop::collection::vec(text(), 1..6),
            target in 1usize..60,
            max_chars in 2usize..120,
            overlap in 0usize..10,
        ) {
            let cfg = ChunkConfig {
                target_words: target,
                overlap_words: overlap,
                max_chunks: usize::MAX,
                max_chars,
            };
            let blocks: Vec<Block> = texts.iter().map(|t| Block::Para(t.clone())).collect();
            let chunks = chunk(&blocks, &cfg);
            for c in &chunks {
                let n = c.text.chars().count();
                prop_assert!(n >= 1 && n <= max_chars, "{} chars, max {}", n, max_chars);
                prop_assert!(c.words <= target);
            }
            // Overlap repeats whole words: the input's characters are a subsequence.
            let flat: Vec<char> = chunks
                .iter()
                .flat_map(|c| c.text.chars())
                .filter(|c| !c.is_whitespace())
                .collect();
            let mut it = flat.iter();
            for ch in texts.iter().flat_map(|t| t.chars()).filter(|c| !c.is_whitespace()) {
                prop_assert!(it.any(|f| *f == ch), "{:?} lost or out of order", ch);
            }
            if overlap == 0 {
                prop_assert_eq!(flat.len(), texts.iter().flat_map(|t| t.chars()).filter(|c| !c.is_whitespace()).count());
            }
        }
    }

    /// Text made of long runs without whitespace, multibyte characters, words, sentence ends
    /// and whitespace of several kinds.
    fn text() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop_oneof![
                "[a-z]{1,8}",
                "[a-zé表😀]{50,400}",
                prop::sample::select(vec![" ", "  ", "\n", "\t", ". ", "! ", "? ", "\u{3000}"])
                    .prop_map(str::to_string),
                "\\PC{0,20}",
            ],
            0..60,
        )
        .prop_map(|parts| parts.concat())
    }
}
