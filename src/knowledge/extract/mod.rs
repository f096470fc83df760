//! Text extraction: turns an uploaded file into a title and a sequence of structural blocks
//! (headings, paragraphs, list items, table rows, code) that the chunker follows.
//!
//! Every extractor is defensive: sizes are bounded (a DOCX's XML is read through a capped
//! reader, so a zip bomb stops at the cap; a PDF's pages, page content and text are capped),
//! nothing recurses over the input (every walk uses an explicit stack; JSON is refused past
//! serde_json's depth of 128, HTML past [`Limits::max_depth`] × 4 before parsing), the work is
//! linear in the input (a PDF's page tree is walked once), every loop checks an
//! [`Interrupt`] (the document's wall-time deadline, its job's cancellation, the server's
//! shutdown), and the PDF parser runs under `catch_unwind`. A hostile or corrupt file yields
//! an [`ExtractError`] that fails only its own job.

use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The formats Enclave ingests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Markdown,
    Html,
    Pdf,
    Docx,
    Csv,
    Json,
}

impl Format {
    pub fn mime(self) -> &'static str {
        match self {
            Format::Text => "text/plain",
            Format::Markdown => "text/markdown",
            Format::Html => "text/html",
            Format::Pdf => "application/pdf",
            Format::Docx => {
                "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
            }
            Format::Csv => "text/csv",
            Format::Json => "application/json",
        }
    }

    pub fn from_mime(mime: &str) -> Option<Format> {
        let m = mime
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        Some(match m.as_str() {
            "text/plain" => Format::Text,
            "text/markdown" | "text/x-markdown" => Format::Markdown,
            "text/html" | "application/xhtml+xml" => Format::Html,
            "application/pdf" => Format::Pdf,
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document" => {
                Format::Docx
            }
            "text/csv" | "application/csv" => Format::Csv,
            "application/json" | "text/json" => Format::Json,
            _ => return None,
        })
    }

    pub fn from_extension(name: &str) -> Option<Format> {
        let ext = name.rsplit_once('.')?.1.to_ascii_lowercase();
        Some(match ext.as_str() {
            "txt" | "text" | "log" => Format::Text,
            "md" | "markdown" | "mdown" => Format::Markdown,
            "html" | "htm" | "xhtml" => Format::Html,
            "pdf" => Format::Pdf,
            "docx" => Format::Docx,
            "csv" => Format::Csv,
            "json" => Format::Json,
            _ => return None,
        })
    }

    /// Decides the format of an upload from its declared type, its file name and its first
    /// bytes. A declared generic type (`application/octet-stream`) defers to the name and the
    /// content. `None`: not a supported type (415).
    pub fn detect(declared: Option<&str>, file_name: Option<&str>, head: &[u8]) -> Option<Format> {
        let sniffed = if head.starts_with(b"%PDF-") {
            Some(Format::Pdf)
        } else if head.starts_with(b"PK\x03\x04") {
            Some(Format::Docx)
        } else {
            None
        };
        let declared = declared
            .filter(|d| !d.starts_with("application/octet-stream"))
            .and_then(Format::from_mime);
        let by_name = file_name.and_then(Format::from_extension);
        // Binary magic wins over a textual claim; otherwise the name's extension wins over a
        // vague declared type, and a specific declared type over nothing.
        match (sniffed, by_name, declared) {
            (Some(s), _, _) => Some(s),
            (None, Some(n), _) if !matches!(n, Format::Pdf | Format::Docx) => Some(n),
            (None, _, Some(d)) if !matches!(d, Format::Pdf | Format::Docx) => Some(d),
            // Claims to be PDF/DOCX without the magic bytes: let the parser say it is broken.
            (None, Some(n), _) => Some(n),
            (None, None, Some(d)) => Some(d),
            (None, None, None) => {
                if std::str::from_utf8(head).is_ok() || head.is_empty() {
                    Some(Format::Text)
                } else {
                    None
                }
            }
        }
    }
}

/// A structural unit of a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Block {
    Heading {
        level: u8,
        text: String,
    },
    Para(String),
    ListItem(String),
    /// One table row, cells joined.
    Row(String),
    Code(String),
}

#[derive(Debug, Default, Clone)]
pub struct Extracted {
    pub title: Option<String>,
    pub blocks: Vec<Block>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ExtractError(pub String);

fn err(msg: impl Into<String>) -> ExtractError {
    ExtractError(msg.into())
}

/// Most pages of a PDF ingested: a PDF with more fails its job.
pub const MAX_PDF_PAGES: usize = 10_000;
/// Most wall time one document's extraction and chunking may take.
pub const MAX_EXTRACT_TIME: Duration = Duration::from_secs(120);

/// Limits applied while extracting.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest decompressed part of an archive (DOCX), or of all of a PDF's page content
    /// together, read into memory.
    pub max_decompressed: u64,
    /// Largest amount of extracted text kept (bytes of UTF-8).
    pub max_text: usize,
    /// Deepest HTML nesting followed.
    pub max_depth: usize,
    /// Most pages of a PDF.
    pub max_pages: usize,
    /// Most wall time for one document (extraction and chunking).
    pub max_time: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_decompressed: 64 << 20,
            max_text: 32 << 20,
            max_depth: 256,
            max_pages: MAX_PDF_PAGES,
            max_time: MAX_EXTRACT_TIME,
        }
    }
}

/// Why an extraction stopped early: the loops of every extractor (and of the chunker) call
/// [`Interrupt::check`], which fails once the deadline has passed or a flag is raised (the
/// job was cancelled, the server is stopping).
#[derive(Debug, Clone, Default)]
pub struct Interrupt {
    deadline: Option<(Instant, Duration)>,
    flags: Vec<Arc<AtomicBool>>,
}

/// The message of an extraction stopped by its flags (cancelled or shutting down).
pub const INTERRUPTED: &str =
    "the extraction was interrupted (its job was cancelled or the server is stopping)";

impl Interrupt {
    /// Nothing stops the extraction but the limits.
    pub fn none() -> Interrupt {
        Interrupt::default()
    }

    /// A deadline `limit` from now, reported as that limit.
    pub fn within(limit: Duration) -> Interrupt {
        Interrupt {
            deadline: Some((Instant::now() + limit, limit)),
            flags: Vec::new(),
        }
    }

    /// Also stops when `flag` is raised.
    pub fn with_flag(mut self, flag: Arc<AtomicBool>) -> Interrupt {
        self.flags.push(flag);
        self
    }

    /// Whether the deadline has passed (not the flags).
    pub fn timed_out(&self) -> bool {
        self.deadline.is_some_and(|(d, _)| Instant::now() >= d)
    }

    /// Whether a flag is raised.
    pub fn raised(&self) -> bool {
        self.flags.iter().any(|f| f.load(Ordering::Relaxed))
    }

    pub fn check(&self) -> Result<(), ExtractError> {
        if self.raised() {
            return Err(err(INTERRUPTED));
        }
        if let Some((d, limit)) = self.deadline {
            if Instant::now() >= d {
                return Err(err(format!(
                    "the document took longer than the limit of {} s to extract",
                    limit.as_secs_f64()
                )));
            }
        }
        Ok(())
    }
}

/// Extracts `bytes` of `format` within `limits.max_time`.
pub fn extract(format: Format, bytes: &[u8], limits: &Limits) -> Result<Extracted, ExtractError> {
    extract_with(format, bytes, limits, &Interrupt::within(limits.max_time))
}

