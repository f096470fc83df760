//! Issue 15's done-when test: a documentation folder as a static site generator writes it
//! (chapters in HTML, a `print.html` repeating them all, a table of contents, style sheets,
//! scripts, a minified search index, a source map, images, fonts, a PDF, an ignored drafts
//! folder) ingested by the real `enclave ingest`: it exits 0, skips the non-documents (counted by
//! kind), gives every document a title, and the top 10 results of ten natural questions hold no
//! duplicate passage and no code or style junk, and find the chapter that answers.

use std::path::Path;

use serde_json::{json, Value};

use crate::cli::{enclave, org_and_workspace};
use crate::doc_files::pdf_of;
use crate::harness::{Options, TestServer};

/// A chapter: its file, its title, its sections (heading, paragraph).
type Chapter = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
);

const CHAPTERS: &[Chapter] = &[
    ("ch01-installation.html", "Installation", &[
        ("Installing rustup on Linux or macOS", "The first step is to download Rust through rustup, a command line tool for managing Rust versions and associated tools. Open a terminal and run the curl command that downloads a script and starts the installation of the rustup tool."),
        ("Installing rustup on Windows", "On Windows, go to the Rust website and follow the instructions for installing Rust. At some point in the installation you will be asked to install the Visual Studio build tools, which provide a linker and the native libraries."),
    ]),
    ("ch02-guessing-game.html", "Programming a Guessing Game", &[
        ("Processing a guess", "The guessing game asks for user input: the program calls read_line on the standard input handle to read what the player types into a mutable string, and expect handles a failure to read the line."),
        ("Generating a secret number", "The secret number is a random number between 1 and 100, generated with the rand crate, which the project adds as a dependency in its Cargo manifest before calling gen_range."),
    ]),
    ("ch03-variables.html", "Variables and Mutability", &[
        ("Constants", "Constants are values bound to a name that are not allowed to change; they are declared with the const keyword, their type must always be annotated, and they may be set only to a constant expression."),
        ("Shadowing", "Shadowing lets you declare a new variable with the same name as a previous variable: the first variable is shadowed by the second, which is what the compiler will see when you use the name, and its type may even change."),
    ]),
    ("ch04-ownership.html", "Understanding Ownership", &[
        ("Ownership rules", "Each value has an owner. There can only be one owner at a time. When the owner goes out of scope, the value will be dropped. These ownership rules let the compiler manage memory without a garbage collector."),
        ("References and borrowing", "A reference is like a pointer: an address we can follow to access the data stored there, owned by some other variable. Creating a reference is called borrowing, and at any given time you can have either one mutable reference or any number of immutable ones."),
    ]),
    ("ch05-structs.html", "Using Structs", &[
        ("Defining structs", "A struct is a custom data type that packages together multiple related values with named fields, so that each piece of data has a name that says what it means."),
        ("Method syntax", "Methods are defined within an impl block for the struct, and their first parameter is always self, which represents the instance of the struct the method is being called on."),
    ]),
    ("ch06-enums.html", "Enums and Pattern Matching", &[
        ("The Option enum", "Rust does not have nulls; instead the standard library defines the Option enum, whose variants Some and None encode the concept of a value being present or absent."),
        ("The match control flow construct", "The match expression compares a value against a series of patterns and runs the code of the first arm that matches; matching on an Option handles the Some case and the None case, and matches are exhaustive."),
    ]),
    ("ch07-packages.html", "Packages and Crates", &[
        ("Crates", "A crate is the smallest amount of code that the Rust compiler considers at a time: a binary crate compiles to an executable, and a library crate defines functionality shared with several projects."),
        ("Packages", "A package is a bundle of one or more crates that provides a set of functionality; it contains a Cargo.toml file that describes how to build those crates, and it may hold at most one library crate."),
    ]),
    ("ch08-hash-maps.html", "Storing Keys with Associated Values in Hash Maps", &[
        ("Creating a hash map", "The type HashMap stores a mapping of keys of one type to values of another type, using a hashing function that determines how it places these keys and values into memory. Create one with new and add elements with insert."),
        ("Updating a value", "To update a value based on the old value, call entry with the key and or_insert with a default: it returns a mutable reference to the value for that key, for example to count how many times each word appears in a text."),
    ]),
    ("ch09-errors.html", "Error Handling", &[
        ("Unrecoverable errors with panic", "When something bad happens that the code cannot recover from, the panic macro prints a failure message, unwinds and cleans up the stack, and quits the program."),
        ("To panic or not to panic", "Returning Result is a good default choice when a function might fail, because the calling code can decide how to recover; call panic when continuing could be insecure or harmful, in examples, prototypes and tests."),
    ]),
];

const PDF_TEXT: &str = "Cargo workspaces: a workspace is a set of packages that share the same Cargo.lock lock file and output directory, so that the crates in it are built with the same versions of their dependencies.";

