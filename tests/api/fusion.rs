//! Hybrid fusion through the API: exact matches (product codes, error messages) planted in a
//! workspace of ordinary text reach hybrid's first page whatever the vector list says; hybrid
//! scores are in [0, 1]; `explain` shows each list's rank and score and the fused components;
//! pages of one query are consistent.

use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::{Api, TestServer};

/// A small deterministic generator (SplitMix64), so the corpus is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    /// A uniform value in [-1, 1).
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    fn vector(&mut self, dim: usize) -> Vec<f32> {
        (0..dim).map(|_| self.unit()).collect()
    }
}

const WORDS: &[&str] = &[
    "the",
    "a",
    "of",
    "and",
    "to",
    "in",
    "is",
    "for",
    "on",
    "with",
    "as",
    "by",
    "at",
    "from",
    "this",
    "that",
    "it",
    "was",
    "are",
    "be",
    "or",
    "an",
    "which",
    "their",
    "has",
    "have",
    "its",
    "system",
    "service",
    "report",
    "team",
    "customer",
    "order",
    "file",
    "network",
    "server",
    "update",
    "process",
    "data",
    "user",
    "account",
    "payment",
    "schedule",
    "meeting",
    "office",
    "project",
    "budget",
    "review",
    "policy",
    "support",
    "release",
    "version",
    "market",
    "price",
    "product",
    "quality",
    "delivery",
    "warehouse",
    "shipment",
    "invoice",
    "contract",
    "manager",
    "weather",
    "river",
    "mountain",
    "garden",
    "kitchen",
    "recipe",
    "bread",
    "coffee",
    "music",
    "history",
    "city",
    "village",
    "school",
    "student",
    "teacher",
    "library",
    "museum",
    "travel",
    "train",
    "airport",
    "hotel",
    "morning",
    "evening",
    "summer",
    "winter",
    "family",
    "friend",
    "error",
    "failed",
    "while",
    "saving",
    "loading",
    "connection",
    "timeout",
    "disk",
    "memory",
    "quickly",
    "slowly",
    "carefully",
    "new",
    "old",
    "large",
    "small",
    "important",
    "simple",
    "runs",
    "opens",
    "closes",
    "sends",
    "reads",
    "writes",
    "checks",
    "builds",
    "moves",
    "keeps",
];

/// Ordinary text: `n` words of the common vocabulary.
fn ordinary(rng: &mut Rng, n: usize) -> String {
    let mut words: Vec<&str> = (0..n).map(|_| WORDS[rng.below(WORDS.len())]).collect();
    if let Some(first) = words.first_mut() {
        *first = "The";
    }
    format!("{}.", words.join(" "))
}

/// A made-up word of 3 syllables (unique ones are kept by the caller).
fn pseudo_word(rng: &mut Rng) -> String {
    const ON: &[&str] = &[
        "b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z",
    ];
    const NU: &[&str] = &["a", "e", "i", "o", "u", "ai", "ou"];
    (0..3)
        .map(|_| format!("{}{}", ON[rng.below(ON.len())], NU[rng.below(NU.len())]))
        .collect::<Vec<_>>()
        .concat()
}

/// 100 markers, each with tokens no other document has: half product codes (`QX-4821-KTM`,
/// queried alone), half error messages (a code and two made-up words amid common words,
/// queried whole).
fn markers(rng: &mut Rng) -> Vec<(String, String)> {
    let mut seen = std::collections::HashSet::new();
    let mut fresh = |rng: &mut Rng, make: &dyn Fn(&mut Rng) -> String| loop {
        let t = make(rng);
        if !WORDS.contains(&t.as_str()) && seen.insert(t.to_lowercase()) {
            return t;
        }
    };
    let letters = |rng: &mut Rng, n: usize| -> String {
        (0..n)
            .map(|_| char::from(b'A' + rng.below(26) as u8))
            .collect()
    };
    (0..100)
        .map(|i| {
            if i % 2 == 0 {
                let a = fresh(rng, &|r| letters(r, 2));
                let b = fresh(rng, &|r| format!("{}", 1000 + r.below(9000)));
                let c = fresh(rng, &|r| letters(r, 3));
                let code = format!("{a}-{b}-{c}");
                (format!("Part {code} ships in the large box."), code)
            } else {
                let code = fresh(rng, &|r| format!("E{}", 10_000 + r.below(90_000)));
                let w1 = fresh(rng, &|r| pseudo_word(r));
                let w2 = fresh(rng, &|r| pseudo_word(r));
                let msg = format!("error {code} {w1} {w2} failed while saving the file");
                (format!("The log says {msg}."), msg)
            }
        })
        .collect()
}

const DIM: usize = 32;