/// Extracts `bytes` of `format`, stopping when `stop` says so.
pub fn extract_with(
    format: Format,
    bytes: &[u8],
    limits: &Limits,
    stop: &Interrupt,
) -> Result<Extracted, ExtractError> {
    stop.check()?;
    let out = match format {
        Format::Text => plain_text_with(&utf8(bytes)?, stop),
        Format::Markdown => markdown_with(&utf8(bytes)?, stop),
        Format::Html => html_with(&utf8(bytes)?, limits, stop),
        Format::Pdf => pdf_with(bytes, limits, stop),
        Format::Docx => docx_with(bytes, limits, stop),
        Format::Csv => csv_with(bytes, limits, stop),
        Format::Json => json_with(bytes, limits, stop),
    }?;
    let total: usize = out.blocks.iter().map(block_len).sum();
    if total > limits.max_text {
        return Err(too_much_text(limits));
    }
    Ok(out)
}

fn too_much_text(limits: &Limits) -> ExtractError {
    err(format!(
        "the document's text is over the limit of {} MiB",
        limits.max_text >> 20
    ))
}

/// How many loop steps pass between two checks of the [`Interrupt`].
const CHECK_EVERY: usize = 1024;

fn block_len(b: &Block) -> usize {
    match b {
        Block::Heading { text, .. }
        | Block::Para(text)
        | Block::ListItem(text)
        | Block::Row(text)
        | Block::Code(text) => text.len(),
    }
}

fn utf8(bytes: &[u8]) -> Result<String, ExtractError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    match std::str::from_utf8(bytes) {
        Ok(s) => Ok(s.to_string()),
        Err(_) => {
            // Tolerate a few stray bytes; refuse binary data posing as text.
            let lossy = String::from_utf8_lossy(bytes);
            let bad = lossy.chars().filter(|&c| c == '\u{FFFD}').count();
            if bad * 20 > lossy.chars().count().max(1) || bytes.contains(&0) {
                Err(err("the file is not valid UTF-8 text"))
            } else {
                Ok(lossy.into_owned())
            }
        }
    }
}

fn normalize_ws(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Plain text: paragraphs are separated by blank lines.
pub fn plain_text(text: &str) -> Extracted {
    plain_text_with(text, &Interrupt::none()).unwrap_or_default()
}

fn plain_text_with(text: &str, stop: &Interrupt) -> Result<Extracted, ExtractError> {
    let mut blocks = Vec::new();
    let mut cur = String::new();
    for (i, line) in text.lines().enumerate() {
        if i.is_multiple_of(CHECK_EVERY) {
            stop.check()?;
        }
        if line.trim().is_empty() {
            if !cur.trim().is_empty() {
                blocks.push(Block::Para(normalize_ws(&cur)));
            }
            cur.clear();
        } else {
            cur.push_str(line);
            cur.push('\n');
        }
    }
    if !cur.trim().is_empty() {
        blocks.push(Block::Para(normalize_ws(&cur)));
    }
    Ok(Extracted {
        title: None,
        blocks,
    })
}

/// Markdown (CommonMark + tables): headings, paragraphs, list items, table rows, code blocks.
pub fn markdown(text: &str) -> Extracted {
    markdown_with(text, &Interrupt::none()).unwrap_or_default()
}

/// The events of pulldown-cmark are walked in one loop (no recursion here); the parser itself
/// keeps its block nesting in a tree without recursing, and [`CHECK_EVERY`] events the
/// interrupt is checked.
fn markdown_with(text: &str, stop: &Interrupt) -> Result<Extracted, ExtractError> {
    use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};
    let mut blocks = Vec::new();
    let mut title = None;
    let mut buf = String::new();
    let mut row: Vec<String> = Vec::new();
    let mut in_code = false;
    let mut item_depth = 0usize;
    let flush_para = |buf: &mut String, blocks: &mut Vec<Block>, item: bool| {
        let t = normalize_ws(buf);
        if !t.is_empty() {
            blocks.push(if item {
                Block::ListItem(t)
            } else {
                Block::Para(t)
            });
        }
        buf.clear();
    };
    for (i, ev) in
        Parser::new_ext(text, Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH).enumerate()
    {
        if i.is_multiple_of(CHECK_EVERY) {
            stop.check()?;
        }
        match ev {
            Event::Start(Tag::Heading { .. }) => flush_para(&mut buf, &mut blocks, item_depth > 0),
            Event::End(TagEnd::Heading(level)) => {
                let t = normalize_ws(&buf);
                buf.clear();
                if !t.is_empty() {
                    let level = level as u8;
                    if level == 1 && title.is_none() {
                        title = Some(t.clone());
                    }
                    blocks.push(Block::Heading { level, text: t });
                }
            }
            Event::Start(Tag::Item) => {
                flush_para(&mut buf, &mut blocks, item_depth > 0);
                item_depth += 1;
            }
            Event::End(TagEnd::Item) => {
                flush_para(&mut buf, &mut blocks, true);
                item_depth = item_depth.saturating_sub(1);
            }
            Event::End(TagEnd::Paragraph) => flush_para(&mut buf, &mut blocks, item_depth > 0),
            Event::Start(Tag::CodeBlock(_)) => {
                flush_para(&mut buf, &mut blocks, item_depth > 0);
                in_code = true;
            }
            Event::End(TagEnd::CodeBlock) => {
                in_code = false;
                let t = buf.trim().to_string();
                buf.clear();
                if !t.is_empty() {
                    blocks.push(Block::Code(t));
                }
            }
            Event::End(TagEnd::TableCell) => {
                row.push(normalize_ws(&buf));
                buf.clear();
            }
            Event::End(TagEnd::TableHead) | Event::End(TagEnd::TableRow) => {
                let r = row.join(" | ");
                row.clear();
                if !r.trim().is_empty() {
                    blocks.push(Block::Row(r));
                }
            }
            Event::Text(t) | Event::Code(t) => buf.push_str(&t),
            Event::SoftBreak | Event::HardBreak => buf.push(if in_code { '\n' } else { ' ' }),
            _ => {}
        }
    }
    flush_para(&mut buf, &mut blocks, false);
    Ok(Extracted { title, blocks })
}

/// HTML: `<title>`, headings, paragraphs, list items, table rows, `<pre>`; scripts, styles and
/// navigation are skipped.
pub fn html(text: &str, limits: &Limits) -> Result<Extracted, ExtractError> {
    html_with(text, limits, &Interrupt::within(limits.max_time))
}

