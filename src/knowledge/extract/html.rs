//! HTML.

use super::{
    block_len, err, normalize_ws, Block, ExtractError, Extracted, Interrupt, Limits, CHECK_EVERY,
};

/// HTML: `<title>`, headings, paragraphs, list items, table rows, `<pre>`; scripts, styles and
/// navigation are skipped.
pub fn html(text: &str, limits: &Limits) -> Result<Extracted, ExtractError> {
    html_with(text, limits, &Interrupt::within(limits.max_time))
}

pub(super) fn html_with(
    text: &str,
    limits: &Limits,
    stop: &Interrupt,
) -> Result<Extracted, ExtractError> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
