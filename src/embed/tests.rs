//! Checks against the reference implementations (Python `transformers` tokenizer,
//! sentence-transformers, model2vec); the expected values in `testdata/reference.json` were
//! computed with them (see `assets/models/README.md`).

use std::collections::HashMap;
use std::sync::OnceLock;

use serde::Deserialize;

use super::minilm::Precision;
use super::{tokenizer, Embedder, MiniLm, StaticModel};

#[derive(Deserialize)]
struct Reference {
    sentences: Vec<String>,
    minilm: Vec<Vec<f32>>,
    #[serde(rename = "static")]
    static_: Vec<Vec<f32>>,
    tokens: HashMap<String, Vec<u32>>,
}

fn reference() -> &'static Reference {
    static R: OnceLock<Reference> = OnceLock::new();
    R.get_or_init(|| {
        serde_json::from_str(include_str!("testdata/reference.json")).expect("reference.json")
    })
}

/// The MiniLM (f32) vectors of the reference sentences, computed once per test binary.
fn minilm_batch() -> &'static Vec<Vec<f32>> {
    static V: OnceLock<Vec<Vec<f32>>> = OnceLock::new();
    V.get_or_init(|| {
        let texts: Vec<&str> = reference().sentences.iter().map(String::as_str).collect();
        MiniLm::new()
            .with_precision(Precision::F32)
            .embed(&texts)
            .expect("embed")
    })
}

/// The same with int8 dense layers.
fn minilm_int8_batch() -> &'static Vec<Vec<f32>> {
    static V: OnceLock<Vec<Vec<f32>>> = OnceLock::new();
    V.get_or_init(|| {
        let texts: Vec<&str> = reference().sentences.iter().map(String::as_str).collect();
        MiniLm::new()
            .with_precision(Precision::Int8)
            .embed(&texts)
            .expect("embed")
    })
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

fn assert_unit(v: &[f32]) {
    assert!(v.iter().all(|x| x.is_finite()));
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-4, "norm {norm}");
}

#[test]
fn token_ids_match_the_reference_tokenizer() {
    let tok = tokenizer().unwrap();
    for (text, want) in &reference().tokens {
        let mut got = Vec::new();
        tok.tokenize(text, usize::MAX, &mut got);
        assert_eq!(&got, want, "tokens of {text:?}");
    }
    // Fixed literals, from `BertTokenizerFast(all-MiniLM-L6-v2)(text)["input_ids"]`.
    let cases: &[(&str, &[u32])] = &[
        ("Hello, World!", &[101, 7592, 1010, 2088, 999, 102]),
        ("", &[101, 102]),
        ("Héllo naïve café", &[101, 7592, 15743, 7668, 102]),
    ];
    for (text, want) in cases {
        assert_eq!(&tok.encode_with_special(text, 256), want, "{text:?}");
    }
}

#[test]
fn truncation_keeps_cls_and_sep() {
    let tok = tokenizer().unwrap();
    let long = "word ".repeat(1000);
    let ids = tok.encode_with_special(&long, 256);
    assert_eq!(ids.len(), 256);
    assert_eq!((ids[0], ids[255]), (tok.cls, tok.sep));
}

#[test]
fn minilm_matches_sentence_transformers() {
    let got = minilm_batch();
    let want = &reference().minilm;
    assert_eq!(got.len(), want.len());
    for ((g, w), s) in got.iter().zip(want).zip(&reference().sentences) {
        assert_eq!(g.len(), 384);
        assert_unit(g);
        let c = cosine(g, w);
        eprintln!("cosine with the reference {c:.6} for {s:?}");
        assert!(c > 0.999, "cosine {c} for {s:?}");
    }
}

#[test]
fn minilm_batch_equals_one_by_one() {
    for (precision, batch) in [
        (Precision::F32, minilm_batch()),
        (Precision::Int8, minilm_int8_batch()),
    ] {
        // One thread (row blocks) and two (a short text splits the weights' columns instead).
        for threads in [1, 2] {
            let model = MiniLm::with_threads(threads).with_precision(precision);
            for (s, b) in reference().sentences.iter().zip(batch) {
                let one = model.embed_query(s).unwrap();
                let diff = one
                    .iter()
                    .zip(b)
                    .map(|(x, y)| (x - y).abs())
                    .fold(0.0, f32::max);
                assert!(diff < 1e-5, "{precision:?}: {s:?}: max difference {diff}");
            }
        }
    }
}

