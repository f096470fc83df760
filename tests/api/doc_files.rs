//! Document files built in tests: PDF and DOCX writers shared by the API tests and the
//! crate's unit tests (included there with `#[path]`).

use std::io::Write;

/// A PDF file of `objects`, numbered from 1 in order (the first is the catalog), with its
/// cross-reference table and trailer.
pub fn pdf_of(objects: &[String]) -> Vec<u8> {
    pdf_with_comment(objects, "")
}

/// As [`pdf_of`], with `comment` (when not empty) as a comment line after the header: padding
/// that changes a file's size and hash, not its content.
pub fn pdf_with_comment(objects: &[String], comment: &str) -> Vec<u8> {
    let mut out = b"%PDF-1.4\n".to_vec();
    if !comment.is_empty() {
        out.push(b'%');
        out.extend_from_slice(comment.as_bytes());
        out.push(b'\n');
    }
    let mut offsets = Vec::with_capacity(objects.len());
    for (i, o) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend_from_slice(format!("{} 0 obj\n{o}\nendobj\n", i + 1).as_bytes());
    }
    let xref = out.len();
    out.extend_from_slice(
        format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes(),
    );
    for off in offsets {
        out.extend_from_slice(format!("{off:010} 00000 n \n").as_bytes());
    }
    out.extend_from_slice(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .as_bytes(),
    );
    out
}

/// A DOCX whose body is `body_xml` (WordprocessingML paragraphs).
pub fn docx(body_xml: &str) -> Vec<u8> {
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
