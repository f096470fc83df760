//! Text extraction: turns an uploaded file into a title and a sequence of structural blocks
//! (headings, paragraphs, list items, table rows, code) that the chunker follows.
//!
//! Every extractor is defensive: sizes are bounded (a DOCX's XML is read through a capped
//! reader, so a zip bomb stops at the cap), recursion is bounded (JSON depth, HTML depth), and
//! the PDF parser runs under `catch_unwind`. A hostile or corrupt file yields an
//! [`ExtractError`] that fails only its own job.

use std::io::Read;

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

/// Limits applied while extracting.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest decompressed part of an archive (DOCX) read into memory.
    pub max_decompressed: u64,
    /// Largest amount of extracted text kept.
    pub max_text: usize,
    /// Deepest HTML nesting followed.
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_decompressed: 64 << 20,
            max_text: 32 << 20,
            max_depth: 256,
        }
    }
}

/// Extracts `bytes` of `format`.
pub fn extract(format: Format, bytes: &[u8], limits: &Limits) -> Result<Extracted, ExtractError> {
    let out = match format {
        Format::Text => Ok(plain_text(&utf8(bytes)?)),
        Format::Markdown => Ok(markdown(&utf8(bytes)?)),
        Format::Html => html(&utf8(bytes)?, limits),
        Format::Pdf => pdf(bytes, limits),
        Format::Docx => docx(bytes, limits),
        Format::Csv => csv_table(bytes),
        Format::Json => json(bytes),
    }?;
    let total: usize = out.blocks.iter().map(block_len).sum();
    if total > limits.max_text {
        return Err(err(format!(
            "the document's text is over the limit of {} MiB",
            limits.max_text >> 20
        )));
    }
    Ok(out)
}

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
    let mut blocks = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
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
    Extracted {
        title: None,
        blocks,
    }
}

/// Markdown (CommonMark + tables): headings, paragraphs, list items, table rows, code blocks.
pub fn markdown(text: &str) -> Extracted {
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
    for ev in Parser::new_ext(text, Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH) {
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
    Extracted { title, blocks }
}

/// HTML: `<title>`, headings, paragraphs, list items, table rows, `<pre>`; scripts, styles and
/// navigation are skipped.
pub fn html(text: &str, limits: &Limits) -> Result<Extracted, ExtractError> {
    use scraper::{Html, Node};
    // The HTML parser's tree building is quadratic in the nesting depth: refuse hostile
    // nesting before parsing.
    if html_depth(text) > limits.max_depth * 4 {
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
    while let Some((node, depth)) = stack.pop() {
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
/// do not nest).
fn html_depth(text: &str) -> usize {
    const VOID: &[&str] = &[
        "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
        "track", "wbr", "p", "li", "td", "tr", "th", "option",
    ];
    let b = text.as_bytes();
    let (mut depth, mut max) = (0usize, 0usize);
    let mut i = 0;
    while let Some(off) = b[i..].iter().position(|&c| c == b'<') {
        i += off + 1;
        match b.get(i) {
            Some(b'/') => depth = depth.saturating_sub(1),
            Some(c) if c.is_ascii_alphabetic() => {
                let end = b[i..]
                    .iter()
                    .position(|c| !c.is_ascii_alphanumeric())
                    .map_or(b.len(), |p| i + p);
                let name = text[i..end].to_ascii_lowercase();
                let close = b[end..].iter().position(|&c| c == b'>').map(|p| end + p);
                let self_closing = close.is_some_and(|c| c > 0 && b[c - 1] == b'/');
                if !self_closing && !VOID.contains(&name.as_str()) {
                    depth += 1;
                    max = max.max(depth);
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

/// PDF text layer, page by page. lopdf's parser is run under `catch_unwind`: a malformed file
/// that makes it panic fails its job instead of the worker.
pub fn pdf(bytes: &[u8], limits: &Limits) -> Result<Extracted, ExtractError> {
    let max = limits.max_decompressed as usize;
    let result = std::panic::catch_unwind(|| -> Result<Extracted, ExtractError> {
        let doc = lopdf::Document::load_mem(bytes)
            .map_err(|e| err(format!("the PDF could not be parsed: {e}")))?;
        if doc.is_encrypted() {
            return Err(err("the PDF is encrypted"));
        }
        let mut blocks = Vec::new();
        let mut total = 0usize;
        for (n, _) in doc.get_pages() {
            let text = doc.extract_text_with_limit(&[n], max).unwrap_or_default();
            total += text.len();
            if total > max {
                return Err(err("the PDF's text is over the decompression limit"));
            }
            blocks.extend(plain_text(&text).blocks);
        }
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
    });
    match result {
        Ok(r) => {
            let ex = r?;
            if ex.blocks.is_empty() {
                return Err(err(
                    "the PDF has no text layer (scanned images are not supported)",
                ));
            }
            Ok(ex)
        }
        Err(_) => Err(err("the PDF is malformed and could not be read")),
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
    loop {
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
        buf.clear();
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
/// an array of objects) becomes its own block. serde_json refuses nesting deeper than 128.
pub fn json(bytes: &[u8]) -> Result<Extracted, ExtractError> {
    let v: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| err(format!("the JSON is malformed or too deeply nested: {e}")))?;
    let mut blocks = Vec::new();
    let title = v
        .get("title")
        .and_then(|t| t.as_str())
        .map(normalize_ws)
        .filter(|t| !t.is_empty());
    match &v {
        serde_json::Value::Array(items) => {
            for item in items {
                let mut lines = Vec::new();
                flatten_json(item, "", &mut lines);
                if !lines.is_empty() {
                    blocks.push(Block::Row(lines.join("; ")));
                }
            }
        }
        _ => {
            let mut lines = Vec::new();
            flatten_json(&v, "", &mut lines);
            blocks.extend(lines.into_iter().map(Block::Para));
        }
    }
    Ok(Extracted { title, blocks })
}

fn flatten_json(v: &serde_json::Value, path: &str, out: &mut Vec<String>) {
    use serde_json::Value;
    // Bounded by serde_json's own recursion limit (128) on parsing.
    match v {
        Value::Null => {}
        Value::Bool(b) => out.push(label(path, &b.to_string())),
        Value::Number(n) => out.push(label(path, &n.to_string())),
        Value::String(s) => {
            if !s.trim().is_empty() {
                out.push(label(path, &normalize_ws(s)))
            }
        }
        Value::Array(a) => {
            for x in a {
                flatten_json(x, path, out);
            }
        }
        Value::Object(o) => {
            for (k, x) in o {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                flatten_json(x, &p, out);
            }
        }
    }
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
        assert_eq!(html_depth("<p>a<br><img src=x/><div><b>x</b></div>"), 2);
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
