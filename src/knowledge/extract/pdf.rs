//! PDF (the text layer).

use super::text::plain_text_with;
use super::{
    err, normalize_ws, too_much_text, Block, ExtractError, Extracted, Interrupt, Limits,
    CHECK_EVERY,
};

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
pub(super) fn pdf_with(
    bytes: &[u8],
    limits: &Limits,
    stop: &Interrupt,
) -> Result<Extracted, ExtractError> {
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
