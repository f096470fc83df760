//! Property tests: no input makes an extractor panic.

use super::docx::tests::make_docx;
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
