//! Which files `enclave ingest` sends: the walk of the given paths (hidden entries, ignore
//! files, `--include` / `--exclude` globs) and the decision, by name and by content, whether a
//! file is a document.
//!
//! A folder of documentation is mostly not documents: style sheets, scripts, images, fonts,
//! source maps. Ingested as text they fill the index with junk (one minified search index
//! became a fifth of all chunks), and binary files only fail. So each file is classified
//! ([`classify`]) from its name and its first [`HEAD_BYTES`] bytes; what is not a document is
//! skipped and counted by [`SkipKind`], never sent, never a failure.
//!
//! The rules, in order:
//! 1. Magic bytes of a PDF (`%PDF-`) or a zip (`PK\3\4`, a DOCX): a document (the server says
//!    if it cannot read it).
//! 2. Magic bytes or extension of an image (PNG, JPEG, GIF, WebP, BMP, ICO, TIFF, AVIF), of a
//!    font (WOFF, WOFF2, TrueType, OpenType, EOT): skipped as `image` / `font`.
//! 3. Extension of a web asset, whatever its content: style sheets (`css`, `scss`, `sass`,
//!    `less`), scripts (`js`, `mjs`, `cjs`, `ts`, `jsx`, `tsx`), source maps (`map`), vector
//!    images (`svg`): the machinery of a site, not its content.
//! 4. Content: NUL bytes or invalid UTF-8 in the head: `binary`. An SVG root element: `vector
//!    image`. A source map's JSON (`"version":3` and `"mappings"`): `source map`.
//! 5. Minified code ([`looks_minified`]): at least half of the head's text on lines over
//!    [`LONG_LINE`] characters, and those lines dense in symbols (at least
//!    [`MIN_SYMBOL_SHARE`] of their non-blank characters are ASCII punctuation; prose has about
//!    a twentieth, minified code and data a quarter or more); or at least half of it on lines
//!    over [`VERY_LONG_LINE`] characters, which no prose paragraph is (a search index keeping
//!    the pages' text in JSON strings has little punctuation). HTML is exempt (a minified page is
//!    still a page: its extractor keeps the text and drops scripts and styles).
//! 6. Everything else that is text is a document (plain text, Markdown, HTML, CSV, JSON,
//!    DOCX, PDF; other text files are read as plain text).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use globset::{GlobSet, GlobSetBuilder};

/// Bytes of a file read to classify it.
pub const HEAD_BYTES: usize = 64 << 10;
/// A line longer than this many characters is "long" (minified code has lines of thousands).
pub const LONG_LINE: usize = 500;
/// A line longer than this many characters is no prose paragraph (about 800 words): text that
/// is mostly such lines is minified, whatever its punctuation (a search index holding the
/// pages' text in JSON strings).
pub const VERY_LONG_LINE: usize = 5000;
/// Least share of ASCII punctuation among the non-blank characters of long lines for them to be
/// code or data rather than prose.
pub const MIN_SYMBOL_SHARE: f64 = 0.2;
/// Text shorter than this is never judged minified (too little to tell).
const MIN_JUDGED_BYTES: usize = 2048;

/// Why a file is not a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SkipKind {
    Image,
    VectorImage,
    Font,
    Stylesheet,
    Script,
    SourceMap,
    MinifiedCode,
    Binary,
}

impl SkipKind {
    /// The kind's name in the summary, singular and plural.
    pub fn names(self) -> (&'static str, &'static str) {
        match self {
            SkipKind::Image => ("image", "images"),
            SkipKind::VectorImage => ("vector image (SVG)", "vector images (SVG)"),
            SkipKind::Font => ("font", "fonts"),
            SkipKind::Stylesheet => ("style sheet", "style sheets"),
            SkipKind::Script => ("script", "scripts"),
            SkipKind::SourceMap => ("source map", "source maps"),
            SkipKind::MinifiedCode => ("minified code file", "minified code files"),
            SkipKind::Binary => ("binary file", "binary files"),
        }
    }
}

fn extension(path: &Path) -> String {
    path.extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase()
}