/// (question, the file that answers it).
const QUESTIONS: &[(&str, &str)] = &[
    (
        "how do I install rust with rustup on linux",
        "ch01-installation.html",
    ),
    (
        "how does the guessing game read user input",
        "ch02-guessing-game.html",
    ),
    ("what is shadowing of a variable", "ch03-variables.html"),
    ("what are the ownership rules", "ch04-ownership.html"),
    ("how do I define methods on a struct", "ch05-structs.html"),
    ("how does match handle an Option", "ch06-enums.html"),
    (
        "what is the difference between a crate and a package",
        "ch07-packages.html",
    ),
    (
        "how do I count words with a hash map",
        "ch08-hash-maps.html",
    ),
    (
        "when should I panic instead of returning Result",
        "ch09-errors.html",
    ),
    ("do cargo workspaces share a lock file", "guide.pdf"),
];

fn chapter_body(title: &str, sections: &[(&str, &str)]) -> String {
    let mut body = format!("<h1>{title}</h1>\n");
    for (h, p) in sections {
        body.push_str(&format!("<h2>{h}</h2>\n<p>{p}</p>\n"));
    }
    body
}

fn page(title: &str, main: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html><head><title>{title} - The Book</title>\
         <link rel=\"stylesheet\" href=\"css/book.css\"><script src=\"book.js\"></script></head>\
         <body><nav class=\"sidebar\"><a href=\"index.html\">Contents</a></nav>\
         <main>\n{main}</main><script>window.playground_copyable = true;</script></body></html>\n"
    )
}

/// Writes the site into `root`.
fn write_site(root: &Path) {
    let write = |rel: &str, bytes: &[u8]| {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, bytes).expect("write");
    };
    let mut print = String::new();
    let mut toc = String::from("<h1>The Book</h1>\n<ul>\n");
    for (file, title, sections) in CHAPTERS {
        let body = chapter_body(title, sections);
        write(file, page(title, &body).as_bytes());
        print.push_str(&body);
        toc.push_str(&format!("<li><a href=\"{file}\">{title}</a></li>\n"));
    }
    toc.push_str("</ul>\n");
    write(
        "print.html",
        page("The Book (print version)", &print).as_bytes(),
    );
    write("index.html", page("Table of Contents", &toc).as_bytes());
    // Not documents, several naming the chapters' very words.
    write(
        "css/book.css",
        b".ownership-rules { color: #333; }\n.hash-map, .shadowing { margin: 0 auto; }\n",
    );
    let mut js =
        String::from("\"use strict\";window.search=Object.assign(window.search||{},{doc_urls:[");
    let mut index = String::from("{\"doc_urls\":[");
    for (i, (file, title, sections)) in CHAPTERS.iter().enumerate() {
        for (h, p) in *sections {
            js.push_str(&format!(
                "\"{file}#{}\",",
                h.to_lowercase().replace(' ', "-")
            ));
            index.push_str(&format!(
                "{{\"id\":{i},\"title\":\"{title}\",\"body\":{{\"{h}\":[{},{}]}},\"text\":\"{p}\",\"breadcrumbs\":\"{title} » {h}: {p}\"}},",
                i * 7,
                p.len()
            ));
        }
    }
    js.push_str("]});function f(e,t){return e&&t?e.split(\" \").map(function(n){return n.toLowerCase()}):[]}");
    index.push_str("{}],\"index\":{\"fields\":[\"title\",\"body\",\"breadcrumbs\"],\"ref\":\"id\",\"version\":\"0.9.5\"}}");
    write("book.js", js.as_bytes());
    // A minified search index with no telling name: found by its content.
    write("searchindex", index.as_bytes());
    write(
        "book.js.map",
        br#"{"version":3,"file":"book.js","sources":["book.ts"],"names":[],"mappings":"AAAA,SAAS"}"#,
    );
    write(
        "img/logo.svg",
        b"<?xml version=\"1.0\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\"><text>Ownership rules</text></svg>",
    );
    write("img/ferris.png", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x10");
    write("fonts/open-sans.woff2", b"wOF2\0\x01\0\0\0\0\x10\0");
    // A font-like binary without a telling name.
    let mut blob = b"\0\x02\0\x10glyf".to_vec();
    blob.extend((0..2000u32).map(|i| (i * 37 % 251) as u8));
    write("fonts/icons.dat", &blob);
    // Ignored: a drafts folder named by .gitignore, and a hidden folder.
    write(".gitignore", b"drafts/\n");
    write(
        "drafts/wip.html",
        page("Draft", "<p>Ownership rules draft.</p>").as_bytes(),
    );
    write(".cache/x.html", b"<p>hidden</p>");
    // A PDF without a /Title and without headings: titled by its file name.
    let content = format!("BT /F1 12 Tf 72 712 Td ({PDF_TEXT}) Tj ET");
    let objects = [
        "<< /Type /Catalog /Pages 2 0 R >>".to_string(),
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_string(),
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>".to_string(),
        format!("<< /Length {} >>\nstream\n{content}\nendstream", content.len()),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>".to_string(),
    ];
    write("guide.pdf", &pdf_of(&objects));
}