fn html_with(text: &str, limits: &Limits, stop: &Interrupt) -> Result<Extracted, ExtractError> {
    use scraper::{Html, Node};
    // The HTML parser's tree building is quadratic in the nesting depth: refuse hostile
    // nesting before parsing.
    if html_depth(text, limits.max_depth * 4) > limits.max_depth * 4 {
        return Err(err(format!(
            "the HTML is nested too deeply (more than {} levels)",
            limits.max_depth * 4
        )));
    }
    let doc = Html::parse_document(text);
    let mut title = None;
    let mut blocks = Vec::new();
    // Explicit stack (node, depth): no recursion, so hostile nesting cannot overflow.
    let mut stack = vec![(doc.tree.root(), 0usize)];
    let mut loose = String::new();
    let mut steps = 0usize;
    while let Some((node, depth)) = stack.pop() {
        steps += 1;
        if steps.is_multiple_of(CHECK_EVERY) {
            stop.check()?;
        }
        match node.value() {
            Node::Element(el) => {
                let name = el.name();
                match name {
                    "script" | "style" | "noscript" | "template" | "nav" | "svg" => continue,
                    "title" => {
                        let t = normalize_ws(&collect_text(node, limits.max_depth));
                        if !t.is_empty() && title.is_none() {
                            title = Some(t);
                        }
                        continue;
                    }
                    _ => {}
                }
                let block = match name {
                    "h1" | "h2" | "h3" | "h4" | "h5" | "h6" => {
                        let level = name.as_bytes()[1] - b'0';
                        Some(Block::Heading {
                            level,
                            text: normalize_ws(&collect_text(node, limits.max_depth)),
                        })
                    }
                    "p" | "blockquote" | "dd" | "dt" | "figcaption" | "caption" => Some(
                        Block::Para(normalize_ws(&collect_text(node, limits.max_depth))),
                    ),
                    "li" => Some(Block::ListItem(normalize_ws(&collect_text(
                        node,
                        limits.max_depth,
                    )))),
                    "tr" => {
                        let cells: Vec<String> = node
                            .children()
                            .filter(|c| {
                                matches!(c.value(), Node::Element(e) if e.name() == "td" || e.name() == "th")
                            })
                            .map(|c| normalize_ws(&collect_text(c, limits.max_depth)))
                            .collect();
                        Some(Block::Row(cells.join(" | ")))
                    }
                    "pre" => Some(Block::Code(
                        collect_text(node, limits.max_depth).trim().to_string(),
                    )),
                    _ => None,
                };
                if let Some(b) = block {
                    let t = normalize_ws(&loose);
                    if !t.is_empty() {
                        blocks.push(Block::Para(t));
                    }
                    loose.clear();
                    if block_len(&b) > 0 {
                        blocks.push(b);
                    }
                    continue;
                }
                if depth >= limits.max_depth {
                    // Deeper structure is flattened into loose text.
                    loose.push_str(&collect_text(node, limits.max_depth * 4));
                    loose.push(' ');
                    continue;
                }
                if matches!(
                    name,
                    "div" | "section" | "article" | "br" | "ul" | "ol" | "table"
                ) {
                    let t = normalize_ws(&loose);
                    if !t.is_empty() {
                        blocks.push(Block::Para(t));
                    }
                    loose.clear();
                }
                let children: Vec<_> = node.children().collect();
                for c in children.into_iter().rev() {
                    stack.push((c, depth + 1));
                }
            }
            Node::Text(t) => {
                loose.push_str(t);
                loose.push(' ');
            }
            Node::Document | Node::Fragment => {
                let children: Vec<_> = node.children().collect();
                for c in children.into_iter().rev() {
                    stack.push((c, depth + 1));
                }
            }
            _ => {}
        }
    }
    let t = normalize_ws(&loose);
    if !t.is_empty() {
        blocks.push(Block::Para(t));
    }
    Ok(Extracted { title, blocks })
}

/// An estimate of the element nesting depth of an HTML text (void and self-closing elements
/// do not nest), counted up to a little past `limit`. An end tag closes the innermost open
/// element of its name and those above it; an end tag that closes nothing open is ignored, as
/// the HTML parser ignores it (so `<div></span>` repeated still counts as nesting).
fn html_depth(text: &str, limit: usize) -> usize {
    const VOID: &[&str] = &[
        "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
        "track", "wbr", "p", "li", "td", "tr", "th", "option",
    ];
    let b = text.as_bytes();
    let name_at = |i: usize| -> (String, usize) {
        let end = b[i..]
            .iter()
            .position(|c| !c.is_ascii_alphanumeric())
            .map_or(b.len(), |p| i + p);
        (text[i..end].to_ascii_lowercase(), end)
    };
    let mut open: Vec<String> = Vec::new();
    let mut counts: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut max = 0usize;
    let mut i = 0;
    while let Some(off) = b[i..].iter().position(|&c| c == b'<') {
        i += off + 1;
        match b.get(i) {
            Some(b'/') if b.get(i + 1).is_some_and(u8::is_ascii_alphabetic) => {
                let (name, _) = name_at(i + 1);
                if counts.get(&name).is_some_and(|n| *n > 0) {
                    // Pop up to and including the innermost element of that name.
                    while let Some(top) = open.pop() {
                        if let Some(n) = counts.get_mut(&top) {
                            *n = n.saturating_sub(1);
                        }
                        if top == name {
                            break;
                        }
                    }
                }
            }
            Some(c) if c.is_ascii_alphabetic() => {
                let (name, end) = name_at(i);
                let close = b[end..].iter().position(|&c| c == b'>').map(|p| end + p);
                let self_closing = close.is_some_and(|c| c > 0 && b[c - 1] == b'/');
                if !self_closing && !VOID.contains(&name.as_str()) {
                    *counts.entry(name.clone()).or_insert(0) += 1;
                    open.push(name);
                    max = max.max(open.len());
                    if max > limit {
                        return max;
                    }
                }
            }
            _ => {}
        }
    }
    max
}

fn collect_text(node: ego_tree::NodeRef<'_, scraper::Node>, max_depth: usize) -> String {
    use scraper::Node;
    let mut out = String::new();
    let mut stack = vec![(node, 0usize)];
    while let Some((n, d)) = stack.pop() {
        match n.value() {
            Node::Text(t) => {
                out.push_str(&t[..]);
            }
            Node::Element(e) => {
                if matches!(e.name(), "script" | "style" | "noscript" | "template") || d > max_depth
                {
                    continue;
                }
                if e.name() == "br" {
                    out.push(' ');
                }
                let children: Vec<_> = n.children().collect();
                for c in children.into_iter().rev() {
                    stack.push((c, d + 1));
                }
                if matches!(e.name(), "td" | "th" | "li" | "p" | "div") {
                    out.push(' ');
                }
            }
            _ => {}
        }
    }
    out
}

/// Stack of the thread that parses a PDF. lopdf's parser recurses into nested arrays and
/// dictionaries up to its own limit of 100 levels, which takes about 2 MiB of stack in a debug
/// build: it runs on a thread of its own with room to spare, whatever thread called.
const PDF_STACK: usize = 16 << 20;

/// PDF text layer, page by page. lopdf's parser runs on its own thread ([`PDF_STACK`]): a
/// malformed file that makes it panic fails its job instead of the worker.
pub fn pdf(bytes: &[u8], limits: &Limits) -> Result<Extracted, ExtractError> {
    pdf_with(bytes, limits, &Interrupt::within(limits.max_time))
}

/// The page tree is walked once (lopdf's `extract_text` walks the whole tree again for each
/// call, so page-by-page extraction was quadratic in the page count); a page reached twice
/// (a page tree pointing back at itself or listing a page again) is read once. Caps:
/// [`Limits::max_pages`] pages, [`Limits::max_decompressed`] bytes of page content for the
/// whole document (a content stream shared by many pages counts each time), and
/// [`Limits::max_text`] of text. Each font's encoding is resolved once per document.
fn pdf_with(bytes: &[u8], limits: &Limits, stop: &Interrupt) -> Result<Extracted, ExtractError> {
    let read = || -> Result<Extracted, ExtractError> {
        let doc = lopdf::Document::load_mem(bytes)
            .map_err(|e| err(format!("the PDF could not be parsed: {e}")))?;
        if doc.is_encrypted() {
            return Err(err("the PDF is encrypted"));
        }
        stop.check()?;
        let blocks = pdf_pages(&doc, limits, stop)?;
        let title = doc
            .trailer
            .get(b"Info")
            .ok()
            .and_then(|o| o.as_reference().ok())
            .and_then(|r| doc.get_dictionary(r).ok())
            .and_then(|d| d.get(b"Title").ok())
            .and_then(|t| t.as_str().ok())
            .map(|b| normalize_ws(&String::from_utf8_lossy(b)))
            .filter(|t| !t.is_empty());
        Ok(Extracted { title, blocks })
    };
    let result = std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("enclave-pdf".into())
            .stack_size(PDF_STACK)
            .spawn_scoped(scope, read)
            .map(|t| t.join())
    });
    match result {
        Err(e) => Err(err(format!("cannot start reading the PDF: {e}"))),
        Ok(Ok(r)) => {
            let ex = r?;
            if ex.blocks.is_empty() {
                return Err(err(
                    "the PDF has no text layer (scanned images are not supported)",
                ));
            }
            Ok(ex)
        }
        Ok(Err(_)) => Err(err("the PDF is malformed and could not be read")),
    }
}

