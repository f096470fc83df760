//! The query path against hostile query text: nesting, unbalanced syntax, reserved characters,
//! fields, ranges, boosts. Every query is answered or refused as `Invalid`, never an index
//! error, never a stack overflow (the test threads have the 2 MiB stack of a server thread).

use super::tests::workspace_with;
use super::*;
use proptest::prelude::*;
use serde_json::json;

fn run(ws: &Workspace, emb: &Embedders, query: &str, mode: Mode) -> Result<SearchResponse> {
    let req = SearchRequest {
        query: query.to_string(),
        mode: Some(mode),
        ..Default::default()
    };
    search(ws, emb, &req, None, &Fusion::default())
}

fn fixture() -> (tempfile::TempDir, Workspace, Embedders) {
    let (t, ws, emb, _) = workspace_with(&[
        ("apples and pears grow in the orchard", json!({"team": "a"})),
        ("the orchard sells cider (fresh)", json!({"team": "b"})),
    ]);
    (t, ws, emb)
}

fn piece() -> impl Strategy<Value = String> {
    let fixed = prop::sample::select(vec![
        "apples",
        "orchard",
        "cider",
        "(",
        ")",
        "[",
        "]",
        "{",
        "}",
        ":",
        "\"",
        "^",
        "~",
        "*",
        "!",
        "+",
        "-",
        "\\",
        "/",
        "'",
        "`",
        "&&",
        "||",
        "AND",
        "OR",
        "NOT",
        "NOT ",
        "IN",
        "TO",
        "title:",
        "text:",
        "headings:",
        "document_id:",
        "chunk_id:",
        "foo:",
        "title:*",
        "document_id:*",
        "chunk_id:*",
        "foo:*",
        "*:*",
        "[a TO z]",
        "{1 TO *}",
        "title:[a TO z]",
        "chunk_id:[1 TO 5]",
        "chunk_id:{* TO 3}",
        "chunk_id:x",
        "title:IN [a b]",
        "chunk_id: IN [1 2]",
        "^2",
        "^0",
        "^-1",
        "^1e40",
        "~2",
        "\"a b\"~3",
        "\"apples",
        "title:/ap.*/",
        "/(/",
        "\\(",
        "é",
        "\u{0}",
        " ",
        "  ",
    ]);
    prop_oneof![
        8 => fixed.prop_map(str::to_string),
        1 => (1usize..80).prop_map(|n| "(".repeat(n)),
        1 => (1usize..80).prop_map(|n| ")".repeat(n)),
        1 => (1usize..40).prop_map(|n| "NOT ".repeat(n)),
    ]
}

fn query() -> impl Strategy<Value = String> {
    prop::collection::vec((piece(), prop::bool::ANY), 1..14).prop_map(|ps| {
        ps.into_iter()
            .map(|(p, space)| if space { format!("{p} ") } else { p })
            .collect()
    })
}

fn answered_or_invalid(
    r: Result<SearchResponse>,
    q: &str,
) -> std::result::Result<(), TestCaseError> {
    match r {
        Ok(_) | Err(Error::Invalid(_)) => Ok(()),
        Err(e) => Err(TestCaseError::fail(format!("{q:?}: {e:?}"))),
    }
}

#[test]
fn nesting_is_bounded_and_named_in_the_refusal() {
    let (_t, ws, emb) = fixture();
    for mode in [Mode::Fulltext, Mode::Hybrid] {
        let at_limit = format!(
            "{}apples{}",
            "(".repeat(MAX_QUERY_NESTING),
            ")".repeat(MAX_QUERY_NESTING)
        );
        let found = run(&ws, &emb, &at_limit, mode).expect("at the limit");
        assert!(!found.results.is_empty(), "{mode:?}");
        let nots = format!("{}apples", "NOT ".repeat(MAX_QUERY_NESTING));
        run(&ws, &emb, &nots, mode).expect("NOT at the limit");
        for deep in [
            "(".repeat(MAX_QUERY_NESTING + 1) + "apples",
            "(".repeat(1000) + "apples" + &")".repeat(1000),
            "NOT ".repeat(2000) + "apples",
            "(\")\" ".repeat(500) + "apples",
            "a:/\"/ ".to_string() + &"(".repeat(3000),
        ] {
            match run(&ws, &emb, &deep, mode) {
                Err(Error::Invalid(m)) => {
                    assert!(m.contains(&MAX_QUERY_NESTING.to_string()), "{m}")
                }
                other => panic!("{mode:?} {deep:.40}: {other:?}"),
            }
        }
    }
    // Vector search embeds the text: syntax means nothing there, and nothing is refused.
    let deep = "(".repeat(1000) + "apples";
    run(&ws, &emb, &deep, Mode::Vector).expect("vector reads words");
}

#[test]
fn unknown_and_unsearchable_fields_are_invalid_requests() {
    let (_t, ws, emb) = fixture();
    for q in [
        "document_id:*",
        "foo:bar",
        "title:*",
        "chunk_id:[1 TO 5]",
        "document_id:x apples",
        "apples AND (foo:bar)",
    ] {
        match run(&ws, &emb, q, Mode::Fulltext) {
            Err(Error::Invalid(m)) => {
                assert!(m.contains("title, headings, text"), "{q}: {m}")
            }
            other => panic!("{q}: {other:?}"),
        }
    }
    for q in [
        "title:apples",
        "text:\"fresh cider\"",
        "headings:x OR orchard",
        "title:[a TO z]",
    ] {
        run(&ws, &emb, q, Mode::Fulltext).unwrap_or_else(|e| panic!("{q}: {e:?}"));
    }
    // A chat message is words, whatever punctuation it holds.
    let req = SearchRequest {
        query: "Note: (see document_id:* above".into(),
        mode: Some(Mode::Fulltext),
        plain_words: true,
        ..Default::default()
    };
    search(&ws, &emb, &req, None, &Fusion::default()).expect("plain words");
}

/// One workspace for every case (a proptest! case would build its own).
fn check_many(cases: u32, modes: &[Mode]) {
    let (_t, ws, emb) = fixture();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(cases));
    let outcome = runner.run(&query(), |q| {
        for mode in modes {
            answered_or_invalid(run(&ws, &emb, &q, *mode), &q)?;
        }
        Ok(())
    });
    if let Err(e) = outcome {
        panic!("{e}");
    }
}

#[test]
fn any_query_text_is_answered_or_invalid_in_full_text() {
    check_many(500, &[Mode::Fulltext]);
}

#[test]
fn any_query_text_is_answered_or_invalid_in_every_mode() {
    check_many(40, &[Mode::Hybrid, Mode::Vector]);
}
