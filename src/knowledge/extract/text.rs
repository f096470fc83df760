//! Plain text and Markdown.

use super::{normalize_ws, Block, ExtractError, Extracted, Interrupt, CHECK_EVERY};

/// Plain text: paragraphs are separated by blank lines.
pub fn plain_text(text: &str) -> Extracted {
    plain_text_with(text, &Interrupt::none()).unwrap_or_default()
}

pub(super) fn plain_text_with(text: &str, stop: &Interrupt) -> Result<Extracted, ExtractError> {
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
pub(super) fn markdown_with(text: &str, stop: &Interrupt) -> Result<Extracted, ExtractError> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