/// Whether `path`, whose first bytes are `head` (at most [`HEAD_BYTES`]), is a document:
/// `None` when it is, else why not. See the module's rules.
pub fn classify(path: &Path, head: &[u8]) -> Option<SkipKind> {
    // 1. Documents by their magic bytes.
    if head.starts_with(b"%PDF-") || head.starts_with(b"PK\x03\x04") {
        return None;
    }
    // 2. Images and fonts by magic bytes, then by name.
    let magic: &[(&[u8], SkipKind)] = &[
        (b"\x89PNG", SkipKind::Image),
        (b"\xFF\xD8\xFF", SkipKind::Image),
        (b"GIF8", SkipKind::Image),
        (b"BM", SkipKind::Image),
        (b"\0\0\x01\0", SkipKind::Image),
        (b"II*\0", SkipKind::Image),
        (b"MM\0*", SkipKind::Image),
        (b"wOFF", SkipKind::Font),
        (b"wOF2", SkipKind::Font),
        (b"OTTO", SkipKind::Font),
        (b"\0\x01\0\0", SkipKind::Font),
    ];
    if let Some((_, kind)) = magic.iter().find(|(m, _)| head.starts_with(m)) {
        return Some(*kind);
    }
    if head.len() >= 12 && &head[..4] == b"RIFF" && &head[8..12] == b"WEBP" {
        return Some(SkipKind::Image);
    }
    if head.len() >= 12 && &head[4..8] == b"ftyp" && matches!(&head[8..12], b"avif" | b"heic") {
        return Some(SkipKind::Image);
    }
    let ext = extension(path);
    // 3. Web assets by name.
    let by_name = match ext.as_str() {
        "png" | "jpg" | "jpeg" | "gif" | "webp" | "bmp" | "ico" | "tif" | "tiff" | "avif"
        | "heic" => Some(SkipKind::Image),
        "woff" | "woff2" | "ttf" | "otf" | "eot" => Some(SkipKind::Font),
        "css" | "scss" | "sass" | "less" => Some(SkipKind::Stylesheet),
        "js" | "mjs" | "cjs" | "ts" | "jsx" | "tsx" => Some(SkipKind::Script),
        "map" => Some(SkipKind::SourceMap),
        "svg" | "svgz" => Some(SkipKind::VectorImage),
        _ => None,
    };
    if by_name.is_some() {
        return by_name;
    }
    // 4. Content: binary, SVG, source map.
    let text = match std::str::from_utf8(head) {
        Ok(t) => t,
        // A head cut inside a character is still text.
        Err(e) if e.error_len().is_none() => {
            std::str::from_utf8(&head[..e.valid_up_to()]).unwrap_or_default()
        }
        Err(_) => return Some(SkipKind::Binary),
    };
    if text.contains('\0') {
        return Some(SkipKind::Binary);
    }
    let start = text.trim_start_matches('\u{feff}').trim_start();
    let opening: String = start.chars().take(1024).collect::<String>().to_lowercase();
    if opening.starts_with("<svg") || (opening.starts_with("<?xml") && opening.contains("<svg")) {
        return Some(SkipKind::VectorImage);
    }
    if start.starts_with('{')
        && opening.replace(' ', "").contains("\"version\":3")
        && text.contains("\"mappings\"")
    {
        return Some(SkipKind::SourceMap);
    }
    // 5. Minified code and data (HTML exempt).
    let html = matches!(ext.as_str(), "html" | "htm" | "xhtml")
        || opening.starts_with("<!doctype html")
        || opening.starts_with("<html");
    if !html && looks_minified(text) {
        return Some(SkipKind::MinifiedCode);
    }
    None
}

