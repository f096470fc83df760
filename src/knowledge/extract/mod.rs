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
//!
//! One file per format family: `text` (plain text, Markdown), `html`, `pdf`, `docx`, `data`
//! (CSV, JSON); this module holds the formats, limits, [`Interrupt`] and the dispatcher.
//! Adversarial inputs are tested in `hostile`, the no-panic properties in `props`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod data;
mod docx;
mod html;
mod pdf;
mod text;

pub use data::{csv_table, json};
pub use docx::docx;
pub use html::html;
pub use pdf::pdf;
pub use text::{markdown, plain_text};

use data::{csv_with, json_with};
use docx::docx_with;
use html::html_with;
use pdf::pdf_with;
use text::{markdown_with, plain_text_with};

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
    let mut out = out;
    // A document without a title in its own metadata takes its first heading's (the file
    // name is the last resort, chosen when the document is written: see `ingest`).
    if out.title.is_none() {
        out.title = first_heading(&out.blocks);
    }
    let total: usize = out.blocks.iter().map(block_len).sum();
    if total > limits.max_text {
        return Err(too_much_text(limits));
    }
    Ok(out)
}

/// The text of the first non-blank heading, if any.
fn first_heading(blocks: &[Block]) -> Option<String> {
    blocks.iter().find_map(|b| match b {
        Block::Heading { text, .. } if !text.trim().is_empty() => Some(text.trim().to_string()),
        _ => None,
    })
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

#[cfg(test)]
mod tests {
    use super::*;

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
}

#[cfg(test)]
mod hostile;

#[cfg(test)]
mod props;