fn pdf_pages(
    doc: &lopdf::Document,
    limits: &Limits,
    stop: &Interrupt,
) -> Result<Vec<Block>, ExtractError> {
    use lopdf::content::Content;
    use lopdf::{DecompressError, Encoding, Error as PdfError};
    use std::collections::{HashMap, HashSet};
    let max_content = limits.max_decompressed as usize;
    let content_over = || {
        err(format!(
            "the PDF's page content is over the limit of {} MiB",
            max_content >> 20
        ))
    };
    let mut seen = HashSet::new();
    let mut blocks = Vec::new();
    let mut content_total = 0usize;
    let mut text_total = 0usize;
    // Encodings by font dictionary (its address in the loaded document, which does not move).
    let mut encodings: HashMap<usize, Option<Encoding<'_>>> = HashMap::new();
    for page_id in doc.page_iter() {
        stop.check()?;
        if !seen.insert(page_id) {
            continue;
        }
        if seen.len() > limits.max_pages {
            return Err(err(format!(
                "the PDF has more than {} pages (the limit)",
                limits.max_pages
            )));
        }
        let fonts = doc.get_page_fonts(page_id).unwrap_or_default();
        let content = match doc.get_page_content_with_limit(page_id, max_content - content_total) {
            Ok(c) => c,
            Err(PdfError::Decompress(DecompressError::MemoryLimitExceeded { .. })) => {
                return Err(content_over())
            }
            Err(_) => continue,
        };
        content_total += content.len();
        if content_total > max_content {
            return Err(content_over());
        }
        let Ok(content) = Content::decode(&content) else {
            continue;
        };
        let mut text = String::new();
        let mut font: Option<usize> = None;
        for (i, op) in content.operations.iter().enumerate() {
            if i % CHECK_EVERY == CHECK_EVERY - 1 {
                stop.check()?;
                if text_total + text.len() > limits.max_text {
                    return Err(too_much_text(limits));
                }
            }
            let shown: &[lopdf::Object] = match op.operator.as_str() {
                "Tf" => {
                    font = op
                        .operands
                        .first()
                        .and_then(|o| o.as_name().ok())
                        .and_then(|name| fonts.get(name))
                        .map(|dict| {
                            let key = *dict as *const lopdf::Dictionary as usize;
                            encodings.entry(key).or_insert_with(|| {
                                let max = max_content.saturating_sub(content_total).max(1);
                                dict.get_font_encoding_with_limit(doc, max).ok()
                            });
                            key
                        });
                    continue;
                }
                "Tj" | "TJ" => &op.operands,
                "'" => {
                    newline(&mut text);
                    &op.operands
                }
                "\"" => {
                    newline(&mut text);
                    op.operands.get(2).map(std::slice::from_ref).unwrap_or(&[])
                }
                "T*" | "ET" => {
                    newline(&mut text);
                    continue;
                }
                _ => continue,
            };
            if let Some(Some(enc)) = font.and_then(|k| encodings.get(&k)) {
                show_text(&mut text, enc, shown);
            }
        }
        text_total += text.len();
        if text_total > limits.max_text {
            return Err(too_much_text(limits));
        }
        blocks.extend(plain_text_with(&text, stop)?.blocks);
    }
    Ok(blocks)
}

fn newline(text: &mut String) {
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
}