/// Whether `text` reads as minified code or data: most of it on long lines, and those lines
/// dense in symbols (see the module's rule 5).
pub fn looks_minified(text: &str) -> bool {
    if text.len() < MIN_JUDGED_BYTES {
        return false;
    }
    let (mut long_bytes, mut very_long_bytes, mut visible, mut symbols) = (0, 0, 0usize, 0usize);
    for line in text.lines() {
        let chars = line.chars().count();
        if chars <= LONG_LINE {
            continue;
        }
        long_bytes += line.len();
        if chars > VERY_LONG_LINE {
            very_long_bytes += line.len();
        }
        for c in line.chars().filter(|c| !c.is_whitespace()) {
            visible += 1;
            if c.is_ascii_punctuation() {
                symbols += 1;
            }
        }
    }
    very_long_bytes * 2 >= text.len()
        || (long_bytes * 2 >= text.len()
            && visible > 0
            && symbols as f64 >= MIN_SYMBOL_SHARE * visible as f64)
}

/// `--include` / `--exclude` globs. A glob without `/` matches a file's name at any depth
/// (`*.md`); one with `/` matches its path relative to the folder given on the command line
/// (`guide/**/*.html`). `*` stops at `/`, `**` does not.
#[derive(Debug, Clone, Default)]
pub struct Globs {
    include: Option<(GlobSet, GlobSet)>,
    exclude: (GlobSet, GlobSet),
}

fn glob_sets(globs: &[String]) -> anyhow::Result<(GlobSet, GlobSet)> {
    let (mut names, mut paths) = (GlobSetBuilder::new(), GlobSetBuilder::new());
    for g in globs {
        let glob = globset::GlobBuilder::new(g.trim_start_matches("./"))
            .literal_separator(true)
            .build()
            .map_err(|e| anyhow::anyhow!("invalid glob {g:?}: {e}"))?;
        if g.contains('/') {
            paths.add(glob);
        } else {
            names.add(glob);
        }
    }
    Ok((names.build()?, paths.build()?))
}

fn matches(sets: &(GlobSet, GlobSet), rel: &Path) -> bool {
    rel.file_name().is_some_and(|n| sets.0.is_match(n)) || sets.1.is_match(rel)
}

impl Globs {
    pub fn new(include: &[String], exclude: &[String]) -> anyhow::Result<Globs> {
        Ok(Globs {
            include: if include.is_empty() {
                None
            } else {
                Some(glob_sets(include)?)
            },
            exclude: glob_sets(exclude)?,
        })
    }

    /// Whether a file at `rel` (relative to its root) is wanted.
    pub fn wants_file(&self, rel: &Path) -> bool {
        !matches(&self.exclude, rel) && self.include.as_ref().is_none_or(|i| matches(i, rel))
    }

    /// Whether a folder at `rel` is walked (only `--exclude` prunes folders).
    pub fn wants_dir(&self, rel: &Path) -> bool {
        rel.as_os_str().is_empty() || !matches(&self.exclude, rel)
    }
}

/// Ignore files honoured in every folder walked (with `.gitignore` syntax), in addition to
/// `.gitignore` itself (honoured without a git repository).
pub const IGNORE_FILES: [&str; 2] = [".ignore", ".enclaveignore"];

/// What a walk found.
#[derive(Debug, Default)]
pub struct Selection {
    /// Documents, in walk order.
    pub documents: Vec<PathBuf>,
    /// What was skipped, by kind.
    pub skipped: BTreeMap<SkipKind, Vec<PathBuf>>,
    /// Files that could not be read while classifying them, and why.
    pub unreadable: Vec<(PathBuf, String)>,
}

impl Selection {
    pub fn skipped_count(&self) -> usize {
        self.skipped.values().map(Vec::len).sum()
    }

