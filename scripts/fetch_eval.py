#!/usr/bin/env python3
"""Builds the retrieval evaluation sets `enclave eval --beir DIR` reads: 5,000-document subsets
of two public BEIR collections (MS MARCO passages, DBpedia-Entity v2), in BEIR format
(`corpus.jsonl`, `queries.jsonl`, `qrels/dev.tsv`).

    python3 scripts/fetch_eval.py [--out eval] [--docs 5000] [--queries 26,13] [--seed 7]

Downloads the BEIR zips (msmarco ~1 GB, dbpedia-entity ~0.6 GB) from the BEIR project's public
mirror into OUT/.cache, then keeps, per set, QUERIES queries of the collection's dev split (test
split for DBpedia) chosen with SEED, every document judged for them, and random other documents
up to DOCS. The collections are published for research and evaluation: use them in tests and
benchmarks, never ship them inside the product. The subsets differ from the ones the README's
figures were measured on (same collections, same sizes, other random picks), so expect close
but not identical numbers.
"""
import argparse
import csv
import io
import json
import os
import random
import sys
import urllib.request
import zipfile

BASE = "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/{}.zip"
SETS = {"msmarco": ("msmarco", "dev"), "dbpedia": ("dbpedia-entity", "test")}


def fetch(name, cache):
    os.makedirs(cache, exist_ok=True)
    path = os.path.join(cache, name + ".zip")
    if not os.path.exists(path):
        print(f"downloading {BASE.format(name)} ...", file=sys.stderr)
        tmp = path + ".part"
        urllib.request.urlretrieve(BASE.format(name), tmp)
        os.replace(tmp, path)
    return zipfile.ZipFile(path)


def lines(z, member):
    with z.open(member) as f:
        yield from io.TextIOWrapper(f, encoding="utf-8")


def build(short, docs, n_queries, seed, out, cache):
    name, split = SETS[short]
    z = fetch(name, cache)
    qrels = {}
    reader = csv.reader(lines(z, f"{name}/qrels/{split}.tsv"), delimiter="\t")
    next(reader)
    for qid, did, score in reader:
        qrels.setdefault(qid, {})[did] = int(score)
    rng = random.Random(seed)
    qids = sorted(q for q, judged in qrels.items() if any(s > 0 for s in judged.values()))
    chosen = sorted(rng.sample(qids, min(n_queries, len(qids))))
    keep = {d for q in chosen for d in qrels[q]}
    # Reservoir-sample the other documents in one pass over the corpus.
    others, seen = [], 0
    corpus = {}
    for line in lines(z, f"{name}/corpus.jsonl"):
        doc = json.loads(line)
        if doc["_id"] in keep:
            corpus[doc["_id"]] = line
            continue
        seen += 1
        room = max(docs - len(keep), 0)
        if len(others) < room:
            others.append(line)
        else:
            j = rng.randrange(seen)
            if j < room:
                others[j] = line
    target = os.path.join(out, short)
    os.makedirs(os.path.join(target, "qrels"), exist_ok=True)
    with open(os.path.join(target, "corpus.jsonl"), "w", encoding="utf-8") as f:
        f.writelines(list(corpus.values()) + others)
    wanted = set(chosen)
    with open(os.path.join(target, "queries.jsonl"), "w", encoding="utf-8") as f:
        for line in lines(z, f"{name}/queries.jsonl"):
            if json.loads(line)["_id"] in wanted:
                f.write(line)
    with open(os.path.join(target, "qrels", "dev.tsv"), "w", encoding="utf-8") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for q in chosen:
            for d, s in sorted(qrels[q].items()):
                f.write(f"{q}\t{d}\t{s}\n")
    print(f"{target}: {len(corpus) + len(others)} documents, {len(chosen)} queries")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="eval")
    p.add_argument("--docs", type=int, default=5000)
    p.add_argument("--queries", default="26,13", help="msmarco,dbpedia")
    p.add_argument("--seed", type=int, default=7)
    a = p.parse_args()
    counts = [int(n) for n in a.queries.split(",")]
    for short, n in zip(("msmarco", "dbpedia"), counts):
        build(short, a.docs, n, a.seed, a.out, os.path.join(a.out, ".cache"))


if __name__ == "__main__":
    main()
