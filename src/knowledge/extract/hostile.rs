//! Adversarial nesting, hostile object graphs and page counts, each on a thread with a small
//! stack (recursion over the input would overflow it and abort the test run).

use super::docx::tests::make_docx;
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
fn pdf_with_tree(edit: impl FnOnce(&mut Document, lopdf::ObjectId, lopdf::ObjectId)) -> Vec<u8> {
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
            let e =
                extract(Format::Json, deep.as_bytes(), &Limits::default()).expect_err("too deep");
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
            let e =
                extract(Format::Html, deep.as_bytes(), &Limits::default()).expect_err("too deep");
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
    let ex =
        on_small_stack(move || extract(Format::Docx, &bytes, &Limits::default())).expect("docx");
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
            let pdf =
                format!("%PDF-1.4\n1 0 obj\n{body}\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n");
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