/// A workspace of `ordinary` documents of common words and the 100 marker documents (each
/// also padded with common words), with user-provided random vectors; returns the workspace
/// and (marker document id, query) pairs.
async fn planted(api: &Api, ordinary_docs: usize) -> (String, Vec<(String, String)>) {
    let org = api.create_org("fusion-exact").await;
    let ws = api.create_workspace(&org, "fusion-exact").await;
    let r = api
        .send(
            Method::PUT,
            &format!("/v1/workspaces/{ws}/embedder"),
            Some(json!({"kind": "user-provided", "dimension": DIM})),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let mut rng = Rng(15);
    let markers = markers(&mut rng);
    let mut docs: Vec<(Value, Option<String>)> = Vec::new();
    for _ in 0..ordinary_docs {
        let n = 40 + rng.below(40);
        let text = ordinary(&mut rng, n);
        docs.push((json!({"text": text, "embedding": rng.vector(DIM)}), None));
    }
    for (text, query) in &markers {
        let body = format!(
            "{} {text} {}",
            ordinary(&mut rng, 30),
            ordinary(&mut rng, 30)
        );
        docs.push((
            json!({"text": body, "embedding": rng.vector(DIM)}),
            Some(query.clone()),
        ));
    }
    // Markers interleaved with the ordinary documents (ids carry no hint).
    let mut order: Vec<usize> = (0..docs.len()).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i + 1));
    }
    let mut out = Vec::new();
    for i in order {
        let (body, query) = &docs[i];
        let id = api.add_doc(&ws, body.clone()).await;
        if let Some(q) = query {
            out.push((id, q.clone()));
        }
    }
    (ws, out)
}