/// Lowercase words of a text, one space apart.
fn normalized(text: &str) -> String {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect::<Vec<_>>()
        .join(" ")
}

fn file_of(v: &Value) -> String {
    v["external_id"]
        .as_str()
        .and_then(|p| p.rsplit('/').next())
        .unwrap_or("")
        .to_string()
}

#[tokio::test]
async fn a_documentation_folder_ingests_cleanly_and_answers_without_junk() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    let ws = org_and_workspace(&data, "book-org");
    {
        let s = TestServer::start_with(Options::on(&data, 0));
        s.api().use_static_embedder(&ws).await;
        s.stop();
    }
    let site = tmp.path().join("book");
    write_site(&site);

    let out = enclave(
        &data,
        &["ingest", "--workspace", &ws, site.to_str().expect("path")],
    );
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "exit 0: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("20 files: 12 added or updated, 0 unchanged, 8 skipped, 0 failed"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "skipped (not documents): 1 image, 1 vector image (SVG), 1 font, 1 style sheet, 1 script, 1 source map, 1 minified code file, 1 binary file"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("minified code files: searchindex"),
        "{stdout}"
    );
    assert!(stdout.contains("searchable by full text after"), "{stdout}");

    let s = TestServer::start_with(Options::on(&data, 1));
    let api = s.api();
    let docs = api
        .get(&format!("/v1/workspaces/{ws}/documents?limit=100"))
        .await;
    let docs = docs.body["data"].as_array().cloned().unwrap_or_default();
    assert_eq!(docs.len(), 12, "{docs:?}");
    let title_of = |name: &str| {
        docs.iter()
            .find(|d| d["source_name"] == name)
            .map(|d| d["title"].as_str().unwrap_or("").to_string())
            .unwrap_or_else(|| panic!("{name} not ingested"))
    };
    assert_eq!(
        title_of("guide.pdf"),
        "guide.pdf",
        "no metadata, no heading"
    );
    assert_eq!(
        title_of("ch04-ownership.html"),
        "Understanding Ownership - The Book"
    );
    assert!(docs
        .iter()
        .all(|d| !d["title"].as_str().unwrap_or("").is_empty()));

    let junk = [
        ".css",
        ".js",
        ".map",
        ".svg",
        ".png",
        ".woff2",
        ".dat",
        "searchindex",
    ];
    let mut collapsed_print = 0;
    for (question, answer) in QUESTIONS {
        let results = api
            .search(
                &ws,
                json!({"query": question, "mode": "hybrid", "limit": 10}),
            )
            .await;
        assert!(!results.is_empty(), "{question}: no results");
        let raw: Vec<&str> = results
            .iter()
            .map(|r| r["text"].as_str().unwrap_or(""))
            .collect();
        let texts: Vec<String> = results
            .iter()
            .map(|r| normalized(r["text"].as_str().unwrap_or("")))
            .collect();
        for (i, a) in texts.iter().enumerate() {
            let file = file_of(&results[i]);
            assert!(
                !junk.iter().any(|j| file.ends_with(j)),
                "{question}: junk {file} in the results"
            );
            assert!(
                !raw[i].contains(['{', '}', '=']) && !a.contains("doc urls"),
                "{question}: code or style in a result: {a}"
            );
            for b in &texts[i + 1..] {
                assert!(
                    a != b
                        && !(a.len() > 40 && b.contains(a.as_str()))
                        && !(b.len() > 40 && a.contains(b.as_str())),
                    "{question}: a duplicate passage in the top 10: {a:?} / {b:?}"
                );
            }
        }
        // The answer is on the first page's top three, itself or as a collapsed duplicate.
        let found = results.iter().take(3).any(|r| {
            file_of(r) == *answer
                || r["duplicates"].as_array().is_some_and(|d| {
                    d.iter()
                        .any(|d| d["external_id"].as_str().unwrap_or("").ends_with(answer))
                })
        });
        assert!(found, "{question}: {answer} not in the top 3: {results:?}");
        collapsed_print += results
            .iter()
            .filter(|r| {
                r["duplicates"].as_array().is_some_and(|d| {
                    d.iter().any(|d| {
                        d["external_id"]
                            .as_str()
                            .unwrap_or("")
                            .ends_with("print.html")
                    })
                }) || (file_of(r) == "print.html"
                    && r["duplicates"].as_array().is_some_and(|d| !d.is_empty()))
            })
            .count();
    }
    assert!(
        collapsed_print >= QUESTIONS.len() - 1,
        "print.html's copies are collapsed onto the chapters (or theirs onto it): {collapsed_print}"
    );
}
