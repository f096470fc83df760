//! DOCX (Office Open XML word processing).

use std::io::Read;

use super::{err, normalize_ws, Block, ExtractError, Extracted, Interrupt, Limits, CHECK_EVERY};

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
pub(super) fn docx_with(
    bytes: &[u8],
    limits: &Limits,
    stop: &Interrupt,
) -> Result<Extracted, ExtractError> {
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
    // The document's own metadata (core properties' `dc:title`) wins over a `Title` paragraph.
    let title = core_title(&mut zip, limits)?.or(title);
    Ok(Extracted { title, blocks })
}

/// Most bytes of `docProps/core.xml` read: the core properties are a few hundred bytes.
const MAX_CORE_XML: u64 = 1 << 20;

/// The `dc:title` of `docProps/core.xml`, when the archive has one and it is not blank.
fn core_title<R: Read + std::io::Seek>(
    zip: &mut zip::ZipArchive<R>,
    limits: &Limits,
) -> Result<Option<String>, ExtractError> {
    use quick_xml::events::Event;
    let max = MAX_CORE_XML.min(limits.max_decompressed);
    let Some(xml) = read_zip_entry(zip, "docProps/core.xml", max)? else {
        return Ok(None);
    };
    let mut reader = quick_xml::Reader::from_reader(xml.as_slice());
    let mut buf = Vec::new();
    let mut in_title = false;
    let mut title = String::new();
    loop {
        // A malformed core.xml loses only the title, not the document.
        match reader.read_event_into(&mut buf) {
            Err(_) | Ok(Event::Eof) => break,
            Ok(Event::Start(e)) if e.name().as_ref() == b"dc:title" => in_title = true,
            Ok(Event::End(e)) if e.name().as_ref() == b"dc:title" => break,
            Ok(Event::Text(t)) if in_title => {
                if let Ok(t) = t.decode() {
                    title.push_str(&t);
                }
            }
            Ok(Event::GeneralRef(r)) if in_title => {
                title.push_str(match String::from_utf8_lossy(&r).as_ref() {
                    "amp" => "&",
                    "lt" => "<",
                    "gt" => ">",
                    "quot" => "\"",
                    "apos" => "'",
                    _ => "",
                });
            }
            _ => {}
        }
        buf.clear();
    }
    let title = title.split_whitespace().collect::<Vec<_>>().join(" ");
    Ok((!title.is_empty()).then_some(title))
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal DOCX with the given `word/document.xml` body.
    pub use crate::knowledge::doc_files::docx as make_docx;

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
}