    /// `"2 images, 1 font"`: the skipped files by kind.
    pub fn skipped_summary(&self) -> String {
        self.skipped
            .iter()
            .map(|(kind, files)| {
                let (one, many) = kind.names();
                format!(
                    "{} {}",
                    files.len(),
                    if files.len() == 1 { one } else { many }
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Walks `roots` (files and folders; hidden entries below a root, files named by ignore files
/// and files outside the globs are left out, not counted) and classifies every file.
pub fn select(roots: &[PathBuf], globs: &Globs) -> Selection {
    let mut sel = Selection::default();
    for root in roots {
        let mut builder = ignore::WalkBuilder::new(root);
        builder
            .hidden(true)
            .parents(true)
            .ignore(true)
            .git_ignore(true)
            .git_global(false)
            .git_exclude(false)
            .require_git(false)
            .follow_links(false)
            .sort_by_file_name(|a, b| a.cmp(b));
        for name in IGNORE_FILES {
            builder.add_custom_ignore_filename(name);
        }
        let root_dir = if root.is_dir() {
            root.clone()
        } else {
            root.parent().map(Path::to_path_buf).unwrap_or_default()
        };
        let filter_root = root_dir.clone();
        let prune = globs.clone();
        builder.filter_entry(move |e| {
            let is_dir = e.file_type().is_some_and(|t| t.is_dir());
            let rel = e.path().strip_prefix(&filter_root).unwrap_or(e.path());
            !is_dir || prune.wants_dir(rel)
        });
        for entry in builder.build() {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    sel.unreadable.push((root.clone(), e.to_string()));
                    continue;
                }
            };
            if !entry.file_type().is_some_and(|t| t.is_file()) {
                continue;
            }
            let path = entry.path();
            let rel = path.strip_prefix(&root_dir).unwrap_or(path);
            if !globs.wants_file(rel) {
                continue;
            }
            match read_head(path) {
                Ok(head) => match classify(path, &head) {
                    None => sel.documents.push(path.to_path_buf()),
                    Some(kind) => sel
                        .skipped
                        .entry(kind)
                        .or_default()
                        .push(path.to_path_buf()),
                },
                Err(e) => sel.unreadable.push((path.to_path_buf(), e.to_string())),
            }
        }
    }
    sel
}

/// The first [`HEAD_BYTES`] bytes of a file.
fn read_head(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(HEAD_BYTES.min(8192));
    std::fs::File::open(path)?
        .take(HEAD_BYTES as u64)
        .read_to_end(&mut head)?;
    Ok(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(name: &str, bytes: &[u8]) -> Option<SkipKind> {
        classify(Path::new(name), bytes)
    }

    fn minified_js() -> String {
        let mut s = String::from("!function(e){");
        for i in 0..400 {
            s.push_str(&format!(
                "var a{i}=e[{i}]||{{}};if(a{i}.x){{a{i}.y=(a{i}.x*2)}};"
            ));
        }
        s.push('}');
        s
    }

    #[test]
    fn documents_are_kept_and_assets_skipped_by_name_and_content() {
        assert_eq!(kind("a.md", b"# Title\n\nSome prose."), None);
        assert_eq!(kind("a.html", b"<html><body>x</body></html>"), None);
        assert_eq!(kind("LICENSE", b"Permission is hereby granted"), None);
        assert_eq!(kind("a.pdf", b"%PDF-1.4 ..."), None);
        assert_eq!(kind("a.bin", b"%PDF-1.4 ..."), None, "magic wins");
        assert_eq!(kind("x.png", b"\x89PNG\r\n\x1a\n"), Some(SkipKind::Image));
        assert_eq!(kind("x.txt", b"\x89PNG\r\n\x1a\n"), Some(SkipKind::Image));
        assert_eq!(kind("f.woff2", b"wOF2...."), Some(SkipKind::Font));
        assert_eq!(kind("f.dat", b"\0\x01\0\0rest"), Some(SkipKind::Font));
        assert_eq!(
            kind("s.css", b"body { color: red }"),
            Some(SkipKind::Stylesheet)
        );
        assert_eq!(kind("s.js", b"console.log(1)"), Some(SkipKind::Script));
        assert_eq!(kind("s.js.map", b"{}"), Some(SkipKind::SourceMap));
        assert_eq!(
            kind(
                "m.json",
                br#"{"version": 3, "sources": [], "mappings": "AAAA"}"#
            ),
            Some(SkipKind::SourceMap)
        );
        assert_eq!(kind("i.svg", b"<svg/>"), Some(SkipKind::VectorImage));
        assert_eq!(
            kind(
                "i.xml",
                b"<?xml version=\"1.0\"?>\n<svg xmlns=\"...\"></svg>"
            ),
            Some(SkipKind::VectorImage)
        );
        assert_eq!(kind("blob", b"abc\0def"), Some(SkipKind::Binary));
        assert_eq!(kind("blob", b"\xff\xfe\xfa bad"), Some(SkipKind::Binary));
        // A head cut inside a character is still text.
        assert_eq!(
            kind("a.txt", "caf\u{e9}".as_bytes().split_last().unwrap().1),
            None
        );
        let js = minified_js();
        assert_eq!(
            kind("searchindex", js.as_bytes()),
            Some(SkipKind::MinifiedCode)
        );
        assert_eq!(
            kind("bundle.txt", js.as_bytes()),
            Some(SkipKind::MinifiedCode)
        );
        // Minified HTML is still a page.
        let page = format!("<!DOCTYPE html><html><body><p>{}</p></body></html>", js);
        assert_eq!(kind("p.html", page.as_bytes()), None);
    }

    #[test]
    fn long_prose_lines_are_not_minified() {
        // Unwrapped paragraphs of about 2,000 characters (long lines, few symbols).
        let sentence = "The borrow checker compares scopes to determine whether all borrows are valid, and it rejects programs whose references could outlive the data they point to. ";
        let para = sentence.repeat(12);
        let text = format!("{para}\n\n{para}\n\n{para}\n");
        assert!(text.len() > MIN_JUDGED_BYTES);
        assert!(!looks_minified(&text));
        assert!(looks_minified(&minified_js()));
        assert!(!looks_minified("{}"), "too short to judge");
        let index = format!(
            "{{\"docs\":[\"{}\"]}}",
            sentence.repeat(40).replace('.', "")
        );
        assert!(looks_minified(&index), "one very long line");
    }

    #[test]
    fn globs_match_names_anywhere_and_paths_from_the_root() {
        let g = Globs::new(&["*.md".into(), "guide/**".into()], &["draft*".into()]).expect("globs");
        assert!(g.wants_file(Path::new("a/b/readme.md")));
        assert!(g.wants_file(Path::new("guide/x/page.html")));
        assert!(!g.wants_file(Path::new("other/page.html")));
        assert!(!g.wants_file(Path::new("a/draft-notes.md")));
        assert!(!g.wants_dir(Path::new("a/drafts")));
        assert!(g.wants_dir(Path::new("a/b")));
        assert!(Globs::new(&["a[".into()], &[]).is_err());
    }

    #[test]
    fn the_walk_honours_ignore_files_hidden_entries_and_globs() {
        let tmp = tempfile::tempdir().expect("tmp");
        let root = tmp.path().join("docs");
        let write = |rel: &str, bytes: &[u8]| {
            let p = root.join(rel);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(p, bytes).expect("write");
        };
        write("a.md", b"# A");
        write("b.txt", b"bee");
        write("build/out.txt", b"ignored by .gitignore");
        write("private.txt", b"ignored by .enclaveignore");
        write("notes/skip.txt", b"ignored by .ignore");
        write("notes/keep.txt", b"kept");
        write(".hidden/x.txt", b"hidden");
        write("style.css", b"body{}");
        write("logo.png", b"\x89PNG....");
        write(".gitignore", b"build/\n");
        write(".enclaveignore", b"private.txt\n");
        write("notes/.ignore", b"skip.txt\n");
        let names = |sel: &Selection| {
            let mut v: Vec<String> = sel
                .documents
                .iter()
                .map(|p| {
                    p.strip_prefix(&root)
                        .expect("under root")
                        .display()
                        .to_string()
                })
                .collect();
            v.sort();
            v
        };
        let sel = select(std::slice::from_ref(&root), &Globs::default());
        assert_eq!(names(&sel), ["a.md", "b.txt", "notes/keep.txt"]);
        assert_eq!(sel.skipped_count(), 2);
        assert_eq!(sel.skipped_summary(), "1 image, 1 style sheet");
        let sel = select(
            std::slice::from_ref(&root),
            &Globs::new(&["*.txt".into()], &["notes".into()]).expect("globs"),
        );
        assert_eq!(names(&sel), ["b.txt"]);
        assert_eq!(
            sel.skipped_count(),
            0,
            "files outside the globs are not counted"
        );
    }
}