/// Varied sample texts (short queries, prose, code, numbers, non-English, a long passage).
const SAMPLES: &[&str] = &[
    "how do I rotate the encryption keys of a workspace",
    "what is the capital of Australia",
    "error E0502: cannot borrow `v` as mutable because it is also borrowed as immutable",
    "The quarterly report shows revenue grew 12% to $4.2 million while costs fell.",
    "fn main() { println!(\"hello\"); }",
    "Le chat dort sur le canapé depuis ce matin.",
    "東京は日本の首都です。",
    "SKU-88421-B replacement filter, fits models X200 and X300",
    "a",
    "Photosynthesis converts light energy into chemical energy stored in glucose, releasing \
     oxygen as a by-product; it takes place in the chloroplasts of plant cells, where \
     chlorophyll absorbs mostly blue and red light. The light-dependent reactions produce ATP \
     and NADPH, which the Calvin cycle then uses to fix carbon dioxide into sugars. Rates \
     depend on light intensity, temperature and the concentration of carbon dioxide, and \
     C4 and CAM plants have evolved ways to limit photorespiration in hot, dry climates.",
];

#[test]
fn minilm_int8_is_close_to_f32_on_samples() {
    let f = MiniLm::new().with_precision(Precision::F32);
    let q = MiniLm::new().with_precision(Precision::Int8);
    let a = f.embed(SAMPLES).unwrap();
    let b = q.embed(SAMPLES).unwrap();
    let mut worst = 1f32;
    for ((x, y), s) in a.iter().zip(&b).zip(SAMPLES) {
        assert_unit(y);
        let c = cosine(x, y);
        assert!(c >= 0.99, "int8 / f32 cosine {c} for {s:?}");
        worst = worst.min(c);
    }
    eprintln!("worst int8 / f32 cosine on samples {worst:.5}");
}

#[test]
fn minilm_int8_is_close_to_f32_and_the_reference() {
    let (f32s, int8s) = (minilm_batch(), minilm_int8_batch());
    let mut worst = 1f32;
    for (((a, b), w), s) in f32s
        .iter()
        .zip(int8s)
        .zip(&reference().minilm)
        .zip(&reference().sentences)
    {
        assert_unit(b);
        let c = cosine(a, b);
        let r = cosine(b, w);
        eprintln!("int8 cosine with f32 {c:.5}, with the reference {r:.5} for {s:?}");
        assert!(c >= 0.99 && r >= 0.99, "cosine {c} / {r} for {s:?}");
        assert!(a != b, "int8 computed the same floats as f32 for {s:?}");
        worst = worst.min(c);
    }
    eprintln!("worst int8 / f32 cosine {worst:.5}");
}

#[test]
fn minilm_precision_parses_and_defaults_to_int8() {
    assert_eq!(Precision::default(), Precision::Int8);
    assert_eq!(Precision::parse(" F32 ").unwrap(), Precision::F32);
    assert_eq!(Precision::parse("int8").unwrap(), Precision::Int8);
    let err = Precision::parse("fp16").unwrap_err().to_string();
    assert!(err.contains("f32") && err.contains("int8"), "{err}");
}

#[test]
fn minilm_empty_and_blank_texts_are_unit_vectors() {
    let empty = &minilm_batch()[3];
    assert_eq!(reference().sentences[3], "");
    assert_unit(empty);
    assert!(MiniLm::new().embed(&[]).unwrap().is_empty());
}

#[test]
fn static_model_matches_model2vec() {
    let model = StaticModel::new();
    let texts: Vec<&str> = reference().sentences.iter().map(String::as_str).collect();
    let got = model.embed(&texts).unwrap();
    for ((g, w), s) in got.iter().zip(&reference().static_).zip(&texts) {
        assert_eq!(g.len(), 256);
        assert_unit(g);
        if s.trim().is_empty() {
            continue; // model2vec returns zeros there; we return the [UNK] direction
        }
        let c = cosine(g, w);
        eprintln!("cosine with the reference {c:.6} for {s:?}");
        assert!(c > 0.999, "cosine {c} for {s:?}");
    }
}

#[test]
fn static_model_batch_equals_one_by_one_and_handles_blank_text() {
    let model = StaticModel::new();
    let texts: Vec<String> = (0..40)
        .map(|i| format!("document number {i} about keys"))
        .collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let batch = model.embed(&refs).unwrap();
    for (t, b) in refs.iter().zip(&batch) {
        assert_eq!(&model.embed_query(t).unwrap(), b);
    }
    let blank = model.embed(&["", "   \n\t", "\u{1F600}"]).unwrap();
    for v in &blank {
        assert_unit(v);
    }
    assert_eq!(blank[0], blank[1]);
}