/// The text of a `Tj`/`TJ` operand list; nested arrays are walked with an explicit stack.
fn show_text(text: &mut String, enc: &lopdf::Encoding<'_>, operands: &[lopdf::Object]) {
    use lopdf::Object;
    // (remaining operands, whether a space follows when they are done: an array's end)
    let mut stack: Vec<(std::slice::Iter<'_, Object>, bool)> = vec![(operands.iter(), false)];
    while let Some((it, _)) = stack.last_mut() {
        match it.next() {
            Some(Object::String(bytes, _)) => {
                let _ = enc.write_to_string(bytes, text);
            }
            Some(Object::Array(inner)) => stack.push((inner.iter(), true)),
            Some(Object::Integer(i)) if *i < -100 => text.push(' '),
            Some(Object::Real(r)) if *r < -100.0 => text.push(' '),
            Some(_) => {}
            None => {
                if let Some((_, true)) = stack.pop() {
                    text.push(' ');
                }
            }
        }
    }
}

/// Reads a zip entry through a capped reader: a zip bomb stops at `max` bytes.
fn read_zip_entry<R: Read + std::io::Seek>(
    zip: &mut zip::ZipArchive<R>,
    name: &str,
    max: u64,
) -> Result<Option<Vec<u8>>, ExtractError> {
    let entry = match zip.by_name(name) {
        Ok(e) => e,
        Err(zip::result::ZipError::FileNotFound) => return Ok(None),
        Err(e) => return Err(err(format!("the DOCX archive is corrupt: {e}"))),
    };
    if entry.size() > max {
        return Err(err(format!(
            "the DOCX expands to more than {} MiB (a zip bomb?)",
            max >> 20
        )));
    }
    let mut out = Vec::new();
    entry
        .take(max + 1)
        .read_to_end(&mut out)
        .map_err(|e| err(format!("the DOCX archive is corrupt: {e}")))?;
    if out.len() as u64 > max {
        return Err(err(format!(
            "the DOCX expands to more than {} MiB (a zip bomb?)",
            max >> 20
        )));
    }
    Ok(Some(out))
}

/// DOCX: paragraphs of `word/document.xml`, `Heading N` / `Title` styles as headings, numbered
/// paragraphs as list items, table rows as rows.
pub fn docx(bytes: &[u8], limits: &Limits) -> Result<Extracted, ExtractError> {
    docx_with(bytes, limits, &Interrupt::within(limits.max_time))
}

/// quick-xml reads events in one loop (it keeps open element names in a list, never
/// recursing), so nesting costs nothing here.
fn docx_with(bytes: &[u8], limits: &Limits, stop: &Interrupt) -> Result<Extracted, ExtractError> {
    use quick_xml::events::Event;
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .map_err(|e| err(format!("the file is not a valid DOCX (zip) archive: {e}")))?;
    let xml = read_zip_entry(&mut zip, "word/document.xml", limits.max_decompressed)?
        .ok_or_else(|| err("the DOCX has no word/document.xml"))?;
    let mut reader = quick_xml::Reader::from_reader(xml.as_slice());
    let mut blocks = Vec::new();
    let mut title = None;
    let mut para = String::new();
    let mut style: Option<String> = None;
    let mut numbered = false;
    let mut in_text = false;
    let mut table_depth = 0usize;
    let mut row_cells: Vec<String> = Vec::new();
    let mut cell = String::new();
    let mut buf = Vec::new();
    let mut steps = 0usize;
    loop {
        steps += 1;
        if steps.is_multiple_of(CHECK_EVERY) {
            stop.check()?;
        }
        buf.clear();
        let ev = reader
            .read_event_into(&mut buf)
            .map_err(|e| err(format!("the DOCX's XML is malformed: {e}")))?;
        match ev {
            Event::Start(e) | Event::Empty(e) => {
                let name = e.name();
                match name.as_ref() {
                    b"w:p" => {
                        para.clear();
                        style = None;
                        numbered = false;
                    }
                    b"w:pStyle" => {
                        style = e
                            .try_get_attribute("w:val")
                            .ok()
                            .flatten()
                            .map(|a| String::from_utf8_lossy(&a.value).into_owned());
                    }
                    b"w:numPr" => numbered = true,
                    b"w:t" => in_text = true,
                    b"w:tab" => para.push('\t'),
                    b"w:br" | b"w:cr" => para.push(' '),
                    b"w:tbl" => table_depth += 1,
                    b"w:tr" => row_cells.clear(),
                    b"w:tc" => cell.clear(),
                    _ => {}
                }
            }
            Event::Text(t) if in_text => {
                let s = t
                    .decode()
                    .map_err(|e| err(format!("the DOCX's XML is malformed: {e}")))?;
                para.push_str(&s);
            }
            Event::GeneralRef(r) if in_text => {
                // Entity references (&amp; ...) inside text.
                let name = String::from_utf8_lossy(&r);
                para.push_str(match name.as_ref() {
                    "amp" => "&",
                    "lt" => "<",
                    "gt" => ">",
                    "quot" => "\"",
                    "apos" => "'",
                    _ => "",
                });
            }
            Event::End(e) => match e.name().as_ref() {
                b"w:t" => in_text = false,
                b"w:p" => {
                    let text = normalize_ws(&para);
                    para.clear();
                    if text.is_empty() {
                        continue;
                    }
                    if table_depth > 0 {
                        if !cell.is_empty() {
                            cell.push(' ');
                        }
                        cell.push_str(&text);
                        continue;
                    }
                    let level = style.as_deref().and_then(heading_level);
                    match level {
                        Some(0) => {
                            if title.is_none() {
                                title = Some(text.clone());
                            }
                            blocks.push(Block::Heading { level: 1, text });
                        }
                        Some(l) => blocks.push(Block::Heading { level: l, text }),
                        None if numbered => blocks.push(Block::ListItem(text)),
                        None => blocks.push(Block::Para(text)),
                    }
                }
                b"w:tc" => row_cells.push(std::mem::take(&mut cell)),
                b"w:tr" => {
                    let r = row_cells.join(" | ");
                    if !r.trim().is_empty() && table_depth == 1 {
                        blocks.push(Block::Row(r));
                    }
                    row_cells.clear();
                }
                b"w:tbl" => table_depth = table_depth.saturating_sub(1),
                _ => {}
            },
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(Extracted { title, blocks })
}

/// `Heading1`..`Heading9` → 1..9, `Title` → 0.
fn heading_level(style: &str) -> Option<u8> {
    let s = style.to_ascii_lowercase().replace(' ', "");
    if s == "title" {
        return Some(0);
    }
    s.strip_prefix("heading")
        .and_then(|n| n.parse::<u8>().ok())
        .filter(|n| (1..=9).contains(n))
}

/// CSV: one row block per record, cells labelled with the header ("name: value; ...").
pub fn csv_table(bytes: &[u8]) -> Result<Extracted, ExtractError> {
    csv_with(bytes, &Limits::default(), &Interrupt::none())
}

fn csv_with(bytes: &[u8], _limits: &Limits, stop: &Interrupt) -> Result<Extracted, ExtractError> {
    let text = utf8(bytes)?;
    let mut rdr = csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(text.as_bytes());
    let headers: Vec<String> = rdr
        .headers()
        .map_err(|e| err(format!("the CSV is malformed: {e}")))?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    let mut blocks = Vec::new();
    for (i, rec) in rdr.records().enumerate() {
        if i.is_multiple_of(CHECK_EVERY) {
            stop.check()?;
        }
        let rec = rec.map_err(|e| err(format!("the CSV is malformed at record {}: {e}", i + 1)))?;
        let cells: Vec<String> = rec
            .iter()
            .enumerate()
            .filter(|(_, v)| !v.trim().is_empty())
            .map(|(j, v)| match headers.get(j).filter(|h| !h.is_empty()) {
                Some(h) => format!("{h}: {}", v.trim()),
                None => v.trim().to_string(),
            })
            .collect();
        if !cells.is_empty() {
            blocks.push(Block::Row(cells.join("; ")));
        }
    }
    Ok(Extracted {
        title: None,
        blocks,
    })
}

/// JSON: every scalar becomes a `path: value` line; each element of a top-level array (or of
/// an array of objects) becomes its own block. serde_json refuses nesting deeper than 128, and
/// the walk over the value uses an explicit stack.
pub fn json(bytes: &[u8]) -> Result<Extracted, ExtractError> {
    json_with(bytes, &Limits::default(), &Interrupt::none())
}

fn json_with(bytes: &[u8], limits: &Limits, stop: &Interrupt) -> Result<Extracted, ExtractError> {
    let v: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| err(format!("the JSON is malformed or too deeply nested: {e}")))?;
    let mut blocks = Vec::new();
    let title = v
        .get("title")
        .and_then(|t| t.as_str())
        .map(normalize_ws)
        .filter(|t| !t.is_empty());
    let mut total = 0usize;
    match &v {
        serde_json::Value::Array(items) => {
            for item in items {
                let mut lines = Vec::new();
                flatten_json(item, &mut lines, limits, stop)?;
                if !lines.is_empty() {
                    let row = lines.join("; ");
                    total += row.len();
                    blocks.push(Block::Row(row));
                }
                if total > limits.max_text {
                    return Err(too_much_text(limits));
                }
            }
        }
        _ => {
            let mut lines = Vec::new();
            flatten_json(&v, &mut lines, limits, stop)?;
            blocks.extend(lines.into_iter().map(Block::Para));
        }
    }
    Ok(Extracted { title, blocks })
}

/// A JSON path as a shared list of keys, joined only when a line is written.
struct JsonPath<'a> {
    parent: Option<std::rc::Rc<JsonPath<'a>>>,
    key: &'a str,
}

fn join_path(mut p: Option<&JsonPath<'_>>) -> String {
    let mut keys = Vec::new();
    while let Some(n) = p {
        keys.push(n.key);
        p = n.parent.as_deref();
    }
    keys.reverse();
    keys.join(".")
}

/// The `path: value` lines of `v`'s scalars, in document order, without recursion. Paths are
/// shared and joined only for a line written, and the lines stop at [`Limits::max_text`]: long
/// paths over many elements cannot make the work grow faster than the input.
fn flatten_json(
    v: &serde_json::Value,
    out: &mut Vec<String>,
    limits: &Limits,
    stop: &Interrupt,
) -> Result<(), ExtractError> {
    use serde_json::Value;
    use std::rc::Rc;
    let mut stack: Vec<(&Value, Option<Rc<JsonPath<'_>>>)> = vec![(v, None)];
    let mut steps = 0usize;
    let mut total = 0usize;
    while let Some((v, path)) = stack.pop() {
        steps += 1;
        if steps.is_multiple_of(CHECK_EVERY) {
            stop.check()?;
        }
        let value = match v {
            Value::Null => continue,
            Value::Bool(b) => b.to_string(),
            Value::Number(n) => n.to_string(),
            Value::String(s) => {
                if s.trim().is_empty() {
                    continue;
                }
                normalize_ws(s)
            }
            Value::Array(a) => {
                for x in a.iter().rev() {
                    stack.push((x, path.clone()));
                }
                continue;
            }
            Value::Object(o) => {
                for (k, x) in o.iter().rev() {
                    let p = JsonPath {
                        parent: path.clone(),
                        key: k.as_str(),
                    };
                    stack.push((x, Some(Rc::new(p))));
                }
                continue;
            }
        };
        let line = label(&join_path(path.as_deref()), &value);
        total += line.len();
        if total > limits.max_text {
            return Err(too_much_text(limits));
        }
        out.push(line);
    }
    Ok(())
}

fn label(path: &str, value: &str) -> String {
    if path.is_empty() {
        value.to_string()
    } else {
        format!("{path}: {value}")
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;

    /// A minimal DOCX with the given `word/document.xml` body.
    pub fn make_docx(body_xml: &str) -> Vec<u8> {
        let mut buf = std::io::Cursor::new(Vec::new());
        {
            let mut z = zip::ZipWriter::new(&mut buf);
            let opts = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated);
            z.start_file("word/document.xml", opts).expect("start");
            write!(
                z,
                r#"<?xml version="1.0" encoding="UTF-8"?><w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body>{body_xml}</w:body></w:document>"#
            )
            .expect("write");
            z.finish().expect("finish");
        }
        buf.into_inner()
    }

    #[test]
    fn detects_formats_by_magic_name_and_type() {
        assert_eq!(
            Format::detect(Some("text/plain"), Some("a.pdf"), b"%PDF-1.4"),
            Some(Format::Pdf)
        );
        assert_eq!(
            Format::detect(None, Some("notes.md"), b"# hi"),
            Some(Format::Markdown)
        );
        assert_eq!(
            Format::detect(Some("application/json"), None, b"{}"),
            Some(Format::Json)
        );
        assert_eq!(
            Format::detect(Some("image/png"), Some("x.png"), b"\x89PNG\0\0"),
            None
        );
        assert_eq!(
            Format::detect(Some("application/octet-stream"), None, b"\x00\x01\xff"),
            None
        );
    }

    #[test]
    fn markdown_keeps_structure() {
        let ex = markdown("# Guide\n\nIntro text.\n\n## Install\n\n- one\n- two\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n```\ncode here\n```\n");
        assert_eq!(ex.title.as_deref(), Some("Guide"));
        assert!(ex.blocks.contains(&Block::Heading {
            level: 2,
            text: "Install".into()
        }));
        assert!(ex.blocks.contains(&Block::ListItem("two".into())));
        assert!(ex.blocks.contains(&Block::Row("1 | 2".into())));
        assert!(ex.blocks.contains(&Block::Code("code here".into())));
    }

    #[test]
    fn html_skips_scripts_and_keeps_headings() {
        let ex = html(
            "<html><head><title>T</title><script>var x=1;</script></head><body><nav>menu</nav><h1>Top</h1><div>loose <b>text</b><p>para</p></div><ul><li>item</li></ul><table><tr><td>a</td><td>b</td></tr></table></body></html>",
            &Limits::default(),
        )
        .expect("html");
        assert_eq!(ex.title.as_deref(), Some("T"));
        let all = format!("{:?}", ex.blocks);
        assert!(!all.contains("var x"), "{all}");
        assert!(!all.contains("menu"), "{all}");
        assert!(ex.blocks.contains(&Block::Heading {
            level: 1,
            text: "Top".into()
        }));
        assert!(ex.blocks.contains(&Block::Para("para".into())));
        assert!(ex.blocks.contains(&Block::Para("loose text".into())));
        assert!(ex.blocks.contains(&Block::ListItem("item".into())));
        assert!(ex.blocks.contains(&Block::Row("a | b".into())));
    }

    #[test]
    fn deeply_nested_html_is_refused_and_moderate_nesting_works() {
        let deep = "<div>".repeat(100_000) + "deep text" + &"</div>".repeat(100_000);
        let e = html(&deep, &Limits::default()).expect_err("hostile nesting");
        assert!(e.0.contains("nested too deeply"), "{e}");
        let ok = "<div><span>".repeat(200) + "deep text" + &"</span></div>".repeat(200);
        let ex = html(&ok, &Limits::default()).expect("moderate nesting");
        assert!(format!("{:?}", ex.blocks).contains("deep text"));
        assert_eq!(
            html_depth("<p>a<br><img src=x/><div><b>x</b></div>", 100),
            2
        );
    }

    #[test]
    fn docx_headings_lists_and_tables() {
        let bytes = make_docx(
            r#"<w:p><w:pPr><w:pStyle w:val="Heading1"/></w:pPr><w:r><w:t>Chapter</w:t></w:r></w:p>
               <w:p><w:r><w:t xml:space="preserve">Hello &amp; welcome</w:t></w:r></w:p>
               <w:p><w:pPr><w:numPr/></w:pPr><w:r><w:t>point</w:t></w:r></w:p>
               <w:tbl><w:tr><w:tc><w:p><w:r><w:t>c1</w:t></w:r></w:p></w:tc><w:tc><w:p><w:r><w:t>c2</w:t></w:r></w:p></w:tc></w:tr></w:tbl>"#,
        );
        let ex = docx(&bytes, &Limits::default()).expect("docx");
        assert_eq!(
            ex.blocks,
            vec![
                Block::Heading {
                    level: 1,
                    text: "Chapter".into()
                },
                Block::Para("Hello & welcome".into()),
                Block::ListItem("point".into()),
                Block::Row("c1 | c2".into()),
            ]
        );
    }

    #[test]
    fn docx_zip_bomb_is_refused() {
        // 200 MB of one repeated paragraph compresses to a few hundred KB.
        let para =
            "<w:p><w:r><w:t>aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa</w:t></w:r></w:p>";
        let body = para.repeat(2_000_000 / para.len() * 100);
        let bytes = make_docx(&body);
        assert!(bytes.len() < 2 << 20, "compressed size {}", bytes.len());
        let limits = Limits {
            max_decompressed: 16 << 20,
            ..Limits::default()
        };
        let e = docx(&bytes, &limits).expect_err("bomb");
        assert!(e.0.contains("zip bomb"), "{e}");
    }

    #[test]
    fn broken_inputs_fail_with_clear_errors() {
        let l = Limits::default();
        assert!(pdf(b"%PDF-1.7\n garbage \x00\x01", &l).is_err());
        assert!(pdf(b"", &l).is_err());
        assert!(docx(b"PK\x03\x04 not really a zip", &l).is_err());
        assert!(docx(b"plain", &l).is_err());
        let deep = "[".repeat(100_000) + &"]".repeat(100_000);
        let e = json(deep.as_bytes()).expect_err("deep json");
        assert!(e.0.contains("nested"), "{e}");
        assert!(json(b"{\"a\": ").is_err());
        assert!(extract(Format::Text, b"\x00\x00\xff\xfe\xfd", &l).is_err());
    }

    #[test]
    fn csv_and_json_become_labelled_rows() {
        let ex = csv_table(b"name,city\nAda,London\nAlan,\n").expect("csv");
        assert_eq!(
            ex.blocks,
            vec![
                Block::Row("name: Ada; city: London".into()),
                Block::Row("name: Alan".into())
            ]
        );
        let ex =
            json(br#"{"title": "Cfg", "server": {"port": 80, "tags": ["a", "b"]}}"#).expect("json");
        assert_eq!(ex.title.as_deref(), Some("Cfg"));
        assert!(ex.blocks.contains(&Block::Para("server.port: 80".into())));
        assert!(ex.blocks.contains(&Block::Para("server.tags: b".into())));
        let ex = json(br#"[{"q": "x"}, {"q": "y"}]"#).expect("array");
        assert_eq!(ex.blocks.len(), 2);
    }
}

/// Adversarial nesting, hostile object graphs and page counts, each on a thread with a small
/// stack (recursion over the input would overflow it and abort the test run).
#[cfg(test)]
pub(crate) mod hostile {
    use super::tests::make_docx;
    use super::*;
    use lopdf::content::{Content, Operation};
    use lopdf::{dictionary, Document, Object, Stream};

    pub const DEEP: usize = 100_000;
    const SMALL_STACK: usize = 256 << 10;

    /// Runs `f` on a thread with a 256 KiB stack.
    pub fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::Builder::new()
            .stack_size(SMALL_STACK)
            .spawn(f)
            .expect("spawn")
            .join()
            .expect("the extractor panicked")
    }

    /// A PDF of `pages` pages, each showing `lines` lines of text in Courier.
    pub fn make_pdf(pages: usize, lines: usize) -> Vec<u8> {
        let mut doc = Document::with_version("1.5");
        let pages_id = doc.new_object_id();
        let font_id = doc.add_object(dictionary! {
            "Type" => "Font", "Subtype" => "Type1", "BaseFont" => "Courier",
        });
        let resources_id = doc.add_object(dictionary! {
            "Font" => dictionary! { "F1" => font_id },
        });
        let mut kids: Vec<Object> = Vec::with_capacity(pages);
        for p in 0..pages {
            let mut ops = vec![
                Operation::new("BT", vec![]),
                Operation::new("Tf", vec!["F1".into(), 10.into()]),
                Operation::new("Td", vec![40.into(), 800.into()]),
            ];
            for l in 0..lines {
                ops.push(Operation::new(
                    "Tj",
                    vec![Object::string_literal(format!(
                        "page{p} line{l} lorem ipsum dolor sit amet"
                    ))],
                ));
                ops.push(Operation::new("T*", vec![]));
            }
            ops.push(Operation::new("ET", vec![]));
            let content = Content { operations: ops }.encode().expect("encode");
            let content_id = doc.add_object(Stream::new(dictionary! {}, content));
            let page_id = doc.add_object(dictionary! {
                "Type" => "Page", "Parent" => pages_id, "Contents" => content_id,
            });
            kids.push(page_id.into());
        }
        doc.objects.insert(
            pages_id,
            Object::Dictionary(dictionary! {
                "Type" => "Pages", "Kids" => kids, "Count" => pages as i64,
                "Resources" => resources_id,
                "MediaBox" => vec![0.into(), 0.into(), 595.into(), 842.into()],
            }),
        );
        let catalog_id = doc.add_object(dictionary! { "Type" => "Catalog", "Pages" => pages_id });
        doc.trailer.set("Root", catalog_id);
        let mut out = Vec::new();
        doc.save_to(&mut out).expect("save");
        out
    }

    /// A one-page PDF whose page tree is rewritten by `edit(doc, pages_id, page_id)`.
    fn pdf_with_tree(
        edit: impl FnOnce(&mut Document, lopdf::ObjectId, lopdf::ObjectId),
    ) -> Vec<u8> {
        let bytes = make_pdf(1, 1);
        let mut doc = Document::load_mem(&bytes).expect("load");
        let pages_id = doc
            .catalog()
            .and_then(|c| c.get(b"Pages"))
            .and_then(Object::as_reference)
            .expect("pages");
        let page_id = doc.page_iter().next().expect("a page");
        edit(&mut doc, pages_id, page_id);
        let mut out = Vec::new();
        doc.save_to(&mut out).expect("save");
        out
    }

    fn text_of(ex: &Extracted) -> String {
        ex.blocks
            .iter()
            .map(|b| format!("{b:?}"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn deep_json_is_refused_on_a_small_stack() {
        on_small_stack(|| {
            for deep in [
                "[".repeat(DEEP) + &"]".repeat(DEEP),
                "{\"a\":".repeat(DEEP) + "1" + &"}".repeat(DEEP),
            ] {
                let e = extract(Format::Json, deep.as_bytes(), &Limits::default())
                    .expect_err("too deep");
                assert!(e.0.contains("nested"), "{e}");
            }
            // At serde_json's own limit the walk works and keeps the full path.
            let ok = "{\"a\":".repeat(120) + "\"leaf\"" + &"}".repeat(120);
            let ex = extract(Format::Json, ok.as_bytes(), &Limits::default()).expect("json");
            assert!(text_of(&ex).contains(&("a.".repeat(119) + "a: leaf")));
        });
    }

    #[test]
    fn json_long_paths_over_long_arrays_stay_linear() {
        // A 100 KB path over 200,000 nulls and numbers: the lines stop at the text limit.
        let key = "k".repeat(1000);
        let inner = (0..200_000).map(|i| {
            if i % 2 == 0 {
                "null".to_string()
            } else {
                i.to_string()
            }
        });
        let doc = format!("{{\"{key}\":",).repeat(100)
            + "["
            + &inner.collect::<Vec<_>>().join(",")
            + "]"
            + &"}".repeat(100);
        let limits = Limits {
            max_text: 1 << 20,
            ..Limits::default()
        };
        let e = on_small_stack(move || extract(Format::Json, doc.as_bytes(), &limits))
            .expect_err("over the text limit");
        assert!(e.0.contains("over the limit"), "{e}");
    }

    #[test]
    fn deep_html_is_refused_on_a_small_stack() {
        on_small_stack(|| {
            for deep in [
                "<div>".repeat(DEEP) + "x",
                "<div>".repeat(DEEP) + "deep text" + &"</div>".repeat(DEEP),
                // End tags of elements that are not open close nothing.
                "<div></span>".repeat(DEEP) + "x",
                "<b><i><u>".repeat(DEEP / 3) + "x",
            ] {
                let e = extract(Format::Html, deep.as_bytes(), &Limits::default())
                    .expect_err("too deep");
                assert!(e.0.contains("nested too deeply"), "{e}");
            }
            // Wide is fine: many siblings.
            let wide = "<div>x</div>".repeat(DEEP);
            extract(Format::Html, wide.as_bytes(), &Limits::default()).expect("wide html");
        });
    }

    #[test]
    fn deep_markdown_is_flattened_on_a_small_stack() {
        on_small_stack(|| {
            for deep in [
                ">".repeat(DEEP) + " quoted",
                "- ".repeat(DEEP) + "item",
                "1. ".repeat(DEEP / 2) + "item",
                "*".repeat(DEEP) + "x" + &"*".repeat(DEEP),
                "[".repeat(DEEP) + "x" + &"](u)".repeat(DEEP),
            ] {
                let ex = extract(Format::Markdown, deep.as_bytes(), &Limits::default())
                    .expect("markdown has no depth limit but must not recurse");
                let total: usize = ex.blocks.iter().map(block_len).sum();
                assert!(total <= deep.len() * 2, "bounded output");
            }
        });
    }

    #[test]
    fn deep_docx_is_read_on_a_small_stack() {
        let body = "<w:p><w:r>".repeat(DEEP) + "<w:t>deep</w:t>" + &"</w:r></w:p>".repeat(DEEP);
        let bytes = make_docx(&body);
        let ex = on_small_stack(move || extract(Format::Docx, &bytes, &Limits::default()))
            .expect("docx");
        assert!(text_of(&ex).contains("deep"));
        let body = "<w:tbl><w:tr><w:tc>".repeat(DEEP / 3) + "<w:p><w:r><w:t>cell</w:t></w:r></w:p>";
        let bytes = make_docx(&body);
        // Unclosed: malformed XML, a clean error.
        let r = on_small_stack(move || extract(Format::Docx, &bytes, &Limits::default()));
        if let Err(e) = r {
            assert!(!e.0.is_empty());
        }
    }

    #[test]
    fn hostile_pdf_object_graphs_fail_cleanly_on_a_small_stack() {
        on_small_stack(|| {
            let l = Limits::default();
            // Deeply nested arrays and dictionaries as objects.
            for body in [
                "[".repeat(DEEP) + &"]".repeat(DEEP),
                "<<".to_string() + &"/A <<".repeat(DEEP) + &">>".repeat(DEEP + 1),
            ] {
                let pdf = format!(
                    "%PDF-1.4\n1 0 obj\n{body}\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n"
                );
                let e = extract(Format::Pdf, pdf.as_bytes(), &l).expect_err("hostile");
                assert!(!e.0.is_empty());
            }
        });
        // A page tree that lists itself and one page many times: the page is read once.
        let bytes = pdf_with_tree(|doc, pages_id, page_id| {
            let mut kids: Vec<Object> = vec![page_id.into(), pages_id.into()];
            kids.extend(std::iter::repeat_n(Object::from(page_id), 5000));
            if let Ok(d) = doc.get_dictionary_mut(pages_id) {
                d.set("Kids", kids);
            }
        });
        let ex = on_small_stack(move || extract(Format::Pdf, &bytes, &Limits::default()))
            .expect("cyclic page tree");
        assert_eq!(text_of(&ex).matches("page0 line0").count(), 1, "{ex:?}");
        // A page whose parent is itself (the resources walk follows /Parent).
        let bytes = pdf_with_tree(|doc, _, page_id| {
            if let Ok(d) = doc.get_dictionary_mut(page_id) {
                d.set("Parent", page_id);
            }
        });
        let r = on_small_stack(move || extract(Format::Pdf, &bytes, &Limits::default()));
        if let Err(e) = r {
            assert!(!e.0.is_empty());
        }
        // A content stream with deeply nested TJ arrays.
        let bytes = pdf_with_tree(|doc, _, page_id| {
            let content = "BT /F1 10 Tf ".to_string()
                + &"[".repeat(DEEP)
                + "(x)"
                + &"]".repeat(DEEP)
                + " TJ [[[(nested)]]] TJ ET";
            let id = doc.add_object(Stream::new(dictionary! {}, content.into_bytes()));
            if let Ok(d) = doc.get_dictionary_mut(page_id) {
                d.set("Contents", id);
            }
        });
        let r = on_small_stack(move || extract(Format::Pdf, &bytes, &Limits::default()));
        if let Err(e) = r {
            assert!(!e.0.is_empty());
        }
    }

    #[test]
    fn pdf_page_and_content_caps_fail_the_document() {
        let bytes = make_pdf(30, 2);
        let limits = Limits {
            max_pages: 20,
            ..Limits::default()
        };
        let e = extract(Format::Pdf, &bytes, &limits).expect_err("too many pages");
        assert!(e.0.contains("more than 20 pages"), "{e}");
        let limits = Limits {
            max_decompressed: 2 << 10,
            ..Limits::default()
        };
        let e = extract(Format::Pdf, &bytes, &limits).expect_err("too much content");
        assert!(e.0.contains("page content is over the limit"), "{e}");
        let ex = extract(Format::Pdf, &bytes, &Limits::default()).expect("pdf");
        let text = text_of(&ex);
        assert!(
            text.contains("page0 line0") && text.contains("page29 line1"),
            "{text}"
        );
    }

    #[test]
    fn an_interrupt_stops_every_format() {
        let flag = Arc::new(AtomicBool::new(true));
        let stop = Interrupt::none().with_flag(flag);
        let l = Limits::default();
        let big_text = "word ".repeat(10_000);
        let inputs: Vec<(Format, Vec<u8>)> = vec![
            (Format::Text, big_text.clone().into_bytes()),
            (Format::Markdown, big_text.clone().into_bytes()),
            (Format::Html, format!("<p>{big_text}</p>").into_bytes()),
            (Format::Pdf, make_pdf(3, 1)),
            (
                Format::Docx,
                make_docx("<w:p><w:r><w:t>x</w:t></w:r></w:p>"),
            ),
            (Format::Csv, b"a,b\n1,2\n".to_vec()),
            (Format::Json, b"{\"a\": 1}".to_vec()),
        ];
        for (format, bytes) in inputs {
            let e = extract_with(format, &bytes, &l, &stop).expect_err("interrupted");
            assert_eq!(e.0, INTERRUPTED, "{format:?}");
        }
        let e = extract_with(Format::Text, b"x", &l, &Interrupt::within(Duration::ZERO))
            .expect_err("past its deadline");
        assert!(e.0.contains("longer than the limit"), "{e}");
    }

    /// Extraction time against page count (not a timed test: prints what it measured).
    /// `cargo test --lib pdf_extraction_scales -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn pdf_extraction_scales_linearly_with_pages() {
        for pages in [1_000, 5_000, 10_000, 20_000] {
            let bytes = make_pdf(pages, 3);
            let limits = Limits {
                max_pages: usize::MAX,
                ..Limits::default()
            };
            let t = Instant::now();
            let ex = extract(Format::Pdf, &bytes, &limits).expect("pdf");
            println!(
                "{pages} pages, {} KiB: {:.2} s, {} blocks",
                bytes.len() >> 10,
                t.elapsed().as_secs_f64(),
                ex.blocks.len()
            );
        }
    }
}

#[cfg(test)]
mod props {
    use super::tests::make_docx;
    use super::*;
    use proptest::prelude::*;

    const ALL: [Format; 7] = [
        Format::Text,
        Format::Markdown,
        Format::Html,
        Format::Pdf,
        Format::Docx,
        Format::Csv,
        Format::Json,
    ];

    /// Text made of the characters that drive the parsers (tags, entities, markup, quotes,
    /// brackets, separators) and some others.
    fn markup() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop_oneof![
                prop::sample::select(vec![
                    "<",
                    ">",
                    "</",
                    "<p>",
                    "<div>",
                    "<table><tr><td>",
                    "<script>",
                    "<!--",
                    "-->",
                    "&amp;",
                    "&#",
                    ";",
                    "#",
                    "##",
                    "- ",
                    "* ",
                    "1. ",
                    "|",
                    "```",
                    "\n",
                    "\n\n",
                    "\"",
                    ",",
                    "{",
                    "}",
                    "[",
                    "]",
                    ":",
                    "\\",
                    "word",
                    " ",
                    "\u{0}",
                    "é",
                    "表",
                ])
                .prop_map(str::to_string),
                "\\PC{0,4}",
            ],
            0..120,
        )
        .prop_map(|parts| parts.concat())
    }

    fn check(format: Format, bytes: &[u8]) -> Result<(), TestCaseError> {
        let limits = Limits {
            max_decompressed: 1 << 20,
            max_text: 1 << 20,
            ..Limits::default()
        };
        if let Err(e) = extract(format, bytes, &limits) {
            prop_assert!(!e.0.is_empty(), "{:?}: an error without a message", format);
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(150))]

        /// No input makes an extractor panic: it yields blocks or an error with a message.
        #[test]
        fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..1500)) {
            for format in ALL {
                check(format, &bytes)?;
            }
            let mut pdf = b"%PDF-1.4\n".to_vec();
            pdf.extend_from_slice(&bytes);
            check(Format::Pdf, &pdf)?;
        }

        #[test]
        fn markup_like_text_never_panics(text in markup()) {
            for format in ALL {
                check(format, text.as_bytes())?;
            }
        }

        /// A real DOCX with bytes overwritten here and there (a corrupt upload).
        #[test]
        fn corrupted_docx_never_panics(
            text in "[a-z ]{0,200}",
            flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        ) {
            let mut bytes = make_docx(&format!("<w:p><w:r><w:t>{text}</w:t></w:r></w:p>"));
            for (at, b) in flips {
                let i = at.index(bytes.len());
                bytes[i] = b;
            }
            check(Format::Docx, &bytes)?;
        }
    }
}