fn documents(results: &[Value]) -> Vec<String> {
    results
        .iter()
        .map(|r| r["document_id"].as_str().unwrap_or("").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn exact_matches_reach_the_first_page_of_hybrid() {
    let s = TestServer::start();
    let api = s.api();
    let (ws, markers) = planted(&api, 300).await;
    assert_eq!(markers.len(), 100);
    let mut rng = Rng(99);
    let mut absent_from_vector = 0;
    let mut missing = Vec::new();
    for (doc, query) in &markers {
        // The vector list knows nothing of the marker: a random query vector.
        let vector = rng.vector(DIM);
        let vec_top = api
            .search(
                &ws,
                json!({"query": query, "vector": vector, "mode": "vector", "limit": 10}),
            )
            .await;
        if !documents(&vec_top).contains(doc) {
            absent_from_vector += 1;
        }
        let ft = api
            .search(&ws, json!({"query": query, "mode": "fulltext", "limit": 1}))
            .await;
        assert_eq!(
            documents(&ft).first(),
            Some(doc),
            "{query:?}: full text finds it"
        );
        for limit in [10, 5, 3, 1] {
            let hits = api
                .search(
                    &ws,
                    json!({"query": query, "vector": vector, "mode": "hybrid", "limit": limit}),
                )
                .await;
            assert!(hits.len() <= limit);
            for h in &hits {
                let score = h["score"].as_f64().unwrap_or(-1.0);
                assert!((0.0..=1.0).contains(&score), "{query:?}: score {score}");
            }
            if !documents(&hits).contains(doc) {
                let why = api
                    .search(
                        &ws,
                        json!({"query": query, "vector": vector, "limit": limit + 1, "explain": true}),
                    )
                    .await;
                let why: Vec<String> = why
                    .iter()
                    .map(|h| format!("{} {}", h["score"], h["explain"]))
                    .collect();
                missing.push((query.clone(), limit, why));
            }
        }
    }
    assert!(
        absent_from_vector >= 90,
        "the vector list must not find the markers for the test to mean anything: {absent_from_vector}/100 absent"
    );
    // At limit 3 and above every marker is on the page. At limit 1 the vector list's first can
    // still edge out a marker when it also matches the message's common words (measured: 3 of
    // 100 with the default constants); that is bounded here, not hidden.
    let (at_one, above): (Vec<_>, Vec<_>) = missing.iter().partition(|m| m.1 == 1);
    assert!(
        above.is_empty(),
        "{} (marker, limit ≥ 3) pairs missing from hybrid's first page: {:?}",
        above.len(),
        &above[..above.len().min(10)]
    );
    assert!(
        at_one.len() <= 5,
        "{} of 100 markers not first at limit 1: {:?}",
        at_one.len(),
        &at_one[..at_one.len().min(10)]
    );

    // Pages of one query: offset/limit pages are slices of one ranking.
    let (_, query) = &markers[1];
    let vector = rng.vector(DIM);
    let page = |offset: usize, limit: usize| {
        let api = api.clone();
        let ws = ws.clone();
        let body = json!({"query": query, "vector": vector, "limit": limit, "offset": offset});
        async move { documents(&api.search(&ws, body).await) }
    };
    let whole = page(0, 30).await;
    assert_eq!(whole.len(), 30);
    let mut pieced = page(0, 10).await;
    pieced.extend(page(10, 10).await);
    pieced.extend(page(20, 10).await);
    assert_eq!(pieced, whole, "pages are slices of one ranking");
}

#[tokio::test]
async fn explain_shows_each_lists_rank_score_and_the_fused_components() {
    let s = TestServer::start();
    let api = s.api();
    let org = api.create_org("fusion-explain").await;
    let ws = api.create_workspace(&org, "fusion-explain").await;
    let seeded = s
        .seed_documents(
            &ws,
            &[
                ("Apples", json!({}), "apples and pears grow in the orchard"),
                ("Cider", json!({}), "the orchard presses apples into cider"),
                ("Pears", json!({}), "pears ripen late in the autumn"),
                ("Boats", json!({}), "boats sail on the river at dawn"),
            ],
        )
        .await;
    // The query vector points at the third document, the words at the first two.
    let vector = json!([0.1, 0.2, 0.9, 0.05]);
    let body = json!({"query": "apples orchard", "vector": vector, "explain": true, "limit": 10});
    let hits = api.search(&ws, body).await;
    assert!(!hits.is_empty());
    let ft = api
        .search(
            &ws,
            json!({"query": "apples orchard", "mode": "fulltext", "limit": 10}),
        )
        .await;
    let vec = api
        .search(
            &ws,
            json!({"vector": vector, "mode": "vector", "limit": 10}),
        )
        .await;
    let rank_in = |list: &[Value], doc: &Value| {
        list.iter()
            .position(|r| &r["document_id"] == doc)
            .map(|i| i as u64 + 1)
    };
    let mut saw_both = false;
    for h in &hits {
        let e = &h["explain"];
        let score = h["score"].as_f64().expect("score");
        assert!((0.0..=1.0).contains(&score), "{h:?}");
        let (wf, wv) = (
            e["weights"]["fulltext"].as_f64().expect("weights"),
            e["weights"]["vector"].as_f64().expect("weights"),
        );
        assert!((wf + wv - 1.0).abs() < 1e-4, "{e:?}");
        let mut sum = 0.0;
        for (name, list) in [("fulltext", &ft), ("vector", &vec)] {
            let entry = &e[name];
            match rank_in(list, &h["document_id"]) {
                Some(rank) => {
                    assert_eq!(entry["rank"], rank, "{name} rank: {e:?}");
                    let raw = list[rank as usize - 1]["score"].as_f64().expect("raw");
                    let got = entry["score"].as_f64().expect("score");
                    assert!((raw - got).abs() < 1e-5, "{name} raw score: {e:?}");
                    let n = entry["normalized"].as_f64().expect("normalized");
                    assert!((0.0..=1.0).contains(&n), "{e:?}");
                    let c = entry["contribution"].as_f64().expect("contribution");
                    let w = if name == "fulltext" { wf } else { wv };
                    assert!((c - w * n).abs() < 1e-5, "{e:?}");
                    sum += c;
                }
                None => assert!(entry.is_null(), "{name}: {e:?}"),
            }
        }
        assert!((sum - score).abs() < 1e-4, "score = Σ contributions: {h:?}");
        saw_both |= !e["fulltext"].is_null() && !e["vector"].is_null();
    }
    assert!(saw_both, "some result is in both lists: {hits:?}");
    // Rank 1 of full text has the list's best BM25: normalized 1.
    let first_ft = hits
        .iter()
        .find(|h| h["explain"]["fulltext"]["rank"] == 1)
        .expect("full text's first");
    assert_eq!(first_ft["explain"]["fulltext"]["normalized"], 1.0);
    assert_eq!(first_ft["document_id"], ft[0]["document_id"]);
    // The vector list's first is the third document (the query vector points at it).
    assert_eq!(vec[0]["document_id"], json!(seeded[2].0));

    // Without `explain`, no explain field; single-list modes explain their own list only.
    let plain = api
        .search(&ws, json!({"query": "apples orchard", "vector": vector}))
        .await;
    assert!(
        plain.iter().all(|h| h.get("explain").is_none()),
        "{plain:?}"
    );
    let ft_explained = api
        .search(
            &ws,
            json!({"query": "apples orchard", "mode": "fulltext", "explain": true}),
        )
        .await;
    for (i, h) in ft_explained.iter().enumerate() {
        let e = &h["explain"];
        assert_eq!(e["fulltext"]["rank"], i as u64 + 1, "{e:?}");
        assert_eq!(e["fulltext"]["score"], h["score"], "{e:?}");
        assert!(e["vector"].is_null() && e.get("weights").is_none(), "{e:?}");
        assert!(e["fulltext"].get("normalized").is_none(), "{e:?}");
    }
    // A bad explain value is refused with a message naming it.
    let r = api
        .post(
            &format!("/v1/workspaces/{ws}/search"),
            json!({"query": "apples", "explain": "yes"}),
        )
        .await;
    assert_eq!(r.status, 422, "{:?}", r.body);
    assert!(r.message().contains("explain"), "{:?}", r.body);
}