/// Compares the tokenizer with a dump of the reference tokenizer over many texts:
/// `ENCLAVE_TOKREF=tok_ref.jsonl cargo test --lib embed::tests::tokenizer_dump -- --ignored`,
/// where each line is `{"text", "ids", "st_ids"}` (ids without and with special tokens at 256).
#[test]
#[ignore]
fn tokenizer_dump() {
    let Ok(path) = std::env::var("ENCLAVE_TOKREF") else {
        return;
    };
    #[derive(Deserialize)]
    struct Line {
        text: String,
        ids: Vec<u32>,
        st_ids: Vec<u32>,
    }
    let tok = tokenizer().unwrap();
    let data = std::fs::read_to_string(path).unwrap();
    let (mut n, mut bad) = (0, 0);
    for line in data.lines() {
        let l: Line = serde_json::from_str(line).unwrap();
        let mut got = Vec::new();
        tok.tokenize(&l.text, usize::MAX, &mut got);
        n += 1;
        if got != l.ids || tok.encode_with_special(&l.text, 256) != l.st_ids {
            bad += 1;
            eprintln!(
                "MISMATCH {:?}\n  want {:?}\n  got  {:?}",
                l.text, l.ids, got
            );
        }
    }
    eprintln!("{n} texts, {bad} mismatches");
    assert_eq!(bad, 0);
}

/// Brute-force cosine nDCG@10 of both models on BEIR folders (dev qrels):
/// `ENCLAVE_BEIR=../shared/eval/msmarco,../shared/eval/dbpedia cargo test --release --lib
/// embed::tests::beir_ndcg -- --ignored --nocapture`.
#[test]
#[ignore]
fn beir_ndcg() {
    let Ok(dirs) = std::env::var("ENCLAVE_BEIR") else {
        return;
    };
    let models: Vec<Box<dyn Embedder>> =
        vec![Box::new(MiniLm::new()), Box::new(StaticModel::new())];
    for dir in dirs.split(',') {
        let read = |name: &str| -> Vec<serde_json::Value> {
            std::fs::read_to_string(format!("{dir}/{name}"))
                .unwrap()
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| serde_json::from_str(l).unwrap())
                .collect()
        };
        let field = |v: &serde_json::Value, f: &str| v[f].as_str().unwrap_or("").to_string();
        let corpus = read("corpus.jsonl");
        let doc_ids: Vec<String> = corpus.iter().map(|d| field(d, "_id")).collect();
        let docs: Vec<String> = corpus
            .iter()
            .map(|d| {
                format!("{} {}", field(d, "title"), field(d, "text"))
                    .trim()
                    .to_string()
            })
            .collect();
        let mut qrels: HashMap<String, HashMap<String, f64>> = HashMap::new();
        for line in std::fs::read_to_string(format!("{dir}/qrels/dev.tsv"))
            .unwrap()
            .lines()
            .skip(1)
        {
            let p: Vec<&str> = line.split('\t').collect();
            if p.len() == 3 {
                qrels
                    .entry(p[0].to_string())
                    .or_default()
                    .insert(p[1].to_string(), p[2].parse().unwrap());
            }
        }
        let queries: Vec<(String, String)> = read("queries.jsonl")
            .iter()
            .map(|q| (field(q, "_id"), field(q, "text")))
            .filter(|(id, _)| qrels.contains_key(id))
            .collect();
        for model in &models {
            let t = std::time::Instant::now();
            let refs: Vec<&str> = docs.iter().map(String::as_str).collect();
            let mut dv = Vec::new();
            for b in refs.chunks(64) {
                dv.extend(model.embed(b).unwrap());
            }
            let secs = t.elapsed().as_secs_f64();
            let mut total = 0.0;
            for (qid, text) in &queries {
                let q = model.embed_query(text).unwrap();
                let mut scored: Vec<(f32, usize)> = dv
                    .iter()
                    .enumerate()
                    .map(|(i, d)| (d.iter().zip(&q).map(|(a, b)| a * b).sum(), i))
                    .collect();
                scored.sort_by(|a, b| b.0.total_cmp(&a.0));
                let rels = &qrels[qid];
                let dcg: f64 = scored
                    .iter()
                    .take(10)
                    .enumerate()
                    .map(|(r, &(_, i))| {
                        rels.get(&doc_ids[i]).copied().unwrap_or(0.0) / (r as f64 + 2.0).log2()
                    })
                    .sum();
                let mut ideal: Vec<f64> = rels.values().copied().collect();
                ideal.sort_by(|a, b| b.total_cmp(a));
                let idcg: f64 = ideal
                    .iter()
                    .take(10)
                    .enumerate()
                    .map(|(r, g)| g / (r as f64 + 2.0).log2())
                    .sum();
                total += if idcg > 0.0 { dcg / idcg } else { 0.0 };
            }
            eprintln!(
                "{dir} {}: nDCG@10 {:.3} over {} queries ({} docs embedded in {secs:.1} s)",
                model.id(),
                total / queries.len() as f64,
                queries.len(),
                docs.len()
            );
        }
    }
}
